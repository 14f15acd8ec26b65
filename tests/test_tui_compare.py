"""Compare screen: runs side by side per stage (summary.json) and overlaid sweep curves (sweep.json)."""

from __future__ import annotations

from pathlib import Path

from test_tui_runs import T0, HostApp, make_run, run_async, wait_for
from textual.widgets import DataTable, SelectionList, Static

from engine import runs
from tui.screens.compare import CompareScreen, fmt_metric, read_results
from tui.widgets.plots import MetricPlot


def results_run(runs_dir: Path, name: str, accuracy: float, scale: float, started: float) -> Path:
    path = make_run(runs_dir, name, "done", started=started, ended=started + 60, stages=("train", "prune", "sweep"))
    runs.write_json(path / "summary.json", {
        "train": {"accuracy": accuracy, "params": int(145_164 * scale), "flops": int(5_161_472 * scale),
                  "latency_b1_ms": 0.48 * scale, "latency_b32_ms": 32.1 * scale, "size": int(599_885 * scale),
                  "seconds": 12.3},
        "prune": {"accuracy": accuracy - 0.2, "params": int(70_000 * scale), "flops": int(2_500_000 * scale),
                  "latency_b1_ms": 0.3 * scale, "latency_b32_ms": 20.0 * scale, "size": int(300_000 * scale)},
        "sweep": {"ratios": 3, "accuracy_at_0": accuracy},
    })
    rows = [{"ratio": r, "accuracy": accuracy * (1 - r * r * scale), "params": 1000, "flops": 2000}
            for r in (0.0, 0.3, 0.6, 0.9)]
    runs.write_json(path / "sweep.json", {"stage": "sweep", "rows": rows})
    return path


def table_cells(screen: CompareScreen) -> list[list[str]]:
    table = screen.query_one("#compare-table", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def column_labels(screen: CompareScreen) -> list[str]:
    return [str(c.label) for c in screen.query_one("#compare-table", DataTable).columns.values()]


@run_async
async def test_compare_two_runs_side_by_side_with_sweep_curves(tmp_path):
    runs_dir = tmp_path / "runs"
    results_run(runs_dir, "big", 0.90, 1.0, T0 + 10)
    results_run(runs_dir, "small", 0.85, 0.5, T0)
    make_run(runs_dir, "plain", "done", ended=T0 + 5, started=T0 - 10)  # no summary, no sweep
    app = HostApp(CompareScreen, runs_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        picker = screen.query_one("#compare-runs", SelectionList)
        assert picker.option_count == 3 and picker.has_focus
        note = screen.query_one("#compare-note", Static)
        assert "Select runs with space" in str(note.render())

        await pilot.press("space", "down", "space")  # big, then small
        await pilot.pause()
        assert [Path(p).name for p in screen.selected_paths()] == ["big", "small"]
        assert column_labels(screen) == ["stage", "metric", "big", "small"]
        cells = table_cells(screen)
        assert cells[0] == ["train", "accuracy", "90.00%", "85.00%"]
        assert cells[1] == ["", "params", "145.16k", "72.58k"]
        assert cells[2] == ["", "FLOPs", "5.16M", "2.58M"]
        assert cells[3] == ["", "latency b1", "0.48 ms", "0.24 ms"]
        assert cells[5] == ["", "size", "586 KiB", "293 KiB"]
        assert cells[6][:4] == ["prune", "accuracy", "70.00%", "65.00%"]
        assert [c[0] for c in cells if c[0]] == ["train", "prune"]  # the sweep stage has no such figures
        assert len(cells) == 12

        plot = screen.query_one("#compare-plot", MetricPlot)
        assert [line.label for line in plot._lines] == ["big", "small"]
        big = plot._lines[0]
        assert list(big.xs) == [0.0, 30.0, 60.0, 90.0] and big.ys[0] == 90.0
        assert plot.builds >= 1

        await pilot.press("down", "space")  # add the run with no results: a dash column
        await pilot.pause()
        assert column_labels(screen)[-1] == "plain" and table_cells(screen)[0][-1] == "-"
        assert len(plot._lines) == 2

        await pilot.press("x")
        await pilot.pause()
        assert screen.selected_paths() == [] and screen.query_one("#compare-table", DataTable).row_count == 0
        assert not plot.has_data
        await pilot.press("a")
        await pilot.pause()
        assert len(screen.selected_paths()) == 3

        # A run that appears later joins the list; a changed summary is re-read.
        results_run(runs_dir, "later", 0.5, 1.0, T0 + 50)
        runs.write_json(runs_dir / "big" / "summary.json", {"train": {"accuracy": 0.99}})
        await pilot.press("r")
        await pilot.pause()
        assert picker.option_count == 4
        assert table_cells(screen)[0][2] == "99.00%"


@run_async
async def test_compare_reports_unreadable_results(tmp_path):
    runs_dir = tmp_path / "runs"
    path = make_run(runs_dir, "bad", "done", ended=T0 + 5)
    (path / "summary.json").write_text("{truncated")
    (path / "sweep.json").write_text('{"stage": "sweep", "rows": 3}')
    corrupt = runs.create_run_dir(runs_dir, "corrupt")
    (corrupt / "status.json").write_text("nope")
    app = HostApp(CompareScreen, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        picker = screen.query_one("#compare-runs", SelectionList)
        assert picker.option_count == 1  # the unreadable run is not offered
        await pilot.pause()  # the only run is selected on opening
        note = str(screen.query_one("#compare-note", Static).render())
        assert "summary.json unreadable" in note and "sweep.json unreadable" in note
        await pilot.resize_terminal(30, 8)  # squeezed: nothing raises
        await pilot.pause(0.3)


def test_formats_and_reading(tmp_path):
    assert fmt_metric("accuracy", 0.9123) == "91.23%"
    assert fmt_metric("flops", 1.5e9) == "1.50G" and fmt_metric("params", 950) == "950"
    assert fmt_metric("size", 3 * 2**20) == "3.00 MiB" and fmt_metric("latency_b1_ms", None) == "-"
    assert read_results(tmp_path).summary == {}  # nothing there: empty, no error
    assert read_results(tmp_path).errors == []


@run_async
async def test_compare_keeps_up_with_runs_selected_while_they_finish(tmp_path):
    runs_dir = tmp_path / "runs"
    path = make_run(runs_dir, "growing", "running", ended=None, progress=0.5)
    app = HostApp(CompareScreen, runs_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await pilot.pause()
        assert [Path(p).name for p in screen.selected_paths()] == ["growing"]  # the only run: selected
        assert screen.query_one("#compare-table", DataTable).row_count == 0
        runs.write_json(path / "summary.json", {"train": {"accuracy": 0.5, "params": 10}})
        screen.reload_runs()  # what the timer does every few seconds
        await wait_for(pilot, lambda: screen.query_one("#compare-table", DataTable).row_count == 2, what="rows")


@run_async
async def test_compare_opened_with_one_run_lists_its_stages_at_once(tmp_path):
    runs_dir = tmp_path / "runs"
    results_run(runs_dir, "only", 0.90, 1.0, T0)
    app = HostApp(CompareScreen, runs_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await pilot.pause()
        assert [Path(p).name for p in screen.selected_paths()] == ["only"]
        cells = table_cells(screen)
        assert cells[0] == ["train", "accuracy", "90.00%"] and [c[0] for c in cells if c[0]] == ["train", "prune"]
        plot = screen.query_one("#compare-plot", MetricPlot)
        assert [line.label for line in plot._lines] == ["only"]  # its sweep curve, not "no sweep.json"
        await pilot.press("space")  # the user may still untick it
        await pilot.pause()
        assert screen.selected_paths() == [] and screen.query_one("#compare-table", DataTable).row_count == 0
