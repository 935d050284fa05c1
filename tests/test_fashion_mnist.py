"""Fashion-MNIST offline (Debian's dataset-fashion-mnist, checksummed) and its classifier, the
fashion_mnist extractor."""
import gzip
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gan_jax.data import fashion_mnist_offline as fmo
from gan_jax.data import sources
from gan_jax.errors import GanJaxError
from gan_jax.eval import features
from gan_jax.eval import metrics as M
from gan_jax.eval import mnist_classifier as mc

REPO = pathlib.Path(__file__).resolve().parents[1]
# The uncompressed IDX files of Fashion-MNIST: (bytes, sha256).
IDX = {
    "train-images-idx3-ubyte":
        (47_040_016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte":
        (60_008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte":
        (7_840_016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte":
        (10_008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")}


@pytest.fixture(scope="session")
def fashion_dir(data_dir) -> str:
    """The session's data dir with fashion_mnist_offline written into it (the .deb is
    fetched once per machine into gan_jax's cache)."""
    fmo.prepare(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def fashion_classifier(fashion_dir) -> dict:
    """The cached Fashion-MNIST classifier's metadata, trained first in a subprocess if this
    machine has none (as conftest's mnist_classifier)."""
    flags = os.environ["XLA_FLAGS"].replace("--xla_backend_optimization_level=0", "").strip()
    env = {**os.environ, "TFDS_DATA_DIR": fashion_dir, "XLA_FLAGS": flags}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    cmd = [sys.executable, "-m", "gan_jax.eval.mnist_classifier", "fashion_mnist"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _idx_files() -> dict[str, bytes]:
    return fmo.read_idx_files(fmo.deb_path())


def test_the_offline_copy_is_the_checksummed_idx_files(fashion_dir):
    raw = _idx_files()
    for name, (size, sha) in IDX.items():  # The published files, byte for byte.
        assert len(raw[name]) == size and hashlib.sha256(raw[name]).hexdigest() == sha
    for split, prefix, n in (("train", "train", 60_000), ("test", "t10k", 10_000)):
        images, labels = raw[f"{prefix}-images-idx3-ubyte"], raw[f"{prefix}-labels-idx1-ubyte"]
        # IDX headers, read here on their own: magic, count, rows, cols.
        assert np.frombuffer(images[:16], ">u4").tolist() == [0x803, n, 28, 28]
        assert np.frombuffer(labels[:8], ">u4").tolist() == [0x801, n]
        data = sources.load("fashion_mnist", split, data_dir=fashion_dir)
        assert data.images.shape == (n, 28, 28, 1) and data.images.dtype == np.uint8
        np.testing.assert_array_equal(data.images.reshape(-1),
                                      np.frombuffer(images, np.uint8, offset=16))
        np.testing.assert_array_equal(data.labels, np.frombuffer(labels, np.uint8, offset=8))
        # Balanced classes: 6,000 of each in train, 1,000 in test.
        assert np.bincount(data.labels, minlength=10).tolist() == [n // 10] * 10
    assert data.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]  # The test split's.
    info = tfds.builder("fashion_mnist_offline", data_dir=fashion_dir).info
    assert info.features["label"].names[:2] == ["T-shirt/top", "Trouser"]
    assert info.features["label"].names[9] == "Ankle boot"


def _ar(members: dict[str, bytes]) -> bytes:
    """An ar archive (a .deb's container) of ``members``."""
    out = [b"!<arch>\n"]
    for name, data in members.items():
        out.append(f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode())
        out.append(data + b"\n" * (len(data) % 2))
    return b"".join(out)


def _deb(files: dict[str, bytes]) -> bytes:
    """A .deb whose data.tar holds ``files`` gzipped under the package's directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, raw in files.items():
            blob = gzip.compress(raw, compresslevel=1)
            info = tarfile.TarInfo(f"./usr/share/datasets/fashion-mnist/{name}.gz")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return _ar({"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar": buf.getvalue()})


def test_a_wrong_checksum_is_refused(fashion_dir, tmp_path, monkeypatch):
    real = fmo.deb_path()
    raw = fmo.read_idx_files(real)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # No cached copy.
    data_dir = str(tmp_path / "tfds")
    # A tampered copy of the .deb (one byte changed), named by the environment variable.
    blob = bytearray(real.read_bytes())
    blob[len(blob) // 2] ^= 1
    (tmp_path / "tampered.deb").write_bytes(bytes(blob))
    monkeypatch.setenv(fmo.DEB_ENV, str(tmp_path / "tampered.deb"))
    with pytest.raises(fmo.FashionMnistSourceError, match=f"expected {fmo.DEB_SHA256}"):
        sources.load("fashion_mnist", data_dir=data_dir)
    # A .deb that is trusted as a whole but holds one changed IDX file: refused by the
    # IDX file's own checksum (the same .deb with the real files reads back as they are).
    good = tmp_path / "good.deb"
    good.write_bytes(_deb(raw))
    assert fmo.read_idx_files(good) == raw
    labels = bytearray(raw["t10k-labels-idx1-ubyte"])
    labels[8] = (labels[8] + 1) % 10  # The first test label.
    bad = tmp_path / "bad.deb"
    bad.write_bytes(_deb({**raw, "t10k-labels-idx1-ubyte": bytes(labels)}))
    monkeypatch.setattr(fmo, "DEB_SHA256", hashlib.sha256(bad.read_bytes()).hexdigest())
    monkeypatch.setenv(fmo.DEB_ENV, str(bad))
    with pytest.raises(fmo.FashionMnistSourceError,
                       match="t10k-labels-idx1-ubyte in .* fails its checksum"):
        sources.load("fashion_mnist", data_dir=data_dir)
    assert not tfds.builder("fashion_mnist_offline", data_dir=data_dir).is_prepared()
    missing = tmp_path / "short.deb"
    missing.write_bytes(_deb({"t10k-labels-idx1-ubyte": raw["t10k-labels-idx1-ubyte"]}))
    with pytest.raises(fmo.FashionMnistSourceError, match="lacks .*train-images-idx3-ubyte"):
        fmo.read_idx_files(missing)


def test_a_missing_source_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(fmo.DEB_ENV, raising=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # No apt-get on this PATH.
    with pytest.raises(GanJaxError) as e:
        sources.load("fashion_mnist", data_dir=str(tmp_path / "tfds"))
    msg = str(e.value)
    assert "`apt-get` is not installed" in msg and f"point {fmo.DEB_ENV} at" in msg
    assert "apt-get download dataset-fashion-mnist" in msg and "apt-get update" in msg
    # apt without package lists (`apt-get update` never ran): as root, the lists are
    # updated once and the download tried again; when that fails too, it says so.
    apt, calls = bin_dir / "apt-get", tmp_path / "apt-calls"
    apt.write_text(f"#!/bin/sh\necho \"$1\" >> {calls}\n"
                   "echo 'E: Unable to locate package dataset-fashion-mnist' >&2\nexit 100\n")
    apt.chmod(0o755)
    with pytest.raises(fmo.FashionMnistSourceError,
                       match=r"Unable to locate package(.|\n)*run `apt-get update` as root first"):
        fmo.deb_path()
    expected = ["download", "update", "download"] if os.geteuid() == 0 else ["download"]
    assert calls.read_text().split() == expected
    monkeypatch.setenv(fmo.DEB_ENV, str(tmp_path / "missing.deb"))
    with pytest.raises(fmo.FashionMnistSourceError, match="missing.deb does not exist"):
        fmo.deb_path()


class TfdsFashionMnist(tfds.builder_cls("fashion_mnist"), skip_registration=True):
    """tfds's own fashion_mnist builder, its four examples made here instead of downloaded."""
    name = "fashion_mnist"

    def _split_generators(self, dl_manager):
        return {"train": self._tiny(), "test": self._tiny()}

    def _tiny(self):
        from PIL import Image
        for i in range(4):
            png = io.BytesIO()
            Image.fromarray(np.full((28, 28), 60 * i, np.uint8)).save(png, format="PNG")
            yield i, {"image": io.BytesIO(png.getvalue()), "label": i}


def test_tfds_own_fashion_mnist_is_read_where_it_is_prepared(tmp_path, monkeypatch):
    monkeypatch.setenv(fmo.DEB_ENV, str(tmp_path / "missing.deb"))  # No offline copy.
    TfdsFashionMnist(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    assert sources.resolve("fashion_mnist", str(tmp_path)) == "fashion_mnist"
    data = sources.load("fashion_mnist", "test", data_dir=str(tmp_path))
    assert sorted(data.images[:, 0, 0, 0].tolist()) == [0, 60, 120, 180]  # tfds shuffles.
    assert not (tmp_path / "fashion_mnist_offline").exists()


def test_the_classifier_reaches_92_percent(fashion_classifier, fashion_dir):
    assert fashion_classifier["test_accuracy"] >= 0.92
    params, meta = mc.load_or_train(fashion_dir, log=lambda *a: None, dataset="fashion_mnist")
    test = sources.load("fashion_mnist", "test", fashion_dir)
    # Recomputed from the cached weights.
    acc = mc.accuracy(params, test.images, test.labels, dataset="fashion_mnist")
    assert acc == meta["test_accuracy"] >= 0.92
    assert meta["weights_sha256"] == fashion_classifier["weights_sha256"]
    # Its own cache entry: another key and file than MNIST's.
    assert meta["key"] == mc.cache_key(dataset="fashion_mnist") != mc.cache_key()
    assert mc.cache_path("fashion_mnist").parent.name == "fashion_mnist_classifier"


def test_the_fashion_extractor_gives_every_metric(fashion_classifier, fashion_dir):
    from gan_jax.eval import calibration
    assert features.default_for("fashion_mnist") == "fashion_mnist"
    assert features.default_for("mnist") == "mnist"
    ex = features.get("fashion_mnist", data_dir=fashion_dir, log=lambda *a: None)
    assert ex.name == "fashion_mnist" and ex.feature_dim == 256
    assert ex.describe()["classifier_key"] == fashion_classifier["key"]
    train = sources.load("fashion_mnist", "train", fashion_dir, max_examples=10_000)
    test = sources.load("fashion_mnist", "test", fashion_dir, max_examples=5_000)
    ref, clean, noisy = (features.extract(ex, features.padded_batches(x, ex.batch_size))
                         for x in (train.images, test.images,
                                   calibration.corrupt(test.images, "noise", 0.2)))
    fid = [M.frechet_distance(ref.moments, f.moments) for f in (clean, noisy)]
    kid = [M.kid(ref.features, f.features, num_subsets=10)[0] for f in (clean, noisy)]
    inception_score = [M.inception_score(f.logits)[0] for f in (clean, noisy)]
    pr = [M.precision_recall(ref.features[:5000], f.features) for f in (clean, noisy)]
    dc = [M.density_coverage(ref.features[:5000], f.features) for f in (clean, noisy)]
    print(fid, kid, inception_score, pr, dc)
    # Real against real (5,000 against 10,000 images here: 3.5, 1.3 with all of them).
    assert fid[0] < 5 and fid[1] > 10 * fid[0] and kid[1] > 10 * kid[0]
    assert inception_score[0] > 8 and inception_score[1] < inception_score[0]
    assert all(a > b for a, b in zip(pr[0], pr[1])) and all(a > b for a, b in zip(dc[0], dc[1]))


def test_the_fashion_dcgan_config():
    from gan_jax.errors import ConfigError
    from gan_jax.trainer import config as config_lib
    from tests.helpers import load_config
    c = config_lib.validate(load_config("fashion_mnist_dcgan", None))
    mnist = config_lib.validate(load_config("mnist_dcgan", None))
    assert (c.dataset.name, c.eval.extractor, c.eval.every) == ("fashion_mnist",) * 2 + (2500,)
    assert (c.model, c.optimizer, c.num_steps) == (mnist.model, mnist.optimizer, mnist.num_steps)
    c.eval.extractor = "fashion"
    with pytest.raises(ConfigError, match="'fashion_mnist'"):
        config_lib.validate(c)
    # The study's configs (docs/quality.md): the main job's recipe on Fashion-MNIST, and both
    # for 44,000 steps, whose first 16,000 are the main job's.
    sn = config_lib.validate(load_config("fashion_mnist_sndcgan", None))
    main = config_lib.validate(load_config("mnist_sndcgan", None))
    assert (sn.dataset.name, sn.eval.extractor, sn.num_steps) == ("fashion_mnist",) * 2 + (16_000,)
    # MNIST's learning rate went from 4e-4 to 8e-4 after Fashion-MNIST's runs; it keeps 4e-4.
    assert (sn.model, sn.loss) == (main.model, "hinge")
    assert main.optimizer.g.learning_rate == main.optimizer.d.learning_rate == 8e-4
    assert sn.optimizer.to_dict() == {p: {**main.optimizer[p], "learning_rate": 4e-4}
                                      for p in ("g", "d")}
    assert sn.eval.to_dict() == {**main.eval, "extractor": "fashion_mnist"}
    assert main.model.d_bias and main.num_steps % main.eval.every == 0
    for name, base in (("mnist_sndcgan_long", main), ("fashion_mnist_sndcgan_long", sn)):
        long = config_lib.validate(load_config(name, None))
        assert long.to_dict() == {**base.to_dict(), "num_steps": 44_000}
