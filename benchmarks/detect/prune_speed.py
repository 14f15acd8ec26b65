"""Time to prune a YOLOv8s (or `--model yolov5:yolov5s.yaml`) at 640 px: gamma statistics + plan + apply.

Wall seconds, and the process's CPU seconds beside them: on a shared machine the wall time of one
thread stretches with the load, its CPU time does not (run with --threads 1 to compare the two).

Needs the detection environment (make setup-detect). Usage:
.venv-detect/bin/python benchmarks/detect/prune_speed.py [--model yolov8s.yaml | yolov5:yolov5s.yaml] [--imgsz 640] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov8s.yaml")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from engine import checkpoint
    from engine.slim.apply import apply_plan
    from engine.slim.gamma import gamma_stats
    from engine.slim.inputs import precompute
    from engine.slim.plan import plan_from_inputs

    arch_name = args.model if ":" in args.model else f"ultralytics:{args.model}"  # or yolov5:yolov5s.yaml
    base = checkpoint.build_model({"name": arch_name, "num_classes": 80, "in_channels": 3,
                                   "kwargs": {"imgsz": args.imgsz}}).eval()
    for m in base.modules():  # sparse-trained-like gammas: spread over decades
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features) ** 4
    rows = []
    for _ in range(args.repeats + 1):  # the first run pays one-time costs (lazy imports, allocator)
        model = copy.deepcopy(base)
        t0, c0 = time.perf_counter(), time.process_time()
        stats = gamma_stats(model)
        t1 = time.perf_counter()
        inputs = precompute(model, stats=stats)
        plan = plan_from_inputs(inputs, percent=0.5)
        t2 = time.perf_counter()
        apply_plan(model, plan)
        t3, c3 = time.perf_counter(), time.process_time()
        rows.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0, c3 - c0))
    for name, i in (("stats", 0), ("plan", 1), ("apply", 2), ("total", 3), ("cpu", 4)):
        print(f"{name:6} median {statistics.median(r[i] for r in rows[1:]):.3f} s (first run {rows[0][i]:.3f} s)")
    print(f"load average during the runs: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    t = plan.totals
    print(f"{args.model} at {args.imgsz}: params {t['params_before']:,} -> {t['params_after']:,}, "
          f"FLOPs {t['flops_before']:,} -> {t['flops_after']:,}")
    # the pruned checkpoint reloads to the same model: outputs at the model's size, max |difference|
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pruned.pt")
        arch = {"name": arch_name, "num_classes": 80, "in_channels": 3,
                "kwargs": {"yaml": base.yaml, "imgsz": args.imgsz}, "task": "detect"}
        checkpoint.save(path, model, arch, plan=plan.to_dict())
        again = checkpoint.load(path).model
        x = torch.rand(1, 3, args.imgsz, args.imgsz)
        with torch.no_grad():
            diff = (again.eval()(x)[0] - model.eval()(x)[0]).abs().max().item()
    print(f"reload max |difference| at {args.imgsz} px: {diff}")
    print(f"detect_prune_{args.model.split(':')[-1].split('.')[0]}_{args.imgsz}_s: {statistics.median(r[3] for r in rows[1:]):.3f}")


if __name__ == "__main__":
    main()
