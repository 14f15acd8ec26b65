"""Deploying a pruned detector: an Ultralytics .pt that Ultralytics loads and predicts with, a checked ONNX file."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from detect_helpers import randomise_bn

from engine import checkpoint
from engine.cli import main
from engine.detect.model import arch_of, build
from engine.detect.synth import write_dataset
from engine.slim.apply import apply_plan
from engine.slim.inputs import precompute
from engine.slim.plan import plan_from_inputs

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("ultralytics_offline")]

IMGSZ = 64


@pytest.fixture(scope="module")
def pruned_checkpoint(tmp_path_factory):
    """A yolov8n (quarter width), pruned by half through the plan, saved as a slimlab checkpoint."""
    tmp = tmp_path_factory.mktemp("pruned")
    torch.manual_seed(0)
    model = build("ultralytics:yolov8n.yaml", 3, imgsz=IMGSZ, names=["circle", "square", "triangle"], width=0.25)
    randomise_bn(model)
    plan = plan_from_inputs(precompute(model), percent=0.5)
    pruned = apply_plan(copy.deepcopy(model), plan).eval()
    path = tmp / "pruned.pt"
    checkpoint.save(path, pruned, arch_of(model, "yolov8n.yaml"), plan=plan.to_dict())
    return path, pruned


def detections(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)[0]


LOAD_AND_PREDICT = """
import json, sys
import numpy as np, torch
from engine.detect import ultra
ultra.load()  # offline, as in every slimlab process
from ultralytics import YOLO
path, ref = sys.argv[1:3]
x, expected = torch.load(ref, weights_only=True)
yolo = YOLO(path)
with torch.no_grad():
    diff = (yolo.model.eval()(x)[0] - expected).abs().max().item()
image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
result = yolo.predict(image, imgsz=64, conf=0.0, max_det=5, verbose=False)[0]
print(json.dumps({"task": yolo.task, "names": yolo.names, "diff": diff, "boxes": list(result.boxes.data.shape)}))
"""


def test_ultralytics_format_is_loaded_by_ultralytics_and_predicts(pruned_checkpoint, tmp_path, capsys):
    path, pruned = pruned_checkpoint
    out = tmp_path / "yolo.pt"
    assert main(["export", str(path), "--format", "ultralytics", "--out", str(out)]) == 0
    assert "Ultralytics checkpoint" in capsys.readouterr().out
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(3))
    torch.save((x, detections(pruned, x)), tmp_path / "ref.pt")
    # Ultralytics' own loader, in its own process (as the yolo CLI would: its loader marks its classes
    # safe for torch.load process-wide, which must not leak into this test process)
    done = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(out), str(tmp_path / "ref.pt")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["task"] == "detect" and got["names"] == {"0": "circle", "1": "square", "2": "triangle"}
    # Ultralytics' model object, with its own (split-based) block forwards, computes what slimlab's does
    assert got["diff"] == 0.0
    assert got["boxes"][1] == 6 and got["boxes"][0] <= 5


def test_onnx_export_of_a_pruned_detector_is_checked_on_images_with_its_map(pruned_checkpoint, tmp_path, capsys):
    from engine.deploy import onnxfile, runtime

    path, pruned = pruned_checkpoint
    data = write_dataset(tmp_path / "ds", train=4, val=8, classes=3, seed=0)
    out = tmp_path / "pruned.onnx"
    assert main(["export", str(path), "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mAP50-95" in printed and "validation images (letterboxed)" in printed
    info = onnxfile.peek(out)
    assert info.metadata["task"] == "detect" and info.chw == (3, IMGSZ, IMGSZ) and info.batch is None
    assert info.metadata["class_names"] == ["circle", "square", "triangle"] and float(info.metadata["mAP50_95"]) >= 0
    x = torch.rand(3, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(4))
    got = runtime.predict(runtime.session(out), x.numpy())
    expected = detections(copy.deepcopy(pruned).eval(), x).numpy()
    assert got.shape == expected.shape == (3, 4 + 3, 84)  # boxes and class scores for 8x8 + 4x4 + 2x2 anchors
    assert np.abs(got[:, 4:] - expected[:, 4:]).max() <= 1e-3


def test_ultralytics_format_is_for_detection_checkpoints(tmp_path, capsys):
    arch = checkpoint.arch_dict("vgg", 3, 3, {"depth": 11, "width": 0.125})
    path = tmp_path / "cls.pt"
    checkpoint.save(path, checkpoint.build_model(arch), arch)
    assert main(["export", str(path), "--format", "ultralytics"]) != 0
    assert "writes Ultralytics detection models" in capsys.readouterr().err
