"""gan_jax.runs: N runs as one step, without the trainer."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding

from gan_jax import runs, steps
from gan_jax import state as state_lib
from gan_jax.models import mlp

SHAPE = (4, 4, 1)
G = mlp.Generator(z_dim=8, hidden=16, image_shape=SHAPE)
D = mlp.Discriminator(hidden=16)
TX = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, b1=0.5)


def create(seed):
    return state_lib.create(jax.random.PRNGKey(seed), G, D, g_tx=TX, d_tx=TX, image_shape=SHAPE)


def batches(n, seed=9, rows=8):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n, rows, *SHAPE), minval=-1, maxval=1)


def leaves_close(a, b, exact=False):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if exact:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", runs.FORMS)
def test_run_i_is_the_single_run_with_its_seed(form):
    step = steps.make_train_step(G, D, n_dis=2)
    states = runs.stack([create(s) for s in runs.seeds(3, 3)])
    x = batches(3, rows=16)
    multi = jax.jit(runs.vectorize(step, form=form))
    single = jax.jit(step)
    one = create(4)
    for _ in range(3):
        states, metrics = multi(states, x)
        one, m1 = single(one, x[1])
    leaves_close(runs.select(states, 1), one, exact=form == "loop")
    np.testing.assert_allclose(metrics["d_loss"][1], m1["d_loss"], rtol=1e-5)
    np.testing.assert_array_equal(metrics["live"], [1, 1, 1])


def test_per_run_learning_rate_changes_that_runs_update():
    step = steps.make_train_step(G, D)
    start = runs.stack([create(0), create(0)])  # The same run twice ...
    start = start.replace(g_opt_state=runs.set_hyperparams(start.g_opt_state,
                                                           learning_rate=[1e-3, 4e-3]))
    x = jnp.broadcast_to(batches(1)[0], (2, 8, *SHAPE))  # ... on the same batch.
    new, _ = jax.jit(runs.vectorize(step))(start, x)
    delta = [jax.tree.map(lambda a, b: a[i] - b[i], new.g_params, start.g_params)
             for i in range(2)]
    big = np.concatenate([np.ravel(v) for v in jax.tree.leaves(delta[1])])
    small = np.concatenate([np.ravel(v) for v in jax.tree.leaves(delta[0])])
    # Adam's first step is lr * g / |g| per weight: 4x the rate, 4x the step. D's rate is the
    # same in both, so D moved alike.
    np.testing.assert_allclose(big, 4 * small, rtol=1e-3, atol=1e-9)
    leaves_close(runs.select(new.d_params, 0), runs.select(new.d_params, 1))


@pytest.mark.parametrize("form", runs.FORMS)
def test_a_diverging_run_is_frozen_and_the_others_go_on(form):
    step = steps.make_train_step(G, D)
    start = runs.stack([create(s) for s in range(3)])
    broken = start.replace(d_opt_state=runs.set_hyperparams(
        start.d_opt_state, learning_rate=[1e-3, np.inf, 1e-3]))
    multi = jax.jit(runs.vectorize(step, form=form))
    x = batches(3)
    a, b = start, broken
    for _ in range(3):
        a, ma = multi(a, x)
        b, mb = multi(b, x)
    np.testing.assert_array_equal(mb["live"], [1, 0, 1])
    np.testing.assert_array_equal(b.step, [3, 0, 3])
    leaves_close(runs.select(b, 1), runs.select(broken, 1), exact=True)  # Frozen at its start.
    for r in (0, 2):  # The others exactly as without the broken run.
        leaves_close(runs.select(b, r), runs.select(a, r), exact=True)
        assert float(mb["d_loss"][r]) == float(ma["d_loss"][r])


def test_the_map_form_runs_a_k_step_program_per_run():
    """Around a K-step program a run that diverges inside it keeps the call's start state."""
    k_steps = steps.scan(steps.make_train_step(G, D), 3, unroll=False)
    start = runs.stack([create(s) for s in range(3)])
    broken = start.replace(d_opt_state=runs.set_hyperparams(
        start.d_opt_state, learning_rate=[1e-3, np.inf, 1e-3]))
    x = jnp.stack([batches(3, seed=s) for s in range(3)], axis=1)  # [K, N, B, ...]
    new, metrics = jax.jit(runs.vectorize(k_steps, form="map", batch_axis=1))(broken, x)
    np.testing.assert_array_equal(new.step, [3, 0, 3])
    np.testing.assert_array_equal(metrics["live"], [1, 0, 1])
    leaves_close(runs.select(new, 1), runs.select(broken, 1), exact=True)
    one, _ = jax.jit(k_steps)(create(2), x[:, 2])
    leaves_close(runs.select(new, 2), one)


def test_step_hyperparameters_are_per_run():
    factory = lambda ema_decay: steps.make_train_step(G, D, ema_decay=ema_decay)
    states = runs.stack([create(0), create(0)])
    new, _ = jax.jit(runs.vectorize(factory, hparams={"ema_decay": [0.0, 1.0]}))(
        states, batches(2))
    leaves_close(runs.select(new.ema_params, 0), runs.select(new.g_params, 0))  # decay 0
    leaves_close(runs.select(new.ema_params, 1), runs.select(states.g_params, 1))  # decay 1


@pytest.mark.parametrize("num_runs", [4, 2])
def test_runs_on_four_devices_equal_one_device(num_runs):
    devices = jax.devices()
    assert len(devices) >= 4, "conftest gives the tests 4 CPU devices"
    step = steps.make_train_step(G, D, n_dis=2)
    start = runs.stack([create(s) for s in range(num_runs)])
    x = batches(num_runs, rows=16)
    out = {}
    for d in (1, 4):
        mesh = Mesh(np.asarray(devices[:d]), (runs.AXIS,))
        layout = runs.layout_for(num_runs, d)
        fn = jax.jit(runs.on_mesh(step, mesh, layout=layout, form="vmap"))
        put = lambda t, spec: jax.device_put(t, NamedSharding(mesh, spec))
        s = put(start, runs.state_spec(layout))
        for _ in range(2):
            s, metrics = fn(s, put(x, runs.batch_spec(layout)))
        out[d] = (s, metrics, layout)
    assert out[4][2] == ("runs" if num_runs == 4 else "batch")
    leaves_close(out[4][0], out[1][0])
    np.testing.assert_allclose(out[4][1]["g_loss"], out[1][1]["g_loss"], rtol=1e-5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="form must be one of"):
        runs.vectorize(lambda s, b: (s, {}), form="pmap")
    multi = runs.vectorize(lambda ema_decay: steps.make_train_step(G, D, ema_decay=ema_decay),
                           hparams={"ema_decay": [0.9, 0.99, 0.999]})
    with pytest.raises(ValueError, match="one value per run"):
        multi(runs.stack([create(0), create(1)]), batches(2))


def test_the_runs_benchmark_table_divides_by_one_runs_step():
    from gan_jax.perf import runs_benchmark
    rows = [{"model": "m", "runs": 1, "form": "single", "ms_per_step": 10.0,
             "ms_per_run_step": 10.0, "compile_s": 1.0},
            {"model": "m", "runs": 4, "form": "loop", "ms_per_step": 36.0,
             "ms_per_run_step": 9.0, "compile_s": 4.0}]
    table = runs_benchmark.runs_table(rows)
    assert "| m | 4 | loop | 36.00 | 9.00 | 0.90x | 4.0 |" in table
    assert runs_benchmark.forms_for("gpu") == ("vmap",)
