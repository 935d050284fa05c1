"""Class-conditional DCGAN on MNIST 28x28: mnist_dcgan.py's G and D widths, batch and 5,000
steps, made conditional: G takes the class one-hot beside z and conditional BatchNorm (each
BatchNorm's scale and shift looked up from the digit asked for); D is an SN-DCGAN (every
layer spectrally normalised, no BatchNorm) with a projection of the class (Miyato and
Koyama 2018). As for SNGAN: hinge loss, Adam(2e-4, b1=0, b2=0.9) for both players. D
sees the real labels; G's digits are drawn uniformly, per step, like its latents.

  python -m experiments.main --config=experiments/configs/mnist_cdcgan.py --workdir=runs/mnist_cdcgan
  python -m experiments.sample --workdir=runs/mnist_cdcgan --class=3

Expected on a 2-core CPU: see docs/evaluation.md for the measured time and scores (class
accuracy of 10,000 class-balanced EMA samples by the MNIST classifier, beside the real test
images' accuracy; class-balanced FID and intra-FID), at steps 2,500 and 5,000.
``:smoke`` runs 20 steps of a narrow model on 2,048 images in seconds.
"""
from experiments.configs import mnist_dcgan


def get_config(variant: str | None = None):
    c = mnist_dcgan.get_config(variant)
    c.model.conditional = True
    c.model.class_input = True
    c.model.spectral_norm = True
    c.loss = "hinge"
    for opt in (c.optimizer.g, c.optimizer.d):
        opt.b1, opt.b2 = 0.0, 0.9
    if not variant:
        c.eval.metrics = "fid,intra_fid,class_acc"
    return c
