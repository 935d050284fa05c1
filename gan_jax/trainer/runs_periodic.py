"""The loop's periodic work for several runs in one program: grids with one row per run,
and evaluations of every run with their mean, std, min and max."""
import time

import numpy as np

from gan_jax import files, parallel, runs, sampling
from gan_jax.trainer import multirun
from gan_jax.trainer import writers as writers_lib
from gan_jax.trainer.periodic import Evaluations, SampleGrids, grid_file, say


class RunsSampleGrids(SampleGrids):
    """Grids with one row per run (raw and EMA): of an unconditional G the first ``cols``
    fixed latents, of a conditional one the first latent in every class; the final grids
    also as one full grid per run (``final_run<i>.png``)."""

    def __call__(self, state, step: int, final: bool = False) -> None:
        # Runs are picked on the host: indexing the stacked device arrays would be a burst
        # of small multi-device programs (see parallel.unreplicate).
        g_params, g_vars, ema_params = parallel.to_host(self.engine.generator_view(state))
        n, total = runs.num_runs(g_params), len(self.z)
        if self.y is None:
            pick = np.arange(max(1, int(np.sqrt(total))))
        else:  # class_rows: class k's row starts at k * (total // C).
            classes = len(np.unique(np.asarray(self.y)))
            pick = np.arange(classes) * (total // classes)
        cols = len(pick)
        to_host = lambda x: sampling.to_uint8(parallel.to_host(x))
        has_bn = "batch_stats" in g_vars
        raw, ema = [], []
        for r in range(n):
            p, v, e = runs.select((g_params, g_vars, ema_params), r)
            raw.append(to_host(self.draw(p, v, self.z, self.y))[pick])
            full = to_host(self.draw(e, v, self.z, self.y, batch_stats=has_bn))
            ema.append(full[pick])
            if final and parallel.is_writer():
                writers_lib.save_png(self.workdir / "samples" / grid_file(None, run=r),
                                     sampling.class_grid(full, self.y))
        raw = sampling.grid(np.concatenate(raw), cols=cols)
        ema = sampling.grid(np.concatenate(ema), cols=cols)
        self._save(step, final, raw, ema)


class RunsEvaluations(Evaluations):
    """Evaluates every run's EMA generator (its lines carry ``"run": i``), then writes one
    ``"metric": "runs"`` line with each value's mean, std (ddof 1), min and max over the
    runs, and logs the means as ``eval/<name>`` (and ``eval/<name>_std``)."""

    def __init__(self, evaluator, engine, writer, frozen=lambda: {}):
        super().__init__(evaluator, engine, writer)
        self.frozen = frozen  # -> {run: step it froze at}

    def __call__(self, state, step: int) -> None:
        view = parallel.to_host(self.engine.checkpoint_view(state))  # Runs picked on the host.
        _, g_vars, ema_params = self.engine.family.generator_view(view)
        t, by_run = time.time(), {}
        for r in range(self.engine.num_runs):
            v, e = runs.select((g_vars, ema_params), r)
            nelbo = self.engine.family.nelbo(runs.select(view, r))
            by_run[r] = self.evaluator(e, v, step, self.writer, nelbo, run=r)
        stats = multirun.summary(by_run)
        frozen = {str(k): v for k, v in self.frozen().items()}
        if parallel.is_writer():
            files.append_jsonl(self.evaluator.path, [{
                "metric": "runs", "step": step, "source": "train", "runs": len(by_run),
                "settings": self.engine.settings, "frozen": frozen, **stats}])
            self.writer.write_scalars(step, {
                **{f"eval/{k}": s["mean"] for k, s in stats.items()},
                **{f"eval/{k}_std": s["std"] for k, s in stats.items()}})
        self._step, self._values = step, {k: s["mean"] for k, s in stats.items()}
        say(f"gan_jax: eval at step {step} of {len(by_run)} runs: " + ", ".join(
            f"{k} {s['mean']:.4g} ± {s['std']:.2g} [{s['min']:.4g}, {s['max']:.4g}]"
            for k, s in stats.items()) + (f"; frozen runs {frozen}" if frozen else "")
            + f" ({time.time() - t:.1f}s)")
