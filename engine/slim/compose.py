"""Composing plans: a second prune on an already pruned model becomes one plan on the original.

A checkpoint holds a single plan relative to the unpruned architecture, so rounds of
sparse -> prune -> finetune keep reloading with `build arch, apply plan, load state_dict`.
"""

from __future__ import annotations

from dataclasses import replace

from engine.errors import PruneError
from engine.slim.plan import PrunePlan


def compose(first: PrunePlan, second: PrunePlan) -> PrunePlan:
    """`second` was computed on the model that `first` produced; return the plan doing both."""
    if first.version < 2:
        raise PruneError(
            "the earlier prune was saved by an older slimlab (plan version 1), which numbered channels "
            "differently, so a second prune cannot be composed onto it: prune the original (unpruned) "
            "checkpoint at the combined ratio instead"
        )
    by_root = {g.root: g for g in first.groups}
    groups = []
    for g2 in second.groups:
        g1 = by_root.pop(g2.root, None)
        if g1 is None:
            raise PruneError(f"cannot compose plans: group {g2.root} is not in the earlier plan")
        if len(g2.kept_idxs) == g2.total:
            # the second prune cuts nothing here: the first's decision stands whatever units the second
            # trace found (a group the plan never cuts, e.g. a YOLOv5 Detect head's outputs through its
            # anchor decoding, may be split into a different number of units at another width)
            groups.append(replace(g2, id=g1.id, total=g1.total, kept_idxs=list(g1.kept_idxs),
                                  sizes=dict(g1.sizes), width=g1.width))
            continue
        if g2.total != g1.kept:
            raise PruneError(
                f"cannot compose plans: group {g2.root} has {g2.total} channels in the second plan "
                f"but the first kept {g1.kept}"
            )
        kept = [g1.kept_idxs[i] for i in g2.kept_idxs]
        groups.append(replace(g2, id=g1.id, total=g1.total, kept_idxs=kept, sizes=dict(g1.sizes)))
    if by_root:
        raise PruneError(f"cannot compose plans: groups missing from the second plan: {', '.join(sorted(by_root))}")
    totals = dict(second.totals)
    for key in ("channels_before", "prunable_before", "params_before", "flops_before"):
        if key in first.totals:
            totals[key] = first.totals[key]
    options = {**second.options, "earlier": [first.options, *first.options.get("earlier", [])]}
    groups.sort(key=lambda g: g.id)
    return PrunePlan(first.input_shape, groups, options, totals, list(second.warnings))
