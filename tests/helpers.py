"""Helpers shared by test modules (pytest puts tests/ on sys.path, so `from helpers import ...`)."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
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


def make_sparse_checkpoint(path: Any, width: float = 0.25, seed: int = 0) -> Any:
    """A VGG-11 whose BatchNorm gammas look sparse-trained, like the demo's `sparse.pt`: most
    channels spread over 1e-7..3e-3, some between 3e-3 and 0.024, the rest 0.03 to 0.74, so the
    64%-73% cuts fall at thresholds of about 0.006-0.024. Fixed by `seed`."""
    from pathlib import Path

    import numpy as np
    import torch

    from engine import checkpoint

    arch = checkpoint.arch_dict("vgg", 6, 3, {"depth": 11, "width": width})
    torch.manual_seed(seed)
    model = checkpoint.build_model(arch)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.weight.numel()
                values = sparse_gammas(n, rng) * np.where(rng.random(n) < 0.5, 1, -1)
                m.weight.copy_(torch.tensor(values, dtype=torch.float32))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, model, arch, meta={"epoch": 4, "stage": "sparse",
                                            "metrics": {"accuracy": 0.997, "val_loss": 0.11, "epoch": 4}})
    return path


def sparse_gammas(n: int, rng: Any) -> Any:
    """|gamma| values as after sparse training (see make_sparse_checkpoint), from a numpy Generator."""
    import numpy as np

    kind = rng.random(n)
    return np.where(kind < 0.6, 10.0 ** rng.uniform(-7, np.log10(3e-3), n),
                    np.where(kind < 0.76, rng.uniform(3e-3, 0.024, n), rng.uniform(0.03, 0.74, n)))


def make_images(root: Any, classes: int, per_class: int, *, seed: int = 0, size=(14, 11)) -> None:
    """Noise images (PNG and JPEG) so every sample and every augmentation shows in the pixels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"{i:04d}{'.png' if i % 2 else '.jpg'}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> subprocess.Popen:
    """`torchrun --nproc_per_node 2 -m engine --batch ARGS` on this machine (gloo), its output piped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "engine", "--batch", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run_preset(preset: Path, runs_dir: Path, name: str) -> tuple[Path, str]:
    """A preset run to the end in a new run directory as `slimlab --batch --plain` runs it: the run's
    path and what it printed, the final table included."""
    import io

    from engine.cli import prepare_run_dir, show_summary
    from engine.config import load_preset
    from engine.pipeline import Pipeline
    from engine.progress import PlainReporter
    from engine.runs import create_run_dir

    spec = load_preset(preset)
    path = create_run_dir(runs_dir, name)
    prepare_run_dir(path, spec)
    out = io.StringIO()
    reporter = PlainReporter(out)
    Pipeline(spec, path, reporter=reporter).run()
    show_summary(reporter, path)
    return path, out.getvalue()
