"""Step-throughput benchmark of the exact step the trainer runs (the trainer's Engine with
device-resident data, as ``timed_engine.TimedEngine`` builds it), with model FLOPs from
layer shapes and MFU against a matmul peak measured in the same process."""
import dataclasses
import functools
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import models, steps
from gan_jax.data.device import ORDERS
from gan_jax.errors import ConfigError
from gan_jax.perf import census, flops, profiling, torch_reference
# The tables live apart; callers use them as benchmark.table and so on.
from gan_jax.perf.tables import ablation_table, pytorch_ratios, table  # noqa: F401
from gan_jax.perf.timed_engine import TimedEngine
from gan_jax.trainer import config as config_lib


@dataclasses.dataclass(frozen=True)
class Model:
    """A benchmark model: the trainer's ``model`` keys and its step's game, ``n_dis`` D
    updates and one G update a step, each on ``batch`` images; Adam(2e-4, ``betas``)."""
    name: str  # config.model.name
    resolution: int
    channels: int
    g_width: int
    d_width: int
    z_dim: int = 100
    loss: str = "non_saturating"
    n_dis: int = 1
    betas: tuple[float, float] = (0.5, 0.999)
    spectral_norm: bool = False


# DCGAN as in Radford et al. with the PyTorch DCGAN example's step (torch_reference.py);
# SNGAN-32 as in Miyato et al. 2018, the CIFAR-10 ResNet with the paper's step (torch_sngan.py).
MODELS = {"dcgan64": Model("dcgan", 64, 3, 64, 64), "dcgan32": Model("dcgan", 32, 3, 64, 64),
          "dcgan28": Model("dcgan", 28, 1, 32, 32),
          "sngan32": Model("resnet", 32, 3, 256, 128, z_dim=128, loss="hinge", n_dis=5,
                           betas=(0.0, 0.9), spectral_norm=True)}


def _model(model: str) -> Model:
    if model not in MODELS:
        raise ConfigError(f"Unknown benchmark model {model!r}; choose from {sorted(MODELS)}.")
    return MODELS[model]


def bench_config(model: str, batch: int, dtype: str, k: int, share_fake: bool = True,
                 devices: int = 0):
    """The trainer config of the benchmarked step (``MODELS``); ``share_fake`` (one D
    update only): G reuses D's fake batch, as PyTorch's DCGAN example; ``devices``: the
    first N of this process's (0: all)."""
    spec = _model(model)
    c = config_lib.defaults()
    c.model.name, c.model.g_width, c.model.d_width = spec.name, spec.g_width, spec.d_width
    c.model.z_dim, c.model.spectral_norm = spec.z_dim, spec.spectral_norm
    c.loss, c.n_dis = spec.loss, spec.n_dis
    c.dtype, c.batch_size, c.steps_per_dispatch = dtype, batch, k
    c.share_fake = share_fake and spec.n_dis == 1
    c.parallel.num_devices = devices
    for opt in (c.optimizer.g, c.optimizer.d):
        opt.learning_rate, opt.eps = 2e-4, 1e-8
        opt.b1, opt.b2 = spec.betas
    c.num_steps = c.log_every = c.sample_every = c.checkpoint.every = k
    return config_lib.validate(c)


def time_torch(model: str, batch: int, setting: str, *, windows: int = 5,
               window_steps: int = 20, device: str | None = None) -> dict:
    """The PyTorch reference's row for ``model`` at ``batch`` in ``setting``
    (``mode:dtype[:cl]``, torch_reference.parse_setting): the same model and step as
    gan_jax's, DCGAN's from torch_reference, SNGAN's from torch_sngan."""
    mode, dtype, channels_last = torch_reference.parse_setting(setting)
    spec = _model(model)
    kw = dict(dtype=dtype, mode=mode, channels_last=channels_last, windows=windows,
              window_steps=window_steps, device=device)
    if spec.name == "resnet":
        from gan_jax.perf import torch_sngan  # Imports PyTorch.
        row = torch_sngan.time_pytorch(batch, g_width=spec.g_width, d_width=spec.d_width,
                                       z_dim=spec.z_dim, n_dis=spec.n_dis, **kw)
    else:
        row = torch_reference.time_pytorch(spec.resolution, spec.channels, spec.g_width,
                                           batch, **kw)
    return dict(row, model=model)


def matmul_peak(dtype=None, n: int | None = None, reps: int = 10) -> float:
    """Measured FLOP/s of an n x n matmul chain on the default device: bfloat16 on GPU,
    float32 on CPU (where bfloat16 matmuls are emulated, so their peak means little)."""
    gpu = jax.default_backend() == "gpu"
    dtype = dtype or (jnp.bfloat16 if gpu else jnp.float32)
    n = n or (8192 if gpu else 1024)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)

    @jax.jit
    def chain(x):
        for _ in range(reps):
            x = (x @ a) * (1.0 / n)
        return x

    jax.block_until_ready(chain(a))
    times = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(chain(a))
        times.append(time.perf_counter() - t)
    return 2.0 * n ** 3 * reps / min(times)


def _process_peak_memory() -> int | None:
    # The process's peak so far, over every program it ran: JAX cannot reset it per row.
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


# Ablations: each undoes one choice of the default step that plugs in from outside the
# step itself (the config, the Engine's attributes, a wrapper of the step; see
# docs/benchmarks.md). name -> (the default step's value, the values it takes; None: 0 or 1).
VARIANTS = {"share_fake": (True, None), "donate": (True, None), "unroll": (None, None),
            "data": ("shuffled", ORDERS), "shard_latents": (True, None),
            "norm_metrics": (True, None)}
DEFAULTS = {key: default for key, (default, _) in VARIANTS.items()}


# experiments.benchmark's --preset values: whole runs, sized for a machine (flag -> value).
PRESETS = {
    "h200": dict(models=["dcgan64"], batch_sizes=["128", "1024"],
                 dtypes=["float32", "bfloat16"], steps_per_dispatch=["1", "10"],
                 # reduce-overhead: PyTorch in CUDA graphs, its answer to launch-bound
                 # small batches (its eager steps at batch 128 were launch-bound, measured
                 # on an H200, 2026-11-28).
                 torch=["eager:float32", "eager:bfloat16:cl", "compile:bfloat16",
                        "reduce-overhead:bfloat16"],
                 windows=5, window_steps=30, profile=True,
                 # Most promising first (the census in docs/benchmarks.md), as the budget
                 # may cut the last ones. norm_metrics=0: what the four norms among the
                 # metrics cost (PyTorch's step computes none).
                 ablate=["norm_metrics=0", "data=sequential", "xla=--xla_gpu_autotune_level=0",
                         # Also the data draw's and the K-step scan's loops in CUDA graphs.
                         "xla=--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL",
                         # What G's forward shared with D's update buys (another game).
                         "share_fake=0"],
                 ablate_batches=["1024", "128"],
                 # Then the winners joined, so that one GPU run also measures the best
                 # setting it found, not just each change alone.
                 combine=True,
                 # Leaves ~90 s of gpu_benchmark.sh's 5 minutes to the FID Inception's part.
                 time_budget_s=210),
    # SNGAN-32 beside PyTorch's eager step (the anchors: 152 ms fp32, 197 ms bf16 autocast;
    # torch.compile failed on the spectral-norm parametrisation), at the paper's batch.
    "h200_sngan32": dict(models=["sngan32"], batch_sizes=["64"],
                         dtypes=["float32", "bfloat16"], steps_per_dispatch=["1"],
                         torch=["eager:float32", "eager:bfloat16"], windows=5,
                         window_steps=10, ablate=[], profile=False),
    "cpu": dict(models=["dcgan64"], batch_sizes=["16"], dtypes=["float32"],
                steps_per_dispatch=["1", "2"], torch=["eager:float32", "eager:bfloat16"],
                windows=5, window_steps=6, profile=True,
                ablate=["share_fake=0", "donate=0", "norm_metrics=0", "data=sequential"],
                combine=True),
}


class Budget:
    """A run's time limit in seconds (0: none), counted from its creation."""

    def __init__(self, seconds: float, clock=time.monotonic):
        if seconds < 0:
            raise ConfigError(f"A time budget is 0 (none) or positive seconds, got {seconds}.")
        self.seconds, self._clock, self._start = seconds, clock, clock()

    def elapsed(self) -> float:
        return self._clock() - self._start

    def left(self) -> float:
        return self.seconds - self.elapsed() if self.seconds else math.inf

    def allows(self, estimate_s: float) -> bool:
        """Whether a job of about ``estimate_s`` seconds still fits."""
        return estimate_s <= self.left()


def parse_variant(spec: str) -> dict:
    """"donate=0+data=sequential" -> {"donate": False, "data": "sequential"}."""
    out = {}
    for part in filter(None, spec.split("+")):
        key, sep, value = part.partition("=")
        if not sep or key not in VARIANTS:
            raise ConfigError(f"Bad ablation {part!r} in {spec!r}: write key=value with key "
                             f"one of {sorted(VARIANTS)} (e.g. donate=0), joined by '+'.")
        choices = VARIANTS[key][1]
        if choices is None:
            if value not in ("0", "1", "true", "false"):
                raise ConfigError(f"Ablation {key} takes 0 or 1, got {value!r}.")
            out[key] = value in ("1", "true")
        elif value not in choices:
            raise ConfigError(f"Ablation {key} takes one of {', '.join(choices)}, "
                              f"got {value!r}.")
        else:
            out[key] = value
    if not out:
        raise ConfigError(f"Ablation {spec!r} changes nothing: give key=value.")
    # unroll's default depends on the platform: the value it resolves to here is no change.
    resolved = {**DEFAULTS, "unroll": steps.default_unroll(jax.default_backend())}
    same = [f"{key}={value}" for key, value in out.items()
            if value in (DEFAULTS[key], resolved[key])]
    if same:
        raise ConfigError(f"Ablation {spec!r}: {', '.join(same)} is what the default step "
                          f"already does on {jax.default_backend()}, so it would time the same "
                          "program; give a value that differs.")
    return out


# Ablations that change what is computed (the game, the order of the data), not only how:
# never joined into the fastest combination.
CHANGES_RESULT = ("share_fake", "data")


def fastest_combination(rows: list[dict], default_row: dict, min_gain: float = 0.02):
    """The ablations among ``rows`` at ``default_row``'s model, batch, dtype and K that ran
    at least ``min_gain`` faster than it and compute the same thing, joined fastest first
    where they agree (a key or XLA flag set two ways keeps the faster row's value):
    ``{"variant": {key: value}, "xla_flags": str, "joins": [their labels]}``, or None when
    that is no setting beyond those already timed."""
    same = ("framework", "model", "batch", "dtype", "steps_per_dispatch")
    winners = sorted(
        (r for r in rows if r.get("ablation") and all(r[k] == default_row[k] for k in same)
         and r["img_per_s"] >= (1 + min_gain) * default_row["img_per_s"]
         and not set(r.get("variant", {})) & set(CHANGES_RESULT)
         and not r.get("combination_of")),
        key=lambda r: -r["img_per_s"])
    variant, flags, joins = {}, {}, []
    for r in winners:
        v = r.get("variant", {})
        f = dict(flag.partition("=")[::2] for flag in r.get("xla_flags", "").split())
        if any(variant.get(key, x) != x for key, x in v.items()) or any(
                flags.get(name, x) != x for name, x in f.items()):
            continue
        variant.update(v)
        flags.update(f)
        joins.append(" ".join(r["ablation"]))
    flags = [f"{name}={x}" if x else name for name, x in flags.items()]
    timed = [(r.get("variant", {}), set(r.get("xla_flags", "").split())) for r in winners]
    if not joins or (variant, set(flags)) in timed:
        return None
    return {"variant": variant, "xla_flags": " ".join(flags), "joins": joins}


def variant_spec(variant: dict) -> str:
    """The --ablate spelling of a variant: {"donate": False} -> "donate=0"."""
    return "+".join(_tags({**DEFAULTS, **variant}))


def _dataset_shape(model: str, batch: int) -> tuple[int, ...]:
    """The benchmark's device-resident dataset: at least 4096 images, and two steps' real
    batches (n_dis batches a step)."""
    spec = _model(model)
    return (max(4096, 2 * batch * spec.n_dis), spec.resolution, spec.resolution,
            spec.channels)


def _engine(model: str, batch: int, dtype: str, k: int, variant: dict, mesh=None,
            images=None, devices: int = 0):
    """The trainer's engine for a benchmark setting, and the setting's full variant."""
    unknown = sorted(set(variant) - set(VARIANTS))
    if unknown:
        raise TypeError(f"Got unknown ablations {unknown}; choose from {sorted(VARIANTS)}.")
    if "share_fake" in variant and _model(model).n_dis > 1:
        raise ConfigError(f"{model} takes {_model(model).n_dis} D updates a step, each on a "
                          "fresh fake batch: share_fake (G reusing D's one fake batch) does not "
                          "apply to it.")
    v = {**DEFAULTS, **variant}
    config = bench_config(model, batch, dtype, k, v["share_fake"], devices)
    shape = _dataset_shape(model, batch)[1:]
    G, D = models.build(config.model, shape, dtype)
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, _dataset_shape(model, batch),
                                                   dtype=np.uint8)
    init_key, data_key = jax.random.split(jax.random.PRNGKey(0))
    engine = TimedEngine(config, donate=v["donate"], unroll=v["unroll"], data_order=v["data"],
                         shard_latents=v["shard_latents"], norm_metrics=v["norm_metrics"],
                         G=G, D=D, image_shape=shape, init_key=init_key, data_key=data_key,
                         data=images, mesh=mesh)
    return engine, v


def _tags(v: dict) -> list[str]:
    """The ablation's labels: each key whose value differs from the default step's."""
    return [f"{key}={int(x) if isinstance(x, bool) else x}" for key, x in v.items()
            if x != DEFAULTS[key]]


def compile_only(model: str, batch: int, dtype: str, k: int, mesh, **variant) -> dict:
    """Compiles the setting's K-step program for the devices of ``mesh`` (compile-only ones
    too: ``targets``) without running it; returns the compile time, XLA's memory
    figure and the program's kernels (``census.take``)."""
    tags = _tags({**DEFAULTS, **variant})
    target = mesh.devices.flat[0]
    # unroll=None picks by this process's backend; the program is for the target's.
    variant = {"unroll": steps.default_unroll(target.platform), **variant}
    # Only the dataset's size matters to a program compiled from shapes: no real array.
    images = np.broadcast_to(np.uint8(0), _dataset_shape(model, batch))
    engine, _ = _engine(model, batch, dtype, k, variant, mesh=mesh, images=images)
    t = time.perf_counter()
    engine.compile_abstract()
    return {"model": model, "batch": batch, "dtype": dtype, "steps_per_dispatch": k,
            "ablation": tags, "compile_s": time.perf_counter() - t,
            "memory_bytes": engine.program_bytes(), "platform": target.platform,
            "device_kind": target.device_kind,
            "kernels": census.take(engine.hlo_text())}


def time_gan_jax(model: str, batch: int, dtype: str, k: int, *, windows: int = 5,
                 window_steps: int = 20, peak_flops: float | None = None,
                 profile_dir: str | None = None, devices: int = 1, **variant) -> dict:
    """Times the trainer's K-step program: median over ``windows`` timed windows of about
    ``window_steps`` steps, synchronising only at window edges (and every 8 dispatches on
    several CPU devices, as XLA:CPU needs), after a warm-up, on the first ``devices``
    devices (0: all; 1 by default, as the PyTorch reference has; MFU is per device,
    against ``peak_flops`` of one).
    ``variant``: ablations, keys of VARIANTS (missing ones: the trainer's step);
    ``profile_dir``: also trace one more window with ``jax.profiler`` and add its summary
    as "profile"."""
    start = time.perf_counter()
    engine, v = _engine(model, batch, dtype, k, variant, devices=devices)
    state = engine.new_state()
    flop = step_flops(model, batch, devices, **variant)
    t = time.perf_counter()
    engine.compile(state)
    compile_s = time.perf_counter() - t
    dispatches = max(1, window_steps // k)
    box = {"state": state}
    # XLA:CPU gives a multi-device program's shares one thread each from a pool of
    # max(cores, devices), and a 33rd program in flight on a device blocks a thread until
    # one ends: too far ahead, a share never gets a thread and the process aborts after
    # 40 s (200 one-step dispatches on 4 fake devices did). GPUs have no such limit.
    sync_every = 8 if engine.shards > 1 and jax.default_backend() == "cpu" else dispatches

    def run(n):
        for i in range(1, n + 1):
            box["state"], box["metrics"] = engine.dispatch(box["state"])
            if i % sync_every == 0:
                jax.block_until_ready(box["state"])
        jax.block_until_ready(box["state"])

    window = functools.partial(run, dispatches)
    run(max(2, dispatches // 2))  # warm-up
    per_step = []
    for _ in range(windows):
        t = time.perf_counter()
        window()
        per_step.append((time.perf_counter() - t) / (dispatches * k))
    last = {name: float(np.asarray(jax.device_get(v))[-1])
            for name, v in box["metrics"].items()}
    profile, profile_s = None, 0.0
    if profile_dir:
        t = time.perf_counter()
        try:
            path, wall = profiling.capture(window, profile_dir)
            profile = profiling.summarize(path, engine.hlo_text(), steps=dispatches * k,
                                          wall_s=wall)
            profile["trace"] = path
        except Exception as e:  # No profiler (e.g. no CUPTI) must not cost the timings.
            profile = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        profile_s = time.perf_counter() - t
    engine.close()
    s = statistics.median(per_step)
    tags = _tags(v)
    out = {"framework": "gan_jax",
           "setting": " ".join([f"jit{' K=' + str(k) if k > 1 else ''}", *tags]),
           "model": model, "batch": batch, "dtype": dtype, "steps_per_dispatch": k,
           "ms_per_step": 1e3 * s, "img_per_s": batch / s, "compile_s": compile_s,
           "gflop_per_step": flop / 1e9, "tflop_per_s": flop / s / 1e12,
           "memory_bytes": engine.program_bytes(),
           "process_peak_memory_bytes": _process_peak_memory(), "d_loss": last["d_loss"],
           "g_loss": last["g_loss"], "devices": engine.shards,
           "backend": jax.default_backend(), "ablation": tags,
           "variant": {key: x for key, x in v.items() if x != DEFAULTS[key]}, "profile": profile,
           "kernels": census.take(engine.hlo_text()),
           "wall_s": time.perf_counter() - start, "profile_s": profile_s}
    out["mfu"] = flop / s / (peak_flops * engine.shards) if peak_flops else None
    return out


def step_flops(model: str, batch: int, devices: int = 1, **variant) -> float:
    """Model FLOPs of one train step of ``model`` at ``batch`` (the default step's are the
    same for both frameworks; ``variant``: an ablation's, e.g. share_fake=0's one more G
    forward)."""
    shape = _dataset_shape(model, batch)[1:]
    rows = batch * _model(model).n_dis  # A step's real images.
    engine, _ = _engine(model, batch, "float32", 1, variant,
                        images=np.zeros((2 * rows, *shape), np.uint8), devices=devices)
    return flops.count(engine.train_step, engine.abstract_state(),
                       jax.ShapeDtypeStruct((rows, *shape), jnp.uint8))
