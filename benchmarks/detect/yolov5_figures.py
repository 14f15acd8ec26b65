"""The YOLOv5-repository family on real photo content: train -> sparse -> prune 50% -> finetune -> export.

Two slimlab runs (the detection environment: make setup-detect) on the photo set of
benchmarks/detect/photo_boxes.py:
- `yaml`: yolov5s from the package's yaml at reduced width (`--width`, default 0.25), train ->
  sparse (`s: auto`, target from the prune stage) -> prune 50% of the channels -> finetune -> export;
- `checkpoint`: the first run's trained model written as the YOLOv5 repository saves a best.pt
  (`slimlab export --format yolov5`: a pickle of the repository's classes, fp16), read back with
  --trust, then sparse -> prune 50% -> finetune -> export with the same settings.
Printed per run and stage: mAP50-95, mAP50, params, FLOPs, latency at batch 1 (PyTorch for the
models, onnxruntime for the ONNX files). Then the validator check: the finetuned model's mAP by
Ultralytics' validator (what slimlab reports) and by the repository's own val.py code
(engine/detect/yolov5/repository_metrics.py), on the same letterboxed val batches.

    .venv-detect/bin/python benchmarks/detect/yolov5_figures.py [--work DIR] [--size 128] [--images 160 40]
        [--epochs 10 4 6] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "detect"))
sys.path.insert(0, str(ROOT))  # this checkout's engine, whatever is installed


def preset(name: str, data_yaml: Path, runs: Path, model: dict, epochs: dict[str, int], size: int,
           first: bool) -> dict:
    stages = [{"type": "train"}] if first else []
    stages += [
        {"type": "sparse", "s": "auto", "training": {"epochs": epochs["sparse"], "warmup_epochs": 0}},
        {"type": "prune", "percent": 0.5},
        {"type": "finetune", "training": {"epochs": epochs["finetune"], "lr": 0.002, "warmup_epochs": 0}},
        {"type": "export"},
    ]
    return {
        "name": name, "task": "detect", "model": model,
        "data": {"dataset": "yolo", "path": str(data_yaml), "image_size": size, "augment": True},
        "training": {"epochs": epochs["train"], "batch_size": 16, "optimizer": "adamw", "lr": 0.004,
                     "warmup_epochs": 1, "weight_decay": 0.0005, "seed": 0, "device": "cpu", "log_every": 50},
        "latency": {"repeats": 5, "warmup": 2, "runs": 3},
        "output": {"runs_dir": str(runs)}, "stages": stages,
    }  # fmt: skip


def table(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    print(f"{'stage':16} {'mAP50-95':>9} {'mAP50':>7} {'params':>10} {'FLOPs':>13} {'ms b1':>8}")
    for name, row in summary["comparison"].items():
        print(f"{name:16} {row.get('mAP50_95', float('nan')):9.4f} {row.get('mAP50', float('nan')):7.4f} "
              f"{row.get('params', 0):10,} {row.get('flops', 0):13,} {row.get('latency_b1_ms', float('nan')):8.2f}")


def slimlab(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "engine", *args], check=True, cwd=ROOT)


def validator_check(run: Path, data_yaml: Path, size: int) -> None:
    import torch

    from engine import checkpoint
    from engine.detect import data as ydata
    from engine.detect.evaluate import Evaluator
    from engine.detect.yolov5.repository_metrics import repository_map, repository_validator
    from engine.detect.yolov5.task import REPOSITORY_IOU

    model = checkpoint.load(run / "weights" / "finetune.pt").model
    data = ydata.load(data_yaml)
    kw = {"imgsz": size, "batch": 16, "device": torch.device("cpu"), "iou": REPOSITORY_IOU}
    slim = Evaluator(data, work_dir=run / "ultralytics" / "check", validator=repository_validator(), **kw)
    plain = Evaluator(data, work_dir=run / "ultralytics" / "check-plain", **kw)
    ours, own, theirs = slim(model), plain(model), repository_map(model, slim.loader)
    for key in ("mAP50_95", "mAP50", "precision", "recall"):
        print(f"{key:9} slimlab (validator, repository matching) {ours[key]:.5f}  the repository's val.py code "
              f"{theirs[key]:.5f}  Ultralytics' own matching and AP {own[key]:.5f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, help="folder for the data and runs (default: a new temporary one)")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--images", type=int, nargs=2, default=[160, 40], metavar=("TRAIN", "VAL"))
    p.add_argument("--epochs", type=int, nargs=3, default=[10, 4, 6], metavar=("TRAIN", "SPARSE", "FINETUNE"))
    p.add_argument("--quick", action="store_true", help="a few epochs on a small set (checks the script)")
    a = p.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="yolov5-figures-"))
    epochs = {"train": 2, "sparse": 1, "finetune": 1} if a.quick else dict(zip(("train", "sparse", "finetune"), a.epochs, strict=True))
    data_yaml = work / "photos" / "data.yaml"
    if not data_yaml.exists():
        import photo_boxes

        photo_boxes.write(work / "photos", size=a.size, **({"train": 64, "val": 32} if a.quick else
                                                           {"train": a.images[0], "val": a.images[1]}))
    runs = work / "runs"
    arms = {"yaml": {"arch": "yolov5:yolov5s.yaml", "kwargs": {"width": a.width}}}
    for name, model in arms.items():
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(preset(name, data_yaml, runs, model, epochs, a.size, True), sort_keys=False))
        if not (runs / name / "summary.json").exists():
            slimlab("--batch", "--plain", *(["--resume", str(runs / name)] if (runs / name).exists() else [str(path)]))
    best = work / "best.pt"  # the trained model as the repository's train.py saves it
    slimlab("export", str(runs / "yaml" / "weights" / "train.pt"), "--format", "yolov5", "--out", str(best))
    path = work / "checkpoint.yaml"
    path.write_text(yaml.safe_dump(preset("checkpoint", data_yaml, runs, {"checkpoint": str(best)}, epochs, a.size,
                                          False), sort_keys=False))
    if not (runs / "checkpoint" / "summary.json").exists():
        slimlab("--batch", "--plain", "--trust",
                *(["--resume", str(runs / "checkpoint")] if (runs / "checkpoint").exists() else [str(path)]))
    for name in ("yaml", "checkpoint"):
        print(f"\n{name}: yolov5s width {a.width} at {a.size} px on {data_yaml}")
        table(runs / name)
    print("\nvalidator check (finetuned model of the yaml run, val split):")
    validator_check(runs / "yaml", data_yaml, a.size)


if __name__ == "__main__":
    main()
