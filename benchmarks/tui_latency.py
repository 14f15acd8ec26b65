"""Inspector key latency on a model with 100k BatchNorm channels: key press to refreshed screen.

The model is a user module (built through the engine's `module:Class` arch, like any user
model): BRANCHES parallel conv-BN-ReLU branches of WIDTH channels, concatenated, pooled and
classified, 100,000 prunable channels in 100 coupled groups. Its checkpoint is opened in the
real app (headless, 100x30, under Pilot); after the load, each sample is one threshold key
(→ or ←, alternating) posted as a key event and timed until the first frame rendered after
its handler ran is handed to the terminal driver: key dispatch, the engine's
`resolve_plan` (the plan rule, or a FLOPs/params target), the table, summary and histogram updates, and the render of that frame. For scale,
`resolve_plan` alone is timed on the same inputs. Target: at most 100 ms.
Last line: `tui_key_latency_ms: X` (median of PRESSES).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from textual import events
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # so the engine can import this module's class

from engine import checkpoint  # noqa: E402
from engine.trust import Trust  # noqa: E402
from tui.app import make_app  # noqa: E402

BRANCHES = 100
WIDTH = 1000
PRESSES = 30
TARGET_MS = 100.0
SIZE = (100, 30)


class WideBranches(nn.Module):
    """Parallel conv-BN-ReLU branches, concatenated: many BatchNorm channels, few parameters."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, branches: int = BRANCHES, width: int = WIDTH):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            for _ in range(branches)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(branches * width, num_classes)
        self.input_size = (in_channels, 8, 8)
        self.default_ignore = ["fc"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([b(x) for b in self.branches], dim=1)
        return self.fc(self.pool(y).flatten(1))


def make_checkpoint(path: Path) -> None:
    arch = checkpoint.arch_dict(f"{Path(__file__).stem}:WideBranches", 10, 3, {})
    torch.manual_seed(0)
    model = checkpoint.build_model(arch, trust=Trust().allowing(arch["name"]))  # our own class, named here
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.tensor(rng.lognormal(-3, 1.5, m.weight.numel()), dtype=torch.float32))
    checkpoint.save(path, model, arch, meta={"epoch": 0})


async def measure(path: Path) -> tuple[list[float], list[float], int]:
    app = make_app(None)
    async with app.run_test(size=SIZE) as pilot:
        # the benchmark names its own module:Class, as a user opening their model says yes to it
        app.open_checkpoint(path, trust=Trust().allowing(f"{Path(__file__).stem}:WideBranches"))
        await pilot.pause()
        screen = app.screen
        deadline = time.monotonic() + 600
        while not screen.ready:
            if time.monotonic() > deadline:
                raise SystemExit("the model did not load in 10 minutes")
            await pilot.pause(0.1)
        await pilot.pause(0.5)
        channels = screen.inputs.n_channels
        from engine.slim.target import resolve_plan  # what the inspector calls per key

        plan_only = []
        for i in range(PRESSES):
            t0 = time.perf_counter()
            resolve_plan(screen.inputs, **screen.settings.with_percent(0.3 + 0.01 * (i % 2)).options())
            plan_only.append((time.perf_counter() - t0) * 1000)

        # Every frame the app hands to the terminal driver, stamped: a press is done when the first
        # frame rendered after its handler ran has been handed over.
        frames: list[float] = []
        display = app._display

        def stamped(screen_: object, update: object) -> None:
            display(screen_, update)
            frames.append(time.perf_counter())

        app._display = stamped
        samples = []
        for i in range(PRESSES + 2):
            before = screen.plan
            t0 = time.perf_counter()
            app.post_message(events.Key("right" if i % 2 == 0 else "left", None))
            while screen.plan is before:
                if time.perf_counter() - t0 > 10:
                    raise SystemExit("the key press did not produce a new plan")
                await asyncio.sleep(0)
            handled = time.perf_counter()
            while not frames or frames[-1] < handled:
                await asyncio.sleep(0.0005)
            elapsed = (frames[-1] - t0) * 1000
            if i >= 2:  # the first presses warm plotext and the table's caches
                samples.append(elapsed)
            await pilot.pause(0.05)
        return samples, plan_only, channels


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wide.pt"
        make_checkpoint(path)
        t0 = time.perf_counter()
        samples, plan_only, channels = asyncio.run(measure(path))
        total = time.perf_counter() - t0
    median = statistics.median(samples)
    print(f"model: {channels} BatchNorm channels in {BRANCHES} groups (+ the classifier); app run incl. load {total:.1f} s")
    print(f"resolve_plan alone: median {statistics.median(plan_only):.1f} ms")
    print(f"key press to refreshed screen: median {median:.1f} ms, p90 "
          f"{statistics.quantiles(samples, n=10)[-1]:.1f} ms, max {max(samples):.1f} ms ({len(samples)} presses)")
    print(f"target {TARGET_MS:.0f} ms: {'met' if median <= TARGET_MS else 'missed'}")
    print(f"tui_key_latency_ms: {median:.1f}")


if __name__ == "__main__":
    main()
