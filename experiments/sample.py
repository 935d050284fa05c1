"""Draws images from a checkpoint without building D or the optimizers; for a VAE, also
shows its reconstructions of test images and interpolations between them.

  python -m experiments.sample --workdir=runs/mnist_dcgan --num=64 [--out=grid.png] \
      [--step=N] [--no-ema] [--npz=samples.npz] [--seed=0] [--class=K]
  python -m experiments.sample --workdir=runs/mnist_vae --reconstruct [--num=32] \
      [--interpolate [--pairs=8] [--steps=8]] [--step=N] [--no-ema] [--out=view.png]

Prior samples (the default; a VAE's decoder draws them as a GAN's G): the PNG grid goes to
WORKDIR/samples/sample_<step>.png unless --out says otherwise (_class<K>, _raw and _seed<N>
are added for --class, --no-ema and a seed other than 0). A conditional run draws class K
(--class=K), or one class per row: row k is class k and each column one latent, --num
rounded down to whole rows.

A VAE's views of a fixed test batch, the first images of its dataset's "test" split in the
split's order (a conditional VAE encodes and decodes them with their labels):
  --reconstruct: the first --num (default 32) images and their reconstructions (decoded
    from the posterior means), in pairs of rows 8 images wide: a row of originals with the
    row of their reconstructions beneath it (image j in row pair j // 8, column j % 8);
    to WORKDIR/samples/reconstructions_<step>.png. Prints the reconstructions' mean squared
    error on [-1, 1] pixels.
  --interpolate: --pairs=P rows, pair i (i < P) being test images i and i + P: the real
    image i, --steps=S images decoded along the line from its posterior mean to image
    i + P's (both ends included), then the real image i + P; to
    WORKDIR/samples/interpolations_<step>.png.
Both may be given (two files; then --out cannot be). --out names the one file instead ('' for
none); _raw is added to the default names for --no-ema. They use the EMA weights unless
--no-ema, and take no --class, --seed or --npz.
"""
import pathlib
import sys

from absl import flags

from experiments import cli
from gan_jax import files, sampling
from gan_jax.errors import ConfigError, WorkdirError
from gan_jax.trainer import vae_views, workdir, writers

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
_NUM = flags.DEFINE_integer("num", 64, "Number of images (at least 1): prior samples, or with "
                            f"--reconstruct test images (then default {vae_views.NUM}).")
_OUT = flags.DEFINE_string("out", None, "PNG grid to write; default "
                           "WORKDIR/samples/sample_<step>.png, reconstructions_<step>.png or "
                           "interpolations_<step>.png ('' for none).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
_EMA = flags.DEFINE_boolean("ema", True, "Use the EMA generator (--noema / --no-ema: raw G; "
                           "for a VAE the raw encoder and decoder).")
_NPZ = flags.DEFINE_string("npz", "", "Also write the images (uint8 NHWC) to this .npz.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the latent batch.")
_RUN = flags.DEFINE_integer("run", None, "Which run of a job of several runs (config.runs); "
                            "default all of them, one file each (name_run<i>.png); "
                            "--reconstruct and --interpolate need one.")
_CLASS = flags.DEFINE_integer("class", None, "A conditional run's class to draw (all --num "
                              "images); default one class per row.")
_RECONSTRUCT = flags.DEFINE_boolean(
    "reconstruct", False, "A VAE's reconstructions of the first --num test images: pairs of "
    "rows, originals above their reconstructions, 8 wide; prints their MSE.")
_INTERPOLATE = flags.DEFINE_boolean(
    "interpolate", False, "A VAE's interpolations: --pairs rows, test images i and i + P at "
    "the ends of row i and --steps images decoded between their posterior means.")
_PAIRS = flags.DEFINE_integer("pairs", vae_views.PAIRS, "--interpolate's pairs of test images "
                              "(rows; at least 1).")
_STEPS = flags.DEFINE_integer("steps", vae_views.STEPS, "--interpolate's images decoded along "
                              "each line, its ends included (at least 2; not --step, the "
                              "checkpoint's).")


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


def _check_view_flags() -> None:
    """Refuses flags that the chosen output does not take, before anything is read."""
    if not _INTERPOLATE.value and (_PAIRS.present or _STEPS.present):
        raise ConfigError("--pairs and --steps apply to --interpolate (a VAE's interpolations); "
                          "add --interpolate, or drop them.")
    if not (_RECONSTRUCT.value or _INTERPOLATE.value):
        return
    views = " and ".join(f"--{f}" for f, v in (("reconstruct", _RECONSTRUCT.value),
                                                ("interpolate", _INTERPOLATE.value)) if v)
    for name, why in (("class", "they show test images, with their own labels for a "
                                "conditional VAE"),
                      ("seed", "they draw no latents"),
                      ("npz", "they write PNG grids only")):
        if flags.FLAGS[name].present:
            raise ConfigError(f"--{name} applies to prior samples, not to {views} ({why}); "
                              f"drop --{name}, or draw prior samples in a command of their "
                              "own.")
    if _RECONSTRUCT.value and _INTERPOLATE.value and _OUT.value is not None:
        raise ConfigError("--reconstruct and --interpolate write two files, and --out names "
                          "one: drop --out (they go to WORKDIR/samples/), or run them one at a "
                          "time, each with its --out.")
    if not _RECONSTRUCT.value and _NUM.present:
        raise ConfigError("--num is the number of prior samples or of --reconstruct's test "
                          "images; --interpolate takes --pairs (rows) and --steps instead.")
    vae_views.check(num=_NUM.value if _RECONSTRUCT.value else None,
                    pairs=_PAIRS.value if _INTERPOLATE.value else None,
                    steps=_STEPS.value if _INTERPOLATE.value else None)


def _vae_views() -> None:
    workdir.check_directory(_WORKDIR.value, writable=False)
    v = vae_views.views(_WORKDIR.value, reconstruct=_RECONSTRUCT.value,
                        interpolate=_INTERPOLATE.value,
                        num=_NUM.value if _NUM.present else vae_views.NUM,
                        pairs=_PAIRS.value, steps=_STEPS.value, step=_STEP.value,
                        ema=_EMA.value, run=_RUN.value)
    for name, grid in v.grids().items():
        out = _OUT.value
        if out is None:
            out = vae_views.default_path(_WORKDIR.value, name, v)
        if out:
            _write("--out", out, lambda p: writers.save_png(p, grid))
        print(v.describe(name, out))


def _run_path(path: str, run) -> str:
    """``path`` with ``_run<i>`` before its suffix ('' stays '')."""
    if not path:
        return path
    p = pathlib.Path(path)
    return str(p.with_name(f"{p.stem}_run{run}{p.suffix}"))


def _save(images, labels, rows, step, out, npz) -> None:
    if out:
        grid = sampling.class_grid(images, labels if rows else None)
        _write("--out", out, lambda p: writers.save_png(p, grid))
    if npz:
        # An unconditional run's file keeps its keys: no labels.
        extra = {} if labels is None else {"labels": labels}
        _write("--npz", npz, lambda p: files.write_npz(p, dict(
            images=images, step=step, seed=_SEED.value, ema=_EMA.value, **extra)))


def main(argv):
    with cli.script(argv):
        _check_view_flags()
        if _RECONSTRUCT.value or _INTERPOLATE.value:
            return _vae_views()
        if _NUM.value < 1:
            raise ConfigError(f"--num must be at least 1 (the number of images to draw), "
                              f"got {_NUM.value}.")
        workdir.check_directory(_WORKDIR.value, writable=False)
        n = workdir.runs_of(workdir.saved_config(_WORKDIR.value) or {})
        which = [_RUN.value] if n == 1 or _RUN.value is not None else list(range(n))
        for run in which:
            images, labels, step = workdir.sample_labelled(
                _WORKDIR.value, _NUM.value, label=_CLASS.value, step=_STEP.value,
                ema=_EMA.value, seed=_SEED.value, run=run)
            out, npz = _default_out(step) if _OUT.value is None else _OUT.value, _NPZ.value
            if len(which) > 1:  # Every run, one file each.
                out, npz = (_run_path(p, run) for p in (out, npz))
            rows = labels is not None and _CLASS.value is None
            _save(images, labels, rows, step, out, npz)
    what = f"{len(images)} images"
    if len(which) > 1:
        what += f" of each of {len(which)} runs"
        out, npz = _run_path(out, "<i>"), _run_path(npz, "<i>")
    if rows:
        classes = len(set(labels.tolist()))
        what += (f" ({classes} classes x {len(images) // classes}, one class per row; "
                 f"--num={_NUM.value} rounded to whole rows)")
    elif labels is not None:
        what += f" of class {_CLASS.value}"
    print(f"sampled {what} from step {step} "
          f"({'EMA' if _EMA.value else 'raw'} G) -> {out or ''} {npz}".rstrip())


if __name__ == "__main__":
    # absl spells a false boolean --noema; accept --no-ema as well.
    sys.argv = ["--noema" if a == "--no-ema" else a for a in sys.argv]
    cli.run(main)
