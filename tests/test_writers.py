"""The run writers: metrics.jsonl, the fan-out to extra writers, and Weights & Biases in
offline mode, checked by reading back the files W&B wrote."""
import json
import pathlib
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from gan_jax.trainer import config as config_lib
from gan_jax.trainer import writers

_BLOCK, _HEADER = 32768, 7  # W&B's log is LevelDB's record format, in 32 KiB blocks.
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path):
    """The protobuf ``Record``s of one ``run-<id>.wandb`` file. Its Go core writes it and
    wandb 0.31 ships no Python reader (older ones had ``sdk.internal.datastore``), so this
    reads the format itself, strictly:
    a 7-byte header (":W&B", magic 0xBEE1, version 0), then records split into chunks that
    never cross a 32 KiB block, each with a CRC-32 (seeded with the chunk type), a length
    and a type; a block's tail shorter than a chunk header is zero padding."""
    from wandb.proto import wandb_internal_pb2

    data = pathlib.Path(path).read_bytes()
    assert struct.unpack("<4sHB", data[:_HEADER]) == (b":W&B", 0xBEE1, 0)
    pos, parts = _HEADER, []
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:
            pos += _BLOCK - pos % _BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        assert len(chunk) == length and zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc
        assert (kind in (_FULL, _FIRST)) == (not parts), f"chunk type {kind} out of order"
        parts.append(chunk)
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record
    assert pos == len(data) and not parts, "torn record at the end"


def _put(row: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]  # Newer wandb writes nested_key only.
    for k in keys[:-1]:
        row = row.setdefault(k, {})
    row[keys[-1]] = json.loads(item.value_json)


def read_offline_run(directory) -> dict:
    """What offline W&B runs under ``directory`` (a workdir, its ``wandb`` folder or one
    run folder) recorded: {"ids": [run id per run file], "history": [one dict per step,
    with "_step"], "config": {...}, "summary": {...}, "files": [run folder per file]}.
    A resumed run has one run folder per start; they are read in name (= time) order."""
    found = {p.resolve() for p in pathlib.Path(directory).rglob("run-*.wandb")}
    assert found, f"no offline W&B run under {directory}"
    out = dict(ids=[], history=[], config={}, summary={}, files=[])
    for path in sorted(found):
        out["files"].append(path.parent)
        for record in _records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out["ids"].append(record.run.run_id)
                for item in record.run.config.update:
                    _put(out["config"], item)
            elif kind == "config":
                for item in record.config.update:
                    _put(out["config"], item)
            elif kind == "history":
                row = {}
                for item in record.history.item:
                    _put(row, item)
                out["history"].append(row)
            elif kind == "summary":
                for item in record.summary.update:
                    _put(out["summary"], item)
    return out


@pytest.fixture
def wandb_config(monkeypatch, tmp_path_factory):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # W&B's settings, cache and core-service logs stay out of the user's home.
    home = tmp_path_factory.mktemp("wandb_home")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(home))
    c = config_lib.defaults()
    c.writers.wandb = True
    c.wandb.mode = "offline"
    c.wandb.tags = "a, b"
    c.batch_size = 48
    return c


def test_wandb_offline_run_holds_what_was_logged(wandb_config, tmp_path):
    grid = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    w = writers.WandbWriter(wandb_config, tmp_path)
    w.write_scalars(10, {"loss/g": 1.5, "loss/d": -0.25})
    w.write_scalars(20, {"loss/g": 2.75, "loss/d": 0.125, "eval/fid": 31.5})
    w.write_images(20, {"samples/ema": grid})
    w.write_event(20, event="rollback", to_step=10)
    w.close()

    run = read_offline_run(tmp_path)
    run_id = (tmp_path / "wandb_run_id").read_text()
    assert run["ids"] == [run_id]
    assert [r["_step"] for r in run["history"]] == [10, 20]
    first, second = run["history"]
    assert {k: first[k] for k in ("loss/g", "loss/d")} == {"loss/g": 1.5, "loss/d": -0.25}
    assert "eval/fid" not in first and "samples/ema" not in first
    assert {k: second[k] for k in ("loss/g", "loss/d", "eval/fid")} == {
        "loss/g": 2.75, "loss/d": 0.125, "eval/fid": 31.5}
    image = second["samples/ema"]
    assert image["_type"] == "image-file" and (image["width"], image["height"]) == (10, 6)
    png = run["files"][0] / "files" / image["path"]
    np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), grid)

    assert run["config"]["batch_size"] == 48
    assert run["config"]["wandb"]["project"] == "gan_jax"
    assert run["config"]["wandb"]["mode"] == "offline"
    assert run["summary"]["last_event"] == {"step": 20, "event": "rollback", "to_step": 10}


def test_wandb_resume_continues_the_same_run(wandb_config, tmp_path):
    w = writers.WandbWriter(wandb_config, tmp_path)
    w.write_scalars(5, {"x": 1.0})
    w.close()
    run_id = (tmp_path / "wandb_run_id").read_text()
    w = writers.WandbWriter(wandb_config, tmp_path)
    w.write_scalars(6, {"x": 2.0})
    w.close()

    assert (tmp_path / "wandb_run_id").read_text() == run_id
    run = read_offline_run(tmp_path)
    assert run["ids"] == [run_id, run_id] and len(run["files"]) == 2
    assert [(r["_step"], r["x"]) for r in run["history"]] == [(5, 1.0), (6, 2.0)]


class _Recorder(writers.Writer):
    def __init__(self):
        self.calls = []

    def write_config(self, config):
        self.calls.append(("config", config))

    def write_scalars(self, step, scalars):
        self.calls.append(("scalars", step, dict(scalars)))

    def write_images(self, step, images):
        self.calls.append(("images", step, sorted(images)))

    def write_event(self, step, **fields):
        self.calls.append(("event", step, fields))

    def close(self):
        self.calls.append(("close",))


def test_make_fans_out_to_extra_writers_and_metrics_jsonl(tmp_path):
    c = config_lib.defaults()
    c.writers.tensorboard = False
    c.writers.wandb = False
    mine = _Recorder()
    w = writers.make(c, tmp_path, extra=[mine])
    w.write_config({"seed": 3})
    w.write_scalars(1, {"loss": 0.5})
    w.write_images(1, {"samples/raw": np.zeros((4, 4, 1), np.uint8)})
    w.write_scalars(2, {"loss": 0.25, "eval/fid": 9.0})
    w.write_event(2, event="rollback", to_step=1)
    w.close()

    assert mine.calls == [("config", {"seed": 3}), ("scalars", 1, {"loss": 0.5}),
                          ("images", 1, ["samples/raw"]),
                          ("scalars", 2, {"loss": 0.25, "eval/fid": 9.0}),
                          ("event", 2, {"event": "rollback", "to_step": 1}), ("close",)]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25, "eval/fid": 9.0},
        {"step": 2, "event": "rollback", "to_step": 1}]
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "wandb").exists()


def test_a_training_run_logs_to_wandb_what_it_logs_to_metrics_jsonl(wandb_config, mnist_dir,
                                                                     tmp_path):
    from gan_jax import trainer
    from tests.helpers import load_config
    c = load_config("mnist_mlp", "smoke")  # 40 steps, a line every 10, grids at 20 and 40.
    c.dataset.data_dir = mnist_dir
    c.writers.wandb, c.wandb.mode = True, "offline"
    trainer.train_and_evaluate(c, tmp_path)
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    run = read_offline_run(tmp_path)
    history = {r["_step"]: r for r in run["history"]}
    assert sorted(history) == [m["step"] for m in lines] == [10, 20, 30, 40]
    for m in lines:
        for key in ("d_loss", "g_loss", "d_real", "g_grad_norm", "steps_per_s"):
            assert history[m["step"]][key] == m[key], (m["step"], key)
    assert {"samples/ema", "samples/raw"} <= set(history[20]) and "samples/ema" in history[40]
    assert run["config"]["batch_size"] == 32 and run["config"]["model"]["name"] == "mlp"
