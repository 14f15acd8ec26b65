"""The in-memory form every dataset loads into before it is wrapped in loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Splits:
    """Train and val as uint8 (N, C, H, W) images with int64 labels.

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
