"""The quality report: finished jobs' final-step FID, KID, IS, precision and recall as mean ±
std over seeds, one row per sweep point, one markdown table per dataset, with chosen sample
grids (``python -m experiments.quality_report``)."""
import json
import os
import pathlib

import numpy as np

from gan_jax.errors import ConfigError, WorkdirError
from gan_jax.files import atomic_write_bytes
from gan_jax.trainer import multirun, report
from gan_jax.trainer.periodic import grid_file
from gan_jax.trainer.report import DASH, Row, _read_json, parse_row

# (header, metric, field, format); eval.jsonl's names.
_COLUMNS = (("FID", "fid", "fid", "{:.2f}"), ("KID", "kid", "kid", "{:.3g}"),
            ("IS", "is", "is", "{:.2f}"), ("precision", "pr", "precision", "{:.3f}"),
            ("recall", "pr", "recall", "{:.3f}"))


def _read_eval(path: pathlib.Path, n: int,
               ema: bool = True) -> dict[int, dict[int, dict[str, dict]]]:
    """run -> step -> metric -> its line, of the EMA generator's lines or (``ema`` False)
    the raw G's; of several, the last in the file (a later ``experiments.evaluate``
    supersedes the training loop's). "runs" summary lines are skipped: the rows' statistics
    come from the per-run lines."""
    if not path.is_file():
        raise WorkdirError(f"{path} is missing: {path.parent} has no evaluations. Train with "
                           "eval.every > 0, or run python -m experiments.evaluate "
                           f"--workdir={path.parent}, then pass it again.")
    out: dict[int, dict[int, dict[str, dict]]] = {r: {} for r in range(n)}
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue  # A torn line of a crashed append.
        if (not isinstance(line, dict) or line.get("metric") in (None, "runs")
                or not isinstance(line.get("step"), int)):
            continue
        provenance = line.get("provenance")
        if (provenance.get("ema", True) if isinstance(provenance, dict) else True) != ema:
            continue  # The other generator's evaluation (experiments.evaluate --no-ema).
        run = line.get("run", 0)  # A single run's lines carry no "run".
        if run not in out:
            raise WorkdirError(f"{path} has lines of run {run}, but its config.json gives "
                               f"{n} run(s): the workdir mixes jobs. Pass a workdir of one job.")
        out[run].setdefault(line["step"], {})[line["metric"]] = line
    if not any(out.values()):
        which = "" if ema else " of the raw generator"
        raise WorkdirError(f"{path} has no metric lines{which}; run python -m "
                           f"experiments.evaluate --workdir={path.parent}"
                           f"{'' if ema else ' --no-ema'}, then pass it again.")
    return out


def read_job(row: Row) -> dict:
    """A row's config, summary, sweep points and per-run eval lines; WorkdirError for a
    workdir that is not a finished, evaluated job."""
    config = _read_json(row.workdir / "config.json", "the trainer writes it at the start")
    summary = _read_json(row.workdir / "summary.json", "the trainer writes it at the end")
    try:
        seeds, points = multirun.saved_runs(config)
    except ConfigError as e:
        raise ConfigError(f"{row.workdir / 'config.json'}: {e}") from None
    if not isinstance(seeds, int) or seeds < 1:
        raise WorkdirError(f"{row.workdir / 'config.json'} has runs.seeds={seeds!r}, not "
                           "a count >= 1: pass the workdir of a job the trainer wrote.")
    n = seeds * len(points)
    if summary.get("runs", 1) != n:
        raise WorkdirError(f"{row.workdir / 'summary.json'} says {summary.get('runs', 1)} "
                           f"run(s), its config.json {n}: pass the workdir of one whole job.")
    return {"row": row, "config": config, "summary": summary, "seeds": seeds,
            "points": points, "runs": n,
            "eval": _read_eval(row.workdir / "eval.jsonl", n, row.ema)}


def _get(config: dict, key: str):
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def _num(v) -> str:
    """Compact: 0.0002 -> "2e-4", 0.999 -> "0.999"."""
    if not isinstance(v, (int, float)) or not 0 < abs(v) < 1e-2:
        return f"{v:g}" if isinstance(v, (int, float)) else str(v)
    mantissa, exp = f"{v:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"


def recipe(config: dict, summary: dict, point: dict | None = None, ema: bool = True) -> str:
    """e.g. "hinge, SN, lr 2e-4/4e-4, betas 0.5/0.999, n_dis 1, EMA 0.999, width 32/32,
    10,000 steps × 64" (a sweep ``point``'s values for its keys; "no EMA" for the raw G's
    evaluations); the parts a config lacks are left out."""
    g = lambda k: (point or {}).get(k, _get(config, k))  # noqa: E731
    betas = lambda p: f"{_num(g(f'optimizer.{p}.b1'))}/{_num(g(f'optimizer.{p}.b2'))}"  # noqa: E731
    parts = [g("loss"), "SN" if g("model.spectral_norm") else None,
             "D biases" if g("model.d_bias") else None,
             f"lr {_num(g('optimizer.g.learning_rate'))}/{_num(g('optimizer.d.learning_rate'))}"
             + (" decayed linearly" if g("optimizer.g.decay") == "linear" else "")
             if g("optimizer.g.learning_rate") is not None else None,
             f"betas {betas('g')}" + ("" if betas("d") == betas("g") else f" (D {betas('d')})")
             if g("optimizer.g.b1") is not None else None,
             f"n_dis {g('n_dis')}" if g("n_dis") is not None else None,
             "no EMA" if not ema else
             f"EMA {_num(g('ema.decay'))}" if g("ema.decay") is not None else None,
             f"width {g('model.g_width')}/{g('model.d_width')}"
             if g("model.g_width") is not None else None]
    steps, planned = summary.get("steps"), g("num_steps")
    if isinstance(steps, int):
        # A job stopped early (preempted, diverged) says so rather than passing as finished.
        parts.append(f"{steps:,}" + (f" (of {planned:,})" if isinstance(planned, int)
                                     and planned != steps else "") + " steps"
                     + (f" × {g('batch_size')}" if g("batch_size") else ""))
    return ", ".join(str(p) for p in parts if p is not None)


def table_rows(job: dict) -> list[dict]:
    """One dict per sweep point: its label, recipe, runs' eval lines and final step."""
    out, seeds = [], job["seeds"]
    for p, point in enumerate(job["points"]):
        label = job["row"].label + (" (" + ", ".join(f"{k}={v:g}" for k, v in point.items())
                                    + ")" if point else "")
        runs = [job["eval"][p * seeds + s] for s in range(seeds)]
        common = set.intersection(*(set(r) for r in runs))
        if not common:
            raise WorkdirError(f"{job['row'].workdir / 'eval.jsonl'}: no step is evaluated for "
                               f"every run of {label}; run python -m experiments.evaluate "
                               f"--workdir={job['row'].workdir}, then pass it again.")
        step = job["row"].step
        if step is not None and step not in common:
            raise WorkdirError(f"{job['row'].workdir / 'eval.jsonl'}: step {step:,} is not "
                               f"evaluated for every run of {label}; those that are: "
                               f"{', '.join(f'{s}' for s in sorted(common))}.")
        summary = job["summary"] if step is None else {**job["summary"], "steps": step}
        out.append({"job": job, "label": label, "runs": runs,
                    "step": max(common) if step is None else step,
                    "recipe": recipe(job["config"], summary, point, job["row"].ema)})
    return out


def _values(runs: list[dict], step: int, metric: str, field: str) -> list[float]:
    return [r[step][metric][field] for r in runs if isinstance(
        r.get(step, {}).get(metric, {}).get(field), (int, float))]


def stat(values: list[float], fmt: str, of: int, spread: bool = False) -> str:
    """"mean ± std" (sample std, ddof 1; the mean alone of one value), FID's "[min, max]"
    with ``spread``, and "(k of n runs)" where some runs lack the value."""
    if not values:
        return DASH
    v = np.asarray(values, np.float64)
    text = fmt.format(v.mean()) + (f" ± {fmt.format(v.std(ddof=1))}" if len(v) > 1 else "")
    if spread and len(v) > 1:
        text += f" [{fmt.format(v.min())}, {fmt.format(v.max())}]"
    return text + ("" if len(v) == of else f" ({len(v)} of {of} runs)")


def _by_step(row: dict) -> str:
    steps = sorted(set.intersection(*(
        {s for s, m in r.items() if isinstance(m.get("fid", {}).get("fid"), (int, float))
         and s <= row["step"]} for r in row["runs"])))
    return " · ".join(f"{s:,}: {np.mean(_values(row['runs'], s, 'fid', 'fid')):.1f}"
                      for s in steps) or DASH


def _minutes(job: dict) -> tuple[str, str]:
    s = job["summary"]
    if not isinstance(s.get("wall_time_s"), (int, float)) or job["row"].step is not None:
        return DASH, DASH
    backend = s.get("backend", "cpu")
    tag = "" if backend == "cpu" else f" ({backend})"
    return (f"{s['wall_time_s'] / 60:.1f}{tag}", f"{s['wall_time_s'] / 60 / job['runs']:.1f}")


def _table(dataset: str, rows: list[dict]) -> list[str]:
    headers = (["config", "recipe", "seeds", "step"] + [c[0] for c in _COLUMNS]
               + ["FID by step", "job time (min)", "per run (min)"])
    out = [f"## {dataset}", "", "| " + " | ".join(headers) + " |",
           "|" + "|".join(["---", "---"] + ["---:"] * 7 + ["---", "---:", "---:"]) + "|"]
    for row in rows:
        n = len(row["runs"])
        cells = ([row["label"], row["recipe"], str(n), f"{row['step']:,}"]
                 + [stat(_values(row["runs"], row["step"], m, f), fmt, n, spread=m == "fid")
                    for _, m, f, fmt in _COLUMNS]
                 + [_by_step(row), *_minutes(row["job"])])
        out.append("| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |")
    # A raw-G row's recipe says "no EMA" already; its metrics are otherwise the same kind.
    notes = {r["label"]: report.provenance({"lines": r["runs"][0][r["step"]]}, generator=False)
             for r in rows}
    if len(set(notes.values())) == 1:
        out += ["", f"Sample metrics: {next(iter(notes.values())) or 'none'} per run (all rows)."]
    else:
        out += ["", "Sample metrics: **the rows differ** — " + "; ".join(
            f"{k}: {v or 'none'}" for k, v in notes.items()) + "."]
    return out + [""]


def render(rows: list[dict], grids: list[tuple[str, str]], notes: str | None,
           command: str) -> str:
    """The markdown: the regenerate line, one table per dataset (first-given order), the
    grids (link, caption), then the notes verbatim under "Reading"."""
    tick = "``" if "`" in command else "`"
    out = [f"Generated file, do not edit: regenerate with {tick}{command}{tick}", "",
           "# Sample quality", "",
           "Each value is the mean ± sample std (ddof 1) over a row's seeds at its final step "
           "(the largest step evaluated for all its runs; FID also [min, max] over seeds), "
           "from the per-run lines of eval.jsonl (the EMA generator's, unless the recipe "
           "says no EMA); of several at a step, the last. FID by step: "
           f"the mean at every step evaluated for all runs. {DASH}: no value. Time: the "
           "job's wall time, and that over the runs it trained together.", ""]
    by_dataset: dict[str, list[dict]] = {}
    for row in rows:
        by_dataset.setdefault(row["job"]["row"].dataset, []).append(row)
    for dataset, rs in by_dataset.items():
        out += _table(dataset, rs)
    if grids:
        out += ["## Samples", ""]
        for link, caption in grids:
            out += [f"![{caption}]({link})", "", f"*{caption}*", ""]
    if notes is not None:
        out += ["## Reading", "", notes.rstrip("\n"), ""]
    return "\n".join(out)


def _grid(job: dict) -> tuple[pathlib.Path, str]:
    """A job's first run's final grid and its caption; of a row at a step, that step's grid
    (of a job of several runs, one row per run); of a raw-G row, the raw grid (one row per
    run)."""
    w, step, ema = job["row"].workdir / "samples", job["row"].step, job["row"].ema
    own_grid = step is None and ema and job["runs"] > 1  # Run 0's full final grid.
    name = grid_file(step, raw=not ema, run=0 if own_grid else None)
    if not (w / name).is_file():
        raise WorkdirError(f"{w / name} is missing: the job wrote no such sample grid; drop "
                           f"--grid={job['row'].label} or pass a finished job's workdir.")
    point = ", ".join(f"{k}={v:g}" for k, v in job["points"][0].items())
    seed = job["config"].get("seed", 0)
    head = f"{job['row'].dataset} — {job['row'].label}: "
    which = "EMA" if ema else "raw-generator"
    if step is not None or (not ema and job["runs"] > 1):
        at = f"at step {step:,}" if step is not None else "at the end"
        return w / name, head + f"{which} samples {at}" + (
            f", one row per run (seeds from {seed})" if job["runs"] > 1 else "")
    return w / name, head + (f"final {which} samples of run 0 (seed {seed}"
                             f"{', ' + point if point else ''})")


def write(rows, out_md, images_dir=None, notes=None, grid=(), command: str = "") -> pathlib.Path:
    """Writes the report of ``rows`` (Rows or "DATASET:LABEL:WORKDIR" strings) to ``out_md``;
    ``grid``: the LABELs whose run-0 grid is copied to ``images_dir`` (default images/<out
    stem>/ next to it) and shown; ``notes``: a file whose text goes under "Reading". Every
    input is read and checked before anything is written; the markdown is written last."""
    rows = [parse_row(r, at_step=True) if isinstance(r, str) else Row(*r) for r in rows]
    if not rows:
        raise ConfigError("No rows: pass --row=DATASET:LABEL:WORKDIR at least once.")
    seen = [(r.dataset, r.label) for r in rows]
    if len(set(seen)) < len(seen):
        raise ConfigError(f"Two rows share a DATASET:LABEL ({seen}); give each its own LABEL.")
    labels = list(dict.fromkeys(r.label for r in rows))
    unknown = [g for g in grid if g not in labels]
    if unknown:
        raise ConfigError(f"--grid={unknown[0]} names no row; the labels are: "
                          f"{', '.join(labels)}.")
    out_md = pathlib.Path(out_md)
    images_dir = pathlib.Path(images_dir or out_md.parent / "images" / out_md.stem)
    jobs = [read_job(r) for r in rows]
    report._check_datasets(jobs)  # noqa: SLF001 - one table, one dataset
    table = [row for job in jobs for row in table_rows(job)]
    text = report.read_notes(notes)
    copies, grids = [], []
    for job in (j for j in jobs if j["row"].label in grid):
        src, caption = _grid(job)
        slug = report._slug  # noqa: SLF001 - the grid names gan_vs_vae gives
        name = f"{slug(job['row'].dataset) or 'dataset'}_{slug(job['row'].label) or 'row'}.png"
        copies.append((src, images_dir / name))
        grids.append((pathlib.Path(os.path.relpath(images_dir / name, out_md.parent))
                      .as_posix(), caption))
    if len({dst for _, dst in copies}) < len(copies):
        raise ConfigError("Two --grid rows would share an image file; give them labels that "
                          "differ in more than punctuation.")
    markdown = render(table, grids, text, command)
    try:
        for src, dst in copies:
            atomic_write_bytes(dst, src.read_bytes())
        atomic_write_bytes(out_md, markdown.encode("utf-8"))
    except OSError as e:
        raise WorkdirError(f"Cannot write the report ({e.strerror or e}: "
                           f"{e.filename or out_md}); pass --out= a writable path.") from None
    return out_md
