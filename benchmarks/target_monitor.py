"""Cost of the pruned-at-target monitor per epoch, against the training epoch it follows.

resnet_cifar (depth 20, width 1) on CIFAR-sized inputs, CPU, one thread. Timed side by side in
one process:
- a training step (batch 128, SGD) -> one CIFAR-10 epoch = 352 steps (45k training images);
- the monitor's epoch-end work: re-plan from the precomputed groups and costs (numpy), cut a
  copy, re-estimate its BatchNorm statistics on 2000 images, evaluate it and the model on 2000;
- re-planning from precomputed inputs vs tracing the model again (what is saved by tracing once).
Last line: `monitor_share_of_cifar_epoch: <monitor time / epoch time>`.

Usage: python benchmarks/target_monitor.py [--threads N] [--samples N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

import engine.models as models
from engine.slim.apply import apply_plan
from engine.slim.bn_calibrate import recalibrate
from engine.slim.inputs import precompute
from engine.slim.monitor import PrunedAtTarget, count_correct
from engine.slim.target import resolve_plan

CIFAR_STEPS = 352  # 45,000 training images (val_fraction 0.1) at batch 128


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = models.build("resnet_cifar", 10, depth=20, width=1.0)
    with torch.no_grad():  # a spread of gammas like mid-way through sparse training
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features) ** 3)
    batches = [(torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))) for _ in range(-(-args.samples // 128))]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        x, y = batches[0]
        model.train()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    step()
    step_s = timed(step, 10)
    rule = {"percent": 0.5}
    monitor = PrunedAtTarget(rule, (3, 32, 32), samples=args.samples)
    trainer = type("T", (), {"model": model})()
    t0 = time.perf_counter()
    monitor.on_fit_start(trainer)
    once_s = time.perf_counter() - t0
    cpu = torch.device("cpu")

    def monitor_epoch() -> None:
        monitor.measure(model, batches, cpu, calibrate=batches)

    monitor_s = timed(monitor_epoch, args.repeats)
    replan_s = timed(lambda: monitor.plan(model), 10)
    fresh_s = timed(lambda: resolve_plan(precompute(copy.deepcopy(model), (3, 32, 32)), **rule), 3)
    # the pieces of one monitor pass
    plan = monitor.plan(model)
    cut_s = timed(lambda: apply_plan(copy.deepcopy(model), plan), 3)
    pruned = apply_plan(copy.deepcopy(model), plan)
    recal_s = timed(lambda: recalibrate(pruned, batches, cpu), 3)
    eval_s = timed(lambda: count_correct(model, batches, cpu), 3)
    epoch_s = step_s * CIFAR_STEPS
    print(f"training step (batch 128): {step_s * 1e3:.1f} ms -> CIFAR-10 epoch ({CIFAR_STEPS} steps): {epoch_s:.1f} s")
    print(f"monitor set-up once per stage (trace, groups, costs): {once_s:.2f} s")
    print(f"monitor per epoch: {monitor_s:.2f} s (re-plan {replan_s * 1e3:.1f} ms, cut {cut_s * 1e3:.0f} ms, "
          f"BN statistics on {args.samples} images {recal_s:.2f} s, eval of the model on {args.samples} {eval_s:.2f} s)")
    print(f"re-plan from precomputed inputs {replan_s * 1e3:.1f} ms vs tracing again {fresh_s * 1e3:.0f} ms: "
          f"{fresh_s / replan_s:.0f}x")
    print(f"monitor_share_of_cifar_epoch: {monitor_s / epoch_s:.3f}")


if __name__ == "__main__":
    main()
