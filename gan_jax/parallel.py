"""Devices, meshes and shardings; start-up of several processes (hosts).

The main path is ``jax.jit`` over a one-axis ("data") mesh: the state is replicated, the
global batch is split along its first axis, and XLA inserts the all-reduces. ``pmap`` is
provided for code written per device (``steps.make_train_step(axis_name="data")``).
"""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gan_jax.errors import ConfigError

AXIS = "data"


def initialize(coordinator_address: str = "", num_processes: int = 0,
               process_id: int = -1) -> None:
    """Starts ``jax.distributed`` when several processes are asked for, by arguments or by
    GAN_JAX_COORDINATOR / GAN_JAX_NUM_PROCESSES / GAN_JAX_PROCESS_ID; with none of them,
    cluster environments JAX detects itself (SLURM, ...) are used when present."""
    coordinator_address = coordinator_address or os.environ.get("GAN_JAX_COORDINATOR", "")
    num_processes = num_processes or int(os.environ.get("GAN_JAX_NUM_PROCESSES", "0"))
    if process_id < 0:
        process_id = int(os.environ.get("GAN_JAX_PROCESS_ID", "-1"))
    if not coordinator_address:
        if num_processes > 1:
            raise ConfigError(f"{num_processes} processes were asked for but no coordinator "
                              "address; pass --coordinator_address=HOST:PORT.")
        return
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(f"process_id must be in [0, num_processes); got process_id="
                          f"{process_id}, num_processes={num_processes}.")
    # CPU processes talk through gloo; GPU processes use NCCL whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=120)
    if jax.process_count() != num_processes:
        raise ConfigError(f"This process was told num_processes={num_processes}, but the "
                          f"coordinator at {coordinator_address} runs {jax.process_count()}.")


def make_mesh(num_devices: int = 0) -> Mesh:
    """A ("data",) mesh over the first ``num_devices`` devices (0: all of them)."""
    devices = jax.devices()
    n = num_devices or len(devices)
    if n > len(devices) or (jax.process_count() > 1 and n != len(devices)):
        raise ConfigError(f"config.parallel.num_devices={num_devices} does not match the "
                          f"{len(devices)} devices of {jax.process_count()} process(es); use 0 "
                          "for all of them" + (" (required with several processes)."
                                               if jax.process_count() > 1 else "."))
    return Mesh(np.asarray(devices[:n]), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def check_batch(rows: int, mesh: Mesh, what: str = "global batch") -> None:
    """A clear error, before any compile, for a batch the devices cannot share evenly."""
    n = mesh.devices.size
    if rows % n:
        raise ConfigError(f"The {what} of {rows} images does not divide evenly over {n} "
                          f"devices; use a multiple of {n} (config.batch_size * n_dis).")
    if rows % jax.process_count():
        raise ConfigError(f"The {what} of {rows} images does not divide over "
                          f"{jax.process_count()} processes.")


def create_state(create_fn, key, mesh: Mesh):
    """Builds the state directly in place, replicated on every device of ``mesh``."""
    shardings = jax.tree.map(lambda _: replicated(mesh), jax.eval_shape(create_fn, key))
    return jax.jit(create_fn, out_shardings=shardings)(key)


def shard_step(step, mesh: Mesh, *, batch_spec=P(AXIS), extra_specs=(), donate: bool = True,
               state_spec=P()):
    """``jax.jit(step)`` with the state replicated (or placed by ``state_spec``, e.g. runs
    split over the devices), the batch split along ``"data"`` (or as ``batch_spec`` says),
    replicated metrics and the state donated (unless ``donate`` is False: then XLA cannot
    update the state in place)."""
    rep, state = replicated(mesh), NamedSharding(mesh, state_spec)
    in_shardings = (state, NamedSharding(mesh, batch_spec),
                    *(NamedSharding(mesh, s) for s in extra_specs))
    return jax.jit(step, in_shardings=in_shardings, out_shardings=(state, rep),
                   donate_argnums=0 if donate else ())


def pmap_step(step, donate: bool = True):
    """``jax.pmap`` over the "data" axis with the (replicated) state donated; build the step
    with ``make_train_step(..., axis_name="data")`` and G, D with ``axis_name="data"``."""
    return jax.pmap(step, axis_name=AXIS, donate_argnums=0 if donate else ())


def stacked_sharding(devices) -> NamedSharding:
    """A leading axis of size len(devices), one slice per device: what ``pmap`` takes."""
    return NamedSharding(Mesh(np.asarray(devices), ("pmap",)), P("pmap"))


def replicate(tree, devices=None):
    """Stacks a copy of ``tree`` per local device, for ``pmap``."""
    devices = devices or jax.local_devices()
    sharding = stacked_sharding(devices)
    return jax.tree.map(
        lambda x: jax.device_put(jax.numpy.broadcast_to(x, (len(devices), *x.shape)), sharding),
        tree)


def unreplicate(tree):
    """The first local device's copy of a ``pmap``-replicated tree, on that device alone.

    Not ``x[0]``: on an array stacked over n devices that is an n-device program with an
    all-reduce of the whole array, once per leaf. Besides the wasted traffic, a burst of
    those on XLA:CPU's fake devices sometimes left one device's share unscheduled until
    its 40 s rendezvous limit aborted the process (seen in CI)."""
    def first(x):
        if not isinstance(x, jax.Array):
            return x[0]
        shard = x.addressable_shards[0].data
        # A NamedSharding keeps the stacked axis (size 1) in each shard, PmapSharding not.
        return shard.reshape(x.shape[1:]) if shard.ndim == x.ndim else shard
    return jax.tree.map(first, tree)


def split_for_pmap(batch, n: int):
    """[N, ...] -> [n, N / n, ...]: each device's share, in order."""
    if batch.shape[0] % n:
        raise ConfigError(f"A batch of {batch.shape[0]} does not split over {n} devices.")
    return batch.reshape(n, batch.shape[0] // n, *batch.shape[1:])


def put_global(host_rows, mesh: Mesh, spec=P(AXIS)):
    """A global array from this process's rows (its share of the first axis)."""
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), host_rows)


def put_sharded_copy(full, mesh: Mesh):
    """A global array split along its first axis from a copy of the whole array that every
    process holds (device-resident datasets)."""
    sharding = batch_sharded(mesh)
    return jax.make_array_from_callback(full.shape, sharding, lambda idx: full[idx])


def to_host(tree):
    """Fetches replicated arrays to NumPy on any process (where ``device_get`` would refuse
    arrays that span other processes' devices), all leaves in one batched copy."""
    leaves, treedef = jax.tree.flatten(tree)
    local = [x.addressable_data(0) if isinstance(x, jax.Array) and not x.is_fully_addressable
             else x for x in leaves]
    return jax.tree.unflatten(treedef, [np.asarray(x) for x in jax.device_get(local)])


def is_writer() -> bool:
    """Only process 0 writes logs, grids and evaluation lines."""
    return jax.process_index() == 0
