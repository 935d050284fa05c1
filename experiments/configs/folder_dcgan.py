"""DCGAN (Radford et al.) at 64x64 on a folder of your own images, prepared once as a tfds
dataset: the paper's widths (G 512-256-128-64, D 64-128-256-512), BatchNorm, Adam(2e-4,
b1=0.5) for both players, batch 128, non-saturating loss, 20,000 steps. There is no
default dataset: name yours with --config.dataset.name.

  python -m experiments.prepare_images --src=path/to/images --name=my_images --resolution=64
  python -m experiments.main --config=experiments/configs/folder_dcgan.py --config.dataset.name=my_images --workdir=runs/my_images

A dataset prepared at another resolution is centre-cropped and resized to 64 as it loads
(DCGAN has 28, 32 and 64). FID is off: it needs the FID Inception's weights (see
docs/evaluation.md); with them add --config.eval.every=5000. ``:smoke`` runs 20 steps of a
narrow model at 32x32 on at most 2,048 images in seconds.
"""
from ml_collections import config_dict

from experiments.configs import mnist_dcgan


def get_config(variant: str | None = None):
    c = mnist_dcgan.get_config(variant)  # Its optimizers, and its :smoke sizes.
    # Unset: a run without --config.dataset.name=NAME stops on a config error naming it.
    c.dataset.name = config_dict.placeholder(str)
    c.eval.every, c.eval.metrics = 0, "fid"
    if variant == "smoke":
        c.dataset.resolution = 32
        return c
    c.dataset.resolution = 64
    c.model.g_width, c.model.d_width = 64, 64
    c.batch_size = 128
    c.num_steps = 20_000
    c.log_every, c.sample_every = 100, 1000
    return c
