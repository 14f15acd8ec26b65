"""`s: auto`: the sparsity strength chosen from the pruned-at-target accuracy, epoch by epoch.

The plan. With SGD, the L1 subgradient moves a gamma the loss does not defend by about
lr * s / (1 - momentum) per step. The channels the target cuts score at most the target threshold
`thr` (the |gamma| the target resolves to, read again after every epoch), so

    s = gain * thr * (1 - momentum) / (sum of lr over the next epoch)

lets the penalty alone move a channel at the threshold by `gain` of its size within the epoch
(0.5 to start: half). Every gamma is pushed by the same amount, so channels far above the
threshold (and those the loss defends) keep most of their size, while the threshold, and with it
s, falls epoch by epoch: a push that shrinks with what is left to cut. The push per epoch is
capped at half the median score of the channels the target keeps (the gain at 1): a model whose
gammas all sit near the threshold (a freshly trained ResNet) would otherwise lose every channel
at once. s rises at most `factor` times per epoch (the lr sum shrinks near the end of a cosine
schedule), and not at all into the last epoch, which is left for the network to settle.

The feedback adjusts the gain after each epoch, from two accuracies on the same val subset
(engine/slim/monitor.py), the model's own `acc` and its copy pruned at the target `acc_pt`, and
from how far the threshold actually fell:
- `acc` more than `tolerance` below the best unpruned accuracy seen (the starting model's
  included) and not recovering (up by less than `tolerance` since the last epoch): lower the gain
  (divide by up to `factor`: the full factor for a drop of 10 points or more);
- else `acc_pt` trails `acc` by more than `gap` and the threshold fell less than planned (the loss
  defends those channels harder than the plan assumes): raise the gain by planned / actual fall
  (at most `factor`);
- else hold: the plan is working, or sparse training has done its job.
A deadline bounds the gain from below while the pruned copy trails (and accuracy is not falling):
the threshold must reach 1% of the model's initial gamma (`GOAL_SHARE`: channels that small carry
next to nothing) within the epochs whose s may still rise, so a short stage pushes harder per epoch
than a long one instead of ending with the cut still costly.
With Adam(W) the step size does not scale with the gradient: the plan is then only a start and the
feedback does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GAIN0 = 0.5
GAIN_MIN, GAIN_MAX = 1 / 64, 1.0  # 1: the push alone could carry the threshold channel to zero in an epoch
KEPT_SHARE = 0.5  # the push per epoch stays below this share of the kept channels' median score
S_MIN, S_MAX = 1e-7, 1.0
FULL_STEP_AT = 0.10  # accuracy drop (fraction) that earns the full factor
MIN_STEP_POWER = 0.25
GOAL_SHARE = 0.01  # the target threshold's goal, as a share of the initial gamma (engine/slim/gamma_ref.py)


@dataclass(frozen=True)
class Decision:
    gain: float
    action: str  # raise | lower | hold
    reason: str


def _step(factor: float, shortfall: float) -> float:
    return factor ** min(1.0, max(MIN_STEP_POWER, shortfall / FULL_STEP_AT))


def _moved(fell: float) -> str:
    return f"fell {fell:.0%}" if fell >= 0 else f"rose {-fell:.0%}"


def gain_cap(threshold: float, kept_median: float) -> float:
    """The largest gain whose push (gain * threshold) stays below KEPT_SHARE of the kept median."""
    if threshold <= 0:
        return GAIN_MAX
    return float(min(GAIN_MAX, max(GAIN_MIN, KEPT_SHARE * kept_median / threshold)))


def next_gain(gain: float, acc: float, acc_pt: float, best: float, *, threshold: float, previous: float,
              acc_before: float | None = None, cap: float = GAIN_MAX, gap: float = 0.01,
              tolerance: float = 0.02, factor: float = 2.0, metric: str = "accuracy") -> Decision:
    """The gain for the next epoch from this epoch's accuracies (fractions) and target thresholds.

    `best` is the best unpruned accuracy so far (`acc` included), `acc_before` the unpruned
    accuracy one epoch earlier; `previous` is the target threshold one epoch earlier, `threshold`
    the one now; `cap` bounds the gain (gain_cap); `metric` names the figures in the reasons.
    """
    drop = best - acc
    lag = acc - acc_pt
    recovering = acc_before is not None and acc - acc_before >= tolerance
    if drop > tolerance and recovering:
        return Decision(min(gain, cap), "hold", f"{metric} {acc:.2%} is {drop * 100:.1f} points below its best "
                                                f"{best:.2%} but recovering (up {(acc - acc_before) * 100:.1f} points)")
    if drop > tolerance:
        return Decision(max(GAIN_MIN, min(gain, cap) / _step(factor, drop)), "lower",
                        f"{metric} {acc:.2%} is {drop * 100:.1f} points below its best {best:.2%}")
    fell = 1.0 - threshold / previous if previous > 0 else 1.0
    if lag > gap and fell < gain:
        new = min(cap, gain * min(factor, gain / max(fell, 1e-3)))
        return Decision(max(GAIN_MIN, new), "raise" if new > gain else "hold",
                        f"pruned at target {acc_pt:.2%} trails {acc:.2%} by {lag * 100:.1f} points and the target "
                        f"threshold {_moved(fell)} (planned: fall {gain:.0%}) to {threshold:.3g}"
                        + ("" if new > gain else "; the gain is at its cap"))
    if lag > gap:
        return Decision(min(gain, cap), "hold", f"pruned at target {acc_pt:.2%} trails {acc:.2%} by {lag * 100:.1f} "
                                                f"points; the target threshold fell {fell:.0%} as planned to {threshold:.3g}")
    return Decision(min(gain, cap), "hold",
                    f"pruned at target {acc_pt:.2%} is within {gap * 100:.1f} points of {acc:.2%}")


def deadline_gain(threshold: float, goal: float, epochs_left: int) -> float:
    """The fall per epoch that carries the target threshold down to `goal` in `epochs_left` epochs."""
    if epochs_left < 1 or goal <= 0 or threshold <= goal:
        return 0.0
    return 1.0 - (goal / threshold) ** (1.0 / epochs_left)


def planned_s(gain: float, threshold: float, lr_sum: float, momentum: float, s_max: float = S_MAX) -> float:
    """s for the next epoch (module docstring), clipped to [S_MIN, s_max]."""
    if lr_sum <= 0 or threshold <= 0:
        return S_MIN
    return float(min(s_max, max(S_MIN, gain * threshold * (1.0 - momentum) / lr_sum)))


class LrBudget:
    """Sum of the learning rate over each epoch of a stage with training settings `cfg`."""

    def __init__(self, cfg: Any, steps_per_epoch: int) -> None:
        from engine.train import lr_factor

        total = max(1, cfg.epochs * steps_per_epoch)
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        per_step = [cfg.lr * lr_factor(i, total, warmup, cfg) for i in range(total)]
        self.per_epoch = [sum(per_step[e * steps_per_epoch:(e + 1) * steps_per_epoch]) for e in range(cfg.epochs)]

    def epoch(self, e: int) -> float:
        return self.per_epoch[e] if 0 <= e < len(self.per_epoch) else 0.0


class AutoSController:
    """Trainer callback setting the SparsePenalty's s before each epoch (after the monitor ran).

    On start it measures the starting model on the monitor's subset: its accuracy is the first
    `best` and its target threshold sets the first s (or `settings.start`). State (gain, best,
    threshold, s) is saved in last.pt, so a resumed stage continues where it was.
    """

    def __init__(self, penalty: Any, monitor: Any, settings: Any, budget: LrBudget, momentum: float,
                 log: Any = None, s_max: float = S_MAX) -> None:
        self.penalty = penalty
        self.monitor = monitor
        self.settings = settings
        self.budget = budget
        self.momentum = momentum
        self.s_max = s_max  # a loss summed over its batch (Ultralytics') has gradients that many times larger
        self.gain = GAIN0
        self.best = 0.0
        self.acc = 0.0
        self.threshold = 0.0
        self.log = log or (lambda text: None)
        self.decisions: list[Decision] = []

    def on_fit_start(self, trainer: Any) -> None:
        start = self.monitor.measure_trainer(trainer)
        self.best = self.acc = start["acc_unpruned_subset"]
        self.threshold = start["target_threshold"]
        self.gain = min(GAIN0, gain_cap(self.threshold, start["kept_median"]))
        if self.settings.start:
            self.penalty.s = self.settings.start
            how = "as set"
            # the gain that plan would have given, so later epochs follow on from it
            per = planned_s(1.0, self.threshold, self.budget.epoch(trainer.epoch), self.momentum, self.s_max)
            self.gain = min(GAIN_MAX, max(GAIN_MIN, self.penalty.s / per)) if per > S_MIN else self.gain
        else:
            self.penalty.s = planned_s(self.gain, self.threshold, self.budget.epoch(trainer.epoch), self.momentum, self.s_max)
            how = f"from the target threshold {self.threshold:.3g}"
        self.log(f"s: auto starts at s={self.penalty.s:.3g} ({how}); the starting model scores {self.best:.2%} "
                 f"on the monitor's val images, {start['acc_pruned_at_target']:.2%} pruned at the target")

    def on_epoch_end(self, trainer: Any, epoch: int) -> dict[str, float]:
        m = self.monitor.last
        acc, acc_pt, thr = m["acc_unpruned_subset"], m["acc_pruned_at_target"], m["target_threshold"]
        self.best = max(self.best, acc)
        st = self.settings
        cap = gain_cap(thr, m["kept_median"])
        d = next_gain(self.gain, acc, acc_pt, self.best, threshold=thr, previous=self.threshold,
                      acc_before=self.acc, cap=cap, gap=st.gap, tolerance=st.tolerance, factor=st.factor,
                      metric=getattr(self.monitor, "metric", "accuracy"))
        d = self._deadline(d, acc - acc_pt, thr, cap, trainer.epochs - epoch - 2)
        self.decisions.append(d)
        self.gain, self.threshold, self.acc = d.gain, thr, acc
        if epoch + 1 < trainer.epochs:
            planned = planned_s(self.gain, thr, self.budget.epoch(epoch + 1), self.momentum, self.s_max)
            # the last epoch is for settling: s may fall but not rise into it
            settling = epoch + 2 == trainer.epochs
            s = min(planned, self.penalty.s * (1.0 if settling else st.factor))
            capped = " (no rise into the last epoch, left to settle)" if settling and planned > s else ""
            self.log(f"s: auto after epoch {epoch + 1}: {d.action} (gain {self.gain:.3g}; {d.reason}); "
                     f"s {self.penalty.s:.3g} -> {s:.3g}{capped}")
            self.penalty.s = s
        return {}

    def goal(self) -> float:
        """The target threshold's goal: GOAL_SHARE of the median initial gamma (0: unknown)."""
        initial = [v for v in (getattr(self.penalty, "initial", None) or {}).values() if v > 0]
        return GOAL_SHARE * sorted(initial)[len(initial) // 2] if initial else 0.0

    def _deadline(self, d: Decision, lag: float, thr: float, cap: float, epochs_left: int) -> Decision:
        """`d`, or a raise to the gain that reaches the goal in the epochs whose s may still rise."""
        goal = self.goal()
        if d.action == "lower" or lag <= self.settings.gap or goal <= 0:
            return d
        need = min(cap, deadline_gain(thr, goal, epochs_left))
        if need <= d.gain:
            return d
        return Decision(need, "raise", f"{d.reason}; to reach {goal:.3g} (1% of the initial gamma) in "
                                       f"{epochs_left} epoch(s) the threshold must fall {need:.0%} per epoch")

    def state_dict(self) -> dict[str, float]:
        return {"s": self.penalty.s, "gain": self.gain, "best": self.best, "acc": self.acc,
                "threshold": self.threshold}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.penalty.s = float(state["s"])
        self.gain = float(state["gain"])
        self.best = float(state["best"])
        self.acc = float(state["acc"])
        self.threshold = float(state["threshold"])
