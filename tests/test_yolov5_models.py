"""The YOLOv5 repository's models (yolov5: family): plan == cut and reload, checkpoints saved as the
repository saves them, --format yolov5 round-trip, and the refusals."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detect_helpers import mask_pruned, randomise_bn, write_preset

from engine import checkpoint, sniff
from engine.errors import CheckpointError, ModelError, PresetError
from engine.slim.apply import apply_plan
from engine.slim.inputs import precompute
from engine.slim.plan import plan_from_inputs
from engine.trust import Trust

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("ultralytics_offline")]

IMGSZ = 64
VARIANTS = [("yolov5n.yaml", {}), ("yolov5s.yaml", {"width": 0.125}), ("yolov5s-v5.0.yaml", {"width": 0.125})]


@pytest.fixture(scope="module")
def v5():
    from engine.detect.yolov5 import model

    return model


def outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)[0]


def repository_checkpoint(path: Path, yaml_name: str = "yolov5s.yaml", nc: int = 3, imgsz: int = IMGSZ,
                          width: float = 0.125, names: list[str] | None = None) -> torch.nn.Module:
    """A best.pt as the repository's train.py writes it: the repository's own DetectionModel (not
    slimlab's subclass) in fp16 as `model` and `ema`, an optimizer state, `opt` with hyp and imgsz;
    pickled under the repository's top-level names (models.yolo.*, models.common.*)."""
    from engine.detect.yolov5 import compat

    compat.load()  # the package imports only with slimlab's shims
    from yolov5.models.yolo import DetectionModel

    from engine.detect.yolov5.model import load_yaml, scaled

    torch.manual_seed(0)
    model = DetectionModel(scaled(load_yaml(yaml_name), width, None), ch=3, nc=nc)
    randomise_bn(model)
    model.names = names or [f"c{i}" for i in range(nc)]
    hyp = {"lr0": 0.01, "box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0,
           "fl_gamma": 0.0, "iou_t": 0.2}
    model.hyp = dict(hyp)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937)
    ckpt = {"epoch": 4, "best_fitness": 0.1, "model": copy.deepcopy(model).half(), "ema": copy.deepcopy(model).half(),
            "updates": 40, "optimizer": optimizer.state_dict(),
            "opt": {"imgsz": imgsz, "hyp": hyp, "epochs": 5, "batch_size": 16}, "git": None, "date": "2024-01-01"}
    torch.save(ckpt, path, pickle_module=compat.pickler_module())
    return model


@pytest.mark.parametrize("name,scale", VARIANTS)
def test_plan_equals_cut_and_the_pruned_checkpoint_reloads_exactly(v5, name, scale, tmp_path):
    torch.manual_seed(0)
    model = v5.build(f"yolov5:{name}", 3, imgsz=IMGSZ, names=["a", "b", "c"], **scale).eval()
    stem = type(model.model[0]).__name__
    assert stem == ("Focus" if "v5.0" in name else "Conv")  # the v5.0 stem, or v6.0's 6x6 conv
    assert {type(m).__module__.split(".")[0] for m in model.modules()} <= {"yolov5", "torch", "engine"}
    randomise_bn(model)
    inputs = precompute(model)
    plan = plan_from_inputs(inputs, percent=0.5)
    head = len(model.model) - 1
    # the anchor-based Detect outputs (anchors x (5 + classes) channels) keep every channel
    for g in plan.groups:
        if any(c.startswith(f"model.{head}.m.") for c in g.convs):
            assert g.kept == g.total and g.ignored
    pruned = apply_plan(copy.deepcopy(model), plan)
    from engine.measure import count_flops, count_params

    assert count_params(pruned) == plan.totals["params_after"] < 0.6 * plan.totals["params_before"]
    assert count_flops(pruned, (3, IMGSZ, IMGSZ)) == plan.totals["flops_after"]
    masked = copy.deepcopy(model)
    mask_pruned(masked, inputs, plan)
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    assert (outputs(masked, x) - outputs(pruned, x)).abs().max().item() <= 1e-3  # boxes in pixels, to 1492 px
    path = tmp_path / "pruned.pt"
    checkpoint.save(path, pruned, v5.arch_of(model, name), plan=plan.to_dict())
    raw = torch.load(path, weights_only=True)  # plain data: no pickle
    assert raw["arch"]["name"] == f"yolov5:{name}" and raw["arch"]["family"] == "yolov5" and raw["plan"]["groups"]
    again = checkpoint.load(path).model
    assert type(again) is type(model) and (outputs(again, x) - outputs(pruned, x)).abs().max().item() == 0.0
    assert again.names == {0: "a", 1: "b", 2: "c"}


def test_a_repository_checkpoint_needs_trust_then_prunes(v5, tmp_path):
    path = tmp_path / "best.pt"
    module = repository_checkpoint(path, imgsz=96)
    check = sniff.pickle_check(path, sniff.sniff(path))
    assert "models.yolo.DetectionModel" in check.globals and "models.common.C3" in check.globals
    assert not [n for n in check.globals if n.startswith("yolov5.")]  # the repository's names, as its train.py
    with pytest.raises(CheckpointError, match="--trust"):
        checkpoint.load(path)
    loaded = checkpoint.load(path, trust=True)
    assert loaded.source == "yolov5" and loaded.arch["family"] == "yolov5" and loaded.model.input_size == (3, 96, 96)
    assert loaded.arch["kwargs"]["names"] == ["c0", "c1", "c2"] and loaded.arch["kwargs"]["hyp"]["anchor_t"] == 4.0
    x = torch.rand(1, 3, 96, 96)
    ref = copy.deepcopy(module).half().float().eval()
    with torch.no_grad():
        expected = v5.detections(ref(x)[0])
    assert (outputs(loaded.model, x) - expected).abs().max().item() <= 1e-3
    plan = plan_from_inputs(precompute(loaded.model), percent=0.5)
    pruned = apply_plan(copy.deepcopy(loaded.model), plan)
    out = tmp_path / "slim.pt"
    checkpoint.save(out, pruned, loaded.arch, plan=plan.to_dict())
    assert (outputs(checkpoint.load(out).model, x) - outputs(pruned, x)).abs().max().item() == 0.0


def test_the_repository_loss_trains_a_pruned_model(v5, tmp_path):
    loaded = checkpoint.load(_saved(tmp_path), trust=True)
    plan = plan_from_inputs(precompute(loaded.model), percent=0.5)
    model = apply_plan(copy.deepcopy(loaded.model), plan).train()
    batch = {"img": torch.rand(2, 3, IMGSZ, IMGSZ), "batch_idx": torch.tensor([0.0, 1.0]),
             "cls": torch.tensor([[1.0], [2.0]]), "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.4], [0.3, 0.6, 0.2, 0.2]])}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(3):
        loss, items = model(batch)
        assert set(items) == {"box_loss", "obj_loss", "cls_loss"}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def _saved(tmp_path: Path, **kw) -> Path:
    path = tmp_path / "best.pt"
    if not path.exists():
        repository_checkpoint(path, **kw)
    return path


def test_format_yolov5_round_trip_loads_in_the_repository_code(v5, tmp_path):
    from engine.cli import main

    src = _saved(tmp_path)
    loaded = checkpoint.load(src, trust=True)
    plan = plan_from_inputs(precompute(loaded.model), percent=0.5)
    slim = tmp_path / "pruned.pt"
    checkpoint.save(slim, apply_plan(copy.deepcopy(loaded.model), plan), loaded.arch, plan=plan.to_dict())
    out = tmp_path / "pruned.yolov5.pt"
    assert main(["export", str(slim), "--format", "yolov5", "--out", str(out)]) == 0
    names = sniff.pickle_check(out, sniff.sniff(out)).globals
    assert "models.yolo.DetectionModel" in names and not [n for n in names if n.startswith(("yolov5.", "engine."))]
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(3))
    torch.save(x, tmp_path / "x.pt")
    # the package's own attempt_load (what its val.py / detect.py call), as the repository resolves
    # `models.*`: its folder on sys.path
    code = (
        "import sys, torch\n"
        "from engine.detect.yolov5 import compat\n"
        "package = compat.load()\n"
        "from pathlib import Path\n"
        "sys.path.append(str(Path(package.__file__).parent))\n"
        "from yolov5.models.experimental import attempt_load\n"
        f"with compat.repository_loading():\n    m = attempt_load({str(out)!r}, fuse=True)\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "with torch.no_grad():\n    y = m(x)[0]\n"
        f"torch.save(y, {str(tmp_path / 'y.pt')!r})\n"
        "print(type(m).__module__, type(m).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path.cwd())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "models.yolo DetectionModel" in done.stdout  # the repository's class, by its repository name
    got = v5.detections(torch.load(tmp_path / "y.pt"))
    pruned = checkpoint.load(slim).model
    # fp16 weights (as the repository stores them), BatchNorm fused by attempt_load
    assert (got - outputs(pruned, x)).abs().max().item() <= 0.5
    assert torch.allclose(got[:, 4:], outputs(pruned, x)[:, 4:], atol=2e-3)
    # and back: the written file is a repository checkpoint slimlab reads again, with the same plan's model
    again = checkpoint.load(out, trust=True)
    assert sum(p.numel() for p in again.model.parameters()) == sum(p.numel() for p in pruned.parameters())


def test_refusals_are_named(v5, tmp_path, capsys):
    from ultralytics.nn.tasks import DetectionModel as UltralyticsModel

    from engine.cli import main
    from engine.config import load_preset
    from engine.detect.spec import file_family
    from engine.detect.yolov5 import compat

    # a class outside the releases slimlab reads
    class Later(torch.nn.Module):  # a block of a later release, under the repository's module name
        pass

    Later.__module__, Later.__qualname__ = "yolov5.models.common", "C4k"
    module = v5.build("yolov5:yolov5n.yaml", 2, imgsz=IMGSZ)
    module.model[2] = Later()
    odd = tmp_path / "odd.pt"
    torch.save({"model": module}, odd, pickle_module=compat.pickler_module())
    with pytest.raises(CheckpointError, match=r"models\.common\.C4k.*v5\.0 - v7\.0"):
        checkpoint.load(odd, trust=True)
    # an Ultralytics checkpoint given to the yolov5 family, and a YOLOv5 one to the Ultralytics family
    ultra = tmp_path / "ultra.pt"
    torch.save({"model": UltralyticsModel("yolov8n.yaml", nc=3, verbose=False).half(), "train_args": {"imgsz": 64}}, ultra)
    best = _saved(tmp_path)
    assert file_family(best) == "yolov5" and file_family(ultra) == "ultralytics"
    runs = tmp_path / "runs"
    for arch, ckpt, match in (("yolov5:yolov5s.yaml", ultra, "is an Ultralytics checkpoint"),
                              ("ultralytics:yolov8n.yaml", best, "is a YOLOv5-repository checkpoint")):
        preset = write_preset(tmp_path, model={"arch": arch, "checkpoint": str(ckpt)}, output={"runs_dir": str(runs)})
        assert main(["--batch", str(preset), "--plain", "--trust"]) == 2
        assert match in capsys.readouterr().err
    # the dataset's classes against the checkpoint's nc: both counts named
    preset = write_preset(tmp_path, model={"arch": "yolov5:yolov5s.yaml", "checkpoint": str(best)},
                          data={"dataset": "yolo_shapes", "num_classes": 4, "train_size": 16, "val_size": 16,
                                "image_size": 64}, output={"runs_dir": str(runs)})
    from engine.task import kind_of

    assert kind_of(load_preset(preset)).name == "yolov5"
    from engine.cli import prepare_run_dir
    from engine.pipeline import Pipeline
    from engine.runs import create_run_dir

    spec = load_preset(preset)
    run_dir = create_run_dir(runs, "nc")
    prepare_run_dir(run_dir, spec)
    with pytest.raises(PresetError, match="detects 3 classes but .* names 4"):
        Pipeline(spec, run_dir, trust=Trust.everything()).run()
    # unsafe or unknown yamls
    with pytest.raises(ModelError, match="no such model yaml"):
        v5.build("yolov5:yolov5q.yaml", 2)
    cfg = v5.load_yaml("yolov5n.yaml")
    evil = copy.deepcopy(cfg)
    evil["backbone"][0][3] = ["__import__('os').system('true')", 6, 2, 2]
    with pytest.raises(ModelError, match="string arguments are names"):
        v5.build("yolov5:yolov5n.yaml", 2, yaml=evil)
    evil = copy.deepcopy(cfg)
    evil["backbone"][0][2] = "attempt_load"
    with pytest.raises(ModelError, match="not a YOLOv5"):
        v5.build("yolov5:yolov5n.yaml", 2, yaml=evil)
    json.dumps(v5.arch_of(module, "yolov5n.yaml"))  # the arch is plain data
