"""Writes finished jobs' final-step FID, KID, IS, precision and recall as mean ± std over
seeds (one row per sweep point), their FID by step and wall time, as one markdown table per
dataset (datasets in the order first given), and the sample grids of the --grid rows.

  python -m experiments.quality_report --row=MNIST:"SN hinge":runs/quality/sn_hinge \
      --row=MNIST:DCGAN:runs/quality/dcgan ... --out=docs/quality.md \
      [--notes=FILE] [--images_dir=DIR] [--grid=LABEL ...]

A row's WORKDIR@STEP reports the job at that evaluated step instead of its last (a long
job whose first steps are a shorter config's), without a time; WORKDIR[@STEP]@no-ema
reports the raw generator's evaluations (experiments.evaluate --no-ema) instead of the EMA
generator's, which every other row reports. Each --grid row's
samples/final_run0.png (final.png of a single run; at a step, that step's grid; of a
@no-ema row, the raw generator's grid) is copied to DIR
(default docs/images/<out stem>/). The file starts with this command, so rerunning it
regenerates the file.
"""
import shlex
import sys

from absl import flags

from experiments import cli
from gan_jax.trainer import quality

_ROW, _OUT, _NOTES, _IMAGES = cli.report_flags(
    "DATASET:LABEL:WORKDIR[@STEP][@no-ema], once per job.")
_GRID = flags.DEFINE_multi_string("grid", [], "A row's LABEL whose first run's final sample "
                                  "grid is shown; repeatable.")


def main(argv):
    # The exact command, so that the file says how to regenerate it.
    command = shlex.join(["python", "-m", "experiments.quality_report", *sys.argv[1:]])
    with cli.script(argv):
        out = quality.write(_ROW.value, _OUT.value, images_dir=_IMAGES.value,
                            notes=_NOTES.value, grid=_GRID.value, command=command)
    print(f"wrote {out} ({len(_ROW.value)} jobs, {len(_GRID.value)} grids)")


if __name__ == "__main__":
    cli.run(main)
