"""slimlab checkpoints: atomic saves, safe loads, and the rules for foreign files.

A slimlab checkpoint is a plain dict that `torch.load(weights_only=True)` reads:
no pickled code. Rebuilding a model = build `arch`, apply `plan`, load `state_dict`,
so a pruned model reloads without its class having been pickled.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine import sniff
from engine.atomic import atomic_file
from engine.errors import CheckpointError, NeedsTrust, SlimlabError, UntrustedCheckpoint
from engine.trust import Trust

FORMAT = sniff.CHECKPOINT_FORMAT
# the modules a checkpoint saved by the YOLOv5 repository's train.py names (it runs from the repository root)
YOLOV5_REPOSITORY_MODULES = ("models.yolo.", "models.common.", "models.experimental.")


def arch_dict(arch: str, num_classes: int, in_channels: int = 3, kwargs: dict | None = None,
              input_size: tuple[int, ...] | list[int] | None = None) -> dict:
    """What a checkpoint stores to rebuild its model (`input_size`, when given: the (C, H, W) it is traced at)."""
    d = {"name": arch, "num_classes": num_classes, "in_channels": in_channels, "kwargs": dict(kwargs or {})}
    if input_size is not None:
        d["input_size"] = [int(s) for s in input_size]
    return d


def build_model(arch: dict, trust: Trust | None = None, source: str | None = None) -> nn.Module:
    """Build an arch dict; a `module:Class` only when `trust` permits it (see engine/trust.py)."""
    from engine import models

    check_arch_dict(arch, source or "checkpoint")
    model = models.build_from(arch["name"], arch["num_classes"], arch.get("in_channels", 3), dict(arch.get("kwargs", {})),
                              trust=trust, source=source)
    if arch.get("input_size"):
        model.input_size = tuple(arch["input_size"])
    return model


def check_arch_dict(arch: Any, source: str) -> None:
    """An arch read from a file is data of a fixed shape; anything else is a corrupt file."""
    ok = (
        isinstance(arch, dict)
        and isinstance(arch.get("name"), str)
        and type(arch.get("num_classes")) is int
        and type(arch.get("in_channels", 3)) is int
        and isinstance(arch.get("kwargs", {}), dict)
        and all(isinstance(k, str) for k in arch.get("kwargs", {}))
        and (arch.get("input_size") is None or (
            isinstance(arch["input_size"], list) and len(arch["input_size"]) == 3
            and all(type(v) is int and v > 0 for v in arch["input_size"])))
    )
    if not ok:
        raise CheckpointError(
            f"{source}: its arch entry is malformed (expected name, num_classes, in_channels, kwargs); "
            "the file is corrupt or was not written by slimlab"
        )


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves half a file.

    A failed write raises the OSError behind it (e.g. ENOSPC), not torch's "unexpected pos"."""
    try:
        with atomic_file(path, "wb", durable=True) as f:
            torch.save(obj, f)
    except RuntimeError as e:
        cause = _os_error_in(e)
        if cause is None:
            raise
        if cause.filename is None:
            cause.filename = str(path)
        raise cause from None


def _os_error_in(e: BaseException) -> OSError | None:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def save(
    path: str | Path,
    model: nn.Module,
    arch: dict,
    *,
    plan: dict | None = None,
    meta: dict | None = None,
    resume: dict | None = None,
) -> None:
    """Write a slimlab checkpoint. `resume` holds optimizer/scheduler/scaler/RNG state."""
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    obj = {
        "format": FORMAT,
        "arch": arch,
        "plan": plan,
        "state_dict": state,
        "meta": _plain(meta or {}),
    }
    if resume:
        obj.update(resume)
    atomic_save(obj, path)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _plain(obj: Any) -> Any:
    """JSON round trip: meta must hold only types weights_only loading accepts."""
    return json.loads(json.dumps(obj, default=str))


# ---------------------------------------------------------------- reading


def read_raw(path: str | Path, *, trust: bool = False) -> Any:
    """torch.load with clear errors; pickled code only with `trust`.

    The format is told from the bytes first (engine/sniff.py), so text, random bytes, a
    truncated or damaged file get a diagnosis, and --trust is suggested only for a well-formed
    pickle that imports code. Every failure is a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; for a run directory use {path}/weights/best.pt")
    try:
        kind = sniff.sniff(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    if kind.problem:
        raise CheckpointError(f"{path}: {kind.problem}")
    if kind.kind == "safetensors":
        return _read_safetensors(path, kind)
    code: list[str] = []
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        check = sniff.pickle_check(path, kind)
        if not check.well_formed:
            raise CheckpointError(f"{path}: damaged: its pickled data does not parse ({check.problem}); "
                                  "re-save or re-copy it") from None
        code = _code_globals(check.globals)
        missing = [n for n in code if _surely_missing(n)]
        if missing:  # a flipped byte in a name: no trust makes this load
            raise CheckpointError(f"{path}: damaged: its pickle names {', '.join(missing[:3])}, which does not exist; "
                                  "re-save or re-copy it") from None
        if not code:
            raise CheckpointError(f"{path}: not a readable checkpoint (its pickle was refused by torch.load)") from None
        if not trust:
            shown = ", ".join(code[:4]) + (f" and {len(code) - 4} more" if len(code) > 4 else "")
            raise UntrustedCheckpoint(
                f"{path}: holds pickled Python objects (it imports {shown}); unpickling runs code from the file. "
                "Load it only if you trust its source: pass --trust (or confirm in the workbench).",
                kind="pickle", source=str(path), names=code,
            ) from None
    except Exception as e:  # torch.load on damaged bytes raises almost anything
        raise CheckpointError(f"{path}: damaged PyTorch checkpoint ({_short(e)}); re-save or re-copy it") from None
    if any(n.startswith(YOLOV5_REPOSITORY_MODULES) for n in code):
        # a YOLOv5-repository best.pt: its classes are the optional yolov5 package's (engine/detect/yolov5)
        from engine.detect.yolov5.checkpoint import read_repository_pickle

        return read_repository_pickle(path)
    from engine.models.registry import with_current_folder

    with_current_folder()  # the classes a trusted pickle names are found from the project folder
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # arbitrary unpickling failures: missing classes, modules, ...
        raise CheckpointError(
            f"{path}: unpickling failed ({_short(e)}); the code that saved it must be importable "
            "(e.g. run from the project that defines its classes)"
        ) from None


def _code_globals(names: list[str]) -> list[str]:
    """The imports torch's weights_only loader refuses: what unpickling would run."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except (ImportError, AttributeError):  # a torch without it: show every name
        allowed = set()
    return [n for n in names if n not in allowed and n.replace("__builtin__.", "builtins.") not in allowed]


def _surely_missing(name: str) -> bool:
    """True when `module.attr` names a module already imported that has no such attribute.

    Only modules in sys.modules are looked at: checking any other would import it, running code."""
    import sys

    module, _, attr = name.rpartition(".")
    module = module.replace("__builtin__", "builtins")
    mod = sys.modules.get(module)
    return mod is not None and not hasattr(mod, attr)


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


SAFETENSORS_DTYPES = {
    "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip


def _read_safetensors(path: Path, kind: sniff.Sniffed) -> dict[str, torch.Tensor]:
    """The safetensors layout (8-byte header length, JSON header, raw data), checked by sniff."""
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        for name, info in kind.header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in SAFETENSORS_DTYPES:
                raise CheckpointError(f"{path}: tensor {name} has dtype {info['dtype']}, which slimlab does not read")
            dtype = getattr(torch, SAFETENSORS_DTYPES[info["dtype"]])
            lo, hi = info["data_offsets"]
            f.seek(kind.data_start + lo)
            buf = bytearray(f.read(hi - lo))
            t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
            out[name] = t.reshape(info["shape"])
    return out


@dataclass
class Loaded:
    model: nn.Module
    arch: dict
    plan: dict | None
    meta: dict
    raw: dict = field(repr=False, default_factory=dict)  # the whole checkpoint, for resume state
    source: str = "slimlab"  # slimlab | state_dict | module | ultralytics | yolov5


def is_slimlab(raw: Any) -> bool:
    return isinstance(raw, dict) and str(raw.get("format", "")).startswith("slimlab/")


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataParallel / DDP save keys as `module.x`; models expect `x`."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def find_state_dict(raw: Any) -> dict[str, torch.Tensor] | None:
    if raw and is_state_dict(raw):
        return raw
    if isinstance(raw, dict):
        for key in ("state_dict", "model_state_dict", "model", "net", "ema"):
            inner = raw.get(key)
            if inner and is_state_dict(inner):
                return inner
    return None


def check_slimlab(raw: dict, source: str) -> None:
    """A slimlab checkpoint's entries have fixed types; a file where they do not is damaged."""
    check_arch_dict(raw.get("arch"), source)
    problems = [name for name, ok in (
        ("state_dict", is_state_dict(raw.get("state_dict"))),
        ("plan", raw.get("plan") is None or isinstance(raw.get("plan"), dict)),
        ("meta", isinstance(raw.get("meta", {}), dict)),
    ) if not ok]
    if problems:
        raise CheckpointError(f"{source}: its {', '.join(problems)} entry is malformed; the file is damaged "
                              "or was not written by slimlab")


def find_module(raw: Any) -> nn.Module | None:
    if isinstance(raw, nn.Module):
        return raw
    if isinstance(raw, dict):
        for key in ("ema", "model"):  # YOLOv5 keeps both; ema holds the better weights
            if isinstance(raw.get(key), nn.Module):
                return raw[key]
    return None


def load(path: str | Path, *, arch: dict | None = None, trust: Trust | bool = False) -> Loaded:
    """Load any accepted checkpoint into a model on the CPU (in float32, eval mode).

    `arch` rebuilds a bare state_dict. `trust` says what may run code: pickled objects, and
    which `module:Class` archs (read from the file, or in `arch`) may be built; True means
    `--trust`. The caller adds the names the user gave (e.g. `--arch`) with `Trust.allowing`."""
    trust = Trust.of(trust)
    raw = read_raw(path, trust=trust.pickles)
    if is_slimlab(raw):
        check_slimlab(raw, str(path))
        model = rebuild(raw["arch"], raw.get("plan"), raw["state_dict"], source=str(path), trust=trust)
        return Loaded(model, raw["arch"], raw.get("plan"), raw.get("meta", {}), raw, "slimlab")
    module = find_module(raw)
    if module is not None and type(module).__module__.startswith("yolov5.models."):
        # a YOLOv5-repository best.pt: rebuilt from its yaml, then held as a slimlab model
        from engine.detect.yolov5.model import adopt as adopt_yolov5

        model, arch_d, meta, plan = adopt_yolov5(module, raw, str(path))
        return Loaded(model, arch_d, plan, meta, {}, "yolov5")
    if module is not None and type(module).__module__.startswith("ultralytics."):
        # an Ultralytics best.pt: rebuilt from its yaml, then held as a slimlab model
        from engine.detect.model import adopt

        model, arch_d, meta = adopt(module, raw, str(path))
        return Loaded(model, arch_d, None, meta, {}, "ultralytics")
    if module is not None:
        model = module.float().eval()
        return Loaded(model, {"name": type(model).__module__ + ":" + type(model).__qualname__,
                              "num_classes": 0, "in_channels": 3, "kwargs": {}}, None, {}, {}, "module")
    state = find_state_dict(raw)
    if state is None:
        raise CheckpointError(f"{path}: holds neither a slimlab checkpoint, a state_dict, nor a model")
    if arch is None:
        raise CheckpointError(
            f"{path}: is a bare state_dict: say which architecture it belongs to "
            "(--arch NAME --num-classes N, or a preset's model.arch)"
        )
    model = rebuild(arch, None, strip_prefix(state), source=str(path), trust=trust)
    return Loaded(model, arch, None, {}, {}, "state_dict")


def rebuild(
    arch: dict, plan: dict | None, state: dict[str, torch.Tensor], source: str = "checkpoint", trust: Trust | None = None
) -> nn.Module:
    try:
        model = build_model(arch, trust=trust, source=source)
    except NeedsTrust as e:
        raise UntrustedCheckpoint(str(e), kind=e.kind, arch=e.arch, kwargs=e.kwargs, source=source) from None
    except CheckpointError:
        raise
    except SlimlabError as e:
        raise CheckpointError(f"{source}: cannot rebuild its architecture: {e}") from None
    if plan:
        from engine.slim.apply import apply_plan
        from engine.slim.plan import PrunePlan

        try:  # the plan was checked on a dummy batch when it was made
            apply_plan(model, PrunePlan.from_dict(plan), verify=False)
        except Exception as e:  # a plan is data from the file: any mismatch is the file's problem
            raise CheckpointError(f"{source}: its plan does not fit its architecture ({_short(e)})") from None
    load_state(model, state, source)
    return model.eval()


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """load_state_dict with a message naming the first mismatching tensor."""
    state = strip_prefix(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise CheckpointError(
            f"{source}: does not match the architecture: {'; '.join(parts)}. Check the arch and its kwargs "
            "(width, depth, num_classes)"
        )
    for k, v in own.items():
        if v.shape != state[k].shape:
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(state[k].shape)} in the checkpoint but {tuple(v.shape)} in the model; "
                "check the arch kwargs, or whether the checkpoint was pruned (its plan is needed)"
            )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # e.g. a tensor of a type that cannot be copied into a parameter
        raise CheckpointError(f"{source}: its weights do not load into the model ({_short(e)})") from None


# ---------------------------------------------------------------- peeking (no model built)


def peek(path: str | Path) -> dict:
    """What can be read without running pickled code: for the checkpoint browser's side panel."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    info: dict[str, Any] = {"path": str(path), "size": size}
    try:
        raw = read_raw(path, trust=False)
        if is_slimlab(raw):
            check_slimlab(raw, str(path))
    except CheckpointError as e:
        info["error"] = str(e)
        info["needs_trust"] = isinstance(e, UntrustedCheckpoint)
        return info
    if is_slimlab(raw):
        meta = raw.get("meta", {})
        state = raw["state_dict"]
        info.update(
            format=raw["format"],
            arch=raw["arch"],
            epoch=meta.get("epoch"),
            stage=meta.get("stage"),
            metrics=meta.get("metrics", {}),
            plan=_plan_summary(raw.get("plan")),
            resumable="optimizer" in raw,
        )
    else:
        state = find_state_dict(raw) or {}
        info["format"] = "state_dict" if state else "unknown"
    state = strip_prefix(state)
    info["params"] = int(sum(v.numel() for k, v in state.items() if _is_param(k)))
    info["bn_layers"] = sum(1 for k in state if k.endswith("running_var"))
    info["tensors"] = len(state)
    return info


def _is_param(key: str) -> bool:
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def _plan_summary(plan: dict | None) -> dict | None:
    if not plan:
        return None
    totals = plan.get("totals", {})
    return {k: totals[k] for k in sorted(totals)} | {"groups": len(plan.get("groups", []))}

