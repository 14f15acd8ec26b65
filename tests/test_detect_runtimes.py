"""A detector for the runtimes beside onnxruntime (OpenVINO fp32 and NNCF INT8, ncnn, LiteRT INT8), offline:
Ultralytics' exporters write each from the run's model, Ultralytics' validator measures each through its
own backend, each is timed in its own runtime in the comparison; formats that cannot work are refused."""

from __future__ import annotations

import importlib.util
import json
import os
import socket

import pytest
from detect_helpers import write_preset

from engine.cli import main
from engine.config import load_preset
from engine.deploy import table
from engine.detect import formats
from engine.errors import DeployError, PresetError
from engine.pipeline import Pipeline

# the module fixture trains a detector and writes every format: minutes on a shared 2-core machine
pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("ultralytics_offline"), pytest.mark.timeout(900)]

# the formats whose packages this environment has (make setup-detect: all but litert-int8)
INSTALLED = [f for f in formats.NAMES if formats.unavailable(f) is None]


def refuse_network(mp: pytest.MonkeyPatch, attempts: list[str]) -> None:
    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted during an offline test")

    for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "getaddrinfo"),
                        (socket, "create_connection")):
        mp.setattr(owner, name, refuse)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained tiny YOLOv8 (its mAP well above 0) exported to ONNX and every installed runtime, with
    sockets refused for the whole run."""
    from engine.cli import prepare_run_dir
    from engine.detect import ultra
    from engine.runs import create_run_dir

    if not INSTALLED:
        pytest.skip("no runtime beside onnxruntime is installed here: make setup-detect")
    ultra.load()
    tmp = tmp_path_factory.mktemp("runtimes")
    stages = [{"type": "train"}, {"type": "export", "original": False, "formats": INSTALLED, "samples": 32}]
    data = {"dataset": "yolo_shapes", "num_classes": 2, "train_size": 256, "val_size": 32, "image_size": 64,
            "augment": False}
    training = {"epochs": 12, "batch_size": 16, "optimizer": "adamw", "lr": 0.004, "log_every": 50, "device": "cpu",
                "warmup_epochs": 1}
    preset = write_preset(tmp, stages=stages, data=data, training=training,
                          model={"arch": "ultralytics:yolov8n.yaml", "kwargs": {"width": 0.25}},
                          latency={"repeats": 3, "warmup": 1, "runs": 1})
    spec = load_preset(preset)
    path = create_run_dir(tmp / "runs", "r")
    prepare_run_dir(path, spec)
    attempts: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        refuse_network(mp, attempts)
        Pipeline(spec, path).run()
    assert attempts == [], f"network access attempted: {attempts}"
    return path


def test_each_installed_runtime_is_written_and_validated_through_its_backend(run):
    summary = json.loads((run / "summary.json").read_text())
    by_name = {a["export_format"]: a for a in summary["export"]["artifacts"] if "export_format" in a}
    assert sorted(by_name) == sorted(INSTALLED)
    onnx_map = summary["export"]["mAP50_95"]
    assert onnx_map > 0.05  # a detector worth deploying
    for name, a in by_name.items():
        assert (run / a["file"]).exists() and a["file"] == formats.artifact_name("export", name)
        assert a["size"] > 0 and a["params"] > 0 and a["format"].endswith(a["dtype"])
        if a["dtype"] == "fp32":  # the same network in another runtime: the same detections
            assert a["mAP50_95"] == pytest.approx(onnx_map, abs=0.01), name
        else:  # INT8 of a 12-epoch detector on 64 px shapes: close, not equal
            assert abs(a["mAP50_95"] - onnx_map) < 0.08, name
    if {"openvino", "openvino-int8"} <= set(by_name):
        assert by_name["openvino-int8"]["size"] < by_name["openvino"]["size"] / 2
    log = (run / "log.txt").read_text()
    assert all(f"through Ultralytics' {by_name[n]['runtime']} backend" in log for n in by_name)
    assert "INT8 calibration on the first 32 training images" in log or not any(
        formats.get(n).int8 for n in INSTALLED)


def test_each_runtime_has_a_row_timed_in_its_own_runtime(run):
    summary = json.loads((run / "summary.json").read_text())
    rows = summary["comparison"]
    for name in INSTALLED:
        row = rows[formats.artifact_name("export", name)]
        assert row["runtime"] == formats.get(name).runtime and row["threads"] >= 1
        assert row["latency_b1_ms"] > 0 and row["latency_b8_ms"] > 0 and row["mAP50_95"] is not None
    assert rows["export.onnx"]["runtime"] == "onnxruntime"
    _, artifacts = table.split(rows)
    printed = "\n".join(table.lines(artifacts))
    assert "each file in its own runtime (onnxruntime, " in printed
    assert all(formats.artifact_name("export", n) in printed for n in INSTALLED)


def test_slimlab_export_writes_a_runtime_with_its_map(run, tmp_path, capsys):
    name = "ncnn" if "ncnn" in INSTALLED else INSTALLED[0]
    out = tmp_path / formats.artifact_name("model", name)
    assert main(["export", str(run / "weights" / "train.pt"), "--format", name, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"through Ultralytics' {formats.get(name).runtime} backend" in printed and "mAP50-95" in printed
    assert out.exists()


@pytest.fixture
def missing(monkeypatch):
    """Pretend `module` is not installed (find_spec finds nothing for it)."""
    real = importlib.util.find_spec
    gone: set[str] = set()

    def find_spec(name, *args, **kwargs):
        return None if name in gone else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return gone


def test_a_runtime_whose_packages_are_missing_is_refused_with_the_install_step(run, tmp_path, capsys, missing):
    missing.update({"nncf", "litert_torch", "ai_edge_litert", "ai_edge_quantizer"})
    assert "nncf" in formats.unavailable("openvino-int8") and "make setup-detect" in formats.unavailable("openvino-int8")
    assert "make setup-litert" in formats.unavailable("litert-int8")
    preset = write_preset(tmp_path, stages=[{"type": "train"}, {"type": "export", "formats": ["openvino-int8"]}])
    with pytest.raises(PresetError, match=r"stages\[1\]\.formats: openvino-int8 needs the Python package nncf"):
        load_preset(preset)
    out = tmp_path / "m.tflite"
    assert main(["export", str(run / "weights" / "train.pt"), "--format", "litert-int8", "--out", str(out)]) == 1
    assert "litert-int8 needs the Python packages litert_torch" in capsys.readouterr().err and not out.exists()


def test_a_classification_run_refuses_export_formats(tiny_preset):
    with pytest.raises(PresetError, match="export formats \\(openvino\\) are not available for classification"):
        load_preset(tiny_preset(stages=[{"type": "train"}, {"type": "export", "formats": ["openvino"]}]))


def test_a_failing_exporter_leaves_nothing_behind(run, tmp_path, monkeypatch):
    if "openvino" not in INSTALLED:
        pytest.skip(formats.unavailable("openvino"))
    from ultralytics import YOLO

    from engine import checkpoint
    from engine.detect import runtimes

    def fail(self, **kwargs):
        raise RuntimeError("converter exploded\nsecond line of a long traceback")

    monkeypatch.setattr(YOLO, "export", fail)
    loaded = checkpoint.load(run / "weights" / "train.pt")
    out = tmp_path / "x_openvino_model"
    with pytest.raises(DeployError, match="the openvino export failed: converter exploded") as e:
        runtimes.export(loaded.model, "openvino", out, data=None, imgsz=64)
    assert "second line" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no artifact, no scratch folder


def test_the_preset_names_match_the_formats():
    from typing import get_args

    from engine.config import ExportStage
    from engine.deploy.cli import RUNTIME_FORMATS

    (literal,) = get_args(ExportStage.model_fields["formats"].annotation)
    assert get_args(literal) == formats.NAMES == RUNTIME_FORMATS


def test_a_converter_run_apart_comes_back_with_its_error_or_as_a_crash():
    from engine.detect import runtimes

    assert runtimes._in_child("ncnn", int, "42") == 42
    with pytest.raises(ValueError, match="invalid literal"):
        runtimes._in_child("ncnn", int, "x")
    with pytest.raises(DeployError, match="the ncnn export crashed in its converter or runtime"):
        runtimes._in_child("ncnn", os.abort)
