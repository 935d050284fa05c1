"""Datasets held on the accelerator as uint8, with batches drawn inside the jitted step.

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

from gan_jax import parallel, steps
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


def shard_size(num_examples: int, num_shards: int) -> int:
    """Examples per shard; the last ``num_examples % num_shards`` images are left out."""
    return num_examples // num_shards


def kept_size(num_examples: int, num_shards: int) -> int:
    """Examples kept when split evenly over ``num_shards``: ``shard_size`` per shard."""
    return shard_size(num_examples, num_shards) * num_shards


def make_data_steps(train_step, num_steps: int, *, rows_per_step: int, num_examples: int, key,
                    mesh=None, axis_name: str | None = None, order: str = "shuffled",
                    unroll: bool | int | None = None, pmap_devices: int | None = None):
    """Turns ``train_step(state, batch)`` into ``multi(state, images) -> (state, metrics
    stacked over the steps)``: ``num_steps`` steps, each drawing ``rows_per_step`` images
    (``n_dis * batch_size``) from device-resident ``images``.

    ``images`` is the whole dataset on one device; with ``mesh``, the array that
    ``put(images, mesh)`` returns (split along "data"); under ``pmap`` (``axis_name``), this
    device's shard. ``rows_per_step`` is global in the first two cases, per device in the
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

    def local(images_local, step, shard):
        idx = _indices(images_local.shape[0], key, step, rows_local, shard, order, num_steps)
        return idx, lambda i: jnp.take(images_local, i, axis=0)

    def multi(state, images):
        if axis_name is not None:
            idx, gather = local(images, state.step, jax.lax.axis_index(axis_name))
        elif mesh is None:
            idx, gather = local(images, state.step, 0)
        else:
            idx = jax.shard_map(
                lambda step: _indices(n_local, key, step, rows_local,
                                      jax.lax.axis_index(parallel.AXIS), order, num_steps),
                mesh=mesh, in_specs=(P(),), out_specs=P(None, parallel.AXIS))(state.step)
            take = jax.shard_map(lambda im, i: jnp.take(im, i, axis=0), mesh=mesh,
                                 in_specs=(P(parallel.AXIS), P(parallel.AXIS)),
                                 out_specs=P(parallel.AXIS))
            gather = lambda i: take(images, i)
        return steps.scan(lambda s, i: train_step(s, gather(i)), num_steps, unroll)(state, idx)

    return multi


def make_data_step(train_step, **kwargs):
    """One step of ``make_data_steps`` (same arguments): ``step(state, images) -> (state,
    metrics)``."""
    multi = make_data_steps(train_step, 1, **kwargs)

    def data_step(state, images):
        state, metrics = multi(state, images)
        return state, jax.tree.map(lambda m: m[0], metrics)

    return data_step


def put(images_NHWC: np.ndarray, mesh=None, pmap_devices=None):
    """Copies host uint8 images to the device(s): whole on one device; split along "data"
    over ``mesh``; or as a [devices, shard, ...] stack for ``pmap``."""
    images_NHWC = np.asarray(images_NHWC, np.uint8)
    if pmap_devices is not None:
        n = shard_size(len(images_NHWC), len(pmap_devices))
        stack = images_NHWC[:n * len(pmap_devices)].reshape(len(pmap_devices), n,
                                                            *images_NHWC.shape[1:])
        return jax.device_put(stack, parallel.stacked_sharding(pmap_devices))
    if mesh is None:
        return jax.device_put(images_NHWC)
    n = kept_size(len(images_NHWC), mesh.devices.size)
    return parallel.put_sharded_copy(images_NHWC[:n], mesh)
