"""Atomic file writes: a temporary file beside the target, then os.replace.

Readers (the workbench, a resumed run) never see half a file, and a crash while writing leaves
the previous version in place. Torch-free, so run-directory code can use it.
"""

from __future__ import annotations

import os
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
        with os.fdopen(fd, mode) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
