"""Sharded and pmapped steps on four fake CPU devices (set in conftest) against one device."""
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gan_jax import losses, parallel, steps, trainer
from gan_jax import state as state_lib
from gan_jax.data import augment, device
from gan_jax.errors import ConfigError
from gan_jax.models import dcgan
from tests.helpers import load_config

SHAPE = (28, 28, 1)
TX = optax.adam(2e-4, b1=0.5)


def _models(axis_name=None):
    return (dcgan.Generator(resolution=28, width=8, channels=1, z_dim=16, axis_name=axis_name),
            dcgan.Discriminator(resolution=28, width=8, axis_name=axis_name))


def _create(G, D):
    return lambda key: state_lib.create(key, G, D, g_tx=TX, d_tx=TX, image_shape=SHAPE)


def _batches(n=3, rows=16):
    return [jax.random.randint(jax.random.PRNGKey(i), (rows, *SHAPE), 0, 256).astype(jnp.uint8)
            for i in range(n)]


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        # float32 rounding of reductions split over devices: about 2e-7 here.
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def single_device_run():
    assert jax.device_count() == 4
    G, D = _models()
    st = jax.jit(_create(G, D))(jax.random.PRNGKey(0))
    step = jax.jit(steps.make_train_step(G, D, n_dis=2))
    for b in _batches():
        st, _ = step(st, b)
    return st


def test_jit_sharded_step_matches_one_device(single_device_run):
    G, D = _models()
    mesh = parallel.make_mesh()
    st = parallel.create_state(_create(G, D), jax.random.PRNGKey(0), mesh)
    for leaf in jax.tree.leaves(st):  # Built in place, replicated: what the design says.
        assert leaf.sharding == NamedSharding(mesh, P()) and leaf.sharding.is_fully_replicated
    step = parallel.shard_step(steps.make_train_step(G, D, n_dis=2), mesh)
    for b in _batches():
        b = jax.device_put(b, parallel.batch_sharded(mesh))
        assert len(b.addressable_shards) == 4 and b.addressable_shards[0].data.shape[0] == 4
        st, m = step(st, b)
    assert m["d_loss"].sharding.is_fully_replicated
    assert int(st.step) == 3
    _close(single_device_run, st)


def test_pmap_step_with_synced_batchnorm_matches_one_device(single_device_run):
    G, D = _models(axis_name=parallel.AXIS)
    st = parallel.replicate(jax.jit(_create(*_models()))(jax.random.PRNGKey(0)))
    step = parallel.pmap_step(steps.make_train_step(G, D, n_dis=2, axis_name=parallel.AXIS))
    for b in _batches():
        st, m = step(st, parallel.split_for_pmap(b, 4))
    assert m["d_loss"].shape == (4,) and len(set(np.asarray(m["d_loss"]).tolist())) == 1
    _close(single_device_run, parallel.unreplicate(st))


def test_unsynced_batchnorm_would_differ(single_device_run):
    # Guard on the test above: without the axis name BatchNorm sees only a quarter batch.
    G, D = _models()
    st = parallel.replicate(jax.jit(_create(G, D))(jax.random.PRNGKey(0)))
    step = parallel.pmap_step(steps.make_train_step(G, D, n_dis=2, axis_name=parallel.AXIS))
    for b in _batches():
        st, _ = step(st, parallel.split_for_pmap(b, 4))
    with pytest.raises(AssertionError):
        _close(single_device_run, parallel.unreplicate(st))


def test_pmap_augmentation_and_gradient_penalty_draw_as_one_device_would():
    # Each device takes its images' share of the global batch's draws, rather than every
    # device repeating one draw (shifts, colours, cutouts, interpolation weights).
    kw = dict(augment=augment.make("color,translation,cutout"), d_penalty=losses.penalty("gp", 1.0))
    G, D = _models()
    one = jax.jit(_create(G, D))(jax.random.PRNGKey(0))
    step = jax.jit(steps.make_train_step(G, D, **kw))
    Gp, Dp = _models(axis_name=parallel.AXIS)
    st = parallel.replicate(one)
    pstep = parallel.pmap_step(steps.make_train_step(Gp, Dp, axis_name=parallel.AXIS, **kw))
    for b in _batches(2):
        one, m1 = step(one, b)
        st, m4 = pstep(st, parallel.split_for_pmap(b, 4))
    np.testing.assert_allclose(m4["d_penalty"][0], m1["d_penalty"], rtol=1e-4)
    _close(one, parallel.unreplicate(st))


def test_unreplicate_takes_the_first_devices_copy_without_a_collective():
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.asarray(7)}
    stacked = parallel.replicate(tree)
    from_pmap = jax.pmap(lambda t: jax.tree.map(lambda x: x + 1, t))(stacked)
    first = jax.local_devices()[0]
    for got, want in [(parallel.unreplicate(stacked), tree),
                      (parallel.unreplicate(from_pmap), jax.tree.map(lambda x: x + 1, tree))]:
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert g.shape == w.shape
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
            # x[0] gave an array on all four devices, computed by an all-reduce.
            assert g.sharding.device_set == {first}


class _StepOnly(flax.struct.PyTreeNode):
    step: jax.Array


@pytest.mark.parametrize("order", ["shuffled", "sequential"])
def test_sharded_device_data_draws_each_shard_once_per_epoch(order):
    mesh = parallel.make_mesh()
    n, rows = 40, 8  # 10 images per shard, 2 per shard per step
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, 2, 2, 1), np.uint8)
    seen = []
    fake_step = lambda state, batch: (state, batch[:, 0, 0, 0])
    draw = device.make_data_step(fake_step, rows_per_step=rows, num_examples=n,
                                 key=jax.random.PRNGKey(3), mesh=mesh, order=order)
    on_device = device.put(images, mesh=mesh)
    f = jax.jit(lambda s, x: draw(s, x)[1])
    for t in range(5):
        seen.append(np.asarray(f(_StepOnly(jnp.int32(t)), on_device)))
    seen = np.stack(seen)  # [step, rows]; rows 2k, 2k+1 come from shard k
    assert sorted(seen.reshape(-1).tolist()) == list(range(n))
    for k in range(4):
        assert sorted(seen[:, 2 * k:2 * k + 2].reshape(-1).tolist()) == list(range(10 * k,
                                                                                 10 * k + 10))
    in_order = seen[:, :2].reshape(-1).tolist() == list(range(10))
    assert in_order == (order == "sequential")
    with pytest.raises(ValueError, match="order must be one of"):
        device.make_data_step(fake_step, rows_per_step=rows, num_examples=n,
                              key=jax.random.PRNGKey(3), mesh=mesh, order="random")


@pytest.mark.parametrize("unroll", [None, False])  # Unrolled on CPU; a loop, as on a GPU.
@pytest.mark.parametrize("layout", ["one device", "mesh", "pmap"])
def test_k_steps_draw_the_batches_of_k_single_steps(layout, unroll):
    n, rows, k = 40, 8, 3
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, 2, 2, 1), np.uint8)
    fake_step = lambda state, batch: (state.replace(step=state.step + 1), batch[:, 0, 0, 0])
    kw = dict(num_examples=n, key=jax.random.PRNGKey(3))
    if layout == "pmap":
        kw.update(rows_per_step=rows // 4, axis_name=parallel.AXIS)
        on_device = device.put(images, pmap_devices=jax.local_devices())
        run = lambda f: jax.pmap(f, axis_name=parallel.AXIS)
        start = parallel.replicate(_StepOnly(jnp.int32(5)))
    else:
        mesh = parallel.make_mesh() if layout == "mesh" else None
        kw.update(rows_per_step=rows, mesh=mesh)
        on_device = device.put(images, mesh=mesh)
        run = jax.jit
        start = _StepOnly(jnp.int32(5))
    multi = run(device.make_data_steps(fake_step, k, unroll=unroll, **kw))
    one = run(device.make_data_step(fake_step, **kw))
    end, drawn = multi(start, on_device)
    state, expected = start, []
    for _ in range(k):
        state, batch = one(state, on_device)
        expected.append(np.asarray(batch))
    # pmap stacks devices first: [device, step, rows] against [device, rows] per step.
    np.testing.assert_array_equal(np.asarray(drawn), np.stack(expected, axis=-2))
    np.testing.assert_array_equal(np.asarray(end.step), np.asarray(state.step))
    assert len(np.unique(np.asarray(drawn))) > rows  # Not the same batch k times.


def test_bad_layouts_fail_before_compiling(mnist_dir, tmp_path):
    mesh = parallel.make_mesh()
    with pytest.raises(ConfigError, match="multiple of 4"):
        parallel.check_batch(30, mesh)
    with pytest.raises(ConfigError, match="num_devices=8 does not match the 4 devices"):
        parallel.make_mesh(8)
    with pytest.raises(ConfigError, match="coordinator"):
        parallel.initialize("", 2, 0)
    with pytest.raises(ConfigError, match="process_id"):
        parallel.initialize("127.0.0.1:1", 2, 5)
    c = load_config("mnist_mlp", "smoke")
    c.dataset.data_dir = mnist_dir
    c.batch_size = 30
    with pytest.raises(ConfigError, match="30 images does not divide evenly over 4"):
        trainer.train_and_evaluate(c, tmp_path)
    assert not (tmp_path / "config.json").exists()
    c.batch_size, c.parallel.mode = 32, "pmap"
    c.parallel.num_devices = 3
    with pytest.raises(ConfigError, match="32 images does not divide evenly over 3"):
        trainer.train_and_evaluate(c, tmp_path)
    # A pmap on 1 of the 4 devices holds all 100 images on it; on all 4, 25 each.
    kw = dict(rows_per_step=64, num_examples=100, key=jax.random.PRNGKey(0),
              axis_name=parallel.AXIS)
    device.make_data_steps(lambda s, b: (s, {}), 1, pmap_devices=1, **kw)
    with pytest.raises(ConfigError, match="each of the 4 shards has only 25 .*batch_size"):
        device.make_data_steps(lambda s, b: (s, {}), 1, **kw)


@pytest.mark.parametrize("share_fake", [False, True])
def test_each_device_does_its_share_of_the_generators_work(share_fake):
    # Under jit over 4 devices each device must run a quarter of the batch. Left to itself,
    # XLA runs G on the whole latent draw on every device; the engine lays the draw out
    # like the real batch. (An MLP: it compiles fast, and its G and D cost about the same.)
    from gan_jax import models
    from gan_jax.trainer import config as config_lib
    from gan_jax.trainer import engine as engine_lib

    class LatentsLeftToXLA(engine_lib.Engine):
        def make_step(self, G, D):
            return engine_lib.make_step(self.config, G, D)

    def per_device_flops(num_devices, engine_type=engine_lib.Engine):
        config = config_lib.defaults()
        config.model.g_width, config.model.d_width = 64, 64  # The MLP.
        config.batch_size, config.share_fake, config.steps_per_dispatch = 16, share_fake, 1
        config.parallel.num_devices = num_devices
        config = config_lib.validate(config)
        G, D = models.build(config.model, SHAPE)
        engine = engine_type(config, G=G, D=D, image_shape=SHAPE,
                             init_key=jax.random.PRNGKey(0), data_key=jax.random.PRNGKey(1),
                             data=np.zeros((64, *SHAPE), np.uint8))
        engine.compile(engine.new_state())
        return engine.compiled.cost_analysis()["flops"]

    # Measured: 34-35% of the one-device FLOPs per device (a quarter of the batch work plus
    # the optimizer's update, which every device runs whole), 86-88% left to XLA.
    whole = per_device_flops(1)
    assert per_device_flops(4) < 0.4 * whole
    assert per_device_flops(4, LatentsLeftToXLA) > 0.6 * whole  # What XLA does alone.
