"""Datasets and batch loaders: splits held in memory as uint8 tensors, or image folders
streamed from disk by worker processes (`data.cache`).

Importing this package stays cheap: torch and the dataset modules load inside `build`.
"""

from __future__ import annotations

from typing import Any

from engine.data.bundle import DataBundle

__all__ = ["DataBundle", "build", "names"]


def build(
    spec: Any,
    *,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    device: Any = None,
) -> DataBundle:
    """Load the dataset `spec` names and wrap its splits in train, val (and test) loaders.

    `spec` is a preset's data section (engine.config.DataSpec). `spec.seed` fixes the data
    itself (generated shapes, the held-out split); `seed` fixes the order and augmentation of
    the batches, so a run's seed can change without changing its data. On a CUDA `device` streamed batches
    are pinned for asynchronous copies.
    """
    from engine.data.registry import build as _build

    return _build(
        spec,
        batch_size=batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
        device=device,
    )


def names() -> list[str]:
    """The built-in dataset names; `torchvision:<Name>` is accepted as well."""
    from engine.data.registry import NAMES

    return list(NAMES)
