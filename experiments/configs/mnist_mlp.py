"""The seed's Keras MLP GAN on MNIST: G Dense 256-LeakyReLU(0.01)-Dense 784-tanh,
D Dense 128-LeakyReLU(0.01)-Dense 1, Keras' Adam defaults (lr 1e-3, b1 0.9, b2 0.999,
eps 1e-7) for both players, batch 128, the non-saturating G loss (what Keras' binary
cross-entropy with "real" labels for G computes).

  python -m experiments.main --config=experiments/configs/mnist_mlp.py --workdir=runs/mnist_mlp

Expected on a 2-core CPU: see the docstring's numbers in README.md (about 2 minutes for
10,000 steps); digit-like strokes after 1,000 steps, recognisable digits by the end.
``:smoke`` runs 40 steps on 2,048 images in seconds.
"""
from gan_jax.config import defaults


def get_config(variant: str | None = None):
    c = defaults()
    c.model.name = "mlp"
    c.model.g_width, c.model.d_width = 256, 128
    c.batch_size = 128
    c.num_steps = 10_000
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
