"""Inspector cost targets (f / F) and the monitor's pruned-at-target line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_tui_inspector import (
    SIZE,
    engine_plan,
    make_checkpoint,
    modal_error,
    ready_inspector,
    type_into_modal,
)
from test_tui_runs import HostApp, make_run, metric_lines, wait_for, write_metrics
from textual.widgets import TabbedContent

from engine.slim.target import kept_fraction, threshold_for_target
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.widgets.histogram import GammaHistogram
from tui.widgets.inspector_modals import ValueModal
from tui.widgets.plots import MetricPlot
from tui.widgets.run_series import RunSeries
from tui.widgets.run_tail import epoch_line

from helpers import run_async


@run_async
async def test_f_sets_a_flops_target_and_the_threshold_jumps_there(tmp_path: Path):
    ckpt = make_checkpoint(tmp_path / "ckpts" / "model.pt")
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        await pilot.press("f")
        await type_into_modal(pilot, "40%")
        assert pilot.app.screen is screen
        assert screen.settings.target == ("target_flops", 0.4) and screen.settings.percent is None
        thr, expected = threshold_for_target(screen.inputs, "target_flops", 0.4)
        assert screen.plan.options["global_threshold"] == thr
        assert screen.plan.to_dict()["groups"] == expected.to_dict()["groups"]
        assert kept_fraction(screen.plan, "flops") <= 0.4
        # the histogram's cut line is at the resolved threshold
        assert screen.query_one("#histogram", GammaHistogram).threshold == pytest.approx(thr)
        assert "FLOPs kept ≤" in str(screen.query_one("#summary").content)
        # the arrows continue from the ratio the target cut
        await pilot.press("right")
        assert screen.settings.target is None and screen.settings.percent is not None

        # params target, and one below what min_keep allows: the engine's message, nothing changed
        before = screen.plan.to_dict()
        await pilot.press("F")
        await type_into_modal(pilot, "0.0001")
        assert isinstance(pilot.app.screen, ValueModal)
        assert "cannot be reached" in modal_error(pilot) and "Use target_params >=" in modal_error(pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert screen.plan.to_dict() == before
        await pilot.press("F")
        await type_into_modal(pilot, "0.5")
        assert screen.settings.target == ("target_params", 0.5)
        assert screen.plan.to_dict()["groups"] == engine_plan(ckpt, threshold=screen.plan.options["threshold"]).to_dict()["groups"]


def test_monitor_series_carry_pruned_at_target_and_relative_gamma():
    s = RunSeries()
    lines = [
        {"stage": "train", "epoch": 0, "step": 10, "accuracy": 0.9, "val_loss": 0.3, "gamma_lt_1e-2": 0.0},
        {"stage": "sparse", "epoch": 0, "step": 10, "accuracy": 0.92, "val_loss": 0.3, "acc_pruned_at_target": 0.5,
         "gamma_lt_1e-2": 0.4, "gamma_rel_lt_1e-2": 0.1, "gamma_rel_lt_1e-3": 0.02},
        {"stage": "sparse", "epoch": 1, "step": 20, "accuracy": 0.93, "val_loss": 0.3, "acc_pruned_at_target": 0.9,
         "gamma_lt_1e-2": 0.6, "gamma_rel_lt_1e-2": 0.3, "gamma_rel_lt_1e-3": 0.05},
    ]
    s.feed([json.loads(json.dumps(r)) for r in lines])
    assert s.pruned.ys == [50.0, 90.0] and len(s.accuracy.ys) == 3
    assert s.pruned.xs == s.accuracy.xs[1:]
    # relative figures where the run logs them, the absolute ones otherwise
    assert s.gamma["gamma_rel_lt_1e-2"].ys == [10.0, 30.0] and s.gamma["gamma_lt_1e-2"].ys == [0.0]
    assert "initial" in s.gamma["gamma_rel_lt_1e-2"].label


def sparse_lines() -> list[dict]:
    lines = metric_lines()
    for rec in lines:
        if rec["stage"] == "sparse" and "accuracy" in rec:
            rec.update({"acc_pruned_at_target": rec["accuracy"] - 0.2, "s": 2.5e-3, "gamma_rel_lt_1e-2": 0.3})
    return lines


@run_async
async def test_monitor_plots_pruned_at_target_beside_accuracy_and_logs_it(tmp_path: Path):
    path = make_run(tmp_path, "sparse-run", "done", stages=("train", "sparse"), epochs=2)
    write_metrics(path, sparse_lines())
    app = HostApp(lambda: MonitorScreen(path), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.series.pruned.ys) == 2, what="the sparse epoch lines")
        tabs = screen.query_one("#monitor-plots", TabbedContent)
        for _ in range(5):
            if tabs.active == "tab-accuracy":
                break
            await pilot.press("right_square_bracket")
            await pilot.pause()
        plot = screen.query_one("#plot-accuracy", MetricPlot)
        labels = [line.label for line in plot._lines]
        assert labels == ["val accuracy %", "pruned at target %"]
        assert plot._lines[1].ys == pytest.approx([35.0, 50.0])


def test_monitor_log_line_carries_pruned_at_target_and_s():
    rec = next(r for r in sparse_lines() if r["stage"] == "sparse" and "accuracy" in r)
    line = epoch_line(rec, 2)
    assert "accuracy 55.00%" in line and "pruned-at-target 35.00%" in line and "s 0.0025" in line
    assert "|gamma|<1% init 30.0%" in line and "|gamma|<0.01" not in line
