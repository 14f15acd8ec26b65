"""Model registry: build a CNN by name, list the built-ins, describe one.

These wrappers import the torch-backed registry only when a model is built,
so `import engine.models` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.models import catalog

if TYPE_CHECKING:
    import torch

__all__ = ["build", "describe", "names"]


def build(arch: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> torch.nn.Module:
    """Build `arch` (registry name, `torchvision:<name>` or `package.module:Class`)."""
    from engine.models import registry

    return registry.build(arch, num_classes, in_channels, **kwargs)


def names() -> list[str]:
    """Built-in registry names, sorted."""
    return catalog.names()


def describe(arch: str) -> str:
    """One-line description of `arch`, for help text and the TUI."""
    return catalog.describe(arch)
