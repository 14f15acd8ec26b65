"""Model registry: build a CNN by name, list the built-ins, describe one.

These wrappers import the torch-backed registry only when a model is built,
so `import engine.models` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.models import catalog

if TYPE_CHECKING:
    import torch

    from engine.trust import Trust

__all__ = ["build", "build_from", "describe", "names"]


def build(arch: str, num_classes: int, in_channels: int = 3, *, trust: Trust | None = None, **kwargs: Any) -> torch.nn.Module:
    """Build `arch` (registry name, `torchvision:<name>` or `package.module:Class`).

    A `package.module:Class` is built only when `trust` permits it: the caller says the user
    named it (see engine/trust.py). Kwargs read from a file go through `build_from`."""
    from engine.models import registry

    return registry.build_from(arch, num_classes, in_channels, kwargs, trust=trust)


def build_from(
    arch: str, num_classes: int, in_channels: int, kwargs: dict[str, Any], *, trust: Trust | None = None,
    source: str | None = None,
) -> torch.nn.Module:
    """`build` with the constructor kwargs as a dict; `source` says where the arch was read."""
    from engine.models import registry

    return registry.build_from(arch, num_classes, in_channels, kwargs, trust=trust, source=source)


def names() -> list[str]:
    """Built-in registry names, sorted."""
    return catalog.names()


def describe(arch: str) -> str:
    """One-line description of `arch`, for help text and the TUI."""
    return catalog.describe(arch)
