#!/usr/bin/env bash
# The whole GPU benchmark, gan_jax and PyTorch, in one run (docs/benchmarks.md):
#  1. experiments.benchmark --preset=h200: DCGAN-64 at batch 128 and 1024, float32 and
#     bfloat16, 1 and 10 steps per dispatch; PyTorch eager fp32, eager bf16 channels_last,
#     torch.compile bf16, and in its reduce-overhead mode (CUDA graphs); a jax.profiler
#     breakdown of the default bf16 K=10 step at each batch; ablations at batch 1024, then
#     128 (gan_jax.perf.benchmark.PRESETS, in this order: no norms among the metrics, data
#     read in order instead of shuffled on the device, no XLA autotuning, loops in CUDA
#     graphs, G scoring its own fake batch), and after each batch's ablations the fastest
#     combination of those that won. The bf16 K=10 step and PyTorch run first; the other
#     settings and the ablations are skipped where they would overrun 210 s
#     (--time_budget_s).
#  2. experiments.benchmark --preset=h200_sngan32: SNGAN-32 (Miyato et al.'s CIFAR-10
#     ResNet, spectral norm, hinge, 5 D updates + 1 G update a step) at batch 64, float32
#     and bfloat16, beside PyTorch's same step eager in float32 and bf16 autocast (2 to 3
#     minutes by an estimate: the two compiles and 52 PyTorch steps of ~0.15 s each).
#  3. experiments.eval_benchmark: the FID Inception's img/s at batch 500, float32 and
#     bfloat16, and the FID shift of bfloat16.
# Needs jax (CUDA), flax, optax, orbax-checkpoint, absl-py, PyYAML and torch; no network.
# ml_collections, if missing, is installed from .whl/ (fetch it where pip has network:
# `pip download --no-deps -d .whl ml_collections`). Writes ${OUT:-.}/benchmark_h200.json,
# ${OUT:-.}/benchmark_sngan32_h200.json, ${OUT:-.}/eval_benchmark_h200.json,
# ${OUT:-.}/gpu_benchmark.log and, on a GPU, its target description for compile-only runs,
# ${OUT:-.}/gpu_target.textproto. Arguments go to the first experiments.benchmark,
# SNGAN_ARGS to the second and EVAL_ARGS to experiments.eval_benchmark, over the presets: a
# dry run on a CPU takes `--models=dcgan28 --batch_sizes=8 --dtypes=float32 --torch=
# --steps_per_dispatch=1 --windows=1 --window_steps=1`,
# SNGAN_ARGS="--batch_sizes=2 --dtypes=float32 --torch=eager:float32 --windows=1
# --window_steps=1" and EVAL_ARGS="--inception_batch=4 --dtypes=float32 --fid_shift_num=8".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-.}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# JAX takes 75% of the GPU at start by default; PyTorch (same process) and the XLA-flag
# ablation (a second JAX process) need room beside it. 40% is about 55 GiB on an H200.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.4}
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
    if compgen -G ".whl/ml_collections-*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gan_jax_site \
            .whl/ml_collections-*.whl
        export PYTHONPATH="$PYTHONPATH:/tmp/gan_jax_site"
    else
        echo "error: ml_collections is not installed and .whl/ holds no ml_collections wheel;" \
             "run 'pip download --no-deps -d .whl ml_collections' where pip has network" >&2
        exit 2
    fi
fi
OUT="$OUT" "$PY" - <<'EOF'
import os
import jax
if jax.default_backend() != "gpu":
    print(f"warning: jax runs on {jax.default_backend()}, not a GPU: the numbers below are "
          "not GPU numbers", flush=True)
else:  # For compile-only runs elsewhere (experiments/gpu_compile.py --target=...).
    try:
        from gan_jax.perf import targets
        targets.save(os.path.join(os.environ["OUT"], "gpu_target.textproto"), jax.devices()[:1])
    except Exception as e:
        print(f"warning: the GPU's target description was not saved: {e}", flush=True)
print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
EOF
start=$SECONDS
{
    "$PY" -m experiments.benchmark --preset=h200 --out="$OUT/benchmark_h200.json" "$@"
    echo "# train-step benchmark: $((SECONDS - start)) s"
    "$PY" -m experiments.benchmark --preset=h200_sngan32 \
        --out="$OUT/benchmark_sngan32_h200.json" ${SNGAN_ARGS:-}
    echo "# SNGAN-32 benchmark: $((SECONDS - start)) s"
    "$PY" -m experiments.eval_benchmark --extractors=inception --inception_batch=500 \
        --dtypes=float32,bfloat16 --fid_shift_num=2000 --out="$OUT/eval_benchmark_h200.json" \
        ${EVAL_ARGS:-}
    echo "# whole GPU benchmark: $((SECONDS - start)) s"
} 2>&1 | tee "$OUT/gpu_benchmark.log"
