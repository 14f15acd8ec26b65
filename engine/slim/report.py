"""Text a headless run prints about slimming: the prune summary and the sweep curve as a table."""

from __future__ import annotations

from typing import Any

MAX_GROUP_ROWS = 30  # the rest are counted; plan.json holds every group


def _n(v: float) -> str:
    return f"{v:,.0f}"


def share(before: float, after: float) -> str:
    """The fraction removed, never rounded to 100% (or 0%) when something is left (or removed)."""
    frac = 1 - after / max(1, before)
    if after and frac > 0.999:
        return ">99.9%"
    if after != before and frac < 0.001:
        return "<0.1%"
    return f"{frac:.1%}"


_fewer = share


def prune_lines(stage: str, plan: Any) -> list[str]:
    """How the rule resolved, warnings, totals, and one row per group that loses channels."""
    o, t = plan.options, plan.totals
    lines = [f"[{stage}] {_rule(o)}"]
    lines += [f"[{stage}] warning: {w}" for w in plan.warnings]
    lines.append(f"[{stage}] {_channels(t)}, "
                 f"params {_n(t['params_before'])} -> {_n(t['params_after'])} ({_fewer(t['params_before'], t['params_after'])} fewer), "
                 f"FLOPs {_n(t['flops_before'])} -> {_n(t['flops_after'])} ({_fewer(t['flops_before'], t['flops_after'])} fewer)")
    cut = plan.pruned_groups
    if not cut:
        lines.append(f"[{stage}] no group loses channels")
        return lines
    width = min(40, max(len(_group_name(g)) for g in cut[:MAX_GROUP_ROWS]))
    lines.append(f"[{stage}] {'group':<{width}} {'kept':>11} {'removed':>8}  note")
    for g in cut[:MAX_GROUP_ROWS]:
        note = "clamped at min_keep" if g.clamped else ("override " + ", ".join(f"{k} {v:g}" for k, v in g.override.items())
                                                         if g.override else "")
        w = getattr(g, "width", 1)  # channels per unit (grouped convs, even splits)
        lines.append(f"[{stage}] {_group_name(g)[:width]:<{width}} {g.kept * w:>5} / {g.total * w:<5} "
                     f"{1 - g.kept / g.total:>8.0%}  {note}".rstrip())
    if len(cut) > MAX_GROUP_ROWS:
        lines.append(f"[{stage}] ... {len(cut) - MAX_GROUP_ROWS} more groups lose channels (plan.json lists all)")
    whole = len(plan.groups) - len(cut)
    if whole:
        lines.append(f"[{stage}] {whole} group(s) kept whole")
    return lines


def _channels(t: dict[str, Any]) -> str:
    """The channel headline counts the prunable channels: those the rule may cut. The fixed ones (a
    classifier's outputs, a stem's input, channels tied to them) would dilute the figure, so the whole
    count follows in brackets only when it differs."""
    before, after = t.get("prunable_before"), t.get("prunable_after")
    if before is None or after is None:  # a plan written before the totals had them
        before, after = t["channels_before"], t["channels_after"]
        return f"channels {_n(before)} -> {_n(after)} ({_fewer(before, after)} removed)"
    text = f"prunable channels {_n(before)} -> {_n(after)} ({_fewer(before, after)} removed)"
    if (t["channels_before"], t["channels_after"]) != (before, after):
        text += f" [all channels {_n(t['channels_before'])} -> {_n(t['channels_after'])}]"
    return text


def _group_name(g: Any) -> str:
    names = g.layers or g.convs or [g.root]
    return names[0] + (f" +{len(names) - 1}" if len(names) > 1 else "")


def _rule(o: dict[str, Any]) -> str:
    thr = o.get("global_threshold")
    thr_text = f"|gamma| threshold {thr:.4g}" if thr is not None else "no global threshold"
    target = o.get("target") or {}
    if "max_drop" in target:
        return (f"max_drop {target['max_drop']:g}: largest ratio within the drop is {target['ratio']:g} "
                f"({target['drop']:.2f} points before finetuning) -> {thr_text}")
    for key, what in (("target_flops", "FLOPs"), ("target_params", "parameters")):
        if key in target:
            return (f"{key} {target[key]:g} -> {thr_text}, keeping {target['reached']:.1%} of the {what} "
                    "(the plan's estimate)")
    if o.get("percent") is not None:
        return f"percent {o['percent']:g} -> {thr_text}"
    return f"threshold {o.get('threshold'):g}"


def _sweep_metric(rows: list[dict[str, Any]]) -> Any:
    """The metric a sweep measured: mAP50-95 for a detector, else accuracy (engine/task.py)."""
    from engine.task import ACCURACY, MAP

    return MAP if rows and MAP.key in rows[0] else ACCURACY


def sweep_table(stage: str, rows: list[dict[str, Any]]) -> list[str]:
    """The sweep curve as text: ratio, the metric (accuracy, mAP50-95), drop in points from ratio 0,
    params and FLOPs kept."""
    if not rows:
        return [f"[{stage}] no ratios"]
    m = _sweep_metric(rows)
    base = rows[0]
    lines = [f"[{stage}] {m.label} without finetuning, pruned at each ratio",
             f"[{stage}] {'ratio':>5} {m.label:>9} {'drop':>7} {'params':>8} {'FLOPs':>8}  "]
    for r in rows:
        value = r[m.key]
        drop = (base[m.key] - value) * 100
        bar = "#" * int(round(20 * value))
        shown = f"{value:>9.2%}" if m.percent else f"{value:>9.4f}"
        lines.append(f"[{stage}] {r['ratio']:>5.2f} {shown} {drop:>7.2f} "
                     f"{r['params'] / max(1, base['params']):>8.1%} {r['flops'] / max(1, base['flops']):>8.1%}  {bar}")
    return lines


def sweep_plot(stage: str, rows: list[dict[str, Any]], width: int = 70, height: int = 14) -> str:
    """The sweep curve as a plotext plot (for a terminal): the metric in % against the ratio."""
    import plotext as plt

    m = _sweep_metric(rows)
    plt.clear_figure()
    plt.plotsize(width, height)
    plt.plot([r["ratio"] for r in rows], [100 * r[m.key] for r in rows], marker="dot")
    plt.title(f"{stage}: {m.label} % without finetuning vs ratio of channels removed")
    plt.xlabel("ratio")
    plt.ylim(0, 100)
    return plt.build()
