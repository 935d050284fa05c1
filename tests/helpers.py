"""Shared helpers for tests that run the trainer."""
import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from gan_jax.trainer import families
from gan_jax.trainer import config as config_lib
from gan_jax.trainer.checkpoint import Checkpointer

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str = "mnist_mlp", variant: str | None = "smoke"):
    spec = importlib.util.spec_from_file_location(name, REPO / f"experiments/configs/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(variant)


def smoke_config(data_dir, name: str = "mnist_mlp", **overrides):
    """A config's smoke variant on ``data_dir``'s MNIST, with dotted-key overrides
    (``**{"checkpoint.every": 20}``)."""
    c = load_config(name, "smoke")
    c.dataset.data_dir = data_dir
    for key, value in overrides.items():
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return c


def main_cmd(*args, module="experiments.main"):
    return [sys.executable, "-m", module, *args]


def run_module(*args, data_dir: str, module="experiments.main", timeout=600):
    env = {**os.environ, "TFDS_DATA_DIR": data_dir}
    return subprocess.run(main_cmd(*args, module=module), cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=timeout)


def start_module(*args, data_dir: str, module="experiments.main"):
    env = {**os.environ, "TFDS_DATA_DIR": data_dir, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(main_cmd(*args, module=module), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def restore(workdir, config, step=None):
    """(state, run info) of an MNIST run's checkpoint: the latest, or the one at ``step``."""
    config = config_lib.validate(config)
    create = jax.jit(families.build(config, (28, 28, 1), 10).create((28, 28, 1)))
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        return ckpt.restore(create(jax.random.PRNGKey(1)), step)
    finally:
        ckpt.close()


def straight_and_resumed(config, tmp_path, stop_at: int):
    """Trains ``config`` straight through, and again stopped at ``stop_at`` and resumed;
    returns (straight state, resumed state, run info) from their final checkpoints."""
    from gan_jax import trainer
    straight = trainer.train_and_evaluate(config, tmp_path / "straight")
    half = config.copy_and_resolve_references()
    half.num_steps = stop_at
    trainer.train_and_evaluate(half, tmp_path / "resumed")
    resumed = trainer.train_and_evaluate(config, tmp_path / "resumed")
    assert resumed["resumed_from"] == stop_at
    assert straight["steps"] == resumed["steps"] == config.num_steps
    a, info = restore(tmp_path / "straight", config)
    b, _ = restore(tmp_path / "resumed", config)
    return a, b, info


def metric_lines(workdir) -> list[dict]:
    """A run's metrics.jsonl, without the speeds (which differ between equal runs)."""
    lines = [json.loads(s) for s in (workdir / "metrics.jsonl").read_text().splitlines()]
    drop = ("steps_per_s", "images_per_s")
    return [{k: v for k, v in m.items() if k not in drop} for m in lines]


# -- tiny stand-ins for tfds datasets this machine cannot download -------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def _encoded(pixels, fmt: str) -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@functools.cache
def _tiny_builders():
    """tfds's own CIFAR-10 and CelebA builders (same name, version and features as a
    `tfds build`), writing random images instead of downloading: tfds encodes an Image
    feature given as numpy with TensorFlow, so the images are handed over PNG/JPEG-encoded
    by Pillow, which tfds stores as they are."""
    from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder as celeb_a
    from tensorflow_datasets.image_classification import cifar

    class TinyCifar10(cifar.Cifar10, skip_registration=True):
        name = "cifar10"
        SIZES = {"train": 64, "test": 16}

        def _split_generators(self, dl_manager):
            del dl_manager
            self.info.features["label"].names = list(CIFAR10_CLASSES)
            return {split: self._examples(split, n) for split, n in self.SIZES.items()}

        def _examples(self, split, n):
            rng = np.random.default_rng(len(split))
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                yield i, {"id": f"{split}_{i:05d}", "image": _encoded(pixels, "PNG"),
                          "label": i % 10}

    class TinyCelebA(celeb_a.Builder, skip_registration=True):
        name = "celeb_a"
        pkg_dir_path = celeb_a.Builder._get_pkg_dir_path()  # Its README and citation.
        SIZES = {"train": 32, "validation": 4, "test": 4}

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._examples(split, n) for split, n in self.SIZES.items()}

        def _examples(self, split, n):
            rng = np.random.default_rng(len(split))
            for i in range(n):
                pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
                yield i, {"image": _encoded(pixels, "JPEG"),
                          "landmarks": {k: int(rng.integers(0, 178))
                                        for k in celeb_a.LANDMARK_HEADINGS},
                          "attributes": {k: bool(rng.integers(0, 2))
                                         for k in celeb_a.ATTR_HEADINGS},
                          "identity": {k: int(rng.integers(1, 10_178))
                                       for k in celeb_a.IDENTITY_HEADINGS}}

    return {"cifar10": TinyCifar10, "celeb_a": TinyCelebA}


def prepare_tiny(name: str, data_dir) -> str:
    """Writes a tiny ``cifar10`` (64 train / 16 test random 32x32x3 PNGs, labels 0..9
    in turn) or ``celeb_a`` (32 / 4 / 4 random 218x178x3 JPEGs) into ``data_dir`` under
    tfds's real name, version and features, in array_record format, with gan_jax's own
    writer of offline datasets. Returns ``data_dir``."""
    from gan_jax.data import offline
    offline.prepare(_tiny_builders()[name], str(data_dir))
    return str(data_dir)
