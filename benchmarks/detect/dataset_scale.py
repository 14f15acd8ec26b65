"""Detection data at scale: slimlab's dataset check and a training's peak memory at 10k vs 100k images.

Writes YOLO datasets of N small images (the same 32x32 PNG bytes in every file: the check never
decodes an image, and Ultralytics' label cache reads only headers) with two boxes each, then, each
in a fresh process:

- `check`: engine.detect.data.load (folders, every label line, class ids and coordinates):
  seconds and the process's peak RSS;
- `train`: 30 training batches of a 1/8-width YOLOv8 at 32 px inside slimlab's Ultralytics trainer
  (the dataset built by Ultralytics, its label cache included), then stop: peak RSS.

Needs the detection environment (make setup-detect). Last line: `dataset_check_s_100k <seconds>`.

    .venv-detect/bin/python benchmarks/detect/dataset_scale.py [--sizes 10000 100000] [--work DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write(root: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    yaml_path = root / "data.yaml"
    if yaml_path.exists():
        return yaml_path
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")).save(buf, "PNG")
    png = buf.getvalue()
    for split, m in (("train", n), ("val", max(16, n // 100))):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(m):
            (root / "images" / split / f"{i:06d}.png").write_bytes(png)
            (root / "labels" / split / f"{i:06d}.txt").write_text(f"{i % 3} 0.5 0.5 0.25 0.25\n1 0.3 0.3 0.1 0.2\n")
    yaml_path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: [a, b, c]\n")
    return yaml_path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check(yaml_path: str) -> dict:
    from engine.detect.data import load

    t0 = time.perf_counter()
    data = load(yaml_path)
    return {"seconds": time.perf_counter() - t0, "images": data.splits["train"].images,
            "objects": data.splits["train"].objects, "peak_rss_mib": peak_rss_mib()}


def train(yaml_path: str, work: str) -> dict:
    import torch

    from engine.config import TrainingSpec
    from engine.detect import data as ydata
    from engine.detect.model import build, quiet
    from engine.detect.trainer import Session, make_trainer, trainer_args
    from engine.errors import Cancelled
    from engine.runs import RunWriter
    from engine.train import NullReporter

    torch.set_num_threads(1)
    data = ydata.load(yaml_path)
    after_check = peak_rss_mib()
    model = build("ultralytics:yolov8n.yaml", data.nc, imgsz=32, names=data.names, width=0.125)
    run = Path(work)
    (run / "weights").mkdir(parents=True, exist_ok=True)
    cfg = TrainingSpec(epochs=1, batch_size=32, lr=0.01, warmup_epochs=0, device="cpu", log_every=10_000)

    class StopAt:  # the trainer checks once per batch: stop after 30
        calls, signal_name = 0, "stop"

        @property
        def requested(self) -> bool:
            self.calls += 1
            return self.calls > 30

    session = Session(stage="train", writer=RunWriter(run), arch={}, plan=None, meta={}, stop=StopAt(),
                      reporter=NullReporter(), log_every=10_000)
    session.save_last = session.save_best = lambda *a, **k: None
    args = trainer_args(cfg, data=data, imgsz=32, device=torch.device("cpu"), save_dir=run / "u" / "t",
                        stage="train", augment=False, workers=2)
    trainer = make_trainer(model, data, args, session)
    t0 = time.perf_counter()
    try:
        with quiet():
            trainer.train()
    except Cancelled:
        pass
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib(), "after_check_mib": after_check}


def in_child(what: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", what, *args], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        what, *rest = a.child
        print(json.dumps(check(*rest) if what == "check" else train(*rest)))
        return
    work = a.work or Path(tempfile.mkdtemp(prefix="dataset_scale-"))
    rows = {}
    for n in a.sizes:
        yaml_path = write(work / f"d{n}", n)
        rows[n] = {"check": in_child("check", str(yaml_path)), "train": in_child("train", str(yaml_path),
                                                                                  str(work / f"run{n}"))}
    print(f"{'images':>8} {'check s':>8} {'check RSS MiB':>14} {'train RSS MiB':>14} {'train s (30 batches)':>21}")
    for n, r in rows.items():
        print(f"{n:8d} {r['check']['seconds']:8.2f} {r['check']['peak_rss_mib']:14.0f} "
              f"{r['train']['peak_rss_mib']:14.0f} {r['train']['seconds']:21.1f}")
    small, big = min(rows), max(rows)
    print(f"train_peak_rss_ratio_{big // 1000}k_vs_{small // 1000}k {rows[big]['train']['peak_rss_mib'] / rows[small]['train']['peak_rss_mib']:.2f}")
    print(f"dataset_check_s_{big // 1000}k {rows[big]['check']['seconds']:.2f}")


if __name__ == "__main__":
    main()
