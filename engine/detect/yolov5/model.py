"""YOLOv5-repository detection models as slimlab architectures: `yolov5:<model yaml>`.

`build` makes the repository's own DetectionModel (anchor-based Detect, Focus or 6x6 stem, C3,
SPP/SPPF, Concat, nn.Upsample: the package's modules, pruned in place) from one of its yamls or a
yaml file, with the data's classes and optional width/depth multiples. The top-level class is a
subclass (`Yolov5Detector`) that adds what the rest of slimlab calls on a detector: the repository's
loss (`utils.loss.ComputeLoss`, gains scaled as its train.py scales them) on Ultralytics-style
batches, and detections in the layout Ultralytics' validator and slimlab's ONNX path read:
`(batch, 4 + classes, anchors)`, class scores = objectness x class probability (what the
repository's NMS ranks by). `adopt` turns a trusted repository checkpoint (`best.pt`/`last.pt`) into
the same form: its yaml, classes, anchors (a buffer in its weights, autoanchor's included) and the
loss hyperparameters of its `opt`; the model used is built fresh from the yaml.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from pathlib import Path
from typing import Any

import torch
import yaml as pyyaml
from torch import nn

from engine.detect.model import load_foreign_weights
from engine.detect.yolov5 import compat
from engine.errors import CheckpointError, ModelError

compat.load()
from yolov5.models import common as v5common  # noqa: E402
from yolov5.models import experimental as v5experimental  # noqa: E402
from yolov5.models import yolo as v5yolo  # noqa: E402
from yolov5.utils.loss import ComputeLoss  # noqa: E402

PREFIX = "yolov5:"
DEFAULT_IMGSZ = 640
OWN_YAMLS = Path(__file__).parent / "yamls"  # layouts of older releases (v5.0: Focus stem, SPP)
# The repository's hyp.scratch-low.yaml, the loss entries (train.py's defaults for training from scratch)
DEFAULT_HYP = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0,
               "fl_gamma": 0.0, "label_smoothing": 0.0}  # fmt: skip
LOSS_NAMES = ("box_loss", "obj_loss", "cls_loss")
LAYER_CLASSES = {  # what a model yaml may name: the layers the repository's parse_model builds
    **{n: getattr(v5common, n) for n in ("Conv", "GhostConv", "Bottleneck", "GhostBottleneck", "SPP", "SPPF", "DWConv",
                                         "Focus", "CrossConv", "BottleneckCSP", "C3", "C3TR", "C3SPP", "C3Ghost",
                                         "DWConvTranspose2d", "C3x", "Concat", "Contract", "Expand")},
    "MixConv2d": v5experimental.MixConv2d, "Detect": v5yolo.Detect,
}  # fmt: skip
TASK_MODELS = {"SegmentationModel": "segmentation", "ClassificationModel": "classification"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ACTIVATION = re.compile(r"^nn\.[A-Za-z][A-Za-z0-9_]*\((\s*[-+0-9.eE]+\s*|\s*inplace\s*=\s*(True|False)\s*)?\)$")


def is_arch(arch: Any) -> bool:
    return isinstance(arch, str) and arch.startswith(PREFIX)


def known_yamls() -> list[str]:
    """Detection model yamls the package ships (models/ and models/hub/) and slimlab's own."""
    root = Path(v5yolo.__file__).parent
    paths = [*root.glob("*.yaml"), *(root / "hub").glob("yolov5*.yaml"), *OWN_YAMLS.glob("*.yaml")]
    return sorted({p.name for p in paths})


def _yaml_path(name: str) -> Path | None:
    p = Path(name)
    if p.is_file():
        return p
    root = Path(v5yolo.__file__).parent
    for folder in (root, root / "hub", OWN_YAMLS):
        if (folder / name).is_file():
            return folder / name
    return None


def load_yaml(name: str) -> dict:
    """The model dict of `name`: a yaml file, or one the package (or slimlab) ships."""
    if "://" in name:
        raise ModelError(f"{PREFIX}{name}: model yamls are read from disk or from the YOLOv5 package; URLs are never fetched")
    if not name.endswith((".yaml", ".yml")):
        raise ModelError(f"{PREFIX}{name}: name a model yaml (e.g. {PREFIX}yolov5s.yaml); to start from a YOLOv5 "
                         "checkpoint (best.pt), set model.checkpoint instead")
    path = _yaml_path(name)
    if path is None:
        close = difflib.get_close_matches(Path(name).name, known_yamls(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(f"{PREFIX}{name}: no such model yaml{hint}: not a file here, nor one the YOLOv5 package "
                         "ships (yolov5n/s/m/l/x.yaml, hub/ variants) or yolov5s-v5.0.yaml (Focus stem, SPP)")
    cfg = pyyaml.safe_load(path.read_text(encoding="utf-8", errors="ignore"))
    if isinstance(cfg, dict):
        cfg["yaml_file"] = path.name
    return cfg


def scaled(cfg: dict, width: float | None, depth: float | None) -> dict:
    """`cfg` with its width/depth multiples replaced where given."""
    cfg = copy.deepcopy(cfg)
    for key, value in (("width", width), ("depth", depth)):
        if value is None:
            continue
        if not (isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 4):
            raise ModelError(f"{PREFIX}: {key} must be a multiple in (0, 4], e.g. 0.125; got {value!r}")
        cfg[f"{key}_multiple"] = float(value)
    return cfg


def check_yaml_safe(cfg: Any, source: str) -> None:
    """The repository's parse_model evals layer names, string arguments and `activation`: a model dict
    (a checkpoint's above all) is data, so only its layer classes, bare names and nn.X(...) activations pass."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("backbone"), list) or not isinstance(cfg.get("head"), list):
        raise ModelError(f"{source}: not a YOLOv5 model dict (needs 'backbone' and 'head' lists)")
    for key in ("nc", "depth_multiple", "width_multiple", "anchors"):
        if key not in cfg:
            raise ModelError(f"{source}: the model dict has no {key!r} (a YOLOv5 model yaml has nc, depth_multiple, "
                             "width_multiple, anchors, backbone, head)")
    act = cfg.get("activation")
    if act is not None and not (isinstance(act, str) and _ACTIVATION.match(act)
                                and isinstance(getattr(nn, act[3:].split("(")[0], None), type)):
        raise ModelError(f"{source}: activation {act!r} is not of the form nn.SiLU() / nn.LeakyReLU(0.1)")
    for i, layer in enumerate(cfg["backbone"] + cfg["head"]):
        if not (isinstance(layer, list | tuple) and len(layer) == 4 and isinstance(layer[2], str)
                and isinstance(layer[3], list)):
            raise ModelError(f"{source}: layer {i} is not [from, repeats, module, args]: {layer!r}")
        name = layer[2]
        cls = getattr(nn, name[3:], None) if name.startswith("nn.") else LAYER_CLASSES.get(name)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ModelError(f"{source}: layer {i} names {name!r}, not a YOLOv5 ({compat.VERSION_RANGE}) or torch.nn "
                             f"layer class; known: {', '.join(sorted(LAYER_CLASSES))}")
        for a in layer[3]:
            if isinstance(a, str) and not _NAME.match(a):
                raise ModelError(f"{source}: layer {i} has the argument {a!r}; a model yaml's string arguments are "
                                 "names (nc, anchors, 'nearest')")


class Yolov5Detector(v5yolo.DetectionModel):
    """The repository's DetectionModel (its layers untouched) with the repository's loss and the
    detections in the layout the validator and the ONNX path read (see the module docstring)."""

    loss_names = LOSS_NAMES  # the trainer's and validator's loss columns: ComputeLoss's three terms

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(x, dict):  # a training batch (Ultralytics' trainer): the loss
            return self.loss(x, *args, **kwargs)
        out = super().forward(x, *args, **kwargs)
        if self.training:
            return out  # the raw per-level maps the loss reads
        if self.model[-1].export:
            return detections(out[0])
        return detections(out[0]), out[1]

    def box_extent(self) -> float:
        """The largest box side the head can output, in pixels: 4 x its largest anchor (the repository's
        (2 sigmoid)^2 x anchor), which at a small image size (anchors sized for 640) exceeds the image."""
        head = self.model[-1]
        return float(4 * (head.anchors * head.stride.view(-1, 1, 1)).max())

    def set_head_attr(self, **kwargs: Any) -> None:
        """Ultralytics' trainer sets its heads' NMS limits (max_det) here; the repository's Detect only
        decodes (NMS is the validator's), so only attributes it has are set."""
        head = self.model[-1]
        for key, value in kwargs.items():
            if hasattr(head, key):
                setattr(head, key, value)

    def loss(self, batch: dict, preds: Any = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(ComputeLoss's loss x batch size, its box, obj and cls terms by name) on an Ultralytics batch."""
        img = batch["img"]
        if preds is None:
            preds = super().forward(img)
        raw = preds[1] if isinstance(preds, tuple) else preds
        device = raw[0].device
        criterion = getattr(self, "criterion", None)
        if not isinstance(criterion, ComputeLoss) or criterion.device != device:
            self.hyp = loss_gains(self)
            criterion = self.criterion = ComputeLoss(self)
        targets = torch.cat([batch["batch_idx"].view(-1, 1).to(device).float(),
                             batch["cls"].view(-1, 1).to(device).float(),
                             batch["bboxes"].view(-1, 4).to(device).float()], 1)
        loss, items = criterion(list(raw), targets)
        return loss.sum(), dict(zip(self.loss_names, items.detach(), strict=True))


def detections(z: torch.Tensor) -> torch.Tensor:
    """(batch, anchors, 5 + classes) xywh, objectness, class probabilities -> (batch, 4 + classes,
    anchors) xywh, objectness x class probability."""
    return torch.cat((z[..., :4], z[..., 5:] * z[..., 4:5]), -1).transpose(1, 2)


def loss_gains(model: nn.Module) -> dict[str, float]:
    """The model's loss hyperparameters scaled as the repository's train.py scales them: box by
    3 / layers, cls by classes / 80 x 3 / layers, obj by (imgsz / 640)^2 x 3 / layers."""
    hyp = {**DEFAULT_HYP, **(getattr(model, "base_hyp", None) or {})}
    nl = model.model[-1].nl
    imgsz = int(getattr(model, "input_size", (3, DEFAULT_IMGSZ, DEFAULT_IMGSZ))[-1])
    hyp["box"] *= 3 / nl
    hyp["cls"] *= model.nc / 80 * 3 / nl
    hyp["obj"] *= (imgsz / 640) ** 2 * 3 / nl
    return hyp


def build_plain(cfg: dict, num_classes: int, in_channels: int, source: str) -> Yolov5Detector:
    """A Yolov5Detector from a checked model dict, as the repository builds it."""
    check_yaml_safe(cfg, source)
    cfg = copy.deepcopy(cfg)
    cfg.pop("ch", None)
    default_act = v5common.Conv.default_act
    try:
        return Yolov5Detector(cfg, ch=in_channels, nc=num_classes)
    except ModelError:
        raise
    except Exception as e:  # a hand-written yaml with wrong channel arithmetic, unknown args, ...
        raise ModelError(f"{source}: the YOLOv5 code could not build this model: {type(e).__name__}: {e}") from None
    finally:
        # parse_model sets `activation` on the Conv class itself; the next model gets the default back
        v5common.Conv.default_act = default_act


def finish(model: Yolov5Detector, names: list[str] | None, imgsz: int, hyp: dict | None) -> Yolov5Detector:
    """Class names, loss hyperparameters, and what slimlab's pruning needs (as engine/detect/model.py)."""
    nc = int(model.yaml["nc"])
    names = list(names) if names else [str(i) for i in range(nc)]
    if len(names) != nc:
        raise ModelError(f"{len(names)} class names given for a model with {nc} classes")
    model.names = dict(enumerate(names))
    model.nc = nc
    model.base_hyp = {k: float(v) for k, v in (hyp or {}).items() if k in DEFAULT_HYP}
    model.input_size = (int(model.yaml.get("ch", 3)), imgsz, imgsz)
    model.size_multiple = int(max(model.stride.tolist()))
    head = len(model.model) - 1
    # in eval mode the head also returns its raw maps (for the validation loss); what deploys is the
    # detections alone (the repository's own export switch)
    model.inference_settings = {f"model.{head}": {"export": True}}
    model.width_attributes = {}
    # the anchor-based output convs are the detections (anchors x (5 + classes) channels): kept whole
    model.default_ignore = [f"model.{head}.m.*"]
    return model


def build(arch: str, num_classes: int, in_channels: int = 3, *, yaml: dict | None = None,
          names: list[str] | None = None, width: float | None = None, depth: float | None = None,
          imgsz: int = DEFAULT_IMGSZ, hyp: dict | None = None) -> Yolov5Detector:
    """Build `yolov5:<yaml>` with `num_classes` classes (a stored `yaml` dict wins over the name)."""
    name = arch[len(PREFIX):]
    source = f"{PREFIX}{name}"
    cfg = copy.deepcopy(yaml) if yaml is not None else scaled(load_yaml(name), width, depth)
    if not isinstance(imgsz, int) or isinstance(imgsz, bool) or imgsz < 32 or imgsz % 32:
        raise ModelError(f"{source}: imgsz must be a multiple of 32 (the largest stride), got {imgsz!r}")
    model = build_plain(cfg, num_classes, in_channels, source)
    return finish(model, names, imgsz, hyp)


def arch_of(model: Yolov5Detector, name: str) -> dict:
    """The checkpoint arch of a built model: everything needed to rebuild it, as plain data."""
    cfg = json.loads(json.dumps(model.yaml, default=str))
    return {
        "name": name if is_arch(name) else PREFIX + name,
        "num_classes": int(model.nc),
        "in_channels": int(model.input_size[0]),
        "kwargs": {"yaml": cfg, "names": [model.names[i] for i in range(int(model.nc))],
                   "imgsz": int(model.input_size[-1]), "hyp": dict(model.base_hyp)},
        "task": "detect",
        "family": "yolov5",
    }


def is_repository_module(module: object) -> bool:
    """A model of the YOLOv5 repository (its classes as the package defines them)."""
    return isinstance(module, nn.Module) and type(module).__module__.startswith("yolov5.models.")


def _imgsz(opt: dict) -> int:
    size = opt.get("imgsz", opt.get("img_size", DEFAULT_IMGSZ))
    if isinstance(size, list | tuple) and size:
        size = size[0]
    return size if isinstance(size, int) and size >= 32 and size % 32 == 0 else DEFAULT_IMGSZ


def adopt(module: nn.Module, raw: Any, source: str) -> tuple[Yolov5Detector, dict, dict, dict | None]:
    """A trusted repository checkpoint's model in slimlab form: (model, arch, meta, plan); the plan of a
    pruned model that slimlab wrote back (`--format yolov5`), else None."""
    cls = type(module).__name__
    if cls in TASK_MODELS:
        raise CheckpointError(f"{source}: is a YOLOv5 {TASK_MODELS[cls]} model ({cls}); slimlab slims YOLOv5 "
                              "detection models (DetectionModel / Model) only")
    if not isinstance(module, v5yolo.DetectionModel) or not isinstance(getattr(module, "yaml", None), dict):
        raise CheckpointError(f"{source}: holds a YOLOv5 {cls}, not a DetectionModel with its model yaml "
                              f"({compat.VERSION_RANGE})")
    cfg = copy.deepcopy(module.yaml)
    nc = int(cfg.get("nc") or getattr(module, "nc", 0))
    names = getattr(module, "names", None)
    if isinstance(names, dict):
        names = [names.get(i) for i in range(nc)]
    names = [str(n) for n in names] if isinstance(names, list | tuple) and len(names) == nc else None
    opt = raw.get("opt") if isinstance(raw, dict) else None
    opt = vars(opt) if hasattr(opt, "__dict__") and not isinstance(opt, dict) else (opt or {})
    hyp = opt.get("hyp") if isinstance(opt.get("hyp"), dict) else None
    model = finish(build_plain(cfg, nc, int(cfg.get("ch", 3)), source), names, _imgsz(opt), hyp)
    plan = (raw.get("slimlab") or {}).get("plan") if isinstance(raw, dict) and isinstance(raw.get("slimlab"), dict) else None
    if plan:  # written by `slimlab export --format yolov5`: the plan that cut the yaml's model
        from engine.slim.apply import apply_plan
        from engine.slim.plan import PrunePlan

        try:
            apply_plan(model, PrunePlan.from_dict(plan), verify=False)
        except Exception as e:  # data from the file: a mismatch is the file's problem
            raise CheckpointError(f"{source}: its slimlab plan does not fit its yaml ({type(e).__name__}: {e})") from None
    load_foreign_weights(model, module, source, "YOLOv5")
    model.eval()
    name = Path(str(cfg.get("yaml_file") or getattr(module, "yaml_file", None) or "model.yaml")).name
    meta = {"yolov5": {k: _plain(raw.get(k)) for k in ("epoch", "best_fitness", "date") if isinstance(raw, dict)}}
    return model, arch_of(model, name), meta, plan


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, int | float | str) or v is None else str(v)
