"""How many CPU cores this process may use, and torch's intra-op thread count.

Intra-op threads help large CPU kernels but cost more than they give on small
models or a loaded machine (measured: 1 thread 1.6x faster per step than 2 under
load), so `training.threads` sets them explicitly; None keeps torch's own choice
(which follows OMP_NUM_THREADS).
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def cores_here(cores: int) -> str:
    """'2 CPU cores here' or '1 CPU core here', for the notes about lowered counts."""
    return f"{cores} CPU core{'s' if cores != 1 else ''} here"


def apply(threads: int | None) -> tuple[int, str | None]:
    """Set torch's intra-op threads to `threads` (at most the usable cores).

    Returns the value now in use and a note when the request was lowered.
    """
    import torch

    note = None
    if threads is not None:
        cores = usable_cores()
        if threads > cores:
            note = f"training.threads={threads} is more than the {cores_here(cores)}; using {cores}"
            threads = cores
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return torch.get_num_threads(), note
