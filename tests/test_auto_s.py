"""`s: auto`: the controller's direction on synthetic signals, its plan, and its state across a resume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from engine.config import TrainingSpec
from engine.slim.auto_s import (
    GAIN0,
    GAIN_MAX,
    GAIN_MIN,
    AutoSController,
    LrBudget,
    deadline_gain,
    gain_cap,
    next_gain,
    planned_s,
)
from engine.slim.spec import AutoS


def test_lowers_when_unpruned_accuracy_falls_beyond_the_tolerance():
    d = next_gain(1.0, acc=0.80, acc_pt=0.30, best=0.95, threshold=0.4, previous=0.8, tolerance=0.02)
    assert d.action == "lower" and d.gain == pytest.approx(0.5)  # a 15-point drop earns the full factor
    small = next_gain(1.0, acc=0.92, acc_pt=0.90, best=0.95, threshold=0.4, previous=0.8, tolerance=0.02)
    assert small.action == "lower" and 0.5 < small.gain < 1.0  # 3 points: a smaller step
    # the drop outranks a lagging pruned accuracy
    assert next_gain(1.0, acc=0.5, acc_pt=0.1, best=0.95, threshold=0.4, previous=0.4).action == "lower"


def test_holds_while_accuracy_recovers():
    d = next_gain(0.5, acc=0.85, acc_pt=0.80, best=0.95, threshold=0.3, previous=0.4, acc_before=0.70)
    assert d.action == "hold" and d.gain == 0.5 and "recovering" in d.reason
    assert next_gain(0.5, acc=0.85, acc_pt=0.80, best=0.95, threshold=0.3, previous=0.4, acc_before=0.86).action == "lower"


def test_raises_by_the_shortfall_of_the_thresholds_fall_while_pruned_at_target_lags():
    # planned: the threshold falls by half (gain 0.5); it fell by a quarter -> gain x2
    d = next_gain(0.5, acc=0.95, acc_pt=0.40, best=0.95, threshold=0.45, previous=0.6, gap=0.01)
    assert d.action == "raise" and d.gain == pytest.approx(1.0) and "trails" in d.reason
    # fell by 40% of a planned 50%: a smaller raise
    d = next_gain(0.5, acc=0.95, acc_pt=0.40, best=0.95, threshold=0.36, previous=0.6, gap=0.01)
    assert d.action == "raise" and d.gain == pytest.approx(0.5 * 0.5 / 0.4)
    # the cap (the kept channels would lose too much) holds the gain
    capped = next_gain(0.5, acc=0.95, acc_pt=0.40, best=0.95, threshold=0.55, previous=0.6, cap=0.5)
    assert capped.action == "hold" and capped.gain == 0.5 and "cap" in capped.reason


def test_holds_when_the_plan_progresses_or_the_job_is_done():
    progressing = next_gain(0.5, acc=0.95, acc_pt=0.40, best=0.95, threshold=0.2, previous=0.6)
    assert progressing.action == "hold" and progressing.gain == 0.5 and "as planned" in progressing.reason
    done = next_gain(0.5, acc=0.95, acc_pt=0.945, best=0.96, threshold=0.5, previous=0.5, gap=0.01, tolerance=0.02)
    assert done.action == "hold" and "within" in done.reason


def test_the_gain_stays_bounded():
    gain = 0.5
    for _ in range(50):
        gain = next_gain(gain, acc=0.95, acc_pt=0.1, best=0.95, threshold=0.5, previous=0.5).gain
    assert gain == GAIN_MAX
    for _ in range(50):
        gain = next_gain(gain, acc=0.1, acc_pt=0.1, best=0.95, threshold=0.5, previous=0.5).gain
    assert gain == pytest.approx(GAIN_MIN)


def test_gain_cap_keeps_the_push_below_half_the_kept_median():
    assert gain_cap(1.0, 1.2) == pytest.approx(0.6)  # gammas all near the threshold: a gentle push
    assert gain_cap(0.1, 0.5) == GAIN_MAX  # kept channels far above it
    assert gain_cap(0.0, 0.5) == GAIN_MAX


def test_plan_scales_with_threshold_and_inverse_lr():
    base = planned_s(1.0, 0.5, 2.0, 0.9)
    assert base == pytest.approx(1.0 * 0.5 * 0.1 / 2.0)
    assert planned_s(1.0, 0.25, 2.0, 0.9) == pytest.approx(base / 2)
    assert planned_s(1.0, 0.5, 4.0, 0.9) == pytest.approx(base / 2)
    assert planned_s(2.0, 0.5, 2.0, 0.9) == pytest.approx(base * 2)
    assert planned_s(1.0, 0.5, 0.0, 0.9) > 0 and planned_s(100.0, 100.0, 1e-9, 0.0) == 1.0


def test_lr_budget_follows_the_schedule():
    cfg = TrainingSpec(epochs=4, lr=0.1, schedule="cosine")
    budget = LrBudget(cfg, steps_per_epoch=10)
    assert len(budget.per_epoch) == 4
    assert budget.per_epoch == sorted(budget.per_epoch, reverse=True)
    total = sum(0.1 * 0.5 * (1 + math.cos(math.pi * i / 40)) for i in range(40))
    assert sum(budget.per_epoch) == pytest.approx(total)
    assert budget.epoch(7) == 0.0


class FakeMonitor:
    """Feeds the controller a prepared sequence of monitor figures."""

    def __init__(self, start: dict, epochs: list[dict]):
        self.start, self.epochs, self.last = start, list(epochs), {}

    def measure_trainer(self, *args, **kwargs):
        self.last = self.start
        return self.start


def fake_trainer(epochs: int) -> SimpleNamespace:
    """What the controller reads of a trainer (the monitor is faked, so none of it is used)."""
    return SimpleNamespace(model=None, data=SimpleNamespace(val=None, train=None), device=None, amp_dtype=None,
                           dist=None, epoch=0, epochs=epochs)


def fig(acc, acc_pt, thr, kept=10.0):
    return {"acc_unpruned_subset": acc, "acc_pruned_at_target": acc_pt, "target_threshold": thr, "kept_median": kept}


def test_controller_moves_s_the_right_way_and_resumes():
    cfg = TrainingSpec(epochs=6, lr=0.05, schedule="constant")
    penalty = SimpleNamespace(s=0.0)
    monitor = FakeMonitor(fig(0.95, 0.2, 0.8), [])
    trainer = fake_trainer(epochs=6)
    ctl = AutoSController(penalty, monitor, AutoS(), LrBudget(cfg, 10), momentum=0.9)
    ctl.on_fit_start(trainer)
    s0 = penalty.s
    assert s0 == pytest.approx(GAIN0 * 0.8 * 0.1 / (0.05 * 10))

    seen = [s0]
    signals = [fig(0.95, 0.30, 0.70),   # threshold fell 12.5% of a planned 50%, pruned copy far behind: raise
               fig(0.95, 0.60, 0.20),   # fell faster than planned: hold the gain, s follows the threshold down
               fig(0.85, 0.80, 0.15),   # accuracy 10 points below best and not recovering: lower
               fig(0.95, 0.945, 0.10)]  # within the gap: hold
    actions = []
    for epoch, m in enumerate(signals):
        monitor.last = m
        ctl.on_epoch_end(trainer, epoch)
        actions.append(ctl.decisions[-1].action)
        seen.append(penalty.s)
    assert actions == ["raise", "hold", "lower", "hold"]
    assert seen[0] < seen[1] <= 2 * seen[0] + 1e-12  # raised, capped at factor x the previous s
    assert seen[2] < seen[1]  # threshold fell: s follows it down at the same gain
    assert seen[3] < seen[2]
    # a resumed controller continues from the saved state, not from a fresh start
    state = ctl.state_dict()
    again = AutoSController(SimpleNamespace(s=0.0), monitor, AutoS(), LrBudget(cfg, 10), momentum=0.9)
    again.load_state_dict(state)
    assert again.penalty.s == penalty.s and again.gain == ctl.gain and again.best == 0.95


def test_start_is_gentle_when_gammas_sit_near_the_threshold():
    cfg = TrainingSpec(epochs=3, lr=0.05, schedule="constant")
    penalty = SimpleNamespace(s=0.0)
    trainer = fake_trainer(epochs=3)
    ctl = AutoSController(penalty, FakeMonitor(fig(0.9, 0.2, 1.0, kept=1.2), []), AutoS(), LrBudget(cfg, 10), 0.9)
    ctl.on_fit_start(trainer)
    assert ctl.gain == pytest.approx(0.5) and penalty.s == pytest.approx(planned_s(0.5, 1.0, 0.5, 0.9))
    ctl = AutoSController(penalty, FakeMonitor(fig(0.9, 0.2, 1.0, kept=0.6), []), AutoS(), LrBudget(cfg, 10), 0.9)
    ctl.on_fit_start(trainer)
    assert ctl.gain == pytest.approx(0.3)


def test_start_can_be_given():
    cfg = TrainingSpec(epochs=3, lr=0.05, schedule="constant")
    penalty = SimpleNamespace(s=0.0)
    trainer = fake_trainer(epochs=3)
    ctl = AutoSController(penalty, FakeMonitor(fig(0.9, 0.2, 0.5), []), AutoS(start=0.003), LrBudget(cfg, 10), 0.9)
    ctl.on_fit_start(trainer)
    assert penalty.s == 0.003
    assert ctl.gain == pytest.approx(0.003 / planned_s(1.0, 0.5, 0.5, 0.9))


def test_s_does_not_rise_into_the_last_epoch_and_the_log_says_so():
    cfg = TrainingSpec(epochs=3, lr=0.05, schedule="constant")
    penalty = SimpleNamespace(s=0.0)
    monitor = FakeMonitor(fig(0.95, 0.2, 0.8), [])
    trainer = fake_trainer(epochs=3)
    lines: list[str] = []
    ctl = AutoSController(penalty, monitor, AutoS(), LrBudget(cfg, 10), momentum=0.9, log=lines.append)
    ctl.on_fit_start(trainer)
    monitor.last = fig(0.95, 0.30, 0.48)  # the pruned copy far behind, the threshold fell 40% of 50%: raise
    ctl.on_epoch_end(trainer, 0)
    raised = penalty.s
    monitor.last = fig(0.95, 0.30, 0.47)  # it hardly fell: raise again, but the next epoch is the last
    ctl.on_epoch_end(trainer, 1)
    assert ctl.decisions[-1].action == "raise" and penalty.s <= raised
    assert lines[-1].endswith("(no rise into the last epoch, left to settle)")


def test_the_deadline_raises_the_gain_so_a_short_stage_reaches_the_goal_in_time():
    # reach 1% of the initial gamma: from 0.4 to 0.005 in 2 epochs is a fall of 1 - sqrt(0.005 / 0.4) per epoch
    assert deadline_gain(0.4, 0.005, 2) == pytest.approx(1 - math.sqrt(0.005 / 0.4))
    assert deadline_gain(0.4, 0.005, 4) < deadline_gain(0.4, 0.005, 2)  # more time, a smaller fall each epoch
    assert deadline_gain(0.004, 0.005, 2) == 0.0 and deadline_gain(0.4, 0.005, 0) == 0.0

    cfg = TrainingSpec(epochs=4, lr=0.05, schedule="constant")

    def after_one_epoch(acc, acc_pt, thr, epochs=4, initial=None):
        penalty = SimpleNamespace(s=0.0, initial={"bn1": 0.5, "bn2": 0.5} if initial is None else initial)
        monitor = FakeMonitor(fig(0.95, 0.2, 0.8), [])
        ctl = AutoSController(penalty, monitor, AutoS(), LrBudget(cfg, 10), momentum=0.9)
        ctl.on_fit_start(fake_trainer(epochs))
        monitor.last = fig(acc, acc_pt, thr)
        ctl.on_epoch_end(fake_trainer(epochs), 0)
        return ctl.decisions[-1]

    # the threshold fell as planned (a hold before), but 2 epochs may still raise s: 0.4 -> 0.005 needs more
    d = after_one_epoch(0.95, 0.60, 0.4)
    assert d.action == "raise" and d.gain == pytest.approx(1 - math.sqrt(0.005 / 0.4))
    assert "to reach 0.005 (1% of the initial gamma) in 2 epoch(s)" in d.reason
    assert after_one_epoch(0.95, 0.60, 0.4, epochs=12).gain < d.gain  # a long stage: no hurry
    assert after_one_epoch(0.95, 0.945, 0.4).action == "hold"  # the pruned copy keeps up: nothing to hurry
    assert after_one_epoch(0.80, 0.60, 0.4).action == "lower"  # accuracy falling comes first
    assert after_one_epoch(0.95, 0.60, 0.4, initial={}).action == "hold"  # no initial gamma: no deadline
