"""Image datasets read through tensorflow-datasets into host memory as uint8 NHWC arrays.

Any tfds dataset prepared in the data dir in array_record format loads by name; ``mnist``
is the offline copy (``mnist_offline``), written there on first use. Reading goes through
``tfds.data_source``, which needs no TensorFlow.
"""
import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from gan_jax.data import mnist_offline
from gan_jax.errors import GanJaxError

ALIASES = {"mnist": "mnist_offline"}
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


def prepared_builder(name: str, data_dir: str):
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetError(
            f"Unknown dataset {name!r}: tfds has no dataset of that name and {data_dir} "
            f"holds no prepared copy of it. gan_jax also knows {sorted(ALIASES)}. "
            + _how_to_prepare(name, data_dir)) from None
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
    tfds_name = ALIASES.get(name, name)
    if tfds_name == "mnist_offline":
        mnist_offline.prepare(data_dir)
    features = prepared_builder(tfds_name, data_dir).info.features
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


def load(name: str, split: str = "train", data_dir: str | None = None,
         image_key: str = "image", label_key: str | None = "label",
         resolution: int | None = None, max_examples: int | None = None) -> ImageData:
    """Reads ``split`` of a tfds image dataset. ``resolution`` center-crops to a square and
    resizes (bicubic) when the stored images have another size."""
    data_dir = resolve_data_dir(data_dir)
    tfds_name = ALIASES.get(name, name)
    if tfds_name == "mnist_offline":
        mnist_offline.prepare(data_dir)
    builder = prepared_builder(tfds_name, data_dir)
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
    return ImageData(images, np.concatenate(labels) if labels else None, name, split, data_dir)
