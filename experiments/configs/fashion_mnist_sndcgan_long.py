"""The quality study's 30-minute Fashion-MNIST config: mnist_sndcgan_long.py (the README's
main-job recipe for 44,000 steps) on ``dataset.name="fashion_mnist"``, scored by the
Fashion-MNIST classifier every 4,000 steps.

  python -m experiments.main --config=experiments/configs/fashion_mnist_sndcgan_long.py --workdir=runs/fashion_sndcgan_long

Expected on a 2-core CPU: about 23 minutes a run (estimated); docs/quality.md has what was
measured.
``:smoke`` is mnist_sndcgan.py's on Fashion-MNIST.
"""
from experiments.configs import fashion_mnist_sndcgan, mnist_sndcgan_long


def get_config(variant: str | None = None):
    c = fashion_mnist_sndcgan.get_config(variant)
    c.num_steps = mnist_sndcgan_long.get_config(variant).num_steps
    return c
