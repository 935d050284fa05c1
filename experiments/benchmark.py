"""Step throughput of gan_jax, and of the same step in PyTorch, in one run:

  python -m experiments.benchmark --models=dcgan64 --batch_sizes=128,1024 \
      --dtypes=float32,bfloat16 --steps_per_dispatch=1,10 \
      --torch=eager:float32,eager:bfloat16:cl,compile:bfloat16 --out=benchmark.json

Prints a Markdown table (gan_jax rows carry their speed per device over the best PyTorch
setting of the same model and batch; gan_jax runs on --devices, 1 by default, as PyTorch
does) and writes every row to --out as JSON. Without PyTorch
installed, or with --torch=, only gan_jax runs. --preset=h200 is the whole GPU run
(experiments/gpu_benchmark.sh), --preset=h200_sngan32 its SNGAN-32 part, --preset=cpu a
small one for a laptop; flags given with a preset override its values.

Models (--models): DCGAN (dcgan64, dcgan32, dcgan28) with the PyTorch DCGAN example's step,
one D and one G update; SNGAN-32 (sngan32, Miyato et al.'s CIFAR-10 ResNet with spectral
norm) with the paper's step, hinge loss, 5 D updates and one G update, Adam(2e-4, 0, 0.9).
A row's step is one such iteration, its batch the images of each update (an SNGAN step
reads 5 x batch real images), img/s the steps/s x batch; PyTorch's step is the same
(gan_jax/perf/torch_reference.py, gan_jax/perf/torch_sngan.py).

Ablations (--ablate, repeatable) undo one choice of the default step at the last listed
dtype and K, and at each of --ablate_batches (default: the last listed batch size):
"share_fake=0" (G draws and scores its own fake batch: another game), "donate=0",
"unroll=0" or "unroll=1" (whichever this platform does not use; a value the default step
already has is refused), "data=sequential" (read the data in order: what the on-device
shuffle costs), "shard_latents=0" (several devices: G's latent draw laid out by XLA, not
like the real batch) or "norm_metrics=0" (no gradient or parameter norms among the
metrics), joined by '+' for several, or "xla=FLAGS", which runs that setting again in a
fresh process with FLAGS added to XLA_FLAGS. --combine then times the winners joined
(gan_jax.perf.benchmark.fastest_combination); --variant=SPEC times that ablation instead
of the default step (the fresh process of an XLA-flag combination uses it). --profile
traces one more window of the last listed dtype and K at every batch size with
jax.profiler and prints where its time goes.

The run goes in order of need: the default step (last listed dtype and K) and PyTorch at
every batch; then gan_jax's other dtypes and K; then the ablations. --time_budget_s skips
what would not fit in it after the first part (each row is taken to cost what the default
step's row of its batch cost, compile included, profile not), and lists what it skipped.
"""
import json
import os
import subprocess
import sys
import tempfile

import jax
from absl import app, flags

from experiments import cli
from gan_jax import errors, files
from gan_jax.perf import benchmark, census, profiling, targets, torch_reference
from gan_jax.models.registry import DTYPES

_MODELS = flags.DEFINE_list("models", ["dcgan64"], "Benchmark models: dcgan64, dcgan32, "
                            "dcgan28 or sngan32 (gan_jax.perf.benchmark.MODELS).")
_BATCHES = flags.DEFINE_list("batch_sizes", ["128", "1024"], "Batch sizes.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "gan_jax compute dtypes.")
_KS = flags.DEFINE_list("steps_per_dispatch", ["1", "10"], "gan_jax steps per jitted call.")
_TORCH = flags.DEFINE_list(
    "torch", ["eager:float32", "eager:bfloat16", "eager:bfloat16:cl", "compile:float32",
              "compile:bfloat16"], "PyTorch settings, mode:dtype[:cl] ('' for none); mode: eager, "
    "compile, or torch.compile's reduce-overhead (CUDA graphs) or max-autotune.")
_DEVICES = flags.DEFINE_integer("devices", 1, "gan_jax's devices: the first N of this "
                                "process's (0: all). PyTorch's reference runs on one; a row "
                                "on several is set against it per device.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows (the median is reported).")
_WINDOW_STEPS = flags.DEFINE_integer("window_steps", 20, "Steps per timed window.")
_OUT = flags.DEFINE_string("out", "benchmark.json", "JSON file for all rows (written at the "
                           "end; <out>.partial holds the rows so far while it runs).")
_PRESET = flags.DEFINE_enum("preset", None, list(benchmark.PRESETS),
                            "A whole run, sized for a machine (gan_jax.perf.benchmark.PRESETS).")
_ABLATE = flags.DEFINE_multi_string("ablate", [], "Ablations of the default step (see above).")
_ABLATE_BATCHES = flags.DEFINE_list("ablate_batches", [], "Batch sizes the ablations run at, "
                                    "in this order (default: the last of --batch_sizes).")
_PROFILE = flags.DEFINE_bool("profile", False, "Profile the default step of each batch.")
_PROFILE_DIR = flags.DEFINE_string("profile_dir", "", "Where traces go ('': a temporary dir).")
_PEAK = flags.DEFINE_float("matmul_peak", 0.0, "Known matmul FLOP/s (0: measure it).")
_VARIANT = flags.DEFINE_string("variant", "", "Time this ablation spec (as for --ablate) "
                               "instead of the default step; not with --ablate.")
_COMBINE = flags.DEFINE_bool("combine", False, "After a batch's ablations, time the fastest "
                             "combination: those at least --combine_min_gain faster than the "
                             "default step that compute the same thing, joined.")
_MIN_GAIN = flags.DEFINE_float("combine_min_gain", 0.02, "Speed-up over the default step an "
                               "ablation needs to join the combination (0.02: 2% more img/s).")
_BUDGET = flags.DEFINE_float("time_budget_s", 0.0, "Seconds the run may take: rows after the "
                             "default steps and PyTorch that would not fit are skipped "
                             "(0: no limit).")


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def _run_torch(model, batch, setting, peak, gflop):
    r = benchmark.time_torch(model, batch, setting, windows=_WINDOWS.value,
                             window_steps=_WINDOW_STEPS.value)
    s = r["ms_per_step"] / 1e3
    r.update(gflop_per_step=gflop / 1e9, tflop_per_s=gflop / s / 1e12, mfu=gflop / s / peak)
    return r


def _xla_variant(model, batch, dtype, k, xla_flags, peak, spec=""):
    """The default step (``spec``: that ablation of it) again in a fresh process whose
    XLA_FLAGS include ``xla_flags``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip())
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "experiments.benchmark", f"--models={model}",
               f"--batch_sizes={batch}", f"--dtypes={dtype}", f"--steps_per_dispatch={k}",
               "--torch=", f"--windows={_WINDOWS.value}", f"--window_steps={_WINDOW_STEPS.value}",
               f"--matmul_peak={peak}", f"--variant={spec}", f"--devices={_DEVICES.value}",
               f"--out={out}"]
        r = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"exit {r.returncode}: {r.stderr.strip()[-400:]}")
        with open(out) as f:
            rows = json.load(f)["rows"]
    for row in rows:
        row["setting"] += f" XLA_FLAGS={xla_flags}"
        row["ablation"] = [*row["ablation"], f"XLA_FLAGS={xla_flags}"]
        row["xla_flags"] = xla_flags
    return rows


def _skip(what, budget, estimate_s, skipped) -> bool:
    if budget.allows(estimate_s):
        return False
    print(f"# {what} skipped: {budget.elapsed():.0f} s of the {budget.seconds:g} s budget "
          f"spent, and it takes about {estimate_s:.0f} s", flush=True)
    skipped.append(what)
    return True


def _cost(default_row) -> float:
    """What an unprofiled row at the default row's batch is taken to cost, in seconds."""
    return default_row["wall_s"] - default_row["profile_s"]


def _display_order(r):
    """Sort key for the tables (a stable sort keeps the run order within a key): by model
    and batch as listed, gan_jax first (dtype and K as listed, ablations last), then
    PyTorch."""
    place = (_MODELS.value.index(r["model"]), _BATCHES.value.index(str(r["batch"])))
    if r["framework"] != "gan_jax":
        return (*place, 2)
    return (*place, 1 if r.get("ablation") else 0, _DTYPES.value.index(r["dtype"]),
            _KS.value.index(str(r["steps_per_dispatch"])))


def _time_gan_jax(model, batch, dtype, k, peak, **kwargs):
    """One gan_jax row with the run's window flags; ``kwargs``: profile_dir, ablations."""
    return benchmark.time_gan_jax(model, batch, dtype, k, windows=_WINDOWS.value,
                                  window_steps=_WINDOW_STEPS.value, peak_flops=peak,
                                  devices=_DEVICES.value, **kwargs)


def _ablations(model, batch, dtype, k, peak, add, budget, estimate_s, skipped):
    for spec in _ABLATE.value:
        if _skip(f"ablation {spec} at batch {batch}", budget, estimate_s, skipped):
            continue
        try:
            if spec.startswith("xla="):
                new = _xla_variant(model, batch, dtype, k, spec[len("xla="):], peak)
            else:
                new = [_time_gan_jax(model, batch, dtype, k, peak,
                                     **benchmark.parse_variant(spec))]
        except Exception as e:  # A setting that fails to compile or run is a result too.
            print(f"# ablation {spec} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        add(new)


def _combination(rows, default_row, peak, add, budget, skipped):
    """Times the fastest combination of the ablations at the default row's batch, if it is
    a setting not yet timed."""
    best = benchmark.fastest_combination(rows, default_row, _MIN_GAIN.value)
    batch = default_row["batch"]
    if best is None:
        print(f"# no new combination of ablations at batch {batch}: what ran "
              f"{_MIN_GAIN.value:.0%} or more faster than the default step (and computes the "
              "same) is one setting already timed, or nothing", flush=True)
        return
    spec = benchmark.variant_spec(best["variant"])
    what = f"fastest combination at batch {batch} ({' + '.join(best['joins'])})"
    if _skip(what, budget, _cost(default_row), skipped):
        return
    model, dtype, k = (default_row[key] for key in ("model", "dtype", "steps_per_dispatch"))
    try:
        new = (_xla_variant(model, batch, dtype, k, best["xla_flags"], peak, spec)
               if best["xla_flags"] else
               [_time_gan_jax(model, batch, dtype, k, peak, **best["variant"])])
    except Exception as e:
        print(f"# {what} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
        return
    for r in new:
        r["combination_of"] = best["joins"]
    add(new)


def main(argv):
    with cli.script(argv):
        _main()


def _main():
    budget = benchmark.Budget(_BUDGET.value)
    if _PRESET.value:  # Flags given on the command line win over the preset's.
        for name, value in benchmark.PRESETS[_PRESET.value].items():
            if not flags.FLAGS[name].present:
                flags.FLAGS[name].value = value
        if _BATCHES.present and not _ABLATE_BATCHES.present:  # The preset's may not be listed.
            flags.FLAGS.ablate_batches = []
    _check_numbers()
    for b in _ABLATE_BATCHES.value:
        if b not in _BATCHES.value:
            raise errors.ConfigError(f"--ablate_batches entry {b} is not one of --batch_sizes "
                                     f"{','.join(_BATCHES.value)}: ablations are compared with "
                                     "the default step at the same batch.")
    for spec in _ABLATE.value:  # Refuse misspelt input before any timing.
        if not spec.startswith("xla="):
            benchmark.parse_variant(spec)
    for setting in filter(None, _TORCH.value):
        torch_reference.parse_setting(setting)
    variant = benchmark.parse_variant(_VARIANT.value) if _VARIANT.value else {}
    if variant and _ABLATE.value:
        raise errors.ConfigError("--variant times one ablation of the default step as the "
                                 "main row, so it cannot be combined with --ablate: run "
                                 "the ablations without --variant.")
    for model in _MODELS.value:
        if model not in benchmark.MODELS:
            raise errors.ConfigError(f"Unknown --models entry {model!r}; choose from "
                                     f"{sorted(benchmark.MODELS)}.")
    for dtype in _DTYPES.value:
        if dtype not in DTYPES:
            raise errors.ConfigError(f"Unknown --dtypes entry {dtype!r}; choose from "
                                     f"{', '.join(DTYPES)}.")
    count = jax.device_count()
    if not 0 <= _DEVICES.value <= count:
        raise errors.ConfigError(f"--devices={_DEVICES.value}, but this process has {count} "
                                 f"device(s); use 1 to {count}, or 0 for all of them.")
    for b in _BATCHES.value:
        if int(b) % (_DEVICES.value or count):
            raise errors.ConfigError(f"Batch size {b} does not split evenly over "
                                     f"{_DEVICES.value or count} devices; use multiples of "
                                     "it in --batch_sizes, or fewer --devices.")
    peak = _PEAK.value or benchmark.matmul_peak()
    profile_dir = _PROFILE_DIR.value or (tempfile.mkdtemp(prefix="gan_jax_profile_")
                                         if _PROFILE.value else "")
    print(f"# {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
          f"measured matmul peak {peak / 1e12:.2f} TFLOP/s "
          f"({'bf16' if jax.default_backend() == 'gpu' else 'f32'}; MFU is against it)",
          flush=True)
    settings = [t for t in _TORCH.value if t]
    if settings and not _torch_available():
        print("# PyTorch is not installed (pip install -e .[torch]): gan_jax only.")
        settings = []
    meta = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
            "jax": jax.__version__, "matmul_peak_tflops": peak / 1e12, "argv": sys.argv,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "time_budget_s": _BUDGET.value,
            "devices": _DEVICES.value or count,
            "skipped": []}
    rows = []

    def add(new_rows):
        # Each row is saved at once to <out>.partial, so a run that is stopped keeps what it
        # measured; --out itself is written only by a run that finishes.
        rows.extend(new_rows)
        for r in new_rows:
            print(benchmark.table([r]).splitlines()[-1], flush=True)
        _save(rows, meta, complete=False)

    main_dtype, main_k = _DTYPES.value[-1], int(_KS.value[-1])
    batches = list(map(int, _BATCHES.value))
    for model in _MODELS.value:
        # First what the comparison needs, so that a run cut short still has it: the default
        # step (last listed dtype and K) at each batch, and PyTorch.
        default_rows = {}
        for batch in batches:
            add([_time_gan_jax(model, batch, main_dtype, main_k, peak,
                               profile_dir=profile_dir if _PROFILE.value else None,
                               **variant)])
            default_rows[batch] = rows[-1]
            # The default step's model FLOPs, PyTorch's too (a --variant may do other work).
            gflop = (rows[-1]["gflop_per_step"] * 1e9 if not variant
                     else benchmark.step_flops(model, batch))
            for setting in settings:
                try:
                    add([_run_torch(model, batch, setting, peak, gflop)])
                except Exception as e:  # A setting that fails is a result too.
                    print(f"# PyTorch {setting} failed: {type(e).__name__}: {str(e)[:300]}",
                          flush=True)
        # Then the other dtypes and K, then the ablations, while the budget lasts.
        for batch in batches:
            for dtype in _DTYPES.value:
                for k in map(int, _KS.value):
                    if (dtype, k) == (main_dtype, main_k):
                        continue
                    estimate = _cost(default_rows[batch])
                    if _skip(f"{model} batch {batch} {dtype} K={k}", budget, estimate,
                             meta["skipped"]):
                        continue
                    add([_time_gan_jax(model, batch, dtype, k, peak, **variant)])
        for batch in map(int, _ABLATE_BATCHES.value or batches[-1:]):
            _ablations(model, batch, main_dtype, main_k, peak, add, budget,
                       _cost(default_rows[batch]), meta["skipped"])
            if _COMBINE.value and _ABLATE.value:
                _combination(rows, default_rows[batch], peak, add, budget, meta["skipped"])
    print(f"\n# {len(rows)} rows in {budget.elapsed():.0f} s"
          + (f" (budget {_BUDGET.value:g} s; skipped: {', '.join(meta['skipped'])})"
             if meta["skipped"] else ""))
    rows.sort(key=_display_order)
    print()
    print(benchmark.table(rows))
    if any(r.get("ablation") for r in rows):
        print("\nWhat each choice of the default step buys:\n")
        print(benchmark.ablation_table(rows))
    bandwidth = targets.device_bandwidth(jax.devices()[0])
    if bandwidth:
        print(f"\nThe steps against their roofline floors ({bandwidth / 1e12:.1f} TB/s, "
              f"{peak / 1e12:.0f} TFLOP/s; gan_jax/perf/hlo_cost.py):\n")
        print(census.roofline_table([r for r in rows if r.get("kernels")], bandwidth, peak))
    for r in rows:
        prof = r.get("profile")
        if prof:
            print(f"\nWhere the time goes: {r['model']} batch {r['batch']} {r['dtype']} "
                  f"{r['setting']} (trace: {prof.get('trace', '-')})\n")
            print(f"profiling failed: {prof['error']}" if "error" in prof
                  else profiling.table(prof, bandwidth, peak))
    _save(rows, meta, complete=True)


def _check_numbers():
    """Refuses numbers that would crash a run late or print nonsense, before any timing."""
    for flag in (_BATCHES, _KS, _ABLATE_BATCHES):
        bad = [x for x in flag.value if not (x.isdigit() and int(x) > 0)]
        if bad or (flag is not _ABLATE_BATCHES and not flag.value):
            raise errors.ConfigError(f"--{flag.name} takes positive integers, comma-separated; "
                                     f"got {','.join(flag.value)!r}.")
    for flag in (_WINDOWS, _WINDOW_STEPS):
        if flag.value < 1:
            raise errors.ConfigError(f"--{flag.name} must be >= 1, got {flag.value}.")
    if _PEAK.value < 0:
        raise errors.ConfigError(f"--matmul_peak is FLOP/s (0: measure it), got {_PEAK.value}.")


def _save(rows, meta, complete: bool):
    partial = _OUT.value + ".partial"
    files.atomic_write_bytes(_OUT.value if complete else partial, json.dumps(
        {"meta": {**meta, "complete": complete}, "rows": rows}, indent=2).encode())
    if complete and os.path.exists(partial):
        os.remove(partial)

if __name__ == "__main__":
    app.run(main)
