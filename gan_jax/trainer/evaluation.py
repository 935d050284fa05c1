"""Evaluation of runs: inside the training loop (``config.eval``, the EMA generator of the
live state) and of a run's checkpoint (``experiments.evaluate``), with the same extractor,
reference and metrics, appending one line per metric to ``workdir/eval.jsonl``.

Every process evaluates on its own first device (G's params are replicated, so no
collective is needed and all processes stay in step); only process 0 writes the lines.
"""
import functools
import pathlib

from gan_jax import files, parallel
from gan_jax.errors import ConfigError
from gan_jax.eval import conditional, evaluate, features, likelihood
from gan_jax.trainer import writers
from gan_jax.trainer.workdir import check_directory, load_generator, runs_of, saved_config

SOURCE = "train"  # The "source" field of the lines this writes, so a resume can find them.


class ScheduledEval:
    """Builds the extractor and the reference once (before the first step, so a missing
    weights file stops the run before it trains), then evaluates on ``due`` steps."""

    def __init__(self, config, generate, z_dim: int, workdir, log=print,
                 num_classes: int = 0):
        """``generate``: the loop's jitted ``sampling.generate`` for its G, (params, g_vars,
        z, y=None, batch_stats=) -> images; ``num_classes``: G's (0: unconditional), whose
        samples are then class-balanced."""
        e = config.eval
        self.every, self.num, self.seed = e.every, e.num, e.seed
        self.metrics = evaluate.parse_metrics(e.metrics)
        self.path = workdir / "eval.jsonl"
        self.z_dim, self._generate, self.num_classes = z_dim, generate, num_classes
        self.dataset, self.likelihood = config.dataset.to_dict(), config.vae.likelihood
        self.kwargs = dict(kid_subset_size=e.kid_subset_size, knn_num=e.knn_num)
        extractor = e.extractor or features.default_for(config.dataset.name)
        conditional.check(self.metrics, num_classes, extractor, num=self.num)
        self.extractor, self.reference = evaluate.prepare(
            config.dataset.to_dict(), extractor=extractor,
            inception_weights=e.inception_weights or None,
            reference_num=e.reference_num or None, per_class="intra_fid" in self.metrics,
            log=log)
        evaluate.check_counts(self.metrics, self.num, self.reference.n, is_splits=10,
                              **self.kwargs)
        conditional.check(self.metrics, num_classes, self.extractor, num=self.num,
                          reference=self.reference)

    def _nelbo(self, nelbo_fn):
        if nelbo_fn is None or "nll" not in self.metrics:
            return None
        return lambda: likelihood.test_nelbo(nelbo_fn, self.dataset,
                                             likelihood=self.likelihood)

    def due(self, step: int, last_step: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == last_step)

    def __call__(self, ema_params, g_vars, step: int, writer, nelbo_fn=None,
                 run: int | None = None) -> dict:
        """Evaluates the EMA generator; appends the lines (process 0) and logs the values
        as ``eval/<name>`` scalars. Returns {name: value}. ``nelbo_fn``: a VAE's
        (``families.VAE.nelbo``), for the nll metric on the test split. ``run``: which of
        several runs this is (its lines say so; its scalars are ``eval/<name>/run<i>``)."""
        params, g_vars = parallel.to_host((ema_params, g_vars))
        has_bn = "batch_stats" in g_vars
        draw = lambda z, y=None: self._generate(params, g_vars, z, y, batch_stats=has_bn)
        result = evaluate.evaluate_generator(
            draw, self.num, z_dim=self.z_dim, extractor=self.extractor,
            reference=self.reference, metrics=self.metrics, seed=self.seed,
            num_classes=self.num_classes, nelbo=self._nelbo(nelbo_fn), **self.kwargs)
        result["provenance"].update({"checkpoint_step": step, "ema": True})
        rows = evaluate.records(result, self.metrics, step=step, source=SOURCE)
        suffix = ""
        if run is not None:
            rows, suffix = [{**r, "run": run} for r in rows], f"/run{run}"
        # The scalars; the per-class lists go to eval.jsonl only.
        values = {k: float(result[k]) for k in evaluate.fields(self.metrics)}
        if parallel.is_writer():
            files.append_jsonl(self.path, rows)
            writer.write_scalars(step, {f"eval/{k}{suffix}": v for k, v in values.items()})
        return values


def drop_after(workdir, step: int) -> int:
    """Removes the lines of evaluations the training loop ran after ``step`` (a resumed run
    evaluates those steps again); lines of ``experiments.evaluate`` stay."""
    return writers.drop_lines_after(workdir / "eval.jsonl", step,
                                    only=lambda row: row.get("source") == SOURCE)


def evaluate_checkpoint(workdir, metrics="fid", num: int = 10_000, *, step: int | None = None,
                        extractor: str | None = None, ema: bool = True, seed: int = 0,
                        inception_weights: str | None = None, reference_split: str | None = None,
                        reference_num: int | None = None, data_dir: str | None = None,
                        reference_cache=None, log=print, run: int | None = None,
                        **kwargs) -> list[dict]:
    """Evaluates a run's checkpoint (the latest unless ``step``; the EMA generator unless
    ``ema=False``) against its training data and appends one line per metric to
    ``workdir/eval.jsonl``. Returns those lines. A conditional generator's samples are
    class-balanced. A job of several runs: run ``run``, or every run (lines with "run": i)
    and then one "runs" line of each value's mean, std, min and max."""
    metrics = evaluate.parse_metrics(metrics)
    workdir = pathlib.Path(workdir)
    check_directory(workdir)  # It gets eval.jsonl: refused now, not after every metric.
    n = runs_of(saved_config(workdir) or {})
    if n > 1 and run is None:
        return _evaluate_every_run(workdir, n, metrics, num, step=step, extractor=extractor,
                                   ema=ema, seed=seed, inception_weights=inception_weights,
                                   reference_split=reference_split,
                                   reference_num=reference_num, data_dir=data_dir,
                                   reference_cache=reference_cache, log=log, **kwargs)
    draw, z_dim, step, info = load_generator(workdir, step=step, ema=ema,
                                             **({} if run is None else {"run": run}))
    config, classes = info["config"], info["conditional_classes"]
    nelbo = None
    if "nll" in metrics:  # Before the reference: a GAN's run is refused at once.
        nelbo = _checkpoint_nelbo(workdir, step, ema, config, data_dir, seed, run)
    if metrics == ("nll",):  # No samples to score: no extractor, no reference.
        result = nelbo()
        nll = result.pop("nll_provenance")
        result = {**result, "provenance": {"nll": nll, "seconds": nll["seconds"],
                                           "checkpoint_step": step, "ema": ema,
                                           "workdir": str(workdir.absolute())}}
        rows = evaluate.records(result, metrics, step=step)
        if run is not None:
            rows = [{**r, "run": run} for r in rows]
        files.append_jsonl(workdir / "eval.jsonl", rows)
        return rows
    chosen = extractor or features.default_for(config["dataset"]["name"])
    conditional.check(metrics, classes, chosen, num=num)
    if inception_weights:
        if chosen != "inception":
            raise ConfigError(
                f"--inception_weights applies only to the inception extractor, and this run "
                f"is evaluated with {chosen!r} ("
                + ("--extractor" if extractor else f"the default for {config['dataset']['name']}")
                + "); add --extractor=inception to use the FID Inception, or drop "
                "--inception_weights.")
    weights = inception_weights or config.get("eval", {}).get("inception_weights") or None
    ex, ref = evaluate.prepare(config["dataset"], extractor=extractor,
                               inception_weights=weights, reference_split=reference_split,
                               reference_num=reference_num, data_dir=data_dir,
                               reference_cache=reference_cache,
                               per_class="intra_fid" in metrics, log=log)
    result = evaluate.evaluate_generator(draw, num, z_dim=z_dim, extractor=ex, reference=ref,
                                         metrics=metrics, seed=seed, num_classes=classes,
                                         nelbo=nelbo, **kwargs)
    result["provenance"].update({"checkpoint_step": step, "ema": ema,
                                 "workdir": str(workdir.absolute())})
    rows = evaluate.records(result, metrics, step=step)
    if run is not None:
        rows = [{**r, "run": run} for r in rows]
    files.append_jsonl(workdir / "eval.jsonl", rows)
    return rows


def _evaluate_every_run(workdir, n: int, metrics, num, *, step, **kwargs) -> list[dict]:
    """``evaluate_checkpoint`` of each of ``n`` runs, then their "runs" summary line (the
    extractor and the reference are built once: the reference cache serves the rest)."""
    from gan_jax.trainer import multirun
    rows, by_run = [], {}
    for r in range(n):
        got = evaluate_checkpoint(workdir, ",".join(metrics), num, step=step, run=r, **kwargs)
        rows += got
        by_run[r] = {k: v for row in got for k, v in row.items()
                     if k in evaluate.fields(metrics)}
    summary = {"metric": "runs", "step": got[0]["step"], "runs": n,
               **multirun.summary(by_run),
               "provenance": {"seconds": sum(r["provenance"]["seconds"] for r in rows
                                             if r["metric"] == metrics[0])}}
    files.append_jsonl(workdir / "eval.jsonl", [summary])
    return rows + [summary]


def _checkpoint_nelbo(workdir, step, ema, config, data_dir, seed, run=None):
    """The nll metric's function for a VAE checkpoint (ConfigError for a GAN's)."""
    from gan_jax.trainer.families import nelbo_fn
    from gan_jax.trainer.workdir import load_vae
    encoder, decoder, params, variables, _, _ = load_vae(workdir, step=step, ema=ema, run=run)
    fn = functools.partial(nelbo_fn(encoder, decoder, config["vae"]["binarize"]), params,
                           variables)
    return lambda: likelihood.test_nelbo(fn, config["dataset"], data_dir=data_dir,
                                         likelihood=config["vae"]["likelihood"], seed=seed)
