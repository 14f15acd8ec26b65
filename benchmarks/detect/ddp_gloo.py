"""A detection run under torchrun with 2 gloo ranks on the CPU against the same run in one process.

Both runs start from one checkpoint (YOLOv8n at 1/8 width whose BatchNorm gammas are spread, so the
prune's ranking is not decided by noise), on the same generated YOLO shapes, with the same global
batch: train -> sparse -> prune -> finetune. They run one after the other on the same machine,
side by side in one invocation. Printed: seconds per epoch of each training stage (Ultralytics'
training batches and validation, from metrics.jsonl) as the 2-rank / 1-process ratio, the final
mAP50-95 of both, and how far the two prune plans are apart (channels kept per group).

On 2 CPU cores the two ranks share the cores one process had (each with 1 torch thread, the 1-process
run with 2): the ratio says what DDP's machinery costs here, not what a second GPU gains.

Usage: .venv-detect/bin/python benchmarks/detect/ddp_gloo.py [--images 400] [--epochs 6] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def start_checkpoint(path: Path, classes: int, imgsz: int) -> None:
    import torch
    from torch import nn

    from engine import checkpoint
    from engine.detect.model import arch_of, build

    torch.manual_seed(0)
    model = build("ultralytics:yolov8n.yaml", classes, imgsz=imgsz, names=["circle", "square", "triangle"][:classes],
                  width=0.125)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.05
    checkpoint.save(path, model, arch_of(model, "yolov8n.yaml"))


def preset(tmp: Path, name: str, images: int, epochs: int, batch: int, threads: int) -> Path:
    later = {"epochs": max(1, epochs // 3)}  # sparse and finetune: a third of the baseline's epochs
    data = {
        "name": name, "task": "detect", "model": {"checkpoint": str(tmp / "start.pt")},
        "data": {"dataset": "yolo_shapes", "num_classes": 3, "train_size": images, "val_size": 100, "image_size": 64,
                 "augment": False},
        "training": {"epochs": epochs, "batch_size": batch, "optimizer": "adamw", "lr": 0.004, "log_every": 5,
                     "device": "cpu", "warmup_epochs": 0, "threads": threads},
        "stages": [{"type": "train"}, {"type": "sparse", "s": 1e-3, "training": later},
                   {"type": "prune", "percent": 0.3}, {"type": "finetune", "training": later}],
        "output": {"runs_dir": str(tmp / "runs")},
    }  # fmt: skip
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def epochs_of(run_dir: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "mAP50_95" in r and "epoch_time" in r]


def plan_gap(a: dict, b: dict) -> tuple[int, int, int, int]:
    """(channels kept by a, by b, summed |kept_a - kept_b| over the groups, channels kept by one plan only)."""
    ka, kb = [set(g["kept_idxs"]) for g in a["groups"]], [set(g["kept_idxs"]) for g in b["groups"]]
    return (sum(map(len, ka)), sum(map(len, kb)), sum(abs(len(x) - len(y)) for x, y in zip(ka, kb, strict=True)),
            sum(len(x ^ y) for x, y in zip(ka, kb, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=6, help="the baseline's; sparse and finetune a third")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        start_checkpoint(tmp / "start.pt", 3, 64)
        one = preset(tmp, "one", args.images, args.epochs, args.batch, threads=2)
        two = preset(tmp, "two", args.images, args.epochs, args.batch, threads=1)
        py = sys.executable
        wall_one = run([py, "-m", "engine", "--batch", str(one), "--plain"])
        wall_two = run([py, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                        "--master_port", str(free_port()), "-m", "engine", "--batch", str(two), "--plain"])
        a, b = tmp / "runs" / "one", tmp / "runs" / "two"
        ea, eb = epochs_of(a), epochs_of(b)
        sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
        print(f"detection, {args.images} train images at 64 px, global batch {args.batch}, {args.epochs} baseline "
              f"epochs, {max(1, args.epochs // 3)} sparse and finetune epochs (AdamW), yolov8n at 1/8 width")
        print(f"{'stage':10} {'1 process s/epoch':>18} {'2 gloo ranks s/epoch':>21} {'ratio':>6}")
        for stage in ("train", "sparse", "finetune"):
            ta = [r["epoch_time"] for r in ea if r["stage"] == stage]
            tb = [r["epoch_time"] for r in eb if r["stage"] == stage]
            ma, mb = sum(ta) / len(ta), sum(tb) / len(tb)
            print(f"{stage:10} {ma:18.2f} {mb:21.2f} {mb / ma:6.2f}")
        pa, pb = (json.loads((p / "plan.json").read_text()) for p in (a, b))
        kept_a, kept_b, gap, only = plan_gap(pa, pb)
        print(f"final mAP50-95 (finetune): 1 process {sa['finetune']['mAP50_95']:.4f}, "
              f"2 ranks {sb['finetune']['mAP50_95']:.4f}; mAP50 {sa['finetune']['mAP50']:.4f} / "
              f"{sb['finetune']['mAP50']:.4f}")
        print(f"prune plan: channels kept {kept_a} / {kept_b}, groups' kept counts differ by {gap} channels in all, "
              f"{only} channels kept by one plan only; "
              f"params {sa['prune']['params']} / {sb['prune']['params']}")
        print(f"whole run wall time: 1 process {wall_one:.1f} s, 2 ranks {wall_two:.1f} s "
              f"(ratio {wall_two / wall_one:.2f}, start-up included)")


if __name__ == "__main__":
    main()
