"""Fashion-MNIST without internet: the four original IDX files in Debian's package
``dataset-fashion-mnist``, written once into the tfds data dir as the tfds dataset
``fashion_mnist_offline``.

The .deb is fetched with ``apt-get download`` (which installs nothing) and read here with
Python's own modules: an ``ar`` archive whose ``data.tar.xz`` holds the IDX files, gzipped.
Debian recompressed them, so the checksums are those of the uncompressed IDX files.
"""
import gzip
import io
import pathlib
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from gan_jax.data import offline

PACKAGE, DEB_VERSION = "dataset-fashion-mnist", "0.0~git20200523.55506a9-1"
DEB_NAME = f"{PACKAGE}_{DEB_VERSION}_all.deb"
DEB_SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
DEB_ENV = "GAN_JAX_FASHION_MNIST_DEB"
IDX_DIR = "usr/share/datasets/fashion-mnist/"
IDX_SHA256 = {  # Of the uncompressed files.
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]


class FashionMnistSourceError(offline.SourceError):
    pass


def _source() -> offline.SourceFile:
    return offline.SourceFile(
        name=DEB_NAME, sha256=DEB_SHA256, env=DEB_ENV, error=FashionMnistSourceError,
        command=("apt-get", "download", f"{PACKAGE}={DEB_VERSION}"),
        refresh=("Unable to locate package", ("apt-get", "update")),
        advice=(("Unable to locate package", "apt's package lists do not know it (empty or "
                 "stale lists): run `apt-get update` as root first."),
                ("was not found", f"This system's archive has another version of {PACKAGE}.")),
        how_to_fix=(f"Run `apt-get update` (as root) so that `apt-get download {PACKAGE}` "
                    f"works, or on a Debian/Ubuntu machine run `apt-get download {PACKAGE}` "
                    f"and point {DEB_ENV} at the downloaded {DEB_NAME}."))


def deb_path() -> pathlib.Path:
    """The verified .deb: ``$GAN_JAX_FASHION_MNIST_DEB``, else the cache, else a download."""
    return _source().path()


def identity() -> list[str]:
    """What identifies the data without reading it: the checksums and the tfds version."""
    return ["fashion_mnist", DEB_SHA256, *IDX_SHA256.values(), str(FashionMnistOffline.VERSION)]


def _ar_members(blob: bytes) -> dict[str, bytes]:
    if not blob.startswith(b"!<arch>\n"):
        raise FashionMnistSourceError("The .deb is not an ar archive.")
    members, pos = {}, 8
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        members[name] = blob[pos + 60:pos + 60 + size]
        pos += 60 + size + size % 2  # Members start at even offsets.
    return members


def read_idx_files(path: pathlib.Path) -> dict[str, bytes]:
    """The four uncompressed IDX files inside the .deb at ``path``, checksummed."""
    members = _ar_members(pathlib.Path(path).read_bytes())
    data = [v for k, v in members.items() if k.startswith("data.tar")]
    if not data:
        raise FashionMnistSourceError(f"{path} holds no data.tar.* ({sorted(members)}).")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data[0]), mode="r:*") as tar:
        for m in tar:
            name = m.name.removeprefix("./").removeprefix(IDX_DIR).removesuffix(".gz")
            if m.isfile() and name in IDX_SHA256:
                out[name] = offline.sha256_checked(
                    gzip.decompress(tar.extractfile(m).read()), IDX_SHA256[name],
                    f"{name} in {path}", FashionMnistSourceError)
    if missing := sorted(set(IDX_SHA256) - set(out)):
        raise FashionMnistSourceError(f"{path} lacks {missing} under {IDX_DIR}.")
    return out


def parse_idx(blob: bytes) -> np.ndarray:
    """An IDX file of unsigned bytes as an array of its shape."""
    ndim = blob[3]
    if blob[:3] != b"\0\0\x08":
        raise FashionMnistSourceError("Not an IDX file of unsigned bytes.")
    shape = np.frombuffer(blob[4:4 + 4 * ndim], ">u4").astype(int)
    return np.frombuffer(blob[4 + 4 * ndim:], np.uint8).reshape(shape)


def read_arrays(path: pathlib.Path):
    """{"train": (images uint8 [60000, 28, 28, 1], labels), "test": (... [10000] ...)}."""
    idx = {k: parse_idx(v) for k, v in read_idx_files(path).items()}
    return {split: (idx[f"{prefix}-images-idx3-ubyte"][..., None],
                    idx[f"{prefix}-labels-idx1-ubyte"].astype(np.int64))
            for split, prefix in (("train", "train"), ("test", "t10k"))}


class FashionMnistOffline(offline.OfflineImages):
    """Fashion-MNIST (60,000 train, 10,000 test) from Debian's dataset-fashion-mnist."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"The IDX files of Debian's {PACKAGE} {DEB_VERSION}, original "
                              "order."}
    HOMEPAGE = "https://packages.debian.org/bookworm/dataset-fashion-mnist"
    CLASS_NAMES = CLASS_NAMES

    def read_arrays(self):
        return read_arrays(deb_path())


def prepare(data_dir: str | None) -> None:
    """Writes ``fashion_mnist_offline`` into ``data_dir`` unless it is already there."""
    offline.prepare(FashionMnistOffline, data_dir)
