"""The loop's periodic work, each a small object the loop calls when it is due: log lines
(with the metrics still on the device), sample grids, evaluations and checkpoints."""
import contextlib
import dataclasses
import time

import jax
import numpy as np

from gan_jax import parallel, sampling
from gan_jax.errors import DivergenceError
from gan_jax.eval import evaluate
from gan_jax.trainer import writers as writers_lib


def say(*args) -> None:
    """Prints on process 0 only."""
    if parallel.is_writer():
        print(*args, flush=True)


class Meter:
    """Sums the per-step metrics between log lines, checking each for NaN/Inf."""

    def __init__(self, sums: dict | None = None, count: int = 0):
        self.sums, self.count = dict(sums or {}), count

    @classmethod
    def of(cls, run_info: dict) -> "Meter":
        """The meter a checkpoint's run info saved (empty for a new run)."""
        saved = run_info.get("meter") or {}
        return cls(saved.get("sums"), saved.get("count", 0))

    def add(self, first_step: int, metrics_K: dict) -> None:
        host = parallel.to_host(metrics_K)
        for name, values in host.items():
            values = np.asarray(values)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise DivergenceError(
                    f"Step {first_step + int(bad[0]) + 1}: {name} is {values[bad[0]]}. Training "
                    "stopped; lower the learning rates, add a gradient penalty, use float32, "
                    "or set config.nan_rollbacks.")
            self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.count += len(next(iter(host.values())))

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}

    def pop(self) -> dict:
        out = {k: v / self.count for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


class LogLines:
    """Metric lines every ``log_every`` steps, read a dispatch late: a dispatch's metrics stay
    pending on the device until the next one is queued, and a line waits for them unless the
    host waits for the device at that step anyway (``line(step, now=True)``)."""

    def __init__(self, config, writer, meter: Meter, step: int, loop_start: float,
                 log_text=lambda metrics: ""):
        """``log_text(metrics) -> str``: the family's part of a line (its losses)."""
        self.config, self.writer, self.meter, self.log_text = config, writer, meter, log_text
        self.pending = None  # (step after a dispatch, its metrics, still on the device)
        self.due = None  # The step of a line that waits for the pending metrics.
        self.last = {}  # The last line's means, which a checkpoint records.
        self._loop_start, self._time, self._step, self._paused = loop_start, time.time(), step, 0.0
        self.total_paused = 0.0

    def received(self, step: int, metrics) -> None:
        """A dispatch was queued: the previous one's metrics are settled (and a line that
        waited for them is written), and this one's become pending."""
        self.settle()
        if self.due is not None:
            self._write(self.due)
            self.due = None
        self.pending = (step, metrics)

    def settle(self) -> None:
        """Reads the pending metrics into the meter (waits for the device)."""
        if self.pending is not None:
            step, metrics = self.pending
            self.pending = None
            self.meter.add(step - self.config.steps_per_dispatch, metrics)

    def line(self, step: int, now: bool) -> None:
        if now:
            self.settle()
            self._write(step)
        else:
            self.due = step

    @contextlib.contextmanager
    def paused(self):
        """Time spent here (grids, evaluations, checkpoints) is left out of steps/s."""
        t = time.time()
        yield
        self._paused += time.time() - t
        self.total_paused += time.time() - t

    def _write(self, step: int) -> None:
        c, now = self.config, time.time()
        rate = (step - self._step) / max(now - self._time - self._paused, 1e-9)
        self.last = self.meter.pop()
        self.writer.write_scalars(step, {**self.last, "steps_per_s": rate,
                                         "images_per_s": rate * c.batch_size})
        eta = (c.num_steps - step) / rate if rate > 0 else float("nan")
        say(f"step {step}/{c.num_steps} | {rate:,.1f} steps/s | {rate * c.batch_size:,.0f} img/s"
            f" | {self.log_text(self.last)} | elapsed {now - self._loop_start:.0f}s eta "
            f"{eta:.0f}s")
        self._time, self._step, self._paused = now, step, 0.0


class SampleGrids:
    """Grids of a fixed latent batch from the raw and the EMA generator, as PNG files in
    ``workdir/samples`` and images for the writers. ``y_fixed``: a conditional G's classes,
    from ``sampling.grid_latents``; its grids hold one class per row."""

    def __init__(self, engine, draw, z_fixed, workdir, writer, y_fixed=None):
        self.engine, self.draw, self.z, self.workdir, self.writer = (engine, draw, z_fixed,
                                                                     workdir, writer)
        self.y = y_fixed

    def __call__(self, state, step: int, final: bool = False) -> None:
        g_params, g_vars, ema_params = self.engine.generator_view(state)
        to_grid = lambda x: sampling.class_grid(sampling.to_uint8(parallel.to_host(x)), self.y)
        raw = to_grid(self.draw(g_params, g_vars, self.z, self.y))
        # The EMA params never produced the running statistics: BatchNorm uses the batch's.
        ema = to_grid(self.draw(ema_params, g_vars, self.z, self.y,
                                batch_stats="batch_stats" in g_vars))
        self._save(step, final, raw, ema)

    def _save(self, step: int, final: bool, raw, ema) -> None:
        """The raw and EMA grids as samples/{step_<step>,final}[_raw].png and to the writer."""
        if parallel.is_writer():
            at = None if final else step
            writers_lib.save_png(self.workdir / "samples" / grid_file(at, raw=True), raw)
            writers_lib.save_png(self.workdir / "samples" / grid_file(at), ema)
            self.writer.write_images(step, {"samples/raw": raw, "samples/ema": ema})


def grid_file(step: int | None, raw: bool = False, run: int | None = None) -> str:
    """The file name under samples/ of the EMA (``raw``: raw G) grid at ``step``; None: the
    final grid (``run``: that run's own final grid, of a job of several runs)."""
    if run is not None:
        return f"final_run{run}.png"
    return ("final" if step is None else f"step_{step:08d}") + ("_raw" if raw else "") + ".png"


class Evaluations:
    """The scheduled evaluation (``trainer.evaluation.ScheduledEval``) of the EMA generator,
    and the values it measured at the last evaluated step."""

    def __init__(self, evaluator, engine, writer):
        self.evaluator, self.engine, self.writer = evaluator, engine, writer
        self.fields = evaluate.fields(evaluator.metrics)  # The values it logs: fid, kid, ...
        self._step, self._values = None, {}

    def __call__(self, state, step: int) -> None:
        view = self.engine.checkpoint_view(state)
        _, g_vars, ema_params = self.engine.family.generator_view(view)
        nelbo = self.engine.family.nelbo(view)
        t = time.time()
        self._step, self._values = step, self.evaluator(ema_params, g_vars, step, self.writer,
                                                        nelbo)
        say(f"gan_jax: eval at step {step}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in self._values.items()) + f" ({time.time() - t:.1f}s)")

    def at(self, step: int) -> dict:
        """The values measured at ``step``; none for a step that was not evaluated, so a
        checkpoint never carries an earlier step's FID."""
        return self._values if step == self._step else {}


class Saver:
    """Checkpoints of states whose parameters are finite, with what a resume needs besides
    the arrays: the run info, the meter's partial sums and the data position."""

    def __init__(self, ckpt, engine, run_info: dict):
        self.ckpt, self.engine, self.run_info = ckpt, engine, run_info
        self.block_s = []  # Seconds each save blocked the loop.

    def __call__(self, state, metrics: dict, meter: Meter) -> None:
        view = self.engine.checkpoint_view(state)
        if not self.engine.all_finite(view):
            raise DivergenceError(f"Step {self.engine.step_of(state)}: the parameters hold a "
                                  "NaN or Inf.")
        # The meter's partial sums make the first log line after a resume the same as in a
        # run that was never stopped.
        step = self.engine.step_of(state)
        info = {**self.run_info, "meter": meter.state(),
                "data": {**self.engine.data_info(), **self.engine.data_position(),
                         "next_step": step}}
        self.block_s.append(self.ckpt.save(view, info, metrics, step=step))


@dataclasses.dataclass
class Due:
    """What the loop does after the dispatch that ended at a step."""
    log: bool
    sample: bool
    evaluate: bool
    checkpoint: bool
    stop: bool

    @property
    def host_waits(self) -> bool:
        """Whether the host waits for the device at this step anyway."""
        return self.sample or self.evaluate or self.checkpoint or self.stop


def due(config, step: int, signals, evaluate_at=None, save_at_eval: bool = False) -> Due:
    """``evaluate_at(step) -> bool``: the scheduled evaluation's, if any; ``save_at_eval``:
    each evaluated step is saved (checkpoints ranked by an eval metric)."""
    end = config.num_steps
    evaluate = evaluate_at is not None and evaluate_at(step)
    checkpoint = step % config.checkpoint.every == 0 or step == end or (save_at_eval and evaluate)
    # Agreeing on SIGINT is a collective, which waits for the device: on GPUs only at
    # checkpoints. On CPU every dispatch: that keeps the hosts in step, and gloo's
    # collectives are slow when hosts arrive apart (2 processes, MLP: 26 vs 800 steps/s).
    stop = signals.stop_requested(jax.default_backend() == "cpu" or checkpoint)
    return Due(log=step % config.log_every == 0 or step == end,
               sample=step % config.sample_every == 0 and step < end, evaluate=evaluate,
               checkpoint=checkpoint, stop=stop)

