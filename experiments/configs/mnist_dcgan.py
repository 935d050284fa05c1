"""DCGAN (Radford et al.) on MNIST 28x28, sized for a laptop CPU: G 7x7x64 -> 14x14x32 ->
28x28x1, D 32 -> 64 channels, BatchNorm, Adam(2e-4, b1=0.5) for both players, batch 64,
non-saturating loss, 5,000 steps (5.3 epochs).
This is the README's main job.

  python -m experiments.main --config=experiments/configs/mnist_dcgan.py --workdir=runs/mnist_dcgan

Expected on a 2-core CPU: see README.md for the measured time; recognisable digits in the
final grid. ``:smoke`` runs 20 steps of a narrow model on 2,048 images in seconds.
"""
from gan_jax.trainer.config import defaults


def get_config(variant: str | None = None):
    c = defaults()
    c.model.name = "dcgan"
    c.model.g_width, c.model.d_width = 32, 32
    for opt in (c.optimizer.g, c.optimizer.d):
        opt.learning_rate, opt.b1, opt.b2, opt.eps = 2e-4, 0.5, 0.999, 1e-8
    c.batch_size = 64
    c.num_steps = 5000
    c.log_every, c.sample_every = 100, 500
    # FID, KID and IS of 10,000 EMA samples with the MNIST classifier, halfway and at the end
    # (about 6 s each; the first run also trains the classifier once, about 50 s).
    c.eval.every, c.eval.num, c.eval.metrics = 2500, 10_000, "fid,kid,is"
    if variant == "smoke":
        c.dataset.max_examples = 2048
        c.model.g_width, c.model.d_width = 16, 16
        c.batch_size = 16
        c.num_steps, c.steps_per_dispatch, c.log_every, c.sample_every = 20, 2, 10, 10
        c.num_samples = 16
        c.checkpoint.every = 10
        c.eval.every = 0
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; use 'smoke' or none.")
    return c
