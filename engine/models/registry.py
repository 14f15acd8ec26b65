"""Turn an architecture string into a freshly initialised torch model.

These forms are understood: a built-in name (see `catalog`), `torchvision:<name>`, `timm:<name>`
(the optional extra's timm registry), `ultralytics:<model>.yaml` (engine/detect) and an importable
`package.module:Class`. Every model that comes out carries `default_ignore` (fnmatch
patterns of layers whose outputs must never be pruned) and `input_size` (C, H, W), which the
pruning and profiling code rely on.

The trust rule (engine/trust.py): a `module:Class` is imported only when `trust` permits it
(the user named it), and called only when it is an `nn.Module` subclass, checked before the
call. Factory functions are not accepted: whatever a function returns can only be checked
after it ran. A constructor kwarg whose value is a `module:Class` string (a ResNet's `block`)
is that class, under the same rule. `num_classes` is passed only to classes that take it
(others get their class count from their own kwargs, e.g. `nc`), and the current folder is on
the import path, so `models.resnet:ResNet` works from the project that holds `models/`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from typing import Any

from torch import nn

from engine.errors import ModelError, NeedsTrust
from engine.models import catalog
from engine.models.sizing import check_positive_int
from engine.trust import Trust, describe_arch

TORCHVISION_INPUT_SIDE = 224  # torchvision models are designed for ImageNet-sized inputs
EXTERNAL_INPUT_SIDE = 32


def build(arch: str, num_classes: int, in_channels: int = 3, *, trust: Trust | None = None, **kwargs: Any) -> nn.Module:
    """Build `arch` with constructor kwargs given as keywords (see `build_from`)."""
    return build_from(arch, num_classes, in_channels, kwargs, trust=trust)


def build_from(
    arch: str, num_classes: int, in_channels: int, kwargs: dict[str, Any], *, trust: Trust | None = None,
    source: str | None = None,
) -> nn.Module:
    """Build `arch` with `kwargs` (a dict: any names, e.g. read from a file).

    A `module:Class` must be permitted by `trust` (default: none is); `source` names where the
    arch was read, for the message."""
    if not isinstance(arch, str) or not arch.strip():
        raise ModelError(
            f"Architecture must be a non-empty string, got {arch!r}; valid names: {', '.join(catalog.names())}."
        )
    check_trusted(arch, kwargs, trust, source)
    check_positive_int(arch, "num_classes", num_classes)
    check_positive_int(arch, "in_channels", in_channels)
    if arch in catalog.BUILTINS:
        return build_builtin(arch, num_classes, in_channels, kwargs)
    if arch.startswith(catalog.TORCHVISION_PREFIX):
        return build_torchvision(arch, num_classes, in_channels, kwargs)
    if arch.startswith(catalog.TIMM_PREFIX):
        return build_timm(arch, num_classes, in_channels, kwargs)
    if arch.startswith(catalog.ULTRALYTICS_PREFIX):
        from engine.detect.model import build as build_ultralytics

        return build_ultralytics(arch, num_classes, in_channels, **kwargs)
    if arch.startswith(catalog.YOLOV5_PREFIX):
        from engine.detect.yolov5.model import build as build_yolov5

        return build_yolov5(arch, num_classes, in_channels, **kwargs)
    if catalog.is_external(arch):
        return build_external(arch, num_classes, in_channels, class_kwargs(kwargs, trust, source))
    raise catalog.unknown_arch_error(arch)


def build_builtin(
    arch: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]
) -> nn.Module:
    factory = builtin_factory(arch, kwargs)
    return factory(num_classes=num_classes, in_channels=in_channels, **kwargs)


def builtin_factory(arch: str, kwargs: dict[str, Any]) -> Any:
    """The built-in's constructor, once `kwargs` are known to be among its options."""
    entry = catalog.BUILTINS[arch]
    factory = getattr(importlib.import_module(f"engine.models.{entry.module}"), entry.factory)
    options = [
        p for p in inspect.signature(factory).parameters if p not in ("num_classes", "in_channels")
    ]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ModelError(
            f"{arch} does not take {', '.join(repr(k) for k in unknown)}; "
            f"its options are: {', '.join(options)}."
        )
    return factory


def check_kwargs(
    arch: str, num_classes: int, in_channels: int, kwargs: dict[str, Any], *, trust: Trust | None = None,
    source: str | None = None,
) -> None:
    """What `build_from` checks before it calls anything: the trust rule and the constructor's
    signature against `kwargs` (a typo is caught before any stage runs; nothing is built)."""
    check_trusted(arch, kwargs, trust, source)
    if arch in catalog.BUILTINS:
        builtin_factory(arch, kwargs)
    elif catalog.is_external(arch):
        external_call(arch, num_classes, in_channels, class_kwargs(kwargs, trust, source))


def build_torchvision(
    arch: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]
) -> nn.Module:
    name = arch[len(catalog.TORCHVISION_PREFIX) :]
    try:
        from torchvision import models as tv_models
    except (ImportError, OSError, RuntimeError) as e:
        raise ModelError(
            f"{arch}: torchvision is not available ({type(e).__name__}: {e}); install the 'vision' "
            f"extra with a torchvision build matching your torch, or use a built-in arch: "
            f"{', '.join(catalog.names())}."
        ) from e
    if "weights" in kwargs:
        raise ModelError(
            f"{arch}: 'weights' cannot be set; pretrained weights are never downloaded, models start from random init."
        )
    if in_channels != 3:
        raise ModelError(
            f"{arch}: torchvision models take 3-channel input, got in_channels={in_channels}; use a built-in arch for other channel counts."
        )
    available = tv_models.list_models()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3)
        hint = f" Did you mean {', '.join('torchvision:' + c for c in close)}?" if close else ""
        raise ModelError(f"{arch}: torchvision has no model {name!r}.{hint}")
    try:
        model = tv_models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise ModelError(
            f"{arch}: cannot build with num_classes={num_classes} and {kwargs}: {e}"
        ) from e
    return annotate(model, in_channels, TORCHVISION_INPUT_SIDE)


# timm arguments that read weights or settings from disk or the network: a timm: arch is always built
# from its registry name alone, at random init
TIMM_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def build_timm(arch: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]) -> nn.Module:
    """`timm:<name>`: timm.create_model(name, pretrained=False), its classifier never pruned and its
    input size the one its configuration names (224 x 224 for most CNNs)."""
    name = arch[len(catalog.TIMM_PREFIX) :]
    try:
        import timm
    except (ImportError, OSError, RuntimeError) as e:
        raise ModelError(
            f"{arch}: timm is not available ({type(e).__name__}: {e}); install the 'detect' extra "
            "(make setup-detect), or timm into an environment whose torchvision imports."
        ) from e
    refused = [k for k in TIMM_REFUSED if k in kwargs]
    if refused:
        raise ModelError(
            f"{arch}: {refused[0]!r} cannot be set; pretrained weights are never downloaded or read, models "
            "start from random init (start from your own weights with a checkpoint instead)."
        )
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise ModelError(f"{arch}: timm has no model {name!r}.{hint}")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise ModelError(
            f"{arch}: cannot build with num_classes={num_classes}, in_chans={in_channels} and {kwargs}: "
            f"{type(e).__name__}: {e}"
        ) from e
    cfg = getattr(model, "pretrained_cfg", None) or {}
    modules = dict(model.named_modules())
    heads = cfg.get("classifier")
    heads = [heads] if isinstance(heads, str) else list(heads or [])
    if heads and all(h in modules for h in heads):
        model.default_ignore = heads
    size = tuple(cfg.get("input_size") or (3, TORCHVISION_INPUT_SIDE, TORCHVISION_INPUT_SIDE))
    if len(size) == 3:
        model.input_size = (in_channels, int(size[1]), int(size[2]))
    return annotate(model, in_channels, TORCHVISION_INPUT_SIDE)


def check_trusted(arch: str, kwargs: dict[str, Any], trust: Trust | None, source: str | None) -> None:
    """Refuse, before any import, a `module:Class` the user has not named."""
    if (trust or Trust()).permits_arch(arch):
        return
    where = f"{source} names" if source else "the architecture is"
    raise NeedsTrust(
        f"{where} {describe_arch(arch, kwargs)}: building it imports {arch.partition(':')[0]!r} and runs its code, "
        f"and slimlab builds a package.module:Class only when you named it yourself. If you trust it, name it: "
        f"--allow-arch {arch} (or model.arch / allow_archs in your preset, or --trust for a file you trust; "
        f"the workbench asks). Built-in names, torchvision:<name> and timm:<name> need no confirmation.",
        kind="arch", arch=arch, kwargs=kwargs, source=source,
    )


def class_kwargs(kwargs: dict[str, Any], trust: Trust | None, source: str | None) -> dict[str, Any]:
    """`kwargs` with every `package.module:Class` value replaced by that class (trust rule applies)."""
    refs = catalog.class_refs(kwargs)
    if not refs:
        return kwargs
    for ref in refs:
        check_trusted(ref, {}, trust, source)
    classes = {ref: resolve_external(ref) for ref in refs}

    def swap(v: Any) -> Any:
        return classes.get(v, v) if isinstance(v, str) else v

    return {k: type(v)(swap(x) for x in v) if isinstance(v, list | tuple) else swap(v) for k, v in kwargs.items()}


def takes(signature: inspect.Signature | None, name: str) -> bool:
    """Whether a constructor accepts keyword `name` (True when Python cannot tell)."""
    if signature is None:
        return True
    params = signature.parameters.values()
    return name in signature.parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build_external(
    arch: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]
) -> nn.Module:
    cls, call_kwargs = external_call(arch, num_classes, in_channels, kwargs)
    try:
        model = cls(**call_kwargs)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{arch}: building the model failed: {type(e).__name__}: {e}") from e
    return annotate(model, in_channels, EXTERNAL_INPUT_SIDE)


def external_call(arch: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The class and the arguments it will be called with, checked against its signature."""
    cls = resolve_external(arch)
    signature = external_signature(arch, cls)
    call_kwargs = {"num_classes": num_classes} if takes(signature, "num_classes") and "num_classes" not in kwargs else {}
    call_kwargs.update(kwargs)
    if signature is not None:
        if "in_channels" in signature.parameters and "in_channels" not in kwargs:
            call_kwargs["in_channels"] = in_channels
        try:
            signature.bind(**call_kwargs)
        except TypeError as e:
            accepted = ", ".join(signature.parameters) or "nothing"
            raise ModelError(
                f"{arch}: cannot be called with {', '.join(call_kwargs) or 'no arguments'} ({e}); it accepts: "
                f"{accepted}. Give the others with --arch-kwargs (or model.kwargs in a preset)."
            ) from e
    return cls, call_kwargs


def external_signature(arch: str, cls: type) -> inspect.Signature | None:
    """The constructor's parameters (without self); None when Python cannot tell."""
    try:
        return inspect.signature(cls)
    except (TypeError, ValueError):
        return None


def with_current_folder() -> None:
    """Put the current folder on the import path, after installed packages (it never shadows them)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)


def resolve_external(arch: str) -> type[nn.Module]:
    """Import `package.module:Class` and return the class; it must be an nn.Module subclass.

    Call only after `check_trusted`: importing runs the module's code."""
    module_name, _, attr_path = arch.partition(":")
    if not module_name or not attr_path or ":" in attr_path:
        raise ModelError(f"{arch!r} is not of the form 'package.module:Class'.")
    with_current_folder()
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ModelError(
            f"{arch}: cannot import module {module_name!r} ({e}); check the spelling, and run from the "
            f"folder that holds it or put that folder on PYTHONPATH."
        ) from e
    except Exception as e:
        raise ModelError(
            f"{arch}: importing {module_name!r} failed: {type(e).__name__}: {e}"
        ) from e
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ModelError(
                f"{arch}: {getattr(obj, '__name__', module_name)!r} has no attribute {part!r}."
            )
        obj = getattr(obj, part)
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        kind = "a class" if inspect.isclass(obj) else f"a {type(obj).__name__}"
        raise ModelError(
            f"{arch}: {attr_path!r} is {kind}, not a torch.nn.Module subclass; slimlab builds only nn.Module "
            f"classes (a factory function cannot be checked before it runs: wrap it in an nn.Module class)."
        )
    return obj


def annotate(model: nn.Module, in_channels: int, side: int) -> nn.Module:
    """Give a foreign model the attributes built-ins carry, unless it defines its own."""
    if not hasattr(model, "default_ignore"):
        # The last Linear/Conv produces the logits; pruning its outputs would change the class count.
        layers = [
            name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
        ]
        model.default_ignore = layers[-1:]
    if not hasattr(model, "input_size"):
        model.input_size = (in_channels, side, side)
    return model
