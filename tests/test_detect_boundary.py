"""Ultralytics (AGPL-3.0) is an optional extra: the core never imports it, and without it a detection
run says how to install it. These run in the core environment too."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from engine.cli import main


def test_only_engine_detect_imports_ultralytics():
    offenders = []
    for root in ("engine", "tui"):
        for path in Path(root).rglob("*.py"):
            if path.parts[:2] == ("engine", "detect"):
                continue
            for line in path.read_text().splitlines():
                if re.match(r"\s*(import ultralytics|from ultralytics)", line):
                    offenders.append(f"{path}: {line.strip()}")
    assert offenders == []


def test_only_engine_detect_yolov5_imports_the_yolov5_package():
    offenders = []
    for root in ("engine", "tui"):
        for path in Path(root).rglob("*.py"):
            if path.parts[:3] == ("engine", "detect", "yolov5"):
                continue
            for line in path.read_text().splitlines():
                if re.match(r"\s*(import yolov5|from yolov5)", line):
                    offenders.append(f"{path}: {line.strip()}")
    assert offenders == []


def test_validating_a_yolov5_preset_imports_neither_torch_nor_the_package(tmp_path):
    preset = tmp_path / "v5.yaml"
    preset.write_text("task: detect\nmodel: {arch: 'yolov5:yolov5s.yaml'}\ndata: {dataset: yolo_shapes}\n"
                      "stages: [{type: train}, {type: sparse, s: 0.001}, {type: prune, percent: 0.5}]\n")
    code = (f"import sys; from engine.config import load_preset; from engine.task import kind_of; "
            f"print(kind_of(load_preset({str(preset)!r})).name, ' '.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "yolov5" and not {"yolov5", "ultralytics", "torch"} & set(out[1:])


def test_validating_a_detection_preset_imports_neither_torch_nor_ultralytics(tmp_path):
    code = ("import sys; from engine.config import load_preset; load_preset('presets/yolo_demo.yaml'); "
            "print(' '.join(sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "ultralytics" not in loaded and "torch" not in loaded


def test_without_ultralytics_a_detection_run_says_how_to_install_it(tmp_path):
    preset = tmp_path / "d.yaml"
    preset.write_text("task: detect\nmodel: {arch: 'ultralytics:yolov8n.yaml'}\ndata: {dataset: yolo_shapes}\n"
                      f"output: {{runs_dir: {tmp_path / 'runs'}}}\nstages: [{{type: train}}]\n")
    # `ultralytics` set to None in sys.modules makes every import of it fail, installed or not
    code = ("import sys; sys.modules['ultralytics'] = None; from engine.cli import main; "
            f"sys.exit(main(['--batch', '{preset}', '--plain']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert "make setup-detect" in out.stderr and "slimlab[detect]" in out.stderr
    assert "Traceback" not in out.stderr


def test_detection_presets_need_an_ultralytics_model_and_yolo_data(tmp_path, capsys):
    preset = tmp_path / "d.yaml"
    preset.write_text("task: detect\nmodel: {arch: vgg}\ndata: {dataset: yolo_shapes}\n")
    assert main(["--batch", str(preset)]) == 2
    assert "ultralytics:<model yaml>" in capsys.readouterr().err
    preset.write_text("task: detect\nmodel: {arch: 'ultralytics:yolov8n.yaml'}\ndata: {dataset: shapes}\n")
    assert main(["--batch", str(preset)]) == 2
    assert "dataset: yolo" in capsys.readouterr().err
