"""The quality report (gan_jax.trainer.quality, experiments.quality_report) on made-up
workdirs: mean ± std over seeds equal numpy's on the per-run lines at the final step, one row
per sweep point, FID by step, grids copied and shown, bad input refused with one error."""
import json
import pathlib
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gan_jax.errors import ConfigError, WorkdirError
from gan_jax.trainer import quality

REPO = pathlib.Path(__file__).resolve().parents[1]
PROV = {"extractor": "mnist", "num_samples": 10_000, "knn_num": 10_000, "ema": True}
STEPS = (2500, 5000)
FIELDS = {"fid": ("fid",), "kid": ("kid", "kid_std"), "is": ("is", "is_std"),
          "pr": ("precision", "recall")}


def _config(**extra):
    return {"seed": 3, "loss": "hinge", "n_dis": 1, "num_steps": 5000, "batch_size": 64,
            "model": {"spectral_norm": True, "g_width": 32, "d_width": 32},
            "ema": {"decay": 0.999}, "dataset": {"name": "mnist"},
            "optimizer": {p: {"learning_rate": 2e-4, "b1": 0.5, "b2": 0.999} for p in "gd"},
            **extra}


def _workdir(root, name, config, summary, lines, grids):
    w = root / name
    (w / "samples").mkdir(parents=True)
    (w / "config.json").write_text(json.dumps(config))
    (w / "summary.json").write_text(json.dumps(summary))
    (w / "eval.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for i, grid in enumerate(grids):
        pixels = np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(pixels).save(w / "samples" / grid)
    return w


def _lines(values, run=None):
    """eval.jsonl lines of {step: {field: value}}, one per metric, as the loop writes them."""
    out = []
    for step, v in values.items():
        for metric, fields in FIELDS.items():
            line = {"step": step, "source": "train", "metric": metric, "provenance": PROV,
                    **{f: v[f] for f in fields}}
            out.append(line if run is None else {**line, "run": run})
    return out


@pytest.fixture
def jobs(tmp_path):
    """A 2-point sweep × 2 seeds job and a single run; their per-run values."""
    rng = np.random.default_rng(0)
    per_run = {r: {s: {"fid": rng.uniform(10, 50), "kid": rng.uniform(0.1, 2),
                       "kid_std": 0.1, "is": rng.uniform(5, 9), "is_std": 0.1,
                       "precision": rng.uniform(0, 1), "recall": rng.uniform(0, 1)}
                   for s in STEPS} for r in range(4)}
    lines = [{"step": 5000, "metric": "fid", "fid": 999.0, "run": 0}]  # Superseded below.
    for r in range(4):
        lines += _lines(per_run[r], run=r)
    lines += [{"metric": "runs", "step": 5000, "runs": 4, "fid": {"mean": -1.0, "std": 0}},
              {"step": 7500, "metric": "fid", "fid": 1.0, "run": 3}]  # Not every run's step.
    sweep = _workdir(tmp_path, "sweep", _config(runs={
        "seeds": 2, "sweep": "optimizer.d.learning_rate=2e-4,4e-4", "form": ""}),
        {"wall_time_s": 600.0, "runs": 4, "steps": 5000}, lines,
        [f"final_run{i}.png" for i in range(4)])
    single_values = {5000: {**per_run[0][5000], "fid": 33.3}}
    single = _workdir(tmp_path, "single", _config(), {"wall_time_s": 90.0, "steps": 5000},
                      _lines(single_values), ["final.png"])
    return [("MNIST", "SN hinge", sweep), ("MNIST", "DCGAN", single)], per_run


def _rows(text: str) -> list[dict]:
    """The first table's rows as {header: cell}."""
    rows, headers = [], None
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if headers is None:
                headers = cells
            else:
                rows.append(dict(zip(headers, cells)))
    return rows


def _close(text: str, value: float):
    """``text`` is ``value`` rounded to the digits it shows."""
    digits = len(text.split(".")[1]) if "." in text else 0
    if "e" in text or digits == 0:
        assert abs(float(text) - value) <= 5e-3 * abs(value), (text, value)
    else:
        assert abs(float(text) - value) <= 0.5 * 10 ** -digits + 1e-12, (text, value)


def test_mean_std_per_sweep_point_at_final_step(jobs, tmp_path):
    rows, per_run = jobs
    out = quality.write(rows, tmp_path / "docs" / "quality.md", command="python -m x")
    table = _rows(out.read_text())
    assert [r["config"] for r in table] == [
        "SN hinge (optimizer.d.learning_rate=0.0002)",
        "SN hinge (optimizer.d.learning_rate=0.0004)", "DCGAN"]
    assert "lr 2e-4/4e-4" in table[1]["recipe"] and "SN" in table[1]["recipe"]
    assert "lr 2e-4/2e-4" in table[0]["recipe"] and "5,000 steps × 64" in table[0]["recipe"]
    for point, row in enumerate(table[:2]):
        runs = [per_run[2 * point + s] for s in range(2)]
        assert (row["seeds"], row["step"]) == ("2", "5,000")  # Not run 3's lone 7,500.
        for header, field in (("FID", "fid"), ("KID", "kid"), ("IS", "is"),
                              ("precision", "precision"), ("recall", "recall")):
            v = np.array([r[5000][field] for r in runs])
            mean, rest = row[header].split(" ± ")
            _close(mean, v.mean()), _close(rest.split(" [")[0], v.std(ddof=1))
        v = np.array([r[5000]["fid"] for r in runs])
        lo, hi = row["FID"].split(" [")[1].rstrip("]").split(", ")
        _close(lo, v.min()), _close(hi, v.max())
        by_step = dict(s.split(": ") for s in row["FID by step"].split(" · "))
        assert list(by_step) == ["2,500", "5,000"]
        for step in STEPS:
            _close(by_step[f"{step:,}"], np.mean([r[step]["fid"] for r in runs]))
        assert (row["job time (min)"], row["per run (min)"]) == ("10.0", "2.5")
    single = table[2]
    assert single["seeds"] == "1" and single["FID"] == "33.30"  # One seed: the mean alone.
    assert (single["job time (min)"], single["per run (min)"]) == ("1.5", "1.5")


def test_grid_notes_and_command(jobs, tmp_path):
    rows, _ = jobs
    notes = tmp_path / "notes.md"
    notes.write_text("SN *helps*.\n\n| kept | verbatim |\n")
    command = "python -m experiments.quality_report --out=q.md"
    out = quality.write(rows, tmp_path / "docs" / "q.md", notes=notes, grid=["SN hinge"],
                        command=command)
    text = out.read_text()
    assert text.splitlines()[0].endswith(f"`{command}`")
    copied = tmp_path / "docs" / "images" / "q" / "mnist_sn_hinge.png"
    assert copied.read_bytes() == (rows[0][2] / "samples" / "final_run0.png").read_bytes()
    assert "![MNIST — SN hinge: final EMA samples of run 0 (seed 3, " \
           "optimizer.d.learning_rate=0.0002)](images/q/mnist_sn_hinge.png)" in text
    assert not (tmp_path / "docs" / "images" / "q" / "mnist_dcgan.png").exists()
    assert text.split("## Reading\n\n")[1].rstrip("\n") == notes.read_text().rstrip("\n")
    assert "mnist classifier, 10,000 samples per run (all rows)" in text


def test_bad_input_refused(jobs, tmp_path):
    rows, _ = jobs
    with pytest.raises(ConfigError, match=r"--grid=VAE names no row; the labels are: "
                                          r"SN hinge, DCGAN\."):
        quality.write(rows, tmp_path / "q.md", grid=["VAE"])
    (rows[1][2] / "eval.jsonl").unlink()
    with pytest.raises(WorkdirError, match=r"single/eval\.jsonl is missing.*experiments\."
                                           r"evaluate --workdir="):
        quality.write(rows, tmp_path / "q.md")
    assert not (tmp_path / "q.md").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.quality_report", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli(jobs, tmp_path):
    rows, _ = jobs
    args = [f"--row={d}:{label}:{w}" for d, label, w in rows]
    out = tmp_path / "q.md"
    r = _cli(*args, f"--out={out}", "--grid=DCGAN")
    assert r.returncode == 0, r.stderr[-3000:]
    first = out.read_text().splitlines()[0]
    assert shlex.join(["python", "-m", "experiments.quality_report", *args]) in first, first
    r = _cli(args[0], "--row=MNIST-no-label", f"--out={tmp_path / 'bad.md'}")
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    errors = [s for s in r.stderr.splitlines() if s.startswith("error:")]
    assert len(errors) == 1 and "DATASET:LABEL:WORKDIR" in errors[0], r.stderr[-3000:]
    assert not (tmp_path / "bad.md").exists()


def test_a_row_at_an_earlier_step(jobs, tmp_path):
    # A long job's first steps stand for a shorter config: its values at that step, that
    # step's grid, no time (the job's time covers all its steps).
    rows, per_run = jobs
    sweep = rows[0][2]
    Image.fromarray(np.full((28, 28), 7, np.uint8)).save(sweep / "samples" / "step_00002500.png")
    out = quality.write([f"MNIST:early:{sweep}@2500"], tmp_path / "q.md", grid=["early"])
    row = _rows(out.read_text())[0]
    assert row["step"] == "2,500" and "2,500 (of 5,000) steps" in row["recipe"]
    _close(row["FID"].split(" ± ")[0], np.mean([per_run[r][2500]["fid"] for r in (0, 1)]))
    assert (row["job time (min)"], row["per run (min)"]) == ("—", "—")
    assert list(dict(s.split(": ") for s in row["FID by step"].split(" · "))) == ["2,500"]
    assert "EMA samples at step 2,500, one row per run (seeds from 3)" in out.read_text()
    assert (tmp_path / "images/q/mnist_early.png").read_bytes() == \
        (sweep / "samples" / "step_00002500.png").read_bytes()
    with pytest.raises(WorkdirError, match=r"step 3,000 is not evaluated for every run.*"
                                           r"2500, 5000"):
        quality.write([f"MNIST:early:{sweep}@3000"], tmp_path / "q2.md")
    with pytest.raises(ConfigError, match=r"'x' after '@' is not a step"):
        quality.write([f"MNIST:early:{sweep}@x"], tmp_path / "q2.md")
    assert not (tmp_path / "q2.md").exists()


def test_a_raw_generator_row(jobs, tmp_path):
    # experiments.evaluate --no-ema appends the raw G's lines after the loop's EMA lines:
    # an EMA row must not take them as "the last at the step", and an @no-ema row reports
    # only them.
    rows, per_run = jobs
    single = rows[1][2]
    with pytest.raises(WorkdirError, match=r"no metric lines of the raw generator.*--no-ema"):
        quality.write([f"MNIST:raw:{single}@no-ema"], tmp_path / "q.md")
    raw = {5000: {**per_run[0][5000], "fid": 77.7, "precision": 0.123}}
    with open(single / "eval.jsonl", "a") as f:
        for line in _lines(raw):
            f.write(json.dumps({**line, "provenance": {**PROV, "ema": False}}) + "\n")
    out = quality.write([f"MNIST:ema:{single}", f"MNIST:raw:{single}@no-ema"],
                        tmp_path / "q.md")
    ema_row, raw_row = _rows(out.read_text())
    assert ema_row["FID"] == "33.30" and "EMA 0.999" in ema_row["recipe"]
    _close(ema_row["precision"], per_run[0][5000]["precision"])
    assert raw_row["FID"] == "77.70" and raw_row["precision"] == "0.123"
    assert "no EMA" in raw_row["recipe"] and "EMA 0.999" not in raw_row["recipe"]
    assert raw_row["job time (min)"] == ema_row["job time (min)"] == "1.5"
    assert "Sample metrics: mnist classifier, 10,000 samples per run (all rows)." \
        in out.read_text()
    # Its grid is the raw G's, not the EMA grid the other rows show.
    Image.fromarray(np.full((28, 28), 9, np.uint8)).save(single / "samples" / "final_raw.png")
    out = quality.write([f"MNIST:raw:{single}@no-ema"], tmp_path / "q2.md", grid=["raw"])
    assert "final raw-generator samples of run 0 (seed 3)" in out.read_text()
    assert (tmp_path / "images/q2/mnist_raw.png").read_bytes() == \
        (single / "samples" / "final_raw.png").read_bytes()
    # At a step of a job of several runs: that step's raw grid, one row per run.
    sweep = rows[0][2]
    Image.fromarray(np.full((28, 28), 5, np.uint8)).save(sweep / "samples"
                                                         / "step_00002500_raw.png")
    with open(sweep / "eval.jsonl", "a") as f:
        for r in range(4):
            for line in _lines({2500: per_run[r][2500]}, run=r):
                f.write(json.dumps({**line, "provenance": {**PROV, "ema": False}}) + "\n")
    out = quality.write([f"MNIST:early raw:{sweep}@2500@no-ema"], tmp_path / "q3.md",
                        grid=["early raw"])
    assert "raw-generator samples at step 2,500, one row per run (seeds from 3)" \
        in out.read_text()
    assert [r["step"] for r in _rows(out.read_text())] == ["2,500", "2,500"]
