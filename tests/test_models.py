import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import state as state_lib
from gan_jax.models import dcgan, layers, mlp
from tests.reference_ops import upsample_dilated, upsample_phases

KEY = jax.random.PRNGKey(0)


def _init(module, x, train=False):
    # Jitted: eager Flax init dispatches (and compiles) op by op, which is slow on CPU.
    return jax.jit(lambda k, x: module.init(k, x, train=train))(KEY, x)


def _apply(module, variables, x, **kw):
    return jax.jit(lambda v, x: module.apply(v, x, **kw))(variables, x)


def test_mlp_is_the_seeds_model():
    G, D = mlp.Generator(), mlp.Discriminator()
    gv = _init(G, jnp.zeros((2, 100)))
    dv = _init(D, jnp.zeros((2, 28, 28, 1)))
    # Dense(100->256) + Dense(256->784); Dense(784->128) + Dense(128->1), all with biases.
    assert state_lib.param_count(gv) == 100 * 256 + 256 + 256 * 784 + 784
    assert state_lib.param_count(dv) == 784 * 128 + 128 + 128 + 1
    x = _apply(G, gv, jax.random.normal(KEY, (5, 100)) * 10)
    assert x.shape == (5, 28, 28, 1) and float(jnp.abs(x).max()) <= 1.0
    logits = _apply(D, dv, x)
    assert logits.shape == (5,)


def test_mlp_leaky_slope_is_0_01():
    G = mlp.Generator()
    gv = _init(G, jnp.zeros((1, 100)))
    _, inter = _apply(G, gv, -jnp.ones((1, 100)), capture_intermediates=True)
    dense0 = inter["intermediates"]["Dense_0"]["__call__"][0]
    h = _apply(G, gv, -jnp.ones((1, 100)))
    want = jnp.where(dense0 > 0, dense0, 0.01 * dense0)
    w1 = gv["params"]["Dense_1"]
    manual = jnp.tanh(want @ w1["kernel"] + w1["bias"]).reshape(1, 28, 28, 1)
    np.testing.assert_allclose(h, manual, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("res,c", [(28, 1), (32, 3), (64, 3)])
def test_dcgan_shapes_and_ranges(res, c):
    G = dcgan.Generator(resolution=res, width=8, channels=c)
    D = dcgan.Discriminator(resolution=res, width=8)
    gv = _init(G, jnp.zeros((2, 100)))
    dv = _init(D, jnp.zeros((2, res, res, c)))
    assert "batch_stats" in gv and "batch_stats" in dv
    x, _ = _apply(G, gv, jax.random.normal(KEY, (3, 100)) * 5, mutable=["batch_stats"])
    assert x.shape == (3, res, res, c) and float(jnp.abs(x).max()) <= 1.0
    assert _apply(D, dv, x, train=False).shape == (3,)


def test_dcgan64_matches_pytorch_dcgan_parameter_counts():
    # The PyTorch DCGAN example's netG / netD (no conv biases, affine BatchNorm).
    gv = _init(dcgan.Generator(resolution=64), jnp.zeros((2, 100)))
    dv = _init(dcgan.Discriminator(resolution=64), jnp.zeros((2, 64, 64, 3)))
    assert state_lib.param_count(gv["params"]) == 3_576_704
    assert state_lib.param_count(dv["params"]) == 2_765_568


def test_bfloat16_compute_float32_params():
    G = dcgan.Generator(resolution=32, width=8, dtype=jnp.bfloat16)
    D = dcgan.Discriminator(resolution=32, width=8, dtype=jnp.bfloat16)
    gv = _init(G, jnp.zeros((2, 100)))
    dv = _init(D, jnp.zeros((2, 32, 32, 3)))
    assert {x.dtype for x in jax.tree.leaves(gv)} == {jnp.dtype(jnp.float32)}
    x = _apply(G, gv, jnp.ones((2, 100)), train=False)
    assert x.dtype == jnp.bfloat16
    assert _apply(D, dv, x, train=False).dtype == jnp.bfloat16
    m = mlp.Generator(dtype=jnp.bfloat16)
    assert _apply(m, _init(m, jnp.zeros((1, 100))), jnp.ones((1, 100))).dtype == jnp.bfloat16


def test_bad_resolution_and_image_size():
    with pytest.raises(ValueError, match="resolutions"):
        _init(dcgan.Generator(resolution=48), jnp.zeros((2, 100)))
    with pytest.raises(ValueError, match="expected"):
        _init(dcgan.Discriminator(resolution=32), jnp.zeros((2, 28, 28, 1)))


# gan_jax's one form, then the two references.
_UPSAMPLES = (layers.upsample_conv_transpose, upsample_dilated, upsample_phases)


@pytest.mark.parametrize("shape", [(2, 7, 7, 5), (3, 4, 6, 1)])
def test_the_upsampling_forms_compute_one_function(shape):
    x = jax.random.normal(KEY, shape)
    k = jax.random.normal(jax.random.PRNGKey(1), (4, 4, shape[-1], 3))
    dy = jax.random.normal(jax.random.PRNGKey(2), (shape[0], 2 * shape[1], 2 * shape[2], 3))
    ref, *others = [jax.vjp(fn, x, k) for fn in _UPSAMPLES]
    assert ref[0].shape == dy.shape
    for y, vjp in others:
        np.testing.assert_allclose(ref[0], y, rtol=1e-5, atol=1e-5)
        for g_ref, g in zip(ref[1](dy), vjp(dy)):  # d/dx and d/dkernel
            np.testing.assert_allclose(g_ref, g, rtol=1e-4, atol=1e-4)


def test_the_transposed_conv_has_second_derivatives():
    # Its VJP is hand-written: the gradient of a gradient must still be autodiff's.
    x = jax.random.normal(KEY, (2, 3, 3, 2))
    k = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 2, 3))

    def grad_norm_grad(fn):
        g = jax.grad(lambda k: jnp.sum(jnp.sin(fn(x, k))))
        return jax.grad(lambda k: jnp.sum(g(k) ** 2))(k)

    np.testing.assert_allclose(grad_norm_grad(layers.upsample_conv_transpose),
                               grad_norm_grad(upsample_dilated), rtol=1e-4, atol=1e-4)


def test_upconv_matches_pytorch_conv_transpose_semantics():
    # PyTorch's ConvTranspose2d(k=4, s=2, p=1) sends input pixel i to outputs 2i-1 .. 2i+2;
    # an impulse at (1, 1) must write the whole 4x4 kernel (here flipped, as lax's
    # transposed convolution is a correlation: PyTorch weights load as w[::-1, ::-1]).
    x = jnp.zeros((1, 3, 3, 1)).at[0, 1, 1, 0].set(1.0)
    k = jnp.arange(1.0, 17.0).reshape(4, 4, 1, 1)
    for fn in _UPSAMPLES:
        y = np.asarray(fn(x, k))[0, :, :, 0]
        assert y.shape == (6, 6)
        np.testing.assert_array_equal(y[1:5, 1:5], np.asarray(k)[::-1, ::-1, 0, 0])
        assert y.sum() == np.asarray(k).sum()


def test_sn_dcgan_discriminator_biases():
    # Without biases an SN-DCGAN D (no BatchNorm) is positively homogeneous: D(2x) = 2 D(x),
    # so it cannot place a threshold; model.d_bias gives every layer a bias.
    x = jax.random.uniform(KEY, (4, 28, 28, 1), minval=-1.0, maxval=1.0)
    out = {}
    for bias in (False, True):
        D = dcgan.Discriminator(resolution=28, width=8, spectral_norm=True, bias=bias)
        dv = _init(D, x)
        biases = [k for k, _ in jax.tree_util.tree_leaves_with_path(dv["params"])
                  if "bias" in jax.tree_util.keystr(k)]
        assert len(biases) == (3 if bias else 0)  # two convolutions and the head
        if bias:  # zero at init, as Flax's; make them count
            dv = jax.tree_util.tree_map_with_path(
                lambda k, v: v + 0.3 if "bias" in jax.tree_util.keystr(k) else v, dv)
        out[bias] = (_apply(D, dv, 2 * x, train=False), _apply(D, dv, x, train=False))
    np.testing.assert_allclose(out[False][0], 2 * out[False][1], rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(out[True][0] - 2 * out[True][1]).max()) > 1e-2
    from gan_jax import models
    from gan_jax.errors import ConfigError
    from gan_jax.trainer.config import defaults
    c = defaults().model
    c.name, c.d_bias = "resnet", True
    with pytest.raises(ConfigError, match="d_bias applies to model.name 'dcgan'"):
        models.build(c, (32, 32, 3))
    c.name, c.spectral_norm = "dcgan", True
    _, D = models.build(c, (28, 28, 1))
    assert D.bias and D.spectral_norm
