"""Helpers shared by test modules (pytest puts tests/ on sys.path, so `from helpers import ...`)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

# Small settings per built-in model with BatchNorm, so each forward/backward stays quick.
SMALL_SLIMMABLE: dict[str, dict[str, Any]] = {
    "vgg": {"width": 0.25},
    "resnet_cifar": {"width": 0.25},
    "mobilenetv2": {"width": 0.25},
    "c3net": {"width": 0.125, "depth": 0.33},
    "kd_teacher": {"bn": True},
}


class StopAfter:
    """A stop flag that turns on after `n` checks (the trainer checks once per optimizer step)."""

    def __init__(self, n: int):
        self.n, self.calls, self.signal_name = n, 0, "SIGTERM"

    @property
    def requested(self) -> bool:
        self.calls += 1
        return self.calls > self.n


def run_async(fn: Callable) -> Callable:
    """Run an async test on its own event loop (no asyncio plugin needed); fixtures pass through."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


async def wait_for(pilot: Any, condition: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> None:
    """Let the app run until `condition()` holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if condition():
            return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
