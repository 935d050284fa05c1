"""Calibration of the metrics on real data: held-out real images against the reference (the
floor a perfect generator reaches) and the same images made worse by Gaussian noise and
blur, which every metric must rank as worse and worse.
"""
import numpy as np

from gan_jax.eval import features as features_lib
from gan_jax.eval import metrics as M

NOISE = (0.05, 0.1, 0.2, 0.4)  # std of added noise, in units of the [0, 1] pixel range
BLUR = (0.5, 1.0, 1.5, 2.0)  # std of the Gaussian blur, in pixels


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return k / k.sum()


def corrupt(images_uint8: np.ndarray, kind: str, level: float, seed: int = 0) -> np.ndarray:
    """uint8 NHWC images with ``kind`` in {"noise", "blur"} of strength ``level`` applied."""
    x = images_uint8.astype(np.float64) / 255.0
    if kind == "noise":
        x = x + np.random.RandomState(seed).normal(0.0, level, x.shape)
    elif kind == "blur":
        k = _gaussian_kernel(level)
        r = len(k) // 2
        for axis in (1, 2):  # Separable, with edge padding so borders do not darken.
            pad = [(0, 0)] * 4
            pad[axis] = (r, r)
            xp = np.pad(x, pad, mode="edge")
            x = sum(w * np.take(xp, np.arange(i, i + x.shape[axis]), axis=axis)
                    for i, w in enumerate(k))
    else:
        raise ValueError(f"kind must be 'noise' or 'blur', got {kind!r}.")
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def scores(extractor, reference, images_uint8, *, kid_subset_size=1000, kid_subsets=100,
           seed=0) -> dict:
    feats = features_lib.extract(extractor, features_lib.padded_batches(
        images_uint8, extractor.batch_size))
    kid, _ = M.kid(reference.features, feats.features, num_subsets=kid_subsets,
                   subset_size=kid_subset_size, seed=seed)
    return {"fid": M.frechet_distance(reference.moments, feats.moments), "kid": kid,
            "is": M.inception_score(feats.logits)[0]}


def table(extractor, reference, test_images_uint8, *, noise=NOISE, blur=BLUR, **kwargs):
    """Rows (name, level, {"fid", "kid", "is"}): the clean images, then each corruption in
    increasing strength."""
    rows = [("clean", 0.0, scores(extractor, reference, test_images_uint8, **kwargs))]
    for kind, levels in (("noise", noise), ("blur", blur)):
        for level in levels:
            rows.append((kind, level, scores(extractor, reference,
                                             corrupt(test_images_uint8, kind, level), **kwargs)))
    return rows


def markdown(rows) -> str:
    lines = ["| test images | FID | KID | IS |", "|---|---|---|---|"]
    for kind, level, s in rows:
        name = "clean (the floor)" if kind == "clean" else (
            f"Gaussian noise, std {level}" if kind == "noise" else f"Gaussian blur, sigma {level} px")
        lines.append(f"| {name} | {s['fid']:.3f} | {s['kid']:.5f} | {s['is']:.3f} |")
    return "\n".join(lines)


def floor_precision_recall(extractor, reference, test_images_uint8, *, k: int = 3,
                           num: int = 10_000) -> dict:
    """Precision and recall of the real test images (the first ``num``) against the first
    ``num`` reference features: the values a perfect generator gets, as the evaluation
    measures a generator's (``knn_num`` samples a side)."""
    feats = features_lib.extract(extractor, features_lib.padded_batches(
        test_images_uint8[:num], extractor.batch_size))
    p, r = M.precision_recall(reference.features[:num], feats.features, k=k)
    return {"precision": float(p), "recall": float(r)}
