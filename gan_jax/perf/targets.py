"""Compile-only GPU devices: a GPU's topology built from its target description, so that a
machine without that GPU compiles programs for it (to read their kernels and memory, not
to run them). Needs jax >= 0.11 with its CUDA plugin; the host's own backend stays CPU.
"""
import pathlib
import re

from gan_jax import parallel
from gan_jax.errors import ConfigError

_HOW = ("Compile-only GPU devices need jax >= 0.11 (Python >= 3.12) with its CUDA plugin, "
        "`pip install \"jax[cuda13]\"`, and JAX_PLATFORMS=cpu where there is no GPU.")


def read(path) -> str:
    """A target description (text proto), e.g. experiments/gpu_targets/h200.textproto, or
    one `save` wrote on the GPU itself."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"No GPU target description at {path}: pass a .textproto that "
                          f"`gan_jax.perf.targets.save` wrote on that GPU, or one from "
                          f"experiments/gpu_targets/.")
    return path.read_text()


def memory_bandwidth(target_config: str) -> float:
    """The GPU's memory bandwidth in bytes/s, from its target description."""
    m = re.search(r"memory_bandwidth:\s*(\d+)", target_config)
    if not m:
        raise ConfigError("The GPU target description has no memory_bandwidth field.")
    return float(m.group(1))


def mesh(target_config: str, platform: str = "cuda"):
    """A one-device ("data",) mesh over a compile-only device of that description."""
    try:
        from jax.experimental import topologies
        topo = topologies.get_topology_desc(platform=platform, target_config=target_config,
                                            topology="1x1x1")
    except Exception as e:  # Which error depends on what is missing: jax, plugin, proto.
        raise ConfigError(f"Could not make a compile-only {platform} device "
                          f"({type(e).__name__}: {str(e)[:300]}). {_HOW}") from None
    return topologies.make_mesh(topo, (1,), (parallel.AXIS,))


def device_bandwidth(device) -> float | None:
    """A real GPU's memory bandwidth in bytes/s from its target description; None where
    there is none (a CPU, or a jax without the accessor)."""
    try:
        return memory_bandwidth(_target_config([device]))
    except Exception:  # Only a GPU has one; the caller then leaves the floors out.
        return None


def _target_config(devices) -> str:
    from jax._src.lib import xla_client  # The description has no public accessor yet.
    return str(xla_client.get_topology_for_devices(list(devices)).target_config)


def save(path, devices) -> None:
    """Writes the target description of ``devices`` (real GPUs) for later `read`."""
    from gan_jax.files import atomic_write_bytes
    atomic_write_bytes(pathlib.Path(path), _target_config(devices).encode())
