"""Where a run's scalars, images and config go: one ``Writer`` interface with back-ends for
metrics.jsonl (always on), TensorBoard and Weights & Biases. Process 0 only, host side.

Add a back-end by subclassing ``Writer`` (every method defaults to doing nothing) and
passing it to ``train_and_evaluate(..., writers=[...])``.
"""
import io
import json
import os
import pathlib
import secrets
from typing import Iterable, Mapping

import numpy as np
from PIL import Image

from gan_jax.errors import ConfigError
from gan_jax.files import atomic_write_bytes


class Writer:
    """A destination for a run's logs. ``step`` is the train step the values belong to;
    images are uint8 [H, W, C] sample grids."""

    def write_config(self, config: dict) -> None:
        """The run's resolved config, once at the start."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Metric means since the last line, speeds, and ``eval/<metric>`` values."""

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Sample grids, e.g. {"samples/ema": grid, "samples/raw": grid}."""

    def write_event(self, step: int, **fields) -> None:
        """Something that happened to the run (a rollback), with its details."""

    def close(self) -> None:
        """Flushes and releases the back-end; called once, also when the run fails."""


class MultiWriter(Writer):
    """Writes to every writer it holds, in order."""

    def __init__(self, writers: Iterable[Writer]):
        self.writers = list(writers)

    def write_config(self, config):
        for w in self.writers:
            w.write_config(config)

    def write_scalars(self, step, scalars):
        for w in self.writers:
            w.write_scalars(step, scalars)

    def write_images(self, step, images):
        for w in self.writers:
            w.write_images(step, images)

    def write_event(self, step, **fields):
        for w in self.writers:
            w.write_event(step, **fields)

    def close(self):
        for w in self.writers:
            w.close()


class JsonlWriter(Writer):
    """``metrics.jsonl``: one whole line per write, scalars and events alike."""

    def __init__(self, workdir):
        self._file = open(pathlib.Path(workdir) / "metrics.jsonl", "a", encoding="utf-8")

    def _line(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def write_scalars(self, step, scalars):
        self._line({"step": step, **scalars})

    def write_event(self, step, **fields):
        self._line({"step": step, **fields})

    def close(self):
        self._file.close()


class TensorBoardWriter(Writer):
    """TensorBoard event files in ``workdir/tensorboard`` (tensorboardX: no TensorFlow).
    ``purge_step`` tells TensorBoard to discard events a resumed run will write again."""

    def __init__(self, workdir, purge_step: int | None = None):
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"), flush_secs=30,
                                 purge_step=purge_step)

    def write_config(self, config):
        self._tb.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def write_scalars(self, step, scalars):
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, step)

    def write_images(self, step, images):
        for tag, image in images.items():
            self._tb.add_image(tag, image, step, dataformats="HWC")

    def close(self):
        self._tb.close()


class WandbWriter(Writer):
    """Weights & Biases (``pip install -e ".[wandb]"``): scalars, grids and the config.
    Offline runs go to ``workdir/wandb`` (``wandb sync`` uploads them later)."""

    def __init__(self, config, workdir):
        try:
            import wandb
        except ImportError:
            raise ConfigError('config.writers.wandb needs the wandb package: pip install -e '
                              '".[wandb]", or set config.writers.wandb=False.') from None
        self._wandb = wandb
        workdir = pathlib.Path(workdir)
        # The id lives in the workdir so that a resumed training run continues its W&B run.
        id_file = workdir / "wandb_run_id"
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(6)
            atomic_write_bytes(id_file, run_id.encode())
        w = config.wandb
        tags = [t.strip() for t in w.tags.split(",") if t.strip()]
        offline = (w.mode or os.environ.get("WANDB_MODE", "")) == "offline"
        self._run = wandb.init(
            project=w.project, entity=w.entity or None, name=w.name or None,
            group=w.group or None, tags=tags or None, mode=w.mode or None, dir=str(workdir),
            config=json.loads(config.to_json()), id=run_id, resume="allow",
            # The trainer logs its own console output. W&B looks for git in dir= (the
            # workdir, not the code), so it would only warn. Machine info probes a cloud
            # metadata address over the network, which an offline run must not touch.
            settings=wandb.Settings(console="off", save_code=False, disable_git=True,
                                    quiet=True, x_disable_machine_info=offline))

    def write_scalars(self, step, scalars):
        # A resumed run replays the steps after its last checkpoint; W&B drops steps that go
        # backwards, and as resume is bit-identical the dropped values equal the logged ones.
        self._run.log(dict(scalars), step=step)

    def write_images(self, step, images):
        self._run.log({tag: self._wandb.Image(image) for tag, image in images.items()},
                      step=step)

    def write_event(self, step, **fields):
        # Events carry strings, which history charts can't show: keep the last in the summary.
        self._run.summary["last_event"] = {"step": step, **fields}

    def close(self):
        self._run.finish()


def make(config, workdir, *, purge_step: int | None = None, extra: Iterable[Writer] = ()
         ) -> Writer:
    """The writers ``config.writers`` selects, then ``extra``, behind one ``Writer``."""
    chosen = [JsonlWriter(workdir)]
    try:
        if config.writers.tensorboard:
            chosen.append(TensorBoardWriter(workdir, purge_step))
        if config.writers.wandb:
            chosen.append(WandbWriter(config, workdir))
    except BaseException:
        MultiWriter(chosen).close()
        raise
    return MultiWriter([*chosen, *extra])


def save_png(path, image_HWC: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(image_HWC.squeeze(-1) if image_HWC.shape[-1] == 1 else image_HWC).save(
        buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def drop_lines_after(path: pathlib.Path, step: int, only=None) -> int:
    """Atomically removes JSONL lines whose "step" is past ``step`` (steps a resumed run
    replays) and, if given, for which ``only(row)`` holds; returns how many were removed.
    A torn last line is removed too."""
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            ok = row.get("step", 0) <= step or (only is not None and not only(row))
        except json.JSONDecodeError:
            ok = False
        if ok:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_bytes(path, "".join(x + "\n" for x in keep).encode())
    return dropped
