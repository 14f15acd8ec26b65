"""Time to prune a YOLOv8s at 640 px: gamma statistics + plan (trace, groups, costs) + apply.

Wall seconds, and the process's CPU seconds beside them: on a shared machine the wall time of one
thread stretches with the load, its CPU time does not (run with --threads 1 to compare the two).

Needs the detection environment (make setup-detect). Usage:
.venv-detect/bin/python benchmarks/detect/prune_speed.py [--model yolov8s.yaml] [--imgsz 640] [--repeats 3]
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
    from engine.detect.model import build
    from engine.slim.apply import apply_plan
    from engine.slim.gamma import gamma_stats
    from engine.slim.inputs import precompute
    from engine.slim.plan import plan_from_inputs

    base = build(f"ultralytics:{args.model}", 80, imgsz=args.imgsz).eval()
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
    print(f"detect_prune_{args.model.split('.')[0]}_{args.imgsz}_s: {statistics.median(r[3] for r in rows[1:]):.3f}")


if __name__ == "__main__":
    main()
