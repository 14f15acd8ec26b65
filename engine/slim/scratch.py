"""The controls: the pruned architecture (scratch) or a uniformly narrower one (uniform), each
trained from random initialisation.

Pruning papers compare a pruned-and-finetuned model with the same architecture trained from
scratch for the same number of epochs (Liu et al., "Rethinking the Value of Network Pruning",
2019): if scratch matches it, the slimming recipe bought nothing but the architecture.
The scratch model is built like every slimlab checkpoint (build the arch, apply the plan) from
a fresh seeded initialisation; the plan slices the freshly initialised weights, which for the
BatchNorm networks slimming works on only rescales conv weights that BatchNorm normalises anyway.

The uniform control asks whether slimming found a better architecture than shrinking every layer
alike: every prunable group keeps the same fraction of its channels (one width multiplier, through
the plan code, so any model slimlab prunes has one), chosen so the model's FLOPs are closest to the
pruned model's by the plan's own cost estimate.

How long a control trains (`control_epochs`): `epochs` gives it as many epochs as the stages that
made the model it is compared with; `flops` as many training FLOPs (a training step counted as
three forward passes, a teacher's forward pass as one), so the smaller model trains for more epochs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from engine.errors import PresetError

TRAINING_TYPES = ("train", "sparse", "finetune", "distill")
CONTROL_TYPES = ("scratch", "uniform")


def scratch_model(arch: dict, plan: dict, seed: int) -> nn.Module:
    """A randomly initialised model of `arch` cut to `plan` (the pruned architecture)."""
    from engine import checkpoint
    from engine.slim.apply import apply_plan
    from engine.slim.plan import PrunePlan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = checkpoint.build_model(arch)
    return apply_plan(model, PrunePlan.from_dict(plan))


def chain_epochs(stages: Sequence[Any], index: int, epochs_of: Any) -> tuple[int, list[str]]:
    """Epochs of the training stages that made the model stage `index` starts from, and their names.

    Follows the chain back: a stage's input is the output of `start`, a fresh `model` (the chain
    ends), or the previous stage that is not a control. `epochs_of(stage)` gives a stage's epochs.
    """
    by_name = {s.name: i for i, s in enumerate(stages)}
    total, names = 0, []
    i = _input_of(stages, index, by_name)
    while i is not None:
        s = stages[i]
        if s.type in TRAINING_TYPES:
            total += epochs_of(s)
            names.append(s.name)
        if s.model is not None:
            break
        i = _input_of(stages, i, by_name)
    return total, names[::-1]


def _input_of(stages: Sequence[Any], index: int, by_name: dict[str, int]) -> int | None:
    stage = stages[index]
    if stage.model is not None:
        return None
    if stage.start is not None:
        return by_name[stage.start]
    for j in range(index - 1, -1, -1):
        if stages[j].type not in CONTROL_TYPES:
            return j
    return None


def check_pruned(plan: dict | None, stage_name: str) -> dict:
    if not plan:
        raise PresetError(
            f"stage {stage_name}: scratch trains the pruned architecture from random initialisation, but the "
            "model it starts from is not pruned; put it after a prune (and finetune) stage"
        )
    return plan


def control_epochs(stages: Sequence[Any], index: int, epochs_of: Any, flops_of: Any, teacher_flops_of: Any,
                   control_flops: float) -> dict[str, Any]:
    """Both epoch counts of the control at `index` and the chain they come from.

    `flops_of(stage)` is the forward FLOPs of the model a training stage trained, `teacher_flops_of(stage)`
    those of its teacher (0 without one); a training step costs three forward passes."""
    epochs, chain = chain_epochs(stages, index, epochs_of)
    by_name = {s.name: s for s in stages}
    spent = sum(epochs_of(by_name[n]) * (3 * flops_of(by_name[n]) + teacher_flops_of(by_name[n])) for n in chain)
    flops_epochs = max(1, round(spent / (3 * control_flops))) if control_flops > 0 and chain else epochs
    return {"equal_epochs": epochs, "equal_flops": flops_epochs, "chain": chain}


def uniform_plan(arch: dict, pruned_plan: dict, input_shape: Sequence[int]) -> tuple[dict, float]:
    """(plan, width): every prunable group of `arch` keeps the same fraction `width` of its channels,
    with FLOPs closest to what `pruned_plan` keeps (min_keep, round_to and ignore as it had them)."""
    from engine import checkpoint
    from engine.slim.inputs import precompute
    from engine.slim.plan import plan_from_inputs

    options = pruned_plan.get("options", {}) or {}
    totals = pruned_plan.get("totals", {}) or {}
    goal = totals.get("flops_after", 0) / max(1, totals.get("flops_before", 1))
    shape = {"min_keep": options.get("min_keep", 1) or 1, "round_to": options.get("round_to", 1) or 1,
             "ignore": list(options.get("ignore") or [])}
    with torch.random.fork_rng(devices=[]):
        model = checkpoint.build_model(arch).eval()
    inputs = precompute(model, input_shape)

    def plan_at(width: float) -> Any:
        return plan_from_inputs(inputs, threshold=0.0, overrides={"*": {"keep": width}}, **shape)

    def kept(plan: Any) -> float:
        return plan.totals["flops_after"] / max(1, plan.totals["flops_before"])

    lo, hi = 0.0, 1.0  # kept(plan_at(w)) grows with w; bisect to the step at the goal
    for _ in range(30):
        mid = (lo + hi) / 2
        if kept(plan_at(max(mid, 1e-6))) <= goal:
            lo = mid
        else:
            hi = mid
    below, above = plan_at(max(lo, 1e-6)), plan_at(hi)
    best, width = (below, lo) if abs(kept(below) - goal) <= abs(kept(above) - goal) else (above, hi)
    best.options["uniform"] = {"width": round(width, 4), "goal_flops": round(goal, 6), "reached": round(kept(best), 6)}
    return best.to_dict(), width
