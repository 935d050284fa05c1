"""Step throughput of gan_jax, and of the same step in PyTorch, in one run:

  python -m experiments.benchmark --models=dcgan64 --batch_sizes=128,1024 \
      --dtypes=float32,bfloat16 --steps_per_dispatch=1,10 \
      --torch=eager:float32,eager:bfloat16:cl,compile:bfloat16 --out=benchmark.json

Prints a Markdown table (gan_jax rows carry their speed over the best PyTorch setting of
the same model and batch) and writes every row to --out as JSON. Without PyTorch
installed, or with --torch=, only gan_jax runs. --preset=h200 is the whole GPU run
(experiments/gpu_benchmark.sh), --preset=cpu a small one for a laptop.
"""
import json
import sys

import jax
from absl import app, flags, logging

from gan_jax import benchmark, logs

_MODELS = flags.DEFINE_list("models", ["dcgan64"], "Benchmark models.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["128", "1024"], "Batch sizes.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "gan_jax compute dtypes.")
_KS = flags.DEFINE_list("steps_per_dispatch", ["1", "10"], "gan_jax steps per jitted call.")
_TORCH = flags.DEFINE_list(
    "torch", ["eager:float32", "eager:bfloat16", "eager:bfloat16:cl", "compile:float32",
              "compile:bfloat16"], "PyTorch settings, mode:dtype[:cl] ('' for none).")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows (the median is reported).")
_WINDOW_STEPS = flags.DEFINE_integer("window_steps", 20, "Steps per timed window.")
_OUT = flags.DEFINE_string("out", "benchmark.json", "JSON file for all rows.")
_PRESET = flags.DEFINE_enum("preset", None, ["h200", "cpu"], "A whole run, sized for it.")

PRESETS = {
    "h200": dict(models=["dcgan64"], batch_sizes=["128", "1024"],
                 dtypes=["float32", "bfloat16"], steps_per_dispatch=["1", "10"],
                 torch=["eager:float32", "eager:bfloat16:cl", "compile:bfloat16"],
                 windows=5, window_steps=50),
    "cpu": dict(models=["dcgan64"], batch_sizes=["16"], dtypes=["float32"],
                steps_per_dispatch=["1", "2"], torch=["eager:float32", "eager:bfloat16"],
                windows=3, window_steps=4),
}


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def _run_torch(model, batch, setting, peak, gflop):
    from gan_jax import torch_reference
    mode, dtype, *rest = setting.split(":")
    res, ch, width = benchmark.MODELS[model]
    r = torch_reference.time_pytorch(res, ch, width, batch, dtype=dtype,
                                     compile=mode == "compile", channels_last=rest == ["cl"],
                                     windows=_WINDOWS.value, window_steps=_WINDOW_STEPS.value)
    s = r["ms_per_step"] / 1e3
    r.update(model=model, gflop_per_step=gflop / 1e9, tflop_per_s=gflop / s / 1e12,
             mfu=gflop / s / peak)
    return r


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if _PRESET.value:
        for name, value in PRESETS[_PRESET.value].items():
            flags.FLAGS[name].value = value
    peak = benchmark.matmul_peak()
    print(f"# {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
          f"measured matmul peak {peak / 1e12:.2f} TFLOP/s "
          f"({'bf16' if jax.default_backend() == 'gpu' else 'f32'}; MFU is against it)",
          flush=True)
    settings = [t for t in _TORCH.value if t]
    if settings and not _torch_available():
        print("# PyTorch is not installed (pip install -e .[torch]): gan_jax only.")
        settings = []
    rows = []
    for model in _MODELS.value:
        for batch in map(int, _BATCHES.value):
            gflop = benchmark.step_flops(model, batch)
            for dtype in _DTYPES.value:
                for k in map(int, _KS.value):
                    rows.append(benchmark.time_gan_jax(
                        model, batch, dtype, k, windows=_WINDOWS.value,
                        window_steps=_WINDOW_STEPS.value, peak_flops=peak))
                    print(benchmark.table(rows[-1:]).splitlines()[-1], flush=True)
            for setting in settings:
                try:
                    rows.append(_run_torch(model, batch, setting, peak, gflop))
                except Exception as e:  # A setting that fails is a result too.
                    print(f"# PyTorch {setting} failed: {type(e).__name__}: {str(e)[:300]}",
                          flush=True)
                    continue
                print(benchmark.table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(benchmark.table(rows))
    meta = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
            "jax": jax.__version__, "matmul_peak_tflops": peak / 1e12, "argv": sys.argv}
    logs.atomic_write_bytes(_OUT.value, json.dumps({"meta": meta, "rows": rows},
                                                   indent=2).encode())


if __name__ == "__main__":
    app.run(main)
