import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gan_jax import components, losses
from gan_jax import config as config_lib
from gan_jax import state as state_lib
from gan_jax import steps
from gan_jax.errors import ConfigError
from gan_jax.models import dcgan, mlp

SHAPE = (28, 28, 1)


def _create(seed, G, D, tx):
    # Jitted: eager Flax init dispatches (and compiles) op by op, which is slow on CPU.
    make = jax.jit(lambda k: state_lib.create(k, G, D, g_tx=tx, d_tx=tx, image_shape=SHAPE))
    return G, D, make(jax.random.PRNGKey(seed))


def _mlp(seed=0):
    return _create(seed, mlp.Generator(z_dim=16, hidden=32), mlp.Discriminator(hidden=16),
                   optax.adam(1e-3))


def _dcgan(seed=0):
    return _create(seed, dcgan.Generator(resolution=28, width=8, channels=1, z_dim=16),
                   dcgan.Discriminator(resolution=28, width=8), optax.adam(2e-4, b1=0.5))


def _batch(n, seed=0):
    return jax.random.randint(jax.random.PRNGKey(100 + seed), (n, *SHAPE), 0, 256, jnp.int32
                              ).astype(jnp.uint8)


def _run(step, st, n, bs=8):
    step = jax.jit(step)
    for i in range(n):
        st, m = step(st, _batch(bs, i))
    return st, m


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_state_holds_everything():
    _, _, st = _dcgan()
    assert "batch_stats" in st.g_vars and "batch_stats" in st.d_vars
    assert int(st.step) == 0
    _assert_trees_equal(st.ema_params, st.g_params)
    assert jax.tree.structure(st.g_opt_state) == jax.tree.structure(
        optax.adam(1.0).init(st.g_params))


@pytest.mark.parametrize("make", [_mlp, _dcgan])
def test_one_d_update_lowers_d_loss(make):
    G, D, st = make()
    real = steps.to_float_images(_batch(16))
    key = jax.random.PRNGKey(5)
    update = jax.jit(lambda s: steps.d_update(s, real, key, G=G, D=D,
                                              loss=steps.losses_lib.non_saturating))
    st2, before = update(st)
    # Same key: the same fakes. Keep D's statistics fixed so only the params differ.
    st2 = st2.replace(d_vars=st.d_vars, g_vars=st.g_vars)
    _, after = update(st2)
    assert float(after["d_loss"]) < float(before["d_loss"])


@pytest.mark.parametrize("make", [_mlp, _dcgan])
def test_same_seed_bit_identical_other_seed_differs(make):
    G, D, st = make(0)
    step = steps.make_train_step(G, D)
    a, _ = _run(step, st, 3)
    b, _ = _run(step, make(0)[2], 3)
    _assert_trees_equal(a, b)
    c, _ = _run(step, make(1)[2], 3)
    assert not np.array_equal(np.asarray(jax.tree.leaves(a.g_params)[0]),
                              np.asarray(jax.tree.leaves(c.g_params)[0]))


@pytest.mark.parametrize("make", [_mlp, _dcgan])
def test_scanned_k_steps_equal_k_single_steps(make):
    G, D, st = make()
    step = steps.make_train_step(G, D)
    k = 4
    batches = jnp.stack([_batch(8, i) for i in range(k)])
    singles, per_step = st, []
    for i in range(k):
        singles, m = jax.jit(step)(singles, batches[i])
        per_step.append(m)
    scanned, m = jax.jit(steps.scan(step, k))(make()[2], batches)
    assert m["d_loss"].shape == (k,)
    for name in per_step[0]:  # Each metric under its own name, each step in its place.
        np.testing.assert_allclose(m[name], [x[name] for x in per_step], rtol=1e-5, atol=1e-6)
    # The loop stores the metrics as one [K, M] array: one write per trip on a GPU.
    eqn, = [e for e in jax.make_jaxpr(steps.scan(step, k, unroll=False))(st, batches).eqns
            if e.primitive.name == "scan"]
    shapes = [v.aval.shape for v in eqn.outvars]
    assert shapes.count((k, len(m))) == 1 and (k,) not in shapes
    assert int(scanned.step) == k
    for x, y in zip(jax.tree.leaves(singles), jax.tree.leaves(scanned), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    looped, _ = jax.jit(steps.scan(step, k, unroll=False))(make()[2], batches)
    for x, y in zip(jax.tree.leaves(singles), jax.tree.leaves(looped), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    # A step that draws its own batch (here: by its step counter) under steps.repeat.
    drawing = lambda s, data: step(s, data[s.step % k])
    repeated, m = jax.jit(steps.repeat(drawing, k, unroll=False))(make()[2], batches)
    assert m["d_loss"].shape == (k,) and int(repeated.step) == k
    for x, y in zip(jax.tree.leaves(singles), jax.tree.leaves(repeated), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_metrics_and_donation():
    G, D, st = _dcgan()
    step = steps.jit(steps.make_train_step(G, D))
    st, m = step(st, _batch(8))
    st, m = step(st, _batch(8, 1))
    want = {"d_loss", "d_adv_loss", "g_loss", "d_real", "d_fake", "real_logit", "fake_logit",
            "d_grad_norm", "g_grad_norm", "g_param_norm", "d_param_norm"}
    assert set(m) == want
    for k, v in m.items():
        assert v.dtype == jnp.float32 and np.isfinite(float(v)), k
    assert 0 < float(m["d_real"]) < 1 and 0 < float(m["d_fake"]) < 1
    assert int(st.step) == 2


def test_without_norm_metrics_the_step_drops_their_work_and_keeps_the_state():
    G, D, st = _mlp()
    full, lean = (steps.make_train_step(G, D, norms=n) for n in (True, False))
    a, ma = _run(full, st, 2)
    b, mb = _run(lean, _mlp()[2], 2)
    assert set(ma) - set(mb) == set(steps.NORM_METRICS) and set(mb) < set(ma)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    # The norms' reductions are gone from the compiled program.
    reduces = [jax.jit(f).lower(st, _batch(8)).compile().as_text().count(" reduce(")
               for f in (full, lean)]
    assert reduces[1] < reduces[0], reduces
    # The trainer's config reaches the step.
    config = config_lib.validate(ml_collections.ConfigDict({"norm_metrics": False}))
    _, m = jax.jit(components.make_step(config, G, D))(st, _batch(8))
    assert not set(steps.NORM_METRICS) & set(m) and "d_loss" in m
    config.checkpoint.best_metric = "d_grad_norm"
    with pytest.raises(ConfigError, match="norm_metrics=False leaves"):
        config_lib.validate(config)


def test_n_dis_counts_updates_and_checks_batch():
    G, D, st = _mlp()
    step = steps.make_train_step(G, D, n_dis=3)
    st, _ = _run(step, st, 2, bs=12)
    assert int(st.d_opt_state[0].count) == 6 and int(st.g_opt_state[0].count) == 2
    with pytest.raises(ValueError, match="n_dis"):
        jax.jit(step)(st, _batch(10))
    # D's metrics are the means over its updates, each under its own name: D update i takes
    # rows i, i + 3, ... and the i-th of the step's D keys.
    _, m = jax.jit(step)(st, _batch(12, 5))
    d, real = st, steps.to_float_images(_batch(12, 5))
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(st.rng, st.step), 0), 3)
    d_update = jax.jit(lambda s, x, k: steps.d_update(s, x, k, G=G, D=D,
                                                      loss=losses.get("non_saturating")))
    per_update = []
    for i in range(3):
        d, mi = d_update(d, real[i::3], keys[i])
        per_update.append(mi)
    for name in per_update[0]:
        np.testing.assert_allclose(m[name], np.mean([x[name] for x in per_update]), rtol=1e-5,
                                   err_msg=name)
    # The loop over D's updates stores them as one [n_dis, M] array (one write per trip).
    scans = [e for e in jax.make_jaxpr(step)(st, _batch(12)).eqns if e.primitive.name == "scan"]
    shapes = [v.aval.shape for v in scans[0].outvars]
    assert len(scans) == 1 and shapes.count((3, len(per_update[0]))) == 1 and (3,) not in shapes


def test_ema():
    G, D, st = _mlp()
    copy, _ = _run(steps.make_train_step(G, D, ema_decay=0.0), st, 2)
    _assert_trees_equal(copy.ema_params, copy.g_params)
    frozen, _ = _run(steps.make_train_step(G, D, ema_decay=1.0), _mlp()[2], 2)
    _assert_trees_equal(frozen.ema_params, _mlp()[2].g_params)
    late, _ = _run(steps.make_train_step(G, D, ema_decay=1.0, ema_start=5), _mlp()[2], 2)
    _assert_trees_equal(late.ema_params, late.g_params)
    half, _ = _run(steps.make_train_step(G, D, ema_decay=0.5), _mlp()[2], 1)
    init = _mlp()[2].g_params
    for e, p, p0 in zip(*(jax.tree.leaves(t) for t in (half.ema_params, half.g_params, init))):
        np.testing.assert_allclose(e, 0.5 * p0 + 0.5 * p, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss", ["minimax", "non_saturating", "hinge", "wasserstein",
                                  "least_squares"])
def test_every_loss_trains(loss):
    G, D, st = _mlp()
    st, m = _run(steps.make_train_step(G, D, loss=loss), st, 2)
    assert all(np.isfinite(float(v)) for v in m.values())


@pytest.mark.parametrize("kind", ["gp", "r1"])
def test_penalties_enter_d_loss(kind):
    G, D, st = _mlp()
    _, m = _run(steps.make_train_step(G, D, d_penalty=steps.penalty(kind, 10.0)), st, 1)
    assert float(m["d_penalty"]) > 0
    np.testing.assert_allclose(m["d_loss"], m["d_adv_loss"] + m["d_penalty"], rtol=1e-6)
    with pytest.raises(ValueError, match="gp"):
        steps.penalty("l2", 1.0)


def test_bfloat16_step_keeps_float32_state():
    G, D, st = _create(0, dcgan.Generator(resolution=28, width=8, channels=1, z_dim=16,
                                          dtype=jnp.bfloat16),
                       dcgan.Discriminator(resolution=28, width=8, dtype=jnp.bfloat16),
                       optax.adam(2e-4))
    st, m = _run(steps.make_train_step(G, D), st, 2)
    assert {x.dtype for x in jax.tree.leaves(st.g_params)} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(st.d_vars)} == {jnp.dtype(jnp.float32)}
    assert all(v.dtype == jnp.float32 and np.isfinite(float(v)) for v in m.values())


def test_float_batches_are_taken_as_is():
    x = jnp.linspace(-1, 1, 8).reshape(2, 2, 2, 1)
    np.testing.assert_array_equal(steps.to_float_images(x), x)
    u = jnp.array([0, 255], jnp.uint8)
    np.testing.assert_allclose(steps.to_float_images(u), [-1.0, 1.0])


@pytest.mark.parametrize("augment", [None, "color,translation"])
def test_reused_forward_equals_recomputed_forward(augment):
    from gan_jax.data import augment as augment_lib
    aug = augment_lib.make(augment) if augment else None
    G, D, st = _dcgan()
    fast = steps.make_train_step(G, D, share_fake=True, reuse_forward=True, augment=aug)
    plain = steps.make_train_step(G, D, share_fake=True, reuse_forward=False, augment=aug)
    a, ma = _run(fast, st, 3)
    b, mb = _run(plain, _dcgan()[2], 3)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ma["g_loss"], mb["g_loss"], rtol=1e-5)
    if augment is None:  # Sharing the fake batch is another game than a fresh one for G.
        c, _ = _run(steps.make_train_step(G, D), _dcgan()[2], 3)
        assert not np.allclose(np.asarray(jax.tree.leaves(a.g_params)[0]),
                               np.asarray(jax.tree.leaves(c.g_params)[0]))
    with pytest.raises(ValueError, match="n_dis=1"):
        steps.make_train_step(G, D, share_fake=True, n_dis=2)


def test_every_upsampling_form_gives_the_same_training():
    # G's stride-2 layers as the default transposed conv (a custom VJP), as four phase
    # convs, and in the textbook lhs-dilated form: one model, trained the same.
    def make(impl):
        return _create(0, dcgan.Generator(resolution=28, width=8, channels=1, z_dim=16,
                                          upsample=impl),
                       dcgan.Discriminator(resolution=28, width=8), optax.adam(2e-4, b1=0.5))
    G, D, st = make("phases")
    a, _ = _run(steps.make_train_step(G, D, share_fake=True), st, 3)
    for impl in ("transpose", "dilated"):
        G, D, st = make(impl)
        b, _ = _run(steps.make_train_step(G, D, share_fake=True), st, 3)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["share_fake", "n_dis=2+gp", "mlp"])
def test_joint_d_pass_gives_the_same_training(case):
    kw = {"share_fake": dict(share_fake=True),
          "n_dis=2+gp": dict(n_dis=2, d_penalty=steps.penalty("gp", 10.0)),
          "mlp": {}}[case]
    make = _mlp if case == "mlp" else _dcgan
    G, D, st = make()
    bs = 8 * kw.get("n_dis", 1)
    a, ma = _run(steps.make_train_step(G, D, d_joint_pass=True, **kw), st, 3, bs)
    b, mb = _run(steps.make_train_step(G, D, **kw), make()[2], 3, bs)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    for k in mb:
        np.testing.assert_allclose(ma[k], mb[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["share_fake+joint", "n_dis=2+r1"])
def test_closed_form_batchnorm_gradient_gives_the_same_training(case):
    # The benchmark's bn_grad=closed_form must train the same model as autodiff does.
    kw = {"share_fake+joint": dict(share_fake=True, d_joint_pass=True),
          "n_dis=2+r1": dict(n_dis=2, d_penalty=steps.penalty("r1", 10.0))}[case]
    bs, runs = 8 * kw.get("n_dis", 1), []
    for bn_grad in ("closed_form", "autodiff"):
        G, D, st = _create(0, dcgan.Generator(resolution=28, width=8, channels=1, z_dim=16,
                                              bn_grad=bn_grad),
                           dcgan.Discriminator(resolution=28, width=8, bn_grad=bn_grad),
                           optax.adam(2e-4, b1=0.5))
        runs.append(_run(steps.make_train_step(G, D, **kw), st, 3, bs))
    (a, ma), (b, mb) = runs
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    for k in mb:
        np.testing.assert_allclose(ma[k], mb[k], rtol=1e-4, atol=1e-5)


def test_joint_d_pass_refuses_a_discriminator_that_would_mix_the_batches():
    import flax.linen as nn

    class NoGroups(nn.Module):  # BatchNorm without a `groups` argument.
        @nn.compact
        def __call__(self, x, train: bool = True):
            h = nn.BatchNorm(use_running_average=not train)(x.reshape(x.shape[0], -1))
            return nn.Dense(1)(h)[:, 0]

    G, D, st = _create(0, mlp.Generator(z_dim=16, hidden=32), NoGroups(), optax.adam(1e-3))
    with pytest.raises(ValueError, match="d_joint_pass needs a discriminator"):
        _run(steps.make_train_step(G, D, d_joint_pass=True), st, 1)
