"""How much of the machine the data may use: worker processes and memory for the cache."""

from __future__ import annotations

import os

from engine import threads
from engine.errors import DataError

AUTO_WORKERS_MAX = 8  # beyond this, decoding small images rarely keeps up any better
MEMORY_SHARE = 0.25  # data.cache: auto keeps decoded images in memory up to this share


def local_ranks(world_size: int) -> int:
    """Processes of this run on this machine (torchrun sets LOCAL_WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
    except ValueError:
        return max(1, world_size)


def resolve_workers(requested: int | str, world_size: int = 1) -> tuple[int, str | None]:
    """`data.workers` -> (worker count, a note when it was lowered).

    auto: the cores of this process's share of the machine, at most AUTO_WORKERS_MAX.
    More workers than cores only adds switching, so a larger number is lowered.
    """
    cores = threads.usable_cores()
    if requested == "auto":
        return min(AUTO_WORKERS_MAX, max(1, cores // local_ranks(world_size))), None
    workers = int(requested)
    if workers > cores:
        return cores, f"data.workers={workers} is more than the {threads.cores_here(cores)}; using {cores}"
    return workers, None


def data_workers(requested: int | str, world_size: int = 1) -> int:
    """`data.workers` as a count (auto resolved, clamped to the cores) for other loaders."""
    return resolve_workers(requested, world_size)[0]


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def choose_cache(mode: str, decoded_bytes: int, world_size: int, source: str) -> tuple[str, str | None]:
    """`data.cache` -> ("memory" | "none", a note saying why when auto chose).

    auto keeps the decoded images in memory while they fit MEMORY_SHARE of the
    available memory (split between the ranks on this machine), else streams them.
    """
    ranks = local_ranks(world_size)
    available = available_memory()
    gib = decoded_bytes / 2**30
    if mode == "none":
        return "none", None
    if mode == "memory":
        if decoded_bytes * ranks > 0.8 * available:
            raise DataError(
                f"{source}: the decoded images take {gib:.1f} GiB per process ({ranks} on this machine) "
                f"but {available / 2**30:.1f} GiB are available; set data.cache: none to stream them "
                "from disk, or a smaller data.image_size"
            )
        return "memory", None
    budget = MEMORY_SHARE * available / ranks
    if decoded_bytes <= budget:
        return "memory", None
    return "none", (
        f"{source}: the decoded images take {gib:.1f} GiB, more than the in-memory budget of "
        f"{budget / 2**30:.1f} GiB (a quarter of the available memory per process); streaming "
        "them from disk (data.cache: memory keeps them in memory anyway)"
    )
