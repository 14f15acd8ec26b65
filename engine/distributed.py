"""torchrun support: the same command under `torchrun --nproc_per_node N` trains with DDP.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op
and the run is a single process.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def batch_refusal(batch: int, world: int, where: str) -> str | None:
    """Why `batch` images per step cannot be shared by `world` processes, naming the nearest settings
    that can (a batch size that `world` divides, or a process count that divides `batch`); None if it can."""
    if world <= 1 or batch % world == 0:
        return None
    below, above = batch // world * world, -(-batch // world) * world
    sizes = " or ".join(str(b) for b in (below, above) if b > 0)
    counts = [n for n in range(2, batch + 1) if batch % n == 0]
    nearest = sorted(counts, key=lambda n: (abs(n - world), n))[:2]
    procs = (", or --nproc_per_node " + " or ".join(str(n) for n in sorted(nearest))) if nearest else ""
    return (f"{where}: batch_size {batch} does not divide among {world} processes (each rank trains on an equal "
            f"share of the batch): use batch_size {sizes}{procs}")


PROCESS_GROUP_TIMEOUT = 3 * 3600  # seconds a collective waits for the slowest rank

# each rank's (host, pid), gathered once at init: a rank that outlives another names the one that went
_peers: list[tuple[str, int]] = []


def init(info: DistInfo, device: torch.device) -> None:
    """The run's one process group (Ultralytics' detection trainer uses it too, engine/detect/trainer.py)."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":  # NCCL collectives run on the current device: this rank's own GPU
        torch.cuda.set_device(device)
    # the other ranks wait in a barrier while rank 0 alone validates, prunes, exports and quantizes: as
    # long as Ultralytics' own DDP allows (3 h, its _setup_ddp), not torch's 30 min (a rank that dies
    # is noticed at once all the same: its connections close)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT))
    peers: list[Any] = [None] * info.world_size
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    _peers[:] = [tuple(p) for p in peers]


def _gone(pid: int) -> bool:
    """The process is dead or a zombie (killed, not yet reaped by torchrun)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def lost_ranks(info: DistInfo, wait: float = 0.0) -> list[int]:
    """The ranks on this machine that are gone (a rank on another machine cannot be looked at from here).

    `wait`: seconds to keep looking while none is gone yet. A killed process closes its sockets
    before it turns into a zombie, so the survivor's collective can fail while the dead rank still
    looks alive (seen on a loaded machine)."""
    host = socket.gethostname()
    local = [(r, pid) for r, (h, pid) in enumerate(_peers) if r != info.rank and h == host]
    deadline = time.monotonic() + wait
    while True:
        gone = [r for r, pid in local if _gone(pid)]
        if gone or not local or time.monotonic() >= deadline:
            return gone
        time.sleep(0.05)


def shutdown() -> None:
    """Destroy the process group once nothing holds it any more.

    A DDP model keeps its process group alive; after a cancel or a failure it sits in reference
    cycles (exception tracebacks) that only the garbage collector frees. Left to interpreter exit,
    gloo's threads are torn down after Python is gone and the rank dies with SIGABRT ("terminate
    called without an active exception"), now and then (2 cancels in 40): collect it while Python runs."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool) -> nn.Module:
    if not info.enabled:
        return model
    if sync_bn and device.type == "cuda":  # torch's SyncBatchNorm runs on GPUs only
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def any_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when it is true on one: all ranks must stop at the same step."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


PEER_EXIT_WAIT = 3.0  # seconds a survivor waits to name the rank that went away

# What gloo and NCCL say when another process of the run went away (killed, out of memory, ...).
PEER_SIGNS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "communicator was aborted",
              "NCCL error", "ProcessGroupNCCL", "ProcessGroupGloo", "gloo/transport")


def lost_peer(e: BaseException, info: DistInfo) -> str | None:
    """One readable line when `e` says that another rank of this run stopped, else None.

    The collective that failed raises on every surviving rank with the backend's text (a source
    path, a pair.cc line, advice to check the remote worker's logs): the first sentence of it is
    kept as the cause, after what happened and what to do."""
    if not info.enabled or not isinstance(e, RuntimeError):
        return None
    text = str(e)
    if not (isinstance(e, dist.DistError) or any(sign in text for sign in PEER_SIGNS)):
        return None
    cause = text.split("\n", 1)[0]
    if cause.startswith("[") and "] " in cause:  # "[.../gloo/transport/tcp/pair.cc:537] Read error ..."
        cause = cause.split("] ", 1)[1]
    cause = cause.split(". ", 1)[0].strip()[:160]
    gone = lost_ranks(info, wait=PEER_EXIT_WAIT)
    which = (f"rank {', '.join(map(str, gone))} of this torchrun run stopped" if gone
             else "another process of this torchrun run stopped")
    return (f"{which} (killed, out of memory, or its machine went away), so rank {info.rank} of "
            f"{info.world_size} cannot go on ({cause})")
