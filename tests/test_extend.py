"""Raising num_steps on resume extends a run, exactly as if it had been that long all along,
unless something depends on num_steps (a learning-rate schedule over the run)."""
import json

import pytest

from gan_jax import trainer
from gan_jax.errors import WorkdirError
from tests.helpers import assert_trees_equal, load_config, metric_lines, restore


def _config(mnist_dir, num_steps):
    c = load_config("mnist_mlp", "smoke")  # K = 5, logs every 10, checkpoints every 20.
    c.dataset.data_dir, c.num_steps = mnist_dir, num_steps
    return c


def test_a_finished_run_extended_equals_a_run_that_long(mnist_dir, tmp_path):
    trainer.train_and_evaluate(_config(mnist_dir, 60), tmp_path / "straight")
    run = tmp_path / "extended"
    assert trainer.train_and_evaluate(_config(mnist_dir, 40), run)["steps"] == 40
    summary = trainer.train_and_evaluate(_config(mnist_dir, 60), run)
    assert summary["resumed_from"] == 40 and summary["steps"] == 60
    assert summary["steps_run"] == 20  # What this process ran, and its rate's numerator.
    assert json.loads((run / "config.json").read_text())["num_steps"] == 60
    c = _config(mnist_dir, 60)
    a, _ = restore(tmp_path / "straight", c)
    b, info = restore(run, c)
    assert int(b.step) == 60 and info["config"]["num_steps"] == 60
    assert_trees_equal(a, b)
    assert metric_lines(tmp_path / "straight") == metric_lines(run)
    # The longer run is the run now: its old length is another config.
    with pytest.raises(WorkdirError, match="(?s)num_steps: 60 -> 40.*num_steps may grow"):
        trainer.train_and_evaluate(_config(mnist_dir, 40), run)


def test_a_run_whose_learning_rate_decays_over_num_steps_is_not_extended(mnist_dir,
                                                                          tmp_path):
    c = _config(mnist_dir, 20)
    c.optimizer.d.decay = "linear"
    trainer.train_and_evaluate(c, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    c.num_steps = 40
    with pytest.raises(WorkdirError, match=r"decay to 0 over num_steps \(optimizer.d.decay\)"):
        trainer.train_and_evaluate(c, tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_finished_run_run_again_compiles_and_writes_nothing(mnist_dir, tmp_path, capsys,
                                                              monkeypatch):
    from gan_jax.trainer import engine
    c = _config(mnist_dir, 20)
    first = trainer.train_and_evaluate(c, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.setattr(engine.Engine, "compile", lambda *a: pytest.fail("compiled again"))
    assert trainer.train_and_evaluate(c, tmp_path) == first
    assert "already holds the run to step 20; nothing to do" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
