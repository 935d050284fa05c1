"""The convolutional VAE of mnist_vae.py on Fashion-MNIST 28x28, with a Gaussian decoder
(its standard deviation learned per channel, starting at 0.1 on [-1, 1] pixels): garments
are grey, not ink on paper, so a Bernoulli on binarised pixels would model the wrong data.
z 32, Adam(1e-3), batch 128, 10,000 steps, EMA 0.999; evaluated at the end with the
Fashion-MNIST classifier (FID, KID, IS, precision/recall, density/coverage of 10,000 prior
samples, the decoder's means) and by the test set's negative ELBO (``nll``; its bits per
dimension count the Gaussian's density on 8-bit bins).

  python -m experiments.main --config=experiments/configs/fashion_mnist_vae.py --workdir=runs/fashion_mnist_vae

Expected on a 2-core CPU: see docs/gan_vs_vae.md for the measured time and scores.
``:smoke`` runs 20 steps of a narrow model.
"""
from experiments.configs import mnist_vae


def get_config(variant: str | None = None):
    c = mnist_vae.get_config(variant)
    c.dataset.name = "fashion_mnist"
    c.eval.extractor = "fashion_mnist"
    c.vae.likelihood, c.vae.binarize = "gaussian", False
    c.vae.sigma, c.vae.learn_sigma = 0.1, True
    return c
