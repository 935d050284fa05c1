"""Compiles the benchmark's train step for a GPU this machine does not have, and counts the
kernels the program launches, the bytes they move and the convolution FLOPs they do (and
XLA's memory figure), without running it:

  JAX_PLATFORMS=cpu python -m experiments.gpu_compile \
      [--target=experiments/gpu_targets/h200.textproto] [--batch_sizes=128,1024] \
      [--dtypes=bfloat16] [--steps_per_dispatch=10] [--ablate=norm_metrics=0 ...] \
      [--peak_tflops=790] [--top=20] [--out=F]

At small batch a GPU step costs at least a few microseconds per kernel, so the count says
where a step's floor is and what a change removes, before any GPU time is spent; at large
batch the bytes and FLOPs do (the roofline table: the target's memory bandwidth and the
given matmul peak; --top lists the kernels with the longest floors). The
compile takes no autotuning (there is no device to time candidates on), so fusions match
the GPU's but convolution algorithms may not. Needs jax >= 0.11 (Python >= 3.12) with its
CUDA plugin: `pip install "jax[cuda13]"`; no GPU.
"""
import json
import pathlib

from absl import app, flags

from experiments import cli
from gan_jax import files
from gan_jax.perf import benchmark, census, targets

_TARGET = flags.DEFINE_string("target", "experiments/gpu_targets/h200.textproto",
                              "The GPU's target description (text proto).")
_MODEL = flags.DEFINE_string("model", "dcgan64", "Benchmark model.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["128", "1024"], "Batch sizes.")
_DTYPES = flags.DEFINE_list("dtypes", ["bfloat16"], "Compute dtypes.")
_KS = flags.DEFINE_list("steps_per_dispatch", ["10"], "Steps per jitted call.")
_ABLATE = flags.DEFINE_multi_string("ablate", [], "Ablations (as experiments.benchmark's), "
                                    "each compiled at every setting besides the default.")
_OUT = flags.DEFINE_string("out", None, "Also write the rows to this JSON file.")
_TOP = flags.DEFINE_integer("top", 0, "Also list the first setting's kernels with the longest "
                            "roofline floors, this many.")
_PEAK = flags.DEFINE_float("peak_tflops", 790.0, "The GPU's bf16 matmul peak for the floors "
                           "(790: measured on an H200, 2026-11-28).")


def main(argv):
    with cli.script(argv):
        target = targets.read(_TARGET.value)
        mesh = targets.mesh(target)
        variants = [{}] + [benchmark.parse_variant(a) for a in _ABLATE.value]
        rows = []
        for batch in map(int, _BATCHES.value):
            for dtype in _DTYPES.value:
                for k in map(int, _KS.value):
                    for v in variants:
                        rows.append(benchmark.compile_only(_MODEL.value, batch, dtype, k, mesh,
                                                           **v))
                        print(census.table(rows[-1:]).splitlines()[-1], flush=True)
        print(f"\n# {rows[0]['device_kind']} (compile-only), {_MODEL.value}\n\n"
              f"{census.table(rows)}\n")
        print("Kernels per step of the first setting, by part:\n\n"
              + census.parts_table(rows[0]))
        bandwidth = targets.memory_bandwidth(target)
        print(f"\nRoofline floors ({bandwidth / 1e12:.1f} TB/s, {_PEAK.value:.0f} TFLOP/s):\n\n"
              + census.roofline_table(rows, bandwidth, _PEAK.value * 1e12))
        if _TOP.value:
            print(f"\nThe {_TOP.value} kernels of the first setting's step with the longest "
                  f"floors:\n\n"
                  + census.top_kernels_table(rows[0], bandwidth, _PEAK.value * 1e12,
                                             _TOP.value))
        if _OUT.value:
            files.atomic_write_bytes(pathlib.Path(_OUT.value),
                                    json.dumps(rows, indent=2).encode())


if __name__ == "__main__":
    app.run(main)
