"""Datasets held on the accelerator as uint8, with batches drawn inside the jitted step.

No host input pipeline stands between steps: the step gathers its own batch from the
device-resident array, at indices given by ``shuffle.batch_indices`` (epoch-exact, a pure
function of the step), so resuming at step t draws the same batches as the first run.

On several devices the dataset is split into one shard per device and each device draws
its share of the batch from its own shard, so no image crosses devices; every epoch of a
shard still shows each of its images once. The batch sequence therefore depends on the
number of shards (recorded in checkpoints), not on how the step is parallelised.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gan_jax import parallel
from gan_jax.data import shuffle


ORDERS = ("shuffled", "sequential")


def _draw(images_local, key, step, rows_local: int, shard, order: str = "shuffled"):
    n = images_local.shape[0]
    if order == "sequential":  # The benchmark's measure of what the shuffle costs.
        step = jnp.asarray(step, jnp.int32)
        idx = ((step % n) * rows_local + jnp.arange(rows_local, dtype=jnp.int32)) % n
    else:
        idx = shuffle.batch_indices(jax.random.fold_in(key, shard), step, rows_local, n)
    return jnp.take(images_local, idx, axis=0)


def shard_size(num_examples: int, num_shards: int) -> int:
    """Examples per shard; the last ``num_examples % num_shards`` images are left out."""
    return num_examples // num_shards


def make_data_step(train_step, *, rows_per_step: int, num_examples: int, key, mesh=None,
                   axis_name: str | None = None, order: str = "shuffled"):
    """Turns ``train_step(state, batch)`` into ``step(state, images)`` that draws
    ``rows_per_step`` images (``n_dis * batch_size``) from device-resident ``images``.

    ``images`` is the whole dataset on one device; with ``mesh``, the array that
    ``put(images, mesh)`` returns (split along "data"); under ``pmap`` (``axis_name``), this
    device's shard. ``rows_per_step`` is global in the first two cases, per device in the
    last. ``order="sequential"`` reads the shard in order instead (no shuffle), for the
    benchmark's ablation."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
    shards = 1 if mesh is None else mesh.devices.size
    if axis_name is not None:
        shards = jax.local_device_count()
    n_local = shard_size(num_examples, shards)
    rows_local = rows_per_step if axis_name is not None else rows_per_step // shards
    if rows_local > n_local:
        raise ValueError(f"One step needs {rows_local} images per shard but each of the "
                         f"{shards} shards has only {n_local}.")

    if axis_name is not None:
        def data_step(state, images_local):
            batch = _draw(images_local, key, state.step, rows_local,
                          jax.lax.axis_index(axis_name), order)
            return train_step(state, batch)
    elif mesh is None:
        def data_step(state, images):
            return train_step(state, _draw(images, key, state.step, rows_local, 0, order))
    else:
        draw = jax.shard_map(
            lambda images_local, step: _draw(images_local, key, step, rows_local,
                                             jax.lax.axis_index(parallel.AXIS), order),
            mesh=mesh, in_specs=(P(parallel.AXIS), P()), out_specs=P(parallel.AXIS))

        def data_step(state, images):
            return train_step(state, draw(images, state.step))

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
    n = shard_size(len(images_NHWC), mesh.devices.size) * mesh.devices.size
    return parallel.put_sharded_copy(images_NHWC[:n], mesh)
