#!/usr/bin/env bash
# The whole GPU benchmark, gan_jax and PyTorch, in one run: DCGAN-64, batch 128 and 1024,
# float32 and bfloat16, 1 and 10 steps per dispatch; PyTorch eager fp32, eager bf16
# channels_last, torch.compile bf16. Then the FID Inception's images/s at batch 500 in
# float32 and bfloat16 and the FID shift of bfloat16. Needs jax (CUDA), flax, optax,
# orbax-checkpoint, absl-py, ml_collections and torch; no network. Writes
# ${OUT:-.}/benchmark_h200.json and ${OUT:-.}/eval_benchmark_h200.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -m experiments.benchmark --preset=h200 --out="${OUT:-.}/benchmark_h200.json"
python -m experiments.eval_benchmark --extractors=inception --inception_batch=500 \
    --dtypes=float32,bfloat16 --fid_shift_num=2000 --out="${OUT:-.}/eval_benchmark_h200.json"
