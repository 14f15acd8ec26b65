"""Pruning a checkpoint file: what `slimlab prune` and the inspector's prune key both call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import checkpoint
from engine.errors import CheckpointError
from engine.runs import write_json
from engine.slim.apply import apply_plan
from engine.slim.compose import compose
from engine.slim.plan import PrunePlan
from engine.slim.trace import Progress


def plan_path(out: Path) -> Path:
    """The plan written beside a pruned checkpoint: pruned.pt -> pruned.plan.json."""
    return out.with_suffix(".plan.json")


def default_out(ckpt: Path) -> Path:
    return ckpt.with_name(f"{ckpt.stem}-pruned.pt")


def prune_checkpoint(
    loaded: checkpoint.Loaded, plan: PrunePlan, out: Path, *, source: Path | None = None, plan_out: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Cut `plan` from the loaded model, write the pruned checkpoint and its plan (X.plan.json for
    X.pt, so two prunes into one folder keep both plans).

    The plan saved with the checkpoint is relative to the unpruned architecture (composed with
    any earlier plan), so the file reloads with `weights_only=True` and no pickled code.
    """
    if loaded.source == "module":
        raise CheckpointError(
            f"{source or 'checkpoint'}: holds a pickled model with no architecture slimlab can rebuild, so a pruned "
            "copy would not reload. Save its state_dict and prune that with --arch (a registry name or module:Class)"
        )
    model = apply_plan(loaded.model, plan, progress=progress)  # refuses a cut that breaks the model
    stored = compose(PrunePlan.from_dict(loaded.plan), plan) if loaded.plan else plan
    meta = {**loaded.meta, "pruned_from": str(source) if source else None, "stage": "prune"}
    checkpoint.save(out, model, loaded.arch, plan=stored.to_dict(), meta=meta)
    plan_out = plan_out or plan_path(out)
    write_json(plan_out, stored.to_dict())
    return {"checkpoint": str(out), "plan": str(plan_out), **plan.totals}
