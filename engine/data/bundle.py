"""What `engine.data.build` hands to the trainer: the loaders and the facts about the data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.data.loader import TensorLoader
    from engine.data.stream import StreamLoader


@dataclass
class DataBundle:
    """`val` selects epochs; `test` (None when the data has no test split) is held out
    from every choice and only reported."""

    train: TensorLoader | StreamLoader
    val: TensorLoader | StreamLoader
    num_classes: int
    in_channels: int
    image_size: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test: TensorLoader | StreamLoader | None = None
    notes: list[str] = field(default_factory=list)  # how the data was built, for the run's log
