"""The MNIST classifier (accuracy, cache key, determinism) and the calibration of the metrics
on real MNIST: clean test images are the floor, noise and blur make every metric worse."""
import threading
import time

import jax
import numpy as np

from gan_jax.data import mnist_offline, sources
from gan_jax.eval import calibration, features, reference
from gan_jax.eval import mnist_classifier as mc


def test_classifier_reaches_99_percent(mnist_classifier, mnist_dir):
    assert mnist_classifier["test_accuracy"] >= 0.99
    params, meta = mc.load_or_train(mnist_dir, log=lambda *a: None)
    test = sources.load("mnist", "test", mnist_dir)
    acc = mc.accuracy(params, test.images, test.labels)  # Recomputed from the cached weights.
    assert acc == meta["test_accuracy"] >= 0.99
    assert meta["weights_sha256"] == mnist_classifier["weights_sha256"]


def test_cache_key_follows_code_and_data(monkeypatch):
    key = mc.cache_key()
    assert len(key) == 16 and mc.cache_key() == key
    assert mc.cache_key(source=b"# another model\n") != key
    monkeypatch.setattr(mnist_offline, "PICKLE_SHA256", "0" * 64)
    assert mc.cache_key() != key
    assert mc.cache_path().name == f"lenet-{mc.cache_key()}.npz"


def test_callers_that_start_together_train_the_classifier_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls, results = [], []

    def train_and_save(path, data_dir, log):  # Stands in for half a minute of training.
        calls.append(path)
        time.sleep(0.5)
        params, meta = {"Dense_0": {"kernel": np.arange(3.0)}}, {"test_accuracy": 0.5}
        mc._save(path, params, meta)
        return params, meta

    monkeypatch.setattr(mc, "_train_and_save", train_and_save)
    threads = [threading.Thread(target=lambda: results.append(mc.load_or_train(log=print)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [mc.cache_path()]  # The second caller waited, then found it cached.
    assert [meta["test_accuracy"] for _, meta in results] == [0.5, 0.5]
    np.testing.assert_array_equal(results[0][0]["Dense_0"]["kernel"],
                                  results[1][0]["Dense_0"]["kernel"])


def test_a_damaged_classifier_cache_is_reported_once_and_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    mc.cache_path().parent.mkdir(parents=True)
    mc.cache_path().write_bytes(b"not an npz")
    trained = []
    monkeypatch.setattr(mc, "_train_and_save",
                        lambda path, data_dir, log: trained.append(path) or ({}, {}))
    said = []
    mc.load_or_train(log=said.append)
    assert trained == [mc.cache_path()]
    assert len(said) == 1 and said[0].startswith("gan_jax: ignoring unreadable classifier cache")


def test_training_is_deterministic():
    rng = np.random.RandomState(0)
    x = rng.randint(0, 256, (512, 28, 28, 1)).astype(np.uint8)
    y = rng.randint(0, 10, 512)
    a = mc.train(x, y, epochs=1, log=lambda *a: None)
    b = mc.train(x, y, epochs=1, log=lambda *a: None)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_calibration_is_monotonic(mnist_classifier, mnist_dir):
    ex = features.get("mnist", data_dir=mnist_dir, log=lambda *a: None)
    train = sources.load("mnist", "train", mnist_dir, max_examples=20_000)
    ref = reference.from_images(ex, train.images, {"dataset": "mnist", "split": "train"})
    test = sources.load("mnist", "test", mnist_dir)
    rows = calibration.table(ex, ref, test.images, kid_subsets=20)
    print("\n" + calibration.markdown(rows))
    clean = rows[0][2]
    assert clean["fid"] < 3 and clean["is"] > 9.5  # The floor: real against real.
    for kind in ("noise", "blur"):
        chain = [clean] + [s for k, _, s in rows if k == kind]
        for worse, better in zip(chain[1:], chain[:-1]):
            assert worse["fid"] > better["fid"] and worse["kid"] > better["kid"]
            assert worse["is"] < better["is"]
    # Real images against real: high precision and recall; blurred ones lose the recall.
    floor = calibration.floor_precision_recall(ex, ref, test.images, num=3000)
    blurred = calibration.floor_precision_recall(
        ex, ref, calibration.corrupt(test.images, "blur", 1.5), num=3000)
    assert floor["precision"] > 0.75 and floor["recall"] > 0.75
    assert blurred["recall"] < floor["recall"] - 0.5
