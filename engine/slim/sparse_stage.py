"""What a sparse stage (and a train stage with a target) hands the trainer.

- the L1 penalty on gamma (with each layer's initial gamma, for the relative figures);
- the pruned-at-target monitor when the stage has a target (its own `target`, or for a sparse
  stage the rule of the next prune stage);
- the `s: auto` controller;
- the epoch selection: a sparse stage with a target outputs its epoch with the best
  acc_pruned_at_target (ties to the later, sparser epoch); without a target, its last epoch.
  Plain val accuracy never picks a sparse epoch: the least sparse epoch tends to score best.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.select import Selection


@dataclass
class StageParts:
    callbacks: list[Any] = field(default_factory=list)
    selection: Selection = field(default_factory=Selection)
    monitor: Any = None
    controller: Any = None
    penalty: Any = None
    notes: list[str] = field(default_factory=list)


def target_rule(stages: Sequence[Any], index: int) -> tuple[dict[str, Any] | None, str]:
    """(resolve_plan options, description) of the stage's target, or (None, why there is none)."""
    from engine.slim.target import stage_target

    rule = stage_target(stages, index)
    if rule is None:
        return None, "no target"
    own = getattr(stages[index], "target", None) is rule
    return rule.plan_options(), rule.describe() + ("" if own else f" (from stage {rule.name})")


def selection_for(stage: Any, monitored: bool) -> Selection:
    """The epoch-selection rule of a training stage (see module docstring)."""
    es = getattr(stage, "early_stop", None)
    stop = {"patience": es.patience, "min_delta": es.min_delta} if es is not None else {}
    if stage.type == "sparse":
        mode = stage.select or ("best" if monitored else "last")
        return Selection(mode=mode, metric="acc_pruned_at_target" if monitored else "accuracy",
                         later_on_tie=True, **stop)
    return Selection(mode=getattr(stage, "select", None) or "best", **stop)


def build_parts(
    stage: Any,
    stages: Sequence[Any],
    model: Any,
    arch: dict | None,
    input_shape: tuple[int, ...],
    cfg: Any,
    steps_per_epoch: int,
    log: Callable[[str], None],
) -> StageParts:
    """Callbacks and selection for a train or sparse stage at `stages.index(stage)`."""
    from engine.slim.monitor import PrunedAtTarget

    index = next(i for i, s in enumerate(stages) if s.name == stage.name)
    rule, described = target_rule(stages, index)
    parts = StageParts()
    if rule is not None:
        parts.monitor = PrunedAtTarget(rule, input_shape, stage.monitor_samples)
        parts.notes.append(f"acc_pruned_at_target: pruned at {described}, on {stage.monitor_samples} val images")
    if stage.type == "sparse":
        from engine.slim.gamma_ref import initial_gamma
        from engine.slim.sparse import SparsePenalty

        initial = initial_gamma(arch, model)
        s = 0.0 if stage.s == "auto" else stage.s
        from engine.slim.bn_calibrate import RecalibrateBN

        parts.penalty = SparsePenalty(s=s, decay=stage.decay, exclude=stage.exclude, initial=initial)
        parts.callbacks += [parts.penalty, RecalibrateBN(stage.monitor_samples)]
        if parts.monitor is not None:
            parts.callbacks.append(parts.monitor)
        if stage.s == "auto":
            from engine.slim.auto_s import AutoSController, LrBudget

            momentum = cfg.momentum if cfg.optimizer == "sgd" else 0.9
            parts.controller = AutoSController(parts.penalty, parts.monitor, stage.auto_s,
                                               LrBudget(cfg, steps_per_epoch), momentum, log=log)
            parts.callbacks.append(parts.controller)
    elif parts.monitor is not None:
        parts.callbacks.append(parts.monitor)
    parts.selection = selection_for(stage, parts.monitor is not None)
    parts.notes.append(f"output: {parts.selection.describe()}")
    return parts
