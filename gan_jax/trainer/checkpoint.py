"""Orbax checkpoints of a whole GAN run, and the pieces sampling needs alone.

A checkpoint at step s is ``<workdir>/checkpoints/<s>/`` with one Orbax item per part, so a
sampler reads ``generator`` + ``run`` and never touches D or the optimizer states:

  generator      G params, EMA params, G's mutable collections (BatchNorm statistics)
  discriminator  D params and mutable collections
  optimizer      both Optax states
  progress       step and the run's base RNG key
  run            JSON: resolved config, image shape, data position, last metrics, version,
                 the fingerprints of the other items' arrays

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed during a save leaves no checkpoint that looks whole; the manager removes such
leftovers when it opens the directory.

A whole-looking checkpoint can still hold wrong bytes (a bad disk, a copy cut short, a
stray write): Orbax reads them without complaint. So each save records a CRC-32 of every
array's bytes in the run item (``fingerprints``), and every restore checks the arrays it read
against them (``CheckpointDamagedError`` names the ones that differ). CRC-32 on the host, not
a checksum on the device: no program to compile at the first save, and about 2 ms for the
MNIST DCGAN's 6 MB state; it detects damage, not tampering.
"""
import errno
import logging
import pathlib
import sys
import time
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from gan_jax import parallel
from gan_jax.errors import GanJaxError

# Every family's parts (``state.parts()``); a checkpoint holds its own family's.
_ARRAY_ITEMS = ("generator", "discriminator", "encoder", "optimizer", "progress")
_FINGERPRINT = "crc32"  # Of each array's bytes, C order, little-endian.


class CheckpointError(GanJaxError):
    pass


class CheckpointDamagedError(CheckpointError):
    """A checkpoint whose files cannot be read, or whose arrays differ from the fingerprints
    saved with them; ``step`` is its step."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def _split_state(state) -> dict[str, Any]:
    return state.parts()


def _join_state(template, items):
    return template.with_parts({k: items[k] for k in template.parts()})


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


def _crc(x: np.ndarray) -> str:
    x = np.ascontiguousarray(x)
    if x.dtype.byteorder == ">":
        x = x.astype(x.dtype.newbyteorder("<"))
    return f"{zlib.crc32(x.reshape(-1).view(np.uint8)):08x}"


def fingerprints(tree) -> dict[str, str]:
    """{array path: CRC-32 of its bytes} (paths as ``leaf_specs`` names them)."""
    # Checkpointed state is replicated: a process's copy of an array is the array.
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    host = parallel.to_host([x for _, x in flat])
    return {_path(p): _crc(x) for (p, _), x in zip(flat, host)}


def _is_array_metadata(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def _warn(message: str) -> None:
    if jax.process_index() == 0:
        print(f"gan_jax: warning: {message}", file=sys.stderr, flush=True)


class _NoOrbaxDiskTracebacks(logging.Filter):
    """Orbax logs a failed background write (a full disk) with a traceback from each of its
    threads; ``Checkpointer`` raises that error in the caller's thread as one clear line,
    so only Orbax's one-line messages are kept."""

    def filter(self, record):
        if (record.exc_info and isinstance(record.exc_info[1], OSError)
                and "orbax" in record.pathname):
            record.exc_info, record.exc_text = None, None
        return True


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
        absl_logger = logging.getLogger("absl")
        if not any(isinstance(f, _NoOrbaxDiskTracebacks) for f in absl_logger.filters):
            absl_logger.addFilter(_NoOrbaxDiskTracebacks())
        self._saving = None  # The step of the save that may still be in flight.
        self._failed = None  # The CheckpointError a failed save raised, raised once.
        self._unverified = set()  # Steps without fingerprints, warned about once.

    def steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, state, run_info: dict, metrics: dict | None = None,
             step: int | None = None) -> float:
        """Starts saving ``state`` (as step ``step``, default ``state.step``: pass it for
        states of several runs); returns the seconds the caller was blocked. Raises
        CheckpointError if this save, or the previous one still in flight, fails."""
        if self._failed is not None:
            raise self._failed
        t = time.perf_counter()
        step = int(state.step) if step is None else step
        items = _split_state(state)
        prints = {k: fingerprints(v) for k, v in items.items()}
        args = {k: ocp.args.StandardSave(v) for k, v in items.items()}
        args["run"] = ocp.args.JsonSave({**run_info, "metrics": metrics or {},
                                         "fingerprints": {"kind": _FINGERPRINT,
                                                          "arrays": prints}})
        kept_metrics = None
        if self.best_metric and metrics and self.best_metric in metrics:
            kept_metrics = {self.best_metric: float(metrics[self.best_metric])}
        self.wait()  # Orbax would wait too; this names the step a failure belongs to.
        self._saving = step
        try:
            self._mngr.save(step, args=ocp.args.Composite(**args), metrics=kept_metrics,
                            force=True)
        except Exception as e:  # The disk, the file system: many types.
            self._save_failed(e)
        return time.perf_counter() - t

    def wait(self) -> None:
        """Waits for the save in flight; raises CheckpointError (once) if it failed."""
        if self._failed is not None:
            return
        try:
            self._mngr.wait_until_finished()
        except Exception as e:
            self._save_failed(e)

    def _save_failed(self, e: Exception):
        self._mngr.reload()  # Orbax's list of steps would still hold the failed one.
        kept = self.steps()
        hint = (" Free some space and rerun the same command to resume from it."
                if isinstance(e, OSError) and e.errno == errno.ENOSPC else
                " Rerun the same command to resume from it once the cause is fixed.")
        self._failed = CheckpointError(
            f"Saving the checkpoint of step {self._saving} in {self.directory} failed "
            f"({type(e).__name__}: {_one_line(e)}); "
            + (f"the checkpoint of step {max(kept)} is intact.{hint}" if kept else
               "no earlier checkpoint exists."))
        raise self._failed from e

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

    def _arrays_metadata(self, step: int, item: str):
        """The item's tree of Orbax array metadata (shape, dtype, sharding at save)."""
        try:
            return self._mngr.item_metadata(step)[item].tree
        except Exception as e:  # Orbax raises many types for unreadable metadata.
            raise CheckpointDamagedError(
                f"Checkpoint {self.directory / str(step)} is damaged or was not written by "
                f"gan_jax: its {item} item is unreadable ({type(e).__name__}: "
                f"{_one_line(e)}).", step) from None

    def check_compatible(self, abstract_state, step: int | None = None) -> int:
        """Raises CheckpointError listing every array whose shape or dtype the model does
        not share with the checkpoint; returns the step checked."""
        step = self._check_step(step)
        problems = []
        for item, expected in _split_state(abstract_state).items():
            saved = leaf_specs(self._arrays_metadata(step, item), is_leaf=_is_array_metadata)
            problems += [f"{item}/{line}" for line in shape_mismatches(saved, leaf_specs(expected))]
        if problems:
            raise CheckpointError(
                f"The checkpoint {self.directory / str(step)} does not fit this model "
                f"({len(problems)} arrays differ):\n  " + "\n  ".join(problems[:40]))
        return step

    def restore(self, template, step: int | None = None) -> tuple[Any, dict]:
        """The full state (arrays placed like ``template``'s) and the run info at ``step``,
        checked against its fingerprints (CheckpointDamagedError if they differ)."""
        step = self.check_compatible(jax.eval_shape(lambda: template), step)
        targets = _split_state(template)
        args = {k: ocp.args.StandardRestore(v) for k, v in targets.items()}
        items = self._restore(step, dict(args, run=ocp.args.JsonRestore()))
        self._verify(step, items)
        return _join_state(template, items), items["run"]

    def restore_generator(self, step: int | None = None, part: str = "generator"
                          ) -> tuple[int, dict, dict]:
        """(step, run info, {"params", "ema_params", "vars"}) without reading D or optimizers;
        the generator's arrays are checked against their fingerprints. ``part``: another
        part to read alone, e.g. a VAE's "encoder"."""
        step = self._check_step(step)
        # Onto one local device: the saved sharding may name devices this process lacks.
        one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                              self._arrays_metadata(step, part),
                              is_leaf=_is_array_metadata)
        items = self._restore(step, {part: ocp.args.StandardRestore(target),
                                     "run": ocp.args.JsonRestore()})
        self._verify(step, items)
        return step, items["run"], items[part]

    def newest_good_generator(self, below: int | None = None) -> int | None:
        """The newest step (under ``below``) whose generator passes its check, or None."""
        for step in sorted(self.steps(), reverse=True):
            if below is None or step < below:
                try:
                    return self.restore_generator(step)[0]
                except CheckpointDamagedError:
                    pass
        return None

    def run_info(self, step: int | None = None) -> dict:
        return self._restore(self._check_step(step), {"run": ocp.args.JsonRestore()})["run"]

    def _restore(self, step, args):
        try:
            return self._mngr.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # A damaged file surfaces as many different error types.
            raise CheckpointDamagedError(
                f"Checkpoint {self.directory / str(step)} is damaged or was not written by "
                f"gan_jax: Orbax could not read it ({type(e).__name__}: {_one_line(e)}).",
                step) from None

    def _verify(self, step: int, items: dict) -> None:
        saved = items["run"].get("fingerprints")
        if saved is None:  # Written before gan_jax saved fingerprints.
            if step not in self._unverified:
                self._unverified.add(step)
                _warn(f"the checkpoint {self.directory / str(step)} has no array fingerprints "
                      "(written by an older gan_jax); it is used unchecked.")
            return
        if saved.get("kind") != _FINGERPRINT:
            raise CheckpointError(f"Checkpoint {self.directory / str(step)} has fingerprints "
                                  f"of kind {saved.get('kind')!r}; this gan_jax checks "
                                  f"{_FINGERPRINT!r} ones.")
        bad = []
        for item in (k for k in _ARRAY_ITEMS if k in items):
            want, got = saved["arrays"].get(item, {}), fingerprints(items[item])
            bad += [f"{item}/{k}" for k in sorted(set(want) | set(got))
                    if want.get(k) != got.get(k)]
        if bad:
            names = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            raise CheckpointDamagedError(
                f"Checkpoint {self.directory / str(step)} is damaged: {len(bad)} "
                f"array{'s' if len(bad) > 1 else ''} differ{'' if len(bad) > 1 else 's'} from "
                f"the fingerprints saved with it ({names}).", step)

    def move_aside(self, step: int) -> pathlib.Path:
        """Renames the checkpoint of ``step`` to ``<step>.corrupt-<time>`` (never deletes it),
        a name Orbax neither lists as a step nor cleans up; returns the new path."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.directory / f"{step}.corrupt-{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = self.directory / f"{step}.corrupt-{stamp}-{n}"
        if jax.process_index() == 0:
            (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"gan_jax_move_aside_{step}")
        self._mngr.reload()
        return target

    def close(self) -> None:
        if self._failed is not None:
            try:  # Orbax raises a failed save's error again on every wait.
                self._mngr.close()
            except Exception:
                pass
            return
        self._mngr.close()
