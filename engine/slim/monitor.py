"""Pruned-at-target accuracy: at each epoch end, the model cut to the stage's target plan, evaluated.

This is the signal that says sparse training has done its job: once the pruned copy is about as
accurate as the model itself, pruning at the target costs (almost) nothing before finetuning.
The expensive, model-dependent part of planning (tracing, coupled groups, the cost model) is done
once per stage in `on_fit_start`; each epoch only reads the gammas, re-plans with numpy
(engine/slim/target.py resolves FLOPs/params targets on the plan's own cost estimate), cuts a copy
and evaluates it and the model on the same fixed val subset: evenly spaced batches of the val
loader, `samples` images in all. Under DDP the counts are summed over ranks, so every rank gets
the same figures (and `s: auto` the same decision).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.slim.gamma import gamma_stats
from engine.slim.inputs import PlanInputs, precompute


def evenly_spaced_batches(loader: Iterable, samples: int) -> Iterator[Any]:
    """Batches of `loader` spread over the whole split, about `samples` images in all.

    Spreading (instead of the first batches) keeps the subset representative when a split is stored
    in class order. The choice depends only on the loader's length and batch size, so it is the
    same subset every epoch.
    """
    n = len(loader)  # type: ignore[arg-type]
    batch = getattr(loader, "batch_size", None) or 1
    wanted = min(n, max(1, math.ceil(samples / batch)))
    picks = {math.floor(i * n / wanted) for i in range(wanted)}
    for i, item in enumerate(loader):
        if i in picks:
            yield item


def covers_split(loader: Iterable, samples: int) -> bool:
    """True when `evenly_spaced_batches(loader, samples)` yields every batch of the loader."""
    batch = getattr(loader, "batch_size", None) or 1
    return math.ceil(samples / batch) >= len(loader)  # type: ignore[arg-type]


@torch.no_grad()
def count_correct(model: nn.Module, batches: Iterable, device: torch.device,
                  amp: torch.dtype | None = None) -> tuple[int, int]:
    """(correct, seen) of top-1 predictions over `batches`."""
    was = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        correct += (logits.argmax(1) == y).sum()
        seen += y.numel()
    model.train(was)
    return int(correct.item()), seen


class PrunedAtTarget:
    """Trainer callback logging `acc_pruned_at_target` (fraction, like `accuracy`) every epoch.

    `rule` holds engine.slim.target.resolve_plan's keyword arguments (one of percent, threshold,
    target_flops, target_params, and the plan-shaping options). `last` keeps the latest figures:
    the unpruned and the pruned accuracy on the subset and the plan's kept fractions.
    """

    def __init__(self, rule: dict[str, Any], input_shape: tuple[int, ...], samples: int = 2000,
                 calibrate: bool = True) -> None:
        self.calibrate = calibrate
        self.rule = dict(rule)
        self.input_shape = tuple(input_shape)
        self.samples = int(samples)
        self.inputs: PlanInputs | None = None
        self.last: dict[str, float] = {}
        self.kept_median = 0.0

    def on_fit_start(self, trainer: Any) -> None:
        model = copy.deepcopy(trainer.model).cpu()
        self.inputs = precompute(model, self.input_shape, score=self.rule.get("score") or "max")

    def plan(self, model: nn.Module) -> Any:
        """The target plan for the model's current gammas (groups and costs from `on_fit_start`)."""
        from engine.slim.target import resolve_plan

        if self.inputs is None:
            raise RuntimeError("PrunedAtTarget.plan before on_fit_start")
        inputs = dataclasses.replace(self.inputs, gammas=gamma_stats(model).gammas)
        plan = resolve_plan(inputs, **self.rule)
        scores = inputs.arrays(self.rule.get("score") or "max").sorted_prunable
        thr = plan.options.get("global_threshold")
        kept = scores[scores >= thr] if thr is not None else scores
        self.kept_median = float(np.median(kept)) if kept.size else 0.0
        return plan

    def measure(self, model: nn.Module, loader: Iterable, device: torch.device,
                amp: torch.dtype | None = None, dist_info: Any = None, calibrate: Iterable | None = None,
                accuracy: float | None = None) -> dict[str, float]:
        """Accuracy of `model` and of its copy pruned at the target, on the fixed val subset.

        `accuracy`, the model's accuracy on the whole val split (the trainer's), stands in for the
        model's own evaluation when the subset is the whole split on one process.
        """
        from engine.slim.apply import apply_plan
        from engine.slim.bn_calibrate import calibration_samples, first_batches, recalibrate

        plan = self.plan(model)
        pruned = apply_plan(copy.deepcopy(model).eval(), plan)
        if calibrate is not None:
            recalibrate(pruned, first_batches(calibrate, calibration_samples(calibrate, self.samples)),
                        device, amp, dist_info)
        pruned_counts = count_correct(pruned, evenly_spaced_batches(loader, self.samples), device, amp)
        if accuracy is not None and covers_split(loader, self.samples) and not getattr(dist_info, "enabled", False):
            own = accuracy
            acc_pt = pruned_counts[0] / max(1, pruned_counts[1])
        else:
            counts = _sum_over_ranks(
                [*count_correct(model, evenly_spaced_batches(loader, self.samples), device, amp), *pruned_counts],
                dist_info, device)
            own, acc_pt = counts[0] / max(1, counts[1]), counts[2] / max(1, counts[3])
        t = plan.totals
        self.last = {
            "acc_unpruned_subset": own,
            "acc_pruned_at_target": acc_pt,
            "target_flops_kept": t["flops_after"] / max(1, t["flops_before"]),
            "target_params_kept": t["params_after"] / max(1, t["params_before"]),
            "target_threshold": float(plan.options.get("global_threshold") or 0.0),
            "kept_median": self.kept_median,  # median score of the channels the target keeps
        }
        return self.last

    metric = "accuracy"  # what the figures are, in the s: auto controller's reasons

    def measure_trainer(self, trainer: Any, accuracy: float | None = None) -> dict[str, float]:
        """`measure` on a slimlab Trainer's model and data (`accuracy`: its val accuracy, if known)."""
        return self.measure(trainer.model, trainer.data.val, trainer.device, trainer.amp_dtype, trainer.dist,
                            calibrate=trainer.data.train if self.calibrate else None, accuracy=accuracy)

    def on_epoch_end(self, trainer: Any, epoch: int) -> dict[str, float]:
        self.measure_trainer(trainer, getattr(trainer, "epoch_metrics", {}).get("accuracy"))
        return {k: self.last[k] for k in ("acc_pruned_at_target", "target_threshold")}


def _sum_over_ranks(counts: list[int], dist_info: Any, device: torch.device) -> list[int]:
    if dist_info is None or not getattr(dist_info, "enabled", False):
        return counts
    import torch.distributed as dist

    t = torch.tensor(counts, dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return [int(v) for v in t.tolist()]
