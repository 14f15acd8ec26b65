"""What `engine.data.build` hands to the trainer: the loaders and the facts about the data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.data.loader import TensorLoader


@dataclass
class DataBundle:
    """`val` selects epochs; `test` (None when the data has no test split) is held out
    from every choice and only reported."""

    train: TensorLoader
    val: TensorLoader
    num_classes: int
    in_channels: int
    image_size: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test: TensorLoader | None = None
