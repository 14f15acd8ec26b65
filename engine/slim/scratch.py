"""The scratch control: the pruned architecture trained from random initialisation.

Pruning papers compare a pruned-and-finetuned model with the same architecture trained from
scratch for the same number of epochs (Liu et al., "Rethinking the Value of Network Pruning",
2019): if scratch matches it, the slimming recipe bought nothing but the architecture.
The scratch model is built like every slimlab checkpoint (build the arch, apply the plan) from
a fresh seeded initialisation; the plan slices the freshly initialised weights, which for the
BatchNorm networks slimming works on only rescales conv weights that BatchNorm normalises anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from engine.errors import PresetError

TRAINING_TYPES = ("train", "sparse", "finetune", "distill")


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
        if stages[j].type != "scratch":
            return j
    return None


def check_pruned(plan: dict | None, stage_name: str) -> dict:
    if not plan:
        raise PresetError(
            f"stage {stage_name}: scratch trains the pruned architecture from random initialisation, but the "
            "model it starts from is not pruned; put it after a prune (and finetune) stage"
        )
    return plan
