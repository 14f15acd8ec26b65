"""The workbench on a real detection run: the monitor plots Ultralytics' loss parts and mAP, compare
shows mAP50-95 per stage and the mAP sweep, the inspector opens slimlab detection checkpoints and
(after the trust question) an Ultralytics best.pt."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from detect_helpers import TINY_DETECT, randomise_bn, write_preset
from test_tui_checkpoints import ask_to_open_pickled
from test_tui_compare import table_cells
from test_tui_runs import HostApp, open_form, table_rows, wait_state
from textual.widgets import SelectionList, TabbedContent

from engine.cli import prepare_run_dir
from engine.config import load_preset
from engine.pipeline import Pipeline
from engine.runs import create_run_dir
from tui import model_cache
from tui.app import make_app
from tui.screens.compare import CompareScreen
from tui.screens.inspector import InspectorScreen
from tui.screens.monitor import MonitorScreen
from tui.screens.runs import RunsScreen
from tui.widgets.plots import MetricPlot

from helpers import run_async, wait_for

pytestmark = pytest.mark.detect
SIZE = (100, 30)


@pytest.fixture(autouse=True)
def fresh_model_cache(ultralytics_offline):
    model_cache.clear()
    yield
    model_cache.clear()


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    """train -> sweep -> prune -> finetune on the generated detection data (tiny yolov8n, 64 px)."""
    tmp = tmp_path_factory.mktemp("detect-run")
    stages = [{"type": "train"}, {"type": "sweep", "ratios": [0.0, 0.3, 0.6], "val_images": 8},
              {"type": "prune", "percent": 0.5}, {"type": "finetune"}]
    spec = load_preset(write_preset(tmp, stages=stages))
    path = create_run_dir(tmp / "runs", "det")
    prepare_run_dir(path, spec)
    Pipeline(spec, path).run()
    return path


@run_async
async def test_monitor_plots_detection_losses_and_map(detect_run):
    records = [json.loads(x) for x in (detect_run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "mAP50_95" in r]
    app = HostApp(lambda: MonitorScreen(detect_run), detect_run.parent)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.series.lines == len(records), what="all metrics lines")
        s = screen.series
        assert list(s.loss_parts) == ["box_loss", "cls_loss", "dfl_loss"] and s.loss_parts["box_loss"].xs
        assert [m[1] for m in s.stage_marks] == ["train", "finetune"]
        assert len(s.map["mAP50_95"].ys) == len(epochs) == 2  # one point per epoch, in %
        assert s.map["mAP50_95"].ys == [100 * r["mAP50_95"] for r in epochs]
        assert s.map["mAP50"].ys == [100 * r["mAP50"] for r in epochs]
        status = json.loads((detect_run / "status.json").read_text())
        assert f"best mAP50-95 {status['best_mAP50_95']:.4f}" in str(screen.query_one("#monitor-title").render())
        log = "\n".join(strip.text for strip in screen.query_one("#monitor-log").lines)
        assert f"[finetune] epoch 1/1  loss {epochs[-1]['loss']:.4f}  mAP50-95 {epochs[-1]['mAP50_95']:.4f}" in log
        loss = screen.query_one("#plot-loss", MetricPlot)
        assert {line.label for line in loss._lines} >= {"train loss", "box", "cls", "dfl"}
        tabs = screen.query_one("#monitor-plots", TabbedContent)
        assert tabs.get_tab("tab-accuracy").label_text == "mAP"  # a detection run's second plot
        await pilot.press("right_square_bracket")
        await pilot.pause()
        plot = screen.query_one("#plot-accuracy", MetricPlot)
        assert [line.label for line in plot._lines] == ["mAP50-95 %", "mAP50 %"] and plot.title.startswith("mAP %")


@run_async
async def test_compare_shows_map_per_stage_and_the_map_sweep(detect_run):
    summary = json.loads((detect_run / "summary.json").read_text())
    app = HostApp(CompareScreen, detect_run.parent)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.pause()  # the only run: selected on opening
        rows = [r for r in table_cells(screen)]
        stage_of, by_stage = None, {}
        for stage, metric, value in rows:
            stage_of = stage or stage_of
            by_stage[(stage_of, metric)] = value
        for stage in ("train", "prune", "finetune"):
            assert by_stage[(stage, "mAP50-95")] == f"{summary[stage]['mAP50_95']:.4f}"
            assert by_stage[(stage, "mAP50")] == f"{summary[stage]['mAP50']:.4f}"
        plot = screen.query_one("#compare-plot", MetricPlot)
        sweep = json.loads((detect_run / "sweep.json").read_text())["rows"]
        assert plot.title == "sweep: mAP50-95 %"
        assert plot._lines[0].xs == [0.0, 30.0, 60.0]
        assert plot._lines[0].ys == [100 * r["mAP50_95"] for r in sweep]
        assert screen.query_one("#compare-runs", SelectionList).option_count == 1


@run_async
async def test_runs_table_shows_the_best_map(detect_run):
    status = json.loads((detect_run / "status.json").read_text())
    app = HostApp(RunsScreen, detect_run.parent)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen._order, what="rows")
        assert table_rows(app.screen)["det"]["best"] == f"mAP {status['best_mAP50_95']:.3f}"


@run_async
async def test_inspector_opens_a_pruned_detection_checkpoint(detect_run):
    app = make_app(detect_run / "weights" / "finetune.pt")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, InspectorScreen)
        await wait_for(pilot, lambda: screen.ready, timeout=120, what="the detection checkpoint")
        assert screen.loaded.arch["task"] == "detect"
        title = screen._title_text()  # the model yaml inside the arch is abbreviated, not dumped
        assert "ultralytics:yolov8n.yaml(yaml={…}" in title and "'nc'" not in title
        groups = screen.plan.groups
        head = max(int(g.root.split(".")[1]) for g in groups)
        # the Detect head's box / class / DFL outputs are listed, never cut
        outputs = [g for g in groups if g.root.startswith(f"model.{head}.") and g.ignored]
        assert outputs and all(g.kept == g.total for g in outputs)
        assert screen.plan.totals["prunable_before"] > 0


@run_async
async def test_inspector_opens_an_ultralytics_best_pt_after_the_trust_question(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    module = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    randomise_bn(module)
    module.names = {0: "cat", 1: "dog"}
    torch.save({"model": copy.deepcopy(module).half(), "ema": None, "train_args": {"imgsz": 64}}, tmp_path / "best.pt")
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ask_to_open_pickled(pilot, app.screen, "best.pt")
        await pilot.press("y")
        await pilot.pause()
        inspector = app.screen
        assert isinstance(inspector, InspectorScreen)
        await wait_for(pilot, lambda: inspector.ready, timeout=120, what="the trusted load")
        assert inspector.loaded.source == "ultralytics" and inspector.loaded.arch["kwargs"]["names"] == ["cat", "dog"]
        assert inspector.plan.totals["prunable_before"] > 0


@run_async
async def test_a_detection_preset_launched_from_the_workbench_runs(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    preset = {**TINY_DETECT, "stages": [{"type": "train"}, {"type": "prune", "percent": 0.3}]}
    (presets / "dtiny.yaml").write_text(yaml.safe_dump(preset, sort_keys=False))
    runs_dir = tmp_path / "runs"
    app = HostApp(RunsScreen, runs_dir, [presets])
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot, app)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="the launch")
    info = wait_state(runs_dir / "dtiny", ("done", "failed", "cancelled"), timeout=300)
    assert info.state == "done", info.error
    summary = json.loads((runs_dir / "dtiny" / "summary.json").read_text())
    assert summary["prune"]["flops"] < summary["train"]["flops"] and "mAP50_95" in summary["prune"]
