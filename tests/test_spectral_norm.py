"""Spectral normalisation through flax.linen.SpectralNorm, as the models use it."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from gan_jax.models import resnet
from gan_jax.models.layers import SPECTRAL, spectral


class _One(nn.Module):
    layer: nn.Module

    @nn.compact
    def __call__(self, x, train: bool):
        return spectral(self.layer)(x, update_stats=train)


def _init(module, x, scale=30.0):
    # Flax's init stores the weight divided by its first estimate of sigma: scaled here, so
    # the tests normalise a weight whose largest singular value is far from 1.
    variables = module.init(jax.random.PRNGKey(0), x, train=False)
    return {**variables, "params": jax.tree.map(lambda w: w * scale, variables["params"])}


def _iterate(module, x, n):
    """``n`` training calls, each one power iteration; returns the variables."""
    variables = _init(module, x)
    call = jax.jit(lambda v: module.apply(v, x, train=True, mutable=[SPECTRAL])[1])
    for _ in range(n):
        variables = {**variables, **call(variables)}
    return variables


def _top_singular_value(matrix):
    return np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)[0]


def test_a_normalised_dense_weight_has_largest_singular_value_one():
    # The layer's own output on the identity is its normalised weight, W / sigma.
    module = _One(nn.Dense(24, use_bias=False))
    eye = jnp.eye(40)
    variables = _iterate(module, eye, 60)
    raw = variables["params"]["layer"]["kernel"]
    assert _top_singular_value(raw) > 10  # Far from 1 before normalising.
    w_bar = module.apply(variables, eye, train=False)
    assert abs(_top_singular_value(w_bar) - 1.0) < 1e-3


def test_a_normalised_conv_kernel_is_the_kernel_over_its_matrix_norm():
    module = _One(nn.Conv(16, (3, 3), padding="SAME", use_bias=False))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 5))
    variables = _iterate(module, x, 60)
    kernel = variables["params"]["layer"]["kernel"]
    sigma = _top_singular_value(np.asarray(kernel).reshape(-1, 16))  # PyTorch's reshape too.
    assert sigma > 10
    got = module.apply(variables, x, train=False)
    want = lax.conv_general_dilated(x, kernel / sigma, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5)
    stored = variables[SPECTRAL]["SpectralNorm_0"]["layer/kernel/sigma"]
    assert abs(float(stored) / sigma - 1.0) < 1e-3


def test_one_power_iteration_is_not_enough():
    # Guard on the two tests above: they pass because the vectors converged.
    module = _One(nn.Dense(24, use_bias=False))
    eye = jnp.eye(40)
    variables = _init(module, eye)
    assert abs(_top_singular_value(module.apply(variables, eye, train=False)) - 1.0) > 1e-3


def test_vectors_change_in_training_and_not_in_evaluation():
    D = resnet.Discriminator(resolution=32, width=16, num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
    y = jnp.arange(4)
    variables = D.init(jax.random.PRNGKey(1), x, y, train=False)
    params = {"params": variables["params"]}
    out_eval, kept = D.apply(variables, x, y, train=False, mutable=[SPECTRAL])
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(variables[SPECTRAL]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(out_eval, D.apply(variables, x, y, train=False))
    _, moved = D.apply(variables, x, y, train=True, mutable=[SPECTRAL])
    u_moved = [not np.array_equal(a, b) for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(moved)[0], jax.tree.leaves(variables[SPECTRAL]))
        if jax.tree_util.keystr(path).endswith("/u']")]
    # Every u (D has 12 normalised weights: 10 convs, the logit and the class embedding).
    assert all(u_moved) and len(u_moved) == 12
    assert jax.tree.structure(params) != jax.tree.structure(variables)  # Its own collection.


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_wgan_gp_resnet_has_no_spectral_collection(spectral_norm):
    D = resnet.Discriminator(resolution=32, width=16, spectral_norm=spectral_norm)
    variables = D.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)), train=False)
    assert (SPECTRAL in variables) == spectral_norm
