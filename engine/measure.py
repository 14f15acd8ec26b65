"""Model size and speed: parameters, FLOPs (torch.utils.flop_counter), latency, bytes on disk."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm running stats excluded)."""
    return int(sum(p.numel() for p in model.parameters()))


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


class _EvalMode:
    """Eval mode for the duration of a measurement, each module's mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes: dict[nn.Module, bool] = {}

    def __enter__(self) -> None:
        self.modes = {m: m.training for m in self.model.modules()}
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for m, training in self.modes.items():
            m.training = training


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass at batch 1 in eval mode, counted by FlopCounterMode (a multiply-add = 2)."""
    x = torch.randn(1, *input_shape, device=_device_of(model))
    counter = FlopCounterMode(display=False)
    with _EvalMode(model), torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())


def latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch: int,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    runs: int = 10,
) -> float:
    """Median wall time of one eval forward of `batch` inputs on `device`, in milliseconds.

    The model is moved to `device` (it stays there). On CUDA every run is synchronised so the
    time covers the kernels, not just their launch.
    """
    if runs < 1 or warmup < 0 or batch < 1:
        raise ValueError(
            f"latency_ms needs runs >= 1, warmup >= 0, batch >= 1 (got {runs}, {warmup}, {batch})"
        )
    device = torch.device(device)
    model.to(device)
    x = torch.randn(batch, *input_shape, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with _EvalMode(model), torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync()
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def size_on_disk(path: str | os.PathLike) -> int:
    """Bytes of a file on disk."""
    return os.path.getsize(path)


def profile(
    model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu"
) -> dict[str, float]:
    """params, flops, and median latency at batch 1 and 32 on `device`."""
    return {
        "params": count_params(model),
        "flops": count_flops(model, input_shape),
        "latency_b1_ms": latency_ms(model, input_shape, 1, device),
        "latency_b32_ms": latency_ms(model, input_shape, 32, device),
    }
