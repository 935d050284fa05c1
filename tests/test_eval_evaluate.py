"""Evaluating checkpoints and generators: eval.jsonl lines and their provenance, all-or-nothing
appends, reference caching, and the errors for bad images or too few samples."""
import dataclasses
import json
import os
import threading

import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import files, trainer
from gan_jax.trainer import workdir as workdir_lib
from gan_jax.trainer.evaluation import evaluate_checkpoint
from gan_jax.eval import evaluate, features, metrics, reference
from tests.helpers import load_config, run_module

SMALL = dict(kid_subset_size=100, kid_subsets=5, knn_num=300)


@pytest.fixture(scope="module")
def run_dir(mnist_dir, tmp_path_factory):
    c = load_config("mnist_mlp", "smoke")
    c.dataset.data_dir = mnist_dir
    workdir = tmp_path_factory.mktemp("run")
    trainer.train_and_evaluate(c, workdir)
    return workdir


@pytest.fixture(scope="module")
def mnist_ex(mnist_classifier, mnist_dir):
    return features.get("mnist", data_dir=mnist_dir, log=lambda *a: None)


def _evaluate(run_dir, tmp_path, metrics="fid", **kw):
    return evaluate_checkpoint(run_dir, metrics, kw.pop("num", 400),
                                        reference_num=1000, reference_cache=tmp_path / "ref",
                                        log=lambda *a: None, **{**SMALL, **kw})


def test_evaluate_checkpoint_appends_one_line_per_metric(run_dir, mnist_ex, tmp_path):
    rows = _evaluate(run_dir, tmp_path, "fid,kid,is,pr,dc")
    lines = [json.loads(s) for s in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert lines[-5:] == json.loads(json.dumps(rows))
    assert [r["metric"] for r in rows] == ["fid", "kid", "is", "pr", "dc"]
    by = {r["metric"]: r for r in rows}
    assert by["fid"]["fid"] > 0 and 1 <= by["is"]["is"] <= 10
    assert 0 <= by["pr"]["precision"] <= 1 and 0 <= by["dc"]["coverage"] <= 1
    p = rows[0]["provenance"]
    assert rows[0]["step"] == p["checkpoint_step"] == 40 and p["ema"] is True
    assert p["extractor"] == "mnist" and p["weights_sha256"] == mnist_ex.info["weights_sha256"]
    assert p["reference"]["dataset"] == "mnist" and p["reference"]["split"] == "train"
    assert p["reference"]["num"] == 1000 and p["num_samples"] == 400 and p["seed"] == 0
    assert p["knn_num"] == 300 and p["kid"]["subset_size"] == 100
    assert p["gan_jax_version"] and p["resize"] == "none" and p["reference_sha256"]
    # The same seed draws the same samples: the same FID, now from the cached reference.
    again = _evaluate(run_dir, tmp_path)[0]
    assert again["fid"] == by["fid"]["fid"]
    assert len(list((tmp_path / "ref").glob("mnist-train-mnist-1000-*.npz"))) == 1


def test_evaluation_matches_the_sampler(run_dir, mnist_ex, tmp_path):
    # The images evaluated are the ones experiments.sample draws with the same seed.
    images, _ = workdir_lib.sample(run_dir, 300, seed=3)
    ref = reference.from_images(mnist_ex, images[:150], {"dataset": "own"})
    draw, z_dim, _, _ = workdir_lib.load_generator(run_dir)
    got = evaluate.evaluate_generator(draw, 150, z_dim=z_dim, extractor=mnist_ex,
                                      reference=ref, seed=3)
    assert abs(got["fid"]) < 1e-6 * metrics.fid(ref.features, ref.features + 1.0)


def test_a_failed_evaluation_leaves_eval_jsonl_untouched(run_dir, mnist_ex, tmp_path,
                                                         monkeypatch):
    path = run_dir / "eval.jsonl"
    files.append_jsonl(path, [{"step": 0, "metric": "marker"}])
    before = path.read_bytes()

    def interrupted(*a, **k):
        raise KeyboardInterrupt  # After FID, before the lines are written.
    monkeypatch.setattr(metrics, "kid", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(run_dir, tmp_path, "fid,kid")
    assert path.read_bytes() == before


def test_append_jsonl_is_all_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"a": 1}\n{"torn": ')  # What a crash mid-write elsewhere leaves.
    files.append_jsonl(path, [{"b": 2}, {"c": 3}])
    assert path.read_text().splitlines()[-2:] == ['{"b": 2}', '{"c": 3}']
    before = path.read_bytes()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:5]))
    with pytest.raises(OSError, match="nothing was appended"):
        files.append_jsonl(path, [{"d": 4}])
    assert path.read_bytes() == before


def _generator(scale=1.0, shape=(28, 28, 1), dtype=jnp.float32, calls=None):
    def draw(z):
        if calls is not None:
            calls.append(len(z))
        x = jnp.tanh(z[:, :1, None, None] + jnp.zeros((len(z),) + shape)) * scale
        return x.astype(dtype)
    return draw


@pytest.mark.parametrize("draw,message", [
    (_generator(scale=255.0), r"must lie in \[-1, 1\].*got values in \[-2"),
    (_generator(shape=(32, 32, 3)), r"expects images NHWC 28x28x1.*shape \(\d+, 32, 32, 3\)"),
    (_generator(dtype=jnp.int32), "float in \\[-1, 1\\] or uint8.*int32"),
    (lambda z: _generator()(z) * jnp.nan, "NaN or Inf"),
])
def test_bad_images_say_what_was_expected(mnist_ex, draw, message):
    ref = reference.from_images(mnist_ex, np.zeros((20, 28, 28, 1), np.uint8), {})
    with pytest.raises(features.ImageError, match=message):
        evaluate.evaluate_generator(draw, 20, z_dim=4, extractor=mnist_ex, reference=ref)


def test_a_reference_of_another_extractor_is_refused(mnist_ex):
    ref = reference.from_images(mnist_ex, np.zeros((20, 28, 28, 1), np.uint8), {})
    other = dataclasses.replace(mnist_ex, info={**mnist_ex.info, "code_sha256": "0" * 16})
    with pytest.raises(metrics.MetricError, match="another extractor \\(code_sha256: "
                                                  "'[0-9a-f]{16}' in the reference, '0{16}' here"):
        evaluate.evaluate_generator(_generator(), 20, z_dim=4, extractor=other, reference=ref)


def test_too_few_samples_fail_before_any_image_is_drawn(mnist_ex):
    ref = reference.from_images(mnist_ex, np.zeros((2000, 28, 28, 1), np.uint8), {})
    calls = []
    with pytest.raises(metrics.MetricError, match="kid needs at least 1000 generated samples, "
                                                  "got num=500.*kid_subset_size"):
        evaluate.evaluate_generator(_generator(calls=calls), 500, z_dim=4, extractor=mnist_ex,
                                    reference=ref, metrics="fid,kid")
    with pytest.raises(metrics.MetricError, match="Unknown metrics \\['ssim'\\]"):
        evaluate.evaluate_generator(_generator(calls=calls), 500, z_dim=4, extractor=mnist_ex,
                                    reference=ref, metrics="fid,ssim")
    assert calls == []


def test_reference_cache_is_checked(mnist_ex, mnist_dir, tmp_path):
    messages = []
    ref = reference.get(mnist_ex, "mnist", "test", data_dir=mnist_dir, num=300,
                        cache_dir=tmp_path, log=messages.append)
    (npz,) = tmp_path.glob("*.npz")
    meta = json.loads(npz.with_suffix(".json").read_text())
    assert meta["identity"]["weights_sha256"] == mnist_ex.info["weights_sha256"]
    assert meta["identity"]["num"] == 300 and meta["images_sha256"]
    # Statistics made by other feature or loader code are not reused.
    assert meta["identity"]["code_sha256"] == mnist_ex.info["code_sha256"]
    assert len(meta["identity"]["loader_sha256"]) == 16
    blob = bytearray(npz.read_bytes())
    blob[-100] ^= 1  # One flipped bit: the checksum catches it and the stats are recomputed.
    npz.write_bytes(bytes(blob))
    again = reference.get(mnist_ex, "mnist", "test", data_dir=mnist_dir, num=300,
                          cache_dir=tmp_path, log=messages.append)
    assert any("fails its checksum" in m for m in messages)
    np.testing.assert_array_equal(again.moments.cov, ref.moments.cov)


def test_callers_that_start_together_compute_the_reference_once(mnist_ex, mnist_dir, tmp_path):
    messages, refs = [], []
    get = lambda: refs.append(reference.get(mnist_ex, "mnist", "test", data_dir=mnist_dir,
                                            num=200, cache_dir=tmp_path, log=messages.append))
    threads = [threading.Thread(target=get) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum("computing reference statistics" in m for m in messages) == 1, messages
    np.testing.assert_array_equal(refs[0].moments.cov, refs[1].moments.cov)


def test_cli_evaluates_and_reports_errors(run_dir, private_cache, mnist_dir, tmp_path,
                                          monkeypatch):
    proc = run_module(f"--workdir={run_dir}", "--metrics=fid,is", "--num=300",
                      "--reference_num=500", "--no-ema", module="experiments.evaluate",
                      data_dir=mnist_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"metric": "fid"' in proc.stdout and "appended 2 lines" in proc.stdout
    last = json.loads((run_dir / "eval.jsonl").read_text().splitlines()[-1])
    assert last["metric"] == "is" and last["provenance"]["ema"] is False
    assert len(list((private_cache / "reference_stats").glob("*.npz"))) == 1

    before = (run_dir / "eval.jsonl").read_bytes()
    env_missing = str(tmp_path / "missing.npz")
    monkeypatch.setenv("GAN_JAX_INCEPTION_WEIGHTS", env_missing)
    proc = run_module(f"--workdir={run_dir}", "--extractor=inception",
                      module="experiments.evaluate", data_dir=mnist_dir)
    assert proc.returncode == 1 and proc.stderr.startswith("error: FID Inception weights")
    assert env_missing in proc.stderr and "convert_inception" in proc.stderr
    assert (run_dir / "eval.jsonl").read_bytes() == before


def test_inception_extractor_end_to_end(run_dir, mnist_dir, tmp_path, monkeypatch):
    # The FID Inception path of a checkpoint evaluation, at the real 299x299 size, with a
    # weights file found through the environment (random weights: the real file cannot be
    # downloaded here). Few images: each costs about 0.2 s on a CPU.
    from gan_jax.eval import inception_weights as iw
    digest = iw.save(iw.random_params(0), tmp_path / "w.npz", {"source": "test"})
    monkeypatch.setenv(iw.ENV, str(tmp_path / "w.npz"))
    rows = evaluate_checkpoint(run_dir, "fid,is", 12, extractor="inception",
                                        reference_num=12, reference_cache=tmp_path / "ref",
                                        data_dir=mnist_dir, log=lambda *a: None)
    fid, inception_score = rows
    assert fid["fid"] > 0 and 1 <= inception_score["is"] <= 1008
    p = fid["provenance"]
    assert p["extractor"] == "inception" and p["weights_sha256"] == digest
    assert p["resize"].startswith("bilinear 299x299") and p["reference"]["num"] == 12
