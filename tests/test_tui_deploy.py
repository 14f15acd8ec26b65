"""The workbench and deployment: .onnx files with their metadata in the checkpoints screen, a row per
deployable file on the compare screen, export/quantize progress on the monitor."""

from __future__ import annotations

from pathlib import Path

from test_tui_checkpoints import make_checkpoint, make_model, move_to, panel_text
from test_tui_compare import column_labels, table_cells
from test_tui_monitor import title
from test_tui_runs import T0, HostApp, make_run, make_running, run_async, wait_for
from textual.widgets import SelectionList

from engine import config, data, runs
from engine.deploy.artifacts import export_file
from engine.deploy.data import Images
from tui.app import make_app
from tui.screens.checkpoints import CheckpointsScreen
from tui.screens.compare import CompareScreen
from tui.screens.monitor import MonitorScreen

SIZE = (110, 32)


def exported(path: Path) -> Path:
    bundle = data.build(config.DataSpec(num_classes=4, train_size=64, val_size=32), batch_size=32)
    images = Images(bundle, "shapes", tuple(bundle.mean), tuple(bundle.std))
    export_file(make_model(), path, input_shape=(3, 32, 32), images=images, class_names=bundle.class_names,
                arch={"name": "vgg"}, meta={"stage": "finetune"})
    return path


@run_async
async def test_onnx_files_are_listed_with_their_metadata(tmp_path):
    make_checkpoint(tmp_path / "model.pt")
    exported(tmp_path / "deploy" / "model.onnx")
    (tmp_path / "broken.onnx").write_text("not a graph")
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, CheckpointsScreen)
        await move_to(pilot, screen.tree, "deploy")  # a folder holding only an ONNX file is shown
        await pilot.press("enter")
        await move_to(pilot, screen.tree, "model.onnx")
        await wait_for(pilot, lambda: "opset" in panel_text(screen), what="the ONNX panel")
        text = panel_text(screen)
        assert "ONNX, opset 18" in text and "FP32" in text and "Nx3x32x32 (any batch)" in text
        assert "4: circle, square, triangle, cross" in text and "% (onnxruntime, validation split)" in text
        assert "from stage" in text and "finetune" in text
        await pilot.press("enter")  # not for the inspector: a note, and the screen stays
        await pilot.pause()
        assert app.screen is screen
        await move_to(pilot, screen.tree, "broken.onnx")
        await wait_for(pilot, lambda: "Cannot be read" in panel_text(screen), what="the error")
        assert "not an ONNX model" in " ".join(panel_text(screen).split())  # the message wraps with its path


def deployed_run(runs_dir: Path) -> Path:
    path = make_run(runs_dir, "ship", "done", started=T0, ended=T0 + 90, stages=("train", "export", "quantize"))
    export = {"name": "export.onnx", "file": "export.onnx", "format": "fp32", "accuracy": 0.9, "params": 1000,
              "flops": 20_000, "size": 4096}
    int8 = {**export, "name": "export.int8.onnx", "file": "export.int8.onnx", "format": "int8", "size": 1024}
    runs.write_json(path / "summary.json", {
        "train": {"accuracy": 0.91, "params": 4000, "flops": 80_000, "latency_b1_ms": 0.5},
        "export": {"accuracy": 0.9, "artifacts": [export]},
        "quantize": {"accuracy": 0.89, "artifacts": [int8]},
        "comparison": {
            "train": {"accuracy": 0.91, "params": 4000, "flops": 80_000, "latency_b1_ms": 0.5},
            "export.onnx": {**export, "latency_b1_ms": 0.2, "latency_b32_ms": 4.0, "threads": 1},
            "export.int8.onnx": {**int8, "accuracy": 0.89, "latency_b1_ms": 0.1, "latency_b32_ms": 1.5, "threads": 1},
        },
    })
    return path


@run_async
async def test_compare_has_a_row_per_deployable_file(tmp_path):
    deployed_run(tmp_path)
    app = HostApp(CompareScreen, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.pause()  # the only run: selected on opening
        assert column_labels(screen) == ["stage", "metric", "ship"]
        cells = table_cells(screen)
        assert [c[0] for c in cells if c[0]] == ["train", "export.onnx · fp32", "export.int8.onnx · int8"]
        int8 = cells.index(["export.int8.onnx · int8", "accuracy", "89.00%"])
        assert ["", "latency b32", "1.50 ms"] in cells[int8:] and ["", "size", "1 KiB"] in cells[int8:]
        assert screen.query_one("#compare-runs", SelectionList).option_count == 1


@run_async
async def test_monitor_shows_what_an_export_or_quantize_stage_is_doing(tmp_path):
    path, writer = make_running(tmp_path, "live")
    writer.status(stage="quantize", activity="quantize: sensitivity of features.8")
    app = HostApp(lambda: MonitorScreen(path), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: "sensitivity of features.8" in title(screen), what="the activity")
        writer.status(state="failed", error="boom")  # a stopped run shows its state, not a stale activity
        await wait_for(pilot, lambda: "failed" in title(screen), what="the failed state")
        assert "sensitivity" not in title(screen)


def as_detector_file(path: Path, mean_ap: float, fp32: float | None = None) -> Path:
    """An exported file carrying what a detection export writes instead of an accuracy (engine/detect/deploy.py)."""
    from engine.deploy import onnxfile

    model = onnxfile.read(path)
    keep = [p for p in model.metadata_props if p.key not in ("accuracy", "class_names")]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnxfile.set_metadata(model, {"task": "detect", "class_names": ["box"], "mAP50_95": f"{mean_ap:.6f}",
                                  "mAP50": f"{mean_ap + 0.2:.6f}", "precision": "int8" if fp32 else "fp32",
                                  **({"slimlab.quantization": {"fp32_accuracy": fp32, "method": "minmax"}} if fp32 else {})})
    onnxfile.save(model, path)
    return path


@run_async
async def test_a_detection_file_is_labelled_in_map_not_accuracy(tmp_path):
    as_detector_file(exported(tmp_path / "det.onnx"), 0.4123)
    as_detector_file(exported(tmp_path / "det.int8.onnx"), 0.4011, fp32=0.4123)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await move_to(pilot, screen.tree, "det.onnx")
        await wait_for(pilot, lambda: "opset" in panel_text(screen), what="the ONNX panel")
        text = panel_text(screen)
        assert "mAP50-95" in text and "0.4123 (onnxruntime, validation split)" in text and "0.6123" in text
        assert "accuracy" not in text and "41.23%" not in text
        await move_to(pilot, screen.tree, "det.int8.onnx")
        await wait_for(pilot, lambda: "INT8" in panel_text(screen), what="the INT8 panel")
        text = panel_text(screen)
        assert "0.4011 (onnxruntime" in text and "mAP50-95 0.4123 before quantization" in text
        assert "accuracy" not in text and "%" not in text.split("classes")[1].split("kept")[0]
