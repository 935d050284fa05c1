"""The training loop: the one place that does I/O."""
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gan_jax import config as config_lib
from gan_jax import logs, models, sampling, steps
from gan_jax import state as state_lib
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


def prepare_workdir(workdir: pathlib.Path, config) -> None:
    """Writes config.json, or refuses a workdir whose run had another config."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    new = config_lib.to_dict(config)
    if path.exists():
        differences = config_lib.diff(json.loads(path.read_text()), new)
        if differences:
            raise WorkdirError(
                f"{workdir} holds a run with another config; refusing to mix them. Keys that "
                "differ (workdir -> now):\n  " + "\n  ".join(differences)
                + "\nUse a new --workdir, or the same config to continue that run.")
    else:
        logs.atomic_write_bytes(path, json.dumps(new, indent=2, sort_keys=True).encode())


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
                    "stopped; lower the learning rates, add a gradient penalty, or use float32.")
            self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.count += len(next(iter(host.values())))

    def pop(self) -> dict:
        out = {k: v / self.count for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


def _progress(step, total, rate, batch, m, elapsed) -> str:
    eta = (total - step) / rate if rate > 0 else float("nan")
    return (f"step {step}/{total} | {rate:,.1f} steps/s | {rate * batch:,.0f} img/s | "
            f"d_loss {m['d_loss']:.4f} g_loss {m['g_loss']:.4f} | D(x) {m['d_real']:.3f} "
            f"D(G(z)) {m['d_fake']:.3f} | elapsed {elapsed:.0f}s eta {eta:.0f}s")


def train_and_evaluate(config, workdir) -> dict:
    """Trains the GAN that ``config`` describes, writing every artefact into ``workdir``.

    Returns a summary (steps, wall time, throughput); also written to ``summary.json``."""
    start = time.time()
    config = config_lib.validate(config)
    workdir = pathlib.Path(workdir)
    prepare_workdir(workdir, config)

    ds = config.dataset
    data = sources.load(ds.name, ds.split, ds.data_dir or None, image_key=ds.image_key,
                        resolution=ds.resolution or None, max_examples=ds.max_examples or None)
    G, D = models.build(config.model, data.image_shape, config.dtype)
    root = jax.random.PRNGKey(config.seed)
    init_key, data_key, sample_key = jax.random.split(root, 3)
    create = functools.partial(state_lib.create, G=G, D=D, g_tx=make_optimizer(config.optimizer.g),
                               d_tx=make_optimizer(config.optimizer.d),
                               image_shape=data.image_shape)
    state = jax.jit(create)(init_key)

    rows = config.n_dis * config.batch_size
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

    writer = logs.Writer(workdir)

    def save_grids(step, final=False):
        raw = sampling.grid(sampling.to_uint8(draw(state.g_params, state.g_vars, z_fixed)))
        ema = sampling.grid(sampling.to_uint8(draw(state.ema_params, state.g_vars, z_fixed,
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
    meter, pending = _Meter(), None
    step = int(state.step)
    first_step, loop_start = step, time.time()
    last_log_time, last_log_step = loop_start, step
    try:
        while step < config.num_steps:
            state, metrics = multi_step(state, images)
            step += config.steps_per_dispatch
            if pending is not None:  # Read the previous dispatch while this one runs.
                _consume(pending, meter)
            pending = (step, metrics)
            if step % config.log_every == 0 or step == config.num_steps:
                _consume(pending, meter)
                pending = None
                now = time.time()
                rate = (step - last_log_step) / max(now - last_log_time, 1e-9)
                values = meter.pop()
                writer.scalars(step, {**values, "steps_per_s": rate,
                                      "images_per_s": rate * config.batch_size})
                print(_progress(step, config.num_steps, rate, config.batch_size, values,
                                now - loop_start), flush=True)
                last_log_time, last_log_step = now, step
            if step % config.sample_every == 0 and step < config.num_steps:
                save_grids(step)
        save_grids(step, final=True)
    finally:
        writer.close()

    loop_s = time.time() - loop_start
    summary = {"steps": step, "wall_time_s": time.time() - start, "compile_s": compile_s,
               "loop_s": loop_s, "steps_per_s": (step - first_step) / max(loop_s, 1e-9),
               "batch_size": config.batch_size, "backend": jax.default_backend()}
    summary["images_per_s"] = summary["steps_per_s"] * config.batch_size
    logs.atomic_write_bytes(workdir / "summary.json", json.dumps(summary, indent=2).encode())
    print(f"gan_jax: done, {step} steps in {summary['wall_time_s']:.0f}s "
          f"({summary['steps_per_s']:,.1f} steps/s in the loop); final grid "
          f"{workdir / 'samples' / 'final.png'}", flush=True)
    return summary


def _consume(pending, meter: _Meter) -> None:
    step, metrics = pending
    k = len(jax.tree.leaves(metrics)[0])
    meter.add(step - k, metrics)
