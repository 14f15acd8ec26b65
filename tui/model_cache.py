"""Models the inspector opened, kept so reopening a file is instant.

Each entry is the loaded checkpoint and its traced plan inputs (the slow part: reading,
rebuilding, tracing the channel groups, counting FLOPs), keyed by the file's real path, size
and modification time and by the trust it was opened with: a file that changed on disk, or a
request with different trust, is a miss and loads afresh. A few entries at most: models are big.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEEP = 3


@dataclass
class Opened:
    loaded: Any  # engine.checkpoint.Loaded
    inputs: Any  # engine.slim.PlanInputs


_cache: OrderedDict[tuple, Opened] = OrderedDict()
_lock = threading.Lock()


def key_of(path: Path, trust: Any) -> tuple | None:
    """(real path, size, mtime in ns, trust), or None when the file cannot be stat'ed."""
    try:
        st = Path(path).stat()
        real = Path(path).resolve()
    except OSError:
        return None
    return (str(real), st.st_size, st.st_mtime_ns, repr(trust))


def get(key: tuple | None) -> Opened | None:
    if key is None:
        return None
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
        return hit


def put(key: tuple | None, opened: Opened) -> None:
    if key is None:
        return
    with _lock:
        stale = [k for k in _cache if k[0] == key[0] and k != key]  # older versions of the same file
        for k in stale:
            del _cache[k]
        _cache[key] = opened
        _cache.move_to_end(key)
        while len(_cache) > KEEP:
            _cache.popitem(last=False)


def clear() -> None:
    with _lock:
        _cache.clear()


def open_model(path: Path, trust: Any, step: Callable[[str], None]) -> tuple[Opened, bool]:
    """The model and plan inputs of `path`, from the cache or loaded and traced now.

    `step(text)` is told what is being done. Returns (opened, True when it came from the cache).
    Raises the engine's errors (CheckpointError, NeedsTrust, ...)."""
    key = key_of(path, trust)
    hit = get(key)
    if hit is not None:
        return hit, True
    from engine import checkpoint
    from engine.slim import gamma_stats, precompute

    size = key[1] if key is not None else 0
    step(f"reading the checkpoint ({_size(size)}) and rebuilding the model")
    loaded = checkpoint.load(path, trust=trust)
    step("measuring |gamma| of every BatchNorm")
    stats = gamma_stats(loaded.model)
    step("tracing coupled channel groups and counting FLOPs")
    inputs = precompute(loaded.model, stats=stats)
    opened = Opened(loaded, inputs)
    put(key, opened)
    return opened, False


def _size(n: int) -> str:
    from tui.widgets.ckpt_format import fmt_size

    return fmt_size(n)
