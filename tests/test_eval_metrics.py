"""Metrics against independent brute-force float64 NumPy / scipy computations."""
import numpy as np
import pytest
import scipy.linalg

from gan_jax.eval import metrics as M


def _features(seed, n, d, shift=0.0, scale=1.0):
    rng = np.random.RandomState(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mix * scale + shift).astype(np.float64)


def _fid_scipy(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("n1,n2,d", [(500, 700, 32), (40, 50, 64)])  # the second: n < d
def test_fid_matches_scipy_sqrtm(n1, n2, d):
    x = _features(0, n1, d)
    y = _features(1, n2, d, shift=0.3, scale=1.5)
    ref = _fid_scipy(x, y)
    assert abs(M.fid(x, y) - ref) / abs(ref) < 1e-6


def test_fid_of_identical_sets_is_zero_and_symmetric():
    x = _features(2, 300, 16, shift=5.0)
    y = _features(3, 300, 16)
    assert abs(M.fid(x, x)) < 1e-8
    assert M.fid(x, y) == pytest.approx(M.fid(y, x), rel=1e-9)


def test_streaming_moments_match_float64_numpy_with_a_large_mean():
    x = _features(4, 1000, 8, shift=1e4)  # Large mean: a sum-of-squares formula loses digits.
    acc = M.MomentAccumulator(8)
    for lo, hi in [(0, 1), (1, 100), (100, 101), (101, 1000)]:
        acc.add(x[lo:hi])
    got = acc.result()
    np.testing.assert_allclose(got.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got.cov, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-10)


def _kid_brute(x, y, num_subsets, m, seed):
    rng = np.random.RandomState(seed)
    d = x.shape[1]
    values = []
    for _ in range(num_subsets):
        a, b = x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)]
        k = lambda u, v: (u @ v / d + 1.0) ** 3
        xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j)
        yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j)
        xy = sum(k(a[i], b[j]) for i in range(m) for j in range(m))
        values.append(xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m))
    return np.mean(values), np.std(values)


def test_kid_matches_brute_force():
    x, y = _features(5, 60, 6), _features(6, 70, 6, shift=0.5)
    mean, std = M.kid(x, y, num_subsets=4, subset_size=30, seed=3)
    ref_mean, ref_std = _kid_brute(x, y, 4, 30, 3)
    assert mean == pytest.approx(ref_mean, rel=1e-5, abs=1e-6)
    assert std == pytest.approx(ref_std, rel=1e-4, abs=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    x, y = np.split(_features(7, 800, 8), 2)
    same = M.kid(x, y, num_subsets=20, subset_size=200)[0]
    shifted = M.kid(x, y + 1.0, num_subsets=20, subset_size=200)[0]
    assert abs(same) < 0.05 * shifted


def test_kid_subsets_larger_than_the_sample_fail_clearly():
    x = _features(9, 500, 4)
    with pytest.raises(M.MetricError, match=r"subsets of 1000.*hold 500 and 500.*kid_subset_size"):
        M.kid(x, x)


def _is_brute(logits, splits):
    scores = []
    for part in np.array_split(np.asarray(logits, np.float64), splits):
        p = np.exp(part) / np.exp(part).sum(1, keepdims=True)
        py = p.mean(0)
        kl = [sum(pi[c] * (np.log(pi[c]) - np.log(py[c])) for c in range(len(py))) for pi in p]
        scores.append(np.exp(np.mean(kl)))
    return np.mean(scores), np.std(scores)


def test_inception_score_matches_brute_force_and_known_answers():
    logits = np.random.RandomState(10).normal(0, 3, (103, 7))
    got = M.inception_score(logits, splits=10)
    np.testing.assert_allclose(got, _is_brute(logits, 10), rtol=1e-10)
    # Uniform predictions: 1. Confident predictions spread evenly over C classes: C.
    assert M.inception_score(np.zeros((50, 5)), splits=5)[0] == pytest.approx(1.0)
    confident = np.eye(8)[np.tile(np.arange(8), 20)] * 50.0
    assert M.inception_score(confident, splits=4)[0] == pytest.approx(8.0, rel=1e-6)
    with pytest.raises(M.MetricError, match="at least 10 samples"):
        M.inception_score(logits[:5])


def _dist(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def _radii(x, k):
    return np.sort(_dist(x, x), axis=1)[:, k]  # Column 0 is the point itself.


def _prdc_brute(real, fake, k_pr=3, k_dc=5):
    d_rf = _dist(real, fake)
    r3_real, r3_fake = _radii(real, k_pr), _radii(fake, k_pr)
    precision = np.mean([any(d_rf[i, j] <= r3_real[i] for i in range(len(real)))
                         for j in range(len(fake))])
    recall = np.mean([any(d_rf[i, j] <= r3_fake[j] for j in range(len(fake)))
                      for i in range(len(real))])
    r5 = _radii(real, k_dc)
    density = np.mean([sum(d_rf[i, j] < r5[i] for i in range(len(real)))
                       for j in range(len(fake))]) / k_dc
    coverage = np.mean([d_rf[i].min() < r5[i] for i in range(len(real))])
    return precision, recall, density, coverage


def test_precision_recall_density_coverage_match_brute_force():
    base = _features(11, 270, 5)
    real, fake = base[:150], base[150:] * 0.7 + 0.5  # Narrower and shifted: both below 1.
    got = M.precision_recall(real, fake) + M.density_coverage(real, fake)
    want = _prdc_brute(real, fake)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert 0.5 < got[0] < 0.95 and 0.3 < got[1] < 0.8


def test_knn_metrics_known_answers():
    real = _features(13, 100, 4)
    assert M.precision_recall(real, real) == (1.0, 1.0)
    assert M.density_coverage(real, real)[1] == 1.0
    far = real + 100.0
    assert M.precision_recall(real, far) == (0.0, 0.0)
    assert M.density_coverage(real, far) == (0.0, 0.0)


def test_knn_radii_match_brute_force_across_blocks(monkeypatch):
    monkeypatch.setattr(M, "_BLOCK", 7)  # Several blocks and a ragged last one.
    x = _features(14, 30, 3)
    np.testing.assert_allclose(M.knn_radii(x, 3), _radii(x, 3), rtol=1e-5)


def test_metrics_reject_mismatched_or_too_few_features():
    with pytest.raises(M.MetricError, match="one D"):
        M.precision_recall(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(M.MetricError, match="k=5 needs more than 5"):
        M.density_coverage(np.random.rand(5, 3), np.random.rand(20, 3))
    with pytest.raises(M.MetricError, match="one dimension"):
        M.fid(np.random.rand(10, 3), np.random.rand(10, 4))
