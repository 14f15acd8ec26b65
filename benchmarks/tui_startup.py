"""Time from process start to the workbench's first painted frame, and proof torch waited.

Each run starts a fresh interpreter that builds the app with `make_app()` (as the console
script does) in a folder holding two checkpoints, runs it headless, and exits right after
the first refresh. The clock is CLOCK_MONOTONIC on both sides (time.monotonic), so the figure
includes interpreter start-up and every import. For scale, the same is timed for a bare
`import textual.app`. Target: at most 0.7 s.
Last line: `tui_startup_s: X` (median of RUNS).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 7
TARGET_S = 0.7

FIRST_FRAME = """
import sys, time
from tui.app import make_app

app = make_app()

def painted():
    print("PAINTED", repr(time.monotonic()), "torch" in sys.modules, flush=True)
    app.exit()

app.call_after_refresh(painted)
app.run(headless=True, size=(100, 30))
"""

BARE = """
import time
import textual.app
print("PAINTED", repr(time.monotonic()), False, flush=True)
"""


def one(code: str, cwd: Path) -> tuple[float, bool]:
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TERM": "xterm-256color"})
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PAINTED")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"the app did not paint:\n{out.stdout}\n{out.stderr}")
    _, stamp, torch_loaded = line.split()
    return float(stamp) - start, torch_loaded == "True"


def make_folder(folder: Path) -> None:
    from engine import checkpoint

    arch = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})
    for name in ("a/model.pt", "b/epoch-3.pt"):
        path = folder / name
        path.parent.mkdir(parents=True)
        checkpoint.save(path, checkpoint.build_model(arch), arch, meta={"epoch": 1})


def main() -> None:
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_folder(folder)
        one(FIRST_FRAME, folder)  # warm the file cache and .pyc files
        app_runs, bare_runs, torch_seen = [], [], []
        for _ in range(RUNS):
            seconds, torch_loaded = one(FIRST_FRAME, folder)
            app_runs.append(seconds)
            torch_seen.append(torch_loaded)
            bare_runs.append(one(BARE, folder)[0])
    median = statistics.median(app_runs)
    bare = statistics.median(bare_runs)
    print(f"first frame: median {median:.3f} s, min {min(app_runs):.3f} s, max {max(app_runs):.3f} s ({RUNS} runs)")
    print(f"python + import textual.app alone: median {bare:.3f} s")
    print(f"torch imported before the first frame: {'yes' if any(torch_seen) else 'no'} in {RUNS} runs")
    print(f"target {TARGET_S} s: {'met' if median <= TARGET_S else 'missed'}")
    assert not any(torch_seen), "torch was imported before the first frame"
    print(f"tui_startup_s: {median:.3f}")


if __name__ == "__main__":
    main()
