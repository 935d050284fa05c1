"""Samples of a class-conditional generator (issue 26): the training grids and
``experiments.sample`` hold one class per row (row k is class k, column j the same latent in
every row), ``--class=K`` draws class K, and the sampler refuses a class it cannot draw."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from gan_jax import sampling
from gan_jax.errors import ConfigError
from gan_jax.trainer import train_and_evaluate
from gan_jax.trainer import workdir as workdir_lib
from tests.helpers import run_module, smoke_config
from tests.test_cli_errors import _refused, run_dir  # noqa: F401 - the unconditional run

CLASSES, PAD = 10, 2


def test_class_rows_tile_the_latents_and_count_the_classes():
    z = sampling.latents(0, 3, 4)
    z_B, y_B = sampling.class_rows(z, 2)
    np.testing.assert_array_equal(y_B, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(z_B, jnp.concatenate([z, z]))
    key = jax.random.PRNGKey(5)
    z_B, y_B = sampling.grid_latents(key, 16, 4, 10)  # 16 // 10: one column
    assert z_B.shape == (10, 4) and np.all(z_B == z_B[:1]) and list(y_B) == list(range(10))
    z_B, y_B = sampling.grid_latents(key, 64, 4, 10)  # rounded down to 6 columns
    assert z_B.shape == (60, 4) and list(y_B[5:7]) == [0, 1]
    z_B, y_B = sampling.grid_latents(key, 16, 4)
    assert y_B is None
    np.testing.assert_array_equal(z_B, jax.random.normal(key, (16, 4)))
    images = np.zeros((6, 1, 1, 1), np.uint8)
    assert sampling.class_grid(images, [0, 0, 0, 1, 1, 1]).shape == (2 + 2 * 3, 2 + 3 * 3, 1)
    assert sampling.class_grid(images).shape == (2 + 2 * 3, 2 + 3 * 3, 1)  # 3 x 3 square


def _cells(path, cols: int, size: int = 28) -> np.ndarray:
    """The images of a grid PNG, [rows, cols, H, W]."""
    g = np.asarray(Image.open(path))
    rows = (g.shape[0] - PAD) // (size + PAD)
    assert g.shape == (rows * (size + PAD) + PAD, cols * (size + PAD) + PAD), g.shape
    return np.stack([np.stack([g[PAD + r * (size + PAD):][:size, PAD + c * (size + PAD):][:, :size]
                               for c in range(cols)]) for r in range(rows)])


def _close(a, b):
    """uint8 images equal up to a rounding step (another batch size, other float sums)."""
    diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


@pytest.fixture(scope="module")
def cond_run(mnist_dir, tmp_path_factory):
    """The conditional DCGAN smoke run: 20 steps, grids of 20 images (10 rows of 2). G's
    learning rate is raised so that its per-class BatchNorm scales, equal at the start,
    tell the classes apart after 20 steps."""
    c = smoke_config(mnist_dir, "mnist_dcgan", **{
        "model.conditional": True, "num_samples": 20, "optimizer.g.learning_rate": 0.01,
        "sample_every": 20, "checkpoint.every": 20})
    workdir = tmp_path_factory.mktemp("cond")
    train_and_evaluate(c, workdir)
    return workdir, c


def test_the_training_grids_hold_one_class_per_row(cond_run):
    workdir, c = cond_run
    cols = c.num_samples // CLASSES
    sample_key = jax.random.split(jax.random.PRNGKey(c.seed), 3)[2]  # the loop's
    z = jax.random.normal(sample_key, (cols, c.model.z_dim))
    draw, _, _, info = workdir_lib.load_generator(workdir, ema=False)
    assert info["conditional_classes"] == CLASSES
    # The raw G uses BatchNorm's running statistics: each image depends on its (z, y) only.
    got = _cells(workdir / "samples" / "final_raw.png", cols)
    assert got.shape[:2] == (CLASSES, cols)
    for k in range(CLASSES):
        want = sampling.to_uint8(draw(z, jnp.full((cols,), k, jnp.int32)))[..., 0]
        _close(got[k], want)
    for a, b in ((got[3], got[4]), (got[:, 0], got[:, 1])):  # the class and the column
        assert np.abs(a.astype(int) - b).mean() > 3  # change the image: a test that can fail
    # The EMA grid: the same batch, drawn with its own batch statistics.
    ema, _, _, _ = workdir_lib.load_generator(workdir)
    z_B, y_B = sampling.class_rows(z, CLASSES)
    want = sampling.to_uint8(ema(z_B, y_B))[..., 0].reshape(CLASSES, cols, 28, 28)
    _close(_cells(workdir / "samples" / "final.png", cols), want)


def test_sample_class_k_and_one_class_per_row(cond_run, mnist_dir, tmp_path):
    workdir, _ = cond_run
    w = f"--workdir={workdir}"
    r = run_module(w, "--num=12", "--class=7", f"--npz={tmp_path / 'k.npz'}",
                   data_dir=mnist_dir, module="experiments.sample")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sampled 12 images of class 7" in r.stdout
    assert (workdir / "samples" / "sample_20_class7.png").exists()
    with np.load(tmp_path / "k.npz") as npz:
        images, labels = npz["images"], npz["labels"]
    assert list(labels) == [7] * 12
    draw, z_dim, _, _ = workdir_lib.load_generator(workdir)  # EMA, this batch's statistics
    want = sampling.to_uint8(draw(sampling.latents(0, 12, z_dim), jnp.full((12,), 7)))
    np.testing.assert_array_equal(images, want)
    # Without --class: 25 rounded down to 2 columns of the 10 classes, raw G.
    r = run_module(w, "--num=25", "--no-ema", "--seed=2", f"--out={tmp_path / 'g.png'}",
                   f"--npz={tmp_path / 'g.npz'}", data_dir=mnist_dir,
                   module="experiments.sample")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "20 images (10 classes x 2, one class per row; --num=25 rounded" in r.stdout
    with np.load(tmp_path / "g.npz") as npz:
        images, labels = npz["images"], npz["labels"]
    assert list(labels) == [k for k in range(CLASSES) for _ in range(2)]
    raw, _, _, _ = workdir_lib.load_generator(workdir, ema=False)
    z = sampling.latents(2, 2, z_dim)
    cells = _cells(tmp_path / "g.png", 2)
    for k in range(CLASSES):
        want = sampling.to_uint8(raw(z, jnp.full((2,), k)))[..., 0]
        _close(cells[k], want)
        np.testing.assert_array_equal(cells[k], images[2 * k:2 * k + 2, ..., 0])


def test_a_class_the_run_cannot_draw_is_refused(cond_run, run_dir, mnist_dir):  # noqa: F811
    workdir, _ = cond_run
    r = run_module(f"--workdir={workdir}", "--class=10", data_dir=mnist_dir,
                   module="experiments.sample")
    _refused(r, "Class 10 is not one of the 10 classes", "0..9", "--class")
    with pytest.raises(ConfigError, match=r"Class -1 is not one of the 10 classes"):
        workdir_lib.sample_labelled(workdir, 4, label=-1)
    r = run_module(f"--workdir={run_dir}", "--class=3", data_dir=mnist_dir,
                   module="experiments.sample")
    _refused(r, "is unconditional", "no class 3", "leave the class (--class")
    assert not list((run_dir / "samples").glob("sample_*class*"))
    # An unconditional run's samples carry no labels and are sample()'s.
    images, labels, step = workdir_lib.sample_labelled(run_dir, 5, seed=1)
    draw, z_dim, _, _ = workdir_lib.load_generator(run_dir)
    assert labels is None and step == 40
    np.testing.assert_array_equal(images, sampling.to_uint8(draw(sampling.latents(1, 5, z_dim))))
    np.testing.assert_array_equal(images, workdir_lib.sample(run_dir, 5, seed=1)[0])
