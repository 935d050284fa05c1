"""Sample-quality metrics over feature vectors: FID, KID, Inception Score, improved precision
and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020).

Pure functions of feature arrays. Moments and FID are float64 on the host; the pairwise
work of KID, precision/recall and density/coverage runs jitted on JAX's default device.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.errors import GanJaxError

# Rows of the first set per pairwise-distance block: bounds memory at block x n floats.
_BLOCK = 1024


class MetricError(GanJaxError, ValueError):
    """Inputs a metric cannot be computed from (too few samples, mismatched dimensions)."""


@dataclasses.dataclass(frozen=True)
class Moments:
    """Count, mean and covariance (float64) of a set of feature vectors."""
    n: int
    mean: np.ndarray  # [D]
    cov: np.ndarray  # [D, D], normalised by n - 1


class MomentAccumulator:
    """Streaming float64 mean and covariance: batches are merged with Chan et al.'s pairwise
    update, which stays accurate when the mean is large against the spread (the textbook
    sum-of-squares formula loses digits to cancellation there)."""

    def __init__(self, dim: int):
        self.n, self.mean = 0, np.zeros(dim)
        self.m2 = np.zeros((dim, dim))

    def add(self, x_ND) -> None:
        x = np.asarray(x_ND, np.float64)
        nb = len(x)
        if nb == 0:
            return
        mean_b = x.mean(0)
        xc = x - mean_b
        m2_b = xc.T @ xc
        n = self.n + nb
        delta = mean_b - self.mean
        self.m2 += m2_b + np.outer(delta, delta) * (self.n * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.n = n

    def result(self) -> Moments:
        if self.n < 2:
            raise MetricError(f"A covariance needs at least 2 samples, got {self.n}.")
        return Moments(self.n, self.mean.copy(), self.m2 / (self.n - 1))


def moments(x_ND) -> Moments:
    acc = MomentAccumulator(np.shape(x_ND)[1])
    acc.add(x_ND)
    return acc.result()


def _psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: Moments, b: Moments) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrt(S_a S_b)), float64. Tr sqrt(S_a S_b) is taken
    as the trace of sqrt(sqrt(S_a) S_b sqrt(S_a)), a symmetric PSD matrix with the same
    eigenvalues, through eigh: no scipy sqrtm, no complex round-off to discard."""
    if a.mean.shape != b.mean.shape:
        raise MetricError(f"FID needs features of one dimension, got {a.mean.shape[0]} and "
                          f"{b.mean.shape[0]}.")
    sa = _psd_sqrt(np.asarray(a.cov, np.float64))
    m = sa @ np.asarray(b.cov, np.float64) @ sa
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = np.asarray(a.mean, np.float64) - np.asarray(b.mean, np.float64)
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * tr_covmean)


def fid(x_ND, y_MD) -> float:
    return frechet_distance(moments(x_ND), moments(y_MD))


def _check_pair(name, x, y):
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise MetricError(f"{name} needs two [N, D] feature arrays of one D, got "
                          f"{x.shape} and {y.shape}.")


@jax.jit
def _mmd2_unbiased(x_MD, y_MD):
    # Cubic polynomial kernel k(a, b) = (a.b / D + 1)^3 as in Binkowski et al.
    d = x_MD.shape[1]
    hi = jax.lax.Precision.HIGHEST
    k = lambda a, b: (jnp.matmul(a, b.T, precision=hi) / d + 1.0) ** 3
    kxx, kyy, kxy = k(x_MD, x_MD), k(y_MD, y_MD), k(x_MD, y_MD)
    m = x_MD.shape[0]
    off = lambda kk: kk.sum() - jnp.trace(kk)
    return (off(kxx) + off(kyy)) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m)


def kid(x_ND, y_MD, *, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """Kernel Inception Distance: the unbiased MMD^2 with a cubic polynomial kernel, averaged
    over ``num_subsets`` random subsets of ``subset_size`` from each set. (mean, std)."""
    x, y = np.asarray(x_ND, np.float32), np.asarray(y_MD, np.float32)
    _check_pair("KID", x, y)
    if subset_size < 2 or min(len(x), len(y)) < subset_size:
        raise MetricError(
            f"KID draws subsets of {subset_size} samples without replacement from each set, but "
            f"the sets hold {len(x)} and {len(y)}: evaluate at least {subset_size} samples per "
            "set, or pass a smaller kid_subset_size (at least 2).")
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(num_subsets):
        ix = rng.choice(len(x), subset_size, replace=False)
        iy = rng.choice(len(y), subset_size, replace=False)
        values.append(_mmd2_unbiased(x[ix], y[iy]))
    values = np.asarray(jax.device_get(values), np.float64)
    return float(values.mean()), float(values.std())


def inception_score(logits_NC, *, splits: int = 10):
    """exp(E_x KL(p(y|x) || p(y))) over ``splits`` consecutive chunks, float64. (mean, std)."""
    logits = np.asarray(logits_NC, np.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise MetricError(f"The Inception Score needs at least {splits} samples ([N, classes] "
                          f"logits) for {splits} splits, got shape {logits.shape}.")
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    scores = []
    for part in np.array_split(logp, splits):
        p = np.exp(part)
        log_py = np.log(p.mean(0))
        scores.append(np.exp((p * (part - log_py)).sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


@functools.partial(jax.jit, static_argnames="k")
def _nearest_sq_block(a_BD, b_ND, k):
    # Squared distances from each row of a to its k nearest rows of b, nearest first. All k
    # are returned: slicing the k-th here makes XLA:CPU sort whole rows, 30x slower.
    return -jax.lax.top_k(-_sqdist(a_BD, b_ND), k)[0]


def _sqdist(a, b):
    hi = jax.lax.Precision.HIGHEST
    d2 = ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
          - 2.0 * jnp.matmul(a, b.T, precision=hi))
    return jnp.maximum(d2, 0.0)


def knn_radii(x_ND, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row."""
    x = jnp.asarray(x_ND, jnp.float32)
    if len(x) <= k:
        raise MetricError(f"k-nearest-neighbour radii with k={k} need more than {k} samples, "
                          f"got {len(x)}.")
    # k + 1: each row is its own nearest neighbour, at distance 0.
    sq = np.concatenate([np.asarray(_nearest_sq_block(x[i:i + _BLOCK], x, k + 1))
                         for i in range(0, len(x), _BLOCK)])
    return np.sqrt(sq[:, -1])


@jax.jit
def _ball_counts(a_BD, b_ND, radii_N):
    # For each row of a: how many balls of b it falls in (<=, Kynkaanniemi) and (<, Naeem),
    # and its distance to the nearest row of b.
    d = jnp.sqrt(_sqdist(a_BD, b_ND))
    return ((d <= radii_N[None]).sum(1), (d < radii_N[None]).sum(1), d.min(1))


def _against(a, b, radii):
    outs = [_ball_counts(a[i:i + _BLOCK], b, radii) for i in range(0, len(a), _BLOCK)]
    return [np.concatenate([np.asarray(o[j]) for o in outs]) for j in range(3)]


def _check_knn(name, x, y, k):
    _check_pair(name, x, y)
    if min(len(x), len(y)) <= k:
        raise MetricError(f"{name} with k={k} needs more than {k} samples in each set, got "
                          f"{len(x)} real and {len(y)} generated.")


def precision_recall(real_ND, fake_MD, *, k: int = 3, real_radii=None):
    """Improved precision (fraction of generated samples inside some real sample's k-NN ball)
    and recall (fraction of real samples inside some generated sample's k-NN ball)."""
    real, fake = jnp.asarray(real_ND, jnp.float32), jnp.asarray(fake_MD, jnp.float32)
    _check_knn("Precision/recall", real, fake, k)
    r_real = knn_radii(real, k) if real_radii is None else np.asarray(real_radii)
    r_fake = knn_radii(fake, k)
    precision = (_against(fake, real, jnp.asarray(r_real))[0] > 0).mean()
    recall = (_against(real, fake, jnp.asarray(r_fake))[0] > 0).mean()
    return float(precision), float(recall)


def density_coverage(real_ND, fake_MD, *, k: int = 5, real_radii=None):
    """Density: mean number of real k-NN balls (strict <) holding a generated sample, over k.
    Coverage: fraction of real samples whose nearest generated sample is inside their ball."""
    real, fake = jnp.asarray(real_ND, jnp.float32), jnp.asarray(fake_MD, jnp.float32)
    _check_knn("Density/coverage", real, fake, k)
    r_real = knn_radii(real, k) if real_radii is None else np.asarray(real_radii)
    strict = _against(fake, real, jnp.asarray(r_real))[1]
    nearest_fake = _against(real, fake, jnp.zeros(len(fake)))[2]
    return float(strict.mean() / k), float((nearest_fake < r_real).mean())
