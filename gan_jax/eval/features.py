"""Feature extractors (the FID Inception-v3, the MNIST and Fashion-MNIST classifiers) and
one batched, jitted pass over a stream of images that collects everything every metric
needs: float64 streaming moments for FID, the feature vectors for KID and the k-NN metrics,
the logits for IS.

Images enter as float NHWC in [-1, 1] (uint8 in [0, 255] is accepted and mapped there). By
default they are rounded to the 256 levels of an 8-bit image first, so generated samples
are measured as they would be saved, on the grid the real images live on.
"""
import dataclasses
import functools
import hashlib
import pathlib
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.errors import GanJaxError
from gan_jax.eval.metrics import MomentAccumulator, Moments

EXTRACTORS = ("inception", "mnist", "fashion_mnist")
_RANGE_TOLERANCE = 1e-3


def code_sha256(*paths) -> str:
    """A hash of the source that turns images into features (this file and ``paths``): cached
    reference statistics made by other code are not reused."""
    h = hashlib.sha256()
    for path in (__file__, *paths):
        h.update(pathlib.Path(path).read_bytes())
    return h.hexdigest()[:16]


class ImageError(GanJaxError, ValueError):
    """Images of a shape, dtype or range an extractor cannot take."""


@dataclasses.dataclass(frozen=True)
class Extractor:
    name: str
    params: dict
    apply: Callable  # (params, x float32 NHWC in [-1, 1]) -> (features [N, D], logits [N, C])
    feature_dim: int
    image_shapes: str  # What it accepts, in words, for error messages.
    accepts: Callable  # (H, W, C) -> bool
    info: dict  # Provenance: weights' sha256, resize, ...
    batch_size: int = 200
    # The dataset classes its logits name (0: none of the dataset's, as Inception's ImageNet
    # logits): what class accuracy needs.
    classes: int = 0

    def describe(self) -> dict:
        return {"extractor": self.name, **self.info}


def inception(params, *, weights_sha256: str, resize: int = 299, dtype=jnp.float32,
              batch_size: int = 200) -> Extractor:
    """The FID Inception from a Flax ``params`` tree (``inception_weights.load``)."""
    from gan_jax.eval import inception as net
    from gan_jax.eval.inception import FEATURE_DIM, FIDInceptionV3
    model = FIDInceptionV3(resize=resize, dtype=dtype)
    small = 75 if resize is None else 1
    return Extractor(
        name="inception", params=params, feature_dim=FEATURE_DIM,
        apply=lambda p, x: model.apply({"params": p}, x),
        image_shapes=f"NHWC with 1 or 3 channels{'' if resize else ', at least 75x75'}",
        accepts=lambda h, w, c: c in (1, 3) and min(h, w) >= small,
        info={"weights_sha256": weights_sha256, "resize": f"bilinear {resize}x{resize}, "
              "align_corners=False, no antialias (pytorch-fid)" if resize else "none",
              "dtype": jnp.dtype(dtype).name, "features": "pool3 (2048)",
              "logits": "fc without bias (1008)", "code_sha256": code_sha256(net.__file__)},
        batch_size=batch_size)


def mnist(params, *, meta: dict, batch_size: int = 1000, dataset: str = "mnist") -> Extractor:
    """The classifier of ``dataset`` ("mnist" or "fashion_mnist"), named after it."""
    from gan_jax.eval import mnist_classifier as net
    from gan_jax.eval.mnist_classifier import FEATURE_DIM
    model = net.model(dataset)
    return Extractor(
        name=dataset, params=params, feature_dim=FEATURE_DIM,
        apply=lambda p, x: model.apply({"params": p}, x),
        image_shapes=f"NHWC 28x28x1 ({net.recipe(dataset).title})",
        accepts=lambda h, w, c: (h, w, c) == (28, 28, 1),
        info={"weights_sha256": meta["weights_sha256"], "resize": "none",
              "classifier_test_accuracy": meta["test_accuracy"], "classifier_key": meta["key"],
              "features": f"penultimate ({FEATURE_DIM})", "logits": "10 classes",
              "code_sha256": code_sha256(net.__file__)},
        batch_size=batch_size, classes=dataset_classes(dataset))


def dataset_classes(name: str) -> int:
    """The classes of the dataset whose classifier the extractor ``name`` is; 0 when it is
    no dataset's classifier."""
    from gan_jax.eval.mnist_classifier import NUM_CLASSES, RECIPES
    return NUM_CLASSES if name in RECIPES else 0


def get(name: str, *, inception_weights=None, data_dir=None, log=print) -> Extractor:
    """An extractor by name: "inception" (weights from ``inception_weights``, else
    $GAN_JAX_INCEPTION_WEIGHTS, else the cache), "mnist" or "fashion_mnist" (trained on first
    use)."""
    if name == "inception":
        from gan_jax.eval import inception_weights as iw
        params, digest = iw.load(iw.resolve_path(inception_weights))
        return inception(params, weights_sha256=digest)
    if name in ("mnist", "fashion_mnist"):
        from gan_jax.eval import mnist_classifier
        params, meta = mnist_classifier.load_or_train(data_dir, log=log, dataset=name)
        return mnist(params, meta=meta, dataset=name)
    raise ImageError(f"Unknown extractor {name!r}; use one of {list(EXTRACTORS)}.")


def default_for(dataset: str) -> str:
    return dataset if dataset in ("mnist", "fashion_mnist") else "inception"


def check_batch(x, extractor: Extractor) -> None:
    """Shape and dtype, before any compute: the error says what was expected."""
    shape, dtype = tuple(np.shape(x)), np.dtype(x.dtype) if hasattr(x, "dtype") else None
    if len(shape) != 4 or not extractor.accepts(*shape[1:]):
        raise ImageError(f"The {extractor.name} extractor expects images {extractor.image_shapes}"
                         f", got an array of shape {shape}.")
    if dtype is None or not (dtype == np.uint8 or jnp.issubdtype(dtype, jnp.floating)):
        raise ImageError(f"Images must be float in [-1, 1] or uint8 in [0, 255], got dtype "
                         f"{dtype}.")


def _prepare(x, quantize: bool):
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 127.5 - 1.0
    x = x.astype(jnp.float32)
    if quantize:  # Exactly what saving as 8-bit and reading back gives.
        x = jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0
    return x


@functools.partial(jax.jit, static_argnames=("apply", "quantize"))
def _run(params, x, apply, quantize):
    # Keyed on the extractor's apply function: one compile per extractor and batch shape.
    lo, hi = jnp.min(x), jnp.max(x)
    finite = jnp.all(jnp.isfinite(x.astype(jnp.float32)))
    f, logits = apply(params, _prepare(x, quantize))
    return f.astype(jnp.float32), logits.astype(jnp.float32), lo, hi, finite


@dataclasses.dataclass
class Features:
    n: int
    moments: Moments
    features: np.ndarray | None  # float32 [N, D], when kept
    logits: np.ndarray | None  # float32 [N, C], when kept


def extract(extractor: Extractor, batches: Iterable, *, keep_features: bool = True,
            keep_logits: bool = True, quantize: bool = True) -> Features:
    """One pass over ``batches`` (arrays, or (array, valid_rows) for a padded last batch).
    Raises ImageError for a batch of the wrong shape, dtype or range, or with NaN/Inf."""

    acc = MomentAccumulator(extractor.feature_dim)
    feats, logits, pending = [], [], None

    def collect(item):
        (f, lg, lo, hi, finite), rows, dtype = item
        f, lg, lo, hi, finite = jax.device_get((f, lg, lo, hi, finite))
        if not finite:
            raise ImageError("The images hold NaN or Inf values; expected floats in [-1, 1].")
        if dtype != np.uint8 and (lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE):
            raise ImageError(f"Images must lie in [-1, 1] (a generator's tanh output); got "
                             f"values in [{float(lo):.4g}, {float(hi):.4g}]. Map [0, 255] "
                             "with x / 127.5 - 1 or [0, 1] with 2x - 1, or pass uint8.")
        f, lg = f[:rows], lg[:rows]
        acc.add(f)
        if keep_features:
            feats.append(f)
        if keep_logits:
            logits.append(lg)

    for batch in batches:
        x, rows = batch if isinstance(batch, tuple) else (batch, len(batch))
        check_batch(x, extractor)
        item = (_run(extractor.params, x, extractor.apply, quantize), rows, np.dtype(x.dtype))
        if pending is not None:  # Fetch the previous batch while this one runs.
            collect(pending)
        pending = item
    if pending is not None:
        collect(pending)
    return Features(acc.n, acc.result() if acc.n > 1 else None,
                    np.concatenate(feats) if feats else None,
                    np.concatenate(logits) if logits else None)


def padded_batches(images, batch_size: int, xp=np):
    """(batch, valid_rows) over an array (``xp`` = np or jnp), the last batch padded by
    repeating its final row, so every batch has one shape and compiles once."""
    batch_size = min(batch_size, len(images))
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        rows = len(x)
        if rows < batch_size:
            x = xp.concatenate([x, xp.repeat(x[-1:], batch_size - rows, axis=0)])
        yield x, rows


def throughput(extractor: Extractor, batch_size: int, image_shape, *, batches: int = 5) -> dict:
    """Images per second of ``extractor`` on random images, after one compiling batch."""
    import time
    x = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (batch_size, *image_shape)),
                    jnp.float32)
    t = time.perf_counter()
    jax.block_until_ready(_run(extractor.params, x, extractor.apply, True))
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(batches):
        out = _run(extractor.params, x, extractor.apply, True)
    jax.block_until_ready(out)
    seconds = time.perf_counter() - t
    return {"extractor": extractor.name, "batch_size": batch_size,
            "image_shape": list(image_shape), "images_per_s": batches * batch_size / seconds,
            "first_batch_s": compile_s, "backend": jax.default_backend()}
