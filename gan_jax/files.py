"""Files written whole: atomic writes and JSONL appends, where gan_jax's caches live, the
sha256 of a file, .npz files with a JSON ``__meta__`` entry (weights, caches, sample dumps),
and a lock for building a cache once. Imports nothing heavy: the GPU scripts use it."""
import contextlib
import fcntl
import hashlib
import io
import json
import os
import pathlib

import numpy as np

_META = "__meta__"


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


def cache_dir() -> pathlib.Path:
    """gan_jax's cache: ``$XDG_CACHE_HOME/gan_jax``, else ``~/.cache/gan_jax``."""
    root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(root) / "gan_jax"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def write_npz(path, arrays: dict, meta: dict | None = None) -> str:
    """Writes ``arrays`` (and ``meta`` as JSON) to ``path`` atomically; returns the file's
    sha256."""
    buf = io.BytesIO()
    extra = {} if meta is None else {_META: np.array(json.dumps(meta, sort_keys=True))}
    np.savez(buf, **extra, **arrays)
    atomic_write_bytes(pathlib.Path(path), buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def read_npz(path_or_file) -> tuple[dict, dict | None]:
    """(arrays, meta or None) of a file ``write_npz`` wrote; no pickles are loaded."""
    with np.load(path_or_file, allow_pickle=False) as npz:
        meta = json.loads(str(npz[_META])) if _META in npz.files else None
        return {k: npz[k] for k in npz.files if k != _META}, meta


@contextlib.contextmanager
def exclusive(path):
    """Holds an exclusive lock on the file ``path`` (created if missing), so that processes
    that would build the same cache entry take turns; the second then finds it built. Where
    the file system refuses locks, it goes on without one (each process builds; the atomic
    write keeps the entry whole)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:
            pass
        yield  # Closing the file releases the lock.
