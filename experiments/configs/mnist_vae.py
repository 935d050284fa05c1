"""A convolutional VAE on MNIST 28x28: encoder 32 -> 64 channels, a 256-wide dense layer and
a 32-d Gaussian z; the mirrored decoder with a Bernoulli likelihood on dynamically
binarised pixels (each step draws binary digits from the grey values, the setting of the
published MNIST log-likelihoods), Adam(1e-3), batch 128, beta 1, 10,000 steps (21 epochs),
an EMA of the weights (0.999).
Evaluated at the end as the GANs are (FID, KID, IS, precision/recall, density/coverage of
10,000 prior samples, the decoder's mean images, with the MNIST classifier) and by the test
set's negative ELBO (``nll``: nats per image and bits per dimension).

  python -m experiments.main --config=experiments/configs/mnist_vae.py --workdir=runs/mnist_vae
  python -m experiments.sample --workdir=runs/mnist_vae --reconstruct --interpolate

Expected on a 2-core CPU: see docs/gan_vs_vae.md for the measured time, the test -ELBO (in
nats, beside a published figure) and the FID. ``:smoke`` runs 20 steps of a narrow model.
"""
from gan_jax.trainer.config import defaults


def get_config(variant: str | None = None):
    c = defaults()
    c.model.name = "vae"
    c.model.z_dim, c.model.g_width, c.model.d_width = 32, 32, 32
    c.vae.likelihood, c.vae.binarize = "bernoulli", True
    c.optimizer.g.learning_rate = 1e-3
    c.optimizer.g.eps = 1e-8
    c.batch_size = 128
    c.num_steps = 10_000
    c.ema.decay = 0.999
    c.log_every, c.sample_every = 500, 2500
    c.checkpoint.every = 2500
    c.eval.every, c.eval.num, c.eval.metrics = 10_000, 10_000, "fid,kid,is,pr,dc,nll"
    if variant == "smoke":
        c.dataset.max_examples = 2048
        c.model.g_width, c.model.d_width, c.model.z_dim = 8, 8, 8
        c.vae.hidden = 32
        c.batch_size = 16
        c.num_steps, c.steps_per_dispatch, c.log_every, c.sample_every = 20, 2, 10, 10
        c.num_samples = 16
        c.checkpoint.every = 10
        c.eval.every = 0
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; use 'smoke' or none.")
    return c
