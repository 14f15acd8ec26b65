"""ONNX export: every built-in arch pruned and unpruned, a user module:Class, a twice-pruned model,
and the models the exporter cannot take (an operator with no ONNX translation, a fixed batch)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import engine.models as models
from engine import checkpoint
from engine.cli import ExitCode, main
from engine.deploy import onnxfile, runtime
from engine.deploy.artifacts import export_file
from engine.deploy.export import export
from engine.errors import DeployError
from engine.slim import apply_plan, make_plan
from engine.slim.prune_file import prune_checkpoint
from engine.trust import Trust

from helpers import SMALL_SLIMMABLE

SMALL = {**SMALL_SLIMMABLE, "kd_student": {"bn": True}}
SHAPE = (3, 32, 32)


def images(n: int = 6, shape=SHAPE, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def spread_gammas(model: nn.Module) -> None:
    """Distinct |gamma| per channel, so a plan cuts channels unevenly across layers."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.05)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)


def assert_same_outputs(model: nn.Module, proto, batches=(1, 5)) -> None:
    """onnxruntime gives PyTorch's outputs at several batch sizes (the batch axis is dynamic)."""
    sess = runtime.session(onnxfile.serialize(proto))
    model.eval()
    for b in batches:
        x = images(b, seed=b)
        with torch.no_grad():
            expected = model(x).numpy()
        assert np.abs(runtime.predict(sess, x.numpy()) - expected).max() <= 1e-3


def test_every_builtin_arch_is_covered():
    assert sorted(SMALL) == models.names()


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_builtin_arch_exports_pruned_and_unpruned(arch):
    torch.manual_seed(0)
    model = models.build(arch, 5, **SMALL[arch]).eval()
    spread_gammas(model)
    pruned = apply_plan(copy.deepcopy(model), make_plan(model, percent=0.4))
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    for m in (model, pruned):
        done = export(m, SHAPE, images=images(8))
        assert done.max_abs_diff <= 1e-3 and done.checked_on == "8 validation images"
        assert done.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        assert_same_outputs(m, done.model)


USER_MODEL = """
from torch import nn

class TinyNet(nn.Module):
    def __init__(self, num_classes=3, in_channels=3, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=width), nn.BatchNorm2d(width), nn.ReLU6())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.branch(x)
        return self.head(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))
"""


def test_user_module_class_model_exports_through_the_cli(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinynets.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    arch = checkpoint.arch_dict("tinynets:TinyNet", 3, 3, {"width": 8})
    model = checkpoint.build_model(arch, trust=Trust.everything())
    spread_gammas(model)
    ckpt = tmp_path / "tiny.pt"
    checkpoint.save(ckpt, model, arch)
    code = main(["export", str(ckpt), "--allow-arch", "tinynets:TinyNet", "--input-size", "3x20x20", "--batch", "dynamic"])
    out = capsys.readouterr().out
    assert code == ExitCode.OK, out
    assert "random inputs" in out  # no data recorded in this checkpoint: the check says what it used
    proto = onnxfile.read(tmp_path / "tiny.onnx")
    info = onnxfile.describe(proto)
    assert info.input_shape == ["batch", 3, 20, 20] and info.precision == "fp32"
    assert info.metadata["slimlab.arch"]["name"] == "tinynets:TinyNet"
    sess = runtime.session(tmp_path / "tiny.onnx")
    x = images(4, (3, 20, 20))
    with torch.no_grad():
        assert np.abs(runtime.predict(sess, x.numpy()) - model.eval()(x).numpy()).max() <= 1e-3
    # pruned (the depthwise branch and the residual add cut together), rebuilt from its plan, exported
    loaded = checkpoint.load(ckpt, trust=Trust.everything())
    prune_checkpoint(loaded, make_plan(loaded.model, percent=0.4), tmp_path / "tiny-pruned.pt")
    pruned = checkpoint.load(tmp_path / "tiny-pruned.pt", trust=Trust.everything())
    assert sum(p.numel() for p in pruned.model.parameters()) < sum(p.numel() for p in model.parameters())
    code = main(["export", str(tmp_path / "tiny-pruned.pt"), "--allow-arch", "tinynets:TinyNet",
                 "--input-size", "3x20x20"])
    assert code == ExitCode.OK, capsys.readouterr().out
    sess = runtime.session(tmp_path / "tiny-pruned.onnx")
    with torch.no_grad():
        assert np.abs(runtime.predict(sess, x.numpy()) - pruned.model.eval()(x).numpy()).max() <= 1e-3


def test_model_pruned_twice_exports_from_its_composed_plan(tmp_path, capsys):
    torch.manual_seed(0)
    arch = checkpoint.arch_dict("resnet_cifar", 4, 3, {"width": 0.25})
    model = checkpoint.build_model(arch)
    spread_gammas(model)
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    checkpoint.save(tmp_path / "base.pt", model, arch)
    loaded = checkpoint.load(tmp_path / "base.pt")
    prune_checkpoint(loaded, make_plan(loaded.model, percent=0.3), first)
    again = checkpoint.load(first)
    spread_gammas(again.model)  # new gammas, as after another round of sparse training
    prune_checkpoint(again, make_plan(again.model, percent=0.3), second)
    twice = checkpoint.load(second)
    assert twice.plan["options"]["earlier"]  # one plan, composed onto the unpruned architecture
    assert main(["export", str(second), "--out", str(tmp_path / "twice.onnx")]) == ExitCode.OK
    assert_same_outputs(twice.model, onnxfile.read(tmp_path / "twice.onnx"))
    assert "pruned" in capsys.readouterr().out


@torch.library.custom_op("slimlabtest::wobble", mutates_args=())
def wobble(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@wobble.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Wobble(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return wobble(x)


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.body = nn.Sequential(nn.ReLU(), Wobble())
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.conv(x)).mean((2, 3)))


def test_operator_without_onnx_translation_names_the_module_and_writes_nothing(tmp_path):
    out = tmp_path / "odd.onnx"
    with pytest.raises(DeployError) as e:
        export_file(Odd(), out, input_shape=(3, 8, 8), images=None)
    msg = str(e.value)
    assert "module 'body.1' (Wobble)" in msg and "slimlabtest.wobble" in msg and "no ONNX translation" in msg
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind


class FixedBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).reshape(2, -1))


def test_model_with_a_fixed_batch_exports_with_batch_n_only():
    with pytest.raises(DeployError, match=r"fixes its batch size .*--batch N"):
        export(FixedBatch(), (3, 8, 8))
    done = export(FixedBatch(), (3, 8, 8), batch=2, images=images(3, (3, 8, 8)))
    assert done.batch == 2 and done.model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_export_cli_bad_inputs(tmp_path, capsys):
    arch = checkpoint.arch_dict("vgg", 3, 3, {"depth": 11, "width": 0.125})
    checkpoint.save(tmp_path / "m.pt", checkpoint.build_model(arch), arch)
    assert main(["export", str(tmp_path / "m.pt"), "--input-size", "3x32"]) == ExitCode.USAGE
    assert "CxHxW" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "m.pt"), "--batch", "lots"]) == ExitCode.USAGE
    assert main(["export", str(tmp_path / "none.pt")]) == ExitCode.FAILED
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "m.pt"), "--opset", "9"]) == ExitCode.FAILED
    assert "opset 9" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx"))


class Noisy(nn.Module):
    """Noise injection left on at inference: the graph draws its own random numbers, so onnxruntime and
    PyTorch disagree by far more than rounding."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        return y + torch.randn_like(y)


def test_export_that_does_not_reproduce_pytorch_fails_and_writes_nothing(tmp_path):
    with pytest.raises(DeployError, match=r"does not reproduce PyTorch: max \|difference\| .* > 0.001 on 6 validation"):
        export(Noisy(), (3, 8, 8), images=images(6, (3, 8, 8)))
    with pytest.raises(DeployError, match="does not reproduce PyTorch"):
        export_file(Noisy(), tmp_path / "noisy.onnx", input_shape=(3, 8, 8), images=None)
    assert list(tmp_path.iterdir()) == []
