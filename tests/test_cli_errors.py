"""The entry points' answers to bad input (issue 24): one ``error:`` line naming the problem
and the fix, a non-zero exit, no traceback, and every file that existed left as it was.
Each case drives the real command in a subprocess, against one trained MLP smoke run."""
import errno
import hashlib
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from gan_jax import files, sampling
from tests.helpers import REPO, run_module

SMOKE = "--config=experiments/configs/mnist_mlp.py:smoke"
NOISE = ("Traceback", "Event loop is closed", "Exception ignored", "never retrieved",
         "FATAL")


@pytest.fixture(scope="module")
def run_dir(mnist_dir, tmp_path_factory) -> pathlib.Path:
    """The MLP smoke run (40 steps; checkpoints at 20 and 40), trained once for all xdist
    workers (in their shared temporary dir); every test only reads it, or a copy."""
    shared = tmp_path_factory.getbasetemp().parent / "cli_errors"
    workdir = shared / "run"
    with files.exclusive(shared / "run.lock"):
        if not (workdir / "summary.json").exists():
            r = run_module(SMOKE, f"--workdir={workdir}", data_dir=mnist_dir)
            assert r.returncode == 0, r.stderr[-3000:]
    return workdir


def _hashes(*paths) -> dict:
    """sha256 of every file under ``paths`` (a path may be a single file)."""
    out = {}
    for root in map(pathlib.Path, paths):
        for f in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _copy(run_dir, tmp_path, name="run") -> pathlib.Path:
    return pathlib.Path(shutil.copytree(run_dir, tmp_path / name))


def _refused(r, *words: str) -> str:
    """The one ``error:`` line of a refused command; it must contain every word."""
    text = r.stdout + r.stderr
    assert r.returncode != 0, text[-3000:]
    for noise in NOISE:
        assert noise not in text, text[-3000:]
    errors = [s for s in r.stderr.splitlines() if s.startswith("error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def test_1_unknown_config_keys_and_values_of_the_wrong_type(run_dir, mnist_dir):
    before = _hashes(run_dir)
    w = f"--workdir={run_dir}"
    r = run_module(SMOKE, "--config.no_such_key=1", w, data_dir=mnist_dir)
    _refused(r, "Unknown config key 'no_such_key'", "valid keys here", "'batch_size'")
    r = run_module(SMOKE, "--config.model.widht=8", w, data_dir=mnist_dir)
    _refused(r, "'model.widht'", "did you mean 'model.g_width'", "'model.d_width'")
    r = run_module("--config.model.widht=8", w, data_dir=mnist_dir)  # The default config.
    _refused(r, "'model.widht'", "'model.g_width'")
    r = run_module(SMOKE, "--config.batch_size=big", w, data_dir=mnist_dir)
    _refused(r, "--config.batch_size=big", "must be of type int", "32")
    assert _hashes(run_dir) == before


def test_2_a_dataset_name_tfds_cannot_parse(run_dir, mnist_dir, tmp_path):
    before = _hashes(run_dir, pathlib.Path(mnist_dir))
    r = run_module(SMOKE, "--config.dataset.name=Cifar-10", f"--workdir={tmp_path / 'new'}",
                   data_dir=mnist_dir)
    _refused(r, "'Cifar-10' is not a tfds dataset name", "lowercase",
             "did you mean 'cifar10'", "config.dataset.name")
    assert not (tmp_path / "new").exists()
    assert _hashes(run_dir, pathlib.Path(mnist_dir)) == before


def test_3_sample_refuses_fewer_than_one_image(run_dir, mnist_dir):
    before = _hashes(run_dir)
    for num in ("0", "-1"):
        r = run_module(f"--workdir={run_dir}", f"--num={num}", data_dir=mnist_dir,
                       module="experiments.sample")
        _refused(r, "--num must be at least 1", f"got {num}")
    assert _hashes(run_dir) == before
    with pytest.raises(ValueError, match="at least one image"):
        sampling.grid(np.zeros((0, 28, 28, 1), np.uint8))


def test_4_a_workdir_that_is_a_file(mnist_dir, private_cache, tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a run\n")
    before = _hashes(tmp_path)
    for module, extra in (("experiments.main", [SMOKE]), ("experiments.sample", []),
                          ("experiments.evaluate", [])):
        r = run_module(*extra, f"--workdir={path}", data_dir=mnist_dir, module=module)
        _refused(r, f"--workdir {path} is a file, not a directory", "pass the run's directory")
    assert _hashes(tmp_path) == before


def _mount_read_only(src: pathlib.Path, dst: pathlib.Path) -> bool:
    """A read-only bind mount of ``src`` at ``dst`` (tests run as root, where chmod does not
    stop writes); False where this sandbox cannot mount."""
    dst.mkdir()
    if subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True).returncode:
        return False
    if subprocess.run(["mount", "-o", "remount,ro,bind", str(dst)],
                      capture_output=True).returncode:
        subprocess.run(["umount", str(dst)], check=True)
        return False
    return True


def test_5_a_read_only_workdir_is_refused_before_anything_is_compiled(
        run_dir, mnist_dir, private_cache, tmp_path, monkeypatch):
    src = tmp_path / "src"
    run = _copy(run_dir, src)
    before = _hashes(src)
    mounted = tmp_path / "ro"
    if not _mount_read_only(src, mounted):
        # In-process instead: the check's probe file fails as on a read-only file system.
        from gan_jax.errors import WorkdirError
        from gan_jax.trainer import train_and_evaluate
        from gan_jax.trainer.evaluation import evaluate_checkpoint
        from tests.helpers import load_config

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr("tempfile.TemporaryFile", read_only)
        monkeypatch.setenv("TFDS_DATA_DIR", mnist_dir)
        config = load_config()
        config.num_steps = 60  # Unfinished: a finished run returns before the check.
        with pytest.raises(WorkdirError, match="is not writable .Read-only file system"):
            train_and_evaluate(config, run)
        with pytest.raises(WorkdirError, match="is not writable .Read-only file system"):
            evaluate_checkpoint(run, "fid", 100)
        assert _hashes(src) == before
        pytest.skip("no mount here: checked in-process with a failing probe file")
    try:
        ro_run = mounted / "run"
        # An unfinished run (extended to 60 steps) and a new run under the read-only dir.
        r = run_module(SMOKE, "--config.num_steps=60", f"--workdir={ro_run}",
                       data_dir=mnist_dir)
        _refused(r, f"--workdir {ro_run} is not writable (Read-only file system)",
                 "writable disk")
        assert "compiled" not in r.stdout
        r = run_module(SMOKE, f"--workdir={mounted / 'new' / 'run'}", data_dir=mnist_dir)
        _refused(r, "cannot be created", "read-only file system", "writable disk")
        r = run_module(f"--workdir={ro_run}", "--num=100", data_dir=mnist_dir,
                       module="experiments.evaluate")
        _refused(r, f"--workdir {ro_run} is not writable (Read-only file system)")
        # A finished run writes nothing: it says so and exits 0, read-only or not.
        r = run_module(SMOKE, f"--workdir={ro_run}", data_dir=mnist_dir)
        assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr[-3000:]
    finally:
        subprocess.run(["umount", str(mounted)], check=True)
    assert _hashes(src) == before


def test_6_a_damaged_checkpoint_gives_one_line_without_orbax_tracebacks(run_dir, mnist_dir,
                                                                        tmp_path):
    # Every array file of G in both checkpoints cut short: sampling finds no good step and a
    # resume none to resume from. Orbax's reads orphaned by the failure used to print
    # "Event loop is closed" and their errors again (7 to 800 lines, at random).
    run = _copy(run_dir, tmp_path)
    for f in run.glob("checkpoints/*/generator/ocdbt.process_0/d/*"):
        os.truncate(f, 100)
    before = _hashes(run)
    for _ in range(2):
        r = run_module(f"--workdir={run}", f"--out={tmp_path / 'grid.png'}", data_dir=mnist_dir,
                       module="experiments.sample")
        _refused(r, "is damaged", "No earlier checkpoint's generator passes its check")
    r = run_module(SMOKE, "--config.num_steps=60", f"--workdir={run}", data_dir=mnist_dir)
    _refused(r, "passes its check")
    assert _hashes(run) == before and not (tmp_path / "grid.png").exists()


def test_7_inception_weights_without_the_inception_extractor(run_dir, mnist_dir,
                                                             private_cache, tmp_path):
    weights = tmp_path / "weights.npz"
    weights.write_bytes(b"never read")
    before = _hashes(run_dir, weights)
    r = run_module(f"--workdir={run_dir}", f"--inception_weights={weights}", "--num=100",
                   data_dir=mnist_dir, module="experiments.evaluate")
    _refused(r, "--inception_weights applies only to the inception extractor", "'mnist'",
             "--extractor=inception")
    assert _hashes(run_dir, weights) == before


@pytest.mark.parametrize("module", ["experiments.main", "experiments.sample",
                                    "experiments.evaluate"])
def test_8_help_exits_0(module, mnist_dir):
    for flag in ("--help", "--helpfull"):
        r = run_module(flag, data_dir=mnist_dir, module=module)
        assert r.returncode == 0, (flag, r.stdout[-2000:], r.stderr[-2000:])
        assert "--workdir" in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_9_sample_writes_its_grid_into_the_workdir(run_dir, mnist_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    before = _hashes(run)
    pngs_in_repo = set(REPO.glob("*.png"))
    r = run_module(f"--workdir={run}", "--num=4", data_dir=mnist_dir,
                   module="experiments.sample")
    assert r.returncode == 0, r.stderr[-3000:]
    grid = run / "samples" / "sample_40.png"
    assert grid.exists() and str(grid) in r.stdout
    r = run_module(f"--workdir={run}", "--num=4", "--no-ema", "--seed=3", data_dir=mnist_dir,
                   module="experiments.sample")
    assert r.returncode == 0 and (run / "samples" / "sample_40_raw_seed3.png").exists()
    after = _hashes(run)
    assert {k: after[k] for k in before} == before
    assert set(REPO.glob("*.png")) == pngs_in_repo
