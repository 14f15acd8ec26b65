"""Detection runs end to end, offline: train -> sparse -> sweep -> prune -> finetune, cancel and resume, bad data."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from detect_helpers import TINY_DETECT, write_preset

from engine import checkpoint
from engine.cli import prepare_run_dir
from engine.config import load_preset
from engine.detect.data import load as load_data
from engine.detect.synth import write_dataset
from engine.errors import Cancelled, DataError
from engine.pipeline import Pipeline
from engine.runs import create_run_dir

from helpers import StopAfter

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("ultralytics_offline")]


DETECTION_KEYS = {"box_loss", "cls_loss", "dfl_loss", "precision", "recall", "mAP50", "mAP50_95", "rss"}


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or name look-up fails the test (and is refused, so nothing leaves the machine)."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


def start(tmp_path, preset, name="d"):
    spec = load_preset(preset)
    path = create_run_dir(tmp_path / "runs", name)
    prepare_run_dir(path, spec)
    return spec, path


def test_slimming_a_yolo_offline_end_to_end(tmp_path, no_network):
    stages = [{"type": "train"}, {"type": "sparse", "s": 1e-3}, {"type": "sweep", "ratios": [0.0, 0.5], "val_images": 8},
              {"type": "prune", "percent": 0.5}, {"type": "finetune"}, {"type": "export"}]
    preset = write_preset(tmp_path, stages=stages, latency={"repeats": 3, "warmup": 1, "runs": 1})
    spec, path = start(tmp_path, preset)
    Pipeline(spec, path).run()
    summary = json.loads((path / "summary.json").read_text())
    assert set(summary["comparison"]) == {"train", "sparse", "prune", "finetune", "original.onnx", "export.onnx"}
    for row in summary["comparison"].values():
        assert {"mAP50", "mAP50_95", "params", "flops", "latency_b1_ms"} <= set(row)
    # the pruned model's ONNX file, checked against PyTorch, measured through onnxruntime and timed
    # beside the unpruned one (the sparse model, before the prune)
    exported = summary["comparison"]["export.onnx"]
    assert exported["params"] == summary["finetune"]["params"] and exported["from"] == "finetune"
    assert abs(exported["mAP50_95"] - summary["finetune"]["mAP50_95"]) <= 0.02
    assert summary["comparison"]["original.onnx"]["from"] == "sparse"
    assert summary["comparison"]["original.onnx"]["flops"] > exported["flops"]
    assert summary["prune"]["flops"] < 0.7 * summary["sparse"]["flops"]
    assert summary["finetune"]["params"] == summary["prune"]["params"] == summary["prune"]["plan_params_after"]
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if "mAP50_95" in r]
    assert {r["stage"] for r in epochs} == {"train", "sparse", "finetune"}
    assert all(DETECTION_KEYS <= set(r) for r in epochs)
    assert any("gamma_lt_1e-2" in r for r in epochs if r["stage"] == "sparse")
    sweep = json.loads((path / "sweep.json").read_text())
    assert [r["ratio"] for r in sweep["rows"]] == [0.0, 0.5] and "mAP50_95" in sweep["rows"][0]
    # every output is a weights_only slimlab checkpoint that rebuilds the model it was saved from
    raw = torch.load(path / "weights" / "finetune.pt", weights_only=True)
    assert raw["arch"]["task"] == "detect" and raw["plan"]["groups"] == json.loads((path / "plan.json").read_text())["groups"]
    a, b = checkpoint.load(path / "weights" / "finetune.pt").model, checkpoint.load(path / "weights" / "best.pt").model
    x = torch.rand(1, 3, 64, 64)
    assert (a(x)[0] - b(x)[0]).abs().max().item() == 0.0
    assert not (path / "weights" / "last.pt").exists()
    assert (path / "ultralytics" / "train" / "results.csv").exists()  # Ultralytics' own per-epoch table
    assert json.loads((path / "status.json").read_text())["state"] == "done"
    log = (path / "log.txt").read_text()  # what the prune printed headless: the rule, totals and groups
    assert "[prune] percent 0.5 -> |gamma| threshold" in log and "[prune] prunable channels " in log
    assert "group(s) kept whole" in log


def test_a_run_under_a_relative_runs_folder_keeps_ultralytics_files_inside_it(tmp_path, monkeypatch, no_network):
    """As `make demo-detect` runs: ./runs/<name>, with the generated data inside it."""
    preset = write_preset(tmp_path, data={**TINY_DETECT["data"], "train_size": 16, "val_size": 16})
    monkeypatch.chdir(tmp_path)
    spec = load_preset(preset)
    path = create_run_dir(Path("runs"), "rel")
    prepare_run_dir(path, spec)
    Pipeline(spec, path).run()
    assert (tmp_path / "runs" / "rel" / "ultralytics" / "train" / "results.csv").exists()
    assert not (tmp_path / "runs" / "detect").exists()  # Ultralytics' own default folder stays unused


# the Ultralytics family (the preset's model) and the YOLOv5 repository's (its own modules and loss)
FAMILIES = pytest.mark.parametrize("model", [TINY_DETECT["model"], {"arch": "yolov5:yolov5n.yaml", "kwargs": {"width": 0.125}}],
                                   ids=["ultralytics", "yolov5"])


@FAMILIES
def test_rounds_repeat_sparse_prune_finetune_on_a_detector(tmp_path, no_network, model):
    stages = [{"type": "sparse", "s": 1e-3}, {"type": "prune", "percent": [0.3, 0.2]}, {"type": "finetune"}]
    spec, path = start(tmp_path, write_preset(tmp_path, stages=stages, rounds=2, model=model))
    Pipeline(spec, path).run()
    summary = json.loads((path / "summary.json").read_text())
    names = ["sparse", "prune", "finetune", "sparse-r2", "prune-r2", "finetune-r2"]
    assert list(summary["comparison"]) == names
    flops = [summary["comparison"][n]["flops"] for n in ("sparse", "prune", "prune-r2")]
    assert flops[0] > flops[1] > flops[2]
    # the second round's plan is composed onto the first: one plan from the unpruned model to the last
    plan = json.loads((path / "plan.json").read_text())
    assert plan["totals"]["params_after"] == summary["finetune-r2"]["params"]
    again = checkpoint.load(path / "weights" / "finetune-r2.pt").model
    assert sum(p.numel() for p in again.parameters()) == summary["finetune-r2"]["params"]


@FAMILIES
def test_sigterm_stops_at_a_batch_and_the_run_resumes(tmp_path, no_network, model):
    stages = [{"type": "train", "training": {"epochs": 2}}]
    spec, path = start(tmp_path, write_preset(tmp_path, stages=stages, model=model))
    with pytest.raises(Cancelled, match="SIGTERM at epoch 2 step 4"):  # epochs counted from 1, as printed
        Pipeline(spec, path, stop=StopAfter(3)).run()
    last = torch.load(path / "weights" / "last.pt", weights_only=True)
    assert last["position"]["stage"] == "train" and last["position"]["step"] == 4 and "optimizer" in last
    assert last["position"]["epoch"] == 1  # the 4th batch is the 2nd of epoch 1: that epoch restarts
    assert json.loads((path / "status.json").read_text())["state"] == "cancelled"
    Pipeline(load_preset(path / "spec.yaml"), path).run(resume=True)
    status = json.loads((path / "status.json").read_text())
    assert status["state"] == "done" and status["completed"] == ["train"]
    epochs = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if "mAP50_95" in x]
    assert [r["epoch"] for r in epochs] == [0, 1]


def bad_label(tmp_path, text: str):
    yaml_path = write_dataset(tmp_path / "ds", train=4, val=2, classes=2, seed=1)
    (tmp_path / "ds" / "labels" / "train" / "00001.txt").write_text(text)
    return yaml_path


@pytest.mark.parametrize("text, match", [
    ("5 0.5 0.5 0.2 0.2\n", "class 5 is outside 0..1"),
    ("0 0.5 1.7 0.2 0.2\n", "normalised to"),
    ("0 0.5 0.5 0 0.2\n", "width and height"),
    ("0 0.5 0.5\n", "expected 'class cx cy w h'"),
])
def test_bad_label_lines_are_named_with_file_and_line(tmp_path, text, match):
    with pytest.raises(DataError, match=match) as e:
        load_data(bad_label(tmp_path, text))
    assert "00001.txt line 1" in str(e.value)


def test_missing_folders_and_empty_labels(tmp_path):
    yaml_path = write_dataset(tmp_path / "ds", train=4, val=2, classes=2, seed=1)
    data = load_data(yaml_path)
    assert data.nc == 2 and data.splits["train"].images == 4 and data.splits["val"].objects > 0
    (tmp_path / "ds" / "labels" / "val" / "00000.txt").write_text("")
    assert load_data(yaml_path).splits["val"].background >= 1  # an empty file is a background image
    for f in (tmp_path / "ds" / "labels" / "train").iterdir():
        f.write_text("")
    with pytest.raises(DataError, match="every label file is empty"):
        load_data(yaml_path)
    import shutil

    yaml_path = write_dataset(tmp_path / "ds2", train=4, val=2, classes=2, seed=1)
    shutil.rmtree(tmp_path / "ds2" / "images" / "val")
    with pytest.raises(DataError, match="val: .*does not exist"):
        load_data(yaml_path)
    with pytest.raises(DataError, match="no such dataset yaml"):
        load_data(tmp_path / "nope.yaml")


def test_dataset_yaml_given_by_a_relative_path(tmp_path, monkeypatch):
    """As a run under ./runs reads its generated data.yaml (no `path`: the yaml's own folder)."""
    write_dataset(tmp_path / "runs" / "d" / "data", train=4, val=2, classes=2, seed=1)
    monkeypatch.chdir(tmp_path)
    data = load_data(Path("runs/d/data/data.yaml"))
    assert data.root == tmp_path / "runs" / "d" / "data" and data.splits["train"].images == 4
    # a relative `path` is taken from the yaml's folder, an absolute one as it is
    (tmp_path / "other.yaml").write_text("path: runs/d/data\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    assert load_data(Path("other.yaml")).root == tmp_path / "runs" / "d" / "data"
    (tmp_path / "runs" / "abs.yaml").write_text(f"path: {tmp_path}/runs/d/data\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    assert load_data(Path("runs/abs.yaml")).root == tmp_path / "runs" / "d" / "data"


def test_generated_data_is_deterministic_and_written_whole(tmp_path):
    a = write_dataset(tmp_path / "a", train=6, val=2, seed=3)
    b = write_dataset(tmp_path / "b", train=6, val=2, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((a.parent / f).read_bytes() == (b.parent / f).read_bytes() for f in files)
    rows = [ln.split() for p in (tmp_path / "a" / "labels" / "train").iterdir() for ln in p.read_text().splitlines()]
    assert len(rows) >= 6 and all(len(r) == 5 for r in rows)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written folder left
