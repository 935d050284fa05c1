import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import losses

REAL = np.array([2.0, -1.0, 0.5, 4.0], np.float32)
FAKE = np.array([-3.0, 1.5, 0.0, -0.25], np.float32)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


EXPECTED = {
    "minimax": (np.mean(-np.log(_sig(REAL))) + np.mean(-np.log(1 - _sig(FAKE))),
                np.mean(np.log(1 - _sig(FAKE)))),
    "non_saturating": (np.mean(-np.log(_sig(REAL))) + np.mean(-np.log(1 - _sig(FAKE))),
                       np.mean(-np.log(_sig(FAKE)))),
    "hinge": (np.mean(np.maximum(0, 1 - REAL)) + np.mean(np.maximum(0, 1 + FAKE)),
              -np.mean(FAKE)),
    "wasserstein": (np.mean(FAKE) - np.mean(REAL), -np.mean(FAKE)),
    "least_squares": (0.5 * np.mean((REAL - 1) ** 2) + 0.5 * np.mean(FAKE ** 2),
                      0.5 * np.mean((FAKE - 1) ** 2)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_matches_closed_form(name):
    loss = losses.get(name)
    d_want, g_want = EXPECTED[name]
    np.testing.assert_allclose(loss.d(REAL, FAKE), d_want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loss.g(FAKE), g_want, rtol=1e-6, atol=1e-6)
    assert loss.d(jnp.asarray(REAL, jnp.bfloat16), FAKE).dtype == jnp.float32


def test_minimax_g_is_the_seed_formula_and_saturates():
    # The seed's G minimises log(1 - D(G(z))): its gradient vanishes when D rejects fakes,
    # the non-saturating loss's does not.
    f = jnp.array([-8.0])
    g_mm = jax.grad(lambda x: losses.minimax.g(x))(f)
    g_ns = jax.grad(lambda x: losses.non_saturating.g(x))(f)
    assert abs(float(g_mm[0])) < 1e-3 < abs(float(g_ns[0]))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_losses_are_finite_at_extreme_logits(name):
    loss = losses.get(name)
    big = jnp.array([1e4, -1e4], jnp.float32)
    for value in (loss.d(big, -big), loss.d(-big, big), loss.g(big), loss.g(-big)):
        assert np.isfinite(float(value))
    grads = jax.grad(lambda r, f: loss.d(r, f), argnums=(0, 1))(big, -big)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_bce_asymptotes():
    # D certain and right: loss ~ 0; G's non-saturating loss ~ |logit| when D is certain.
    assert float(losses.non_saturating.d(jnp.array([50.0]), jnp.array([-50.0]))) < 1e-20
    np.testing.assert_allclose(losses.non_saturating.g(jnp.array([-1e4])), 1e4, rtol=1e-6)


def test_get_unknown_and_custom():
    with pytest.raises(ValueError, match="hinge"):
        losses.get("nope")
    custom = losses.AdversarialLoss(d=lambda r, f: jnp.mean(f - r), g=lambda f: -jnp.mean(f))
    assert losses.get(custom) is custom


def _linear_d(w):
    return lambda x: jnp.sum((x * w).reshape(x.shape[0], -1), axis=1)


def test_gradient_penalty_linear_d_analytic():
    w = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 3, 2))
    real = jax.random.normal(jax.random.PRNGKey(1), (5, 3, 3, 2))
    fake = jax.random.normal(jax.random.PRNGKey(2), (5, 3, 3, 2))
    gp = losses.gradient_penalty(_linear_d(w), real, fake, jax.random.PRNGKey(3))
    np.testing.assert_allclose(gp, (np.linalg.norm(np.asarray(w)) - 1.0) ** 2, rtol=1e-5)
    r1 = losses.r1_penalty(_linear_d(w), real)
    np.testing.assert_allclose(r1, np.sum(np.asarray(w) ** 2), rtol=1e-5)


def test_gradient_penalty_quadratic_d_uses_interpolates():
    # D(x) = 0.5 ||x||^2 has grad x, so the penalty is E[(||x_hat|| - 1)^2] at the
    # interpolates x_hat = eps * real + (1 - eps) * fake that the key selects.
    d_fn = lambda x: 0.5 * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)
    real = np.random.default_rng(0).normal(size=(6, 2, 2, 1)).astype(np.float32)
    fake = np.random.default_rng(1).normal(size=(6, 2, 2, 1)).astype(np.float32)
    key = jax.random.PRNGKey(7)
    eps = np.asarray(jax.random.uniform(key, (6, 1, 1, 1)))
    x_hat = eps * real + (1 - eps) * fake
    want = np.mean((np.linalg.norm(x_hat.reshape(6, -1), axis=1) - 1.0) ** 2)
    np.testing.assert_allclose(losses.gradient_penalty(d_fn, real, fake, key), want, rtol=1e-5)


def test_r1_matches_finite_differences():
    w = np.random.default_rng(3).normal(size=(1, 2, 2, 1))
    d_np = lambda x: np.sum(np.tanh(x * w).reshape(x.shape[0], -1) ** 2, axis=1)
    d_fn = lambda x: jnp.sum(jnp.tanh(x * w).reshape(x.shape[0], -1) ** 2, axis=1)
    x = np.random.default_rng(4).normal(size=(3, 2, 2, 1))
    h, grads = 1e-6, np.zeros_like(x)
    for idx in np.ndindex(*x.shape[1:]):
        e = np.zeros_like(x)
        e[(slice(None),) + idx] = h
        grads[(slice(None),) + idx] = (d_np(x + e) - d_np(x - e)) / (2 * h)
    want = np.mean(np.sum(grads.reshape(3, -1) ** 2, axis=1))
    np.testing.assert_allclose(losses.r1_penalty(d_fn, x.astype(np.float32)), want, rtol=1e-4)
