import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import losses, steps
from gan_jax import state as state_lib
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
    _, m = _run(steps.make_train_step(G, D, d_penalty=losses.penalty(kind, 10.0)), st, 1)
    assert float(m["d_penalty"]) > 0
    np.testing.assert_allclose(m["d_loss"], m["d_adv_loss"] + m["d_penalty"], rtol=1e-6)
    with pytest.raises(ValueError, match="gp"):
        losses.penalty("l2", 1.0)


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


def _share_fake_recomputing_g(G, D, augment):
    """The reference for share_fake: G's update runs G forward again on the z of D's update,
    where the step reuses that forward's VJP."""
    loss = losses.non_saturating

    def step(state, batch):
        real = steps.to_float_images(batch)
        key = jax.random.fold_in(state.rng, state.step)
        d_key = jax.random.split(jax.random.fold_in(key, 0), 1)[0]
        z = jax.random.normal(jax.random.split(d_key, 3)[0], (real.shape[0], G.z_dim))
        fake, g_vars = steps.apply_model(G, state.g_params, state.g_vars, z, train=True)
        state, _ = steps.d_update(state.replace(g_vars=g_vars), real, d_key, G=G, D=D,
                                  loss=loss, augment=augment, fake=fake)
        aug_key = jax.random.split(jax.random.fold_in(key, 1))[1]

        def g_loss(params):
            x = steps.apply_model(G, params, state.g_vars, z, train=True)[0]
            x = x if augment is None else augment(x, aug_key)
            logits, d_vars = steps.apply_model(D, state.d_params, state.d_vars, x, train=True)
            return loss.g(logits), d_vars

        (value, d_vars), grads = jax.value_and_grad(g_loss, has_aux=True)(state.g_params)
        updates, g_opt_state = state.g_tx.update(grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, updates)
        ema = steps.ema_update(state.ema_params, g_params, state.step, 0.999)
        return state.replace(g_params=g_params, g_opt_state=g_opt_state, d_vars=d_vars,
                             ema_params=ema, step=state.step + 1), {"g_loss": value}

    return step


@pytest.mark.parametrize("augment", [None, "color,translation"])
def test_share_fake_reuses_gs_forward_and_equals_recomputing_it(augment):
    from gan_jax.data import augment as augment_lib
    aug = augment_lib.make(augment) if augment else None
    G, D, st = _dcgan()
    a, ma = _run(steps.make_train_step(G, D, share_fake=True, augment=aug), st, 3)
    b, mb = _run(_share_fake_recomputing_g(G, D, aug), _dcgan()[2], 3)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ma["g_loss"], mb["g_loss"], rtol=1e-5)
    if augment is None:  # Sharing the fake batch is another game than a fresh one for G.
        c, _ = _run(steps.make_train_step(G, D), _dcgan()[2], 3)
        assert not np.allclose(np.asarray(jax.tree.leaves(a.g_params)[0]),
                               np.asarray(jax.tree.leaves(c.g_params)[0]))
    with pytest.raises(ValueError, match="n_dis=1"):
        steps.make_train_step(G, D, share_fake=True, n_dis=2)


