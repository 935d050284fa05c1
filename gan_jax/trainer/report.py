"""The GAN-against-VAE report: finished runs' final-step metrics, steps, CPU wall time and
sample grid as one markdown table per dataset (``python -m experiments.gan_vs_vae``)."""
import json
import os
import pathlib
import re
import typing

from gan_jax.errors import ConfigError, WorkdirError
from gan_jax.files import atomic_write_bytes

DASH = "—"
# (header, metric, field, format). KID as eval.jsonl holds it: on the MNIST classifiers'
# features it is of order 1 to 10, on Inception's of order 1e-3.
_COLUMNS = (("FID", "fid", "fid", "{:.2f}"), ("KID", "kid", "kid", "{:.3g}"),
            ("IS", "is", "is", "{:.2f}"), ("precision", "pr", "precision", "{:.3f}"),
            ("recall", "pr", "recall", "{:.3f}"), ("density", "dc", "density", "{:.3f}"),
            ("coverage", "dc", "coverage", "{:.3f}"),
            ("test −ELBO (nats)", "nll", "nll", "{:.2f}"),
            ("bits/dim", "nll", "bits_per_dim", "{:.3f}"))
_STD = {"kid": "kid_std", "is": "is_std"}  # Shown as "value ± std".
_NOT_SAMPLED = ("nll",)  # Metrics on the test set, not on samples: no extractor.


class Row(typing.NamedTuple):
    dataset: str  # The table's heading, e.g. "MNIST".
    label: str
    workdir: pathlib.Path
    step: int | None = None  # The step to report (None: the job's last evaluated).
    ema: bool = True  # Report the EMA generator's lines; False: the raw G's.


def parse_row(spec: str, at_step: bool = False) -> Row:
    """``DATASET:LABEL:WORKDIR`` (the workdir may itself hold colons); with ``at_step``,
    ``DATASET:LABEL:WORKDIR[@STEP][@no-ema]`` too: the job at an evaluated step, and the raw
    generator's evaluations (``experiments.evaluate --no-ema``) instead of the EMA's."""
    parts = spec.split(":", 2)
    form = "DATASET:LABEL:WORKDIR" + ("[@STEP][@no-ema]" if at_step else "")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise ConfigError(f"--row={spec!r} is not {form}, e.g. "
                          "--row=MNIST:DCGAN:runs/mnist_dcgan.")
    workdir, step, ema = parts[2], None, True
    if at_step and workdir.endswith("@no-ema"):
        workdir, ema = workdir[:-len("@no-ema")], False
    if at_step and "@" in workdir:
        workdir, _, text = workdir.rpartition("@")
        if not text.isdigit() or not workdir:
            raise ConfigError(f"--row={spec!r}: {text!r} after '@' is not a step; use "
                              f"{form}, e.g. --row=MNIST:DCGAN:runs/mnist_dcgan@5000.")
        step = int(text)
    if not workdir:
        raise ConfigError(f"--row={spec!r} names no workdir; use {form}.")
    return Row(parts[0].strip(), parts[1].strip(), pathlib.Path(workdir), step, ema)


def _read_json(path: pathlib.Path, what: str) -> dict:
    if not path.parent.is_dir():
        raise WorkdirError(f"Workdir {path.parent} does not exist; pass "
                           "--row=DATASET:LABEL:WORKDIR with a finished run's workdir.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkdirError(f"{path} is missing: {path.parent} is not a finished training run "
                           f"({what}). Pass the workdir of a run that finished.") from None
    except (OSError, ValueError) as e:
        raise WorkdirError(f"Cannot read {path} ({e}).") from None


def read_notes(notes) -> str | None:
    """The text of a ``--notes`` file (None for none)."""
    if notes is None:
        return None
    try:
        return pathlib.Path(notes).read_text(encoding="utf-8")
    except OSError as e:
        raise WorkdirError(f"Cannot read --notes={notes} ({e.strerror or e}).") from None


def final_lines(path: pathlib.Path, step: int) -> dict[str, dict]:
    """metric -> its eval.jsonl line at ``step``; of several, the last in the file (a later
    ``experiments.evaluate`` supersedes the training loop's). No line at ``step``: absent."""
    out = {}
    if not path.exists():
        return out
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue  # A torn line of a crashed append (files.append_jsonl closes it).
        if isinstance(line, dict) and line.get("step") == step and "metric" in line:
            out[line["metric"]] = line
    return out


def read_run(row: Row) -> dict:
    """A row's summary, config, final-step eval lines and sample grid path; raises
    WorkdirError for a workdir that is not a finished run."""
    summary = _read_json(row.workdir / "summary.json", "the trainer writes it at the end")
    config = _read_json(row.workdir / "config.json", "the trainer writes it at the start")
    if not isinstance(summary.get("steps"), int):
        raise WorkdirError(f"{row.workdir / 'summary.json'} has no integer \"steps\".")
    grid = row.workdir / "samples" / "final.png"
    if not grid.is_file():
        raise WorkdirError(f"{grid} is missing: the run wrote no final sample grid.")
    return {"row": row, "summary": summary, "config": config, "grid": grid,
            "lines": final_lines(row.workdir / "eval.jsonl", summary["steps"])}


def duration(seconds: float) -> str:
    """e.g. 183.2 -> "3 min 3 s"; 7265 -> "2 h 1 min"."""
    s = int(round(seconds))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h} h {m} min" if h else f"{m} min {s} s" if m else f"{s} s"


def _value(lines: dict, metric: str, field: str, fmt: str) -> str:
    v = lines.get(metric, {}).get(field)
    if not isinstance(v, (int, float)):
        return DASH
    text = fmt.format(v)
    std = lines[metric].get(_STD.get(field, ""))
    if isinstance(std, (int, float)):
        text += " ± " + fmt.format(std)
    return text


def _steps(run: dict) -> str:
    steps, planned = run["summary"]["steps"], run["config"].get("num_steps")
    # A run stopped early (preempted, diverged) says so rather than passing as finished.
    return f"{steps:,}" + (f" (of {planned:,})" if isinstance(planned, int)
                           and planned != steps else "")


def _wall(run: dict) -> str:
    s = run["summary"]
    if not isinstance(s.get("wall_time_s"), (int, float)):
        return DASH
    backend = s.get("backend", "cpu")
    return duration(s["wall_time_s"]) + ("" if backend == "cpu" else f" ({backend})")


def _features(provenance: dict, metric: str, generator: bool = True) -> str:
    ex = provenance.get("extractor", "?")
    n = provenance.get("num_samples")
    if metric in ("pr", "dc") and isinstance(provenance.get("knn_num"), int) and n:
        n = min(n, provenance["knn_num"])  # pr and dc use at most knn_num of the samples.
    text = ("FID Inception" if ex == "inception" else f"{ex} classifier") + (
        f", {n:,} samples" if isinstance(n, int) else "")
    return text + ("" if provenance.get("ema", True) or not generator else ", raw G")


def provenance(run: dict, generator: bool = True) -> str | None:
    """The extractor and sample count of a run's sample metrics, e.g. "mnist classifier,
    10,000 samples" (", raw G" for the raw generator's, unless ``generator`` is False: a
    table that says so elsewhere); per metric where they differ. None without sample
    metrics."""
    groups: dict[str, list[str]] = {}
    for metric, line in run["lines"].items():
        if metric not in _NOT_SAMPLED:
            groups.setdefault(_features(line.get("provenance", {}), metric, generator),
                              []).append(metric)
    if len(groups) <= 1:
        return next(iter(groups), None)
    return "; ".join(f"{'/'.join(ms)}: {d}" for d, ms in groups.items())


def nll_provenance(run: dict) -> str | None:
    """The test -ELBO's split, image count and likelihood, e.g. "test split, 10,000 images,
    bernoulli likelihood"; None without an nll line."""
    if "nll" not in run["lines"]:
        return None
    p = run["lines"]["nll"].get("provenance", {}).get("nll", {})
    parts = [f"{p['split']} split" if "split" in p else None,
             f"{p['num']:,} images" if isinstance(p.get("num"), int) else None,
             f"{p['likelihood']} likelihood" if "likelihood" in p else None]
    return ", ".join(x for x in parts if x) or "?"


def _cell(text: str) -> str:
    return text.replace("|", r"\|")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _table(dataset: str, runs: list[dict], links: list[str]) -> list[str]:
    headers = (["model"] + [c[0] for c in _COLUMNS]
               + ["training steps", "wall time (CPU)", "samples"])
    out = [f"## {dataset}", "", "| " + " | ".join(headers) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(headers) - 2) + ["---"]) + "|"]
    for run, link in zip(runs, links):
        label = _cell(run["row"].label)
        cells = ([label] + [_value(run["lines"], m, f, fmt) for _, m, f, fmt in _COLUMNS]
                 + [_steps(run), _wall(run), f"![{label}]({link})"])
        out.append("| " + " | ".join(cells) + " |")
    notes = {run["row"].label: provenance(run) for run in runs}
    known = {k: v for k, v in notes.items() if v is not None}
    if len(set(known.values())) == 1:
        text = f"Sample metrics: {next(iter(known.values()))} per run"
        text += " (all rows)." if len(known) == len(runs) else (
            f" (rows without sample metrics: {', '.join(k for k in notes if k not in known)}).")
    elif known:
        text = ("Sample metrics: **the rows differ** — "
                + "; ".join(f"{k}: {v or 'none'}" for k, v in notes.items()) + ".")
    else:
        text = "Sample metrics: none at the runs' final steps."
    out += ["", _cell(text), ""]
    nll = [f"{run['row'].label}: {nll_provenance(run)}" for run in runs
           if nll_provenance(run) is not None]
    return out + ([_cell(f"Test −ELBO: {'; '.join(nll)}."), ""] if nll else [])


def render(runs: list[dict], links: list[str], notes: str | None, command: str) -> str:
    """The markdown: the regenerate line, one table per dataset (first-given order) and
    the notes verbatim under "Reading"."""
    tick = "``" if "`" in command else "`"
    out = [f"Generated file, do not edit: regenerate with {tick}{command}{tick}", "",
           "# GAN against VAE", "",
           f"Each value is the run's eval.jsonl line at its final step (summary.json "
           f"\"steps\"); where several, the last (a later `experiments.evaluate` supersedes "
           f"the training loop's). {DASH}: no value at that step. ± is the "
           f"std over KID's subsets and IS's splits. Test −ELBO is nats per image.", ""]
    by_dataset: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        by_dataset.setdefault(run["row"].dataset, []).append(i)
    for dataset, idx in by_dataset.items():
        out += _table(dataset, [runs[i] for i in idx], [links[i] for i in idx])
    if notes is not None:
        out += ["## Reading", "", notes.rstrip("\n"), ""]
    return "\n".join(out)


def _check_datasets(runs: list[dict]) -> None:
    """A table compares runs on one dataset: refuse rows whose configs differ on it."""
    seen: dict[str, dict[str, str]] = {}
    for run in runs:
        name = (run["config"].get("dataset") or {}).get("name", "?")
        seen.setdefault(run["row"].dataset, {})[run["row"].label] = name
    for dataset, names in seen.items():
        if len(set(names.values())) > 1:
            raise ConfigError(f"The rows of table {dataset!r} trained on different datasets "
                              f"({', '.join(f'{k}: {v}' for k, v in names.items())}); give "
                              "each dataset its own DATASET in --row.")


def write(rows, out_md, images_dir=None, notes=None, command: str = "") -> pathlib.Path:
    """Writes the report of ``rows`` (Rows or "DATASET:LABEL:WORKDIR" strings) to ``out_md``,
    each run's samples/final.png copied to ``images_dir`` (default: images/<out stem>/ next
    to it); ``notes``: a file whose text goes under "Reading". Every input is read and
    checked before anything is written; the markdown is written atomically, last."""
    rows = [parse_row(r) if isinstance(r, str) else Row(*r) for r in rows]
    if not rows:
        raise ConfigError("No rows: pass --row=DATASET:LABEL:WORKDIR at least once.")
    out_md = pathlib.Path(out_md)
    images_dir = pathlib.Path(images_dir or out_md.parent / "images" / out_md.stem)
    runs = [read_run(r) for r in rows]
    _check_datasets(runs)
    names = [f"{_slug(r.dataset) or 'dataset'}_{_slug(r.label) or f'row{i}'}.png"
             for i, r in enumerate(rows)]
    if len(set(names)) < len(names):
        raise ConfigError(f"Two rows would share a sample grid file ({names}); give each row "
                          "of a dataset its own LABEL.")
    text = read_notes(notes)
    links = [pathlib.Path(os.path.relpath(images_dir / n, out_md.parent)).as_posix()
             for n in names]
    markdown = render(runs, links, text, command)
    try:
        for run, name in zip(runs, names):
            atomic_write_bytes(images_dir / name, run["grid"].read_bytes())
        atomic_write_bytes(out_md, markdown.encode("utf-8"))
    except OSError as e:
        raise WorkdirError(f"Cannot write the report ({e.strerror or e}: "
                           f"{e.filename or out_md}); pass --out= a writable path.") from None
    return out_md
