"""Draws images from a checkpoint without building D or the optimizers.

  python -m experiments.sample --workdir=runs/mnist_dcgan --num=64 [--out=grid.png] \
      [--step=N] [--no-ema] [--npz=samples.npz] [--seed=0] [--class=K]

The PNG grid goes to WORKDIR/samples/sample_<step>.png unless --out says otherwise
(_class<K>, _raw and _seed<N> are added for --class, --no-ema and a seed other than 0).
A conditional run draws class K (--class=K), or one class per row: row k is class k and
each column one latent, --num rounded down to whole rows.
"""
import pathlib
import sys

from absl import flags

from experiments import cli
from gan_jax import files, sampling
from gan_jax.errors import ConfigError, WorkdirError
from gan_jax.trainer import workdir, writers

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
_NUM = flags.DEFINE_integer("num", 64, "Number of images (at least 1).")
_OUT = flags.DEFINE_string("out", None, "PNG grid to write; default "
                           "WORKDIR/samples/sample_<step>.png ('' for none).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
_EMA = flags.DEFINE_boolean("ema", True, "Use the EMA generator (--noema / --no-ema: raw G).")
_NPZ = flags.DEFINE_string("npz", "", "Also write the images (uint8 NHWC) to this .npz.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the latent batch.")
_CLASS = flags.DEFINE_integer("class", None, "A conditional run's class to draw (all --num "
                              "images); default one class per row.")


def _default_out(step: int) -> pathlib.Path:
    name = (f"sample_{step}" + ("" if _CLASS.value is None else f"_class{_CLASS.value}")
            + ("" if _EMA.value else "_raw")
            + (f"_seed{_SEED.value}" if _SEED.value else ""))
    return pathlib.Path(_WORKDIR.value) / "samples" / f"{name}.png"


def _write(what: str, path, write) -> None:
    try:
        write(path)
    except OSError as e:
        where = f": {e.filename}" if e.filename and str(e.filename) != str(path) else ""
        raise WorkdirError(f"Cannot write {what}={path} ({e.strerror or e}{where}). Pass "
                           f"{what}= a path on a writable disk ('' for none).") from None


def main(argv):
    with cli.script(argv):
        if _NUM.value < 1:
            raise ConfigError(f"--num must be at least 1 (the number of images to draw), "
                              f"got {_NUM.value}.")
        workdir.check_directory(_WORKDIR.value, writable=False)
        images, labels, step = workdir.sample_labelled(
            _WORKDIR.value, _NUM.value, label=_CLASS.value, step=_STEP.value, ema=_EMA.value,
            seed=_SEED.value)
        rows = labels is not None and _CLASS.value is None
        out = _default_out(step) if _OUT.value is None else _OUT.value
        if out:
            grid = sampling.class_grid(images, labels if rows else None)
            _write("--out", out, lambda p: writers.save_png(p, grid))
        if _NPZ.value:
            # An unconditional run's file keeps its keys: no labels.
            extra = {} if labels is None else {"labels": labels}
            _write("--npz", _NPZ.value, lambda p: files.write_npz(p, dict(
                images=images, step=step, seed=_SEED.value, ema=_EMA.value, **extra)))
    what = f"{len(images)} images"
    if rows:
        classes = len(set(labels.tolist()))
        what += (f" ({classes} classes x {len(images) // classes}, one class per row; "
                 f"--num={_NUM.value} rounded to whole rows)")
    elif labels is not None:
        what += f" of class {_CLASS.value}"
    print(f"sampled {what} from step {step} "
          f"({'EMA' if _EMA.value else 'raw'} G) -> {out or ''} {_NPZ.value}".rstrip())


if __name__ == "__main__":
    # absl spells a false boolean --noema; accept --no-ema as well.
    sys.argv = ["--noema" if a == "--no-ema" else a for a in sys.argv]
    cli.run(main)
