"""What a YOLO detector gains on the CPU from slimming and INT8: original fp32 vs pruned fp32 vs pruned INT8.

For each model (yolov8n, yolo11n at full width) slimlab trains it briefly on generated shapes with boxes
(engine/detect/synth.py; nothing is downloaded), prunes half of its channels and finetunes it, through
its own pipeline (train -> prune 50% -> finetune). Then, at each image size, the unpruned and the
pruned model are exported to ONNX (checked against PyTorch), the pruned one is quantized to INT8 with
the mAP guard (max_drop 1 point of mAP50-95), and every file is timed through onnxruntime side by side
(1 thread, batch 1 and 8, interleaved rounds, median) and measured: mAP50-95 and mAP50 on the val split.
The pruned model is also written by Ultralytics' exporters for the other runtimes installed here
(OpenVINO fp32 and NNCF INT8, ncnn, LiteRT INT8: engine/detect/runtimes.py; `--formats none` skips
them), each timed in its own runtime with the same thread count, in the same interleaved rounds, and
its mAP measured by Ultralytics' validator through its own backend.

Prints one table per model and size with the speed-ups against the original at batch 1 and 8, and the
INT8 mAP change against the pruned fp32 file. Last line: `detect_int8_speedup_b1: X` (pruned INT8 vs
original fp32, yolov8n at 640 px). Half an hour or more on two cores; run it alone (`nice`).

    .venv-detect/bin/python benchmarks/detect/deploy_latency.py [--models yolov8n.yaml,yolo11n.yaml]
        [--sizes 640,320] [--train-epochs 12] [--finetune-epochs 4] [--train-size 384] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def train_and_prune(model: str, root: Path, args: argparse.Namespace) -> Path:
    """A run directory with weights/train.pt (unpruned) and weights/finetune.pt (pruned 50%, finetuned)."""
    from engine.cli import prepare_run_dir
    from engine.config import spec_from_dict
    from engine.pipeline import Pipeline
    from engine.runs import create_run_dir

    preset = {
        "name": Path(model).stem, "task": "detect",
        "model": {"arch": f"ultralytics:{model}"},
        "data": {"dataset": "yolo", "path": str(root / "data" / "data.yaml"), "image_size": args.train_imgsz,
                 "augment": False},
        "training": {"epochs": args.train_epochs, "batch_size": 16, "optimizer": "adamw", "lr": 0.002,
                     "warmup_epochs": 1, "device": "cpu", "log_every": 50, "threads": args.threads},
        "stages": [{"type": "train"}, {"type": "prune", "percent": 0.5, "round_to": 8},
                   {"type": "finetune", "training": {"epochs": args.finetune_epochs, "lr": 0.001, "warmup_epochs": 0}}],
    }
    spec = spec_from_dict(preset, source="benchmark")
    path = create_run_dir(root / "runs", spec.name)
    prepare_run_dir(path, spec)
    t0 = time.perf_counter()
    Pipeline(spec, path).run()
    print(f"{model}: trained, pruned and finetuned in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def deploy_at(run: Path, imgsz: int, data: object, args: argparse.Namespace) -> dict[str, dict]:
    """Export the unpruned and the pruned model at `imgsz`, quantize the pruned one, time and measure all."""
    from engine import checkpoint
    from engine.deploy import latency, onnxfile, runtime
    from engine.deploy.artifacts import write_int8
    from engine.deploy.quantize import QuantizeData, QuantizeOptions, quantize
    from engine.detect import runtimes
    from engine.detect.deploy import (
        calibration_batches,
        detection_sqnr,
        export_onnx,
        onnx_scorer,
        probe_images,
    )
    from engine.task import MAP

    out = run / f"deploy-{imgsz}"
    out.mkdir(exist_ok=True)
    files = {}
    for name, stage in (("original", "train"), ("pruned", "finetune")):
        loaded = checkpoint.load(run / "weights" / f"{stage}.pt")
        files[name] = out / f"{name}.onnx"
        export_onnx(loaded.model, files[name], data=data, imgsz=imgsz, batch=None, arch=loaded.arch, plan=loaded.plan,
                    work_dir=out / "val")
    fp32 = onnxfile.read(files["pruned"])
    info = onnxfile.describe(fp32, files["pruned"])
    batches, _ = calibration_batches(data, imgsz, args.samples)
    score = onnx_scorer(data, imgsz, out / "val")
    t0 = time.perf_counter()
    result = quantize(fp32, QuantizeData(batches, score, compare=detection_sqnr, probe=probe_images(imgsz)),
                      QuantizeOptions(samples=args.samples, max_drop=1.0), metric=MAP,
                      log=lambda line: print(f"  {line[:200]}", flush=True))
    seconds = time.perf_counter() - t0
    if result.model is not None:
        files["pruned int8"] = out / "pruned.int8.onnx"
        write_int8(result, info, files["pruned int8"])
    else:
        print(f"  {result.message}")
    sessions = {name: runtime.session(path, args.threads) for name, path in files.items()}
    figures = {name: score(path) for name, path in files.items()}
    pruned = checkpoint.load(run / "weights" / "finetune.pt")
    for fmt in formats(args):
        t0 = time.perf_counter()
        path = out / runtimes.artifact_name("pruned", fmt)
        try:
            record = runtimes.export(pruned.model, fmt, path, data=data, imgsz=imgsz, samples=args.samples,
                                     log=lambda line: print(f"  {line}", flush=True))
        except Exception as e:  # a runtime that fails here is reported, the others still measured
            print(f"  {fmt}: {e}", flush=True)
            continue
        name = f"pruned {fmt}"
        print(f"  {name}: exported and validated in {time.perf_counter() - t0:.0f} s", flush=True)
        files[name] = path
        figures[name] = record
        sessions[name] = runtimes.runner(path, record["runtime"], args.threads)
    times = latency.measure(sessions, (3, imgsz, imgsz), batches=(1, 8), warmup=3, repeats=args.repeats, runs=2)
    rows = {}
    for name, path in files.items():
        rows[name] = {"mAP50_95": figures[name]["mAP50_95"], "mAP50": figures[name]["mAP50"], "b1": times[name][1],
                      "b8": times[name][8], "size": runtimes.size_of(path)}
    rows["pruned int8"] = rows.get("pruned int8", {}) | {"fp32_layers": len(result.excluded), "quantize_s": seconds}
    return rows


def formats(args: argparse.Namespace) -> list[str]:
    """The runtimes beside onnxruntime to measure: those asked for that are installed here."""
    from engine.detect import runtimes

    if args.formats == "none":
        return []
    wanted = list(runtimes.NAMES) if args.formats == "all" else args.formats.split(",")
    found = []
    for fmt in wanted:
        reason = runtimes.unavailable(fmt)
        if reason:
            print(f"  skipped: {reason}", flush=True)
        else:
            found.append(fmt)
    return found


def show(model: str, imgsz: int, rows: dict[str, dict]) -> None:
    base = rows["original"]
    print(f"\n{model} at {imgsz} px (onnxruntime, 1 thread; speed-up vs the original fp32 file)")
    print(f"{'file':<22} {'mAP50-95':>8} {'mAP50':>7} {'ms b1':>8} {'ms b8':>8} {'x b1':>6} {'x b8':>6} {'MiB':>6}")
    for name, r in rows.items():
        if "b1" not in r:
            continue
        print(f"{name:<22} {r['mAP50_95']:>8.4f} {r['mAP50']:>7.4f} {r['b1']:>8.2f} {r['b8']:>8.2f} "
              f"{base['b1'] / r['b1']:>5.2f}x {base['b8'] / r['b8']:>5.2f}x {r['size'] / 2**20:>6.2f}")
    q = rows["pruned int8"]
    if "b1" in q:
        print(f"INT8 vs pruned fp32: {(q['mAP50_95'] - rows['pruned']['mAP50_95']) * 100:+.2f} points mAP50-95, "
              f"{q['fp32_layers']} layers/nodes kept fp32, guard {q['quantize_s']:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="yolov8n.yaml,yolo11n.yaml")
    p.add_argument("--sizes", default="640,320")
    p.add_argument("--train-imgsz", type=int, default=320)
    p.add_argument("--train-epochs", type=int, default=12)
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--train-size", type=int, default=384)
    p.add_argument("--samples", type=int, default=64, help="INT8 calibration images")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--formats", default="all",
                   help="other runtimes for the pruned model: all (those installed), none, or a list "
                        "(openvino,openvino-int8,ncnn,litert-int8)")
    p.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from engine.detect import data as ydata
    from engine.detect import ultra
    from engine.detect.synth import write_dataset

    ultra.load()
    with tempfile.TemporaryDirectory(prefix="slimlab-detect-deploy-") as tmp:
        root = args.work or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "data" / "data.yaml").exists():
            write_dataset(root / "data", train=args.train_size, val=64, classes=3, seed=0)
        data = ydata.load(root / "data" / "data.yaml")
        results = {}
        for model in args.models.split(","):
            run = train_and_prune(model, root, args)
            for imgsz in (int(s) for s in args.sizes.split(",")):
                rows = deploy_at(run, imgsz, data, args)
                show(model, imgsz, rows)
                results[f"{model}@{imgsz}"] = rows
        (root / "deploy_latency.json").write_text(json.dumps(results, indent=2, default=str))
    key = next((k for k in results if k.startswith("yolov8n") and k.endswith("@640")), next(iter(results)))
    r = results[key]
    speed = r["original"]["b1"] / r["pruned int8"]["b1"] if "b1" in r["pruned int8"] else 0.0
    print(f"\ndetect_int8_speedup_b1: {speed:.2f}")


if __name__ == "__main__":
    main()
