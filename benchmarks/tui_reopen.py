"""Reopening a checkpoint the inspector already opened, against opening it the first time.

The model is the 100k-channel one of tui_latency.py (100 branches of 1000 BatchNorm channels).
In the real app (headless, 80x24, under Pilot), a small checkpoint is opened first so torch and
the engine are imported; then, side by side in one run, the big checkpoint is opened (read,
rebuilt, traced), another file is opened, and the big one is opened again. Each figure is the
time from `open_checkpoint` until the inspector shows the plan. The second open finds the model
and its traced plan inputs in the cache (keyed by the file's size and modification time).
Last line: `tui_reopen_ms: X` (median of ROUNDS reopens).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the engine imports the model class from here

from tui_latency import make_checkpoint  # noqa: E402

from engine import checkpoint  # noqa: E402
from engine.trust import Trust  # noqa: E402
from tui.app import make_app  # noqa: E402

ROUNDS = 3
SIZE = (80, 24)
ARCH = "tui_latency:WideBranches"


def small_checkpoint(path: Path) -> None:
    arch = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})
    checkpoint.save(path, checkpoint.build_model(arch), arch, meta={"epoch": 0})


async def measure(big: Path, small: Path, other: Path) -> tuple[float, list[float], int]:
    app = make_app(None)
    trust = Trust().allowing(ARCH)  # the benchmark names the class itself

    async with app.run_test(size=SIZE) as pilot:
        screen = app.get_screen("inspector")

        async def opened(path: Path) -> float:
            t0 = time.perf_counter()
            app.open_checkpoint(path, trust=trust)
            while not (screen.ready and screen.path == path):
                if time.perf_counter() - t0 > 900:
                    raise SystemExit(f"{path.name} did not open in 15 minutes")
                await pilot.pause(0.01)
            return time.perf_counter() - t0

        await opened(small)  # torch, the engine and the screen are loaded from here on
        first = await opened(big)
        reopens = []
        for _ in range(ROUNDS):
            await opened(other)
            reopens.append(await opened(big))
        return first, reopens, screen.inputs.n_channels


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        big, small, other = Path(tmp) / "wide.pt", Path(tmp) / "small.pt", Path(tmp) / "other.pt"
        make_checkpoint(big)
        small_checkpoint(small)
        small_checkpoint(other)
        first, reopens, channels = asyncio.run(measure(big, small, other))
    reopen = statistics.median(reopens)
    print(f"model: {channels} BatchNorm channels ({big.name})")
    print(f"first open (read, rebuild, trace, first plan): {first:.2f} s")
    print(f"reopen from the cache: median {1000 * reopen:.0f} ms, max {1000 * max(reopens):.0f} ms ({ROUNDS} reopens)")
    print(f"reopen is {first / reopen:.0f}x faster than the first open")
    print(f"tui_reopen_ms: {1000 * reopen:.0f}")


if __name__ == "__main__":
    main()
