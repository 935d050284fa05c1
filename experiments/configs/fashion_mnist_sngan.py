"""Class-conditional SNGAN on Fashion-MNIST 28x28, sized for a 2-core CPU: the ResNet of
cifar10_sngan.py at 28 px (G 7x7 -> 14 -> 28, conditional BatchNorm; D of four residual
blocks, spectrally normalised, with a projection of the class), both 32 channels wide, and
the SNGAN recipe: hinge loss, 5 D updates per G update, Adam(2e-4, b1=0, b2=0.9) with the
rate decayed linearly to 0, batch 64, an EMA of G. G's classes are drawn uniformly. It
scores FID, intra-FID and class accuracy of 10,000 class-balanced EMA samples by the
Fashion-MNIST classifier, halfway and at the end.

  python -m experiments.main --config=experiments/configs/fashion_mnist_sngan.py --workdir=runs/fashion_sngan
  python -m experiments.sample --workdir=runs/fashion_sngan --num=100

Fashion-MNIST is the offline copy (docs/data.md), written into the data dir on first use.
Expected on a 2-core CPU: see docs/evaluation.md for the measured time, the class accuracy
(beside the classifier's own 92.6% on the real test images) and the FID against the
Fashion-MNIST floor of 1.32. ``:smoke`` runs 4 steps of a narrow model in seconds.
"""
from experiments.configs import cifar10_sngan


def get_config(variant: str | None = None):
    c = cifar10_sngan.get_config(variant)
    c.dataset.name = "fashion_mnist"
    c.model.conditional = True
    c.eval.extractor = "fashion_mnist"
    if variant:
        c.dataset.max_examples = 2048
        c.num_steps, c.checkpoint.every, c.sample_every = 4, 4, 4
        return c
    c.model.z_dim, c.model.g_width, c.model.d_width = 128, 32, 32
    c.num_steps = 2000
    # One step per dispatch: XLA:CPU unrolls the five D updates of every step in a dispatch,
    # and a step of about a second leaves no dispatch overhead to save.
    c.steps_per_dispatch = 1
    c.ema.decay, c.ema.start = 0.999, 0
    c.log_every, c.sample_every = 50, 250
    c.checkpoint.every = 250
    c.eval.every, c.eval.num, c.eval.metrics = 1000, 10_000, "fid,intra_fid,class_acc"
    return c
