"""Cost of a distillation step relative to a plain student step, measured side by side.

kd_teacher -> kd_student (the PyTorch KD tutorial nets), batch 64 at 32x32 on CPU.
A KD step is student forward + teacher forward (no grad) + KD loss + backward +
optimizer step; a plain step is the same without the teacher. Steps alternate
(plain, kd, hint, plain, kd, hint, ...) so machine load hits all kinds alike; the
medians are compared. The last line is ``distill_step_ratio: X`` (KD / plain).

    .venv/bin/python benchmarks/distill_overhead.py [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from engine.distill.distiller import Distiller

BATCH, SIZE, CLASSES = 64, 32, 10


def build_pair() -> tuple[nn.Module, nn.Module, str]:
    from engine.models import build

    return build("kd_teacher", CLASSES), build("kd_student", CLASSES), "engine.models registry"


def step_fn(model: nn.Module, loss_fn, extra: list[nn.Parameter]):
    opt = torch.optim.SGD(list(model.parameters()) + extra, lr=0.01, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        t0 = time.perf_counter()
        logits = model(x)
        loss, _ = loss_fn(logits, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    # One thread by default: on a shared machine extra intra-op threads make timings erratic.
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    teacher, student, source = build_pair()
    student.train()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    y = torch.randint(0, CLASSES, (BATCH,))

    kd = Distiller(student, teacher, example_input=x)
    # Own copies for the hint variant, so its hooks never fire in the other steps.
    hint_student, hint_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    hint = Distiller(
        hint_student,
        hint_teacher,
        features=[
            {"type": "hint", "student": "features", "teacher": "features", "regressor": "3x3"}
        ],
        example_input=x,
    )
    steps = {
        "plain": step_fn(student, lambda logits, _x, yy: (F.cross_entropy(logits, yy), {}), []),
        "kd": step_fn(student, kd, kd.parameters()),
        "hint": step_fn(hint_student, hint, hint.parameters()),
    }

    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(args.warmup + args.repeats):
        for name, step in steps.items():
            dt = step(x, y)
            if i >= args.warmup:
                times[name].append(dt)
    kd.close()
    hint.close()

    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"models: kd_teacher -> kd_student ({source}); batch {BATCH} at {SIZE}x{SIZE}, CPU, "
        f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats"
    )
    for name, m in med.items():
        print(f"{name:>6} step median: {m * 1e3:8.1f} ms")
    print(f"hint_step_ratio: {med['hint'] / med['plain']:.2f}")
    print(f"distill_step_ratio: {med['kd'] / med['plain']:.2f}")


if __name__ == "__main__":
    main()
