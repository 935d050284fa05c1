"""The training loop: the one place that does I/O (process 0 writes, every process runs)."""
import functools
import json
import pathlib
import signal
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import gan_jax
from gan_jax import components, logs, models, parallel, sampling
from gan_jax import config as config_lib
from gan_jax import state as state_lib
from gan_jax.checkpoint import CheckpointError, Checkpointer
from gan_jax.data import sources
from gan_jax.engine import Engine
from gan_jax.signals import StopSignals
from gan_jax.errors import ConfigError, DivergenceError, WorkdirError


def check_workdir(workdir: pathlib.Path, config) -> None:
    """Refuses a workdir whose run had another config. Reads only."""
    path = workdir / "config.json"
    if path.exists():
        differences = config_lib.diff(json.loads(path.read_text()), config_lib.to_dict(config),
                                      defaults=config_lib.to_dict(config_lib.defaults()))
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
        ckpt.check_compatible(jax.eval_shape(components.make_create(config, G, D, shape),
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
        host = parallel.to_host(metrics_K)
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

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}

    @classmethod
    def of(cls, run_info: dict) -> "_Meter":
        """The meter a checkpoint's run info saved (empty for a new run)."""
        meter = cls()
        if run_info.get("meter"):
            meter.sums, meter.count = dict(run_info["meter"]["sums"]), run_info["meter"]["count"]
        return meter

    def pop(self) -> dict:
        out = {k: v / self.count for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


def _progress(step, total, rate, batch, m, elapsed) -> str:
    eta = (total - step) / rate if rate > 0 else float("nan")
    return (f"step {step}/{total} | {rate:,.1f} steps/s | {rate * batch:,.0f} img/s | "
            f"d_loss {m['d_loss']:.4f} g_loss {m['g_loss']:.4f} | D(x) {m['d_real']:.3f} "
            f"D(G(z)) {m['d_fake']:.3f} | elapsed {elapsed:.0f}s eta {eta:.0f}s")


def _say(*args) -> None:
    if parallel.is_writer():
        print(*args, flush=True)


def _load_data(config):
    ds = config.dataset
    if ds.pipeline == "streaming":
        return None, sources.image_shape(ds.name, ds.data_dir or None, ds.image_key,
                                         ds.resolution or None)
    data = sources.load(ds.name, ds.split, ds.data_dir or None, image_key=ds.image_key,
                        resolution=ds.resolution or None, max_examples=ds.max_examples or None)
    return data.images, data.image_shape


def _resume(ckpt, engine):
    """(state, step resumed from or None, run info): the latest checkpoint's, else new."""
    resumed_from = ckpt.latest_step()
    if resumed_from is None:
        return engine.new_state(), None, {}
    # Before anything is written: a model that does not fit fails here, naming the arrays.
    ckpt.check_compatible(engine.abstract_state())
    state, info = ckpt.restore(engine.restore_template())
    want = engine.data_info()
    if {k: info["data"].get(k) for k in want} != want:
        raise CheckpointError(f"The checkpoint at step {resumed_from} was trained on other "
                              f"data ({info['data']}); now: {want}.")
    if info["data"].get("shards") != engine.shards:
        _say(f"gan_jax: warning: the checkpoint was written with {info['data'].get('shards')} "
             f"data shards, this run has {engine.shards}; the batch order changes from here.")
    else:
        engine.set_data_position(info["data"])
    return engine.place(state), resumed_from, info


def train_and_evaluate(config, workdir) -> dict:
    """Trains the GAN that ``config`` describes, writing every artefact into ``workdir``,
    resuming from its latest checkpoint if it has one. Returns a summary (also written to
    ``summary.json``); ``summary["preempted"]`` is set when SIGTERM/SIGINT stopped it."""
    start = time.time()
    config = config_lib.validate(config)
    workdir = pathlib.Path(workdir)
    check_workdir(workdir, config)
    images, image_shape = _load_data(config)
    G, D = models.build(config.model, image_shape, config.dtype,
                        axis_name=parallel.AXIS if config.parallel.mode == "pmap" else None)
    init_key, data_key, sample_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    engine = Engine(config, G=G, D=D, image_shape=image_shape, init_key=init_key,
                    data_key=data_key, images=images)
    ck = config.checkpoint
    ckpt = Checkpointer(workdir / "checkpoints", keep=ck.keep, best_metric=ck.best_metric,
                        best_mode=ck.best_mode, async_save=ck.async_save)
    # Sampling and evaluation run outside pmap, so their G must not name the pmap axis.
    G_sample = G.clone(axis_name=None) if hasattr(G, "axis_name") else G
    draw = jax.jit(functools.partial(sampling.generate, G_sample),
                   static_argnames="batch_stats")
    evaluator = None
    try:
        state, resumed_from, resumed_info = _resume(ckpt, engine)
        if config.eval.every:
            from gan_jax.eval.scheduled import ScheduledEval
            evaluator = ScheduledEval(config, draw, G.z_dim, workdir, log=_say)
        t = time.time()
        engine.compile(state)
        compile_s = time.time() - t
        _check_best_metric(config, engine.metric_names())
    except BaseException:
        ckpt.close()
        engine.close()
        raise
    writer = logs.NullWriter()
    if parallel.is_writer():
        workdir.mkdir(parents=True, exist_ok=True)
        if not (workdir / "config.json").exists():
            logs.atomic_write_bytes(workdir / "config.json", json.dumps(
                config_lib.to_dict(config), indent=2, sort_keys=True).encode())
        # Lines past the checkpoint are replayed; with none, a run that died before its
        # first checkpoint left lines (maybe a torn one) that this run writes afresh.
        from gan_jax.eval.scheduled import drop_after
        after = -1 if resumed_from is None else resumed_from
        logs.drop_lines_after(workdir / "metrics.jsonl", after)
        drop_after(workdir, after)
        writer = logs.Writer(workdir, purge_step=after + 1)
    if resumed_from is not None:
        _say(f"gan_jax: resuming from the checkpoint at step {resumed_from}")

    z_fixed = jax.random.normal(sample_key, (config.num_samples, G.z_dim), jnp.float32)
    run_info = {"config": config_lib.to_dict(config), "image_shape": list(image_shape),
                "gan_jax_version": gan_jax.__version__}

    def save_grids(st, step, final=False):
        g_params, g_vars, ema_params = engine.generator_view(st)
        has_bn = "batch_stats" in g_vars
        raw = sampling.grid(sampling.to_uint8(parallel.to_host(draw(g_params, g_vars, z_fixed))))
        ema = sampling.grid(sampling.to_uint8(parallel.to_host(
            draw(ema_params, g_vars, z_fixed, batch_stats=has_bn))))
        if parallel.is_writer():
            name = "final" if final else f"step_{step:08d}"
            logs.save_png(workdir / "samples" / f"{name}_raw.png", raw)
            logs.save_png(workdir / "samples" / f"{name}.png", ema)
            writer.image(step, "samples/raw", raw)
            writer.image(step, "samples/ema", ema)

    def save_checkpoint(st, metrics, meter_state):
        view = engine.checkpoint_view(st)
        if not bool(parallel.to_host(components.all_finite(view))):
            raise DivergenceError(f"Step {engine.step_of(st)}: the parameters hold a NaN or "
                                  "Inf.")
        # The meter's partial sums make the first log line after a resume the same as
        # in a run that was never stopped.
        info = {**run_info, "meter": meter_state,
                "data": {**engine.data_info(), **engine.data_position(),
                         "next_step": engine.step_of(st)}}
        return ckpt.save(view, info, metrics)

    s0 = engine.checkpoint_view(state)
    _say(f"gan_jax: {config.model.name} on {config.dataset.name} {tuple(image_shape)}, "
         f"G {state_lib.param_count(s0.g_params):,} params, D "
         f"{state_lib.param_count(s0.d_params):,} params, {engine.shards} {jax.default_backend()} "
         f"device(s) in {jax.process_count()} process(es), {config.parallel.mode}, "
         f"{config.dataset.pipeline} data; compiled in {compile_s:.1f}s")
    step = engine.step_of(state)
    first_step, loop_start = step, time.time()
    save_block_s, rollbacks = [], 0
    meter = _Meter.of(resumed_info)
    with StopSignals() as signals:
        try:
            while True:
                try:
                    state, step = _loop(config, engine, state, step, writer, save_grids,
                                        evaluator, save_checkpoint, signals, save_block_s,
                                        loop_start, meter)
                    break
                except DivergenceError as e:
                    if rollbacks >= config.nan_rollbacks:
                        raise
                    rollbacks += 1
                    ckpt.wait()
                    state, meter = _roll_back(ckpt, engine)
                    # A fresh key: the same data, other noise, so the blow-up may not recur.
                    state = state.replace(rng=jax.random.fold_in(state.rng, rollbacks))
                    step = engine.step_of(state)
                    writer.event(step, event="rollback", reason=str(e), attempt=rollbacks)
                    _say(f"gan_jax: {e}\ngan_jax: rolled back to step {step} with a fresh RNG "
                         f"key (rollback {rollbacks} of {config.nan_rollbacks})")
            preempted = signals.received is not None and step < config.num_steps
            ran = step > first_step
            if not preempted and ran:
                save_grids(state, step, final=True)
        finally:
            ckpt.wait()  # Never leave with a save half-done.
            ckpt.close()
            engine.close()
            writer.close()

    loop_s = time.time() - loop_start
    if not ran and (workdir / "summary.json").exists():  # Rerun of a finished run.
        _say(f"gan_jax: {workdir} already holds the run to step {step}; nothing to do.")
        return json.loads((workdir / "summary.json").read_text())
    summary = {"steps": step, "wall_time_s": time.time() - start, "compile_s": compile_s,
               "loop_s": loop_s, "steps_per_s": (step - first_step) / max(loop_s, 1e-9),
               "batch_size": config.batch_size, "backend": jax.default_backend(),
               "devices": engine.shards, "processes": jax.process_count(),
               "resumed_from": resumed_from, "preempted": preempted, "rollbacks": rollbacks,
               "checkpoint_saves": len(save_block_s),
               "checkpoint_block_s_median": statistics.median(save_block_s) if save_block_s
               else None}
    summary["images_per_s"] = summary["steps_per_s"] * config.batch_size
    if parallel.is_writer():
        logs.atomic_write_bytes(workdir / "summary.json", json.dumps(summary, indent=2).encode())
    if preempted:
        _say(f"gan_jax: stopped by {signal.Signals(signals.received).name} at step {step}; "
             f"checkpoint saved in {workdir / 'checkpoints'}. Rerun the same command (same "
             "--config and --workdir) to resume.")
    else:
        _say(f"gan_jax: done, {step} steps in {summary['wall_time_s']:.0f}s "
             f"({summary['steps_per_s']:,.1f} steps/s in the loop); final grid "
             f"{workdir / 'samples' / 'final.png'}")
    return summary


def _roll_back(ckpt, engine):
    """(state, meter) as a resume finds them (``_resume``: the latest checkpoint, or new),
    with the input moved back to where that checkpoint (or step 0) read it."""
    state, step, info = _resume(ckpt, engine)
    if step is None:
        engine.set_data_position(engine.start_position)
    return state, _Meter.of(info)


def _check_best_metric(config, step_metrics) -> None:
    """A ``checkpoint.best_metric`` the run never logs would keep no best checkpoint, silently:
    refused before the first step."""
    best = config.checkpoint.best_metric
    logged = set(step_metrics)
    if config.eval.every:
        from gan_jax.eval.evaluate import fields
        logged |= set(fields(config.eval.metrics))
    if best and best not in logged:
        raise ConfigError(f"Config key 'checkpoint.best_metric' is {best!r}, which this run "
                          f"does not log; it logs {', '.join(sorted(logged))} (the eval "
                          f"metrics only with eval.every > 0).")


def _evaluate(evaluator, engine, state, step, writer) -> dict:
    _, g_vars, ema_params = engine.generator_view(state)
    t = time.time()
    values = evaluator(ema_params, g_vars, step, writer)
    _say(f"gan_jax: eval at step {step}: " + ", ".join(
        f"{k} {v:.4g}" for k, v in values.items()) + f" ({time.time() - t:.1f}s)")
    return values


def _loop(config, engine, state, step, writer, save_grids, evaluator, save_checkpoint,
          signals, save_block_s, loop_start, meter):
    """Runs dispatches until num_steps or a stop signal. Metrics are read one dispatch late,
    and a log line is written once the next dispatch is queued, unless the host waits for
    the device at that step anyway (a checkpoint, an evaluation, a sample grid, the end)."""
    pending, last_logged, log_due = None, {}, None
    last_eval, eval_step, save_at_eval = {}, None, False
    if evaluator is not None:  # Ranked by an eval metric: each evaluated step is saved.
        from gan_jax.eval.evaluate import fields
        save_at_eval = config.checkpoint.best_metric in fields(evaluator.metrics)
    k, end = config.steps_per_dispatch, config.num_steps
    last_log_time, last_log_step, paused = time.time(), step, 0.0

    def settle():
        nonlocal pending
        if pending is not None:
            meter.add(pending[0] - k, pending[1])
            pending = None

    def write_log(at):
        nonlocal last_logged, last_log_time, last_log_step, paused
        now = time.time()
        rate = (at - last_log_step) / max(now - last_log_time - paused, 1e-9)
        last_logged = meter.pop()
        writer.scalars(at, {**last_logged, "steps_per_s": rate,
                            "images_per_s": rate * config.batch_size})
        _say(_progress(at, end, rate, config.batch_size, last_logged, now - loop_start))
        last_log_time, last_log_step, paused = now, at, 0.0

    while step < end:
        state, metrics = engine.dispatch(state)
        step += k
        settle()
        if log_due is not None:  # Its metrics are all in the meter now.
            write_log(log_due)
            log_due = None
        pending = (step, metrics)
        sample = step % config.sample_every == 0 and step < end
        evaluate = evaluator is not None and evaluator.due(step, end)
        checkpoint = (step % config.checkpoint.every == 0 or step == end
                      or (save_at_eval and evaluate))
        # Agreeing on SIGINT is a collective, which waits for the device: on GPUs only at
        # checkpoints. On CPU every dispatch: that keeps the hosts in step, and gloo's
        # collectives are slow when hosts arrive apart (2 processes, MLP: 26 vs 800 steps/s).
        stop = signals.stop_requested(jax.default_backend() == "cpu" or checkpoint)
        if step % config.log_every == 0 or step == end:
            if sample or evaluate or checkpoint or stop:
                settle()
                write_log(step)
            else:
                log_due = step
        t = time.time()
        if sample:
            save_grids(state, step)
        if evaluate:
            settle()  # A state whose losses went NaN stops here, before it is evaluated.
            last_eval, eval_step = _evaluate(evaluator, engine, state, step, writer), step
        if checkpoint or stop:
            settle()  # Only a state whose metrics were all finite is saved.
            # Eval values only where they were measured: a checkpoint never carries an
            # earlier step's FID.
            metrics = {**last_logged, **(last_eval if eval_step == step else {})}
            save_block_s.append(save_checkpoint(state, metrics, meter.state()))
        paused += time.time() - t
        if stop:
            break
    settle()
    return state, step
