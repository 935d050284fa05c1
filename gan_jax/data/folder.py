"""Any folder (or .zip) of images as a tfds dataset in the data dir, which ``sources`` and
``streaming`` then read by name like any other.

``prepare(src, name, resolution)`` reads every image file under ``src`` (PNG, JPEG, WebP, and
BMP, GIF, TIFF: what Pillow reads), converts it to ``channels`` (3: RGB, 1: grayscale;
transparency is composited over white), centre-crops it to a square and resizes it
(Lanczos) to ``resolution`` x ``resolution``. It writes split "train" of the tfds dataset
``name`` in array_record format with feature "image", a uint8 ``Tensor`` [R, R, C] (raw
pixels, zstd-compressed by array_record, as ``mnist_offline`` stores them), and with
``labels="folders"`` feature "label", a ``ClassLabel`` named after the source's immediate
subfolders, sorted (an image's class is the one it lies in, at any depth). ``tfds.builder(name, data_dir=...).info`` gives the shape and classes.
Hidden files and folders are left out; in a .zip, so is __MACOSX/, and a single top folder
that holds everything is taken for the root.

Files that cannot be read are skipped and reported. Every image is read (into a scratch
array) before tfds writes the dataset, both inside a hidden temporary folder in the data dir;
the finished dataset folder is then renamed into place. A failed or interrupted run leaves
no dataset behind, and a killed one leaves only its temporary folder, which the next run
removes.
"""
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import io
import os
import pathlib
import re
import shutil
import tempfile
import threading
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from gan_jax.data import sources
from gan_jax.errors import GanJaxError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".gif", ".tif",
                  ".tiff")
MAX_RESOLUTION = 4096
DATASET_VERSION = "1.0.0"
SPLIT = "train"
LABELS = ("none", "folders")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SCRATCH_PREFIX = ".gan_jax-prepare-"  # Temporary folders in the data dir.
_CHUNK = 4096  # Files handed to the reading threads at a time.
_BUFFER = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>")  # In Pillow's messages.


class FolderError(GanJaxError, ValueError):
    """A source, name or option that cannot make a dataset; the message says why."""


@dataclasses.dataclass(frozen=True)
class Report:
    name: str
    path: pathlib.Path  # The dataset's folder in the data dir.
    num_examples: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...] | None  # None without labels.
    class_counts: tuple[int, ...] | None
    skipped: tuple[tuple[str, str], ...]  # (file, why) for each file that could not be read.
    upscaled: int  # Images smaller than the resolution (after the crop), enlarged.
    ignored: int  # Files not taken for images: no image suffix, or hidden.
    removed: tuple[str, ...]  # Leftovers of killed runs, removed from the data dir.


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FolderError(f"Bad dataset name {name!r}: use 1 to 64 lowercase letters, digits and "
                          "underscores, starting with a letter (e.g. my_photos).")
    reserved = set(sources.ALIASES) | set(sources.ALIASES.values())
    try:
        known = name in reserved or bool(tfds.builder_cls(name))
    except tfds.core.registered.DatasetNotFoundError:
        known = False
    except Exception:  # tfds has the name but cannot import its builder here.
        known = True
    if known:
        raise FolderError(f"Dataset name {name!r} is taken by a tfds or gan_jax dataset (which "
                          "would be read instead of this one); choose another.")
    return name


def check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) \
            or not 1 <= resolution <= MAX_RESOLUTION:
        raise FolderError(f"Bad resolution {resolution!r}: give the side of the square images "
                          f"to store, from 1 to {MAX_RESOLUTION} (e.g. 32, 64, 128).")
    return resolution


def _to_channels(im: Image.Image, channels: int) -> Image.Image:
    """``im`` as 8-bit "RGB" or "L"; alpha is composited over white."""
    if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):  # 16-bit gray
        im = Image.fromarray((np.asarray(im, np.uint32) // 257).astype(np.uint8))
    elif im.mode in ("I", "F"):
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8))
    if "A" in im.mode or "a" in im.mode or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert("RGB" if channels == 3 else "L")


def convert_image(data: bytes, resolution: int, channels: int = 3) -> tuple[np.ndarray, bool]:
    """(uint8 [resolution, resolution, channels], whether it was enlarged) of one encoded
    image: oriented by its EXIF tag, converted, centre-cropped to a square, resized."""
    with Image.open(io.BytesIO(data)) as im:
        im = _to_channels(ImageOps.exif_transpose(im), channels)
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    # Cropped first: resize's box= would let the filter read pixels outside the square.
    im = im.crop((left, top, left + side, top + side)).resize(
        (resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(im, np.uint8).reshape(resolution, resolution, channels), side < resolution


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.split("/"))


class _Folder:
    def __init__(self, root: pathlib.Path):
        self.root = root

    def names(self) -> list[str]:
        out = []
        for dirpath, _, filenames in os.walk(self.root):
            rel = pathlib.Path(dirpath).relative_to(self.root).as_posix()
            out += [f if rel == "." else f"{rel}/{f}" for f in filenames]
        return out

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def close(self):
        pass


class _Zip:
    """A zip's files; a single top folder that holds everything counts as the root."""

    def __init__(self, path: pathlib.Path):
        self._zip = zipfile.ZipFile(path)
        self._lock = threading.Lock()
        members = [i.filename for i in self._zip.infolist() if not i.is_dir()]
        tops = {m.split("/", 1)[0] for m in members if not _hidden(m)}
        strip = (len(tops) == 1 and all("/" in m for m in members if not _hidden(m)))
        self._members = {(m.split("/", 1)[1] if strip and not _hidden(m) else m): m
                         for m in members}

    def names(self) -> list[str]:
        return list(self._members)

    def read(self, rel: str) -> bytes:
        with self._lock:
            return self._zip.read(self._members[rel])

    def close(self):
        self._zip.close()


def _open_source(src) -> "_Folder | _Zip":
    path = pathlib.Path(src).expanduser()
    if not path.exists():
        raise FolderError(f"Source {src} does not exist; give a folder of images or a .zip.")
    if path.is_dir():
        return _Folder(path)
    if zipfile.is_zipfile(path):
        try:
            return _Zip(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise FolderError(f"Cannot read the zip {src}: {e}") from None
    raise FolderError(f"Source {src} is neither a folder nor a .zip file.")


def _list(source, src, labels: str):
    """(image files sorted, label of each or None, class names or None, number ignored)."""
    names = source.names()
    files = sorted(n for n in names if not _hidden(n) and n.lower().endswith(IMAGE_SUFFIXES))
    ignored = len(names) - len(files)
    if not files:
        raise FolderError(f"Source {src} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                          + (f"; it has {ignored} other files." if ignored else "; it is empty."))
    if labels == "none":
        return files, None, None, ignored
    loose = [f for f in files if "/" not in f]
    if loose:
        raise FolderError(f"labels=folders takes each subfolder of {src} for a class, but "
                          f"{len(loose)} images lie directly in it (e.g. {loose[0]}). Move them "
                          "into class folders, or use labels=none.")
    class_names = sorted({f.split("/", 1)[0] for f in files})
    index = {c: i for i, c in enumerate(class_names)}
    return files, [index[f.split("/", 1)[0]] for f in files], class_names, ignored


def _read_all(source, files, pixels, resolution, channels, threads, progress):
    """Converts every file into ``pixels``; (kept mask, [(file, why)], number enlarged)."""
    ok = np.zeros(len(files), bool)
    skipped, upscaled = [], 0

    def work(i):
        try:
            image, enlarged = convert_image(source.read(files[i]), resolution, channels)
        except Exception as e:  # Whatever Pillow or the file system raises: unreadable.
            return i, _BUFFER.sub("", f"{type(e).__name__}: {e}"), False
        pixels[i] = image
        return i, None, enlarged

    pool = concurrent.futures.ThreadPoolExecutor(threads or min(32, os.cpu_count() or 1))
    try:
        for start in range(0, len(files), _CHUNK):  # Not a future per file all at once.
            for i, why, enlarged in pool.map(work, range(start, min(len(files),
                                                                    start + _CHUNK))):
                if why is None:
                    ok[i], upscaled = True, upscaled + enlarged
                else:
                    skipped.append((files[i], why))
                if progress:
                    progress(i + 1, len(files))
    finally:  # On an interrupt, drop the queued files instead of reading them all first.
        pool.shutdown(wait=True, cancel_futures=True)
    return ok, skipped, upscaled


def _examples(files, pixels, ok, labels):
    """tfds's (key, example) pairs; the key (the file) fixes tfds's shuffled order."""
    for i in np.flatnonzero(ok):
        example = {"image": pixels[i]}
        if labels is not None:
            example["label"] = labels[i]
        yield files[i], example


class _FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A tfds builder for one prepared folder; only ``prepare`` runs it (readers load the
    dataset from its files, without this class)."""

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {DATASET_VERSION: "Written by gan_jax.data.folder."}

    def __init__(self, *, name, features, examples, description, data_dir):
        self.name = name  # As tfds's own AdhocBuilder does: the dataset's name, per instance.
        self._features, self._examples, self._description = features, examples, description
        super().__init__(data_dir=data_dir, file_format="array_record")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description=self._description, features=self._features,
            supervised_keys=("image", "label") if "label" in self._features else None)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {SPLIT: self._examples}

    def _generate_examples(self):
        raise NotImplementedError  # _split_generators hands tfds the examples itself.

    # tfds prints where it writes (the temporary folder) and says "downloaded"; prepare's
    # caller reports the outcome instead.
    def _log_download_bytes(self):
        pass

    def _log_download_done(self):
        pass


def _try_lock(path: pathlib.Path):
    """The open file ``path`` exclusively locked, or None where another process holds the
    lock or the file system has no locks."""
    f = open(path, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return f
    except OSError:
        f.close()
        return None


@contextlib.contextmanager
def _scratch(data_dir: pathlib.Path, name: str):
    """A hidden temporary folder in ``data_dir``, removed at the end. It holds a locked
    ``.lock`` while in use: a run killed with it leaves the lock free, so the next run can
    tell its leftovers from a folder that another run is writing."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{name}-", dir=data_dir))
    lock = _try_lock(tmp / ".lock.new")
    try:
        if lock is not None:  # Named .lock only once held, so no one sees it free meanwhile.
            os.rename(tmp / ".lock.new", tmp / ".lock")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            lock.close()


def _remove_leftovers(data_dir: pathlib.Path) -> list[str]:
    removed = []
    for path in sorted(data_dir.glob(f"{_SCRATCH_PREFIX}*")):
        if not (path / ".lock").is_file():
            continue  # Just made by a live run, or the file system has no locks: keep it.
        lock = _try_lock(path / ".lock")
        if lock is not None:  # Its run is gone.
            shutil.rmtree(path, ignore_errors=True)
            lock.close()
            removed.append(path.name)
    return removed


def _exists_error(final: pathlib.Path) -> FolderError:
    return FolderError(f"{final} already exists. Choose another name, or replace it with "
                       "--overwrite (overwrite=True).")


def prepare(src, name: str, resolution: int, *, channels: int = 3, labels: str = "none",
            data_dir: str | None = None, overwrite: bool = False, threads: int | None = None,
            progress=None) -> Report:
    """Writes the images under ``src`` (a folder or a .zip) as the tfds dataset ``name`` in
    ``data_dir`` (else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``); see the module's
    docstring. ``progress(done, total)`` is called as images are read."""
    check_name(name)
    check_resolution(resolution)
    if channels not in (1, 3):
        raise FolderError(f"Bad channels {channels!r}: 1 (grayscale) or 3 (RGB).")
    if labels not in LABELS:
        raise FolderError(f"Bad labels {labels!r}: 'none', or 'folders' (each subfolder of "
                          "the source is a class).")
    root = pathlib.Path(sources.resolve_data_dir(data_dir))
    final = root / name
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise _exists_error(final)
    source = _open_source(src)
    try:
        files, label_of, class_names, ignored = _list(source, src, labels)
        root.mkdir(parents=True, exist_ok=True)
        removed = _remove_leftovers(root)
        shape = (resolution, resolution, channels)
        with _scratch(root, name) as tmp:
            pixels = np.lib.format.open_memmap(tmp / "pixels.npy", "w+", np.uint8,
                                               (len(files), *shape))
            ok, skipped, upscaled = _read_all(source, files, pixels, resolution, channels,
                                              threads, progress)
            if not ok.any():
                raise FolderError(f"None of the {len(files)} image files in {src} could be "
                                  f"read (e.g. {skipped[0][0]}: {skipped[0][1]}).")
            features = {"image": tfds.features.Tensor(shape=shape, dtype=np.uint8)}
            if class_names is not None:
                features["label"] = tfds.features.ClassLabel(names=class_names)
            description = (f"{int(ok.sum())} images from {pathlib.Path(src).resolve()} "
                           f"({len(skipped)} unreadable files skipped), centre-cropped and "
                           f"resized to {resolution}x{resolution}x{channels} by "
                           f"gan_jax.data.folder; labels: {labels}.")
            builder = _FolderBuilder(
                name=name, features=tfds.features.FeaturesDict(features), data_dir=tmp,
                examples=_examples(files, pixels, ok, label_of), description=description)
            tfds.disable_progress_bar()
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
            del pixels
            if final.exists() or final.is_symlink():  # Checked again: it may be new.
                if not overwrite:
                    raise _exists_error(final)
                os.rename(final, tmp / "replaced")
            try:
                os.rename(tmp / name, final)
            except OSError as e:  # Another run put one there in between.
                raise FolderError(f"Could not move the dataset into {final}: {e}") from None
    finally:
        source.close()
    counts = None
    if class_names is not None:
        kept = np.asarray(label_of)[ok]
        counts = tuple(int((kept == k).sum()) for k in range(len(class_names)))
    return Report(name=name, path=final, num_examples=int(ok.sum()), image_shape=shape,
                  class_names=None if class_names is None else tuple(class_names),
                  class_counts=counts, skipped=tuple(skipped), upscaled=upscaled,
                  ignored=ignored, removed=tuple(removed))
