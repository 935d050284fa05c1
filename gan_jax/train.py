"""The training loop: the one place that does I/O."""
import functools
import json
import pathlib
import signal
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gan_jax
from gan_jax import config as config_lib
from gan_jax import logs, models, sampling, steps
from gan_jax import state as state_lib
from gan_jax.checkpoint import CheckpointError, Checkpointer
from gan_jax.data import device, sources
from gan_jax.errors import ConfigError, DivergenceError, WorkdirError


def make_optimizer(cfg) -> optax.GradientTransformation:
    if cfg.name == "adam":
        return optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    if cfg.name == "adamw":
        return optax.adamw(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return optax.rmsprop(cfg.learning_rate, eps=cfg.eps)
    if cfg.name == "sgd":
        return optax.sgd(cfg.learning_rate, momentum=cfg.b1 or None)
    raise ConfigError(f"optimizer name must be adam, adamw, rmsprop or sgd, got {cfg.name!r}.")


def make_step(config, G, D):
    """The pure ``(state, batch) -> (state, metrics)`` step that ``config`` describes."""
    penalties = [steps.penalty(k, w) for k, w in (("gp", config.gp_weight),
                                                   ("r1", config.r1_weight)) if w]
    d_penalty = None
    if penalties:
        d_penalty = lambda *a: sum(p(*a) for p in penalties)
    return steps.make_train_step(G, D, loss=config.loss, n_dis=config.n_dis,
                                 ema_decay=config.ema.decay, ema_start=config.ema.start,
                                 d_penalty=d_penalty)


def make_create(config, G, D, image_shape):
    """A jitted ``create(key) -> GANState`` for this config."""
    return jax.jit(functools.partial(
        state_lib.create, G=G, D=D, g_tx=make_optimizer(config.optimizer.g),
        d_tx=make_optimizer(config.optimizer.d), image_shape=tuple(image_shape)))


def check_workdir(workdir: pathlib.Path, config) -> None:
    """Refuses a workdir whose run had another config. Reads only."""
    path = workdir / "config.json"
    if path.exists():
        differences = config_lib.diff(json.loads(path.read_text()), config_lib.to_dict(config))
        if differences:
            raise WorkdirError(
                f"{workdir} holds a run with another config; refusing to mix them. Keys that "
                "differ (workdir -> now):\n  " + "\n  ".join(differences)
                + _shape_changes(workdir, config)
                + "\nUse a new --workdir, or the same config to continue that run.")


def _shape_changes(workdir: pathlib.Path, config) -> str:
    """The arrays of the workdir's latest checkpoint that ``config`` would reshape, if any."""
    if not (workdir / "checkpoints").is_dir():
        return ""
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        if ckpt.latest_step() is None:
            return ""
        shape = tuple(ckpt.run_info()["image_shape"])
        G, D = models.build(config.model, shape, config.dtype)
        ckpt.check_compatible(jax.eval_shape(make_create(config, G, D, shape),
                                             jax.random.PRNGKey(0)))
        return ""
    except CheckpointError as e:
        return "\n" + str(e)
    finally:
        ckpt.close()


class _Meter:
    """Averages the per-step metrics between log lines, checking each for NaN/Inf."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, first_step: int, metrics_K: dict) -> None:
        host = jax.device_get(metrics_K)
        for name, values in host.items():
            values = np.asarray(values)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise DivergenceError(
                    f"Step {first_step + int(bad[0]) + 1}: {name} is {values[bad[0]]}. Training "
                    "stopped; lower the learning rates, add a gradient penalty, use float32, "
                    "or set config.nan_rollbacks.")
            self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.count += len(next(iter(host.values())))

    def pop(self) -> dict:
        out = {k: v / self.count for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


class _Signals:
    """Turns SIGTERM / SIGINT into a request to stop after the current dispatch; a second
    SIGINT interrupts at once."""

    def __init__(self):
        self.received, self._old = None, {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # Not the main thread: leave signals to the caller.
                pass
        return self

    def _handle(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@jax.jit
def _all_finite(state):
    trees = (state.g_params, state.d_params, state.ema_params)
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)]))


def _initial_state(ckpt, create, init_key, data_info):
    """(state, step resumed from or None): the latest checkpoint's state, else a new one."""
    resumed_from = ckpt.latest_step()
    if resumed_from is None:
        return create(init_key), None
    # Before anything is written: a model that does not fit fails here, naming the arrays.
    ckpt.check_compatible(jax.eval_shape(create, init_key))
    state, info = ckpt.restore(create(init_key))
    if {k: info["data"].get(k) for k in data_info} != data_info:
        raise CheckpointError(f"The checkpoint at step {resumed_from} was trained on other "
                              f"data ({info['data']}); now: {data_info}.")
    return state, resumed_from


def _progress(step, total, rate, batch, m, elapsed) -> str:
    eta = (total - step) / rate if rate > 0 else float("nan")
    return (f"step {step}/{total} | {rate:,.1f} steps/s | {rate * batch:,.0f} img/s | "
            f"d_loss {m['d_loss']:.4f} g_loss {m['g_loss']:.4f} | D(x) {m['d_real']:.3f} "
            f"D(G(z)) {m['d_fake']:.3f} | elapsed {elapsed:.0f}s eta {eta:.0f}s")


def train_and_evaluate(config, workdir) -> dict:
    """Trains the GAN that ``config`` describes, writing every artefact into ``workdir``,
    resuming from its latest checkpoint if it has one. Returns a summary (also written to
    ``summary.json``); ``summary["preempted"]`` is set when SIGTERM/SIGINT stopped it."""
    start = time.time()
    config = config_lib.validate(config)
    workdir = pathlib.Path(workdir)
    check_workdir(workdir, config)

    ds = config.dataset
    data = sources.load(ds.name, ds.split, ds.data_dir or None, image_key=ds.image_key,
                        resolution=ds.resolution or None, max_examples=ds.max_examples or None)
    G, D = models.build(config.model, data.image_shape, config.dtype)
    init_key, data_key, sample_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    create = make_create(config, G, D, data.image_shape)
    ck = config.checkpoint
    ckpt = Checkpointer(workdir / "checkpoints", keep=ck.keep, best_metric=ck.best_metric,
                        best_mode=ck.best_mode, async_save=ck.async_save)
    rows = config.n_dis * config.batch_size
    data_info = {"kind": "device_shuffle", "seed": config.seed, "num_examples": len(data.images),
                 "rows_per_step": rows}
    try:
        state, resumed_from = _initial_state(ckpt, create, init_key, data_info)
    except BaseException:
        ckpt.close()
        raise
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "config.json").exists():
        logs.atomic_write_bytes(workdir / "config.json", json.dumps(
            config_lib.to_dict(config), indent=2, sort_keys=True).encode())
    if resumed_from is not None:
        logs.drop_lines_after(workdir / "metrics.jsonl", resumed_from)
        print(f"gan_jax: resuming from the checkpoint at step {resumed_from}", flush=True)

    data_step = device.make_data_step(make_step(config, G, D), rows_per_step=rows,
                                      num_examples=len(data.images), key=data_key)
    images = device.put(data.images)
    t = time.time()
    multi_step = jax.jit(steps.repeat(data_step, config.steps_per_dispatch),
                         donate_argnums=0).lower(state, images).compile()
    compile_s = time.time() - t

    z_fixed = jax.random.normal(sample_key, (config.num_samples, G.z_dim), jnp.float32)
    draw = jax.jit(functools.partial(sampling.generate, G), static_argnames="batch_stats")
    has_bn = "batch_stats" in state.g_vars
    writer = logs.Writer(workdir, purge_step=None if resumed_from is None else resumed_from + 1)
    run_info = {"config": config_lib.to_dict(config), "image_shape": list(data.image_shape),
                "data": data_info, "gan_jax_version": gan_jax.__version__}

    def save_grids(st, step, final=False):
        raw = sampling.grid(sampling.to_uint8(draw(st.g_params, st.g_vars, z_fixed)))
        ema = sampling.grid(sampling.to_uint8(draw(st.ema_params, st.g_vars, z_fixed,
                                                   batch_stats=has_bn)))
        name = "final" if final else f"step_{step:08d}"
        logs.save_png(workdir / "samples" / f"{name}_raw.png", raw)
        logs.save_png(workdir / "samples" / f"{name}.png", ema)
        writer.image(step, "samples/raw", raw)
        writer.image(step, "samples/ema", ema)

    print(f"gan_jax: {config.model.name} on {ds.name} ({len(data.images)} images "
          f"{data.image_shape}), G {state_lib.param_count(state.g_params):,} params, "
          f"D {state_lib.param_count(state.d_params):,} params, {jax.device_count()} "
          f"{jax.default_backend()} device(s); compiled in {compile_s:.1f}s", flush=True)
    step = int(state.step)
    first_step, loop_start = step, time.time()
    save_block_s, rollbacks, last_logged = [], 0, {}
    with _Signals() as signals:
        try:
            while True:
                try:
                    state, step, last_logged = _loop(
                        config, state, step, multi_step, images, writer, save_grids, ckpt,
                        run_info, signals, save_block_s, last_logged, loop_start)
                    break
                except DivergenceError as e:
                    if rollbacks >= config.nan_rollbacks:
                        raise
                    rollbacks += 1
                    ckpt.wait()
                    good = ckpt.latest_step()
                    state = ckpt.restore(create(init_key))[0] if good is not None else create(
                        init_key)
                    # A fresh key: the same data order, other noise, so the blow-up may not recur.
                    state = state.replace(rng=jax.random.fold_in(state.rng, rollbacks))
                    step = int(state.step)
                    writer.event(step, event="rollback", reason=str(e), attempt=rollbacks)
                    print(f"gan_jax: {e}\ngan_jax: rolled back to step {step} with a fresh RNG "
                          f"key (rollback {rollbacks} of {config.nan_rollbacks})", flush=True)
            preempted = signals.received is not None and step < config.num_steps
            if not preempted:
                save_grids(state, step, final=True)
        finally:
            ckpt.wait()  # Never leave with a save half-done.
            ckpt.close()
            writer.close()

    loop_s = time.time() - loop_start
    summary = {"steps": step, "wall_time_s": time.time() - start, "compile_s": compile_s,
               "loop_s": loop_s, "steps_per_s": (step - first_step) / max(loop_s, 1e-9),
               "batch_size": config.batch_size, "backend": jax.default_backend(),
               "resumed_from": resumed_from, "preempted": preempted, "rollbacks": rollbacks,
               "checkpoint_saves": len(save_block_s),
               "checkpoint_block_s_median": statistics.median(save_block_s) if save_block_s
               else None}
    summary["images_per_s"] = summary["steps_per_s"] * config.batch_size
    logs.atomic_write_bytes(workdir / "summary.json", json.dumps(summary, indent=2).encode())
    if preempted:
        print(f"gan_jax: stopped by {signal.Signals(signals.received).name} at step {step}; "
              f"checkpoint saved in {workdir / 'checkpoints'}. Rerun the same command (same "
              "--config and --workdir) to resume.", flush=True)
    else:
        print(f"gan_jax: done, {step} steps in {summary['wall_time_s']:.0f}s "
              f"({summary['steps_per_s']:,.1f} steps/s in the loop); final grid "
              f"{workdir / 'samples' / 'final.png'}", flush=True)
    return summary


def _loop(config, state, step, multi_step, images, writer, save_grids, ckpt, run_info,
          signals, save_block_s, last_logged, loop_start):
    """Runs dispatches until num_steps or a stop signal. Metrics are read one dispatch late
    except where a log line or checkpoint needs them, so the host rarely waits."""
    meter, pending = _Meter(), None
    k = config.steps_per_dispatch
    last_log_time, last_log_step, paused = time.time(), step, 0.0

    def settle():
        nonlocal pending
        if pending is not None:
            meter.add(pending[0] - k, pending[1])
            pending = None

    while step < config.num_steps:
        state, metrics = multi_step(state, images)
        step += k
        settle()
        pending = (step, metrics)
        if step % config.log_every == 0 or step == config.num_steps:
            settle()
            now = time.time()
            rate = (step - last_log_step) / max(now - last_log_time - paused, 1e-9)
            last_logged = meter.pop()
            writer.scalars(step, {**last_logged, "steps_per_s": rate,
                                  "images_per_s": rate * config.batch_size})
            print(_progress(step, config.num_steps, rate, config.batch_size, last_logged,
                            now - loop_start), flush=True)
            last_log_time, last_log_step, paused = now, step, 0.0
        t = time.time()
        if step % config.sample_every == 0 and step < config.num_steps:
            save_grids(state, step)
        stop = signals.received is not None
        if step % config.checkpoint.every == 0 or step == config.num_steps or stop:
            settle()  # Only a state whose metrics were all finite is saved.
            if not bool(_all_finite(state)):
                raise DivergenceError(f"Step {step}: the parameters hold a NaN or Inf.")
            save_block_s.append(ckpt.save(state, {**run_info, "data": {
                **run_info["data"], "next_step": step}}, last_logged))
        paused += time.time() - t
        if stop:
            break
    settle()
    return state, step, last_logged
