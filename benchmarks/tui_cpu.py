"""CPU the workbench spends watching a live run on the monitor screen (target: <= 15% of one core).

A separate process writes a run directory the way a training run does (metrics lines at ~20/s,
an epoch line with accuracy and gamma figures every 2 s, log lines, status heartbeats), or with
--engine a real tiny engine run. The app runs headless with the monitor open on that run; after
a warm-up, the app process's CPU time (all its threads: UI loop and file-reading workers) is
divided by the wall time of the measured window.

    python benchmarks/tui_cpu.py [--seconds 10] [--rate 20] [--engine]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WRITER = textwrap.dedent("""
    import math, sys, time
    from pathlib import Path
    from engine.runs import RunWriter

    path, rate, seconds = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    w = RunWriter(path)
    w.status(state="running", preset="bench", stages=["sparse"], completed=[], stage="sparse",
             stage_index=0, progress=0.0, started=time.time())
    w.start_heartbeat()
    start, step, epoch, next_epoch, next_log = time.time(), 0, 0, 2.0, 1.0
    while (now := time.time() - start) < seconds:
        step += 1
        w.metrics({"stage": "sparse", "epoch": epoch, "step": step, "loss": 2 * math.exp(-step / 300) + 0.1,
                   "lr": 0.1 * (1 + math.cos(math.pi * now / seconds)) / 2, "rss": 400 + step % 50})
        if now >= next_epoch:
            w.metrics({"stage": "sparse", "epoch": epoch, "step": step, "loss": 1.0, "val_loss": 1.1,
                       "accuracy": min(0.99, 0.3 + 0.05 * epoch), "epoch_time": 2.0,
                       "gamma_lt_1e-2": min(1.0, 0.05 * epoch), "gamma_lt_1e-3": min(1.0, 0.02 * epoch),
                       "rss": 420.0})
            epoch, next_epoch = epoch + 1, next_epoch + 2.0
        if now >= next_log:
            w.log(f"step {step} loss {2 * math.exp(-step / 300) + 0.1:.4f}")
            w.status(progress=now / seconds)
            next_log += 1.0
        time.sleep(1.0 / rate)
    w.status(state="done", progress=1.0, ended=time.time())
    w.stop_heartbeat()
""")

ENGINE_PRESET = """\
name: bench
model: {arch: vgg, kwargs: {depth: 11, width: 0.125}}
data: {dataset: shapes, num_classes: 4, train_size: 2048, val_size: 64}
training: {epochs: 20, batch_size: 16, lr: 0.05, log_every: 1, device: cpu}
stages: [{type: sparse, s: 0.0001}]
"""


def start_writer(runs_dir: Path, rate: float, seconds: float, engine: bool) -> tuple[Path, subprocess.Popen]:
    from engine import config, runs
    from engine.cli import prepare_run_dir

    path = runs.create_run_dir(runs_dir, "bench")
    if engine:
        preset = runs_dir / "bench.yaml"
        preset.write_text(ENGINE_PRESET)
        prepare_run_dir(path, config.load_preset(preset))
        cmd = [sys.executable, "-m", "engine", "run", str(path), "--plain"]
    else:
        cmd = [sys.executable, "-c", WRITER, str(path), str(rate), str(seconds)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    return path, proc


async def measure(runs_dir: Path, path: Path, seconds: float, warmup: float) -> dict[str, float]:
    from tui.app import make_app
    from tui.screens.monitor import MonitorScreen
    from tui.widgets.plots import MetricPlot

    app = make_app(runs_dir=runs_dir, presets_dirs=[])
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_run(path)
        deadline = time.monotonic() + 60
        while not (isinstance(app.screen, MonitorScreen) and app.screen.series.lines > 0):
            assert time.monotonic() < deadline, "the monitor never showed the run's metrics"
            await pilot.pause(0.1)
        screen: MonitorScreen = app.screen
        await pilot.pause(warmup)
        plot = screen.query_one("#plot-loss", MetricPlot)
        lines0, builds0 = screen.series.lines, plot.builds
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        return {
            "cpu_s": cpu, "wall_s": wall, "cpu_pct": 100.0 * cpu / wall,
            "lines": screen.series.lines - lines0, "plot_builds": plot.builds - builds0,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measured window (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds after the first metrics before measuring")
    p.add_argument("--rate", type=float, default=20.0, help="metrics lines per second from the writer")
    p.add_argument("--engine", action="store_true", help="watch a real tiny engine run instead of the writer")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = Path(tmp) / "runs"
        run_for = args.seconds + args.warmup + 20.0
        path, proc = start_writer(runs_dir, args.rate, run_for, args.engine)
        try:
            result = asyncio.run(measure(runs_dir, path, args.seconds, args.warmup))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    source = "engine run" if args.engine else f"writer at {args.rate:g} lines/s"
    print(f"source: {source}")
    print(f"measured: {result['wall_s']:.1f} s wall, {result['cpu_s']:.2f} s CPU in the app process")
    print(f"metrics lines read: {result['lines']}, loss plot rebuilt {result['plot_builds']} times")
    print(f"tui_monitor_cpu_pct: {result['cpu_pct']:.1f}")


if __name__ == "__main__":
    main()
