"""Reference statistics of a real dataset: computed once per (dataset, split, extractor, its
weights and source code, image count) and cached as an .npz (float64 mean and covariance, the float32
features that KID and the k-NN metrics compare against) next to a JSON file holding the
.npz's sha256 and the provenance that produced it. Per-class moments (for intra-FID) are
added to the same .npz when first asked for, from its features: the extractor is not run
again.
"""
import dataclasses
import hashlib
import io
import json
import pathlib
import time

import numpy as np

import gan_jax
from gan_jax import files
from gan_jax.files import atomic_write_bytes
from gan_jax.eval import features as features_lib
from gan_jax.eval.conditional import class_moments
from gan_jax.eval.metrics import MetricError, Moments


@dataclasses.dataclass(frozen=True)
class Reference:
    moments: Moments
    features: np.ndarray  # float32 [N, D]
    provenance: dict
    class_moments: tuple[Moments, ...] | None = None  # Class k's at [k], when asked for.

    @property
    def n(self) -> int:
        return self.moments.n


def cache_root() -> pathlib.Path:
    return files.cache_dir() / "reference_stats"


def _dataset_identity(name: str, split: str, data_dir: str) -> dict:
    """What identifies the stored data without reading it: tfds name, version, split size."""
    import tensorflow_datasets as tfds

    from gan_jax.data import sources
    tfds_name = sources.resolve(name, data_dir)
    try:
        info = tfds.builder(tfds_name, data_dir=data_dir).info
        return {"tfds_name": tfds_name, "tfds_version": str(info.version),
                "split_size": int(info.splits[split].num_examples)}
    except Exception:  # Not prepared / unknown: sources.load raises the helpful error.
        sources.load(name, split, data_dir, max_examples=1)
        raise


def _key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _read(npz_path: pathlib.Path, json_path: pathlib.Path, identity: dict, log,
          label_key: str | None = None):
    """The cached reference, with its per-class moments when they were made from the labels
    ``label_key`` (else without them)."""
    if not (npz_path.is_file() and json_path.is_file()):
        return None
    try:
        meta = json.loads(json_path.read_text())
        blob = npz_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            log(f"gan_jax: {npz_path} fails its checksum; recomputing it")
            return None
        if meta["identity"] != identity:
            return None
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            moments = Moments(int(z["n"]), z["mean"], z["cov"])
            classes = None
            if label_key is not None and meta.get("class_label_key") == label_key:
                classes = tuple(Moments(int(n), m, c) for n, m, c in
                                zip(z["class_n"], z["class_mean"], z["class_cov"]))
            return Reference(moments, z["features"], meta, classes)
    except (OSError, ValueError, KeyError) as e:
        log(f"gan_jax: ignoring unreadable reference statistics {npz_path} ({e})")
        return None


def _class_arrays(classes) -> dict:
    return dict(class_n=np.array([m.n for m in classes]),
                class_mean=np.stack([m.mean for m in classes]),
                class_cov=np.stack([m.cov for m in classes]))


def _labels(data, label_key: str | None):
    """(labels, classes) of the reference images, checked before any feature is computed."""
    if data.labels is None:
        under = f" under {label_key!r}" if label_key else " (dataset.label_key is empty)"
        raise MetricError(f"intra_fid needs per-class reference statistics, and "
                          f"{data.name}/{data.split} has no class labels{under}; set "
                          "dataset.label_key to its label feature, or drop intra_fid.")
    return data.labels, data.num_classes or int(data.labels.max()) + 1


def get(extractor: features_lib.Extractor, dataset: str, split: str = "train", *,
        data_dir: str | None = None, num: int | None = None, image_key: str = "image",
        resolution: int | None = None, per_class: bool = False,
        label_key: str | None = "label", cache_dir=None, log=print) -> Reference:
    """The reference statistics of the first ``num`` images (all when None) of ``split``,
    from the cache when a file with the same identity and a good checksum is there; with
    ``per_class``, also each class's moments (classes from the feature ``label_key``)."""
    from gan_jax.data import sources
    data_dir = sources.resolve_data_dir(data_dir)
    ds = _dataset_identity(dataset, split, data_dir)
    count = ds["split_size"] if num is None else min(num, ds["split_size"])
    # The loader's source too: it crops and resizes the images the statistics are of.
    identity = {"dataset": dataset, "split": split, "num": count, "image_key": image_key,
                "resolution": resolution, **ds, **extractor.describe(),
                "loader_sha256": features_lib.code_sha256(sources.__file__)}
    root = pathlib.Path(cache_dir) if cache_dir else cache_root()
    stem = f"{dataset}-{split}-{extractor.name}-{count}-{_key(identity)}"
    npz_path, json_path = root / f"{stem}.npz", root / f"{stem}.json"
    label_key = label_key if per_class else None
    done = lambda ref: ref is not None and (not per_class or ref.class_moments is not None)
    cached = _read(npz_path, json_path, identity, log, label_key)
    if done(cached):
        return cached
    # Processes that need the same statistics at once compute them once; the others wait.
    with files.exclusive(root / f"{stem}.lock"):
        # Damage was reported above.
        cached = _read(npz_path, json_path, identity, lambda *a: None, label_key)
        if done(cached):
            return cached
        t = time.time()
        data = sources.load(dataset, split, data_dir, image_key=image_key, label_key=label_key,
                            resolution=resolution, max_examples=count)
        labels, num_classes = _labels(data, label_key) if per_class else (None, 0)
        images_sha256 = hashlib.sha256(np.ascontiguousarray(data.images)).hexdigest()
        if cached is not None and cached.provenance.get("images_sha256") == images_sha256:
            # Cached without per-class moments: they come from the cached features.
            log(f"gan_jax: adding per-class statistics of {dataset}/{split} to {npz_path}")
            moments, feats = cached.moments, cached.features
        else:
            log(f"gan_jax: computing reference statistics of {len(data.images)} "
                f"{dataset}/{split} images with the {extractor.name} extractor (cached in "
                f"{root})")
            f = features_lib.extract(extractor, features_lib.padded_batches(
                data.images, extractor.batch_size), keep_logits=False)
            moments, feats = f.moments, f.features
        classes = (class_moments(feats, labels, num_classes, what="reference images")
                   if per_class else None)
        # The .npz first: a JSON always names a whole file.
        digest = files.write_npz(npz_path, dict(n=moments.n, mean=moments.mean, cov=moments.cov,
                                                features=feats,
                                                **(_class_arrays(classes) if classes else {})))
        meta = {"identity": identity, "sha256": digest, "images_sha256": images_sha256,
                "data_dir": data_dir, "seconds": round(time.time() - t, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "gan_jax_version": gan_jax.__version__,
                **({"class_label_key": label_key} if classes else {})}
        atomic_write_bytes(json_path, json.dumps(meta, indent=2, sort_keys=True).encode())
        return Reference(moments, feats, meta, classes)


def from_images(extractor: features_lib.Extractor, images, provenance: dict, labels=None,
                num_classes: int | None = None) -> Reference:
    """Uncached statistics of in-memory images (tests, calibration, custom references); with
    ``labels``, per-class moments too (classes 0 to ``num_classes - 1``, by default to the
    largest label)."""
    feats = features_lib.extract(extractor, features_lib.padded_batches(
        images, extractor.batch_size), keep_logits=False)
    classes = None
    if labels is not None:
        classes = class_moments(feats.features, labels, num_classes or int(np.max(labels)) + 1,
                                what="reference images")
    return Reference(feats.moments, feats.features, {"identity": {**provenance,
                                                                  **extractor.describe()}},
                     classes)
