"""Model size and speed: parameters, FLOPs (torch.utils.flop_counter's formulas), latency, bytes on disk."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


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


class FlopCount(TorchDispatchMode):
    """FLOPs of the ops run inside it, by torch's own formulas (torch.utils.flop_counter), in total
    and per module name (a module's figure includes what it calls); `calls` lists every op counted.

    The ops FlopCounterMode has formulas for, counted as the channel trace counts them (an op without
    a formula counts nothing; FlopCounterMode would try to decompose it, which for vision models'
    ops finds nothing to count), without importing torch._dynamo on first use (seconds: torch wraps
    a dispatch mode for Dynamo unless told not to, and nothing here is compiled).
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.total = 0
        self.by_module: dict[str, int] = {}
        self.calls: list[tuple[str, int, tuple[str, ...]]] = []  # (op, FLOPs, module names it ran in)
        self.names = {m: n for n, m in model.named_modules() if n}
        self.stack: list[str] = []

    @contextlib.contextmanager
    def counting(self) -> Iterator[FlopCount]:
        """Count inside: the mode, and the module hooks that tell which modules an op ran in."""
        hooks = [
            nn.modules.module.register_module_forward_pre_hook(self._enter_module),
            nn.modules.module.register_module_forward_hook(self._leave_module),
        ]
        try:
            with self:
                yield self
        finally:
            for h in hooks:
                h.remove()

    def _enter_module(self, module: nn.Module, args: Any) -> None:
        self.stack.append(self.names.get(module, ""))

    def _leave_module(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.stack:
            self.stack.pop()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        formula = flop_registry.get(func._overloadpacket)
        out = func(*args, **kwargs)
        if formula is not None:
            n = int(formula(*args, **kwargs, out_val=out))
            names = tuple(dict.fromkeys(n for n in self.stack if n))
            self.total += n
            self.calls.append((str(func._overloadpacket), n, names))
            for name in names:
                self.by_module[name] = self.by_module.get(name, 0) + n
        return out


def flop_count(model: nn.Module, input_shape: Sequence[int], mode: Callable[[nn.Module], Any] | None = None) -> FlopCount:
    """The FlopCount of one forward at batch 1, in eval mode (or in the context `mode(model)`)."""
    x = torch.randn(1, *input_shape, device=_device_of(model))
    counter = FlopCount(model)
    with (mode or _EvalMode)(model), torch.no_grad(), counter.counting():
        model(x)
    return counter


def flop_counts(model: nn.Module, input_shape: Sequence[int], mode: Callable[[nn.Module], Any] | None = None) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward at batch 1: the total and each module's (by name, with what it calls)."""
    counter = flop_count(model, input_shape, mode)
    return counter.total, counter.by_module


def scaled_flop_counts(
    model: nn.Module, input_shape: Sequence[int], multiple: int, mode: Callable[[nn.Module], Any] | None = None,
) -> tuple[int, dict[str, int]] | None:
    """`flop_counts` at `input_shape` (C, H, W), for a model whose tensors all scale with an input
    whose sides are multiples of `multiple`, from forwards at small multiples; None if not exact.

    There every op's FLOPs are c * h**a * w**b in the input sides h, w: counts at (2m, 2m), (4m, 2m)
    and (2m, 4m) give a and b per op, (4m, 4m) checks them, and the figures at H x W follow exactly.
    None (count at the size itself) when the ops differ between sizes or a count does not fit.
    """
    c, big_h, big_w = (int(s) for s in input_shape)
    m = int(multiple)
    if big_h % m or big_w % m:
        return None
    h = w = 2 * m
    runs = [flop_count(model, (c, hh, ww), mode).calls for hh, ww in ((h, w), (2 * h, w), (h, 2 * w), (2 * h, 2 * w))]
    if any(len(r) != len(runs[0]) for r in runs):
        return None
    total = 0
    by_module: dict[str, int] = {}
    for (op, f0, names), (op1, f1, _), (op2, f2, _), (op3, f3, _) in zip(*runs, strict=True):
        a, b = _exponent(f0, f1), _exponent(f0, f2)
        if op1 != op or op2 != op or op3 != op or a is None or b is None or f0 * 2 ** (a + b) != f3:
            return None
        f = Fraction(f0) * Fraction(big_h, h) ** a * Fraction(big_w, w) ** b
        if f.denominator != 1:
            return None
        total += int(f)
        for name in names:
            by_module[name] = by_module.get(name, 0) + int(f)
    return total, by_module


def _exponent(f0: int, f1: int) -> int | None:
    """p with f1 == f0 * 2**p (p >= 0), else None."""
    if f0 == 0:
        return 0 if f1 == 0 else None
    p = 0
    while f0 * 2**p < f1:
        p += 1
    return p if f0 * 2**p == f1 else None


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass at batch 1 in eval mode, by torch's formulas (a multiply-add = 2)."""
    return flop_counts(model, input_shape)[0]


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
