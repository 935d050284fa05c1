"""The seed's Keras MLP GAN on MNIST: G Dense 256-LeakyReLU(0.01)-Dense 784-tanh,
D Dense 128-LeakyReLU(0.01)-Dense 1, Keras' Adam defaults (lr 1e-3, b1 0.9, b2 0.999,
eps 1e-7) for both players, batch 32 (Keras' default batch size; at 128 the samples
collapse to a few modes in the same number of images), the non-saturating G loss (what
Keras' binary cross-entropy with "real" labels for G computes), 20,000 steps (10.7 epochs).

  python -m experiments.main --config=experiments/configs/mnist_mlp.py --workdir=runs/mnist_mlp

Expected on a 2-core CPU: under 2 minutes (320 steps/s); noisy but varied digits at the
end (docs/images/mnist_mlp_final.png). The seed's model is small: DCGAN draws cleaner ones.
``:smoke`` runs 40 steps on 2,048 images in seconds.
"""
from gan_jax.trainer.config import defaults


def get_config(variant: str | None = None):
    c = defaults()
    c.model.name = "mlp"
    c.model.g_width, c.model.d_width = 256, 128
    c.batch_size = 32
    c.num_steps = 20_000
    c.sample_every = 2000
    # FID, KID and IS of 10,000 EMA samples with the MNIST classifier every 5,000 steps.
    c.eval.every, c.eval.num, c.eval.metrics = 5000, 10_000, "fid,kid,is"
    if variant == "smoke":
        _shrink(c)
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; use 'smoke' or none.")
    return c


def _shrink(c):
    c.dataset.max_examples = 2048
    c.batch_size = 32
    c.num_steps, c.steps_per_dispatch, c.log_every, c.sample_every = 40, 5, 10, 20
    c.num_samples = 16
    c.checkpoint.every = 20
    c.eval.every = 0
