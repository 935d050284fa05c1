"""Checkpoints carry a fingerprint (CRC-32) of every array; a restore that reads other bytes
is refused, a resume falls back to the newest checkpoint that passes, and a save that fails
leaves the previous checkpoint as it was."""
import errno
import hashlib
import json
import logging
import os
import shutil

import pytest

from gan_jax import trainer
from gan_jax.trainer import checkpoint as checkpoint_lib
from gan_jax.trainer import workdir as workdir_lib
from gan_jax.trainer.checkpoint import CheckpointError, Checkpointer
from tests.helpers import assert_trees_equal, metric_lines, restore, run_module
from tests.helpers import smoke_config as _config


@pytest.fixture(scope="module")
def trained(mnist_dir, tmp_path_factory):
    """An uninterrupted smoke run; tests damage copies of it."""
    workdir = tmp_path_factory.mktemp("integrity") / "straight"
    trainer.train_and_evaluate(_config(mnist_dir), workdir)
    return workdir


def _copy(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def _snapshot(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _steps(workdir):
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        return ckpt.steps()
    finally:
        ckpt.close()


def _garble(checkpoint, item="generator"):
    """Flips the bits of 64 bytes in the middle of the item's largest array data file,
    keeping its size: what the issue saw Orbax read without complaint."""
    files = [p for p in (checkpoint / item).rglob("*") if p.is_file() and p.parent.name == "d"]
    path = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0x5A for b in data[mid:mid + 64])
    path.write_bytes(bytes(data))


def _generator_arrays_changed(pristine, damaged, step, monkeypatch):
    """The generator arrays whose values the garble changed, read without the check."""
    prints = []
    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "_verify", lambda *args: None)
        for workdir in (pristine, damaged):
            ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
            try:
                prints.append(checkpoint_lib.fingerprints(ckpt.restore_generator(step)[2]))
            finally:
                ckpt.close()
    changed = [f"generator/{k}" for k in sorted(prints[0]) if prints[0][k] != prints[1][k]]
    assert changed, "the garble changed no value: the test would prove nothing"
    return changed


def test_resume_skips_a_garbled_checkpoint_and_ends_bit_identical(trained, mnist_dir,
                                                                  tmp_path, capsys,
                                                                  monkeypatch):
    c = _config(mnist_dir)
    run = _copy(trained, tmp_path)
    _garble(run / "checkpoints" / "40")
    changed = _generator_arrays_changed(trained, run, 40, monkeypatch)
    damaged = _snapshot(run / "checkpoints" / "40")
    (run / "summary.json").unlink()  # As a kill after the last save leaves the run.
    capsys.readouterr()

    summary = trainer.train_and_evaluate(c, run)
    out = capsys.readouterr().out
    assert summary["resumed_from"] == 20 and summary["steps"] == 40
    said = [line for line in out.splitlines() if "checkpoints/40 is damaged" in line]
    assert len(said) == 1 and f"{len(changed)} array" in said[0], out
    assert all(name in said[0] for name in changed), (changed, said)
    assert "moved the damaged checkpoint of step 40 aside" in out
    assert "resuming from step 20, the newest checkpoint that passes its check" in out
    # Renamed, not deleted or rewritten; Orbax lists it no more and saved a new step 40.
    aside = [p for p in (run / "checkpoints").iterdir() if p.name.startswith("40.corrupt-")]
    assert len(aside) == 1 and _snapshot(aside[0]) == damaged
    assert _steps(run) == [20, 40]
    a, _ = restore(trained, c)
    b, _ = restore(run, c)
    assert int(b.step) == 40
    assert_trees_equal(a, b)  # Params, BatchNorm statistics, both Adam states, EMA, RNG.
    assert metric_lines(trained) == metric_lines(run)


def test_resume_with_no_good_checkpoint_trains_nothing(trained, mnist_dir, tmp_path):
    run = _copy(trained, tmp_path)
    _garble(run / "checkpoints" / "40")
    _garble(run / "checkpoints" / "20", item="optimizer")
    (run / "summary.json").unlink()
    before = _snapshot(run)
    with pytest.raises(CheckpointError) as e:
        trainer.train_and_evaluate(_config(mnist_dir), run)
    msg = str(e.value)
    assert "No checkpoint in" in msg and "passes its check" in msg and "[40, 20]" in msg, msg
    assert "\n" not in msg
    # No new checkpoint, no metrics line, nothing moved aside: the workdir as it was.
    assert _snapshot(run) == before


@pytest.mark.parametrize("module,args", [
    ("experiments.sample", ["--num=4"]),
    # Refused before the MNIST classifier is needed.
    ("experiments.evaluate", ["--metrics=fid", "--num=100"])])
def test_sample_and_evaluate_refuse_a_garbled_checkpoint(trained, mnist_dir, tmp_path,
                                                        monkeypatch, module, args):
    run = _copy(trained, tmp_path)
    _garble(run / "checkpoints" / "40")
    changed = _generator_arrays_changed(trained, run, 40, monkeypatch)
    before = _snapshot(run)
    out = tmp_path / "grid.png"
    extra = [f"--out={out}"] if module == "experiments.sample" else []
    r = run_module(f"--workdir={run}", *args, *extra, data_dir=mnist_dir, module=module)
    assert r.returncode == 1, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"{run}/checkpoints/40 is damaged" in errors[0]
    assert all(name in errors[0] for name in changed), (changed, errors)
    assert "newest checkpoint whose generator passes its check is step 20 (--step=20)" \
        in errors[0]
    # Read-only: nothing moved, nothing written.
    assert _snapshot(run) == before and not out.exists()
    if module == "experiments.sample":  # The step it names samples.
        r = run_module(f"--workdir={run}", "--step=20", *args, *extra, data_dir=mnist_dir,
                       module=module)
        assert r.returncode == 0 and "from step 20" in r.stdout, r.stderr[-3000:]


def test_checkpoint_without_fingerprints_is_used_with_a_warning(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    meta = run / "checkpoints" / "40" / "run" / "metadata"
    info = json.loads(meta.read_text())
    del info["fingerprints"]  # What gan_jax wrote before it saved fingerprints.
    meta.write_text(json.dumps(info))
    capsys.readouterr()
    images, step = workdir_lib.sample(run, 4)
    err = capsys.readouterr().err
    assert step == 40 and len(images) == 4
    warnings = [line for line in err.splitlines() if "no array fingerprints" in line]
    assert len(warnings) == 1 and "checkpoints/40" in warnings[0], err


def test_failed_save_keeps_the_previous_checkpoint_and_stops_clearly(mnist_dir, tmp_path,
                                                                     monkeypatch, caplog,
                                                                     capfd):
    # keep=1: the save of step 40 would have Orbax delete step 20 once it succeeded.
    c = _config(mnist_dir, num_steps=60, sample_every=60, **{"checkpoint.keep": 1})
    # A full disk during Orbax's asynchronous array write of step 40 (a private Orbax
    # function: if it moves, this setattr fails loudly).
    from orbax.checkpoint._src.serialization import serialization
    write = serialization.async_serialize_from_host

    async def disk_full(rslices, tensorstore_spec, **kwargs):
        if "/40.orbax-checkpoint-tmp" in json.dumps(tensorstore_spec, default=str):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return await write(rslices, tensorstore_spec, **kwargs)

    monkeypatch.setattr(serialization, "async_serialize_from_host", disk_full)
    caplog.set_level(logging.ERROR)
    with pytest.raises(CheckpointError) as e:
        trainer.train_and_evaluate(c, tmp_path)
    msg = str(e.value)
    assert "Saving the checkpoint of step 40" in msg and "No space left on device" in msg
    assert "the checkpoint of step 20 is intact" in msg and "\n" not in msg, msg
    # Orbax's background threads log the error; their tracebacks are dropped.
    assert not [r for r in caplog.records if r.exc_info], caplog.text[-3000:]
    assert "Traceback" not in capfd.readouterr().err
    assert _steps(tmp_path) == [20]
    monkeypatch.undo()
    state, _ = restore(tmp_path, c)  # Whole, and passing its check.
    assert int(state.step) == 20
    # The next run clears the failed save's leftovers and resumes from step 20.
    summary = trainer.train_and_evaluate(c, tmp_path)
    assert summary["resumed_from"] == 20 and summary["steps"] == 60
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]
