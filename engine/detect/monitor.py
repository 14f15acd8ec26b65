"""Pruned-at-target mAP50-95 of a detector in sparse training, and BatchNorm recalibration for detectors.

After every sparse epoch the EMA model (what Ultralytics validates and slimlab saves) is cut with
the stage's target plan, the copy's BatchNorm statistics are re-estimated on a fixed set of
training images (letterboxed, no augmentation: the network as it is now, not as it was ten steps
ago), and the copy is validated on a fixed val subset (`monitor_images`). The figure is the one
the prune stage will see before finetuning, so a sparse stage whose penalty never moved the gammas
the cut removes says so every epoch instead of at the prune.

The plan machinery (tracing, coupled groups, costs) is the classifier's (engine/slim/monitor.py):
done once per stage, each epoch only re-reads the gammas. `s: auto` (engine/slim/auto_s.py) reads
the same `last` figures as for a classifier, mAP50-95 in place of accuracy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from engine.slim.monitor import PrunedAtTarget

CALIBRATION_IMAGES = 128  # training images a cut detector's BatchNorm statistics are re-estimated on


class DetectPrunedAtTarget(PrunedAtTarget):
    """`mAP50_95_pruned_at_target` (and mAP50) of the EMA model cut at the target, every epoch.

    `evaluate(model)` validates on the monitor's val subset; `calibrate(model)` re-estimates a cut
    copy's BatchNorm statistics; `covers_val` says the subset is the whole val split, where the
    trainer's own validation of the EMA stands in for the unpruned figure.
    """

    metric = "mAP50-95"

    def __init__(self, rule: dict[str, Any], input_shape: tuple[int, ...], images: int,
                 evaluate: Callable[[nn.Module], dict[str, float]], calibrate: Callable[[nn.Module], nn.Module],
                 covers_val: bool) -> None:
        super().__init__(rule, input_shape, images)
        self.evaluate = evaluate
        self.calibrate_fn = calibrate
        self.covers_val = covers_val
        self.seconds = 0.0  # time of the latest measurement (the monitor's cost per epoch)

    def on_fit_start(self, trainer: Any) -> None:
        from engine.slim.inputs import precompute

        model = copy.deepcopy(_ema(trainer)).cpu().float()
        self.inputs = precompute(model, self.input_shape, score=self.rule.get("score") or "max")

    def measure_model(self, model: nn.Module, unpruned: dict[str, float] | None = None) -> dict[str, float]:
        """The figures of `model` and of its copy cut at the target (`unpruned`: the model's own
        validation on the same images, when the caller has it)."""
        import time

        from engine.slim.apply import apply_plan

        t0 = time.perf_counter()
        model = copy.deepcopy(model).cpu().float().eval()
        plan = self.plan(model)
        pruned = self.calibrate_fn(apply_plan(copy.deepcopy(model), plan))
        cut = self.evaluate(pruned)
        own = unpruned if unpruned is not None and "mAP50_95" in unpruned else self.evaluate(model)
        t = plan.totals
        self.last = {
            "acc_unpruned_subset": own["mAP50_95"],
            "acc_pruned_at_target": cut["mAP50_95"],
            "mAP50_pruned_at_target": cut.get("mAP50", 0.0),
            "target_flops_kept": t["flops_after"] / max(1, t["flops_before"]),
            "target_params_kept": t["params_after"] / max(1, t["params_before"]),
            "target_threshold": float(plan.options.get("global_threshold") or 0.0),
            "kept_median": self.kept_median,
        }
        self.seconds = time.perf_counter() - t0
        return self.last

    def measure_trainer(self, trainer: Any, accuracy: float | None = None) -> dict[str, float]:
        metrics = getattr(trainer, "slim_metrics", None)
        return self.measure_model(_ema(trainer), metrics if self.covers_val else None)

    def figures(self) -> dict[str, float]:
        """What a metrics line carries: the pruned-at-target mAPs and the threshold they were cut at."""
        m = self.last
        return {"mAP50_95_pruned_at_target": m["acc_pruned_at_target"],
                "mAP50_pruned_at_target": m["mAP50_pruned_at_target"],
                "target_threshold": m["target_threshold"], "monitor_time": self.seconds}


def _ema(trainer: Any) -> nn.Module:
    ema = getattr(trainer, "ema", None)
    return ema.ema if ema is not None else trainer.model


class DetectLrBudget:
    """Sum of the weights' learning rate over the optimizer steps of each epoch, as Ultralytics'
    trainer schedules it: per-epoch factor `lf` (linear, or one-cycle cosine with `cos_lr`) down to
    `lrf`, a linear warm-up over max(warmup_epochs * batches, 100) iterations from 0, and one
    optimizer step every `accumulate` batches (64 images; 1 at the start of the warm-up)."""

    def __init__(self, args: dict[str, Any], batches: int) -> None:
        epochs, lr0, lrf = int(args["epochs"]), float(args["lr0"]), float(args["lrf"])
        batch = int(args["batch"])
        accumulate = max(round(64 / batch), 1)
        if args.get("cos_lr"):
            def lf(e: float) -> float:
                return ((1 - math.cos(e * math.pi / epochs)) / 2) * (lrf - 1) + 1
        else:
            def lf(e: float) -> float:
                return max(1 - e / epochs, 0) * (1.0 - lrf) + lrf
        warm = max(round(float(args.get("warmup_epochs", 0)) * batches), 100) if args.get("warmup_epochs") else -1
        self.per_epoch: list[float] = []
        last = -1
        for e in range(epochs):
            total = 0.0
            for i in range(batches):
                ni = i + batches * e
                lr = lr0 * lf(e)
                acc = accumulate
                if ni <= warm:
                    lr *= ni / warm
                    acc = max(1, round(1 + (64 / batch - 1) * ni / warm))
                if ni - last >= acc:
                    total += lr
                    last = ni
            self.per_epoch.append(total)

    def epoch(self, e: int) -> float:
        return self.per_epoch[e] if 0 <= e < len(self.per_epoch) else 0.0


def image_batches(loader: Iterable, limit: int) -> list[torch.Tensor]:
    """The first `limit` images of an Ultralytics val-mode loader as float batches in [0, 1]."""
    out, seen = [], 0
    for batch in loader:
        if seen >= limit:
            break
        img = batch["img"][: limit - seen]
        out.append(img.float() / 255.0)
        seen += img.shape[0]
    return out


def calibrated(model: nn.Module, batches: list[torch.Tensor], device: torch.device) -> nn.Module:
    """`model` with every BatchNorm's running statistics re-estimated on `batches` (in place)."""
    from engine.slim.bn_calibrate import recalibrate

    model.to(device)
    recalibrate(model, ((x, None) for x in batches), device)
    return model
