"""A detector to INT8: the quantize stage of a detection run and `slimlab quantize` of a detection ONNX,
with the mAP guard (measured, not a list of layers) and the refusals of files and data that do not fit."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from detect_helpers import write_preset

from engine import checkpoint
from engine.cli import main
from engine.config import load_preset
from engine.deploy import onnxfile
from engine.detect.deploy import detection_sqnr
from engine.models import build
from engine.pipeline import Pipeline

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("ultralytics_offline")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained tiny YOLOv8 (its mAP well above 0), exported and quantized within 1 point of mAP50-95."""
    from engine.cli import prepare_run_dir
    from engine.detect import ultra
    from engine.runs import create_run_dir

    ultra.load()
    tmp = tmp_path_factory.mktemp("quantize")
    stages = [{"type": "train"}, {"type": "export", "original": False},
              {"type": "quantize", "samples": 48, "max_drop": 1.0}]
    data = {"dataset": "yolo_shapes", "num_classes": 2, "train_size": 256, "val_size": 32, "image_size": 64,
            "augment": False}
    training = {"epochs": 12, "batch_size": 16, "optimizer": "adamw", "lr": 0.004, "log_every": 50, "device": "cpu",
                "warmup_epochs": 1}  # AdamW: a quarter-width YOLOv8 reaches mAP50-95 ~0.15 in 12 epochs here
    preset = write_preset(tmp, stages=stages, data=data, training=training,
                          model={"arch": "ultralytics:yolov8n.yaml", "kwargs": {"width": 0.25}},
                          latency={"repeats": 3, "warmup": 1, "runs": 1})
    spec = load_preset(preset)
    path = create_run_dir(tmp / "runs", "q")
    prepare_run_dir(path, spec)
    Pipeline(spec, path).run()
    return path


def test_the_quantize_stage_writes_int8_with_the_map_of_both_files(run):
    summary = json.loads((run / "summary.json").read_text())
    q = summary["quantize"]
    assert q["source"] == "export.onnx" and q["fp32_mAP50_95"] > 0.05  # a detector worth quantizing
    assert (run / "quantize.int8.onnx").exists(), q.get("message")
    assert abs(q["fp32_mAP50_95"] - q["mAP50_95"]) * 100 <= 1.0 + 1e-9
    assert set(q["fp32"]) >= {"mAP50", "mAP50_95"} and "mAP50" in q and "accuracy" not in q
    # the fused output (box pixels and class scores in one tensor) wrecks INT8: the guard measured it
    # and kept what it had to in fp32, named in the summary and the log
    assert q["attempts"][0]["accuracy"] < q["fp32_mAP50_95"] - 0.01 and q["fp32_layers"]
    log = (run / "log.txt").read_text()
    assert "most sensitive" in log and q["fp32_layers"][0] in log
    info = onnxfile.peek(run / "quantize.int8.onnx")
    assert info.precision == "int8" and info.metadata["task"] == "detect"
    assert float(info.metadata["mAP50_95"]) == pytest.approx(q["mAP50_95"], abs=1e-6)
    rows = summary["comparison"]
    int8 = rows["quantize.int8.onnx"]
    assert int8["format"] == "int8" and int8["latency_b1_ms"] > 0 and int8["latency_b8_ms"] > 0
    assert int8["speedup_batch"] == 1 and "accuracy" not in int8 and int8["mAP50_95"] == q["mAP50_95"]


def test_the_guard_compares_boxes_and_scores_apart():
    """Class scores that fell to zero are not hidden by boxes hundreds of pixels large."""
    ref = torch.cat([torch.full((1, 4, 10), 300.0), torch.full((1, 2, 10), 0.5)], 1).numpy()
    got = ref.copy()
    got[:, 4:] = 0.0
    plain = 10 * torch.log10(torch.tensor((ref ** 2).sum() / ((ref - got) ** 2).sum())).item()
    assert plain > 50 and detection_sqnr([ref], [got]) == pytest.approx(0.0, abs=1e-6)


def test_slimlab_quantize_takes_a_detection_onnx(run, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(run / "export.onnx"), "--samples", "500", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fewer than --samples 500: calibrating on all of them" in printed  # the run's data, recorded in the file
    assert "mAP50-95 through onnxruntime: fp32" in printed and onnxfile.peek(out).precision == "int8"


def test_a_detection_onnx_without_metadata_needs_its_dataset(run, tmp_path, capsys):
    model = onnx.load(str(run / "export.onnx"))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    assert main(["quantize", str(bare), "--samples", "16", "--max-drop", "none"]) == 1
    assert "give one with --calib" in capsys.readouterr().err
    data = run / "data" / "data.yaml"
    assert main(["quantize", str(bare), "--calib", str(data), "--samples", "16", "--max-drop", "none",
                 "--out", str(tmp_path / "b8.onnx")]) == 0
    assert onnxfile.peek(tmp_path / "b8.onnx").precision == "int8"


def test_detection_and_classification_files_refuse_each_others_data(run, tmp_path, capsys):
    assert main(["quantize", str(run / "export.onnx"), "--calib", "demo"]) == 1
    assert "is a detection model: --calib takes the Ultralytics dataset yaml" in capsys.readouterr().err
    model = build("vgg", 4, depth=11, width=0.125)
    ckpt = tmp_path / "cls.pt"
    checkpoint.save(ckpt, model, checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125}))
    assert main(["export", str(ckpt), "--input-size", "3x32x32", "--out", str(tmp_path / "cls.onnx")]) == 0
    capsys.readouterr()
    assert main(["quantize", str(tmp_path / "cls.onnx"), "--calib", str(run / "data" / "data.yaml")]) == 1
    assert "is a YOLO detection dataset but" in capsys.readouterr().err


def test_a_detection_run_refuses_a_classification_file(run):
    from engine.detect.deploy import check_detection_file
    from engine.errors import DeployError

    info = onnxfile.peek(run / "export.onnx")
    info.metadata = {**info.metadata, "task": None}
    with pytest.raises(DeployError, match="no detection metadata"):
        check_detection_file(info, "x.onnx", 2)
