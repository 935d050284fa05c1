import json
import pathlib
import struct

import numpy as np
import pytest
from PIL import Image

from gan_jax import trainer
from gan_jax.trainer import workdir as workdir_lib
from gan_jax.data.sources import DatasetError
from gan_jax.errors import ConfigError, DivergenceError, WorkdirError
from tests.helpers import load_config, run_module


def _config(repo_root, name="mnist_mlp", variant="smoke"):
    return load_config(name, variant)


def _events(path: pathlib.Path):
    """Parses a TensorBoard event file (TFRecord framing) into Event protos."""
    from tensorboardX.proto import event_pb2
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        ev = event_pb2.Event()
        ev.ParseFromString(data[pos + 12:pos + 12 + n])
        out.append(ev)
        pos += 12 + n + 4
    return out


def test_smoke_run_writes_every_artefact(repo_root, mnist_dir, tmp_path):
    c = _config(repo_root)
    c.dataset.data_dir = mnist_dir
    summary = trainer.train_and_evaluate(c, tmp_path)
    assert summary["steps"] == 40 and summary["images_per_s"] > 0
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["batch_size"] == 32 and saved["model"]["name"] == "mlp"
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [10, 20, 30, 40]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm",
                "steps_per_s", "images_per_s"):
        assert all(np.isfinite(m[key]) for m in lines), key
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["20", "40"]
    grids = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert grids == ["final.png", "final_raw.png", "step_00000020.png", "step_00000020_raw.png"]
    img = np.asarray(Image.open(tmp_path / "samples" / "final.png"))
    assert img.shape == (4 * 30 + 2, 4 * 30 + 2) and img.dtype == np.uint8 and img.max() > 0
    (event_file,) = (tmp_path / "tensorboard").iterdir()
    events = _events(event_file)
    tags = {v.tag for e in events for v in e.summary.value}
    assert {"d_loss", "g_loss", "images_per_s", "samples/ema", "samples/raw"} <= tags
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 40


def test_a_log_line_waits_for_the_next_dispatch_unless_the_host_waits_anyway(
        mnist_dir, tmp_path, monkeypatch):
    # Writing step s's line reads its metrics, which waits for the device: the loop queues
    # the next dispatch first, except where a checkpoint or sample grid waits anyway.
    from gan_jax.trainer import engine, writers
    order = []
    dispatch, scalars = engine.Engine.dispatch, writers.JsonlWriter.write_scalars
    monkeypatch.setattr(engine.Engine, "dispatch",
                        lambda self, st: order.append("d") or dispatch(self, st))
    monkeypatch.setattr(writers.JsonlWriter, "write_scalars",
                        lambda self, step, v: order.append(f"L{step}") or scalars(self, step, v))
    c = load_config("mnist_mlp", "smoke")  # K = 5, 40 steps, logs every 10.
    c.dataset.data_dir = mnist_dir
    c.sample_every, c.checkpoint.every = 20, 20
    trainer.train_and_evaluate(c, tmp_path)
    assert "".join(order) == "dddL10dL20dddL30dL40"  # Before: ddL10ddL20ddL30ddL40.


def test_a_best_metric_the_run_does_not_log_is_refused_before_training(repo_root, mnist_dir,
                                                                       tmp_path):
    c = _config(repo_root)
    c.dataset.data_dir = mnist_dir
    c.checkpoint.best_metric = "fid"  # With eval.every = 0 no FID is ever logged.
    with pytest.raises(ConfigError, match=r"'fid', which this run does not log; it logs "
                                          r"d_adv_loss, d_fake, d_grad_norm, d_loss"):
        trainer.train_and_evaluate(c, tmp_path)
    assert not (tmp_path / "config.json").exists()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_workdir_with_other_config_is_refused(repo_root, mnist_dir, tmp_path):
    c = _config(repo_root)
    c.dataset.data_dir = mnist_dir
    c.num_steps = 10
    trainer.train_and_evaluate(c, tmp_path)
    before = (tmp_path / "config.json").read_bytes()
    c.batch_size, c.loss = 16, "hinge"
    with pytest.raises(WorkdirError) as e:
        trainer.train_and_evaluate(c, tmp_path)
    assert "batch_size: 32 -> 16" in str(e.value) and "loss: 'non_saturating' -> 'hinge'" in str(
        e.value)
    assert (tmp_path / "config.json").read_bytes() == before


def test_divergence_stops_with_step_and_quantity(repo_root, mnist_dir, tmp_path):
    c = _config(repo_root)
    c.dataset.data_dir = mnist_dir
    c.optimizer.d.name = "sgd"
    c.optimizer.d.learning_rate = 1e30
    with pytest.raises(DivergenceError, match=r"Step \d+: \w+ is (nan|inf|-inf)"):
        trainer.train_and_evaluate(c, tmp_path)


def test_bad_dataset_name(repo_root, tmp_path):
    c = _config(repo_root)
    c.dataset.name = "mnsit"
    c.dataset.data_dir = str(tmp_path / "tfds")
    with pytest.raises(DatasetError, match="mnsit"):
        trainer.train_and_evaluate(c, tmp_path / "run")


def _main(repo_root, *args, env_dir):
    return run_module(*args, data_dir=env_dir)


def test_entry_point_dcgan_smoke(repo_root, mnist_dir, tmp_path):
    r = _main(repo_root, "--config=experiments/configs/mnist_dcgan.py:smoke",
              f"--workdir={tmp_path}", env_dir=mnist_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 20/20" in r.stdout and "img/s" in r.stdout
    assert (tmp_path / "samples" / "final.png").exists()


def test_entry_point_rejects_bad_keys(repo_root, mnist_dir, tmp_path):
    # Each is one "error:" line naming the key and what it takes, exit status 1, no traceback.
    for override, words in (("--config.model.widht=3", ["'model.widht'", "'model.g_width'"]),
                            ("--config.batch_size=big", ["batch_size", "must be of type int"]),
                            ("--config.dataset.name=nope", ["Unknown dataset 'nope'"])):
        r = _main(repo_root, "--config=experiments/configs/mnist_mlp.py:smoke", override,
                  f"--workdir={tmp_path}", env_dir=mnist_dir)
        assert r.returncode == 1, r.stderr[-3000:]
        assert "Traceback" not in r.stdout + r.stderr
        [line] = r.stderr.strip().splitlines()
        assert line.startswith("error: ") and all(w in line for w in words), line


def test_a_run_from_before_a_key_was_added_or_retired_still_resumes(repo_root, tmp_path):
    # Runs saved before optimizer.g.decay existed lack it; at its default they are the same
    # run. Runs saved before model.upsample was retired have it; at the value that behaves
    # as gan_jax does now, they are the same run too.
    from gan_jax.trainer import config as config_lib
    c = _config(repo_root)
    saved = config_lib.to_dict(c)
    del saved["optimizer"]["g"]["decay"]
    saved["model"]["upsample"] = "auto"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    workdir_lib.check_workdir(tmp_path, c)
    c.optimizer.g.decay = "linear"
    with pytest.raises(WorkdirError, match="optimizer.g.decay: 'none' -> 'linear'"):
        workdir_lib.check_workdir(tmp_path, c)
    c.optimizer.g.decay = "none"
    saved["model"]["upsample"] = "phases"  # A form gan_jax no longer has: another run.
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(WorkdirError, match="model.upsample: 'phases' -> '<absent>'"):
        workdir_lib.check_workdir(tmp_path, c)
