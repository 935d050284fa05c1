"""The CIFAR-10 and CelebA configs (issue 26): Mimicry's settings and models in the full
configs, their ``:smoke`` variants trained on tiny ``cifar10`` and ``celeb_a`` datasets that
the tests write under tfds's real names (this machine cannot download the real ones), and
the one ``error:`` line that says how to prepare a missing dataset."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gan_jax import models
from gan_jax.data import sources
from gan_jax.trainer import config as config_lib
from gan_jax.trainer import train_and_evaluate
from gan_jax.trainer.workdir import load_generator
from tests.helpers import CIFAR10_CLASSES, REPO, load_config, prepare_tiny, run_module

CONFIGS = ("cifar10_sngan", "cifar10_cgan_pd", "cifar10_wgan_gp", "celeba64_sngan")
DATASET = {"cifar10_sngan": "cifar10", "cifar10_cgan_pd": "cifar10",
           "cifar10_wgan_gp": "cifar10", "celeba64_sngan": "celeb_a", "cifar10_vae": "cifar10"}
# Mimicry's FID for each (its README's tables), which each docstring must state.
MIMICRY_FID = {"cifar10_sngan": "16.77", "cifar10_cgan_pd": "10.84",
               "cifar10_wgan_gp": "22.29", "celeba64_sngan": "5.71"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    data_dir = tmp_path_factory.mktemp("tiny_tfds")
    for name in ("cifar10", "celeb_a"):
        prepare_tiny(name, data_dir)
    return str(data_dir)


def _grid_shape(n_images: int, side: int, num_classes: int, pad: int = 2) -> tuple:
    """A square grid; a conditional G's has one row per class."""
    rows = num_classes or int(np.ceil(np.sqrt(n_images)))
    cols = n_images // num_classes if num_classes else rows
    return (rows * (side + pad) + pad, cols * (side + pad) + pad, 3)


# -- the full configs ----------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_full_config_has_mimicrys_settings_and_says_how_to_prepare_its_data(name):
    c = config_lib.validate(load_config(name, None))
    assert c.dataset.name == DATASET[name] and c.model.name == "resnet"
    assert (c.batch_size, c.num_steps, c.n_dis, c.model.z_dim) == (64, 100_000, 5, 128)
    for opt in (c.optimizer.g, c.optimizer.d):
        assert (opt.name, opt.learning_rate, opt.b1, opt.b2, opt.decay) == (
            "adam", 2e-4, 0.0, 0.9, "linear")
    game = {"cifar10_wgan_gp": ("wasserstein", 10.0, False)}.get(name, ("hinge", 0.0, True))
    assert (c.loss, c.gp_weight, c.model.spectral_norm) == game
    assert c.model.conditional == (name == "cifar10_cgan_pd")
    assert c.eval.extractor == "inception" and c.ema.decay == 0.9999
    doc = (REPO / f"experiments/configs/{name}.py").read_text()
    assert f"tfds build {DATASET[name]} --file_format=array_record" in " ".join(doc.split())
    assert MIMICRY_FID[name] in doc and "--no-ema" in doc and "NOT been run" in doc


def _counts(name, image_shape, num_classes=None):
    c = config_lib.validate(load_config(name, None))
    G, D = models.build(c.model, image_shape, c.dtype, num_classes=num_classes)
    y = {"y": jnp.zeros((2,), jnp.int32)} if num_classes else {}
    key = jax.random.PRNGKey(0)
    g = jax.eval_shape(lambda: G.init(key, jnp.zeros((2, G.z_dim)), train=False, **y))
    d = jax.eval_shape(lambda: D.init(key, jnp.zeros((2, *image_shape)), train=False, **y))
    x = jax.eval_shape(lambda v: G.apply(v, jnp.zeros((2, G.z_dim)), train=False, **y), g)
    assert x.shape == (2, *image_shape)
    count = lambda tree: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
    return g, d, count(g["params"]), count(d["params"])


def test_full_models_have_the_sngan_parameter_counts():
    # SNGAN-32 as in Mimicry and Miyato et al.'s CIFAR ResNet.
    g, d, ng, nd = _counts("cifar10_sngan", (32, 32, 3))
    assert (ng, nd) == (4_276_739, 1_053_825) and "spectral" in d
    # WGAN-GP: the same ResNet, D without spectral norm.
    g, d, ng, nd = _counts("cifar10_wgan_gp", (32, 32, 3))
    assert (ng, nd) == (4_276_739, 1_053_825) and "spectral" not in d
    # cGAN-PD: G's BatchNorms take a 10-class scale and shift (+27,648), D a projection
    # embedding of its 128 features (+1,280).
    g, d, ng, nd = _counts("cifar10_cgan_pd", (32, 32, 3), num_classes=10)
    assert (ng, nd) == (4_304_387, 1_055_105)
    assert d["params"]["ProjectionHead_0"]["Embed_0"]["embedding"].shape == (10, 128)
    # CelebA 64: Mimicry's SNGAN-64 (ngf = ndf = 1024); D's blocks after the first keep
    # their input's width in the first conv, as Mimicry's and the Chainer SNGAN's do.
    g, d, ng, nd = _counts("celeba64_sngan", (64, 64, 3))
    assert (ng, nd) == (12_220_675, 10_141_441) and "spectral" in d


# -- the tiny datasets ---------------------------------------------------------------------

def test_tiny_datasets_load_by_tfds_real_names_and_features(tiny_dir):
    builder = tfds.builder("cifar10", data_dir=tiny_dir)
    assert type(builder).__module__.startswith("tensorflow_datasets.")  # tfds's own class
    assert sorted(builder.info.features) == ["id", "image", "label"]
    assert builder.info.features["label"].names == list(CIFAR10_CLASSES)
    d = sources.load("cifar10", data_dir=tiny_dir)
    assert d.images.shape == (64, 32, 32, 3) and d.images.dtype == np.uint8
    assert d.num_classes == 10 and sorted(set(d.labels.tolist())) == list(range(10))
    assert sources.image_shape("celeb_a", tiny_dir) == (218, 178, 3)
    celeb = sources.load("celeb_a", data_dir=tiny_dir, label_key=None, resolution=64)
    assert celeb.images.shape == (32, 64, 64, 3) and celeb.labels is None
    assert sorted(tfds.builder("celeb_a", data_dir=tiny_dir).info.splits) == [
        "test", "train", "validation"]


# -- the smoke runs ------------------------------------------------------------------------

def _check_run(workdir: pathlib.Path, side: int, num_classes: int):
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 2
    assert (workdir / "checkpoints/2").is_dir()
    config = json.loads((workdir / "config.json").read_text())
    grid = np.asarray(Image.open(workdir / "samples/final.png"))
    assert grid.shape == _grid_shape(config["num_samples"], side, num_classes)
    assert grid.std() > 0
    _, _, step, info = load_generator(workdir)
    assert step == 2 and info["image_shape"] == [side, side, 3]
    assert info["conditional_classes"] == num_classes
    return info


def test_cifar10_sngan_smoke_trains_through_the_cli(tiny_dir, tmp_path):
    workdir = tmp_path / "run"
    r = run_module("--config=experiments/configs/cifar10_sngan.py:smoke",
                   f"--workdir={workdir}", f"--config.dataset.data_dir={tiny_dir}",
                   data_dir=str(tmp_path / "elsewhere"))  # $TFDS_DATA_DIR: not read.
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resnet on cifar10 (32, 32, 3), 10 classes" in r.stdout + r.stderr
    info = _check_run(workdir, 32, num_classes=0)  # Unconditional, on a labelled dataset.
    assert info["config"]["dataset"]["data_dir"] == tiny_dir


@pytest.mark.parametrize("name", ["cifar10_cgan_pd", "cifar10_wgan_gp", "celeba64_sngan",
                                  "cifar10_vae"])
def test_smoke_config_trains_on_the_tiny_dataset(name, tiny_dir, tmp_path):
    c = load_config(name, "smoke")
    c.dataset.data_dir = tiny_dir
    train_and_evaluate(c, tmp_path / "run")
    # celeb_a's 218x178 images are centre-cropped and resized, to 32 px in the smoke run.
    info = _check_run(tmp_path / "run", 32, num_classes=10 if name == "cifar10_cgan_pd" else 0)
    lines = [json.loads(s) for s in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [m for m in lines if "d_loss" in m or "nelbo" in m]
    assert losses
    # The gradient penalty is on, and only, in the WGAN-GP run.
    assert all(("d_penalty" in m) == (name == "cifar10_wgan_gp") for m in losses)
    if name == "celeba64_sngan":
        assert info["num_classes"] is None  # celeb_a has no class label.


# -- without the dataset -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cifar10_sngan", "celeba64_sngan", "cifar10_vae"])
def test_missing_dataset_is_one_error_line_saying_how_to_prepare_it(name, tmp_path):
    empty = tmp_path / "tfds"
    empty.mkdir()
    workdir = tmp_path / "run"
    r = run_module(f"--config=experiments/configs/{name}.py", f"--workdir={workdir}",
                   f"--config.dataset.data_dir={empty}", data_dir=str(empty))
    text = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in text, text[-3000:]
    errors = [s for s in r.stderr.splitlines() if s.startswith("error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    dataset = DATASET[name]
    for words in (f"Dataset '{dataset}' is not prepared in {empty}",
                  f"tfds build {dataset} --file_format=array_record", f"into {empty}"):
        assert words in errors[0], errors[0]
    # Nothing half-written: no workdir, nothing in the data dir.
    assert not workdir.exists() and list(empty.iterdir()) == []
