"""Shared helpers for tests that run the trainer."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from gan_jax import models
from gan_jax.trainer import engine as trainer_engine
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
    G, D = models.build(config.model, (28, 28, 1), config.dtype)
    create = jax.jit(trainer_engine.make_create(config, G, D, (28, 28, 1)))
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        return ckpt.restore(create(jax.random.PRNGKey(1)), step)
    finally:
        ckpt.close()


def metric_lines(workdir) -> list[dict]:
    """A run's metrics.jsonl, without the speeds (which differ between equal runs)."""
    lines = [json.loads(s) for s in (workdir / "metrics.jsonl").read_text().splitlines()]
    drop = ("steps_per_s", "images_per_s")
    return [{k: v for k, v in m.items() if k not in drop} for m in lines]
