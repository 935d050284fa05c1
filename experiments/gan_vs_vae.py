"""Writes finished runs' final-step metrics, training steps, CPU wall time and sample grids as
one markdown table per dataset (datasets in the order first given, one row per --row).

  python -m experiments.gan_vs_vae --row=MNIST:DCGAN:runs/mnist_dcgan \
      --row=MNIST:VAE:runs/mnist_vae --row=Fashion-MNIST:DCGAN:runs/fashion_dcgan ... \
      --out=docs/gan_vs_vae.md [--notes=FILE] [--images_dir=DIR]

Each run's samples/final.png is copied to DIR (default docs/images/<out stem>/). The file
starts with this command, so rerunning it regenerates the file.
"""
import shlex
import sys

from experiments import cli
from gan_jax.trainer import report

_ROW, _OUT, _NOTES, _IMAGES = cli.report_flags("DATASET:LABEL:WORKDIR, once per row.")


def main(argv):
    # The exact command, so that the file says how to regenerate it.
    command = shlex.join(["python", "-m", "experiments.gan_vs_vae", *sys.argv[1:]])
    with cli.script(argv):
        out = report.write(_ROW.value, _OUT.value, images_dir=_IMAGES.value,
                           notes=_NOTES.value, command=command)
    print(f"wrote {out} ({len(_ROW.value)} rows)")


if __name__ == "__main__":
    cli.run(main)
