"""The quality study's 30-minute MNIST config: the README's main job (mnist_sndcgan.py)
trained 2.75 times as long, 44,000 steps, with the same evaluations every 4,000 steps; its
first 16,000 steps are the main job's.

  python -m experiments.main --config=experiments/configs/mnist_sndcgan_long.py --workdir=runs/mnist_sndcgan_long

Expected on a 2-core CPU: about 23 minutes a run (estimated from the main job's rate); the
mean and spread over 3 seeds are in
docs/quality.md. ``:smoke`` is mnist_sndcgan.py's.
"""
from experiments.configs import mnist_sndcgan


def get_config(variant: str | None = None):
    c = mnist_sndcgan.get_config(variant)
    if not variant:
        c.num_steps = 44_000
    return c
