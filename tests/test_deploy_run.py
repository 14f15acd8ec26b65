"""A run that ends in deployment: train -> prune -> finetune -> export -> quantize -> compress.

One small model is trained once for the module; the INT8, guard, compress and bad-input tests
reuse it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from engine import checkpoint
from engine.cli import ExitCode, main
from engine.deploy import compressed, onnxfile, runtime
from engine.deploy.artifacts import export_file
from engine.deploy.data import Images
from engine.deploy.quantize import QuantizeData, QuantizeOptions, accuracy_scorer, quantize
from engine.runs import read_run

PRESET = {
    "name": "ship",
    "model": {"arch": "vgg", "kwargs": {"depth": 11, "width": 0.25}},
    "data": {"dataset": "shapes", "num_classes": 4, "train_size": 1200, "val_size": 600, "augment": False},
    "training": {"epochs": 5, "batch_size": 32, "lr": 0.05, "warmup_epochs": 0.3, "log_every": 10, "device": "cpu"},
    "latency": {"threads": 1, "warmup": 2, "repeats": 5},
    "stages": [
        {"type": "train"},
        {"type": "prune", "percent": 0.5, "round_to": 2},
        {"type": "finetune", "training": {"epochs": 2, "lr": 0.01}},
        {"type": "export"},
        {"type": "quantize", "samples": 128},
        {"type": "compress", "sparsity": 0.7, "bits": 4, "finetune_epochs": 1, "training": {"lr": 0.005}},
    ],
}
ROW_KEYS = {"accuracy", "params", "flops", "size", "latency_b1_ms", "latency_b32_ms", "threads", "format"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("deploy")
    preset = tmp / "ship.yaml"
    preset.write_text(yaml.safe_dump(PRESET, sort_keys=False))
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--batch", str(preset), "--runs-dir", str(tmp / "runs"), "--plain"])
    assert code == ExitCode.OK, out.getvalue()
    return tmp / "runs" / "ship", out.getvalue()


def summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def test_run_writes_checked_artifacts_and_times_them_side_by_side(run):
    path, printed = run
    assert read_run(path).state == "done"
    rows = summary(path)["comparison"]
    names = ["original.onnx", "export.onnx", "quantize.int8.onnx", "compress.zip"]
    assert [n for n in rows if n in names] == names
    for name in names:
        row = rows[name]
        assert ROW_KEYS <= set(row), name
        assert row["latency_b1_ms"] > 0 and row["latency_b32_ms"] > 0 and row["threads"] == 1
        assert row["size"] == (path / name).stat().st_size
    assert [rows[n]["format"] for n in names] == ["fp32", "fp32", "int8", "sparse-4bit"]
    assert rows["export.onnx"]["params"] < rows["original.onnx"]["params"]  # the pruned model ships
    assert rows["export.onnx"]["flops"] < rows["original.onnx"]["flops"]
    assert rows["quantize.int8.onnx"]["size"] < rows["export.onnx"]["size"] / 2
    # the headless run ends with the artifacts table and the plain word on sparsity
    assert "deployable artifacts: onnxruntime on the CPU, 1 thread," in printed
    assert "quantize.int8.onnx  int8" in printed and "does not speed up dense CPU inference" in printed
    assert not list(path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_int8_accuracy_through_onnxruntime_is_within_a_point_of_fp32(run):
    path, _ = run
    s = summary(path)
    fp32, int8 = s["quantize"]["fp32_accuracy"], s["quantize"]["accuracy"]
    assert fp32 == s["export"]["accuracy"] > 0.9  # a trained model, both measured through onnxruntime
    assert fp32 - int8 <= 0.01
    # and the file really is INT8 and really gives that accuracy
    model = onnxfile.read(path / "quantize.int8.onnx")
    assert onnxfile.is_quantized(model)
    bundle_images = _images(path)
    assert runtime.accuracy(runtime.session(path / "quantize.int8.onnx"), bundle_images.val()) == pytest.approx(int8)


def _images(path: Path) -> Images:
    from engine import config, data

    spec = config.load_preset(path / "spec.yaml")
    bundle = data.build(spec.data, batch_size=64)
    return Images(bundle, "shapes", tuple(bundle.mean), tuple(bundle.std))


def test_onnx_metadata_says_what_a_deployment_needs(run):
    path, _ = run
    sess = runtime.session(path / "export.onnx")
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == ["circle", "square", "triangle", "cross"]
    assert meta["input_size"] == "3x32x32" and meta["precision"] == "fp32"
    assert len(json.loads(meta["mean"])) == 3 and float(meta["accuracy"]) == pytest.approx(summary(path)["export"]["accuracy"], abs=1e-6)
    assert json.loads(meta["slimlab.meta"])["stage"] == "finetune"
    assert json.loads(meta["slimlab.arch"])["name"] == "vgg"
    int8 = onnxfile.peek(path / "quantize.int8.onnx")
    assert int8.precision == "int8" and int8.opset == 18 and int8.input_shape == ["batch", 3, 32, 32]
    assert int8.metadata["slimlab.quantization"]["per_channel"] is True
    assert int8.metadata["class_names"] == ["circle", "square", "triangle", "cross"]


def test_compress_reports_size_sparsity_and_accuracy_of_the_reloaded_file(run):
    path, _ = run
    s = summary(path)["compress"]
    assert 0.69 <= s["sparsity"] <= 0.71 and s["bits"] == 4
    assert s["size"] == (path / "compress.zip").stat().st_size
    assert s["dense_size"] > 4 * s["size"] and s["compression"] > 4
    assert s["params"] < 0.4 * s["params_dense"]
    with zipfile.ZipFile(path / "compress.zip") as z:  # data only: json header and .npy arrays
        assert all(n == "header.json" or n.endswith(".npy") for n in z.namelist())
    model, header = compressed.load(path / "compress.zip")
    for name, info in header["tensors"].items():
        if info["kind"] == "shared":
            values = dict(model.named_parameters())[name].detach()
            assert values[values != 0].unique().numel() <= 2**4
    from engine.train import evaluate

    reloaded = evaluate(model, _images(path).val(), torch.device("cpu"))["accuracy"]
    assert reloaded == pytest.approx(s["accuracy"])
    assert "does not speed up dense CPU inference" in (path / "log.txt").read_text()


# ---------------------------------------------------------------- the accuracy guard


def outlier(model: nn.Module, bn: int, conv: int, through_add: bool = False) -> nn.Module:
    """The same function, made quantization-sensitive: one channel of BatchNorm `bn` scaled by 1000
    (after a ReLU that is exact) and divided back in the next conv. One activation range per tensor
    then leaves the other channels of that tensor almost no INT8 levels."""

    class Twice(nn.Module):  # x + x: an Add, which onnxruntime quantizes on its own
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + x

    f = model.features
    with torch.no_grad():
        f[bn].weight[0] *= 1000
        f[bn].bias[0] *= 1000
        f[conv].weight[:, 0] /= 1000
        if through_add:
            f[conv].weight /= 2
    if through_add:
        model.features = nn.Sequential(*f[:conv], Twice(), *f[conv:])
    return model


def guarded(path: Path, tmp_path: Path, model: nn.Module, max_drop: float = 1.0):
    images = _images(path)
    export_file(model, tmp_path / "m.onnx", input_shape=(3, 32, 32), images=images)
    data = QuantizeData(images.calibration(128), accuracy_scorer(images.val))
    return quantize(onnxfile.read(tmp_path / "m.onnx"), data, QuantizeOptions(max_drop=max_drop))


def test_guard_keeps_the_sensitive_layers_in_fp32(run, tmp_path):
    path, _ = run
    model = outlier(checkpoint.load(path / "weights" / "finetune.pt").model, bn=9, conv=11)
    result = guarded(path, tmp_path, model)
    assert result.attempts[0]["accuracy"] < result.fp32_accuracy - 0.2  # plain INT8 is broken
    assert result.model is not None and result.drop <= 1.0
    assert "features.11" in result.excluded or "features.8" in result.excluded
    assert 1 <= len(result.excluded) < 9 and "fp32" in result.message


def test_unreachable_max_drop_keeps_fp32_and_says_so(run, tmp_path, capsys):
    path, _ = run
    model = outlier(checkpoint.load(path / "weights" / "finetune.pt").model, bn=9, conv=11, through_add=True)
    export_file(model, tmp_path / "m.onnx", input_shape=(3, 32, 32), images=_images(path))
    code = main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(path / "spec.yaml"), "--samples", "128"])
    captured = capsys.readouterr()
    assert code == ExitCode.FAILED
    assert "cannot be reached" in captured.err and "keeping the fp32 model; no INT8 file written" in captured.err
    assert "with 9 layer(s) in fp32" in captured.out  # every conv/linear layer was tried in fp32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


DOUBLED = """
from torch import nn
from engine.models.vgg import VGG


class Twice(nn.Module):
    def forward(self, x):
        return x + x


class DoubledVGG(VGG):
    def __init__(self, num_classes=10, in_channels=3, depth=11, width=1.0):
        super().__init__(num_classes, in_channels, depth, width)
        self.features = nn.Sequential(*self.features[:11], Twice(), *self.features[11:])
"""


def test_run_whose_max_drop_is_unreachable_keeps_the_fp32_file(run, tmp_path, monkeypatch):
    path, _ = run
    (tmp_path / "doubled.py").write_text(DOUBLED)
    monkeypatch.syspath_prepend(str(tmp_path))
    # the unpruned trained model (its widths are DoubledVGG's), made quantization-sensitive
    model = outlier(checkpoint.load(path / "weights" / "train.pt").model, bn=9, conv=11, through_add=True)
    arch = checkpoint.arch_dict("doubled:DoubledVGG", 4, 3, {"depth": 11, "width": 0.25})
    checkpoint.save(tmp_path / "sensitive.pt", model, arch)
    preset = {**PRESET, "name": "fragile", "model": {"arch": "doubled:DoubledVGG", "kwargs": arch["kwargs"],
                                                      "checkpoint": str(tmp_path / "sensitive.pt")},
              "stages": [{"type": "export"}, {"type": "quantize", "samples": 128}]}
    (tmp_path / "fragile.yaml").write_text(yaml.safe_dump(preset, sort_keys=False))
    code = main(["--batch", str(tmp_path / "fragile.yaml"), "--runs-dir", str(tmp_path / "runs"), "--plain"])
    assert code == ExitCode.OK
    run_dir = tmp_path / "runs" / "fragile"
    s = summary(run_dir)
    assert s["quantize"]["kept"] == "fp32" and s["quantize"]["file"] == "export.onnx"
    assert "cannot be reached" in s["quantize"]["message"] and s["quantize"]["attempts"][-1]["excluded"] == 9
    assert not (run_dir / "quantize.int8.onnx").exists() and (run_dir / "export.onnx").exists()
    assert [r["format"] for r in s["comparison"].values() if "format" in r] == ["fp32"]
    assert "keeping the fp32 model" in (run_dir / "log.txt").read_text()


# ---------------------------------------------------------------- bad inputs to quantize


def test_quantize_refuses_what_is_not_an_onnx_model(run, tmp_path, capsys):
    path, _ = run
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    assert main(["quantize", str(text)]) == ExitCode.FAILED
    assert "not an ONNX model" in capsys.readouterr().err
    assert main(["quantize", str(path / "weights" / "finetune.pt")]) == ExitCode.FAILED
    assert "PyTorch checkpoint: export it first" in capsys.readouterr().err
    assert main(["quantize", str(path / "quantize.int8.onnx")]) == ExitCode.FAILED
    assert "already quantized" in capsys.readouterr().err


def test_quantize_needs_calibration_data_that_fits(run, tmp_path, capsys):
    path, _ = run
    # a model with no recorded dataset and no --calib
    bare = tmp_path / "bare.onnx"
    export_file(checkpoint.load(path / "weights" / "finetune.pt").model, bare, input_shape=(3, 32, 32), images=None)
    assert main(["quantize", str(bare)]) == ExitCode.FAILED
    assert "calibration data missing" in capsys.readouterr().err
    assert main(["quantize", str(bare), "--calib", str(tmp_path / "nowhere")]) == ExitCode.FAILED
    assert "calibration data missing" in capsys.readouterr().err
    # a one-channel model and three-channel data
    from engine.models import build

    gray = tmp_path / "gray.onnx"
    export_file(build("vgg", 4, 1, depth=11, width=0.125), gray, input_shape=(1, 32, 32), images=None)
    assert main(["quantize", str(gray), "--calib", str(path / "spec.yaml")]) == ExitCode.FAILED
    assert "takes 1-channel images but shapes" in capsys.readouterr().err
    # the run's model exported for 48x48 inputs, calibrated with its own 32x32 data
    big = tmp_path / "big.onnx"
    assert main(["export", str(path / "weights" / "finetune.pt"), "--input-size", "3x48x48", "--out", str(big)]) == 1
    assert "takes 48x48 images but shapes (recorded in the model) gives 32x32" in capsys.readouterr().err
    export_file(checkpoint.load(path / "weights" / "finetune.pt").model, big, input_shape=(3, 48, 48), images=None)
    assert main(["quantize", str(big), "--calib", str(path / "spec.yaml")]) == ExitCode.FAILED
    assert "takes 48x48 images but" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.int8.onnx"))


def test_quantize_cli_within_budget_writes_the_int8_file(run, tmp_path, capsys):
    path, _ = run
    code = main(["quantize", str(path / "export.onnx"), "--samples", "64", "--out", str(tmp_path / "q.onnx")])
    out = capsys.readouterr().out
    assert code == ExitCode.OK, out
    assert "accuracy through onnxruntime: fp32" in out and onnxfile.peek(tmp_path / "q.onnx").precision == "int8"


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_every_calibration_method_quantizes_and_is_recorded(run, tmp_path, capsys, method):
    path, _ = run
    out = tmp_path / f"{method}.onnx"
    code = main(["quantize", str(path / "export.onnx"), "--samples", "64", "--method", method, "--no-per-channel",
                 "--max-drop", "none", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == ExitCode.OK, printed
    assert f"({method}, per-tensor weights)" in printed
    info = onnxfile.peek(out)
    settings = info.metadata["slimlab.quantization"]
    assert info.precision == "int8" and settings["method"] == method and settings["per_channel"] is False
    fp32 = summary(path)["export"]["accuracy"]
    assert info.accuracy == pytest.approx(runtime.accuracy(runtime.session(out), _images(path).val()))
    assert fp32 - info.accuracy <= 0.05  # calibrated sensibly (no guard here)
