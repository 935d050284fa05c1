"""The GAN-against-VAE report (gan_jax.trainer.report, experiments.gan_vs_vae) on made-up
workdirs: every number is the final step's, the last line of it; "—" where there is none;
the grids copied and linked; bad input refused with one error line and no file."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gan_jax.trainer import report

REPO = pathlib.Path(__file__).resolve().parents[1]
PROV = {"extractor": "mnist", "num_samples": 10_000, "knn_num": 10_000, "ema": True}


def _line(metric, step, values, source="train", **prov):
    row = {"metric": metric, "step": step, "provenance": {**PROV, **prov}, **values}
    return {**row, "source": source} if source else row


def _run(root, name, *, steps, lines, dataset="mnist", wall=183.2, seed=0):
    """A finished run's workdir: summary.json, config.json, eval.jsonl, samples/final.png."""
    w = root / name
    (w / "samples").mkdir(parents=True)
    (w / "summary.json").write_text(json.dumps(
        {"steps": steps, "wall_time_s": wall, "steps_per_s": steps / wall, "batch_size": 64,
         "backend": "cpu"}))
    (w / "config.json").write_text(json.dumps(
        {"model": {"name": name}, "dataset": {"name": dataset}, "num_steps": steps}))
    (w / "eval.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(pixels).save(w / "samples" / "final.png")
    return w


# The values each table cell must show: the final step's, the later line where two.
GAN = {"fid": 12.3456, "kid": 0.004321, "kid_std": 0.000512, "is": 8.765, "is_std": 0.0432,
       "precision": 0.7123, "recall": 0.4567}
VAE = {"fid": 45.678, "nll": 88.4321, "bits_per_dim": 0.16272}


@pytest.fixture
def runs(tmp_path):
    gan = _run(tmp_path, "dcgan", steps=5000, lines=[
        _line("fid", 2500, {"fid": 30.0}),
        _line("dc", 2500, {"density": 0.9, "coverage": 0.8}),  # Not at the final step.
        _line("fid", 5000, {"fid": 20.0}),
        _line("kid", 5000, {"kid": GAN["kid"], "kid_std": GAN["kid_std"]}),
        _line("is", 5000, {"is": GAN["is"], "is_std": GAN["is_std"]}),
        _line("pr", 5000, {"precision": 0.1, "recall": 0.2}),
        # experiments.evaluate, appended later: supersedes the loop's lines at step 5000.
        _line("fid", 5000, {"fid": GAN["fid"]}, source=None),
        _line("pr", 5000, {"precision": GAN["precision"], "recall": GAN["recall"]},
              source=None)])
    vae = _run(tmp_path, "vae", steps=4000, wall=59.6, seed=1, lines=[
        _line("nll", 2000, {"nll": 99.0, "bits_per_dim": 0.18}),
        _line("fid", 4000, {"fid": VAE["fid"]}, num_samples=50_000),
        _line("nll", 4000, {"nll": 95.0, "bits_per_dim": 0.175}),
        _line("nll", 4000, {"nll": VAE["nll"], "bits_per_dim": VAE["bits_per_dim"]},
              source=None, nll={"split": "test", "num": 10_000, "likelihood": "bernoulli"})])
    fashion = _run(tmp_path, "fgan", steps=3000, dataset="fashion_mnist", wall=7265.0, seed=2,
                   lines=[_line("fid", 3000, {"fid": 50.5}, extractor="fashion_mnist")])
    return [("MNIST", "DCGAN", gan), ("Fashion-MNIST", "DCGAN", fashion),
            ("MNIST", "VAE", vae)]


def _tables(text: str) -> dict[str, list[dict]]:
    """heading -> its table's rows as {header: cell}."""
    tables, heading = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if heading not in tables:
                tables[heading], headers = [], cells
            else:
                tables[heading].append(dict(zip(headers, cells)))
    return tables


def _close(cell: str, value: float, scale: float = 1.0):
    """The cell shows ``value * scale`` rounded to the digits it has."""
    if "e" in cell:  # Three significant digits in exponent form (a small KID).
        assert abs(float(cell) - value * scale) <= 5e-3 * abs(value * scale), (cell, value)
        return
    digits = len(cell.split(".")[1]) if "." in cell else 0
    assert abs(float(cell) - value * scale) <= 0.5 * 10 ** -digits + 1e-12, (cell, value)


def test_final_step_values_and_dashes(runs, tmp_path):
    out = report.write(runs, tmp_path / "docs" / "report.md", command="python -m x")
    tables = _tables(out.read_text())
    assert list(tables) == ["MNIST", "Fashion-MNIST"]  # First-given order.
    (gan, vae), (fashion,) = tables["MNIST"], tables["Fashion-MNIST"]
    assert (gan["model"], vae["model"], fashion["model"]) == ("DCGAN", "VAE", "DCGAN")
    _close(gan["FID"], GAN["fid"])
    kid, kid_std = gan["KID"].split(" ± ")
    _close(kid, GAN["kid"]), _close(kid_std, GAN["kid_std"])
    is_, is_std = gan["IS"].split(" ± ")
    _close(is_, GAN["is"]), _close(is_std, GAN["is_std"])
    _close(gan["precision"], GAN["precision"]), _close(gan["recall"], GAN["recall"])
    # dc only at an earlier step, no nll at all: "—", not step 2500's values.
    for col in ("density", "coverage", "test −ELBO (nats)", "bits/dim"):
        assert gan[col] == "—", col
    _close(vae["FID"], VAE["fid"])
    _close(vae["test −ELBO (nats)"], VAE["nll"]), _close(vae["bits/dim"], VAE["bits_per_dim"])
    for col in ("KID", "IS", "precision", "recall", "density", "coverage"):
        assert vae[col] == "—", col
    _close(fashion["FID"], 50.5)
    assert (gan["training steps"], vae["training steps"]) == ("5,000", "4,000")
    assert (gan["wall time (CPU)"], vae["wall time (CPU)"], fashion["wall time (CPU)"]) == (
        "3 min 3 s", "1 min 0 s", "2 h 1 min")


def test_sample_grids_copied_and_linked(runs, tmp_path):
    out = report.write(runs, tmp_path / "docs" / "report.md")
    tables = _tables(out.read_text())
    for dataset, label, workdir in runs:
        row, = [r for r in tables[dataset] if r["model"] == label]
        name = f"{dataset.lower().replace('-', '_')}_{label.lower()}.png"
        # A relative link, so that the docs folder can move.
        assert row["samples"] == f"![{label}](images/report/{name})", row["samples"]
        copied = out.parent / "images" / "report" / name
        assert copied.read_bytes() == (workdir / "samples" / "final.png").read_bytes(), name


def test_header_provenance_and_notes(runs, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("The VAE's samples are *blurrier*.\n\n| kept | verbatim |\n")
    text = report.write(runs, tmp_path / "r.md", notes=notes,
                        command="python -m experiments.gan_vs_vae --out=r.md").read_text()
    first = text.splitlines()[0]
    assert "enerated" in first and "`python -m experiments.gan_vs_vae --out=r.md`" in first
    mnist = text.split("## MNIST")[1].split("## Fashion-MNIST")[0]
    # The VAE's FID used 50,000 samples, the GAN's metrics 10,000: the rows differ.
    assert "the rows differ" in mnist
    assert "DCGAN: mnist classifier, 10,000 samples" in mnist
    assert "VAE: mnist classifier, 50,000 samples" in mnist
    assert "Test −ELBO: VAE: test split, 10,000 images, bernoulli likelihood." in mnist
    fashion = text.split("## Fashion-MNIST")[1].split("## Reading")[0]
    assert "fashion_mnist classifier, 10,000 samples per run (all rows)" in fashion
    assert text.split("## Reading\n\n")[1].rstrip("\n") == notes.read_text().rstrip("\n")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.gan_vs_vae", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _one_error(r) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout, r.stderr[-3000:]
    errors = [s for s in r.stderr.splitlines() if s.startswith("error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    return errors[0]


def test_cli_refuses_bad_input_and_writes_nothing(runs, tmp_path):
    (runs[0][2] / "summary.json").unlink()
    out = tmp_path / "docs" / "report.md"
    row = f"--row=MNIST:VAE:{runs[2][2]}"
    error = _one_error(_cli(row, f"--row=MNIST:DCGAN:{runs[0][2]}", f"--out={out}"))
    assert "summary.json" in error, error
    error = _one_error(_cli(row, "--row=MNIST-no-label", f"--out={out}"))
    assert "DATASET:LABEL:WORKDIR" in error, error
    assert not (tmp_path / "docs").exists()  # Neither the markdown nor an image.


def test_cli_records_its_command(runs, tmp_path):
    args = [f"--row={d}:{label}:{w}" for d, label, w in runs] + [f"--out={tmp_path / 'r.md'}"]
    r = _cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    first = (tmp_path / "r.md").read_text().splitlines()[0]
    assert " ".join(["python -m experiments.gan_vs_vae", *args]) in first, first
