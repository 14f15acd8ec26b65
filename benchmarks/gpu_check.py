"""The CUDA paths, checked in one call on the first machine with a GPU (`make gpu-check`).

Each row runs slimlab's real engine (the run pipeline on small generated data) and prints one table:

- classification training in fp32, fp16 autocast + GradScaler and bf16: the loss of each logged
  step against fp32's (largest relative difference over the steps) and the step time over fp32's;
- a sparse stage with fp16 AMP (the penalty is added after unscaling): the median |gamma| per epoch
  against the fp32 run's;
- the CUDA memory lines a monitor plots (mem_allocated / mem_reserved / mem_peak in metrics.jsonl);
- a detection train epoch with fp16 AMP (Ultralytics' trainer, when the detection extra imports);
- onnxruntime's CUDA execution provider on the exported files, where the provider loads;
- cudnn.benchmark and channels_last on the pruned model's latency (batch 32).

On a machine without CUDA it says so and exits 0; `--device cpu` runs the rows that make sense on
a CPU (fp32 and bf16), which is how the script itself is tested. Sized to finish in a few minutes.

    python benchmarks/gpu_check.py [--device cuda|cpu] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROWS: list[tuple[str, str]] = []


def row(what: str, result: str) -> None:
    ROWS.append((what, result))
    print(f"  {what}: {result}", flush=True)


def run_preset(work: Path, name: str, preset: dict[str, Any]) -> Path:
    from engine.cli import prepare_run_dir
    from engine.config import spec_from_dict
    from engine.pipeline import Pipeline
    from engine.runs import create_run_dir

    spec = spec_from_dict({"name": name, **preset, "output": {"runs_dir": str(work / "runs")}}, source=f"{name}.yaml")
    path = create_run_dir(work / "runs", name)
    prepare_run_dir(path, spec)
    Pipeline(spec, path).run()
    return path


def metrics(path: Path, stage: str) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in rows if r.get("stage") == stage]


def classify_preset(device: str, amp: str, stages: list[dict]) -> dict[str, Any]:
    return {"model": {"arch": "resnet_cifar", "kwargs": {"depth": 20}},
            "data": {"dataset": "shapes", "num_classes": 6, "train_size": 2048, "val_size": 256, "workers": 0},
            "training": {"epochs": 2, "batch_size": 128, "lr": 0.05, "warmup_epochs": 0, "device": device,
                         "amp": amp, "log_every": 1, "seed": 0},
            "stages": stages}


def step_losses(path: Path, stage: str) -> tuple[list[float], float]:
    """The logged per-step losses and the median step time (from the lines' timestamps)."""
    steps = [r for r in metrics(path, stage) if "loss" in r and "accuracy" not in r and "step" in r]
    ts = [r["t"] for r in steps]
    dt = statistics.median(b - a for a, b in zip(ts, ts[1:], strict=False)) if len(ts) > 2 else float("nan")
    return [r["loss"] for r in steps], dt


def amp_rows(work: Path, device: str) -> None:
    modes = ["none", "fp16", "bf16"] if device == "cuda" else ["none", "bf16"]
    runs = {m: run_preset(work, f"amp-{m}", classify_preset(device, m, [{"type": "train"}])) for m in modes}
    base, base_dt = step_losses(runs["none"], "train")
    for m in modes[1:]:
        losses, dt = step_losses(runs[m], "train")
        n = min(len(base), len(losses))
        worst = max(abs(a - b) / max(abs(a), 1e-8) for a, b in zip(base[:n], losses[:n], strict=True))
        row(f"train {m} vs fp32", f"loss within {worst:.1%} over {n} steps; step time {dt / base_dt:.2f}x of fp32")


def sparse_rows(work: Path, device: str) -> None:
    amp = "fp16" if device == "cuda" else "bf16"
    sparse = [{"type": "sparse", "s": 1e-3}]
    a = run_preset(work, "sparse-fp32", classify_preset(device, "none", sparse))
    b = run_preset(work, f"sparse-{amp}", classify_preset(device, amp, sparse))
    qa = [r["gamma_q50"] for r in metrics(a, "sparse") if "gamma_q50" in r]
    qb = [r["gamma_q50"] for r in metrics(b, "sparse") if "gamma_q50" in r]
    diffs = ", ".join(f"{x:.4f}/{y:.4f}" for x, y in zip(qa, qb, strict=False))
    row(f"sparse {amp} vs fp32 (median |gamma| per epoch)", diffs or "no gamma figures logged")
    if device == "cuda":
        mem = [r for r in metrics(b, "sparse") if "mem_allocated" in r]
        if mem:
            last = mem[-1]
            row("CUDA memory lines", f"{len(mem)} lines; last: allocated {last['mem_allocated']:.0f} MiB, "
                                     f"reserved {last['mem_reserved']:.0f} MiB, peak {last['mem_peak']:.0f} MiB")
        else:
            row("CUDA memory lines", "MISSING: no mem_allocated in metrics.jsonl")


def detect_row(work: Path, device: str) -> None:
    try:
        from engine.detect import ultra

        ultra.load()
    except Exception as e:  # the detection extra is optional
        row("detection epoch with AMP", f"skipped: {str(e).splitlines()[0][:120]}")
        return
    amp = "fp16" if device == "cuda" else "none"
    preset = {"task": "detect", "model": {"arch": "ultralytics:yolov8n.yaml", "kwargs": {"width": 0.25}},
              "data": {"dataset": "yolo_shapes", "num_classes": 3, "train_size": 256, "val_size": 64, "image_size": 128},
              "training": {"epochs": 1, "batch_size": 32, "lr": 0.01, "warmup_epochs": 0, "device": device, "amp": amp,
                           "log_every": 4},
              "stages": [{"type": "train"}]}
    t0 = time.perf_counter()
    path = run_preset(work, "detect-amp", preset)
    epoch = [r for r in metrics(path, "train") if "mAP50_95" in r][-1]
    row(f"detection epoch ({amp})", f"{time.perf_counter() - t0:.1f}s, loss {epoch['loss']:.3f}, "
                                    f"mAP50-95 {epoch['mAP50_95']:.4f}")


def onnx_and_latency_rows(work: Path, device: str) -> None:
    from engine import checkpoint, measure

    stages = [{"type": "train", "training": {"epochs": 1}}, {"type": "prune", "percent": 0.5}, {"type": "export"}]
    path = run_preset(work, "deploy", classify_preset(device, "none", stages))
    onnx_file = path / "prune.onnx"
    import numpy as np
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" in providers and onnx_file.exists():
        sess = ort.InferenceSession(str(onnx_file), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        x = np.random.rand(32, 3, 32, 32).astype(np.float32)
        name = sess.get_inputs()[0].name
        for _ in range(5):
            sess.run(None, {name: x})
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            sess.run(None, {name: x})
            times.append(time.perf_counter() - t0)
        row("onnxruntime CUDA EP, pruned file b32", f"{statistics.median(times) * 1e3:.2f} ms "
                                                    f"(providers in use: {', '.join(sess.get_providers())})")
    else:
        row("onnxruntime CUDA EP", f"not available here (providers: {', '.join(providers)})")
    model = checkpoint.load(path / "weights" / "prune.pt").model.eval()
    shape = (3, 32, 32)
    plain = measure.latency_ms(model, shape, 32, device=device, runs=30)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    bench = measure.latency_ms(model, shape, 32, device=device, runs=30)
    cl = measure.latency_ms(model.to(memory_format=torch.channels_last), shape, 32, device=device, runs=30)
    torch.backends.cudnn.benchmark = False
    row("pruned model latency b32", f"{plain:.2f} ms; cudnn.benchmark {bench:.2f} ms; + channels_last {cl:.2f} ms"
        if device == "cuda" else f"{plain:.2f} ms; channels_last {cl:.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--work", type=Path, default=None)
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing to check")
        return
    work = a.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    if a.device == "cuda":
        print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    t0 = time.perf_counter()
    for check in (amp_rows, sparse_rows, detect_row, onnx_and_latency_rows):
        try:
            check(work, a.device)
        except Exception as e:  # one failing path must not hide the others' figures
            row(check.__name__, f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    print(f"\n{'check':52s} result")
    for what, result in ROWS:
        print(f"{what:52s} {result}")
    print(f"gpu_check_seconds {time.perf_counter() - t0:.0f}")
    if any(r.startswith("FAILED") or r.startswith("MISSING") for _, r in ROWS):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
