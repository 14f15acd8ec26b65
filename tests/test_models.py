"""Model registry: built-ins, torchvision and importable models, errors, pruning-friendliness."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import engine.models as models
from engine.errors import ModelError, NeedsTrust
from engine.slim.cut import cut_model
from engine.slim.groups import groups_from_trace
from engine.slim.trace import build_trace
from engine.trust import Trust

# Small settings per built-in so each forward/backward stays in the tens of milliseconds.
SMALL = {
    "vgg": {"width": 0.25},
    "resnet_cifar": {"width": 0.25},
    "mobilenetv2": {"width": 0.25},
    "c3net": {"width": 0.125, "depth": 0.33},
    "kd_teacher": {"bn": True},
    "kd_student": {"bn": True},
}
SLIMMABLE = [(arch, kwargs) for arch, kwargs in SMALL.items()]
TUTORIAL_NO_BN = [("kd_teacher", {}), ("kd_student", {})]


def build_small(arch: str, num_classes: int = 10, in_channels: int = 3, **extra) -> nn.Module:
    return models.build(arch, num_classes, in_channels, **{**SMALL[arch], **extra})


def final_linears(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def test_names_are_the_builtins_sorted():
    assert models.names() == sorted(SMALL)


@pytest.mark.parametrize("arch", sorted(SMALL))
@pytest.mark.parametrize("num_classes", [3, 10])
def test_forward_backward_shapes(arch, num_classes):
    torch.manual_seed(0)
    model = build_small(arch, num_classes)
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, num_classes)
    logits.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("arch,kwargs", TUTORIAL_NO_BN)
def test_tutorial_nets_default_to_no_batchnorm(arch, kwargs):
    model = models.build(arch, 10, **kwargs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_tutorial_layer_sizes():
    teacher = models.build("kd_teacher", 10)
    student = models.build("kd_student", 10)
    assert [m.out_channels for m in teacher.modules() if isinstance(m, nn.Conv2d)] == [
        128,
        64,
        64,
        32,
    ]
    assert [m.out_channels for m in student.modules() if isinstance(m, nn.Conv2d)] == [16, 16]
    assert [
        (m.in_features, m.out_features) for m in teacher.classifier if isinstance(m, nn.Linear)
    ] == [
        (2048, 512),
        (512, 10),
    ]
    assert [
        (m.in_features, m.out_features) for m in student.classifier if isinstance(m, nn.Linear)
    ] == [
        (1024, 256),
        (256, 10),
    ]
    assert any(isinstance(m, nn.Dropout) and m.p == 0.1 for m in teacher.modules())


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_every_conv_is_followed_by_batchnorm(arch):
    model = build_small(arch)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    for layer, following in zip(layers, layers[1:] + [None], strict=True):
        if isinstance(layer, nn.Conv2d):
            assert isinstance(following, nn.BatchNorm2d)
            assert following.num_features == layer.out_channels


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_in_channels_and_input_size(arch):
    model = build_small(arch, num_classes=4, in_channels=1)
    assert model.input_size == (1, 32, 32)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    assert build_small(arch).input_size == (3, 32, 32)


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_default_ignore_names_exactly_the_logits_layer(arch):
    model = build_small(arch, num_classes=7)
    matched = [
        n
        for n, _ in model.named_modules()
        if any(fnmatch.fnmatch(n, p) for p in model.default_ignore)
    ]
    assert matched == final_linears(model)[-1:]
    assert model.get_submodule(matched[0]).out_features == 7


@pytest.mark.parametrize("depth,convs", [(11, 8), (13, 10), (16, 13), (19, 16)])
def test_vgg_depths(depth, convs):
    model = models.build("vgg", 10, depth=depth, width=0.125)
    assert sum(isinstance(m, nn.Conv2d) for m in model.features) == convs
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_width_multipliers_scale_channels():
    assert models.build("vgg", 10, width=0.5).features[0].out_channels == 32
    assert models.build("vgg", 10, width=0.01).features[0].out_channels == 8
    assert models.build("resnet_cifar", 10, width=2.0).conv1.out_channels == 32
    assert models.build("mobilenetv2", 10, width=0.5).features[0][0].out_channels == 16
    assert models.build("c3net", 10, width=0.25).model[0].conv.out_channels == 16


def test_resnet_depth_sets_block_count():
    model = models.build("resnet_cifar", 10, depth=32, width=0.25)
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3)] == [5, 5, 5]
    # two stride-2 stages change shape, so exactly two projection shortcuts
    assert (
        sum(
            isinstance(b.shortcut, nn.Sequential) for b in model.modules() if hasattr(b, "shortcut")
        )
        == 2
    )


def test_c3net_names_and_depth_multiplier():
    model = models.build("c3net", 10, width=0.125, depth=0.33)
    names = dict(model.named_modules())
    for name in (
        "model.0.conv",
        "model.2.cv1.bn",
        "model.2.m.0.cv2.conv",
        "model.9.cv2",
        "head.fc",
    ):
        assert name in names
    assert [len(model.model[i].m) for i in (2, 4, 6, 8)] == [1, 2, 3, 1]
    deeper = models.build("c3net", 10, width=0.125, depth=0.67)
    assert [len(deeper.model[i].m) for i in (2, 4, 6, 8)] == [2, 4, 6, 2]


def test_c3net_starts_trainable_on_32px():
    model = models.build("c3net", 8)
    # residual Bottlenecks start as the identity and the logits start uniform
    gammas = [m.cv2.bn.weight for m in model.modules() if type(m).__name__ == "Bottleneck"]
    assert gammas and all(torch.count_nonzero(g) == 0 for g in gammas)
    assert torch.count_nonzero(model.head.fc.weight) == 0
    assert model.head.conv.conv.out_channels == 320  # 1280 scaled by width 0.25
    assert model.model(torch.randn(2, 3, 32, 32)).shape[-2:] == (4, 4)


def channel_groups(model: nn.Module) -> tuple:
    trace = build_trace(model, (3, 32, 32))
    return trace, groups_from_trace(trace, model)


@pytest.mark.parametrize("arch,kwargs", SLIMMABLE + TUTORIAL_NO_BN)
def test_first_conv_group_can_be_cut(arch, kwargs):
    model = models.build(arch, 5, **kwargs).eval()
    trace, groups = channel_groups(model)
    conv = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    group = next(g for g in groups if conv in g.convs)
    before = model.get_submodule(conv).out_channels
    cut_model(model, trace, groups, {group.id: np.array([0, 1])})
    assert model.get_submodule(conv).out_channels == before - 2 * group.width
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("arch,kwargs", SLIMMABLE)
def test_every_group_but_the_classifier_can_be_cut(arch, kwargs):
    model = models.build(arch, 5, **kwargs).eval()
    trace, groups = channel_groups(model)
    params_before = sum(p.numel() for p in model.parameters())
    cut = {g.id: np.array([int(np.flatnonzero(~g.fixed)[0])]) for g in groups if g.prunable}
    assert len(cut) > 1
    assert all(not g.prunable for g in groups if model.default_ignore[0] in g.convs)
    cut_model(model, trace, groups, cut)
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert model.get_submodule(model.default_ignore[0]).out_features == 5


@pytest.mark.parametrize(
    "arch,kwargs,expected",
    [
        ("vgg", {"depth": 12}, "11, 13, 16, 19"),
        ("resnet_cifar", {"depth": 21}, "6n+2"),
        ("vgg", {"width": 0}, "positive number"),
        ("mobilenetv2", {"width": "wide"}, "positive number"),
        ("c3net", {"depth": -1.0}, "positive number"),
        ("kd_student", {"bn": "yes"}, "true or false"),
        ("vgg", {"dropout": 0.5}, "options are: depth, width"),
        ("kd_teacher", {"width": 2}, "options are: bn"),
    ],
)
def test_bad_builtin_kwargs(arch, kwargs, expected):
    with pytest.raises(ModelError, match=arch) as info:
        models.build(arch, 10, **kwargs)
    assert expected in str(info.value)


@pytest.mark.parametrize("num_classes,in_channels", [(0, 3), (10, 0), (2.5, 3)])
def test_bad_class_or_channel_counts(num_classes, in_channels):
    with pytest.raises(ModelError, match="positive integer"):
        models.build("vgg", num_classes, in_channels)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ModelError) as info:
        models.build("resnet", 10)
    message = str(info.value)
    assert "'resnet'" in message and "Did you mean 'resnet_cifar'" in message
    for name in models.names():
        assert name in message
    with pytest.raises(ModelError, match="Valid names") as info:
        models.build("zzz", 10)
    assert "Did you mean" not in str(info.value)
    with pytest.raises(ModelError, match="mobilenetv2"):
        models.describe("mobilenet_v2")


def test_describe():
    for name in models.names():
        assert models.describe(name)
        assert "\n" not in models.describe(name)
    assert "resnet18" in models.describe("torchvision:resnet18")
    assert "pkg.mod:Net" in models.describe("pkg.mod:Net")


def test_torchvision_unavailable_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(ModelError) as info:
        models.build("torchvision:resnet18", 10)
    message = str(info.value)
    assert "torchvision is not available" in message
    assert "'vision' extra" in message
    assert "vgg" in message and "resnet_cifar" in message


def write_module(tmp_path, monkeypatch, name: str, source: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


NET_SOURCE = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, num_classes, in_channels=3, hidden=8):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
            self.bn = nn.BatchNorm2d(hidden)
            self.out = nn.Linear(hidden, num_classes)

        def forward(self, x):
            return self.out(self.bn(self.conv(x)).mean((2, 3)))

    def make_net(num_classes, hidden=4):
        return Net(num_classes, hidden=hidden)

    def not_a_model(num_classes):
        return "nope"

    def picky(num_classes):
        raise ValueError("num_classes must be even")

    def no_classes():
        return Net(10)

    NUMBER = 3
"""


def named(arch: str) -> Trust:
    """What a preset's model.arch or --arch gives: the user named this class."""
    return Trust().allowing(arch)


def test_external_class(tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, "slimlab_ext_class", NET_SOURCE)
    model = models.build(f"{mod}:Net", 6, in_channels=1, hidden=5, trust=named(f"{mod}:Net"))
    assert model.conv.in_channels == 1 and model.conv.out_channels == 5
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 6)
    assert model.default_ignore == ["out"]
    assert model.input_size == (1, 32, 32)


def test_external_factory_functions_are_refused_before_they_run(tmp_path, monkeypatch):
    source = NET_SOURCE + "\n    def make_and_mark(num_classes):\n        open(MARK, 'w').close()\n        return Net(num_classes)\n"
    mark = tmp_path / "called"
    mod = write_module(tmp_path, monkeypatch, "slimlab_ext_func", source.replace("MARK", repr(str(mark))))
    with pytest.raises(ModelError, match="not a torch.nn.Module subclass") as info:
        models.build(f"{mod}:make_and_mark", 3, trust=named(f"{mod}:make_and_mark"))
    assert "wrap it in an nn.Module class" in str(info.value)
    assert not mark.exists()


def test_external_class_without_in_channels(tmp_path, monkeypatch):
    source = NET_SOURCE + textwrap.indent(textwrap.dedent("""
        class Fixed(Net):
            def __init__(self, num_classes, hidden=4):
                super().__init__(num_classes, hidden=hidden)
        """), "    ")
    mod = write_module(tmp_path, monkeypatch, "slimlab_ext_fixed", source)
    model = models.build(f"{mod}:Fixed", 3, hidden=6, trust=named(f"{mod}:Fixed"))
    assert model.conv.out_channels == 6
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_external_class_not_named_by_the_user_is_not_even_imported(tmp_path, monkeypatch):
    mark = tmp_path / "imported"
    mod = write_module(tmp_path, monkeypatch, "slimlab_ext_unnamed", f"    open({str(mark)!r}, 'w').close()\n" + NET_SOURCE)
    with pytest.raises(NeedsTrust, match=f"--allow-arch {mod}:Net") as info:
        models.build(f"{mod}:Net", 3, hidden=2)
    assert info.value.arch == f"{mod}:Net" and info.value.kwargs == {"hidden": 2}
    assert not mark.exists() and mod not in sys.modules
    with pytest.raises(NeedsTrust):  # naming another class does not allow this one
        models.build(f"{mod}:Net", 3, trust=named(f"{mod}:Other"))
    assert models.build(f"{mod}:Net", 3, trust=Trust.everything()).out.out_features == 3  # --trust


def test_external_keeps_its_own_attributes(tmp_path, monkeypatch):
    source = NET_SOURCE + textwrap.indent(
        textwrap.dedent("""
        class Tagged(Net):
            default_ignore = ["out", "conv"]
            input_size = (3, 64, 64)
        """),
        "    ",
    )
    mod = write_module(tmp_path, monkeypatch, "slimlab_ext_tagged", source)
    model = models.build(f"{mod}:Tagged", 4, trust=named(f"{mod}:Tagged"))
    assert model.default_ignore == ["out", "conv"]
    assert model.input_size == (3, 64, 64)


@pytest.mark.parametrize(
    "attr,kwargs,expected",
    [
        ("Net", {"depth": 3}, "accepts: num_classes, in_channels, hidden"),
        ("Missing", {}, "no attribute 'Missing'"),
        ("NUMBER", {}, "is a int, not a torch.nn.Module subclass"),
        ("not_a_model", {}, "is a function, not a torch.nn.Module subclass"),
        ("Picky", {}, "num_classes must be even"),
        ("NotAModule", {}, "is a class, not a torch.nn.Module subclass"),
    ],
)
def test_external_errors(tmp_path, monkeypatch, attr, kwargs, expected):
    source = NET_SOURCE + textwrap.indent(textwrap.dedent("""
        class Picky(Net):
            def __init__(self, num_classes):
                raise ValueError("num_classes must be even")

        class NoClasses(Net):
            def __init__(self):
                super().__init__(10)

        class NotAModule:
            def __init__(self, num_classes):
                pass
        """), "    ")
    mod = write_module(tmp_path, monkeypatch, f"slimlab_ext_err_{attr.lower()}", source)
    with pytest.raises(ModelError, match=f"{mod}:{attr}") as info:
        models.build(f"{mod}:{attr}", 5, trust=named(f"{mod}:{attr}"), **kwargs)
    assert expected in str(info.value)


def test_external_class_without_num_classes_takes_its_own_count(tmp_path, monkeypatch):
    source = NET_SOURCE + textwrap.indent(textwrap.dedent("""
        class Yolo(Net):
            def __init__(self, nc=80, ch=3):
                super().__init__(nc, in_channels=ch)
        """), "    ")
    mod = write_module(tmp_path, monkeypatch, "slimlab_ext_nc", source)
    model = models.build(f"{mod}:Yolo", 10, nc=4, trust=named(f"{mod}:Yolo"))
    assert model.out.out_features == 4  # num_classes is not passed to a class that does not take it


def test_class_valued_kwargs_are_classes_under_the_trust_rule(tmp_path, monkeypatch):
    source = NET_SOURCE + textwrap.indent(textwrap.dedent("""
        class Block(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.conv = nn.Conv2d(c, c, 3, padding=1)

            def forward(self, x):
                return x + self.conv(x)

        class Stack(nn.Module):
            def __init__(self, block, depth, num_classes=10):
                super().__init__()
                self.stem = nn.Conv2d(3, 8, 3, padding=1)
                self.blocks = nn.Sequential(*(block(8) for _ in range(depth)))
                self.fc = nn.Linear(8, num_classes)

            def forward(self, x):
                return self.fc(self.blocks(self.stem(x)).mean((2, 3)))
        """), "    ")
    mod = write_module(tmp_path, monkeypatch, "slimlab_ext_block", source)
    block = f"{mod}:Block"
    with pytest.raises(NeedsTrust, match=f"--allow-arch {block}"):  # naming the model is not naming its block
        models.build(f"{mod}:Stack", 3, block=block, depth=2, trust=named(f"{mod}:Stack"))
    model = models.build(f"{mod}:Stack", 3, block=block, depth=2, trust=named(f"{mod}:Stack").allowing(block))
    assert type(model.blocks[1]).__name__ == "Block" and model.fc.out_features == 3
    with pytest.raises(ModelError, match="not a torch.nn.Module subclass"):
        models.build(f"{mod}:Stack", 3, block=f"{mod}:make_net", depth=1, trust=Trust.everything())


def test_the_current_folder_is_on_the_import_path(tmp_path, monkeypatch):
    (tmp_path / "slimlab_here").mkdir()
    (tmp_path / "slimlab_here" / "__init__.py").write_text("")
    (tmp_path / "slimlab_here" / "nets.py").write_text(textwrap.dedent(NET_SOURCE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "slimlab_here", raising=False)
    monkeypatch.delitem(sys.modules, "slimlab_here.nets", raising=False)
    model = models.build("slimlab_here.nets:Net", 4, trust=named("slimlab_here.nets:Net"))
    assert model.out.out_features == 4


def test_external_import_failures(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="PYTHONPATH"):
        models.build("slimlab_no_such_module:Net", 10, trust=Trust.everything())
    mod = write_module(
        tmp_path, monkeypatch, "slimlab_ext_broken", "raise RuntimeError('broken on import')\n"
    )
    with pytest.raises(ModelError, match="broken on import"):
        models.build(f"{mod}:Net", 10, trust=named(f"{mod}:Net"))
    with pytest.raises(ModelError, match="package.module:Class"):
        models.build("somemodule:", 10, trust=Trust.everything())


def test_import_does_not_load_torch():
    code = (
        "import sys, engine.models as m; m.names(); m.describe('vgg');"
        "bad = [k for k in sys.modules if k == 'torch' or k.startswith('textual')];"
        "assert not bad, bad"
    )
    repo_root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root
    )
    assert result.returncode == 0, result.stderr
