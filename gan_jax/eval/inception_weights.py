"""The FID Inception's weights: pytorch-fid's state dict converted to a PyTorch-free .npz,
checked array by array against the Flax model, and where to find the file.

The .npz holds one array per parameter, keyed by its Flax path (``Mixed_5b/branch1x1/conv/
kernel``), plus ``__meta__`` (JSON: the source file and its sha256). Converting needs
PyTorch (``gan_jax.eval.convert_inception``); loading does not.
"""
import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gan_jax import files
from gan_jax.errors import GanJaxError
from gan_jax.eval.inception import FIDInceptionV3

ENV = "GAN_JAX_INCEPTION_WEIGHTS"
PTH_NAME = "pt_inception-2015-12-05-6726825d.pth"
PTH_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
           + PTH_NAME)
NPZ_NAME = "pt_inception-2015-12-05-6726825d.npz"


class InceptionWeightsError(GanJaxError):
    pass


def default_path() -> pathlib.Path:
    return files.cache_dir() / NPZ_NAME


def how_to_get(out: str | os.PathLike | None = None) -> str:
    out = out or default_path()
    return (f"On a machine with internet download {PTH_URL}, then (with PyTorch: "
            f"`pip install \"gan_jax[torch]\"`) run `python -m gan_jax.eval.convert_inception "
            f"--pth={PTH_NAME} --out={out}` and copy the .npz here; pass it with "
            f"--inception_weights=PATH or ${ENV}=PATH, or put it at {default_path()}.")


def resolve_path(explicit: str | os.PathLike | None = None) -> pathlib.Path:
    """The weights file: ``explicit`` (a flag or config value), else ``$GAN_JAX_INCEPTION_WEIGHTS``,
    else the cache. Raises naming every place looked at and how to make the file."""
    tried = []
    for origin, value in (("given path", explicit), (f"${ENV}", os.environ.get(ENV)),
                          ("default location", default_path())):
        if not value:
            continue
        path = pathlib.Path(value).expanduser()
        if path.is_file():
            if path.suffix == ".pth":
                raise InceptionWeightsError(
                    f"{path} ({origin}) is a PyTorch file; gan_jax loads the converted .npz. "
                    + how_to_get(path.with_suffix(".npz")))
            return path
        tried.append(f"{path} ({origin})")
        if origin != "default location":
            break  # An explicit choice that does not exist is an error, not a fallback.
    raise InceptionWeightsError("FID Inception weights file not found; looked for "
                                + ", ".join(tried) + ". " + how_to_get())


@functools.cache
def param_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter of the Flax model and its shape, without running it."""
    model = FIDInceptionV3(resize=None)
    tree = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, 75, 75, 3))))["params"]
    flat = traverse_util.flatten_dict(tree, sep="/")
    return {k: tuple(v.shape) for k, v in flat.items()}


def check_shapes(flat: dict[str, np.ndarray], source: str) -> None:
    """Raises listing every array that is missing, unexpected or of the wrong shape."""
    want = param_shapes()
    problems = []
    for key in sorted(set(want) | set(flat)):
        if key not in flat:
            problems.append(f"{key}: missing, model has {list(want[key])}")
        elif key not in want:
            problems.append(f"{key}: {list(np.shape(flat[key]))} in the file, not in the model")
        elif tuple(np.shape(flat[key])) != want[key]:
            problems.append(f"{key}: {list(np.shape(flat[key]))} in the file, model has "
                            f"{list(want[key])}")
    if problems:
        raise InceptionWeightsError(
            f"{source} does not fit the FID Inception-v3 ({len(problems)} arrays differ):\n  "
            + "\n  ".join(problems[:30]) + "\nIt must be the conversion of " + PTH_NAME
            + ". " + how_to_get())


_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def from_state_dict(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """pytorch-fid's ``fid_inception_v3`` state dict (as NumPy arrays) -> Flax paths and
    layouts: conv OIHW -> HWIO, fc [out, in] -> [in, out]; BatchNorm's counters dropped."""
    out = {}
    for name, value in state_dict.items():
        value = np.asarray(value)
        parts = name.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        if parts[-2:-1] == ["conv"] and parts[-1] == "weight" and value.ndim == 4:
            out["/".join(parts[:-1] + ["kernel"])] = value.transpose(2, 3, 1, 0)
        elif parts[-2:-1] == ["bn"] and parts[-1] in _BN:
            out["/".join(parts[:-2] + [_BN[parts[-1]]])] = value
        elif parts[0] == "fc" and parts[-1] == "weight" and value.ndim == 2:
            out["fc/kernel"] = value.T
        elif parts[0] == "fc" and parts[-1] == "bias":
            out["fc/bias"] = value
        else:  # Kept under its PyTorch name so check_shapes reports it as unexpected.
            out[name] = value
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def to_state_dict(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of ``from_state_dict``: arrays named and laid out as pytorch-fid's."""
    inverse = {v: k for k, v in _BN.items()}
    out = {}
    for key, value in flat.items():
        *path, leaf = key.split("/")
        if path == ["fc"]:
            out[f"fc.{'weight' if leaf == 'kernel' else 'bias'}"] = value.T if leaf == "kernel" \
                else value
        elif leaf == "kernel":
            out[".".join(path + ["weight"])] = value.transpose(3, 2, 0, 1)
        else:
            out[".".join(path + ["bn", inverse[leaf]])] = value
            out[".".join(path + ["bn", "num_batches_tracked"])] = np.array(0, np.int64)
    return out


def save(flat: dict[str, np.ndarray], path, meta: dict) -> str:
    """Checks and writes the .npz atomically; returns its sha256."""
    check_shapes(flat, "The converted state dict")
    return files.write_npz(path, flat, meta)


def load(path) -> tuple[dict, str]:
    """(Flax ``params`` tree, sha256 of the file) from a converted .npz."""
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            flat = {k: npz[k] for k in npz.files if not k.startswith("__")}
    except (OSError, ValueError) as e:
        raise InceptionWeightsError(f"Could not read {path} as an .npz ({e}). "
                                    + how_to_get()) from None
    check_shapes(flat, str(path))
    return traverse_util.unflatten_dict(flat, sep="/"), files.file_sha256(path)


def random_params(seed: int = 0) -> dict[str, np.ndarray]:
    """Flat random weights for tests: He-scaled kernels and BatchNorm statistics near
    identity, so activations keep their scale through the 94 layers."""
    rng = np.random.RandomState(seed)
    out = {}
    for key, shape in sorted(param_shapes().items()):
        leaf = key.rsplit("/", 1)[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            out[key] = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        elif leaf in ("scale", "var"):
            out[key] = rng.uniform(0.5, 1.5, shape)
        else:  # bias, mean
            out[key] = rng.normal(0, 0.1, shape)
    return {k: v.astype(np.float32) for k, v in out.items()}
