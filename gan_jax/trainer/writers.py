"""Run artefacts: metrics JSONL, TensorBoard events, PNG grids. Process 0 only, host side."""
import io
import json
import os
import pathlib

import numpy as np
from PIL import Image


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    """Writes to a temporary file then renames it, so ``path`` is never half-written."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_jsonl(path, rows: list[dict]) -> None:
    """Appends one JSON line per row, all or none: the lines are built first and written with
    one ``os.write`` to a file opened with O_APPEND; a short or failed write is cut back off,
    and a torn last line left by an earlier crash is closed first, so every line parses."""
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        try:
            written = os.write(fd, data)
        except BaseException:
            os.ftruncate(fd, size)
            raise
        if written != len(data):
            os.ftruncate(fd, size)
            raise OSError(f"Short write to {path} ({written} of {len(data)} bytes); nothing "
                          "was appended.")
        os.fsync(fd)
    finally:
        os.close(fd)


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


class Writer:
    """Appends metrics to ``metrics.jsonl`` (one whole line per write) and TensorBoard.
    ``purge_step`` tells TensorBoard to discard events a resumed run will write again."""

    def __init__(self, workdir, purge_step: int | None = None):
        from tensorboardX import SummaryWriter  # Imported here: only the loop writes events.
        self.workdir = pathlib.Path(workdir)
        self._jsonl = open(self.workdir / "metrics.jsonl", "a", encoding="utf-8")
        self._tb = SummaryWriter(str(self.workdir / "tensorboard"), flush_secs=30,
                                 purge_step=purge_step)

    def event(self, step: int, **fields) -> None:
        self._jsonl.write(json.dumps({"step": step, **fields}) + "\n")
        self._jsonl.flush()

    def scalars(self, step: int, values: dict) -> None:
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        for k, v in values.items():
            self._tb.add_scalar(k, v, step)

    def image(self, step: int, tag: str, image_HWC: np.ndarray) -> None:
        self._tb.add_image(tag, image_HWC, step, dataformats="HWC")

    def close(self) -> None:
        self._jsonl.close()
        self._tb.close()


class NullWriter:
    """What processes other than 0 write: nothing."""

    def scalars(self, step, values):
        pass

    def image(self, step, tag, image):
        pass

    def event(self, step, **fields):
        pass

    def close(self):
        pass
