"""Preset keys of the slimming recipe: the plan rule a prune stage (or a sparse stage's target) uses.

A plan rule names how much to cut, in exactly one way:
- `percent`: the global |gamma| percentile (fraction of prunable channels removed);
- `threshold`: an absolute |gamma| threshold;
- `target_flops` / `target_params`: the fraction of the model's FLOPs / parameters kept; resolved
  to a threshold by bisection on the plan's own cost estimate (engine/slim/target.py);
- `max_drop` (prune stages only): the largest ratio whose accuracy without finetuning stays within
  this many accuracy points of the unpruned model (a sweep on the val split).
The other keys (`min_keep`, `round_to`, `score`, `ignore`, `overrides`) shape the plan the same
way for all of them. No torch here: presets validate without it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RULE_KEYS = ("percent", "threshold", "target_flops", "target_params")
# The L1 push moves gamma by about lr * s / (1 - momentum) per optimizer step, so a useful s scales
# with 1 / (steps * lr): the paper's 1e-4 is for 160 CIFAR epochs; short runs need far more.
S_HINT = (
    "s is 'auto' (with a target) or a number in [0, 1]; the L1 push must move gamma within the run, "
    "so s scales with 1 / (epochs * lr): about 1e-4 over 160 epochs, 1e-3 to 3e-2 over 5 to 20 epochs"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LayerOverride(_Strict):
    threshold: float | None = Field(None, ge=0)
    keep: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one(self) -> LayerOverride:
        if (self.threshold is None) == (self.keep is None):
            raise ValueError("give exactly one of threshold or keep")
        return self


MIN_KEEP_HINT = "min_keep is a channel count (a whole number >= 0) or a fraction of the layer in (0, 1)"


def min_keep_value(v: float) -> int | float:
    """The one reading of min_keep everywhere (preset, CLI, plan): a whole number is a count
    (0 allowed: a group may then be cut to its rounding floor, never emptied), below 1 a fraction."""
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ValueError(MIN_KEEP_HINT)
    if float(v).is_integer():
        return int(v)
    if v < 1:
        return float(v)
    raise ValueError(f"{MIN_KEEP_HINT}, not {v}")


class PlanRule(_Strict):
    """How a plan is cut: one of percent / threshold / target_flops / target_params, and its shaping keys."""

    percent: float | None = None
    threshold: float | None = Field(None, ge=0)
    target_flops: float | None = Field(None, gt=0, le=1)  # fraction of FLOPs kept
    target_params: float | None = Field(None, gt=0, le=1)  # fraction of parameters kept
    min_keep: float = Field(1, ge=0)  # >= 1: channel count; < 1: fraction of the layer
    round_to: int = Field(1, ge=1)
    score: Literal["max", "mean", "l2"] = "max"
    ignore: list[str] = Field(default_factory=list)
    overrides: dict[str, LayerOverride] = Field(default_factory=dict)

    @field_validator("min_keep")
    @classmethod
    def _min_keep(cls, v: float) -> float:
        min_keep_value(v)
        return v

    @field_validator("percent")
    @classmethod
    def _percent(cls, v: Any) -> Any:
        for p in [v] if isinstance(v, float | int) else v or []:
            if not 0 <= p < 1:
                raise ValueError(f"percent {p} is outside [0, 1): it is the fraction of channels removed")
        return v

    def rule_keys(self) -> tuple[str, ...]:
        return RULE_KEYS

    @model_validator(mode="after")
    def _exactly_one(self) -> PlanRule:
        keys = self.rule_keys()
        given = [k for k in keys if getattr(self, k) is not None]
        if len(given) != 1:
            listed = ", ".join(keys[:-1]) + " or " + keys[-1]
            what = "both " + " and ".join(given) if len(given) == 2 else ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of {listed} (got {what})")
        return self

    def plan_options(self) -> dict[str, Any]:
        """Keyword arguments of engine.slim.target.resolve_plan (min_keep as count or fraction)."""
        return {
            "percent": self.percent,
            "threshold": self.threshold,
            "target_flops": self.target_flops,
            "target_params": self.target_params,
            "min_keep": min_keep_value(self.min_keep),
            "round_to": self.round_to,
            "score": self.score,
            "ignore": list(self.ignore),
            "overrides": {k: v.model_dump(exclude_none=True) for k, v in self.overrides.items()},
        }

    def describe(self) -> str:
        """The rule in a few words, e.g. 'percent 0.5' or 'target_flops 0.4'."""
        key = next(k for k in self.rule_keys() if getattr(self, k) is not None)
        return f"{key} {getattr(self, key)}"


class PruneRule(PlanRule):
    """A prune stage's rule: a plan rule, or `max_drop` (a sweep picks the ratio)."""

    percent: float | list[float] | None = None  # a list gives one percent per round
    max_drop: float | None = Field(None, gt=0, le=100)  # accuracy points the cut may cost before finetuning

    def rule_keys(self) -> tuple[str, ...]:
        return (*RULE_KEYS, "max_drop")


class TargetSpec(PlanRule):
    """A sparse (or train) stage's own target: the plan its pruned-at-target accuracy is measured at."""


class AutoS(_Strict):
    """Settings of `s: auto` (engine/slim/auto_s.py); the defaults suit most runs."""

    start: float | None = Field(None, gt=0, le=1)  # first s; default: from the lr schedule and gamma scale
    gap: float = Field(0.01, ge=0, le=1)  # pruned-at-target accuracy may trail the unpruned one by this much
    tolerance: float = Field(0.02, ge=0, le=1)  # unpruned accuracy may fall this much below its best
    factor: float = Field(2.0, gt=1, le=10)  # s is multiplied or divided by up to this per epoch
