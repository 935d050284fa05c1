"""Evaluation on a schedule inside the training loop: eval.jsonl lines, TensorBoard/metrics
scalars, the best checkpoint by FID, the lines a resume removes, and config errors."""
import json

import pytest

from gan_jax import trainer
from gan_jax.trainer import config as config_lib
from gan_jax.trainer.checkpoint import Checkpointer
from gan_jax.errors import ConfigError
from gan_jax.trainer import evaluation as scheduled
from gan_jax.files import append_jsonl
from tests.helpers import load_config


def test_training_evaluates_on_schedule(private_cache, mnist_dir, tmp_path):
    c = load_config("mnist_mlp", "smoke")  # 40 steps, checkpoints every 20.
    c.dataset.data_dir = mnist_dir
    c.eval.every, c.eval.num, c.eval.metrics = 10, 300, "fid,kid,is"
    c.eval.kid_subset_size, c.eval.reference_num = 100, 1000
    c.checkpoint.keep, c.checkpoint.best_metric = 1, "fid"
    c.log_every = 40  # No log line between an eval and the next checkpoint.
    summary = trainer.train_and_evaluate(c, tmp_path / "run")

    rows = [json.loads(s) for s in (tmp_path / "run/eval.jsonl").read_text().splitlines()]
    assert [(r["step"], r["metric"]) for r in rows] == [
        (s, m) for s in (10, 20, 30, 40) for m in ("fid", "kid", "is")]
    assert all(r["source"] == "train" and r["provenance"]["ema"] for r in rows)
    p = rows[0]["provenance"]
    assert p["extractor"] == "mnist" and p["num_samples"] == 300
    assert p["reference"]["num"] == 1000 and p["kid"]["subset_size"] == 100
    fids = {r["step"]: r["fid"] for r in rows if r["metric"] == "fid"}
    assert all(v > 0 for v in fids.values())
    logged = [json.loads(s) for s in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert {r["step"]: r["eval/fid"] for r in logged if "eval/fid" in r} == fids
    # The latest checkpoint is kept (keep=1), and the best by FID with it.
    kept = sorted(int(d.name) for d in (tmp_path / "run/checkpoints").iterdir()
                  if d.name.isdigit())
    assert kept == sorted({40, min(fids, key=fids.get)})
    # Ranked by FID, each evaluated step is saved (10, 20, 30, 40) with its own FID, never
    # an earlier step's.
    assert summary["checkpoint_saves"] == 4
    ckpt = Checkpointer(tmp_path / "run/checkpoints", read_only=True)
    try:
        assert {s: ckpt.run_info(s)["metrics"]["fid"] for s in kept} == {s: fids[s] for s in kept}
    finally:
        ckpt.close()
    assert summary["steps"] == 40


def test_resume_drops_only_the_loops_later_lines(tmp_path):
    rows = [{"step": 20, "metric": "fid", "source": "train"},
            {"step": 40, "metric": "fid", "source": "train"},
            {"step": 40, "metric": "fid"}]  # experiments.evaluate's line for step 40.
    append_jsonl(tmp_path / "eval.jsonl", rows)
    assert scheduled.drop_after(tmp_path, 20) == 1
    got = [json.loads(s) for s in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert got == [rows[0], rows[2]]


@pytest.mark.parametrize("key,value,message", [
    ("metrics", "fid,ssim", r"eval.*Unknown metrics \['ssim'\]"),
    ("num", 500, r"eval.*kid needs at least 1000 generated samples, got num=500"),
    ("every", 7, r"'eval.every' \(7\) must be 0 \(off\) or a positive multiple"),
    ("extractor", "clip", r"'eval.extractor' must be"),
])
def test_bad_eval_config_is_refused(key, value, message):
    c = config_lib.defaults()
    c.eval.metrics = "fid,kid"
    c.eval[key] = value
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(c)
