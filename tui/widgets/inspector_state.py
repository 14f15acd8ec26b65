"""What the inspector holds besides widgets: the plan settings, input parsing, and summary text.

The plan itself always comes from `engine.slim.plan_from_inputs`; this module only keeps the
knobs the user turns and turns text typed into modals into values the engine accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from rich.text import Text

from tui.widgets.ckpt_format import fmt_count
from tui.widgets.histogram import fmt_gamma

STEP = 0.01  # one arrow press moves the cut by 1% of the prunable channels
MAX_PERCENT = 0.99


@dataclass(frozen=True)
class PlanSettings:
    """The options handed to `engine.slim.target.resolve_plan`: exactly one of percent, threshold,
    target_flops or target_params (fraction kept) is set."""

    percent: float | None = 0.5
    threshold: float | None = None
    min_keep: int | float = 1
    round_to: int = 1
    overrides: dict[str, dict[str, float]] = field(default_factory=dict)
    target_flops: float | None = None
    target_params: float | None = None

    def options(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "threshold": self.threshold,
            "target_flops": self.target_flops,
            "target_params": self.target_params,
            "min_keep": self.min_keep,
            "round_to": self.round_to,
            "overrides": {k: dict(v) for k, v in self.overrides.items()},
        }

    @property
    def target(self) -> tuple[str, float] | None:
        """('target_flops' | 'target_params', fraction kept) when a cost target sets the cut."""
        if self.target_flops is not None:
            return "target_flops", self.target_flops
        if self.target_params is not None:
            return "target_params", self.target_params
        return None

    def with_percent(self, percent: float) -> PlanSettings:
        return replace(self, percent=percent, threshold=None, target_flops=None, target_params=None)

    def with_threshold(self, threshold: float) -> PlanSettings:
        return replace(self, percent=None, threshold=threshold, target_flops=None, target_params=None)

    def with_target(self, kind: str, fraction: float) -> PlanSettings:
        """Keep at most `fraction` of the FLOPs ('target_flops') or parameters ('target_params')."""
        cleared = replace(self, percent=None, threshold=None, target_flops=None, target_params=None)
        return replace(cleared, **{kind: fraction})

    def with_override(self, pattern: str, rule: dict[str, float] | None) -> PlanSettings:
        overrides = {k: dict(v) for k, v in self.overrides.items()}
        if rule is None:
            overrides.pop(pattern, None)
        else:
            overrides[pattern] = dict(rule)
        return replace(self, overrides=overrides)


def settings_from_spec(meta: dict[str, Any]) -> PlanSettings:
    """Start from the first prune stage of the spec the checkpoint was trained with, if it has one."""
    stages = ((meta or {}).get("spec") or {}).get("stages") or []
    for stage in stages:
        if not isinstance(stage, dict) or stage.get("type") != "prune":
            continue
        percent, threshold = stage.get("percent"), stage.get("threshold")
        if isinstance(percent, list):
            percent = percent[0] if percent else None
        min_keep = stage.get("min_keep", 1)
        min_keep = int(min_keep) if isinstance(min_keep, (int, float)) and min_keep >= 1 else min_keep
        overrides = {
            str(k): {kk: float(vv) for kk, vv in v.items() if vv is not None}
            for k, v in (stage.get("overrides") or {}).items()
            if isinstance(v, dict)
        }
        base = PlanSettings(min_keep=min_keep, round_to=int(stage.get("round_to", 1)), overrides=overrides)
        for kind in ("target_flops", "target_params"):
            if isinstance(stage.get(kind), (int, float)):
                return base.with_target(kind, float(stage[kind]))
        if threshold is not None:
            return base.with_threshold(float(threshold))
        if isinstance(percent, (int, float)):
            return base.with_percent(float(percent))
        return base
    return PlanSettings()


# ---------------------------------------------------------------- parsing modal input


def parse_float(text: str, what: str) -> float:
    s = text.strip()
    try:
        value = float(s)
    except ValueError:
        raise ValueError(f"{what}: {s!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what}: {s!r} is not a finite number")
    return value


def parse_percent(text: str) -> float:
    """'0.3' or '30%' -> 0.3. Range checks are the engine's."""
    s = text.strip()
    if s.endswith("%"):
        return parse_float(s[:-1], "percent") / 100.0
    return parse_float(s, "percent")


def parse_fraction_kept(text: str, what: str) -> float:
    """'0.5' or '50%' -> 0.5 (the fraction of FLOPs or parameters kept). Range checks are the engine's."""
    s = text.strip()
    if s.endswith("%"):
        return parse_float(s[:-1], what) / 100.0
    return parse_float(s, what)


def parse_min_keep(text: str) -> int | float:
    """'3' -> 3 channels; '0.25' -> a quarter of each group (the engine's two forms)."""
    s = text.strip()
    if s.lstrip("+-").isdigit():
        return int(s)
    return parse_float(s, "min_keep")


def parse_round_to(text: str) -> int:
    s = text.strip()
    if not s.lstrip("+-").isdigit():
        raise ValueError(f"round_to: {s!r} is not a whole number (e.g. 8)")
    return int(s)


OVERRIDE_HELP = "type keep 0.5 (keep half the channels) or thr 0.02 (cut below |gamma| 0.02)"


def parse_override(text: str) -> dict[str, float]:
    """'keep 0.5', 'keep 50%', 'thr 0.02', 'threshold 0.02'; a bare number is a keep ratio."""
    words = text.strip().lower().split()
    if not words:
        raise ValueError(OVERRIDE_HELP)
    if len(words) == 1:
        kind, value = "keep", words[0]
        try:
            float(value.removesuffix("%"))
        except ValueError:
            raise ValueError(f"{text.strip()!r}: {OVERRIDE_HELP}") from None
    elif len(words) == 2 and words[0] in ("keep", "k"):
        kind, value = "keep", words[1]
    elif len(words) == 2 and words[0] in ("thr", "threshold", "t"):
        kind, value = "threshold", words[1]
    else:
        raise ValueError(f"{text.strip()!r}: {OVERRIDE_HELP}")
    if kind == "keep":
        ratio = parse_float(value[:-1], "keep") / 100 if value.endswith("%") else parse_float(value, "keep")
        if not 0 < ratio <= 1:
            raise ValueError(f"keep {value}: a keep ratio is above 0 and at most 1 (0.5 or 50% keeps half)")
        return {"keep": ratio}
    thr = parse_float(value, "thr")
    if thr < 0:
        raise ValueError(f"thr {value}: a |gamma| threshold is 0 or more (e.g. thr 0.02)")
    return {"threshold": thr}


def fmt_override(rule: dict[str, float] | None) -> str:
    """The rule as the override input takes it: 'keep 0.5', 'thr 0.02'."""
    if not rule:
        return ""
    kind, value = next(iter(rule.items()))
    return f"keep {value:g}" if kind == "keep" else f"thr {value:g}"


def override_pattern(group: Any) -> str:
    """The layer name a group's override is keyed by: the one the table shows (its first BatchNorm)."""
    return (list(group.layers) or [group.root])[0]


# ---------------------------------------------------------------- stepping


def cut_fraction(sorted_prunable: np.ndarray, threshold: float) -> float:
    """Fraction of prunable channels scoring below `threshold` (what a percent would cut)."""
    n = sorted_prunable.size
    if not n:
        return 0.0
    return float(np.searchsorted(sorted_prunable, threshold, side="left")) / n


def stepped_percent(current: float, steps: int) -> float:
    p = round(current + steps * STEP, 4)
    return min(max(p, 0.0), MAX_PERCENT)


def cut_scores(inputs: Any, plan: Any) -> np.ndarray | None:
    """Scores of the prunable channels `plan` cuts, or None when those are exactly the ones
    below its global threshold (the common case, which the histogram derives itself)."""
    arr = inputs.arrays()
    thr = plan.options.get("global_threshold")
    t = plan.totals
    cut = t["prunable_before"] - t["prunable_after"]
    if not plan.options.get("overrides") and thr is not None:
        below = int(np.searchsorted(arr.sorted_prunable, thr, side="left"))
        if below == cut:  # without overrides the cut is a subset of those below: equal counts, equal sets
            return None
    kept = np.array([g.kept for g in plan.groups], dtype=np.int64)
    cut_mask = np.repeat(inputs.prunable, inputs.totals) & (arr.rank >= np.repeat(kept, inputs.totals))
    return arr.scores[cut_mask]


# ---------------------------------------------------------------- text


def fmt_change(before: float, after: float) -> str:
    if not before:
        return f"{fmt_count(before)}→{fmt_count(after)}"
    return f"{fmt_count(before)}→{fmt_count(after)} (−{100 * (1 - after / before):.1f}%)"


def fmt_min_keep(v: int | float) -> str:
    """A count as is; a fraction of each group as a percentage."""
    return f"{100 * v:g}%" if isinstance(v, float) else str(v)


def summary_text(plan: Any, settings: PlanSettings) -> Text:
    """Three lines: percent, threshold or target (with the key that changes it), the cut, then
    the floors (min_keep, round_to, overrides) and the warnings."""
    t = plan.totals
    thr = plan.options.get("global_threshold")
    by_percent = settings.percent is not None
    target = settings.target
    percent = settings.percent if by_percent else plan.options.get("percent")
    prunable = t["prunable_before"]
    removed = prunable - t["prunable_after"]
    text = Text()

    def knob(key: str, label: str, value: str, active: bool = True) -> None:
        text.append(f"[{key}]", "dim")
        text.append(f" {label} ", "" if active else "dim")
        text.append(value, "bold" if active else "dim")
        text.append("  ")

    share = removed / prunable if prunable else 0.0
    knob("p", "percent", f"{100 * (percent if percent is not None else share):.1f}%", by_percent)
    # min_keep, round_to or overrides moved the cut off the percent asked for (beyond rounding)
    if by_percent and abs(removed - percent * prunable) > 1:
        text.append("→ cuts ", "yellow")
        text.append(f"{100 * share:.1f}%", "bold yellow")
        text.append("  ")
    knob("t", "threshold", "-" if thr is None else fmt_gamma(thr), not by_percent and target is None)
    if target is not None:
        kind, fraction = target
        what = "FLOPs" if kind == "target_flops" else "params"
        reached = (plan.options.get("target") or {}).get("reached")
        knob("f" if kind == "target_flops" else "F", f"{what} kept ≤", f"{100 * fraction:.1f}%")
        if reached is not None:
            text.append(f"→ {100 * reached:.1f}%  ", "dim")
    text.append("\nchannels ", "dim")
    text.append(f"−{removed}/{prunable}", "bold")
    text.append("  params ", "dim")
    text.append(fmt_change(t["params_before"], t["params_after"]))
    text.append("  FLOPs ", "dim")
    text.append(fmt_change(t["flops_before"], t["flops_after"]))
    text.append("\n")
    # the floors beside the warnings they cause: each line fits 80 columns with its figures
    knob("k", "min_keep", fmt_min_keep(settings.min_keep))
    knob("r", "round_to", str(settings.round_to))
    if settings.overrides:
        knob("enter", "overrides", str(len(settings.overrides)))
    clamped = [g for g in plan.groups if g.clamped]
    if clamped:
        text.append(f"⚠ {len(clamped)} group(s) clamped by min_keep: ", "bold yellow")
        text.append(", ".join(group_name(g) for g in clamped[:4]) + (" …" if len(clamped) > 4 else ""), "yellow")
    others = [w for w in plan.warnings if "below min_keep" not in w]
    if others:
        text.append(("  " if clamped else "") + "⚠ " + "; ".join(others), "yellow")
    if not clamped and not others:
        text.append("no warnings", "dim")
    return text


def group_name(group: Any) -> str:
    """A group's label: its first BatchNorm (or root layer), with +N when it has more."""
    names = list(group.layers) or [group.root]
    return names[0] + (f" +{len(names) - 1}" if len(names) > 1 else "")


@dataclass(frozen=True)
class GroupGammas:
    """Per-group |gamma| scores (the values the plan ranks), computed once after loading."""

    values: np.ndarray
    min: float | None
    median: float | None
    max: float | None


def group_gammas(inputs: Any) -> dict[int, GroupGammas]:
    """Each group's channel scores; groups slimming leaves whole fall back to their BatchNorm |gamma|."""
    arr = inputs.arrays()
    out: dict[int, GroupGammas] = {}
    for g in inputs.groups:
        lo, hi = int(inputs.offsets[g.id]), int(inputs.offsets[g.id + 1])
        values = arr.scores[lo:hi]
        if not np.isfinite(values).all():
            layers = [inputs.gammas[name] for name in g.layers if name in inputs.gammas]
            values = np.max(np.stack(layers), axis=0) if layers and all(a.size == g.total for a in layers) else np.zeros(0)
        values = np.asarray(values, dtype=np.float32)
        if values.size:
            out[g.id] = GroupGammas(values, float(values.min()), float(np.median(values)), float(values.max()))
        else:
            out[g.id] = GroupGammas(values, None, None, None)
    return out


# ---------------------------------------------------------------- the sweep's data

SWEEP_RATIOS = tuple(round(0.1 * i, 2) for i in range(10))
FALLBACK_TRAIN = 512  # only normalisation statistics come from the train split
FALLBACK_VAL = 500


def sweep_dataset(meta: dict[str, Any], num_classes: int, input_shape: tuple[int, ...]) -> tuple[Any, str]:
    """The data the sweep evaluates on, and a line saying which.

    The checkpoint's own data spec (meta["spec"]["data"]) when it has one; else the generated
    shapes set sized to the model (classes, input side).
    """
    from engine.config import DataSpec

    data = ((meta or {}).get("spec") or {}).get("data")
    if isinstance(data, dict):
        spec = DataSpec.model_validate(data)
        size = f", {spec.val_size} images" if spec.dataset == "shapes" else ""
        return spec, f"{spec.dataset} from the checkpoint's spec (validation split{size})"
    channels, side = int(input_shape[-3]), int(input_shape[-1])
    if channels != 3:
        raise ValueError(
            f"the checkpoint has no data spec and the shapes fallback draws 3-channel images, "
            f"but the model takes {channels} channels"
        )
    if not 2 <= num_classes <= 10:
        raise ValueError(
            f"the checkpoint has no data spec and the shapes fallback has 2-10 classes, "
            f"but the model predicts {num_classes}"
        )
    spec = DataSpec(dataset="shapes", num_classes=num_classes, image_size=side,
                    train_size=FALLBACK_TRAIN, val_size=FALLBACK_VAL)
    return spec, f"shapes fallback: {num_classes} classes, {side}px, {FALLBACK_VAL} images (the checkpoint has no data spec)"
