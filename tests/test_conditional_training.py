"""Conditional training through the step: jit over 4 fake devices and pmap equal one device,
the fake classes follow the config, and a resume with spectral-norm state and labels is
bit-exact."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import parallel, steps
from gan_jax import state as state_lib
from gan_jax.models import dcgan, resnet
from gan_jax.models.layers import SPECTRAL
from tests.helpers import assert_trees_equal, smoke_config, straight_and_resumed
from tests.test_parallel import _close

SHAPE = (28, 28, 1)
# SGD, not Adam: the ResNet G's conv biases feed BatchNorm, so their exact gradient is 0, and
# Adam would turn float32 rounding noise in it into steps of +-lr that differ by layout.
TX = optax.sgd(0.05)


def _models(kind, axis_name=None):
    if kind == "resnet":
        return (resnet.Generator(resolution=28, width=8, channels=1, z_dim=8, num_classes=10,
                                 axis_name=axis_name),
                resnet.Discriminator(resolution=28, width=8, num_classes=10))
    return (dcgan.Generator(resolution=28, width=8, channels=1, z_dim=8, num_classes=10,
                            axis_name=axis_name),
            dcgan.Discriminator(resolution=28, width=8, num_classes=10, axis_name=axis_name))


def _create(G, D):
    return lambda key: state_lib.create(key, G, D, g_tx=TX, d_tx=TX, image_shape=SHAPE)


def _batches(n=2, rows=16):
    return [{"image": jax.random.randint(jax.random.PRNGKey(i), (rows, *SHAPE), 0, 256
                                         ).astype(jnp.uint8),
             "label": jax.random.randint(jax.random.PRNGKey(100 + i), (rows,), 0, 10)}
            for i in range(n)]


KW = dict(loss="hinge", n_dis=2, class_probs=np.linspace(1.0, 2.0, 10) / 15.0)


@pytest.fixture(scope="module", params=["resnet", "dcgan"])
def one_device(request):
    assert jax.device_count() == 4
    G, D = _models(request.param)
    st = jax.jit(_create(G, D))(jax.random.PRNGKey(0))
    step = jax.jit(steps.make_train_step(G, D, **KW))
    for b in _batches():
        st, _ = step(st, b)
    return request.param, st


def test_conditional_jit_on_four_devices_matches_one_device(one_device):
    kind, want = one_device
    G, D = _models(kind)
    mesh = parallel.make_mesh()
    st = parallel.create_state(_create(G, D), jax.random.PRNGKey(0), mesh)
    step = parallel.shard_step(steps.make_train_step(
        G, D, batch_sharding=parallel.batch_sharded(mesh), **KW), mesh)
    for b in _batches():
        st, _ = step(st, jax.device_put(b, parallel.batch_sharded(mesh)))
    _close(want, st)
    if kind == "resnet":  # The power-iteration vectors moved, identically on every device.
        init = jax.jit(_create(G, D))(jax.random.PRNGKey(0))
        u = lambda s: jax.tree.leaves(s.d_vars[SPECTRAL])
        assert all(not np.array_equal(a, b) for a, b in zip(u(st), u(init)))
        for leaf in u(st):
            shards = [np.asarray(s.data) for s in leaf.addressable_shards]
            assert all(np.array_equal(shards[0], s) for s in shards[1:])


def test_conditional_pmap_matches_one_device(one_device):
    kind, want = one_device
    G, D = _models(kind, axis_name=parallel.AXIS)
    st = parallel.replicate(jax.jit(_create(*_models(kind)))(jax.random.PRNGKey(0)))
    step = parallel.pmap_step(steps.make_train_step(G, D, axis_name=parallel.AXIS, **KW))
    for b in _batches():
        st, _ = step(st, jax.tree.map(lambda a: parallel.split_for_pmap(a, 4), b))
    _close(want, parallel.unreplicate(st))


def test_the_labels_reach_d():
    # Guard on the equalities above: other labels give another D.
    G, D = _models("dcgan")
    st = jax.jit(_create(G, D))(jax.random.PRNGKey(0))
    step = jax.jit(steps.make_train_step(G, D, **KW))
    b = _batches(1)[0]
    a, _ = step(st, b)
    c, _ = step(st, {**b, "label": (b["label"] + 1) % 10})
    assert not np.allclose(a.d_params["ProjectionHead_0"]["Embed_0"]["embedding"],
                           c.d_params["ProjectionHead_0"]["Embed_0"]["embedding"])


def test_fake_classes_follow_class_probs_and_split_over_devices_as_one_draw():
    key = jax.random.PRNGKey(3)
    probs = np.array([0.7, 0.2, 0.1, 0.0], np.float32)
    y = np.asarray(steps.fake_labels(key, 20_000, 4, probs))
    np.testing.assert_allclose(np.bincount(y, minlength=4) / len(y), probs, atol=0.01)
    uniform = np.asarray(steps.fake_labels(key, 20_000, 4))
    np.testing.assert_allclose(np.bincount(uniform, minlength=4) / 20_000, 0.25, atol=0.01)
    per_device = jax.pmap(lambda _: steps.fake_labels(key, 5, 4, probs, axis_name="i"),
                          axis_name="i")(jnp.zeros(4))
    np.testing.assert_array_equal(np.asarray(per_device).ravel(),
                                  np.asarray(steps.fake_labels(key, 20, 4, probs)))
    assert steps.fake_labels(key, 5, 0) is None


def test_a_conditional_model_without_labels_is_refused():
    G, D = _models("dcgan")
    st = jax.jit(_create(G, D))(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="need labels"):
        steps.make_train_step(G, D)(st, _batches(1)[0]["image"])


def test_resume_with_spectral_norm_and_labels_is_bit_exact(mnist_dir, tmp_path):
    c = smoke_config(mnist_dir, "mnist_dcgan", num_steps=20, log_every=10, sample_every=20,
                     **{"checkpoint.every": 10, "model.name": "resnet", "model.conditional": True,
                        "model.spectral_norm": True, "model.fake_labels": "data",
                        "model.g_width": 8, "model.d_width": 8, "loss": "hinge", "n_dis": 2})
    a, b, info = straight_and_resumed(c, tmp_path, 10)
    assert info["num_classes"] == 10 and SPECTRAL in a.d_vars
    assert_trees_equal(a, b)  # Params, spectral vectors, BN statistics, Adam states, EMA.
