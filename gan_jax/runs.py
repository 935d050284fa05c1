"""N independent runs as one program: every array of a state gets a leading run axis, and one
step updates all runs, each with its own initialisation, noise, data order and (optionally)
scalar hyperparameters.

    states = runs.stack([create(jax.random.PRNGKey(s)) for s in runs.seeds(0, 4)])
    step = jax.jit(runs.vectorize(train_step), donate_argnums=0)
    states, metrics = step(states, batches_NB)     # metrics: each [N], plus "live"

Three forms compute the same runs: ``"vmap"`` (one batched program: on a GPU, N small runs
cost little more than one), ``"loop"`` (the runs one after another, unrolled inside the
program: XLA:CPU runs convolutions with per-run kernels several times slower batched than
one by one, so on a CPU this costs what N separate runs cost) and ``"map"`` (a rolled loop
over the runs, one run's program at a time, each updated in place; around a K-step program it
keeps one run's state in cache for K steps: the cheapest form on a CPU for models without
convolutions, whose kernel gradients XLA:CPU runs slowly inside loops).
``default_form`` picks per platform.

A run whose metrics or new state turn NaN or Inf is frozen: its state stays as it was
before that step (its step counter too), and it stays frozen, while the others go on.
``metrics["live"]`` says which runs updated.
"""
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

FORMS = ("vmap", "loop", "map")


def default_form(platform: str | None = None) -> str:
    """``"loop"`` on CPU, ``"vmap"`` on GPU and TPU (see the module docstring)."""
    return "loop" if (platform or jax.default_backend()) == "cpu" else "vmap"


def seeds(base_seed: int, num_runs: int) -> list[int]:
    """Run i's seed: ``base_seed + i``, so run i equals a single run with that seed."""
    return [base_seed + i for i in range(num_runs)]


def stack(trees):
    """One tree with a leading run axis from N trees of the same structure. Static fields
    (a state's optimizer) are taken from the first: their numbers, such as
    ``optax.inject_hyperparams`` values, live in the arrays."""
    flat = [jax.tree.flatten(t) for t in trees]
    leaves = [jnp.stack(xs) for xs in zip(*(f[0] for f in flat), strict=True)]
    return jax.tree.unflatten(flat[0][1], leaves)


def select(tree, i):
    """Run ``i`` of a stacked tree (as a single run's tree)."""
    return jax.tree.map(lambda x: x[i], tree)


def num_runs(tree) -> int:
    return jax.tree.leaves(tree)[0].shape[0]


def set_hyperparams(opt_state, **values):
    """An Optax state built with ``optax.inject_hyperparams`` (stacked over runs) with
    hyperparameters replaced, e.g. ``learning_rate=jnp.array([1e-4, 2e-4])``: each run then
    steps with its own."""
    return optax.tree_utils.tree_set(
        opt_state, **{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


def _all_finite(metrics) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(m)) for m in jax.tree.leaves(metrics)
              if jnp.issubdtype(jnp.result_type(m), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _keep(ok, new, old):
    """One run's new arrays if ``ok``, its old ones otherwise."""
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def vectorize(step, *, hparams: Mapping | None = None, form: str | None = None,
              batch_axis: int | None = 0, freeze: bool = True, axis_name: str | None = None):
    """Turns ``step(state, batch) -> (state, metrics)`` into an N-run step
    ``(states, batch) -> (states, metrics)`` over states stacked along a leading run axis
    (``stack``); every metric gets a leading [N] axis.

    ``hparams``: {name: [N] values}; then ``step`` is a factory, ``step(**hp) -> train
    step``, called with run i's values (traced scalars under vmap), e.g.
    ``lambda ema_decay: steps.make_train_step(G, D, ema_decay=ema_decay)``. Optimizer
    hyperparameters need no factory: they live in the state (``set_hyperparams``).
    ``batch_axis``: 0 for one batch per run ([N, B, ...]), None for one batch all runs see.
    ``form``: "vmap", "loop" or "map" (None: ``default_form``). ``freeze``: runs whose metrics
    or new arrays are not finite keep their old state (needs a ``.step`` on the state); ``metrics
    ["live"]`` (float 0/1) says which runs updated. ``axis_name``: the mesh axis the runs
    are split over when this runs inside ``shard_map``, so "live" compares steps across
    devices."""
    form = form or default_form()
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}.")
    hp_arrays = {k: np.asarray(v) for k, v in (hparams or {}).items()}

    def one(state, batch, hp):
        fn = step(**hp) if hparams is not None else step
        return fn(state, batch)

    def newest_step(states):
        # Runs stay in step, so a run behind the furthest one is a frozen one.
        newest = jnp.max(states.step)
        return newest if axis_name is None else jax.lax.pmax(newest, axis_name)

    def checked(state, new, metrics, newest):
        """One run's new state if it is live and finite, else its old one; and whether."""
        ok = (state.step == newest) & _all_finite(metrics) & _all_finite(new)
        return _keep(ok, new, state), {**metrics, "live": ok.astype(jnp.float32)}

    def multi(states, batch):
        n = num_runs(states)
        for k, v in hp_arrays.items():
            if v.shape != (n,):
                raise ValueError(f"hparams[{k!r}] has shape {v.shape}; the states hold {n} "
                                 "runs, so it needs one value per run.")
        hp = {k: jnp.asarray(v) for k, v in hp_arrays.items()}
        if form == "map":
            return _in_turn(one, checked if freeze else None, states, batch, batch_axis, hp,
                            newest_step(states) if freeze else None)
        if form == "vmap":
            new, metrics = jax.vmap(one, in_axes=(0, batch_axis, 0))(states, batch, hp)
        else:
            outs = [one(select(states, i), batch if batch_axis is None else select(batch, i),
                        {k: v[i].item() for k, v in hp_arrays.items()}) for i in range(n)]
            new, metrics = stack([o[0] for o in outs]), stack([o[1] for o in outs])
        if not freeze:
            return new, metrics
        return jax.vmap(checked, in_axes=(0, 0, 0, None))(states, new, metrics,
                                                          newest_step(states))

    return multi


def _in_turn(one, checked, states, batch, batch_axis, hp, newest):
    """The "map" form: a rolled loop over the runs that steps (and checks) run i while its
    arrays are in cache and writes it back into the stacked state in place (``lax.map``'s
    separate output cost more per run as the runs grew: docs/benchmarks.md)."""
    per_run = None if batch_axis is None else jax.tree.map(
        lambda x: jnp.moveaxis(x, batch_axis, 0), batch)
    at = lambda tree, i: jax.tree.map(
        lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), tree)

    def run(i, done):
        state = at(done, i)
        new, metrics = one(state, batch if per_run is None else at(per_run, i), at(hp, i))
        return checked(state, new, metrics, newest) if checked else (new, metrics)

    def body(i, carry):
        put = lambda tree, part: jax.tree.map(
            lambda a, b: jax.lax.dynamic_update_index_in_dim(a, b, i, 0), tree, part)
        return tuple(map(put, carry, run(i, carry[0])))

    n = num_runs(states)
    shapes = jax.eval_shape(lambda: run(0, states)[1])
    metrics = jax.tree.map(lambda a: jnp.zeros((n, *a.shape), a.dtype), shapes)
    return jax.lax.fori_loop(0, n, body, (states, metrics))


LAYOUTS = ("runs", "batch")
AXIS = "data"  # The mesh axis: parallel.AXIS.


def layout_for(num_runs_: int, num_devices: int) -> str:
    """``"runs"`` (each device trains N / D whole runs) when the runs divide evenly over the
    devices, else ``"batch"`` (every device holds every run and a slice of each batch)."""
    return "runs" if num_runs_ % num_devices == 0 else "batch"


def state_spec(layout: str):
    """The PartitionSpec of every state array under ``layout``."""
    from jax.sharding import PartitionSpec as P
    return P(AXIS) if layout == "runs" else P()


def batch_spec(layout: str):
    """The PartitionSpec of a per-run batch [N, B, ...] under ``layout``."""
    from jax.sharding import PartitionSpec as P
    return P(AXIS) if layout == "runs" else P(None, AXIS)


def on_mesh(step, mesh, *, layout: str, **vectorize_kwargs):
    """``vectorize(step, ...)`` laid out over a ("data",) ``mesh``, to call inside ``jax.jit``
    with states placed by ``state_spec(layout)`` and per-run batches by
    ``batch_spec(layout)``. ``"runs"``: each device steps its own runs (``shard_map``), no
    collective but the "live" check; ``"batch"``: XLA splits every run's batch over the
    devices, as for a single run (build the step with ``batch_sharding`` so G's latents
    are split too)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if layout == "batch":
        return vectorize(step, **vectorize_kwargs)
    from jax.sharding import PartitionSpec as P
    local = vectorize(step, axis_name=AXIS, **vectorize_kwargs)
    return jax.shard_map(local, mesh=mesh, in_specs=(P(AXIS), P(AXIS)),
                         out_specs=(P(AXIS), P(AXIS)))
