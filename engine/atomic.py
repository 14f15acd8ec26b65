"""Atomic file writes: a temporary file beside the target, then os.replace.

Readers (the workbench, a resumed run) never see half a file, and a crash while writing leaves
the previous version in place. Torch-free, so run-directory code can use it.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", *, durable: bool = False) -> Iterator[IO[Any]]:
    """Yield a file to write; it replaces `path` only if the block finishes.

    `durable` fsyncs before the rename: worth it for checkpoints, not for status files
    rewritten every few seconds.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600; the file gets what open() would give it
        with os.fdopen(fd, mode) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy `src` over `dst` atomically and durably (a checkpoint copied to weights/best.pt)."""
    with open(src, "rb") as s, atomic_file(dst, "wb", durable=True) as d:
        shutil.copyfileobj(s, d)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_UMASK: int | None = None


def umask() -> int:
    """The process umask, read without changing it (os.umask sets it: a race with other threads)."""
    global _UMASK
    if _UMASK is None:
        try:
            with open("/proc/self/status") as f:
                line = next(ln for ln in f if ln.startswith("Umask:"))
            _UMASK = int(line.split()[1], 8)
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0o022)  # no /proc: read it by setting it, and put it back at once
            os.umask(_UMASK)
    return _UMASK


def describe_os_error(e: OSError, path: str | Path | None = None) -> str:
    """One line a user can act on for a failed write: which file, on which disk, why."""
    target = Path(e.filename) if e.filename else Path(path) if path else None
    what = f" while writing {target}" if target else ""
    if e.errno in NO_SPACE:
        mount, free = _mount_and_free(target)
        kind = "disk quota exceeded" if e.errno == errno.EDQUOT else "no space left"
        return f"{kind} on {mount} ({free} free){what}: free some space, then resume"
    if e.errno == errno.EROFS:
        return f"{_existing(target) or 'the target'} is on a read-only file system{what}: use a writable --runs-dir"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{what}: use a folder you can write (--runs-dir)"
    return f"{e.strerror or e}{what}"


def _existing(path: Path | None) -> Path | None:
    while path is not None and not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mount_and_free(path: Path | None) -> tuple[str, str]:
    p = _existing(Path(path).resolve() if path else None)
    if p is None:
        return "the disk", "unknown"
    free = shutil.disk_usage(p).free
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p), _size(free)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def write_in_place(path: str | Path, text: str) -> None:
    """Overwrite a small file where it is (no new blocks when it does not grow much): the last resort
    for the failure status when the disk is full and a temporary file cannot be made."""
    with open(path, "r+" if Path(path).exists() else "w") as f:
        f.write(text)
        f.truncate()
