"""The prune and sweep stages of a run, for every task: they ask the run's task (engine/task.py) how to
evaluate a cut copy (its metric on the val split, after BatchNorm recalibration) and at what input
size to trace the model; the plan code itself does not know what the model computes.
"""

from __future__ import annotations

import copy
from typing import Any

from engine.runs import write_json
from engine.slim.spec import min_keep_value


def pruned_metrics(run: Any, images: int | None = None) -> Any:
    """evaluate(pruned copy) -> the task's metric dict, its BatchNorm statistics re-estimated first."""
    task = run.task
    return lambda model: task.evaluate(task.calibrate(model), images)


def prune_stage(run: Any, stage: Any) -> dict[str, Any]:
    """Cut the current model by the stage's rule (a percent, threshold, FLOPs/params target, or the
    largest ratio within `max_drop` points); keep plan.json and weights/<stage>.pt."""
    from engine.slim.apply import apply_plan
    from engine.slim.target import plan_for_rule

    task = run.task
    metric = task.kind.metric.key
    cur = run.start(stage)
    run.original = run.current_output(stage) or run.save_original(cur)
    model = copy.deepcopy(cur.model).cpu().eval()
    plan, rows = plan_for_rule(model, task.input_shape(), stage, evaluate=pruned_metrics(run), metric=metric)
    if rows is not None and run.dist.is_main:
        write_json(run.writer.path / f"{stage.name}.sweep.json", {"stage": stage.name, "metric": metric, "rows": rows})
    apply_plan(model, plan)
    task.calibrate(model)
    pruned, out = run.keep_cut(stage, cur, model, plan)
    plan_dict = pruned.plan
    totals = plan_dict.get("totals", {})
    target = plan_dict["options"].get("target")
    rule = {k: getattr(stage, k) for k in stage.rule_keys() if getattr(stage, k) is not None}
    return (task.measure(pruned, out) | rule | {"threshold": plan_dict["options"].get("global_threshold")}
            | ({"target": target} if target else {}) | {f"plan_{k}": v for k, v in totals.items()})


def sweep_stage(run: Any, stage: Any) -> dict[str, Any]:
    """The task's metric of copies cut at each ratio, before finetuning: where the cliff is (sweep.json)."""
    from engine.slim.sweep import sweep

    task = run.task
    metric = task.kind.metric.key
    cur = run.start(stage)
    rows = sweep(
        copy.deepcopy(cur.model).cpu().eval(), task.input_shape(), pruned_metrics(run, stage.val_images),
        ratios=stage.ratios, min_keep=min_keep_value(stage.min_keep), round_to=stage.round_to, score=stage.score,
        ignore=stage.ignore,
    )
    if run.dist.is_main:
        write_json(run.writer.path / "sweep.json", {"stage": stage.name, "metric": metric, "rows": rows})
        if hasattr(run.reporter, "sweep_curve"):
            run.reporter.sweep_curve(stage.name, rows)
    return {"ratios": len(rows), f"{metric}_at_0": rows[0].get(metric) if rows else None, "rows": rows}
