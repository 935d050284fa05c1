"""Orbax checkpoints of a whole GAN run, and the pieces sampling needs alone.

A checkpoint at step s is ``<workdir>/checkpoints/<s>/`` with one Orbax item per part, so a
sampler reads ``generator`` + ``run`` and never touches D or the optimizer states:

  generator      G params, EMA params, G's mutable collections (BatchNorm statistics)
  discriminator  D params and mutable collections
  optimizer      both Optax states
  progress       step and the run's base RNG key
  run            JSON: resolved config, image shape, data position, last metrics, version

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed during a save leaves no checkpoint that looks whole; the manager removes such
leftovers when it opens the directory.
"""
import pathlib
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from gan_jax.errors import GanJaxError
from gan_jax.state import GANState

_ARRAY_ITEMS = ("generator", "discriminator", "optimizer", "progress")


class CheckpointError(GanJaxError):
    pass


def _split_state(state: GANState) -> dict[str, Any]:
    return {"generator": {"params": state.g_params, "ema_params": state.ema_params,
                          "vars": state.g_vars},
            "discriminator": {"params": state.d_params, "vars": state.d_vars},
            "optimizer": {"g": state.g_opt_state, "d": state.d_opt_state},
            "progress": {"step": state.step, "rng": state.rng}}


def _join_state(template: GANState, items) -> GANState:
    g, d, o, p = (items[k] for k in _ARRAY_ITEMS)
    return template.replace(g_params=g["params"], ema_params=g["ema_params"], g_vars=g["vars"],
                            d_params=d["params"], d_vars=d["vars"], g_opt_state=o["g"],
                            d_opt_state=o["d"], step=p["step"], rng=p["rng"])


def _path(path) -> str:
    # Orbax stores namedtuples (Optax states) as dicts: name keys alike on both sides.
    names = []
    for k in path:
        names.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
    return "/".join(names)


def leaf_specs(tree, is_leaf=None) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    return {_path(path): (tuple(x.shape), str(np.dtype(x.dtype)))
            for path, x in flat if hasattr(x, "shape")}


def shape_mismatches(saved: dict[str, tuple], expected: dict[str, tuple]) -> list[str]:
    """Lines naming every array whose shape or dtype differs, or that only one side has."""
    lines = []
    for key in sorted(set(saved) | set(expected)):
        a, b = saved.get(key), expected.get(key)
        if a != b:
            fmt = lambda s: "absent" if s is None else f"{s[1]}{list(s[0])}"
            lines.append(f"{key}: checkpoint {fmt(a)}, model {fmt(b)}")
    return lines


class Checkpointer:
    """Saves every ``every`` steps (asynchronously), keeps the last ``keep`` and, when
    ``best_metric`` is set, the ``keep_best`` best by that metric ("min" or "max")."""

    def __init__(self, directory, *, keep: int = 3, best_metric: str = "",
                 best_mode: str = "min", keep_best: int = 1, async_save: bool = True,
                 read_only: bool = False):
        self.directory = pathlib.Path(directory).absolute()
        if best_mode not in ("min", "max"):
            raise CheckpointError(f"best_mode must be 'min' or 'max', got {best_mode!r}.")
        keepers = [policies.LatestN(n=keep)]
        if best_metric:
            keepers.append(policies.BestN(get_metric_fn=lambda m: m[best_metric],
                                          reverse=best_mode == "min", n=keep_best,
                                          keep_checkpoints_without_metrics=False))
        self.best_metric = best_metric
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"No checkpoint directory at {self.directory}: train first "
                                  "with experiments/main.py, or pass the run's --workdir.")
        handlers = {k: ocp.StandardCheckpointHandler() for k in _ARRAY_ITEMS}
        handlers["run"] = ocp.JsonCheckpointHandler()
        # read_only here means "this process never saves"; Orbax's own read_only mode only
        # adds warnings, so it is not used.
        self._mngr = ocp.CheckpointManager(
            self.directory, item_handlers=handlers,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policies.AnyPreservationPolicy(keepers),
                enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only,
                create=not read_only))
        # Orbax removes leftovers of killed saves in the background; finish that first so a
        # new save of the same step cannot race with the deletion of its old temporary dir.
        cleanup = getattr(self._mngr, "_cleanup_tmp_directory_future", None)
        if cleanup is not None:
            cleanup.result()

    def steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, state: GANState, run_info: dict, metrics: dict | None = None) -> float:
        """Starts saving ``state``; returns the seconds the caller was blocked."""
        t = time.perf_counter()
        step = int(state.step)
        args = {k: ocp.args.StandardSave(v) for k, v in _split_state(state).items()}
        args["run"] = ocp.args.JsonSave({**run_info, "metrics": metrics or {}})
        kept_metrics = None
        if self.best_metric and metrics and self.best_metric in metrics:
            kept_metrics = {self.best_metric: float(metrics[self.best_metric])}
        self._mngr.save(step, args=ocp.args.Composite(**args), metrics=kept_metrics, force=True)
        return time.perf_counter() - t

    def _check_step(self, step: int | None) -> int:
        available = self.steps()
        if step is None:
            if not available:
                raise CheckpointError(f"No checkpoint in {self.directory}.")
            return max(available)
        if step not in available:
            raise CheckpointError(f"No checkpoint for step {step} in {self.directory}; "
                                  f"available steps: {sorted(available) or 'none'}.")
        return step

    def _arrays_metadata(self, step: int, item: str) -> dict[str, tuple]:
        try:
            tree = self._mngr.item_metadata(step)[item].tree
        except Exception as e:  # Orbax raises many types for unreadable metadata.
            raise CheckpointError(f"Checkpoint {self.directory / str(step) / item} is unreadable "
                                  f"({type(e).__name__}: {e}); expected an Orbax PyTree item "
                                  "written by gan_jax.") from None
        return leaf_specs(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))

    def check_compatible(self, abstract_state: GANState, step: int | None = None) -> int:
        """Raises CheckpointError listing every array whose shape or dtype the model does
        not share with the checkpoint; returns the step checked."""
        step = self._check_step(step)
        problems = []
        for item, expected in _split_state(abstract_state).items():
            saved = self._arrays_metadata(step, item)
            problems += [f"{item}/{line}" for line in shape_mismatches(saved, leaf_specs(expected))]
        if problems:
            raise CheckpointError(
                f"The checkpoint {self.directory / str(step)} does not fit this model "
                f"({len(problems)} arrays differ):\n  " + "\n  ".join(problems[:40]))
        return step

    def restore(self, template: GANState, step: int | None = None) -> tuple[GANState, dict]:
        """The full state (arrays placed like ``template``'s) and the run info at ``step``."""
        step = self.check_compatible(jax.eval_shape(lambda: template), step)
        targets = _split_state(template)
        args = {k: ocp.args.StandardRestore(targets[k]) for k in _ARRAY_ITEMS}
        items = self._restore(step, dict(args, run=ocp.args.JsonRestore()))
        return _join_state(template, items), items["run"]

    def restore_generator(self, step: int | None = None) -> tuple[int, dict, dict]:
        """(step, run info, {"params", "ema_params", "vars"}) without reading D or optimizers."""
        step = self._check_step(step)
        items = self._restore(step, {"generator": ocp.args.StandardRestore(),
                                     "run": ocp.args.JsonRestore()})
        return step, items["run"], items["generator"]

    def run_info(self, step: int | None = None) -> dict:
        return self._restore(self._check_step(step), {"run": ocp.args.JsonRestore()})["run"]

    def _restore(self, step, args):
        try:
            return self._mngr.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # A damaged file surfaces as many different error types.
            raise CheckpointError(f"Could not read checkpoint {self.directory / str(step)} "
                                  f"({type(e).__name__}: {str(e)[:300]}); it is damaged or "
                                  "was not written by gan_jax. Earlier steps: "
                                  f"{[s for s in self.steps() if s < step]}.") from None

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.close()

