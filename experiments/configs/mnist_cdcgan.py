"""Class-conditional DCGAN on MNIST 28x28: mnist_dcgan.py's model, optimisers, batch and
5,000 steps, with conditional BatchNorm in G (each BatchNorm's scale and shift looked up
from the digit asked for) and a projection discriminator (Miyato and Koyama 2018). D sees
the real labels; G's digits are drawn uniformly, per step, like its latents.

  python -m experiments.main --config=experiments/configs/mnist_cdcgan.py --workdir=runs/mnist_cdcgan
  python -m experiments.sample --workdir=runs/mnist_cdcgan --class=3

Expected on a 2-core CPU: see docs/evaluation.md for the measured time and scores (class
accuracy of 10,000 class-balanced EMA samples by the MNIST classifier, beside the real test
images' accuracy; class-balanced FID and intra-FID). ``:smoke`` runs 20 steps of a narrow
model on 2,048 images in seconds.
"""
from experiments.configs import mnist_dcgan


def get_config(variant: str | None = None):
    c = mnist_dcgan.get_config(variant)
    c.model.conditional = True
    if not variant:
        c.eval.metrics = "fid,intra_fid,class_acc"
    return c
