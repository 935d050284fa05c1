import hashlib
import json
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from gan_jax import models, trainer
from gan_jax.trainer import config as config_lib
from gan_jax.trainer import engine as trainer_engine
from gan_jax.trainer import loop as trainer_loop
from gan_jax.trainer import workdir as workdir_lib
from gan_jax.trainer.checkpoint import CheckpointError, Checkpointer
from gan_jax.errors import DivergenceError, WorkdirError
from tests.helpers import (assert_trees_equal, load_config, metric_lines, restore, run_module,
                           start_module)
from tests.helpers import smoke_config as _config


def _flags(config, name="mnist_mlp"):
    """Command-line overrides that make the config file's smoke variant equal ``config``."""
    base = config_lib.flatten(config_lib.to_dict(load_config(name, "smoke")))
    want = config_lib.flatten(config_lib.to_dict(config))
    return [f"--config=experiments/configs/{name}.py:smoke"] + [
        f"--config.{k}={v}" for k, v in want.items() if base[k] != v]


def _steps(directory):
    ckpt = Checkpointer(directory, read_only=True)
    steps = ckpt.steps()
    ckpt.close()
    return steps


def _wait_for(path, proc, timeout=300):
    t = time.time()
    while not path.exists():
        # A string, not pytest's cut-down repr of a tuple: a crash's stack must show whole.
        assert proc.poll() is None, "\n".join(proc.communicate())[-6000:]
        assert time.time() - t < timeout
        time.sleep(0.02)


def _snapshot(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _straight(c, workdir):
    """The uninterrupted run; its checkpoint frequency does not change what it computes,
    and one save at the end is 10-15 s faster here than one every 20 steps."""
    c = c.copy_and_resolve_references()
    c.checkpoint.every = c.num_steps
    trainer.train_and_evaluate(c, workdir)


@pytest.mark.parametrize("name,steps,layout", [
    # The device-resident data's position (the MLP's plain case was dropped to keep CI under
    # its time limit: the same code path as this one; SIGKILL below runs the MLP on it).
    ("mnist_dcgan", 60, {}),
    # The grain iterator's position and on-device augmentation.
    ("mnist_mlp", 100, {"dataset.pipeline": "streaming", "dataset.augment": "color,cutout"})])
def test_sigterm_then_resume_is_bit_identical(name, steps, layout, mnist_dir, tmp_path):
    c = _config(mnist_dir, name, num_steps=steps, log_every=10, sample_every=steps,
                **{"checkpoint.every": 20}, **layout)
    _straight(c, tmp_path / "straight")

    run = tmp_path / "interrupted"
    proc = start_module(*_flags(c, name), f"--workdir={run}", data_dir=mnist_dir)
    _wait_for(run / "checkpoints" / "20", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["preempted"] and 20 <= summary["steps"] < steps, out
    assert "stopped by SIGTERM" in out and "resume with: python -m experiments.main" in out
    assert max(_steps(run / "checkpoints")) == summary["steps"]

    resumed = trainer.train_and_evaluate(c, run)
    assert resumed["resumed_from"] == summary["steps"] and resumed["steps"] == steps
    a, _ = restore(tmp_path / "straight", c)
    b, _ = restore(run, c)
    assert int(a.step) == int(b.step) == steps
    assert_trees_equal(a, b)  # Params, BatchNorm statistics, both Adam states, EMA, RNG.
    # The log of the resumed run reads as one run: each step once, with the same values.
    assert metric_lines(tmp_path / "straight") == metric_lines(run)


def test_sigkill_between_checkpoints_then_resume(mnist_dir, tmp_path):
    # The per-device pmap step here; the sharded jit step in the SIGTERM tests above.
    c = _config(mnist_dir, num_steps=100, sample_every=100, **{"checkpoint.every": 20,
                                                                 "parallel.mode": "pmap"})
    _straight(c, tmp_path / "straight")
    run = tmp_path / "killed"
    proc = start_module(*_flags(c), f"--workdir={run}", data_dir=mnist_dir)
    _wait_for(run / "checkpoints" / "40", proc)
    proc.kill()
    proc.wait()
    last = max(_steps(run / "checkpoints"))
    assert last < 100
    assert trainer.train_and_evaluate(c, run)["resumed_from"] == last
    assert not [p for p in (run / "checkpoints").iterdir() if "tmp" in p.name]
    assert_trees_equal(restore(tmp_path / "straight", c)[0], restore(run, c)[0])


def test_half_written_checkpoint_is_ignored(mnist_dir, tmp_path):
    c = _config(mnist_dir)
    trainer.train_and_evaluate(c, tmp_path)
    ckpts = tmp_path / "checkpoints"
    # What a SIGKILL during Orbax's save of step 60 leaves: a temporary dir, not renamed.
    partial = ckpts / "60.orbax-checkpoint-tmp-1795890000000000"
    shutil.copytree(ckpts / "40", partial)
    for f in list((partial / "generator").rglob("*"))[::2]:
        if f.is_file():
            f.write_bytes(b"\0" * 7)
    ckpt = Checkpointer(ckpts)  # Opening for training clears leftovers of killed saves.
    assert ckpt.latest_step() == 40
    ckpt.close()
    assert not partial.exists()
    state, _ = restore(tmp_path, c)
    assert int(state.step) == 40


def _first_rng(seed=0):
    # What state.create stores: the third split of the trainer's init key.
    init_key = jax.random.split(jax.random.PRNGKey(seed), 3)[0]
    return jax.random.split(init_key, 3)[2]


def _inject_nan_at(monkeypatch, step_no, only_rng=None):
    """Makes G's params NaN going into step ``step_no`` (only while state.rng is
    ``only_rng``, if given), through the trainer's own step builder."""
    make_step = trainer_engine.make_step

    def patched(config, G, D, **options):
        inner = make_step(config, G, D, **options)

        def step(state, batch):
            hit = state.step == step_no - 1
            if only_rng is not None:
                hit = hit & jax.numpy.all(state.rng == only_rng)
            poison = jax.numpy.where(hit, jax.numpy.nan, 1.0)
            return inner(state.replace(g_params=jax.tree.map(lambda p: p * poison,
                                                             state.g_params)), batch)
        return step

    monkeypatch.setattr(trainer_engine, "make_step", patched)


def test_nan_stops_and_keeps_last_good_checkpoint(mnist_dir, tmp_path, monkeypatch):
    _inject_nan_at(monkeypatch, 27)
    c = _config(mnist_dir)
    with pytest.raises(DivergenceError, match=r"^Step 27: \w+ is nan"):
        trainer.train_and_evaluate(c, tmp_path)
    assert _steps(tmp_path / "checkpoints") == [20]
    state, _ = restore(tmp_path, c)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def test_nan_rollback_continues_with_fresh_key(mnist_dir, tmp_path, monkeypatch):
    _inject_nan_at(monkeypatch, 27, only_rng=_first_rng())
    c = _config(mnist_dir, nan_rollbacks=1)
    summary = trainer.train_and_evaluate(c, tmp_path)
    assert summary["rollbacks"] == 1 and summary["steps"] == 40
    events = [m for m in metric_lines(tmp_path) if m.get("event") == "rollback"]
    assert len(events) == 1 and events[0]["step"] == 20 and "Step 27" in events[0]["reason"]
    state, _ = restore(tmp_path, c)
    assert not np.array_equal(np.asarray(state.rng), np.asarray(_first_rng()))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def test_nan_rollback_rereads_the_streaming_input_from_the_checkpoint(mnist_dir, tmp_path,
                                                                     monkeypatch):
    c = _config(mnist_dir, nan_rollbacks=1, **{"dataset.pipeline": "streaming"})
    trainer.train_and_evaluate(c, tmp_path / "straight")
    _inject_nan_at(monkeypatch, 27, only_rng=_first_rng())
    assert trainer.train_and_evaluate(c, tmp_path / "rolled")["rollbacks"] == 1
    # Steps 21-40 read the same batches again, so the input ends where the straight run's
    # does; without the rewind it skipped the batches read ahead before the NaN.
    _, straight = restore(tmp_path / "straight", c)
    _, rolled = restore(tmp_path / "rolled", c)
    assert rolled["data"] == straight["data"] and rolled["data"]["next_step"] == 40


def test_a_run_without_a_checkpoint_writes_its_logs_afresh(mnist_dir, tmp_path):
    c = _config(mnist_dir)
    trainer.train_and_evaluate(c, tmp_path)
    lines, summary = metric_lines(tmp_path), (tmp_path / "summary.json").read_bytes()
    # A finished run run again does nothing and keeps its summary.
    assert trainer.train_and_evaluate(c, tmp_path) == json.loads(summary)
    assert (tmp_path / "summary.json").read_bytes() == summary
    # What a kill before the first checkpoint leaves: log lines, a torn one, no checkpoint.
    shutil.rmtree(tmp_path / "checkpoints")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "d_lo')
    trainer.train_and_evaluate(c, tmp_path)
    assert metric_lines(tmp_path) == lines


def test_resume_with_other_shapes_fails_first_and_changes_nothing(mnist_dir, tmp_path,
                                                                  monkeypatch):
    c = _config(mnist_dir, num_steps=20)
    trainer.train_and_evaluate(c, tmp_path)
    before = _snapshot(tmp_path)
    c.num_steps = 40  # Unfinished, so it resumes (a finished run is not even compiled).
    build = models.build

    def wider(model_cfg, image_shape, dtype="float32", axis_name=None, num_classes=None):
        model_cfg = model_cfg.copy_and_resolve_references()
        model_cfg.g_width = 64
        return build(model_cfg, image_shape, dtype, axis_name, num_classes)

    monkeypatch.setattr(trainer_loop.models, "build", wider)
    with pytest.raises(CheckpointError) as e:
        trainer.train_and_evaluate(c, tmp_path)
    msg = str(e.value)
    assert "generator/params/Dense_0/kernel: checkpoint float32[100, 256], model float32[100, 64]" \
        in msg and "optimizer/g/0/mu/Dense_0/kernel" in msg
    assert _snapshot(tmp_path) == before


def test_resume_with_a_reshaping_config_lists_keys_and_shapes(mnist_dir, tmp_path):
    c = _config(mnist_dir)
    trainer.train_and_evaluate(c, tmp_path)
    before = _snapshot(tmp_path)
    c.model.d_width = 32
    with pytest.raises(WorkdirError) as e:
        trainer.train_and_evaluate(c, tmp_path)
    msg = str(e.value)
    assert "model.d_width: 128 -> 32" in msg
    assert "discriminator/params/Dense_0/kernel: checkpoint float32[784, 128], model " \
        "float32[784, 32]" in msg
    assert _snapshot(tmp_path) == before


def test_corrupted_and_foreign_checkpoints(mnist_dir, tmp_path):
    c = _config(mnist_dir)
    trainer.train_and_evaluate(c, tmp_path)
    # A checkpoint whose run info names another model.
    meta = tmp_path / "checkpoints" / "20" / "run" / "metadata"
    info = json.loads(meta.read_text())
    info["config"]["model"]["name"] = "dcgan"
    meta.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=r"checkpoints/20 does not match the dcgan model"):
        workdir_lib.sample(tmp_path, 4, step=20)
    # Damaged array data.
    for f in (tmp_path / "checkpoints" / "40" / "generator").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"checkpoints/40 .*damaged"):
        workdir_lib.sample(tmp_path, 4)
    c.num_steps = 60  # Extended, so it resumes: from no checkpoint that passes.
    with pytest.raises(CheckpointError, match=r"checkpoints/40"):
        trainer.train_and_evaluate(c, tmp_path)


def test_best_checkpoint_is_kept_with_the_latest(mnist_dir, tmp_path):
    c = _config(mnist_dir, num_steps=60, log_every=10, sample_every=60,
                **{"checkpoint.every": 10, "checkpoint.keep": 1,
                   "checkpoint.best_metric": "d_loss", "checkpoint.best_mode": "min"})
    trainer.train_and_evaluate(c, tmp_path)
    losses = {m["step"]: m["d_loss"] for m in metric_lines(tmp_path) if "d_loss" in m}
    best = min(losses, key=losses.get)
    assert _steps(tmp_path / "checkpoints") == sorted({best, 60})


def test_sample_cli(mnist_dir, tmp_path):
    c = _config(mnist_dir)
    trainer.train_and_evaluate(c, tmp_path / "run")
    w = f"--workdir={tmp_path / 'run'}"
    outs = []
    for name, extra in (("a", []), ("b", []), ("raw", ["--no-ema"])):
        r = run_module(w, "--num=16", f"--out={tmp_path / name}.png",
                       f"--npz={tmp_path / name}.npz", *extra, data_dir=mnist_dir,
                       module="experiments.sample")
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(np.load(tmp_path / f"{name}.npz")["images"])
    assert outs[0].shape == (16, 28, 28, 1) and outs[0].dtype == np.uint8
    np.testing.assert_array_equal(outs[0], outs[1])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert not np.array_equal(outs[0], outs[2])
    r = run_module(w, "--step=30", data_dir=mnist_dir, module="experiments.sample")
    assert r.returncode == 1 and "No checkpoint for step 30" in r.stderr and "[20, 40]" in r.stderr
    r = run_module(f"--workdir={tmp_path / 'none'}", data_dir=mnist_dir,
                   module="experiments.sample")
    assert r.returncode == 1 and "No checkpoint directory at" in r.stderr
