"""The training loop: the one place that does I/O (process 0 writes, every process runs)."""
import dataclasses
import functools
import json
import pathlib
import signal
import statistics
import time

import jax
import numpy as np

import gan_jax
from gan_jax import models, parallel, runs, sampling
from gan_jax.data import sources
from gan_jax.errors import ConfigError, DivergenceError
from gan_jax.files import atomic_write_bytes
from gan_jax.trainer import config as config_lib
from gan_jax.trainer import families, multirun, periodic, runs_periodic
from gan_jax.trainer import writers as writers_lib
from gan_jax.trainer.checkpoint import (CheckpointDamagedError, CheckpointError,
                                        Checkpointer)
from gan_jax.trainer.engine import Engine
from gan_jax.trainer.runs_engine import RunsEngine
from gan_jax.trainer.periodic import LogLines, Meter, say
from gan_jax.trainer.signals import StopSignals
from gan_jax.trainer.workdir import check_directory, check_workdir, config_differences


@dataclasses.dataclass
class _Run:
    """What the loop works with, built once by ``train_and_evaluate``."""
    config: object
    engine: Engine
    ckpt: Checkpointer
    writer: writers_lib.Writer
    grids: periodic.SampleGrids
    save: periodic.Saver
    evals: periodic.Evaluations | None
    signals: StopSignals
    loop_start: float
    rollbacks: int = 0
    paused_s: float = 0.0  # Spent on grids, evaluations and checkpoints, not on training.
    loop_s: float = 0.0  # From the first dispatch to the last step's work.
    frozen: dict = dataclasses.field(default_factory=dict)  # Diverged runs: {run: step}.

    def due(self, step: int) -> periodic.Due:
        e = self.evals
        return periodic.due(
            self.config, step, self.signals,
            evaluate_at=None if e is None else functools.partial(e.evaluator.due,
                                                                 last_step=self.config.num_steps),
            # Ranked by an eval metric: each evaluated step is saved.
            save_at_eval=e is not None and self.config.checkpoint.best_metric in e.fields)


def train_and_evaluate(config, workdir, *, writers=()) -> dict:
    """Trains the model (GAN or VAE) that ``config`` describes, writing every artefact into ``workdir``,
    resuming from its latest checkpoint if it has one (a larger ``num_steps`` extends the
    run). ``writers``: more ``trainer.writers.Writer`` back-ends. Returns a summary (also
    written to ``summary.json``); ``summary["preempted"]`` is set when SIGTERM/SIGINT
    stopped it."""
    start = time.time()
    config = config_lib.validate(config)
    workdir = pathlib.Path(workdir)
    extended_from = check_workdir(workdir, config)
    done = _finished(workdir, config)
    if done is not None:
        return done  # Writes nothing: a finished run on a read-only disk says so and exits 0.
    check_directory(workdir)  # A file, or read-only: refused before the data and the compile.
    data, image_shape, num_classes = _load_data(config)
    family = families.build(
        config, image_shape, num_classes,
        axis_name=parallel.AXIS if config.parallel.mode == "pmap" else None)
    G = family.generator  # What draws the grids and the evaluated samples.
    init_key, data_key, sample_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    num_runs = multirun.count(config)
    engine = (Engine if num_runs == 1 else RunsEngine)(config, family=family, image_shape=image_shape, init_key=init_key,
                    data_key=data_key, data=data, num_classes=num_classes,
                    class_probs=_class_probs(config, data, num_classes))
    ck = config.checkpoint
    ckpt = Checkpointer(workdir / "checkpoints", keep=ck.keep, best_metric=ck.best_metric,
                        best_mode=ck.best_mode, async_save=ck.async_save)
    # Sampling and evaluation run outside pmap, so their G must not name the pmap axis.
    G_sample = G.clone(axis_name=None) if hasattr(G, "axis_name") else G
    draw = jax.jit(functools.partial(sampling.generate, G_sample), static_argnames="batch_stats")
    evaluator = None
    try:
        state, resumed_from, resumed_info = _resume(ckpt, engine)
        if config.eval.every:
            from gan_jax.trainer.evaluation import ScheduledEval
            evaluator = ScheduledEval(config, draw, G.z_dim, workdir, log=say,
                                      num_classes=models.num_classes(G))
        t = time.time()
        engine.compile(state)
        compile_s = time.time() - t
        _check_best_metric(config, engine.metric_names())
        writer = _open_writers(config, workdir, resumed_from, extended_from, writers)
    except BaseException:
        ckpt.close()
        engine.close()
        raise
    if resumed_from is not None:
        say(f"gan_jax: resuming from the checkpoint at step {resumed_from}"
            + (f", extending the run from {extended_from} to {config.num_steps} steps"
               if extended_from else ""))
    run_info = {"config": config_lib.to_dict(config), "image_shape": list(image_shape),
                "num_classes": engine.num_classes, "gan_jax_version": gan_jax.__version__}
    z_fixed, y_fixed = sampling.grid_latents(sample_key, config.num_samples, G.z_dim,
                                             models.num_classes(G))
    s0 = engine.checkpoint_view(state)
    if num_runs > 1:
        s0 = runs.select(s0, 0)
        say(f"gan_jax: {num_runs} runs in one program ({engine.layout} layout, {engine.form} "
            "form): " + "; ".join(f"run {i}: {multirun.label(s)}"
                                  for i, s in enumerate(engine.settings)))
    classes = f", {engine.num_classes} classes" if engine.num_classes else ""
    say(f"gan_jax: {config.model.name} on {config.dataset.name} {tuple(image_shape)}{classes}, "
        f"{family.sizes(s0)}, {engine.shards} "
        f"{jax.default_backend()} device(s) in {jax.process_count()} process(es), "
        f"{config.parallel.mode}, {config.dataset.pipeline} data; compiled in {compile_s:.1f}s")
    first_step = step = engine.step_of(state)
    meter = engine.meter(resumed_info)
    grids, evals = periodic.SampleGrids, periodic.Evaluations
    if num_runs > 1:
        grids = runs_periodic.RunsSampleGrids
        evals = lambda *a: runs_periodic.RunsEvaluations(*a, frozen=lambda: meter.frozen)
    with StopSignals() as signals:
        run = _Run(config, engine, ckpt, writer,
                   grids(engine, draw, z_fixed, workdir, writer, y_fixed),
                   periodic.Saver(ckpt, engine, run_info),
                   evaluator and evals(evaluator, engine, writer),
                   signals, loop_start=time.time())
        try:
            state, step = _train_with_rollbacks(run, state, step, meter)
            run.frozen = dict(getattr(meter, "frozen", {}))
            run.loop_s = time.time() - run.loop_start
            preempted = signals.received is not None and step < config.num_steps
            if not preempted and step > first_step:
                run.grids(state, step, final=True)
        finally:
            try:
                ckpt.wait()  # Never leave with a save half-done; a failed save raises here.
            finally:
                ckpt.close()
                engine.close()
                writer.close()
    return _finish(run, workdir, start, compile_s, first_step, step, resumed_from, preempted)


def _train(run: _Run, state, step: int, meter: Meter):
    """Dispatches until num_steps or a stop signal. Each dispatch's metrics are read after
    the next one is queued; the periodic work runs after the dispatch it is due at."""
    log = LogLines(run.config, run.writer, meter, step, run.loop_start,
                   run.engine.family.log_text)
    try:
        while step < run.config.num_steps:
            state, metrics = run.engine.dispatch(state)
            step += run.config.steps_per_dispatch
            log.received(step, metrics)
            due = run.due(step)
            if due.log:
                log.line(step, now=due.host_waits)
            with log.paused():
                if due.sample:
                    run.grids(state, step)
                if due.evaluate:
                    log.settle()  # A state whose losses went NaN stops here, unevaluated.
                    run.evals(state, step)
                if due.checkpoint or due.stop:
                    log.settle()  # Only a state whose metrics were all finite is saved.
                    evaluated = run.evals.at(step) if run.evals else {}
                    run.save(state, {**log.last, **evaluated}, meter)
            if due.stop:
                break
        log.settle()
    finally:
        run.paused_s += log.total_paused
    return state, step


def _train_with_rollbacks(run: _Run, state, step: int, meter: Meter):
    """``_train``, rolled back to the last checkpoint with a fresh RNG key on a NaN or Inf,
    at most ``config.nan_rollbacks`` times."""
    while True:
        try:
            return _train(run, state, step, meter)
        except DivergenceError as e:
            if run.rollbacks >= run.config.nan_rollbacks:
                raise
            run.rollbacks += 1
            state, step, meter = _roll_back(run, e)


def _roll_back(run: _Run, error: DivergenceError):
    """(state, step, meter) as a resume finds them, the input moved back to where that
    checkpoint (or step 0) read it, and a fresh key: the same data, other noise, so the
    blow-up may not recur."""
    run.ckpt.wait()
    state, resumed_from, info = _resume(run.ckpt, run.engine)
    if resumed_from is None:
        run.engine.set_data_position(run.engine.start_position)
    state = state.replace(rng=jax.random.fold_in(state.rng, run.rollbacks))
    step = run.engine.step_of(state)
    run.writer.write_event(step, event="rollback", reason=str(error), attempt=run.rollbacks)
    say(f"gan_jax: {error}\ngan_jax: rolled back to step {step} with a fresh RNG key "
        f"(rollback {run.rollbacks} of {run.config.nan_rollbacks})")
    return state, step, run.engine.meter(info)


def _load_data(config):
    """(host data for the device pipeline, image shape, number of classes or None): the
    data is the images, or {"image", "label"} where the dataset has labels."""
    ds = config.dataset
    if ds.pipeline == "streaming":
        shape = sources.image_shape(ds.name, ds.data_dir or None, ds.image_key,
                                    ds.resolution or None)
        classes = (sources.num_classes(ds.name, ds.data_dir or None, ds.label_key)
                   if ds.label_key else None)
        return None, shape, classes  # The pipeline reads the labels.
    d = sources.load(ds.name, ds.split, ds.data_dir or None, image_key=ds.image_key,
                     label_key=ds.label_key or None, resolution=ds.resolution or None,
                     max_examples=ds.max_examples or None)
    if d.labels is None:
        return d.images, d.image_shape, None
    return {"image": d.images, "label": d.labels.astype("int32")}, d.image_shape, d.num_classes


def _class_probs(config, data, num_classes):
    """The class frequencies of the training data, when G's classes are drawn with them."""
    if not (config.model.conditional and config.model.fake_labels == "data"):
        return None
    if not isinstance(data, dict):
        raise ConfigError("model.fake_labels='data' counts the labels of device-resident data; "
                          "use dataset.pipeline='device' or model.fake_labels='uniform'.")
    counts = np.bincount(data["label"], minlength=num_classes).astype(np.float64)
    return (counts / counts.sum()).astype(np.float32)


def _resume(ckpt, engine):
    """(state, step resumed from or None, run info): the newest checkpoint that passes its
    checks, else new. Damaged checkpoints newer than it are moved aside (renamed, kept), and
    only once one passes: when none does, the run stops with the workdir as it was."""
    steps = sorted(ckpt.steps(), reverse=True)
    if not steps:
        return engine.new_state(), None, {}
    template, damaged = engine.restore_template(), []
    for resumed_from in steps:
        try:
            # Before anything is written: a model that does not fit fails here, naming the
            # arrays (CheckpointError, not a damaged checkpoint: no fallback).
            state, info = ckpt.restore(template, resumed_from)
            break
        except CheckpointDamagedError as e:
            say(f"gan_jax: {e}")
            damaged.append(resumed_from)
    else:
        raise CheckpointError(
            f"No checkpoint in {ckpt.directory} passes its check (steps {damaged}, damaged as "
            "said above), so nothing was trained and nothing was moved; restore the directory "
            "from a copy, or move it away to start the run afresh.")
    paths = ", ".join(str(ckpt.directory / str(s)) for s in damaged)
    newer = f" (newer ones failed their check: {paths})" if damaged else ""
    # check_workdir compared config.json; a checkpoint fallen back to must be of this run too
    # (num_steps may have grown since it was written).
    changed = [d for d in config_differences(info["config"], engine.config)
               if not d.startswith("num_steps:")]
    if changed:
        raise CheckpointError(f"The checkpoint {ckpt.directory / str(resumed_from)} belongs "
                              f"to a run with another config ({'; '.join(changed[:5])}){newer}.")
    want = engine.data_info()
    if {k: info["data"].get(k) for k in want} != want:
        raise CheckpointError(f"The checkpoint at step {resumed_from} was trained on other "
                              f"data ({info['data']}); now: {want}{newer}.")
    for step in damaged:
        say(f"gan_jax: moved the damaged checkpoint of step {step} aside to "
            f"{ckpt.move_aside(step)}")
    if damaged:
        say(f"gan_jax: resuming from step {resumed_from}, the newest checkpoint that passes "
            "its check")
    if info["data"].get("shards") != engine.shards:
        say(f"gan_jax: warning: the checkpoint was written with {info['data'].get('shards')} "
            f"data shards, this run has {engine.shards}; the batch order changes from here.")
    else:
        engine.set_data_position(info["data"])
    return engine.place(state), resumed_from, info


def _open_writers(config, workdir, resumed_from, extended_from, extra):
    """The run's writers (process 0; the others write nothing), after the workdir's config
    and logs are made to match the checkpoint resumed from."""
    if not parallel.is_writer():
        return writers_lib.Writer()
    workdir.mkdir(parents=True, exist_ok=True)
    if extended_from or not (workdir / "config.json").exists():
        atomic_write_bytes(workdir / "config.json", json.dumps(
            config_lib.to_dict(config), indent=2, sort_keys=True).encode())
    # Lines past the checkpoint are replayed; with none, a run that died before its first
    # checkpoint left lines (maybe a torn one) that this run writes afresh.
    from gan_jax.trainer.evaluation import drop_after
    after = -1 if resumed_from is None else resumed_from
    writers_lib.drop_lines_after(workdir / "metrics.jsonl", after)
    drop_after(workdir, after)
    writer = writers_lib.make(config, workdir, purge_step=after + 1, extra=extra)
    writer.write_config(config_lib.to_dict(config))
    return writer


def _check_best_metric(config, step_metrics) -> None:
    """A ``checkpoint.best_metric`` the run never logs would keep no best checkpoint, silently:
    refused before the first step."""
    best = config.checkpoint.best_metric
    logged = set(step_metrics)
    if config.eval.every:
        from gan_jax.eval.evaluate import fields
        logged |= set(fields(config.eval.metrics))
    if best and best not in logged:
        raise ConfigError(f"Config key 'checkpoint.best_metric' is {best!r}, which this run "
                          f"does not log; it logs {', '.join(sorted(logged))} (the eval "
                          f"metrics only with eval.every > 0).")


def _finished(workdir: pathlib.Path, config) -> dict | None:
    """The summary of a run that already reached ``num_steps`` in ``workdir``, said and
    returned before anything is compiled or written; None otherwise."""
    summary_path = workdir / "summary.json"
    if not (summary_path.exists() and (workdir / "checkpoints").is_dir()):
        return None
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        latest = ckpt.latest_step()
    finally:
        ckpt.close()
    if latest is None or latest < config.num_steps:
        return None
    say(f"gan_jax: {workdir} already holds the run to step {latest}; nothing to do (raise "
        "num_steps to extend it).")
    return json.loads(summary_path.read_text())


def _finish(run: _Run, workdir, start, compile_s, first_step, step, resumed_from,
            preempted) -> dict:
    """Writes and returns the summary, and says how the run ended: the steps this process
    ran, and its training rate (the time of grids, evaluations and checkpoints apart)."""
    config, loop_s = run.config, run.loop_s
    ran, train_s = step - first_step, max(loop_s - run.paused_s, 1e-9)
    blocks = run.save.block_s
    summary = {"steps": step, "steps_run": ran, "wall_time_s": time.time() - start,
               "compile_s": compile_s, "loop_s": loop_s, "periodic_s": run.paused_s,
               "steps_per_s": ran / train_s,
               "batch_size": config.batch_size, "backend": jax.default_backend(),
               "devices": run.engine.shards, "processes": jax.process_count(),
               "resumed_from": resumed_from, "preempted": preempted,
               "rollbacks": run.rollbacks, "runs": getattr(run.engine, "num_runs", 1),
               "frozen_runs": {str(k): v for k, v in run.frozen.items()},
               "checkpoint_saves": len(blocks),
               "checkpoint_block_s_median": statistics.median(blocks) if blocks else None}
    summary["images_per_s"] = summary["steps_per_s"] * config.batch_size
    if parallel.is_writer():
        atomic_write_bytes(workdir / "summary.json", json.dumps(summary, indent=2).encode())
    if preempted:
        say(f"gan_jax: stopped by {signal.Signals(run.signals.received).name} at step {step}; "
            f"checkpoint saved in {workdir / 'checkpoints'}. Rerun the same command (same "
            "--config and --workdir) to resume.")
    else:
        say(f"gan_jax: done at step {step}: ran {ran:,} steps in {loop_s:.0f}s, "
            f"{summary['steps_per_s']:,.1f} steps/s training ({run.paused_s:.0f}s of grids, "
            f"evaluations and checkpoints); final grid {workdir / 'samples' / 'final.png'}")
    return summary
