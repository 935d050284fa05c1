"""Image datasets read through tensorflow-datasets into host memory as uint8 NHWC arrays.

Any tfds dataset prepared in the data dir in array_record format loads by name; ``mnist``
is the offline copy (``mnist_offline``), written there on first use, and so is
``fashion_mnist`` (``fashion_mnist_offline``) unless tfds's own ``fashion_mnist`` is prepared
there. Reading goes through ``tfds.data_source``, which needs no TensorFlow.
"""
import contextlib
import dataclasses
import io
import logging
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from PIL import Image

from gan_jax.data import fashion_mnist_offline, mnist_offline
from gan_jax.errors import GanJaxError

ALIASES = {"mnist": "mnist_offline", "fashion_mnist": "fashion_mnist_offline"}
_OFFLINE = {"mnist_offline": mnist_offline.prepare,
            "fashion_mnist_offline": fashion_mnist_offline.prepare}
_TFDS_FIRST = ("fashion_mnist",)  # Read as tfds's own dataset where that is prepared.
_READ_CHUNK = 4096


class DatasetError(GanJaxError, ValueError):
    """A dataset that cannot be loaded; the message says how to make it loadable."""


@dataclasses.dataclass(frozen=True)
class ImageData:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray | None  # int [N], when the dataset has labels
    name: str
    split: str
    data_dir: str
    num_classes: int | None = None  # From the dataset's metadata (its label feature's).

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def resolve_data_dir(data_dir: str | None) -> str:
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                              or "~/tensorflow_datasets")


def _how_to_prepare(name: str, data_dir: str) -> str:
    return (f"This machine does not download datasets. On a machine with internet and "
            f"TensorFlow run `tfds build {name} --file_format=array_record "
            f"--data_dir=<dir>` and copy <dir>/{name} into {data_dir} (or set "
            f"config.dataset.data_dir / $TFDS_DATA_DIR to a dir that holds it).")


def resolve(name: str, data_dir: str) -> str:
    """The tfds dataset that ``name`` reads in ``data_dir``; an offline copy that stands in
    for it is written there first."""
    if (name in _TFDS_FIRST and os.path.isdir(os.path.join(data_dir, name))
            and tfds.builder(name, data_dir=data_dir).is_prepared()):
        return name
    tfds_name = ALIASES.get(name, name)
    if tfds_name in _OFFLINE:
        # tfds prints its own "Downloading and preparing ..." lines while gan_jax writes the
        # offline copy, which downloads nothing; the copy's module says what it does.
        with quiet_tfds(), contextlib.redirect_stdout(io.StringIO()):
            _OFFLINE[tfds_name](data_dir)
    return tfds_name


@contextlib.contextmanager
def quiet_tfds():
    """Only tfds's errors, for the calls inside: a first run otherwise logs "Variant folder
    ... has no dataset_info.json" while it checks a dataset it is about to write."""
    level, logger = absl_logging.get_verbosity(), logging.getLogger("absl")
    std_level = logger.level
    absl_logging.set_verbosity(max(level, absl_logging.ERROR))
    logger.setLevel(max(std_level, logging.ERROR))  # Outside absl's app.run too.
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)
        logger.setLevel(std_level)


def prepared_builder(name: str, data_dir: str):
    try:
        with quiet_tfds():
            builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetError(
            f"Unknown dataset {name!r}: tfds has no dataset of that name and {data_dir} "
            f"holds no prepared copy of it. gan_jax also knows {sorted(ALIASES)}. "
            + _how_to_prepare(name, data_dir)) from None
    except ValueError as e:
        if "Parsing builder name string" not in str(e):
            raise
        plain = re.sub(r"[^a-z0-9_]", "", name.lower())
        raise DatasetError(
            f"{name!r} is not a tfds dataset name: names are lowercase letters, digits and "
            f"underscores, as tfds lists them (e.g. 'mnist', 'cifar10', 'celeb_a'), "
            f"optionally with '/<config>' and ':<version>'"
            + (f"; did you mean {plain!r}?" if plain and plain != name else ".")
            + f" Set config.dataset.name to one; gan_jax also knows {sorted(ALIASES)}.") from None
    if not builder.is_prepared():
        raise DatasetError(f"Dataset {name!r} is not prepared in {data_dir}. "
                           + _how_to_prepare(name, data_dir))
    fmt = builder.info.file_format
    if fmt is not None and fmt.value != "array_record":
        raise DatasetError(
            f"Dataset {name!r} in {data_dir} is stored as {fmt.value}, but gan_jax reads "
            f"array_record without TensorFlow. Convert it once with `tfds convert_format "
            f"--root_data_dir={data_dir} --out_file_format=array_record`, or rebuild it with "
            "--file_format=array_record.")
    return builder


def center_crop_resize(images, resolution: int):
    out = np.empty((len(images), resolution, resolution, images.shape[-1]), np.uint8)
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        pil = Image.fromarray(im[top:top + s, left:left + s].squeeze(-1) if im.shape[-1] == 1
                              else im[top:top + s, left:left + s])
        res = np.asarray(pil.resize((resolution, resolution), Image.Resampling.BICUBIC,
                                    reducing_gap=None))
        out[i] = res.reshape(resolution, resolution, -1)
    return out


def image_shape(name: str, data_dir: str | None = None, image_key: str = "image",
                resolution: int | None = None) -> tuple[int, int, int]:
    """The shape of the images ``load`` or the streaming pipeline would produce."""
    data_dir = resolve_data_dir(data_dir)
    features = prepared_builder(resolve(name, data_dir), data_dir).info.features
    if image_key not in features:
        raise DatasetError(f"Dataset {name!r} has no feature {image_key!r} (features: "
                           f"{sorted(features)}); set config.dataset.image_key.")
    shape = tuple(features[image_key].shape)
    shape = shape + (1,) if len(shape) == 2 else shape
    if resolution:
        return (resolution, resolution, shape[-1])
    if None in shape:
        raise DatasetError(f"Images of {name!r} vary in size {shape}; set "
                           "config.dataset.resolution to crop and resize them.")
    return shape


def num_classes(name: str, data_dir: str | None = None, label_key: str = "label") -> int | None:
    """The classes of ``label_key`` in the dataset's metadata; None without such labels."""
    data_dir = resolve_data_dir(data_dir)
    features = prepared_builder(resolve(name, data_dir), data_dir).info.features
    return getattr(features[label_key], "num_classes", None) if label_key in features else None


def load(name: str, split: str = "train", data_dir: str | None = None,
         image_key: str = "image", label_key: str | None = "label",
         resolution: int | None = None, max_examples: int | None = None) -> ImageData:
    """Reads ``split`` of a tfds image dataset. ``resolution`` center-crops to a square and
    resizes (bicubic) when the stored images have another size."""
    data_dir = resolve_data_dir(data_dir)
    builder = prepared_builder(resolve(name, data_dir), data_dir)
    if split not in builder.info.splits:
        raise DatasetError(f"Dataset {name!r} has no split {split!r}; it has "
                           f"{sorted(builder.info.splits)}.")
    features = builder.info.features
    if image_key not in features:
        raise DatasetError(f"Dataset {name!r} has no feature {image_key!r} (features: "
                           f"{sorted(features)}); set config.dataset.image_key.")
    source = builder.as_data_source(split=split)
    n = len(source) if max_examples is None else min(len(source), max_examples)
    images, labels = [], []
    for start in range(0, n, _READ_CHUNK):
        rows = source.__getitems__(list(range(start, min(n, start + _READ_CHUNK))))
        chunk = np.stack([np.asarray(r[image_key]) for r in rows])
        if chunk.ndim == 3:
            chunk = chunk[..., None]
        if resolution is not None and chunk.shape[1:3] != (resolution, resolution):
            chunk = center_crop_resize(chunk, resolution)
        images.append(chunk)
        if label_key and label_key in features:
            labels.append(np.asarray([r[label_key] for r in rows]))
    images = np.concatenate(images)
    if images.dtype != np.uint8:
        raise DatasetError(f"Feature {image_key!r} of {name!r} has dtype {images.dtype}; "
                           "gan_jax expects uint8 images.")
    num_classes = getattr(features[label_key], "num_classes", None) if labels else None
    return ImageData(images, np.concatenate(labels) if labels else None, name, split, data_dir,
                     num_classes)


def load_split(dataset: dict, split: str, data_dir: str | None = None,
               max_examples: int | None = None) -> ImageData:
    """``load`` of a run config's ``dataset`` group (a dict) at ``split``; ``data_dir``
    overrides the group's."""
    return load(dataset["name"], split, data_dir or dataset.get("data_dir") or None,
                image_key=dataset.get("image_key", "image"),
                label_key=dataset.get("label_key", "label") or None,
                resolution=dataset.get("resolution") or None, max_examples=max_examples)
