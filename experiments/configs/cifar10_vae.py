"""A convolutional VAE on CIFAR-10 32x32: encoder 64 -> 128 -> 256 channels, a 512-wide
dense layer, z 128; the mirrored decoder with a Gaussian likelihood whose standard
deviation is learned per channel (from 0.1 on [-1, 1] pixels); Adam(1e-3), batch 128,
50,000 steps, EMA 0.999. Evaluated every 10,000 steps with the FID Inception (FID, IS of
10,000 prior samples) and by the test set's negative ELBO in bits per dimension.

  python -m experiments.main --config=experiments/configs/cifar10_vae.py --workdir=runs/cifar10_vae

The dataset and the Inception weights are prepared as for cifar10_sngan.py (its docstring);
without them the run stops at once with one ``error:`` line. Expected result: none measured;
this config has NOT been run (it was written on a 2-core CPU without CIFAR-10 or a GPU).
A factorised-Gaussian decoder draws blurry means, so expect an FID far above the GANs'.

``:smoke`` trains a narrow model for 2 steps on whatever ``cifar10`` the data dir holds
(the tests write a tiny one), in seconds; evaluation off.
"""
from gan_jax.trainer.config import defaults


def get_config(variant: str | None = None):
    c = defaults()
    c.dataset.name = "cifar10"
    c.model.name = "vae"
    c.model.z_dim, c.model.g_width, c.model.d_width = 128, 64, 64
    c.vae.likelihood, c.vae.binarize = "gaussian", False
    c.vae.sigma, c.vae.learn_sigma, c.vae.hidden = 0.1, True, 512
    c.optimizer.g.learning_rate, c.optimizer.g.eps = 1e-3, 1e-8
    c.batch_size = 128
    c.num_steps = 50_000
    c.ema.decay = 0.999
    c.log_every, c.sample_every = 500, 5000
    c.checkpoint.every = 5000
    c.eval.every, c.eval.num, c.eval.metrics = 10_000, 10_000, "fid,is,nll"
    c.eval.extractor = "inception"
    if variant == "smoke":
        c.model.z_dim, c.model.g_width, c.model.d_width = 8, 8, 8
        c.vae.hidden = 32
        c.batch_size = 8
        c.num_steps, c.steps_per_dispatch, c.log_every, c.sample_every = 2, 1, 1, 2
        c.checkpoint.every = 2
        c.num_samples = 16
        c.eval.every = 0
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; use 'smoke' or none.")
    return c
