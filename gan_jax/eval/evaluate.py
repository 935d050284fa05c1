"""Evaluating a generator: one pass over its samples computes the features every requested
metric needs; the results come with the provenance that makes them comparable.

``evaluate_generator`` is what a training loop calls (any ``draw(z) -> images``, or
``draw(z, y)`` for a conditional generator, whose samples are then class-balanced); the
trainer's ``evaluate_checkpoint`` (``gan_jax.trainer.evaluation``) scores a run's checkpoint.
"""
import time

import jax
import jax.numpy as jnp

import gan_jax
from gan_jax import sampling
from gan_jax.eval import conditional
from gan_jax.eval import features as features_lib
from gan_jax.eval import metrics as M
from gan_jax.eval import reference as reference_lib

# nll: a VAE's test-set negative ELBO (eval.likelihood), the one metric not of samples.
METRICS = ("fid", "kid", "is", "pr", "dc", *conditional.METRICS, "nll")
DRAW_CHUNK = 1000  # Latents per generator call, as gan_jax.trainer.workdir.sample draws them.


def parse_metrics(metrics) -> tuple[str, ...]:
    names = tuple(m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str)
                                               else metrics) if m.strip())
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise M.MetricError(f"Unknown metrics {unknown or names!r}; choose from "
                            f"{', '.join(METRICS)} (comma-separated).")
    return names


def check_counts(metrics, num: int, ref_n: int | None, *, kid_subset_size: int,
                 is_splits: int, knn_num: int) -> None:
    """Fails before any image is drawn when a metric cannot be computed from these counts
    (``ref_n`` None: the reference is not known yet)."""
    # intra_fid's per-class needs are conditional.check's: they depend on the classes.
    need = {"fid": 2, "kid": kid_subset_size, "is": is_splits, "pr": 4, "dc": 6,
            "intra_fid": 2, "class_acc": 1, "nll": 0}
    for m in metrics:
        if ref_n is not None and m in ("pr", "dc", "kid", "fid") and ref_n < need[m]:
            raise M.MetricError(f"{m} needs at least {need[m]} reference images; the reference "
                                f"holds {ref_n}.")
        if num < need[m]:
            hint = {"kid": " or a smaller kid_subset_size", "is": " or fewer IS splits"}.get(m, "")
            raise M.MetricError(f"{m} needs at least {need[m]} generated samples, got num={num}"
                                f"; evaluate more samples{hint}.")
    if knn_num < 6 and {"pr", "dc"} & set(metrics):
        raise M.MetricError(f"knn_num={knn_num} is too small for precision/recall and "
                            "density/coverage (k = 3 and 5); use at least 6.")


def _batches(draw, z, batch_size: int, y=None):
    """Extractor-sized batches of generated images, drawn DRAW_CHUNK latents at a time."""
    for images in sampling.in_chunks(draw, z, DRAW_CHUNK, y_B=y):
        yield from features_lib.padded_batches(images, batch_size, xp=jnp)


def compute(fake: features_lib.Features, ref: reference_lib.Reference, metrics, *,
            kid_subsets=100, kid_subset_size=1000, is_splits=10, knn_num=10_000, seed=0) -> dict:
    """Metric values from extracted features; keys as in the JSON lines."""
    out = {}
    for m in metrics:
        if m == "fid":
            out["fid"] = M.frechet_distance(ref.moments, fake.moments)
        elif m == "kid":
            out["kid"], out["kid_std"] = M.kid(ref.features, fake.features,
                                               num_subsets=kid_subsets,
                                               subset_size=kid_subset_size, seed=seed)
        elif m == "is":
            out["is"], out["is_std"] = M.inception_score(fake.logits, splits=is_splits)
        elif m == "pr":
            out["precision"], out["recall"] = M.precision_recall(
                ref.features[:knn_num], fake.features[:knn_num], k=3)
        elif m == "dc":
            out["density"], out["coverage"] = M.density_coverage(
                ref.features[:knn_num], fake.features[:knn_num], k=5)
    return out


def evaluate_generator(draw, num: int, *, z_dim: int, extractor, reference, metrics=("fid",),
                       seed: int = 0, kid_subsets: int = 100, kid_subset_size: int = 1000,
                       is_splits: int = 10, knn_num: int = 10_000, quantize: bool = True,
                       num_classes: int = 0, nelbo=None) -> dict:
    """Draws ``num`` samples with ``draw(z) -> images in [-1, 1], float NHWC`` from latents
    ``sampling.latents(seed, num, z_dim)``, extracts their features once and returns
    {metric values..., "provenance": {...}}. ``extractor`` is a ``features.Extractor`` and
    ``reference`` a ``reference.Reference`` computed with it; build both once and reuse them
    across calls (the extractor compiles once). A conditional generator (``num_classes``
    C > 0) is called as ``draw(z, y)`` with the classes ``sampling.balanced_labels(num, C)``,
    so every metric sees a class-balanced sample; intra_fid needs a reference made with
    per-class moments. ``nelbo() -> {"nll", "bits_per_dim", "nll_provenance"}``
    (``likelihood.test_nelbo`` of a VAE) gives the nll metric."""
    metrics = parse_metrics(metrics)
    if "nll" in metrics and nelbo is None:
        raise M.MetricError("nll is the test set's negative ELBO, which only a VAE (a model "
                            "with an encoder, model.name='vae') has; drop it from the metrics.")
    check_counts(metrics, num, reference.n, kid_subset_size=kid_subset_size,
                 is_splits=is_splits, knn_num=knn_num)
    conditional.check(metrics, num_classes, extractor, num=num, reference=reference)
    ref_ex = reference.provenance["identity"]
    differ = [f"{k}: {ref_ex.get(k)!r} in the reference, {v!r} here"
              for k, v in extractor.describe().items() if ref_ex.get(k) != v]
    if differ:
        raise M.MetricError("The reference statistics were computed with another extractor ("
                            + "; ".join(differ) + "); compute them with this one, e.g. "
                            "reference.get(extractor, dataset).")
    nll = nelbo() if "nll" in metrics else {}  # Timed in its own provenance.
    t = time.time()
    y = sampling.balanced_labels(num, num_classes) if num_classes else None
    fake = features_lib.extract(extractor, _batches(draw, sampling.latents(seed, num, z_dim),
                                                    extractor.batch_size, y),
                                keep_features=bool({"kid", "pr", "dc", "intra_fid"}
                                                   & set(metrics)),
                                keep_logits=bool({"is", "class_acc"} & set(metrics)),
                                quantize=quantize)
    extract_s = time.time() - t
    values = compute(fake, reference, metrics, kid_subsets=kid_subsets,
                     kid_subset_size=kid_subset_size, is_splits=is_splits, knn_num=knn_num,
                     seed=seed)
    if y is not None:
        values.update(conditional.compute(fake, jax.device_get(y), reference, extractor,
                                          metrics))
    values.update({k: nll[k] for k in _FIELDS["nll"] if nll})
    ident = reference.provenance["identity"]
    provenance = {
        **extractor.describe(), "num_samples": num, "seed": seed, "quantize_8bit": quantize,
        "reference": {k: ident.get(k) for k in ("dataset", "split", "num", "resolution",
                                                "tfds_name", "tfds_version")},
        "reference_sha256": reference.provenance.get("sha256"),
        "kid": {"subsets": kid_subsets, "subset_size": kid_subset_size, "kernel": "cubic"},
        "is_splits": is_splits, "knn_num": min(knn_num, num, reference.n),
        "pr_k": 3, "dc_k": 5, "gan_jax_version": gan_jax.__version__,
        "jax_version": jax.__version__, "backend": jax.default_backend(),
        **({"classes": num_classes, "labels": "balanced"} if num_classes else {}),
        **({"reference_class_counts": [m.n for m in reference.class_moments]}
           if "intra_fid" in metrics else {}),
        **({"nll": nll["nll_provenance"]} if nll else {}),
        "extract_seconds": round(extract_s, 2), "seconds": round(time.time() - t, 2)}
    return {**values, "provenance": provenance}


_FIELDS = {"fid": ("fid",), "kid": ("kid", "kid_std"), "is": ("is", "is_std"),
           "pr": ("precision", "recall"), "dc": ("density", "coverage"), **conditional.FIELDS,
           "nll": ("nll", "bits_per_dim")}


def fields(metrics) -> tuple[str, ...]:
    """The scalar values the metrics give, e.g. "fid,kid" -> ("fid", "kid", "kid_std")."""
    return tuple(k for m in parse_metrics(metrics) for k in _FIELDS[m])


def records(result: dict, metrics, **context) -> list[dict]:
    """One JSON-ready record per metric: the time, context (step, ...), the metric's values
    (with the per-class lists of the conditional ones) and the provenance."""
    context = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **context}
    return [{**context, "metric": m,
             **{k: result[k] for k in _FIELDS[m] + conditional.PER_CLASS.get(m, ())},
             "provenance": result["provenance"]} for m in parse_metrics(metrics)]


def prepare(dataset: dict, *, extractor: str | None = None, inception_weights=None,
            reference_split: str | None = None, reference_num: int | None = None,
            data_dir: str | None = None, reference_cache=None, per_class: bool = False,
            log=print):
    """(extractor, reference) for a run whose ``config.dataset`` is ``dataset`` (a dict):
    the MNIST classifier for MNIST, else the FID Inception; the reference is the run's
    training split, with per-class moments (intra_fid) when ``per_class``. Build them once;
    ``evaluate_generator`` reuses them."""
    data_dir = data_dir or dataset.get("data_dir") or None
    name = extractor or features_lib.default_for(dataset["name"])
    ex = features_lib.get(name, inception_weights=inception_weights, data_dir=data_dir, log=log)
    ref = reference_lib.get(ex, dataset["name"], reference_split or dataset["split"],
                            data_dir=data_dir, num=reference_num,
                            image_key=dataset.get("image_key", "image"),
                            resolution=dataset.get("resolution") or None,
                            per_class=per_class,
                            label_key=dataset.get("label_key", "label") or None,
                            cache_dir=reference_cache, log=log)
    return ex, ref
