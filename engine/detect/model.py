"""Ultralytics detection models as slimlab architectures: `ultralytics:<model yaml>`.

`build` makes a DetectionModel from a model yaml (a name Ultralytics ships, e.g. yolov8n.yaml,
yolo11n.yaml, yolov5nu.yaml, or a yaml file), with the classes of the data, optional width/depth
multiples, exactly as Ultralytics builds it (pruned, it stays a plain Ultralytics model). A slimlab checkpoint
stores the resolved yaml as a dict in the arch kwargs, so it rebuilds without the file and
without unpickling anything. `adopt` turns a (trusted, unpickled) Ultralytics checkpoint model
into the same form.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

from torch import nn

from engine.detect import ultra
from engine.errors import CheckpointError, ModelError

PREFIX = "ultralytics:"
DEFAULT_IMGSZ = 640
TASK_MODELS = {  # Ultralytics model class -> task, for the messages about tasks slimlab does not slim
    "SegmentationModel": "segment", "PoseModel": "pose", "OBBModel": "obb",
    "ClassificationModel": "classify", "WorldModel": "world (open vocabulary)", "RTDETRDetectionModel": "rtdetr",
}  # fmt: skip
_ACTIVATION = re.compile(r"^nn\.[A-Za-z][A-Za-z0-9_]*\((\s*[-+0-9.eE]+\s*(,\s*[-+0-9.eE]+\s*)*|\s*inplace\s*=\s*(True|False)\s*)?\)$")


def is_arch(arch: str) -> bool:
    return isinstance(arch, str) and arch.startswith(PREFIX)


@contextlib.contextmanager
def quiet() -> Any:
    """Ultralytics prints model tables and notices; a slimlab run keeps its own log."""
    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def known_yamls() -> list[str]:
    """Model yaml names Ultralytics ships for detection (scale letters included), for hints."""
    root = Path(ultra.load().__file__).parent / "cfg" / "models"
    names = []
    for path in sorted(root.rglob("*.yaml")):
        stem = path.stem
        if any(t in stem for t in ("-seg", "-pose", "-obb", "-cls", "world", "yoloe", "rtdetr")):
            continue
        names.append(path.name)
    return names


def load_yaml(name: str) -> dict:
    """The model dict of `name`: a yaml file, or a model yaml Ultralytics ships (never a download)."""
    ultra.load()
    from ultralytics.nn.tasks import yaml_model_load

    if "://" in name:
        raise ModelError(f"{PREFIX}{name}: model yamls are read from disk or from Ultralytics' own; URLs are never fetched")
    if not name.endswith((".yaml", ".yml")):
        raise ModelError(
            f"{PREFIX}{name}: name a model yaml (e.g. {PREFIX}yolov8n.yaml); to start from an Ultralytics "
            "checkpoint (.pt), set model.checkpoint instead"
        )
    try:
        with quiet():
            return yaml_model_load(name)
    except (FileNotFoundError, OSError, ValueError, TypeError) as e:
        stems = known_yamls()
        close = difflib.get_close_matches(Path(name).name, stems, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(
            f"{PREFIX}{name}: no such model yaml{hint}: not a file here, nor one Ultralytics ships "
            f"(e.g. yolov8n.yaml, yolo11n.yaml, yolov5nu.yaml; any scale n/s/m/l/x) [{type(e).__name__}]"
        ) from None


def scaled(cfg: dict, width: float | None, depth: float | None, max_channels: int | None) -> dict:
    """`cfg` with its width/depth multiples (and channel cap) replaced where given."""
    if width is None and depth is None and max_channels is None:
        return cfg
    cfg = copy.deepcopy(cfg)
    scales = cfg.get("scales") or {}
    scale = cfg.get("scale") or (next(iter(scales)) if scales else "")
    d0, w0, c0 = scales.get(scale, [cfg.get("depth_multiple", 1.0), cfg.get("width_multiple", 1.0), 1024])
    for key, value in (("width", width), ("depth", depth)):
        if value is not None and not (isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 4):
            raise ModelError(f"{PREFIX}: {key} must be a multiple in (0, 4], e.g. 0.125; got {value!r}")
    cfg["scale"] = scale or "custom"
    cfg["scales"] = {cfg["scale"]: [depth or d0, width or w0, int(max_channels or c0)]}
    return cfg


def check_yaml_safe(cfg: dict, source: str) -> None:
    """Only nn.Module classes may be named as layers, and the activation is a plain `nn.X(...)` call.

    Ultralytics' parser calls whatever a layer entry names and evals `activation`: a model dict read
    from a checkpoint is data, so anything else is refused.
    """
    import torch

    ultra.load()
    from ultralytics.nn import tasks

    if not isinstance(cfg, dict) or not isinstance(cfg.get("backbone"), list) or not isinstance(cfg.get("head"), list):
        raise ModelError(f"{source}: not an Ultralytics model dict (needs 'backbone' and 'head' lists)")
    act = cfg.get("activation")
    if act is not None and not (isinstance(act, str) and _ACTIVATION.match(act)):
        raise ModelError(f"{source}: activation {act!r} is not of the form nn.SiLU() / nn.LeakyReLU(0.1)")
    if act is not None:
        _module_class(act.split("(")[0], tasks, torch, source)
    for i, layer in enumerate(cfg["backbone"] + cfg["head"]):
        if not (isinstance(layer, list | tuple) and len(layer) == 4 and isinstance(layer[2], str)):
            raise ModelError(f"{source}: layer {i} is not [from, repeats, module, args]: {layer!r}")
        _module_class(layer[2], tasks, torch, source)


def _module_class(name: str, tasks: Any, torch: Any, source: str) -> type:
    if name.startswith("nn."):
        obj = getattr(torch.nn, name[3:], None)
    elif name.startswith("torchvision.ops."):
        import torchvision

        obj = getattr(torchvision.ops, name[16:], None)
    else:
        obj = vars(tasks).get(name)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ModelError(f"{source}: layer module {name!r} is not an Ultralytics or torch.nn layer class")
    return obj


def task_of(cfg: dict) -> str:
    from ultralytics.nn.tasks import guess_model_task

    with quiet():
        return guess_model_task(cfg)


def build_plain(cfg: dict, num_classes: int, in_channels: int, source: str) -> nn.Module:
    """An Ultralytics DetectionModel from a checked model dict, in Ultralytics' own block form."""
    check_yaml_safe(cfg, source)
    task = task_of(cfg)
    if task != "detect":
        raise ModelError(f"{source}: is a {task} model; slimlab slims detection models (task detect) only")
    from ultralytics.nn.tasks import DetectionModel

    try:
        with quiet():
            return DetectionModel(copy.deepcopy(cfg), ch=in_channels, nc=num_classes, verbose=False)
    except ModelError:
        raise
    except Exception as e:  # a hand-written yaml with wrong channel arithmetic, unknown args, ...
        raise ModelError(f"{source}: Ultralytics could not build this model: {type(e).__name__}: {e}") from None


def finish(model: nn.Module, names: list[str] | None, imgsz: int) -> nn.Module:
    """Class names, and what slimlab's pruning needs: input and trace sizes, inference outputs, ignored layers."""
    nc = int(model.yaml["nc"])
    names = list(names) if names else [str(i) for i in range(nc)]
    if len(names) != nc:
        raise ModelError(f"{len(names)} class names given for a model with {nc} classes")
    model.names = dict(enumerate(names))
    model.nc = nc
    channels = int(model.yaml.get("channels", 3))
    model.input_size = (channels, imgsz, imgsz)
    # Fully convolutional: any multiple of the largest stride is a valid input, and every feature map
    # scales with it. slimlab traces channels and checks cuts at a small multiple (engine/slim/trace.py).
    model.size_multiple = int(max(model.stride.tolist())) if len(model.stride) else 32
    head = len(model.model) - 1
    # In eval mode the head also returns its raw outputs and the neck features (for the loss); what
    # the model deploys is the detections alone, so pruning sees that (Ultralytics' export switch).
    model.inference_settings = {f"model.{head}": {"export": True}}
    model.width_attributes = width_attributes(model)
    # The box (4 x reg_max), class and DFL outputs of the head are the detections themselves; attention
    # blocks reshape their channels into heads. Pruning either would change what the model means.
    model.default_ignore = [
        f"model.{head}.cv2.*.2", f"model.{head}.cv3.*.2", f"model.{head}.one2one_cv2.*.2",
        f"model.{head}.one2one_cv3.*.2", f"model.{head}.dfl*", "*.attn.*",
    ]  # fmt: skip
    return model


def width_attributes(model: nn.Module) -> dict[str, dict[str, list]]:
    """Ultralytics blocks that split their `cv1` in halves by `self.c` (C2f, C3k2, C2PSA, PSA, ...):
    `c` is half of cv1's output channels, kept so after a cut (engine/slim/cut.py `sync_widths`)."""
    out: dict[str, dict[str, list]] = {}
    for name, m in model.named_modules():
        conv = getattr(getattr(m, "cv1", None), "conv", None)
        c = vars(m).get("c")
        if isinstance(c, int) and isinstance(conv, nn.Conv2d) and conv.out_channels == 2 * c:
            out[name] = {"c": [f"{name}.cv1.conv", 2]}
    return out


def build(
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    *,
    yaml: dict | None = None,
    names: list[str] | None = None,
    width: float | None = None,
    depth: float | None = None,
    max_channels: int | None = None,
    imgsz: int = DEFAULT_IMGSZ,
) -> nn.Module:
    """Build `ultralytics:<yaml>` with `num_classes` classes (a stored `yaml` dict wins over the name)."""
    ultra.load()
    name = arch[len(PREFIX) :]
    source = f"{PREFIX}{name}"
    cfg = copy.deepcopy(yaml) if yaml is not None else scaled(load_yaml(name), width, depth, max_channels)
    if not isinstance(imgsz, int) or isinstance(imgsz, bool) or imgsz < 32 or imgsz % 32:
        raise ModelError(f"{source}: imgsz must be a multiple of 32 (the largest stride), got {imgsz!r}")
    model = build_plain(cfg, num_classes, in_channels, source)
    return finish(model, names, imgsz)


def arch_of(model: nn.Module, name: str) -> dict:
    """The checkpoint arch of a built model: everything needed to rebuild it, as plain data."""
    cfg = json.loads(json.dumps(model.yaml, default=str))
    return {
        "name": name if is_arch(name) else PREFIX + name,
        "num_classes": int(model.nc),
        "in_channels": int(model.input_size[0]),
        "kwargs": {"yaml": cfg, "names": [model.names[i] for i in range(int(model.nc))], "imgsz": int(model.input_size[-1])},
        "task": "detect",
    }


def is_ultralytics_module(module: object) -> bool:
    return isinstance(module, nn.Module) and type(module).__module__.startswith("ultralytics.")


def adopt(module: nn.Module, raw: Any, source: str) -> tuple[nn.Module, dict, dict]:
    """A trusted Ultralytics checkpoint's model in slimlab form: (model, arch, meta).

    The unpickled model is only read (yaml, class names, weights); the model used is built fresh
    from its yaml, so what is saved later rebuilds without unpickling.
    """
    ultra.load()
    cls = type(module).__name__
    if cls in TASK_MODELS:
        raise CheckpointError(
            f"{source}: is an Ultralytics {TASK_MODELS[cls]} model ({cls}); slimlab slims detection models "
            "(DetectionModel, task detect) only"
        )
    if cls != "DetectionModel" or not isinstance(getattr(module, "yaml", None), dict):
        raise CheckpointError(f"{source}: holds an Ultralytics {cls}, not a DetectionModel with its model yaml")
    cfg = copy.deepcopy(module.yaml)
    nc = int(getattr(module, "nc", cfg.get("nc", 0)) or cfg["nc"])
    names = getattr(module, "names", None) or {}
    names = [str(names[i]) for i in range(nc)] if isinstance(names, dict) and len(names) == nc else None
    args = raw.get("train_args", {}) if isinstance(raw, dict) else {}
    imgsz = args.get("imgsz", DEFAULT_IMGSZ) if isinstance(args, dict) else DEFAULT_IMGSZ
    imgsz = imgsz if isinstance(imgsz, int) and imgsz % 32 == 0 else DEFAULT_IMGSZ
    model = build_plain(cfg, nc, int(cfg.get("channels", 3)), source)
    load_foreign_weights(model, module, source, "Ultralytics")
    model = finish(model.eval(), names, imgsz)
    name = Path(str(cfg.get("yaml_file", "model.yaml"))).name
    meta = {"ultralytics": {k: raw.get(k) for k in ("version", "date", "epoch", "best_fitness") if isinstance(raw, dict)}}
    return model, arch_of(model, name), meta


def load_foreign_weights(model: nn.Module, module: nn.Module, source: Any, family: str) -> None:
    """`module`'s weights (fp16 in a best.pt) into `model`, rebuilt from its yaml; CheckpointError when
    they do not fit (a model pruned by another tool)."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in module.state_dict().items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1:2] or [str(e)[:200]]
        raise CheckpointError(
            f"{source}: its weights do not fit the model its yaml describes ({first[0].strip()}); was it pruned "
            f"by another tool? slimlab needs the unpruned {family} model or a slimlab checkpoint"
        ) from None
