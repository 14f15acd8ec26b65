"""Cut a model to a PrunePlan: exactly the planned channels, through torch_pruning's DepGraph."""

from __future__ import annotations

from torch import nn

from engine.errors import PruneError
from engine.slim.groups import layer_kind
from engine.slim.plan import PrunePlan
from engine.slim.trace import build_graph


def out_channels(module: nn.Module) -> int | None:
    kind = layer_kind(module)
    if kind == "conv":
        return module.out_channels
    if kind == "linear":
        return module.out_features
    if kind == "bn":
        return module.num_features
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if weight is not None and weight.dim() > 0 else None


def check_plan(model: nn.Module, plan: PrunePlan) -> None:
    """PruneError naming the first plan layer missing from `model` or with other channel counts."""
    modules = dict(model.named_modules())
    for g in plan.groups:
        for name, size in g.sizes.items():
            module = modules.get(name)
            if module is None:
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
        if g.sizes[g.root] != g.total:
            raise PruneError(
                f"plan group {g.id}: root '{g.root}' has {g.sizes[g.root]} channels but total is {g.total}"
            )


def apply_plan(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Prune `model` in place to `plan` (validated first) and return it.

    Each group is cut through its root conv with torch_pruning, which carries the cut to every
    coupled layer (BatchNorm, residual partners, concat slices, depthwise convs, consumers' inputs).
    """
    check_plan(model, plan)
    todo = [g for g in plan.groups if g.kept < g.total]
    if not todo:
        return model
    modules = dict(model.named_modules())
    graph = build_graph(model, plan.input_shape)
    planned = [(g, modules[g.root], g.pruned_idxs()) for g in todo]
    # Check every group's coupling before cutting anything, so a mismatch never leaves a half-cut model.
    for g, root, pruned in planned:
        if g.ignored:
            raise PruneError(
                f"plan group {g.id} (root {g.root}) is marked ignored but cuts channels"
            )
        _check_coupling(graph, g, root, pruned)
    for _, root, pruned in planned:
        fn = graph.get_pruner_of_module(root).prune_out_channels
        graph.get_pruning_group(root, fn, pruned).prune()
    return model


def _check_coupling(graph, g, root: nn.Module, pruned: list[int]) -> None:
    if root not in graph.module2node:
        raise PruneError(
            f"plan group {g.id}: root '{g.root}' is not reached by the model's forward pass"
        )
    fn = graph.get_pruner_of_module(root).prune_out_channels
    group = graph.get_pruning_group(root, fn, pruned)
    for item in group:
        if not graph.is_out_channel_pruning_fn(item.dep.handler):
            continue
        name = graph._module2name.get(item.dep.target.module)
        if name and name not in g.sizes:
            raise PruneError(
                f"plan does not match the model: cutting group {g.id} (root '{g.root}') would also cut "
                f"'{name}', which the plan does not couple to it. Rebuild the plan for this model"
            )
