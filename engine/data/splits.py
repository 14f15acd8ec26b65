"""The in-memory form every dataset loads into before it is wrapped in loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.data.split import split_indices
from engine.errors import DataError


@dataclass
class Splits:
    """Train, val and (optionally) test as uint8 (N, C, H, W) images with int64 labels.

    `val` selects epochs; `test` is held out from everything and only reported.
    `mean`/`std` are set when the dataset has standard values (CIFAR); otherwise
    they are computed from the train images.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


def carve(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: list[str],
    source: str,
) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(train, val, test) image/label pairs held out of one pool by class-stratified fractions."""
    parts = split_indices(
        labels.numpy(),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        class_names=class_names,
        source=source,
    )
    return tuple((images[torch.from_numpy(i)], labels[torch.from_numpy(i)]) for i in parts)


def no_test_fraction(test_fraction: float, source: str, own_test: str) -> None:
    """Datasets with their own test split refuse a carved one, so no split is silently ignored."""
    if test_fraction > 0:
        raise DataError(
            f"{source}: data.test_fraction={test_fraction}, but {source} has its own test split "
            f"({own_test}); remove data.test_fraction"
        )
