"""A VAE run's views of its dataset's test split, for ``experiments.sample --reconstruct
--interpolate``: reconstructions of a fixed test batch and interpolations between pairs of
its images, as uint8 grids (``writers.save_png`` writes them).

The fixed batch is the first images of the run's dataset's "test" split, in the split's
order (with their labels for a conditional VAE), so every call and every checkpoint shows the
same images. Reconstructions decode the posterior means (``vae_steps.reconstruct``);
interpolations decode the line between the posterior means of images i and i + P of the
batch, i < P (``vae_steps.interpolate``).

Layouts (``sampling.grid``'s 2 black pixels between images):
  reconstructions: pairs of rows, ``cols`` (8) images wide: a row of originals, the row of
  their reconstructions beneath it; image j of the batch is in row pair j // cols, column
  j % cols. A last, partial pair of rows is filled up with black cells.
  interpolations: one row per pair, S + 2 images: the real image i, the S decoded images from
  i's posterior mean to i + P's, and the real image i + P.
"""
import dataclasses
import functools
import pathlib

import jax
import numpy as np

from gan_jax import sampling, vae_steps
from gan_jax.data import sources
from gan_jax.errors import ConfigError
from gan_jax.steps import to_float_images
from gan_jax.trainer.workdir import load_vae

SPLIT = "test"
NUM, PAIRS, STEPS, COLS = 32, 8, 8, 8
_CHUNK = 1000  # Images per encoder/decoder call.


@dataclasses.dataclass
class Views:
    step: int
    ema: bool
    dataset: str
    reconstructions: np.ndarray | None = None  # The grid, uint8 [H', W', C].
    mse: float | None = None  # Of the reconstructions, on [-1, 1] pixels.
    num: int = 0
    interpolations: np.ndarray | None = None  # The grid, uint8 [H', W', C].
    pairs: int = 0
    steps: int = 0

    def grids(self) -> dict:
        """{"reconstructions" and/or "interpolations": uint8 grid}, those computed."""
        return {k: g for k, g in (("reconstructions", self.reconstructions),
                                  ("interpolations", self.interpolations)) if g is not None}

    def describe(self, name: str, path=None) -> str:
        """One line about the ``name`` grid (written to ``path``, if any)."""
        weights = "EMA" if self.ema else "raw"
        if name == "reconstructions":
            text = (f"reconstructed the first {self.num} {self.dataset} test images from step "
                    f"{self.step} ({weights} weights): MSE {self.mse:.6f} on [-1, 1] pixels")
        else:
            text = (f"interpolated {self.pairs} pairs of {self.dataset} test images (i and "
                    f"i + {self.pairs}), {self.steps} steps each, from step {self.step} "
                    f"({weights} weights)")
        return text + (f" -> {path}" if path else "")


def default_path(workdir, name: str, views: Views) -> pathlib.Path:
    """WORKDIR/samples/<name>_<step>.png, _raw added for the raw weights."""
    return (pathlib.Path(workdir) / "samples"
            / f"{name}_{views.step}{'' if views.ema else '_raw'}.png")


def check(*, num: int | None = None, pairs: int | None = None, steps: int | None = None):
    """Refuses counts that give no view, before anything is loaded."""
    if num is not None and num < 1:
        raise ConfigError(f"--num must be at least 1 (the number of test images to "
                          f"reconstruct), got {num}.")
    if pairs is not None and pairs < 1:
        raise ConfigError(f"--pairs must be at least 1 (the number of pairs of test images to "
                          f"interpolate between, one row each), got {pairs}.")
    if steps is not None and steps < 2:
        raise ConfigError(f"--steps must be at least 2 (the images decoded along each line, "
                          f"its two ends included), got {steps}.")


def fixed_batch(dataset: dict, num: int, data_dir: str | None = None,
               fix: str = "ask for fewer"):
    """The first ``num`` images (uint8 NHWC) of the ``dataset`` config's test split and their
    labels (int32, or None for a dataset without labels), read as the nll metric reads the
    split (``eval.likelihood``). ``fix``: the error's advice when the split is smaller."""
    d = sources.load_split(dataset, SPLIT, data_dir, num)
    if len(d.images) < num:
        raise ConfigError(f"The {SPLIT} split of {dataset['name']} has {len(d.images)} images, "
                          f"fewer than the {num} asked for; {fix}.")
    labels = None if d.labels is None else d.labels.astype(np.int32)
    return d.images, labels


def reconstruction_grid(originals_BHWC, reconstructions_BHWC, cols: int = COLS) -> np.ndarray:
    """Pairs of rows: ``cols`` originals, their reconstructions beneath (uint8 in, uint8 out)."""
    n = len(originals_BHWC)
    cols = min(cols, n)
    rows = -(-n // cols)
    blank = np.zeros((rows * cols - n, *originals_BHWC.shape[1:]), np.uint8)
    a = np.concatenate([originals_BHWC, blank]).reshape(rows, 1, cols, *blank.shape[1:])
    b = np.concatenate([reconstructions_BHWC, blank]).reshape(a.shape)
    return sampling.grid(np.concatenate([a, b], axis=1).reshape(-1, *blank.shape[1:]), cols)


def interpolation_grid(a_BHWC, line_BSHWC, b_BHWC) -> np.ndarray:
    """One row per pair: a_i, its S decoded images, b_i (uint8 in, uint8 out)."""
    rows = np.concatenate([a_BHWC[:, None], line_BSHWC, b_BHWC[:, None]], axis=1)
    return sampling.grid(rows.reshape(-1, *rows.shape[2:]), rows.shape[1])


def _in_chunks(fn, n: int, size: int):
    return np.concatenate([np.asarray(jax.device_get(fn(slice(s, s + size))))
                           for s in range(0, n, size)])


def views(workdir, *, reconstruct: bool = False, interpolate: bool = False, num: int = NUM,
          pairs: int = PAIRS, steps: int = STEPS, step: int | None = None, ema: bool = True,
          data_dir: str | None = None, run: int | None = None) -> Views:
    """The reconstruction and/or interpolation grids of a VAE run's checkpoint (the latest
    unless ``step``; its EMA weights unless ``ema=False``; run ``run`` of a job of several)
    for the first ``num`` / ``2 * pairs`` images of its dataset's test split. ConfigError
    for a GAN's workdir or counts that give no view; nothing is written."""
    check(num=num if reconstruct else None, pairs=pairs if interpolate else None,
          steps=steps if interpolate else None)
    encoder, decoder, params, variables, step, info = load_vae(workdir, step=step, ema=ema,
                                                               run=run)
    dataset = info["config"]["dataset"]
    need = max(num if reconstruct else 0, 2 * pairs if interpolate else 0)
    fix = " and ".join(f for f, n in (("lower --num", num if reconstruct else 0),
                                      ("lower --pairs (interpolations take 2 x --pairs "
                                       "images)", 2 * pairs if interpolate else 0)) if n == need)
    images, labels = fixed_batch(dataset, need, data_dir, fix)
    if not getattr(encoder, "num_classes", 0):
        labels = None
    y = (lambda s: None) if labels is None else (lambda s: labels[s])
    out = Views(step=step, ema=ema, dataset=dataset["name"])
    if reconstruct:
        fn = jax.jit(functools.partial(vae_steps.reconstruct, encoder, decoder))
        x = images[:num]
        recon = _in_chunks(lambda s: fn(params, variables, x[s], y(s)), num, _CHUNK)
        out.mse = float(np.mean(np.square(recon - np.asarray(to_float_images(x)))))
        out.reconstructions = reconstruction_grid(x, sampling.to_uint8(recon))
        out.num = num
    if interpolate:
        fn = jax.jit(functools.partial(vae_steps.interpolate, encoder, decoder),
                     static_argnames="num")
        a, b = images[:pairs], images[pairs:2 * pairs]
        ya, yb = y(slice(0, pairs)), y(slice(pairs, 2 * pairs))
        line = _in_chunks(lambda s: fn(params, variables, a[s], b[s], num=steps,
                                       labels_a=None if ya is None else ya[s],
                                       labels_b=None if yb is None else yb[s]),
                          pairs, max(1, _CHUNK // steps))
        out.interpolations = interpolation_grid(a, sampling.to_uint8(line), b)
        out.pairs, out.steps = pairs, steps
    return out
