"""Datasets held on the accelerator, with batches drawn inside the jitted step.

A dataset is an array of uint8 images, or a dict of arrays with one row per example (tfds'
names: {"image": uint8 [N, H, W, C], "label": int32 [N]}); every array's rows are drawn
together, so a batch's labels are its images'.

No host input pipeline stands between steps: the step gathers its own batch from the
device-resident array, at indices given by ``shuffle.batch_indices`` (epoch-exact, a pure
function of the step), so resuming at step t draws the same batches as the first run. The
indices of the K steps of one dispatch are computed together, before the steps.

On several devices the dataset is split into one shard per device and each device draws
its share of the batch from its own shard, so no image crosses devices; every epoch of a
shard still shows each of its images once. The batch sequence therefore depends on the
number of shards (recorded in checkpoints), not on how the step is parallelised.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gan_jax import parallel, runs, steps
from gan_jax.data import shuffle
from gan_jax.errors import ConfigError


ORDERS = ("shuffled", "sequential")


def _indices(n: int, key, step, rows_local: int, shard, order: str, num_steps: int):
    """This shard's dataset indices for steps ``step .. step + num_steps - 1``:
    int32 [num_steps, rows_local]."""
    if order == "sequential":  # The benchmark's measure of what the shuffle costs.
        step = jnp.asarray(step, jnp.int32)
        idx = ((step % n) * rows_local + jnp.arange(num_steps * rows_local, dtype=jnp.int32)) % n
        return idx.reshape(num_steps, rows_local)
    return shuffle.batch_indices(jax.random.fold_in(key, shard), step, rows_local, n,
                                 steps=num_steps)


def rows_of(data) -> int:
    """Rows of a dataset (an array, or a dict of arrays with one row per example)."""
    return len(jax.tree.leaves(data)[0])


def shard_size(num_examples: int, num_shards: int) -> int:
    """Examples per shard; the last ``num_examples % num_shards`` images are left out."""
    return num_examples // num_shards


def kept_size(num_examples: int, num_shards: int) -> int:
    """Examples kept when split evenly over ``num_shards``: ``shard_size`` per shard."""
    return shard_size(num_examples, num_shards) * num_shards


def make_data_steps(train_step, num_steps: int, *, rows_per_step: int, num_examples: int, key,
                    mesh=None, axis_name: str | None = None, order: str = "shuffled",
                    unroll: bool | int | None = None, pmap_devices: int | None = None):
    """Turns ``train_step(state, batch)`` into ``multi(state, data) -> (state, metrics
    stacked over the steps)``: ``num_steps`` steps, each drawing ``rows_per_step`` examples
    (``n_dis * batch_size``) from device-resident ``data`` (images, or a dict of arrays).

    ``data`` is the whole dataset on one device; with ``mesh``, what ``put(data, mesh)``
    returns (split along "data"); under ``pmap`` (``axis_name``), this device's shard. ``rows_per_step`` is global in the first two cases, per device in the
    last. ``order="sequential"`` reads the shard in order instead (no shuffle), for the
    benchmark's ablation. The indices of all the steps' batches are computed first, in one
    walk of the shuffle's permutation: its loop has a data-dependent trip count, which a GPU
    tests on the host at each turn, so this is once per call instead of once per step. The
    batches are the same as step by step. ``unroll``: as ``steps.scan``. ``pmap_devices``:
    how many devices the pmap runs on (default: all of this host's)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
    shards = 1 if mesh is None else mesh.devices.size
    if axis_name is not None:
        shards = pmap_devices or jax.local_device_count()
    n_local = shard_size(num_examples, shards)
    rows_local = rows_per_step if axis_name is not None else rows_per_step // shards
    if rows_local > n_local:
        raise ConfigError(f"One step needs {rows_local} images per shard but each of the "
                          f"{shards} shards has only {n_local} ({num_examples} images); use a "
                          "smaller batch_size or n_dis, or more images (dataset.max_examples).")

    def take(data, i):
        return jax.tree.map(lambda x: jnp.take(x, i, axis=0), data)

    def local(data_local, step, shard):
        idx = _indices(rows_of(data_local), key, step, rows_local, shard, order, num_steps)
        return idx, lambda i: take(data_local, i)

    def multi(state, data):
        if axis_name is not None:
            idx, gather = local(data, state.step, jax.lax.axis_index(axis_name))
        elif mesh is None:
            idx, gather = local(data, state.step, 0)
        else:
            idx = jax.shard_map(
                lambda step: _indices(n_local, key, step, rows_local,
                                      jax.lax.axis_index(parallel.AXIS), order, num_steps),
                mesh=mesh, in_specs=(P(),), out_specs=P(None, parallel.AXIS))(state.step)
            sharded_take = jax.shard_map(take, mesh=mesh,
                                         in_specs=(P(parallel.AXIS), P(parallel.AXIS)),
                                         out_specs=P(parallel.AXIS))
            gather = lambda i: sharded_take(data, i)
        return steps.scan(lambda s, i: train_step(s, gather(i)), num_steps, unroll)(state, idx)

    return multi


def make_run_data_steps(runs_step, num_steps: int, *, rows_per_step: int, num_examples: int,
                        keys, mesh, order: str = "shuffled", unroll: bool | int | None = None):
    """``make_data_steps`` for N runs: ``runs_step(states, batches_N)`` (``gan_jax.runs``)
    over states with a leading run axis; run i draws its batches with ``keys[i]`` and its
    own step counter, from the same shards and in the same order as a single run with that
    key on ``mesh``. ``data``: what ``put(data, mesh)`` returns; ``keys``: [N] data keys."""
    shards = mesh.devices.size
    n_local, rows_local = shard_size(num_examples, shards), rows_per_step // shards
    if rows_local > n_local:
        raise ConfigError(f"One step needs {rows_local} images per shard but each of the "
                          f"{shards} shards has only {n_local} ({num_examples} images); use a "
                          "smaller batch_size or n_dis, or more images (dataset.max_examples).")

    def shard_indices(keys_N, steps_N):  # -> [K, N, rows_local] of this shard
        shard = jax.lax.axis_index(parallel.AXIS)
        idx = jax.vmap(lambda k, s: _indices(n_local, k, s, rows_local, shard, order,
                                             num_steps))(keys_N, steps_N)
        return jnp.swapaxes(idx, 0, 1)

    take = lambda data, i: jax.tree.map(lambda x: jnp.take(x, i, axis=0), data)
    spec = P(None, None, parallel.AXIS)
    indices = jax.shard_map(shard_indices, mesh=mesh, in_specs=(P(), P()), out_specs=spec)
    gather = jax.shard_map(take, mesh=mesh, in_specs=(P(parallel.AXIS), P(None, parallel.AXIS)),
                           out_specs=P(None, parallel.AXIS))

    def multi(states, data):
        idx = indices(keys, states.step)
        return steps.scan(lambda s, i: runs_step(s, gather(data, i)), num_steps, unroll)(
            states, idx)

    return multi


def make_run_data_loops(train_step, num_steps: int, *, keys, hparams=None, **kwargs):
    """``make_run_data_steps`` on one device in ``gan_jax.runs``' "map" form: each run's
    ``num_steps`` steps in turn, as a rolled loop, drawing the batches a single run with its
    key draws; a run that diverges keeps its state from before the call. ``train_step``: a
    step, or with ``hparams`` ({name: [N] values}) a factory of one. Other arguments as
    ``make_data_steps``' (no mesh). Metrics [num_steps, N], as the other forms'."""
    def multi(states, data):
        def program(step):
            return lambda state, key: make_data_steps(step, num_steps, key=key, unroll=False,
                                                      **kwargs)(state, data)

        fn = (lambda **hp: program(train_step(**hp))) if hparams else program(train_step)
        states, metrics = runs.vectorize(fn, hparams=hparams, form="map")(states, keys)
        shape = (num_steps, len(keys))
        return states, {k: jnp.broadcast_to(v, shape) if k == "live" else jnp.swapaxes(v, 0, 1)
                        for k, v in metrics.items()}

    return multi


def make_data_step(train_step, **kwargs):
    """One step of ``make_data_steps`` (same arguments): ``step(state, data) -> (state,
    metrics)``."""
    multi = make_data_steps(train_step, 1, **kwargs)

    def data_step(state, data):
        state, metrics = multi(state, data)
        return state, jax.tree.map(lambda m: m[0], metrics)

    return data_step


def put(data, mesh=None, pmap_devices=None):
    """Copies a host dataset (uint8 images, or a dict of arrays) to the device(s): whole on
    one device; split along "data" over ``mesh``; or as a [devices, shard, ...] stack for
    ``pmap``. Examples past an even split are left out."""
    data = jax.tree.map(np.asarray, data)
    if pmap_devices is not None:
        d = len(pmap_devices)
        n = shard_size(rows_of(data), d)
        stack = lambda x: x[:n * d].reshape(d, n, *x.shape[1:])
        return jax.device_put(jax.tree.map(stack, data), parallel.stacked_sharding(pmap_devices))
    if mesh is None:
        return jax.device_put(data)
    n = kept_size(rows_of(data), mesh.devices.size)
    return jax.tree.map(lambda x: parallel.put_sharded_copy(x[:n], mesh), data)
