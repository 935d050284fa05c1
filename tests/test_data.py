import io
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gan_jax.data import mnist_offline, sources

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_through_tfds(mnist_dir):
    train = sources.load("mnist", "train", data_dir=mnist_dir)
    test = sources.load("mnist", "test", data_dir=mnist_dir)
    assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 28, 28, 1) and test.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == TRAIN_COUNTS
    assert np.bincount(test.labels).tolist() == TEST_COUNTS
    # The standard order: the first training labels of MNIST.
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert train.images.max() == 255 and train.images.min() == 0
    # It is a real tfds dataset now: tfds itself reads it back by name.
    src = tfds.data_source("mnist_offline", split="test", data_dir=mnist_dir)
    np.testing.assert_array_equal(src[3]["image"], test.images[3])


def test_a_process_that_finds_mnist_being_written_waits_and_reuses_it(mnist_dir, tmp_path):
    # Two processes preparing one data dir at once: the second failed at tfds's final
    # rename. Now it waits for the first (here: this test, holding the lock) and reads.
    import shutil
    import subprocess
    import sys
    import time

    from gan_jax import files
    code = ("import sys; from gan_jax.data import mnist_offline; print('ready', flush=True); "
            "mnist_offline.prepare(sys.argv[1]); print('done')")
    with files.exclusive(tmp_path / "mnist_offline.lock"):
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(3)  # Time to find the dir empty and reach the lock (or, unlocked, write).
        # What the first process writes meanwhile.
        shutil.copytree(pathlib.Path(mnist_dir) / "mnist_offline", tmp_path / "mnist_offline")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and out.strip() == "done", err[-3000:]
    assert sources.load("mnist", "test", data_dir=str(tmp_path)).images.shape[0] == 10000


def test_mnist_pixels_are_exact_bytes():
    arrays = mnist_offline.read_arrays(mnist_offline.wheel_path())
    x = arrays["train"][0]
    assert x.dtype == np.uint8 and x.reshape(-1).max() == 255
    assert np.bincount(x.reshape(-1), minlength=256)[0] > 0.8 * x.size
    # k/256 storage: each byte over 256 is the stored value, exactly; train is train + valid.
    train, valid, test = mnist_offline.read_pickle(mnist_offline.wheel_path())
    stored = np.concatenate([train[0], valid[0]]).reshape(x.shape)
    np.testing.assert_array_equal(x / np.float32(256), stored)
    np.testing.assert_array_equal(arrays["test"][0] / np.float32(256),
                                  test[0].reshape(-1, 28, 28, 1))
    np.testing.assert_array_equal(arrays["train"][1], np.concatenate([train[1], valid[1]]))


def test_bad_wheel_is_rejected(tmp_path, monkeypatch):
    bogus = tmp_path / mnist_offline.WHEEL_NAME
    bogus.write_bytes(b"not a wheel")
    monkeypatch.setenv(mnist_offline.WHEEL_ENV, str(bogus))
    with pytest.raises(mnist_offline.MnistSourceError, match="sha256"):
        mnist_offline.wheel_path()
    monkeypatch.setenv(mnist_offline.WHEEL_ENV, str(tmp_path / "missing.whl"))
    with pytest.raises(mnist_offline.MnistSourceError, match="does not exist"):
        mnist_offline.wheel_path()


def _png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    buf.seek(0)
    return buf


class TinyFaces(tfds.core.GeneratorBasedBuilder):
    """A PNG-encoded image dataset like celeb_a or cifar10, made by the tests."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(12, 8, 3)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(10):
            img = np.full((12, 8, 3), i * 20, np.uint8)
            img[:2] = 255  # A bright band at the top that a center crop removes.
            yield i, {"image": _png(img), "label": i % 3}


def test_png_dataset_loads_by_name_with_crop_and_resize(tmp_path):
    TinyFaces(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    data = sources.load("tiny_faces", "train", data_dir=str(tmp_path))
    assert data.images.shape == (10, 12, 8, 3)
    assert sorted(data.images[:, 6, 4, 0].tolist()) == [i * 20 for i in range(10)]
    small = sources.load("tiny_faces", "train", data_dir=str(tmp_path), resolution=4)
    assert small.image_shape == (4, 4, 3)
    # The center 8x8 crop has no bright band left.
    assert sorted(small.images[:, :, :, 0].max(axis=(1, 2)).tolist()) == [i * 20 for i in range(10)]
    capped = sources.load("tiny_faces", "train", data_dir=str(tmp_path), max_examples=4)
    assert len(capped.images) == 4 and len(capped.labels) == 4


def test_unknown_dataset_error(tmp_path):
    with pytest.raises(sources.DatasetError) as e:
        sources.load("no_such_dataset_xyz", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "no_such_dataset_xyz" in msg and str(tmp_path) in msg and "tfds build" in msg


def test_unprepared_dataset_error(tmp_path):
    with pytest.raises(sources.DatasetError) as e:
        sources.load("cifar10", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "not prepared" in msg and str(tmp_path) in msg and "tfds build cifar10" in msg


def test_bad_split_and_feature(mnist_dir):
    with pytest.raises(sources.DatasetError, match="no split 'validation'"):
        sources.load("mnist", "validation", data_dir=mnist_dir)
    with pytest.raises(sources.DatasetError, match="no feature 'img'"):
        sources.load("mnist", data_dir=mnist_dir, image_key="img")
