"""The detection recipe on real photo content: sparse training you can watch work, and distillation.

Per seed, one slimlab run (the detection environment: make setup-detect) on the photo set of
benchmarks/detect/photo_boxes.py: YOLOv8n at reduced width, train -> sparse (`s: auto`, the
target taken from the prune stage) -> prune 50% of the channels -> two finetunes from the same cut,
with the same epochs and settings: `finetune` (Ultralytics' loss alone) and `finetune-kd`
(`teacher: original`, the model before the prune: class-score KD, DFL box KD and channel-wise
distillation on the Detect head's inputs). Printed:

- per sparse epoch: s, the unpruned mAP50-95 and the pruned-at-target mAP50-95, and the monitor's
  cost as a share of the epoch;
- per seed and arm: mAP50-95 and mAP50, FLOPs removed;
- the teacher's mAP (the sparse output) against both finetunes: whether the plain finetune already
  passes the model that KD pulls the student toward;
- the training-batch time of the KD finetune over the plain one (teacher forward included; the
  two finetunes run back to back in one process, validation excluded).

The last line: `kd_gain_mAP50_95 <mean over seeds, in points>`.

    .venv-detect/bin/python benchmarks/detect/kd_figures.py [--seeds 0 1] [--work DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "detect"))


def preset(name: str, data_yaml: Path, runs: Path, seed: int, epochs: dict[str, int], width: float,
           size: int) -> dict:
    finetune = {"epochs": epochs["finetune"], "lr": 0.002, "warmup_epochs": 0}
    return {
        "name": name, "task": "detect",
        "model": {"arch": "ultralytics:yolov8n.yaml", "kwargs": {"width": width}},
        "data": {"dataset": "yolo", "path": str(data_yaml), "image_size": size, "augment": True},
        "training": {"epochs": epochs["train"], "batch_size": 16, "optimizer": "adamw", "lr": 0.004,
                     "warmup_epochs": 1, "weight_decay": 0.0005, "seed": seed, "device": "cpu", "log_every": 50},
        "output": {"runs_dir": str(runs)},
        "stages": [
            {"type": "train"},
            {"type": "sparse", "s": "auto", "training": {"epochs": epochs["sparse"], "warmup_epochs": 0}},
            {"type": "prune", "percent": 0.5},
            {"type": "finetune", "training": finetune},
            {"type": "finetune", "name": "finetune-kd", "start": "prune", "training": finetune,
             "teacher": "original", "features": [{"type": "cwd", "student": "detect", "teacher": "detect"}]},
        ],
    }


def epochs_of(run: Path, stage: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("stage") == stage and "mAP50_95" in r]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--sparse-epochs", type=int, default=12,
                   help="epochs of the sparse stage (36 closes the pruned-at-target gap on this set; README)")
    p.add_argument("--quick", action="store_true", help="a few epochs on a small set (checks the script)")
    a = p.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="kd_figures-"))
    work.mkdir(parents=True, exist_ok=True)
    from photo_boxes import write

    counts = (48, 16) if a.quick else (480, 120)
    epochs = {"train": 2, "sparse": 2, "finetune": 2} if a.quick else {"train": 40, "sparse": a.sparse_epochs,
                                                                        "finetune": 20}
    data_yaml = work / "data" / "data.yaml"
    if not data_yaml.exists():
        write(work / "data", a.size, *counts, seed=0)
    gains, ratios = [], []
    for seed in a.seeds:
        name = f"kd-s{seed}" + (f"-sparse{a.sparse_epochs}" if a.sparse_epochs != 12 else "")
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(preset(name, data_yaml, work / "runs", seed, epochs, a.width, a.size),
                                       sort_keys=False))
        run = work / "runs" / name
        status = run / "status.json"
        if not status.exists() or json.loads(status.read_text()).get("state") != "done":
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            cmd = [sys.executable, "-m", "engine", "--batch"] + (["--resume", str(run)] if run.exists() else [str(path)])
            subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        summary = json.loads((run / "summary.json").read_text())
        print(f"seed {seed}: sparse epochs (s, mAP50-95 unpruned, pruned at target, monitor share of epoch)")
        for r in epochs_of(run, "sparse"):
            share = r.get("monitor_time", 0.0) / max(1e-9, r.get("epoch_time", 0.0) + r.get("monitor_time", 0.0))
            print(f"  epoch {r['epoch'] + 1:2d}  s {r.get('s', 0):.3g}  {r['mAP50_95']:.4f}  "
                  f"{r.get('mAP50_95_pruned_at_target', float('nan')):.4f}  {share:.1%}")
        base = summary["train"]
        print(f"seed {seed}: {'stage':12s} mAP50-95  mAP50   Δ50-95  FLOPs removed")
        for stage in ("train", "sparse", "prune", "finetune", "finetune-kd"):
            r = summary[stage]
            removed = 1 - r["flops"] / base["flops"]
            print(f"  {stage:12s} {r['mAP50_95']:.4f}  {r['mAP50']:.4f}  {100 * (r['mAP50_95'] - base['mAP50_95']):+6.2f}"
                  f"  {removed:.1%}")
        gains.append(100 * (summary["finetune-kd"]["mAP50_95"] - summary["finetune"]["mAP50_95"]))
        # the teacher is `original`: the sparse stage's output, the model the prune cut
        teacher = summary["sparse"]["mAP50_95"]
        print(f"seed {seed}: teacher (the sparse stage's output) {teacher:.4f}; plain finetune "
              f"{100 * (summary['finetune']['mAP50_95'] - teacher):+.2f} points above it, KD finetune "
              f"{100 * (summary['finetune-kd']['mAP50_95'] - teacher):+.2f}")
        plain = statistics.median(r["train_time"] for r in epochs_of(run, "finetune"))
        kd = statistics.median(r["train_time"] for r in epochs_of(run, "finetune-kd"))
        ratios.append(kd / plain)
        print(f"seed {seed}: KD - plain finetune {gains[-1]:+.2f} points mAP50-95; "
              f"training time per epoch KD / plain {kd:.1f}s / {plain:.1f}s = {ratios[-1]:.2f}x")
    print(f"kd_step_time_ratio {statistics.median(ratios):.2f}")
    print(f"kd_gain_mAP50_95 {statistics.mean(gains):+.2f}")


if __name__ == "__main__":
    main()
