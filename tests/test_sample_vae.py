"""A VAE run's views and likelihood from the command line: ``experiments.sample
--reconstruct/--interpolate`` draw the right test images and decodings, refuse what they
cannot do with one ``error:`` line, and ``experiments.evaluate --metrics=nll`` writes the test
split's negative ELBO."""
import functools
import json
import math
import os
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from gan_jax import sampling, vae_steps
from gan_jax.data import sources
from gan_jax.trainer.checkpoint import CheckpointError
from gan_jax.trainer import workdir as workdir_lib
from tests.helpers import main_cmd, REPO, run_module
from tests.test_cli_errors import _hashes, _refused, run_dir  # noqa: F401 - the MLP GAN run

PAD, SIZE = 2, 28
NUM, PAIRS, STEPS = 13, 3, 5  # 13: a last pair of rows with 5 images; STEPS odd: a middle.


@pytest.fixture(scope="module")
def vae_run(mnist_dir, tmp_path_factory):
    """The MNIST VAE smoke config trained 60 steps with a larger learning rate and a short EMA,
    so that its reconstructions tell the digits apart (about 20 s)."""
    workdir = tmp_path_factory.mktemp("vae") / "run"
    r = run_module("--config=experiments/configs/mnist_vae.py:smoke",
                   "--config.optimizer.g.learning_rate=0.01", "--config.ema.decay=0.5",
                   "--config.num_steps=60", "--config.checkpoint.every=60",
                   "--config.sample_every=60", f"--workdir={workdir}", data_dir=mnist_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def views_run(vae_run, mnist_dir):
    """``sample --reconstruct --interpolate`` on the run, once: (its stdout, the step)."""
    r = run_module(f"--workdir={vae_run}", "--reconstruct", "--interpolate", f"--num={NUM}",
                   f"--pairs={PAIRS}", f"--steps={STEPS}", data_dir=mnist_dir,
                   module="experiments.sample")
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout, 60


@pytest.fixture(scope="module")
def vae(vae_run):
    """(encoder, decoder, params, variables) of the run's EMA weights."""
    return workdir_lib.load_vae(vae_run)[:4]


def _test_images(mnist_dir, n):
    d = sources.load("mnist", "test", mnist_dir, max_examples=n)
    return d.images, d.labels


def _cells(path, cols: int) -> np.ndarray:
    """The images of a grid PNG, [rows, cols, H, W]; the padding must be black."""
    g = np.asarray(Image.open(path))
    rows = (g.shape[0] - PAD) // (SIZE + PAD)
    assert g.shape == (rows * (SIZE + PAD) + PAD, cols * (SIZE + PAD) + PAD), g.shape
    cells = np.stack([np.stack([g[PAD + r * (SIZE + PAD):][:SIZE, PAD + c * (SIZE + PAD):]
                                [:, :SIZE] for c in range(cols)]) for r in range(rows)])
    inside = np.zeros(g.shape, bool)
    for r in range(rows):
        for c in range(cols):
            inside[PAD + r * (SIZE + PAD):][:SIZE, PAD + c * (SIZE + PAD):][:, :SIZE] = True
    assert not g[~inside].any()
    return cells


def _close(a, b):
    """uint8 images equal up to a rounding step (other batch sizes, other float sums)."""
    diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


def _differ(a, b):
    """Two decodings that a test tells apart: a test that can fail."""
    assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean() > 3


def test_reconstructions_pair_the_test_images_with_their_decodings(views_run, vae_run, vae,
                                                                   mnist_dir):
    stdout, step = views_run
    path = vae_run / "samples" / f"reconstructions_{step}.png"
    cells = _cells(path, 8)
    assert cells.shape[0] == 4  # ceil(13 / 8) pairs of rows
    x, _ = _test_images(mnist_dir, NUM)
    originals = cells[0::2].reshape(-1, SIZE, SIZE)
    recons = cells[1::2].reshape(-1, SIZE, SIZE)
    np.testing.assert_array_equal(originals[:NUM], x[..., 0])
    assert not originals[NUM:].any() and not recons[NUM:].any()  # the blank cells
    want = vae_steps.reconstruct(*vae, x)
    _close(recons[:NUM], sampling.to_uint8(want)[..., 0])
    _differ(recons[0], recons[2])  # a 7 and a 1
    mse = float(jnp.mean(jnp.square(want - (x.astype(np.float32) / 127.5 - 1))))
    line = next(s for s in stdout.splitlines() if s.startswith("reconstructed"))
    assert f"first {NUM} mnist test images from step {step} (EMA weights)" in line, line
    assert math.isclose(float(line.split("MSE ")[1].split()[0]), mse, rel_tol=1e-4), (line, mse)
    assert line.endswith(f"-> {path}")


def test_interpolations_decode_the_line_between_posterior_means(views_run, vae_run, vae,
                                                                mnist_dir):
    stdout, step = views_run
    cells = _cells(vae_run / "samples" / f"interpolations_{step}.png", STEPS + 2)
    assert cells.shape[0] == PAIRS
    x, _ = _test_images(mnist_dir, 2 * PAIRS)
    a, b = x[:PAIRS], x[PAIRS:]
    np.testing.assert_array_equal(cells[:, 0], a[..., 0])  # the real ends
    np.testing.assert_array_equal(cells[:, -1], b[..., 0])
    encoder, decoder, params, variables = vae
    za, _ = vae_steps.encode(encoder, params, variables, a)
    zb, _ = vae_steps.encode(encoder, params, variables, b)
    decode = lambda z: sampling.to_uint8(vae_steps.decode(decoder, params, variables, z))[..., 0]
    _close(cells[:, 1], decode(za))
    _close(cells[:, STEPS], decode(zb))
    _close(cells[:, 1 + STEPS // 2], decode((za + zb) / 2))
    for i in (0, 1):  # 7 -> 0 and 2 -> 4 (pair 2 is 1 -> 1)
        _differ(cells[i, 1], cells[i, STEPS])
    assert f"interpolated {PAIRS} pairs of mnist test images (i and i + {PAIRS})" in stdout


def test_a_gan_workdir_and_bad_flags_are_refused(vae_run, run_dir, mnist_dir,  # noqa: F811
                                                 tmp_path):
    before = _hashes(run_dir)
    r = run_module(f"--workdir={run_dir}", "--reconstruct", data_dir=mnist_dir,
                   module="experiments.sample")
    _refused(r, f"{run_dir} holds a GAN (model.name='mlp'), not a VAE", "model.name='vae'")
    assert _hashes(run_dir) == before
    before = _hashes(vae_run)
    out = tmp_path / "x.png"
    for args, words in (
            (["--interpolate", "--steps=1"], ["--steps must be at least 2", "got 1"]),
            (["--interpolate", "--pairs=0", f"--out={out}"], ["--pairs must be at least 1"]),
            (["--reconstruct", "--class=3"], ["--class applies to prior samples",
                                              "not to --reconstruct"]),
            (["--reconstruct", "--interpolate", f"--out={out}"], ["two files", "drop --out"])):
        r = run_module(f"--workdir={vae_run}", *args, data_dir=mnist_dir,
                       module="experiments.sample")
        _refused(r, *words)
        assert _hashes(vae_run) == before and not out.exists(), args


def test_a_checkpoint_whose_config_gives_other_shapes_is_refused(vae_run, tmp_path):
    # The run info's config builds the encoder and decoder; a config edited after the run
    # (here vae.hidden) must not load weights into a model of other shapes.
    copy = tmp_path / "run"
    shutil.copytree(vae_run, copy)
    meta = copy / "checkpoints" / "60" / "run" / "metadata"
    info = json.loads(meta.read_text())
    info["config"]["vae"]["hidden"] *= 2
    meta.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=r"The encoder in .*checkpoints/60 does not "
                                              r"match the vae model of its config:\n .*Dense"):
        workdir_lib.load_vae(copy)


@pytest.fixture(scope="module")
def cache_home(mnist_classifier, tmp_path_factory):
    """An XDG_CACHE_HOME of the module's own with the trained MNIST classifier, so the
    reference statistics that evaluate computes stay out of the user's cache."""
    from gan_jax.eval import mnist_classifier as mc
    home = tmp_path_factory.mktemp("cache")
    src = mc.cache_path()
    dst = home / "gan_jax" / src.parent.name / src.name
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    return home


def _evaluate(*args, data_dir, cache):
    env = {**os.environ, "TFDS_DATA_DIR": data_dir, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run(main_cmd(*args, module="experiments.evaluate"), cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=600)


def test_evaluate_nll_is_the_test_splits_negative_elbo(vae_run, vae, run_dir,  # noqa: F811
                                                       mnist_dir, cache_home):
    r = _evaluate(f"--workdir={vae_run}", "--metrics=nll", "--num=10", data_dir=mnist_dir,
                  cache=cache_home)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(s) for s in (vae_run / "eval.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["metric"] == "nll" and rows[0]["step"] == 60, rows
    row = rows[0]
    assert row["provenance"]["nll"]["num"] == 10_000
    printed = json.loads(next(s for s in r.stdout.splitlines() if s.startswith("{")))
    assert printed["nll"] == row["nll"] and printed["bits_per_dim"] == row["bits_per_dim"]
    # The same bound here: batches of 1000, key fold_in(PRNGKey(0), batch), binarised.
    encoder, decoder, params, variables = vae
    fn = jax.jit(functools.partial(vae_steps.negative_elbo, encoder, decoder, binarize=True))
    x, _ = _test_images(mnist_dir, None)
    key = jax.random.PRNGKey(0)
    total = sum(float(np.sum(np.asarray(fn(params, variables, x[s:s + 1000],
                                           jax.random.fold_in(key, i)), np.float64)))
                for i, s in enumerate(range(0, len(x), 1000)))
    nll = total / len(x)
    assert math.isclose(row["nll"], nll, rel_tol=1e-6), (row["nll"], nll)
    assert math.isclose(row["bits_per_dim"], nll / (784 * math.log(2)), rel_tol=1e-9)
    assert 100 < nll < 550  # trained a little: below the untrained ~550 nats
    # A GAN has no ELBO: one error line, and nothing appended to its eval.jsonl.
    before = _hashes(run_dir)
    r = _evaluate(f"--workdir={run_dir}", "--metrics=fid,nll", "--num=10", data_dir=mnist_dir,
                  cache=cache_home)
    _refused(r, "holds a GAN (model.name='mlp'), not a VAE")
    assert _hashes(run_dir) == before
