"""What the built-in architectures are called and where they live; no torch import here."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from engine.errors import ModelError

TORCHVISION_PREFIX = "torchvision:"
ULTRALYTICS_PREFIX = "ultralytics:"  # Ultralytics YOLO model yamls (engine.detect, optional extra)
TIMM_PREFIX = "timm:"  # timm's model registry (optional extra), random init
YOLOV5_PREFIX = "yolov5:"  # the YOLOv5 repository's model yamls (engine.detect.yolov5, optional extra)
# Prefixed names the registry resolves itself (never by importing a module the name chooses):
# always safe to build, whoever wrote them. An ultralytics: or yolov5: model dict names only checked layer classes.
REGISTRY_PREFIXES: tuple[str, ...] = (TORCHVISION_PREFIX, ULTRALYTICS_PREFIX, TIMM_PREFIX, YOLOV5_PREFIX)


@dataclass(frozen=True)
class Builtin:
    module: str  # module under engine.models holding the constructor
    factory: str  # class name inside that module
    description: str


BUILTINS: dict[str, Builtin] = {
    "vgg": Builtin(
        "vgg",
        "VGG",
        "CIFAR VGG with BatchNorm (network-slimming paper); depth 11/13/16/19, width",
    ),
    "resnet_cifar": Builtin(
        "resnet_cifar",
        "ResNetCifar",
        "CIFAR ResNet (depth 6n+2: 20/56/110) with 1x1 conv+BN projection shortcuts; width",
    ),
    "mobilenetv2": Builtin(
        "mobilenetv2",
        "MobileNetV2",
        "CIFAR MobileNetV2 (stride-1 stem), inverted residuals with depthwise convs; width",
    ),
    "c3net": Builtin(
        "c3net",
        "C3Net",
        "YOLOv5-style backbone (Conv/C3/SPPF) with a classification head; width, depth",
    ),
    "kd_teacher": Builtin(
        "kd",
        "DeepNN",
        "Distillation tutorial teacher DeepNN (4 convs, 2048-512 classifier); bn",
    ),
    "kd_student": Builtin(
        "kd",
        "LightNN",
        "Distillation tutorial student LightNN (2 convs, 1024-256 classifier); bn",
    ),
}


def names() -> list[str]:
    return sorted(BUILTINS)


def is_external(arch: str) -> bool:
    """True for `package.module:Class` forms (anything with a colon that is not a registry prefix)."""
    return ":" in arch and not arch.startswith(REGISTRY_PREFIXES)


# `package.module:Class` as a constructor kwarg value names that class (e.g. a ResNet's block)
_CLASS_REF = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def class_refs(kwargs: dict) -> list[str]:
    """The `package.module:Class` strings among constructor kwargs (values, or items of list values)."""
    refs = []
    for value in (kwargs or {}).values():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, str) and _CLASS_REF.fullmatch(item) and is_external(item):
                refs.append(item)
    return list(dict.fromkeys(refs))


def unknown_arch_error(arch: str) -> ModelError:
    close = difflib.get_close_matches(arch, names(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ModelError(
        f"Unknown architecture {arch!r}.{hint} Valid names: {', '.join(names())}; "
        f"or 'torchvision:<name>', 'timm:<name>', 'ultralytics:<model>.yaml', 'yolov5:<model>.yaml', or an importable 'package.module:Class'."
    )


def describe(arch: str) -> str:
    if arch in BUILTINS:
        return BUILTINS[arch].description
    if arch.startswith(TORCHVISION_PREFIX):
        name = arch[len(TORCHVISION_PREFIX) :]
        return f"torchvision model {name} (random init, weights are never downloaded)"
    if arch.startswith(TIMM_PREFIX):
        return f"timm model {arch[len(TIMM_PREFIX):]} (random init, weights are never downloaded)"
    if arch.startswith(YOLOV5_PREFIX):
        return f"YOLOv5-repository detector from {arch[len(YOLOV5_PREFIX):]} (random init, weights are never downloaded)"
    if arch.startswith(ULTRALYTICS_PREFIX):
        return f"Ultralytics YOLO detector from {arch[len(ULTRALYTICS_PREFIX):]} (random init, weights are never downloaded)"
    if is_external(arch):
        return f"user model: the nn.Module class {arch}, called with num_classes=... and its kwargs"
    raise unknown_arch_error(arch)
