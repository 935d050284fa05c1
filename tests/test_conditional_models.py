"""SNGAN ResNets and the conditional models: shapes at every resolution, and that the class
reaches G's output (conditional BatchNorm) and D's (projection)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import models, state as state_lib
from gan_jax.models import dcgan, layers, mlp, resnet
from gan_jax.trainer.config import defaults

KEY = jax.random.PRNGKey(0)
Y = jnp.array([0, 3, 9, 3], jnp.int32)


def _init(module, *args):
    # Jitted: eager Flax dispatches (and compiles) op by op, which is slow on CPU.
    return jax.jit(lambda *a: module.init(KEY, *a, train=False))(*args)


def _apply(module, variables, *args):
    return jax.jit(lambda v, *a: module.apply(v, *a, train=False))(variables, *args)


def _shapes(G, D, res, channels, classes):
    y = {"y": Y} if classes else {}
    z = jnp.zeros((4, G.z_dim))
    gv = jax.eval_shape(lambda: G.init(KEY, z, train=False, **y))
    x = jax.eval_shape(lambda v: G.apply(v, z, train=False, **y), gv)
    dv = jax.eval_shape(lambda: D.init(KEY, jnp.zeros((4, res, res, channels)), train=False, **y))
    logits = jax.eval_shape(lambda v, x: D.apply(v, x, train=False, **y), dv, x)
    return x.shape, logits.shape, gv, dv


@pytest.mark.parametrize("classes", [0, 10])
@pytest.mark.parametrize("name,res", [("resnet", 28), ("resnet", 32), ("resnet", 48),
                                      ("resnet", 64), ("dcgan", 28), ("dcgan", 32),
                                      ("dcgan", 64), ("mlp", 28)])
def test_every_model_gives_images_and_logits_of_the_right_shape(name, res, classes):
    if name == "mlp" and classes:
        pytest.skip("the MLP has no conditional form (tested below)")
    c = defaults().model
    c.name, c.conditional, c.z_dim = name, bool(classes), 32
    c.g_width, c.d_width = (64, 64) if res >= 48 else (16, 16)
    channels = 1 if res == 28 else 3
    G, D = models.build(c, (res, res, channels), num_classes=classes or None)
    assert models.num_classes(G) == models.num_classes(D) == classes
    x_shape, logit_shape, gv, dv = _shapes(G, D, res, channels, classes)
    assert x_shape == (4, res, res, channels) and logit_shape == (4,)
    paths = lambda v: [jax.tree_util.keystr(p)
                       for p, _ in jax.tree_util.tree_flatten_with_path(v["params"])[0]]
    assert any("Embed_0" in p for p in paths(dv)) == bool(classes)  # The projection.
    assert any("embedding" in p for p in paths(gv)) == bool(classes)  # Conditional BN.


def test_sngan32_has_the_published_parameter_counts():
    G, D = resnet.Generator(resolution=32), resnet.Discriminator(resolution=32)
    _, _, gv, dv = _shapes(G, D, 32, 3, 0)
    # Mimicry's SNGAN-32 (and PyTorch-StudioGAN's): 4.28M in G, 1.05M in D.
    assert state_lib.param_count(gv["params"]) == 4_276_739
    assert state_lib.param_count(dv["params"]) == 1_053_825


def _perturbed(variables, key):
    """Parameters moved off their initial values, so class embeddings initialised to one
    (scales) and zero (shifts) differ between classes."""
    leaves, tree = jax.tree.flatten(variables["params"])
    keys = jax.random.split(key, len(leaves))
    noisy = [p + 0.3 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    return {**variables, "params": jax.tree.unflatten(tree, noisy)}


@pytest.mark.parametrize("G", [resnet.Generator(resolution=32, width=16, z_dim=8, num_classes=10),
                               dcgan.Generator(resolution=28, width=8, z_dim=8, channels=1,
                                               num_classes=10)])
def test_conditional_batchnorm_makes_g_depend_on_the_class(G):
    z = jnp.tile(jax.random.normal(KEY, (1, 8)), (4, 1))  # One latent, four classes.
    gv = _perturbed(_init(G, z, Y), jax.random.PRNGKey(1))
    x = np.asarray(_apply(G, gv, z, Y))
    assert np.abs(x[1] - x[3]).max() == 0.0  # Class 3 twice: the same image.
    assert np.abs(x[0] - x[1]).max() > 1e-2 and np.abs(x[1] - x[2]).max() > 1e-2
    unconditional = G.clone(num_classes=0)
    xu = np.asarray(_apply(unconditional, _init(unconditional, z), z))
    assert np.abs(xu - xu[:1]).max() == 0.0  # Guard: without the class, one latent, one image.


@pytest.mark.parametrize("D", [resnet.Discriminator(resolution=32, width=16, num_classes=10),
                               dcgan.Discriminator(resolution=28, width=8, num_classes=10),
                               dcgan.Discriminator(resolution=28, width=8, num_classes=10,
                                                   spectral_norm=True)])
def test_the_projection_makes_d_depend_on_the_class(D):
    res = D.resolution
    x = jnp.tile(jax.random.normal(KEY, (1, res, res, 1 if res == 28 else 3)), (4, 1, 1, 1))
    dv = _init(D, x, Y)
    logits = np.asarray(_apply(D, dv, x, Y))
    assert logits[1] == logits[3]
    assert abs(logits[0] - logits[1]) > 1e-4 and abs(logits[1] - logits[2]) > 1e-4
    # The class enters only through the projection <embed(y), h>: with the embedding zeroed
    # every class scores the same.
    flat = jax.tree_util.tree_flatten_with_path(dv["params"])[0]
    zeroed = jax.tree.unflatten(jax.tree.structure(dv["params"]), [
        jnp.zeros_like(v) if "Embed_0" in jax.tree_util.keystr(p) else v for p, v in flat])
    same = np.asarray(_apply(D, {**dv, "params": zeroed}, x, Y))
    np.testing.assert_allclose(same, same[0], rtol=1e-6)


def test_conditional_configs_need_labels_and_a_conditional_model():
    from gan_jax.errors import ConfigError
    c = defaults().model
    c.name, c.conditional = "dcgan", True
    with pytest.raises(ConfigError, match="needs labels"):
        models.build(c, (28, 28, 1), num_classes=None)
    c.name = "mlp"
    with pytest.raises(ConfigError, match="no conditional form"):
        models.build(c, (28, 28, 1), num_classes=10)
    assert models.num_classes(mlp.Generator()) == 0


def test_class_input_appends_the_one_hot_to_z():
    z = jnp.ones((3, 4))
    out = np.asarray(layers.with_class(z, jnp.array([0, 2, 1]), 3))
    np.testing.assert_array_equal(out[:, :4], 1.0)
    np.testing.assert_array_equal(out[:, 4:], np.eye(3)[[0, 2, 1]])
    assert layers.with_class(z, None, 0) is z and layers.with_class(z, Y, 10, False) is z
    G = dcgan.Generator(resolution=28, width=8, channels=1, z_dim=8, num_classes=10)
    sizes = [state_lib.param_count(jax.eval_shape(lambda: g.init(
        KEY, jnp.zeros((2, 8)), Y[:2], train=False))["params"])
        for g in (G, G.clone(class_input=True))]
    assert sizes[1] - sizes[0] == 10 * 7 * 7 * 16  # One Dense row per class.
