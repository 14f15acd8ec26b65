"""Cut a model to a PrunePlan: exactly the planned channels, checked on a dummy batch.

The model is traced (engine/slim/trace.py), the plan's groups are matched to the traced ones by
root layer, and every layer holding a cut unit loses it (engine/slim/cut.py). With `verify` (the
default for every prune) the pruned model must then compute what the original computes with the
cut channels zeroed (engine/slim/verify.py); if it does not, the model is restored, the group that
breaks it is found by bisection, and a PruneError names it. Reloading a saved checkpoint skips the
check: its plan was checked when it was made.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from torch import nn

from engine.errors import PruneError
from engine.slim.cut import Undo, cut_atoms, cut_model
from engine.slim.gamma import bn_channels
from engine.slim.groups import ChannelGroup, groups_from_trace
from engine.slim.plan import PlanGroup, PrunePlan
from engine.slim.trace import Progress, TraceBudget, layer_kind, trace_for
from engine.slim.verify import compare, dummy_batch, masked, outputs


def out_channels(module: nn.Module) -> int | None:
    kind = layer_kind(module)
    if kind == "conv":
        return module.out_channels
    if kind == "linear":
        return module.out_features
    if kind == "bn":
        return bn_channels(module)
    weight = getattr(module, "weight", getattr(module, "indexes", None))
    return int(weight.shape[0]) if weight is not None and weight.dim() > 0 else None


def check_plan(model: nn.Module, plan: PrunePlan) -> None:
    """PruneError naming the first plan layer missing from `model` or with other channel counts."""
    modules = dict(model.named_modules())
    tensors = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    for g in plan.groups:
        for name, size in g.sizes.items():
            module = modules.get(name)
            if module is None:
                if name in tensors:
                    continue  # a parameter cut outside a layer: checked against the trace
                raise PruneError(
                    f"plan does not match the model: layer '{name}' (group {g.id}) is not in "
                    f"{type(model).__name__}. Was the plan made for another architecture?"
                )
            actual = out_channels(module)
            if actual != size:
                raise PruneError(
                    f"plan does not match the model: layer '{name}' has {actual} output channels in "
                    f"the model but {size} in the plan (group {g.id}). Was the plan made for another "
                    "width, or is the model already pruned?"
                )
        if g.root not in g.sizes:
            raise PruneError(
                f"plan group {g.id}: root '{g.root}' has no recorded size; the plan is malformed"
            )


def apply_plan(
    model: nn.Module,
    plan: PrunePlan,
    *,
    verify: bool = True,
    budget: TraceBudget | None = None,
    progress: Progress | None = None,
) -> nn.Module:
    """Prune `model` in place to `plan` (validated first) and return it. See module docstring."""
    check_plan(model, plan)
    todo = [g for g in plan.groups if g.kept < g.total]
    if not todo:
        return model
    for g in todo:
        if g.ignored:
            raise PruneError(f"plan group {g.id} (root {g.root}) is marked ignored but cuts channels")
    if not verify:
        _cut(model, plan, todo, budget, progress)
        return model
    undo = Undo()
    problem = _cut(model, plan, todo, budget, progress, check=True, undo=undo)
    if problem:
        undo.restore()  # leave the caller's model whole
        raise PruneError(_blame(model, plan, todo, problem))
    return model


def _cut(model: nn.Module, plan: PrunePlan, todo: Sequence[PlanGroup], budget: TraceBudget | None,
         progress: Progress | None, check: bool = False, undo: Undo | None = None) -> str | None:
    """Cut `todo` from `model`; with `check`, what the dummy batch shows is wrong (None if nothing)."""
    trace = trace_for(model, plan.input_shape, budget=budget, progress=progress)  # precompute's, when it traced this model
    groups = groups_from_trace(trace)
    cut = resolve_cut(plan, todo, groups)
    if not check:
        cut_model(model, trace, groups, cut, undo)
        return None
    device = next((p.device for p in model.parameters()), None)
    x = dummy_batch(trace.input_shape, device or "cpu")  # the traced shape: small for a size_multiple model
    with masked(trace, cut_atoms(groups, cut)):
        ref = outputs(model, x)
    try:
        cut_model(model, trace, groups, cut, undo)
        return compare(ref, outputs(model, x))
    except PruneError:
        raise
    except Exception as exc:  # the pruned model's own code failing is what this check is for
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"fails to run ({type(exc).__name__}: {text[:200]})"


def _blame(snapshot: nn.Module, plan: PrunePlan, todo: list[PlanGroup], problem: str) -> str:
    """The message naming the group (found by bisection on copies of the whole model) whose cut breaks it."""

    def fails(part: list[PlanGroup]) -> bool:
        return _cut(copy.deepcopy(snapshot), plan, part, None, None, check=True) is not None

    suspects = list(todo)
    while len(suspects) > 1:
        half = len(suspects) // 2
        if fails(suspects[:half]):
            suspects = suspects[:half]
        elif fails(suspects[half:]):
            suspects = suspects[half:]
        else:
            break
    if len(suspects) == 1:
        g = suspects[0]
        who = f"cutting group {g.id} (root {g.root}: {', '.join(list(g.sizes)[:4])}{' ...' if len(g.sizes) > 4 else ''})"
        fix = f"Leave it whole (--ignore '{g.root}') and report this layer pattern"
    else:
        who = "cutting groups " + ", ".join(str(g.id) for g in suspects[:6]) + " together"
        fix = "Leave one of them whole with --ignore and report this layer pattern"
    return (
        f"refusing this prune: {who} breaks the model. On a dummy batch the pruned model {problem}, "
        f"while the original with those channels zeroed does not. {fix}"
    )


def _find(groups: list[ChannelGroup], root: str) -> ChannelGroup | None:
    for g in groups:
        if g.root == root:
            return g
    return next((g for g in groups if root in g.out_names()), None)


def resolve_cut(plan: PrunePlan, todo: Sequence[PlanGroup], groups: list[ChannelGroup]) -> dict[int, np.ndarray]:
    """{traced group id: unit indices to cut} for the plan groups `todo`, checked against the trace."""
    cut: dict[int, set[int]] = {}
    for pg in todo:
        g = _find(groups, pg.root)
        if g is None:
            raise PruneError(
                f"plan does not match the model: group {pg.id} is rooted at '{pg.root}', whose channels "
                "are in no channel group of this model. Rebuild the plan for this model"
            )
        extra = [n for n in g.sizes if n not in pg.sizes]
        if extra and plan.version >= 2:
            raise PruneError(
                f"plan does not match the model: cutting group {pg.id} (root '{pg.root}') would also cut "
                f"'{extra[0]}', which the plan does not couple to it. Rebuild the plan for this model"
            )
        for name, size in pg.sizes.items():
            if name in g.sizes and g.sizes[name] != size:
                raise PruneError(
                    f"plan does not match the model: '{name}' has {g.sizes[name]} channels in the model but "
                    f"{size} in plan group {pg.id}. Rebuild the plan for this model"
                )
        units = _v1_units(pg, g) if plan.version < 2 else _units(pg, g)
        if g.fixed.size and g.fixed[units].any():
            u = int(units[g.fixed[units]][0])
            raise PruneError(
                f"plan group {pg.id} (root {pg.root}) cuts channels that cannot be cut: {g.unit_reasons[u]}. "
                "Rebuild the plan for this model"
            )
        cut.setdefault(g.id, set()).update(int(u) for u in units)
    return {gid: np.array(sorted(u), dtype=np.int64) for gid, u in cut.items()}


def _units(pg: PlanGroup, g: ChannelGroup) -> np.ndarray:
    if g.total != pg.total or g.width != pg.width:
        raise PruneError(
            f"plan does not match the model: group {pg.id} (root '{pg.root}') has {g.total} units of "
            f"{g.width} channel(s) in the model but {pg.total} of {pg.width} in the plan. Rebuild the plan"
        )
    return np.setdiff1d(np.arange(g.total), np.asarray(pg.kept_idxs, dtype=np.int64))


def _v1_units(pg: PlanGroup, g: ChannelGroup) -> np.ndarray:
    """A plan made before units: kept_idxs are channels of its root layer."""
    member = next((m for m in g.members if m.side == "out" and m.name == pg.root), None)
    if member is None or member.idxs.size != pg.total:
        raise PruneError(
            f"plan group {pg.id} (root '{pg.root}') was made by an older slimlab and does not map onto this "
            "model's channel groups: rebuild the plan"
        )
    unit_of = np.empty(pg.total, dtype=np.int64)
    unit_of[member.idxs] = member.root_idxs
    kept = np.zeros(pg.total, dtype=bool)
    kept[pg.kept_idxs] = True
    cut_units, kept_units = np.unique(unit_of[~kept]), np.unique(unit_of[kept])
    if np.intersect1d(cut_units, kept_units).size:
        raise PruneError(
            f"plan group {pg.id} (root '{pg.root}') was made by an older slimlab and cuts channels this "
            "version keeps together: rebuild the plan"
        )
    return cut_units
