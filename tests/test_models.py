import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import state as state_lib
from gan_jax.models import batchnorm, dcgan, layers, mlp
from tests.helpers import assert_trees_equal

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


_UPSAMPLES = (layers.upsample_conv_transpose, layers.upsample_dilated, layers.upsample_phases)


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
                               grad_norm_grad(layers.upsample_dilated), rtol=1e-4, atol=1e-4)


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


def test_config_chooses_the_upsampling_and_refuses_an_unknown_one():
    from gan_jax import config as config_lib
    from gan_jax import models
    c = config_lib.defaults()
    c.model.name = "dcgan"
    assert models.build(c.model, (28, 28, 1))[0].upsample == "auto"
    c.model.upsample = "transpose"
    assert models.build(c.model, (28, 28, 1))[0].upsample == "transpose"
    c.model.upsample = "bilinear"
    with pytest.raises(ValueError, match="config.model.upsample must be"):
        models.build(c.model, (28, 28, 1))
    c.model.upsample = "auto"
    assert {m.bn_grad for m in models.build(c.model, (28, 28, 1))} == {"autodiff"}
    c.model.bn_grad = "closed_form"
    assert {m.bn_grad for m in models.build(c.model, (28, 28, 1))} == {"closed_form"}
    c.model.bn_grad = "analytic"
    with pytest.raises(ValueError, match="config.model.bn_grad must be one of"):
        models.build(c.model, (28, 28, 1))


@pytest.mark.parametrize("dtype,groups", [(jnp.float32, 2), (jnp.bfloat16, 2), (jnp.float32, 3)])
def test_one_grouped_discriminator_call_equals_one_call_per_batch(dtype, groups):
    # D scores real and fake in one call (steps' d_joint_pass): its BatchNorm must give each
    # interleaved batch its own statistics, and update the running ones batch after batch.
    D = dcgan.Discriminator(resolution=32, width=8, dtype=dtype)
    v = _init(D, jnp.zeros((2, 32, 32, 3)))
    v = {**v, "batch_stats": jax.tree.map(lambda s: s + 0.3, v["batch_stats"])}
    xs = [jax.random.normal(jax.random.PRNGKey(i), (5, 32, 32, 3)) * (i + 1) + i
          for i in range(groups)]

    def apart(params, xs):
        stats, outs = v["batch_stats"], []
        for x in xs:
            out, new = D.apply({"params": params, "batch_stats": stats}, x, train=True,
                               mutable=["batch_stats"])
            stats, outs = new["batch_stats"], outs + [out.astype(jnp.float32)]
        return jnp.stack(outs, 1), stats

    def together(params, xs, g=groups):
        x = jnp.stack(xs, 1).reshape(-1, *xs[0].shape[1:])
        out, new = D.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                           groups=g, mutable=["batch_stats"])
        return out.astype(jnp.float32).reshape(-1, groups), new["batch_stats"]

    tol = dict(rtol=2e-2, atol=2e-2) if dtype == jnp.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    (a, sa), (b, sb) = jax.jit(apart)(v["params"], xs), jax.jit(together)(v["params"], xs)
    np.testing.assert_allclose(a, b, **tol)
    stats_tol = dict(rtol=1e-3, atol=1e-5) if dtype == jnp.bfloat16 else dict(rtol=1e-5,
                                                                              atol=1e-6)
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
        np.testing.assert_allclose(x, y, **stats_tol)
    loss = lambda f: lambda p: jnp.sum(jnp.sin(f(p, xs)[0]))
    # Gradients in float32 only: bfloat16 weight gradients are long sums rounded to 8 bits,
    # which one call and two calls round differently (up to 8% of a tensor's largest entry).
    if dtype == jnp.float32:
        for x, y in zip(jax.tree.leaves(jax.jit(jax.grad(loss(apart)))(v["params"])),
                        jax.tree.leaves(jax.jit(jax.grad(loss(together)))(v["params"]))):
            np.testing.assert_allclose(x, y, **tol)
    # Guard: one set of statistics over all the batches is another function.
    mixed, _ = jax.jit(lambda p, xs: together(p, xs, g=1))(v["params"], xs)
    assert not np.allclose(a, mixed, rtol=1e-2, atol=1e-2)
    # Outside training the running averages are used and the groups do not matter.
    x = jnp.concatenate(xs)
    np.testing.assert_array_equal(_apply(D, v, x, train=False),
                                  _apply(D, v, x, train=False, groups=groups))
    with pytest.raises(ValueError, match="not a multiple of 2"):
        D.apply(v, jnp.zeros((3, 32, 32, 3)), train=True, groups=2, mutable=["batch_stats"])


@pytest.mark.parametrize("dtype,groups", [(jnp.float32, 1), (jnp.float32, 3), (jnp.bfloat16, 2)])
def test_closed_form_batchnorm_gradient_equals_autodiff(dtype, groups):
    # Same forward (bit for bit) and running averages; first and second derivatives (R1 and
    # the gradient penalty differentiate D's gradient) to float rounding.
    x = jax.random.normal(KEY, (12, 5, 5, 7)) * 3 + 1
    out = {}
    for grad in batchnorm.BN_GRADS:
        bn = batchnorm.GroupedBatchNorm(groups, momentum=0.9, dtype=dtype, grad=grad)
        v = bn.init(KEY, x)
        p = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(KEY, a.shape), v["params"])

        def f(p, x, bn=bn, v=v):
            y, new = bn.apply({"params": p, "batch_stats": v["batch_stats"]}, x.astype(dtype),
                              mutable=["batch_stats"])
            y = y.astype(jnp.float32)
            return jnp.sum(jnp.sin(y) * jnp.arange(y.shape[-1])), new

        (loss, stats), g = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(p, x)
        g2 = jax.jit(jax.grad(lambda p, f=f: jnp.sum(jax.grad(lambda x: f(p, x)[0])(x) ** 2)))(p)
        out[grad] = (loss, stats, g, g2)
    a, b = out["autodiff"], out["closed_form"]
    assert_trees_equal(a[:2], b[:2])
    # bfloat16: autodiff rounds its intermediate gradients to 8 bits, the closed form does not.
    tol = 1e-2 if dtype == jnp.bfloat16 else 2e-6
    for u, w in zip(jax.tree.leaves(a[2:]), jax.tree.leaves(b[2:]), strict=True):
        u, w = np.asarray(u, np.float32), np.asarray(w, np.float32)
        np.testing.assert_allclose(w, u, rtol=0, atol=tol * np.abs(u).max())
    # Guard: the gradient is not trivially the same, the input's gradient is nonzero.
    assert np.abs(np.asarray(a[2][1], np.float32)).max() > 1e-2


def test_dcgan_with_closed_form_batchnorm_is_the_same_model():
    # Same parameter tree (checkpoints are interchangeable) and, in eval mode, the same
    # nn.BatchNorm on the running averages.
    x = jax.random.normal(KEY, (4, 32, 32, 3))
    D, Dc = (dcgan.Discriminator(resolution=32, width=8, bn_grad=g) for g in batchnorm.BN_GRADS)
    v, vc = _init(D, x), _init(Dc, x)
    assert jax.tree.structure(v) == jax.tree.structure(vc)
    assert_trees_equal(v, vc)
    assert_trees_equal(_apply(D, v, x, train=False), _apply(Dc, v, x, train=False))
    with pytest.raises(ValueError, match="grad must be one of"):
        dcgan.Discriminator(resolution=32, width=8, bn_grad="x").apply(
            v, x, train=True, mutable=["batch_stats"])
