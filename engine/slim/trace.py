"""Dependency-graph tracing: torch_pruning's DepGraph built without side effects on the model."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch
import torch_pruning as tp
from torch import nn

from engine.errors import PruneError


def resolve_input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The (C, H, W) shape used for tracing: given, else the model's `input_size`."""
    shape = input_shape if input_shape is not None else getattr(model, "input_size", None)
    if shape is None:
        raise PruneError(
            f"{type(model).__name__} has no `input_size` attribute, so its input shape is unknown: "
            "pass input_shape=(C, H, W), e.g. (3, 32, 32)"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s <= 0 for s in shape):
        raise PruneError(f"input_shape {shape} is not a valid (C, H, W) shape")
    return shape


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[None]:
    """Eval mode (so tracing never moves BatchNorm running stats) and grad enabled, restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training


def build_graph(model: nn.Module, input_shape: Sequence[int]) -> tp.DependencyGraph:
    """Trace `model` on one example of `input_shape` into a torch_pruning DependencyGraph."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    # An input that requires grad gives every op a grad_fn, even when parameters are frozen.
    example = torch.randn(1, *input_shape, device=device, requires_grad=True)
    with traceable(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, verbose=False
            )
        except PruneError:
            raise
        except Exception as exc:  # tracing runs arbitrary user forward code
            raise PruneError(
                f"could not trace {type(model).__name__} on an input of shape (1, {', '.join(map(str, input_shape))}): "
                f"{type(exc).__name__}: {exc}. Check input_shape matches what the model expects"
            ) from exc
