"""Monitor screen: plots, progress and log tail from a run directory, updated as the run writes."""

from __future__ import annotations

import time

from test_tui_runs import (
    T0,
    HostApp,
    make_run,
    make_running,
    metric_lines,
    run_async,
    wait_for,
    write_log,
    write_metrics,
)
from textual.widgets import ProgressBar, RichLog, Static, TabbedContent

from engine import runs
from tui.screens.monitor import MonitorScreen
from tui.widgets.plots import MetricPlot
from tui.widgets.run_series import RunSeries, decimate
from tui.widgets.run_tail import TextTail


def title(screen: MonitorScreen) -> str:
    return str(screen.query_one("#monitor-title", Static).render())


def log_text(screen: MonitorScreen) -> str:
    return "\n".join(strip.text for strip in screen.query_one("#monitor-log", RichLog).lines)


@run_async
async def test_monitor_plots_a_finished_run(tmp_path):
    path = make_run(tmp_path, "done-run", "done", best=0.85, ended=T0 + 125, stages=("train", "sparse"), epochs=2)
    write_metrics(path, metric_lines())
    write_log(path, 14)
    app = HostApp(lambda: MonitorScreen(path), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.series.lines == 36, what="all metrics lines")
        s = screen.series
        assert len(s.loss.xs) == 32 and len(s.val_loss.xs) == 4 and len(s.accuracy.ys) == 4
        assert s.loss.xs[16] == 17  # sparse steps continue after the train stage's 16
        assert [m[1] for m in s.stage_marks] == ["train", "sparse"]
        assert list(s.gamma) == ["gamma_lt_1e-2", "gamma_lt_1e-3"] and len(s.gamma["gamma_lt_1e-2"].ys) == 2
        assert list(s.memory) == ["rss"]
        assert s.accuracy.ys[-1] == 70.0
        text = title(screen)
        assert "done-run" in text and "done" in text and "best 85.00%" in text and "2m05s" in text
        assert "stage sparse 2/2" in text and "epoch 2/2" in text
        assert screen.query_one("#stage-bar", ProgressBar).percentage == 1.0
        assert screen.query_one("#run-bar", ProgressBar).percentage == 1.0
        log = log_text(screen)
        assert "log line 13" in log and "log line 4" in log and "log line 3" not in log  # the last 10
        # epoch lines from metrics.jsonl, counted from 1 like the run's own output
        assert "[train] epoch 1/2  loss 1.0000  val_loss 1.2000  accuracy 55.00%" in log
        assert "[sparse] epoch 2/2" in log and "|gamma|<0.01 20.0%" in log and "epoch 0/" not in log
        assert screen.query_one("#plot-loss", MetricPlot).has_data

        # Only the visible plot is handed data; the others get it when their tab opens.
        gamma = screen.query_one("#plot-gamma", MetricPlot)
        assert not gamma.has_data
        for _ in range(4):
            await pilot.press("right_square_bracket")
        await pilot.pause()
        assert screen.query_one("#monitor-plots", TabbedContent).active == "tab-gamma"
        assert gamma.has_data and gamma.builds >= 1
        await pilot.press("right_square_bracket")
        assert screen.query_one("#monitor-plots", TabbedContent).active == "tab-loss"
        await pilot.press("left_square_bracket", "left_square_bracket")
        await pilot.pause()
        assert screen.query_one("#monitor-plots", TabbedContent).active == "tab-memory"
        assert screen.query_one("#plot-memory", MetricPlot).has_data


@run_async
async def test_monitor_picks_up_lines_appended_while_open(tmp_path):
    path, writer = make_running(tmp_path, "live")
    lines = metric_lines((("train", 3),))
    write_metrics(path, lines[:5])
    writer.log("stage train (train) starts")
    app = HostApp(lambda: MonitorScreen(path), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.series.loss.xs) == 5, what="the first lines")
        plot = screen.query_one("#plot-loss", MetricPlot)
        version = plot._version
        assert "running" in title(screen) and "epoch 1/1" in title(screen)

        for rec in lines[5:9]:  # eight step lines then the epoch line
            writer.metrics({k: v for k, v in rec.items() if k != "t"})
        writer.log("epoch 1 done: val accuracy 55.00%")
        writer.status(progress=0.6, best_accuracy=0.55)
        await wait_for(pilot, lambda: len(screen.series.accuracy.ys) == 1, what="the appended epoch line")
        assert len(screen.series.loss.xs) == 8
        assert plot._version > version
        await wait_for(pilot, lambda: "val accuracy 55.00%" in log_text(screen), what="the new log line")
        await wait_for(pilot, lambda: screen.query_one("#stage-bar", ProgressBar).percentage == 0.6, what="progress")
        assert "best 55.00%" in title(screen)

        # A half-written line waits for its newline; then it is read once.
        with open(path / "metrics.jsonl", "a") as f:
            f.write('{"stage": "train", "epoch": 1, "step": 9, "lo')
        await pilot.pause(0.7)
        assert len(screen.series.loss.xs) == 8
        with open(path / "metrics.jsonl", "a") as f:
            f.write('ss": 0.5, "lr": 0.01, "rss": 500}\n')
        await wait_for(pilot, lambda: len(screen.series.loss.xs) == 9, what="the completed line")

        # The run fails: state and error show.
        writer.status(state="failed", ended=time.time(), error="RunError: loss is nan at epoch 1 batch 2")
        error = screen.query_one("#monitor-error", Static)
        await wait_for(pilot, lambda: "loss is nan" in str(error.render()), what="the error line")
        assert error.has_class("shown") and "failed" in title(screen)


@run_async
async def test_monitor_skips_broken_metrics_lines_and_says_so(tmp_path):
    path = make_run(tmp_path, "broken", "done", ended=T0 + 10)
    write_metrics(path, metric_lines((("train", 1),))[:4], extra_raw="{oops\n[1, 2]\n")
    write_metrics(path, metric_lines((("train", 1),))[4:])
    app = HostApp(lambda: MonitorScreen(path), tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.series.lines == 9, what="the good lines")
        assert "2 bad metrics lines skipped" in title(screen)


@run_async
async def test_monitor_shows_unreadable_and_missing_runs_without_crashing(tmp_path):
    corrupt = runs.create_run_dir(tmp_path, "corrupt")
    (corrupt / "status.json").write_text("[1, 2")
    app = HostApp(lambda: MonitorScreen(corrupt), tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.info is not None, what="a poll")
        assert "unreadable" in title(screen)
        assert "corrupt status.json" in str(screen.query_one("#monitor-error", Static).render())
        screen.show_run(tmp_path / "does-not-exist")
        await wait_for(pilot, lambda: screen.info is not None and screen.info.name == "does-not-exist", what="switch")
        assert "no status.json" in str(screen.query_one("#monitor-error", Static).render())
        await pilot.resize_terminal(30, 8)  # a tiny terminal: everything squeezes, nothing raises
        await pilot.pause(0.6)
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.3)


@run_async
async def test_monitor_without_a_run_opens_the_newest_running_one(tmp_path):
    make_run(tmp_path, "old", "done", ended=T0 + 5)
    path, _ = make_running(tmp_path, "live")
    app = HostApp(MonitorScreen, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.info is not None, what="a poll")
        assert screen.run_path == path

    empty = tmp_path / "empty"
    app = HostApp(MonitorScreen, empty)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        assert "No run open" in title(app.screen)


@run_async
async def test_show_run_switches_runs_and_forgets_the_old_series(tmp_path):
    a = make_run(tmp_path, "a", "done", ended=T0 + 5)
    write_metrics(a, metric_lines((("train", 2),)))
    b = make_run(tmp_path, "b", "done", ended=T0 + 5)
    write_metrics(b, metric_lines((("train", 1),)))
    app = HostApp(lambda: MonitorScreen(a), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.series.lines == 18, what="run a")
        screen.show_run(b)
        await wait_for(pilot, lambda: screen.series.lines == 9 and screen.info.name == "b", what="run b")
        assert len(screen.series.loss.xs) == 8


@run_async
async def test_monitor_cancel_key_on_a_finished_run_warns(tmp_path):
    path = make_run(tmp_path, "done-run", "done", ended=T0 + 5)
    app = HostApp(lambda: MonitorScreen(path), tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("c", "R")
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any("not running" in m for m in messages) and any("only failed or cancelled" in m for m in messages)


def test_series_shift_stages_and_keep_cuda_memory_over_rss():
    s = RunSeries()
    changed = s.feed([
        {"stage": "train", "epoch": 0, "step": 10, "loss": 1.0, "lr": 0.1, "rss": 100.0},
        {"stage": "finetune", "epoch": 0, "step": 5, "loss": 0.5, "lr": 0.01,
         "mem_allocated": 10.0, "mem_reserved": 20.0, "mem_peak": 15.0, "rss": 900.0},
        {"stage": "finetune", "epoch": 0, "step": 6, "loss": float("nan"), "lr": 0.01},
    ])
    assert changed and s.loss.xs == [10.0, 15.0]  # NaN is dropped, the finetune steps follow on
    assert s.memory["rss"].ys == [100.0] and s.memory["mem_peak"].ys == [15.0]
    assert not s.feed([])


def test_decimate_keeps_the_ends_and_bounds_the_points():
    xs = list(range(1000))
    dx, dy = decimate(xs, xs, 100)
    assert len(dx) <= 101 and dx[0] == 0 and dx[-1] == 999 and dx == dy
    assert decimate(xs[:50], xs[:50], 100) == (xs[:50], xs[:50])


def test_text_tail_reads_the_last_lines_then_only_new_ones(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    tail = TextTail(log, first_lines=10)
    assert tail.read() == [f"line {i}" for i in range(20, 30)]
    assert tail.read() == []
    with open(log, "a") as f:
        f.write("new 1\npart")
    assert tail.read() == ["new 1"]
    with open(log, "a") as f:
        f.write("ial\n")
    assert tail.read() == ["partial"]
    log.write_text("replaced\n")  # shorter: read again from the top
    assert tail.read() == ["replaced"]


@run_async
async def test_a_cancelled_run_shows_how_far_the_run_got(tmp_path):
    path = make_run(tmp_path, "stopped", "cancelled", stages=("train", "sparse"), stage="sparse", progress=0.25,
                    completed=["train"], ended=T0 + 60, error="SIGTERM at epoch 0 step 4")
    app = HostApp(lambda: MonitorScreen(path), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.info is not None, what="the status")
        await pilot.pause(0.2)
        assert screen.query_one("#stage-bar", ProgressBar).percentage == 0.25
        assert screen.query_one("#run-bar", ProgressBar).percentage == 0.625  # not run 0% beside stage 25%
