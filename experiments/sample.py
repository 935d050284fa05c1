"""Draws images from a checkpoint without building D or the optimizers.

  python -m experiments.sample --workdir=runs/mnist_dcgan --num=64 --out=grid.png \
      [--step=N] [--no-ema] [--npz=samples.npz] [--seed=0]
"""
import sys

from absl import app, flags

from experiments import cli
from gan_jax import files, sampling
from gan_jax.trainer import workdir, writers

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
_NUM = flags.DEFINE_integer("num", 64, "Number of images.")
_OUT = flags.DEFINE_string("out", "grid.png", "PNG grid to write ('' for none).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
_EMA = flags.DEFINE_boolean("ema", True, "Use the EMA generator (--noema / --no-ema: raw G).")
_NPZ = flags.DEFINE_string("npz", "", "Also write the images (uint8 NHWC) to this .npz.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the latent batch.")


def main(argv):
    with cli.script(argv):
        images, step = workdir.sample(_WORKDIR.value, _NUM.value, step=_STEP.value,
                                                ema=_EMA.value, seed=_SEED.value)
    if _OUT.value:
        writers.save_png(_OUT.value, sampling.grid(images))
    if _NPZ.value:
        files.write_npz(_NPZ.value, dict(images=images, step=step, seed=_SEED.value,
                                         ema=_EMA.value))
    print(f"sampled {len(images)} images from step {step} "
          f"({'EMA' if _EMA.value else 'raw'} G) -> {_OUT.value or ''} {_NPZ.value}".rstrip())


if __name__ == "__main__":
    # absl spells a false boolean --noema; accept --no-ema as well.
    sys.argv = ["--noema" if a == "--no-ema" else a for a in sys.argv]
    app.run(main)
