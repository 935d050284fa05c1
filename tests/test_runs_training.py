"""Several runs in one program through the trainer (config.runs)."""
import json

import jax
import numpy as np
import pytest

from gan_jax import runs, trainer
from gan_jax.errors import ConfigError, DivergenceError
from gan_jax.trainer import config as config_lib
from gan_jax.trainer import families, multirun
from gan_jax.trainer.checkpoint import Checkpointer
from tests.helpers import run_module, smoke_config


def restore_runs(workdir, config):
    """(stacked state, run info) of an N-run job's latest checkpoint."""
    config = config_lib.validate(config)
    create = families.build(config, (28, 28, 1), 10).create((28, 28, 1))
    keys = jax.random.split(jax.random.PRNGKey(0), multirun.count(config))
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        return ckpt.restore(jax.jit(jax.vmap(create))(keys))
    finally:
        ckpt.close()


def restore_one(workdir, config):
    config = config_lib.validate(config)
    create = families.build(config, (28, 28, 1), 10).create((28, 28, 1))
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        return ckpt.restore(jax.jit(create)(jax.random.PRNGKey(0)))
    finally:
        ckpt.close()


def test_run_i_of_a_job_is_the_single_run_with_its_seed(mnist_dir, tmp_path):
    """BatchNorm (DCGAN), two D updates per step and DiffAugment; the runs split over two
    devices, each gathering its batches from both data shards."""
    kw = {"n_dis": 2, "dataset.augment": "translation,cutout", "num_steps": 6,
          "steps_per_dispatch": 2, "log_every": 2, "sample_every": 6, "checkpoint.every": 6,
          "parallel.num_devices": 2, "seed": 5}
    job = smoke_config(mnist_dir, "mnist_dcgan", **kw, **{"runs.seeds": 2})
    summary = trainer.train_and_evaluate(job, tmp_path / "job")
    assert summary["runs"] == 2 and summary["frozen_runs"] == {}
    single = smoke_config(mnist_dir, "mnist_dcgan", **{**kw, "seed": 6})
    trainer.train_and_evaluate(single, tmp_path / "single")
    both, info = restore_runs(tmp_path / "job", job)
    one, _ = restore_one(tmp_path / "single", single)
    assert info["data"]["runs"] == [5, 6]
    for a, b in zip(jax.tree.leaves(runs.select(both, 1)), jax.tree.leaves(one), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    assert not np.allclose(both.g_params["Dense_0"]["kernel"][0],
                           both.g_params["Dense_0"]["kernel"][1])
    # Per-run values, their mean and std in every line; one row per run in the grids.
    line = json.loads((tmp_path / "job" / "metrics.jsonl").read_text().splitlines()[-1])
    per_run = [line["d_loss/run0"], line["d_loss/run1"]]
    assert line["d_loss"] == pytest.approx(np.mean(per_run))
    assert line["d_loss_std"] == pytest.approx(np.std(per_run, ddof=1))
    samples = tmp_path / "job" / "samples"
    assert (samples / "final_run0.png").exists() and (samples / "final_run1.png").exists()


def test_a_sweep_resumes_bit_exact_with_its_learning_rates(mnist_dir, tmp_path):
    from tests.helpers import assert_trees_equal
    cfg = smoke_config(mnist_dir, "mnist_mlp", **{
        "runs.sweep": "optimizer.d.learning_rate=1e-3,3e-3", "num_steps": 8, "steps_per_dispatch": 2,
        "checkpoint.every": 4, "sample_every": 8, "log_every": 4})
    trainer.train_and_evaluate(cfg, tmp_path / "straight")
    half = cfg.copy_and_resolve_references()
    half.num_steps = 4
    trainer.train_and_evaluate(half, tmp_path / "resumed")
    summary = trainer.train_and_evaluate(cfg, tmp_path / "resumed")
    assert summary["resumed_from"] == 4
    a, _ = restore_runs(tmp_path / "straight", cfg)
    b, _ = restore_runs(tmp_path / "resumed", cfg)
    assert_trees_equal(a, b)
    np.testing.assert_allclose(b.d_opt_state.hyperparams["learning_rate"], [1e-3, 3e-3])
    lines = lambda w: [{k: v for k, v in json.loads(s).items() if "per_s" not in k}
                       for s in (w / "metrics.jsonl").read_text().splitlines()]
    assert lines(tmp_path / "straight") == lines(tmp_path / "resumed")


def test_the_map_form_trains_each_run_as_its_single_run(mnist_dir, tmp_path):
    """form="map": each run's K steps in turn, with a per-run step value (EMA decay)."""
    kw = {"num_steps": 4, "steps_per_dispatch": 2, "log_every": 2, "sample_every": 4,
          "checkpoint.every": 4, "seed": 3, "parallel.num_devices": 1}
    job = smoke_config(mnist_dir, "mnist_mlp", **kw, **{
        "runs.sweep": "ema.decay=0.5,0.9", "runs.form": "map"})
    summary = trainer.train_and_evaluate(job, tmp_path / "job")
    assert summary["runs"] == 2 and summary["frozen_runs"] == {}
    single = smoke_config(mnist_dir, "mnist_mlp", **kw, **{"ema.decay": 0.9})
    trainer.train_and_evaluate(single, tmp_path / "single")
    both, _ = restore_runs(tmp_path / "job", job)
    one, _ = restore_one(tmp_path / "single", single)
    for a, b in zip(jax.tree.leaves(runs.select(both, 1)), jax.tree.leaves(one), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    assert not np.allclose(both.ema_params["Dense_0"]["kernel"][0],
                           both.ema_params["Dense_0"]["kernel"][1])
    two_devices = smoke_config(mnist_dir, "mnist_mlp", **{
        "runs.seeds": 2, "runs.form": "map", "parallel.num_devices": 2})
    with pytest.raises(ConfigError, match="runs on one device"):
        trainer.train_and_evaluate(two_devices, tmp_path / "two")


def test_the_meter_freezes_a_diverged_run_and_says_so():
    said = []
    meter = multirun.RunsMeter(3, say=said.append)
    nan = float("nan")
    meter.add(10, {"d_loss": np.array([[1.0, 2.0, 3.0], [1.0, nan, 5.0]]),
                   "live": np.array([[1, 1, 1], [1, 0, 1]])})
    assert meter.frozen == {1: 12} and "run 1 diverged at step 12 (d_loss)" in said[0]
    line = meter.pop()
    assert line["d_loss/run1"] == 2.0 and line["d_loss"] == pytest.approx((1 + 2 + 4) / 3)
    meter.add(12, {"d_loss": np.array([[1.0, nan, 1.0]]), "live": np.array([[1, 0, 1]])})
    assert len(said) == 1 and "d_loss/run1" not in meter.pop()
    with pytest.raises(DivergenceError, match="Every run diverged"):
        meter.add(13, {"d_loss": np.array([[nan, nan, nan]]), "live": np.array([[0, 0, 0]])})


def test_runs_settings_and_bad_sweeps(mnist_dir):
    cfg = smoke_config(mnist_dir, "mnist_mlp", **{
        "runs.seeds": 2, "runs.sweep": "ema.decay=0.9,0.99; optimizer.g.b1=0.5,0"})
    got = multirun.settings(config_lib.validate(cfg))
    assert len(got) == 8 and got[0] == {"seed": 0, "ema.decay": 0.9, "optimizer.g.b1": 0.5}
    assert got[5] == {"seed": 1, "ema.decay": 0.99, "optimizer.g.b1": 0.5}
    for sweep, message in (("n_dis=1,2", "cannot vary within one program"),
                           ("ema.decay=a,b", "must be numbers"),
                           ("ema.decay", "is not key=v1,v2"),
                           ("vae.beta=1,2", "does not use")):
        with pytest.raises(ConfigError, match=message):
            config_lib.validate(smoke_config(mnist_dir, "mnist_mlp", **{"runs.sweep": sweep}))
    with pytest.raises(ConfigError, match="nan_rollbacks=0"):
        config_lib.validate(smoke_config(mnist_dir, "mnist_mlp",
                                         **{"runs.seeds": 2, "nan_rollbacks": 1}))


def test_evaluation_and_sampling_per_run(mnist_dir, private_cache, tmp_path):
    from gan_jax.trainer import evaluation, workdir
    cfg = smoke_config(mnist_dir, "mnist_mlp", **{
        "runs.seeds": 2, "eval.every": 40, "eval.num": 300, "eval.metrics": "fid,kid",
        "eval.kid_subset_size": 100, "eval.reference_num": 1000})
    trainer.train_and_evaluate(cfg, tmp_path / "job")
    lines = [json.loads(s) for s in (tmp_path / "job/eval.jsonl").read_text().splitlines()]
    assert [(r["metric"], r.get("run")) for r in lines] == [
        ("fid", 0), ("kid", 0), ("fid", 1), ("kid", 1), ("runs", None)]
    fids = [lines[0]["fid"], lines[2]["fid"]]
    assert lines[-1]["fid"]["mean"] == pytest.approx(np.mean(fids))
    assert lines[-1]["fid"]["min"] == min(fids) and lines[-1]["fid"]["max"] == max(fids)
    assert lines[-1]["settings"] == [{"seed": 0}, {"seed": 1}]
    # experiments.evaluate's path: every run and the summary, or the one asked for.
    kw = dict(reference_num=1000, kid_subset_size=100, kid_subsets=5, log=lambda *a: None)
    rows = evaluation.evaluate_checkpoint(tmp_path / "job", "fid", 300, **kw)
    assert [r.get("run") for r in rows] == [0, 1, None]
    assert rows[0]["fid"] == pytest.approx(fids[0])  # The same samples as in the loop.
    assert rows[1]["fid"] == pytest.approx(fids[1])
    with pytest.raises(ConfigError, match=r"Run 2 is not one of the 2 runs.*0..1"):
        workdir.sample(tmp_path / "job", 4, run=2)
    with pytest.raises(ConfigError, match="holds 2 runs in one checkpoint"):
        workdir.sample(tmp_path / "job", 4)
    proc = run_module(f"--workdir={tmp_path / 'job'}", "--num=4",
                      f"--out={tmp_path / 'grid.png'}", data_dir=mnist_dir,
                      module="experiments.sample")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "of each of 2 runs" in proc.stdout and (tmp_path / "grid_run1.png").exists()
    a, _ = workdir.sample(tmp_path / "job", 4, run=0)
    b, _ = workdir.sample(tmp_path / "job", 4, run=1)
    assert a.shape == (4, 28, 28, 1) and not np.array_equal(a, b)


def test_a_conditional_jobs_overview_grid_shows_every_class_per_run(mnist_dir, tmp_path):
    # Row r of the overview is run r's first latent in every class: column k equals the
    # class-k row's first tile of run r's own final grid.
    from PIL import Image
    kw = {"num_steps": 2, "steps_per_dispatch": 2, "log_every": 2, "sample_every": 2,
          "checkpoint.every": 2, "num_samples": 20, "runs.seeds": 2}
    trainer.train_and_evaluate(smoke_config(mnist_dir, "mnist_cdcgan", **kw), tmp_path)
    tile = lambda img, r, q: img[2 + r * 30:2 + r * 30 + 28, 2 + q * 30:2 + q * 30 + 28]
    overview = np.asarray(Image.open(tmp_path / "samples" / "final.png"))
    assert overview.shape[:2] == (2 + 2 * 30, 2 + 10 * 30)  # 2 runs x 10 classes.
    for r in range(2):
        own = np.asarray(Image.open(tmp_path / "samples" / f"final_run{r}.png"))
        assert own.shape[:2] == (2 + 10 * 30, 2 + 2 * 30)  # 10 classes x 2 latents.
        for k in range(10):
            np.testing.assert_array_equal(tile(overview, r, k), tile(own, k, 0))
    assert not np.array_equal(tile(overview, 0, 0), tile(overview, 0, 1))
