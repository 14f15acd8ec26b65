"""slimlab checkpoints: atomic saves, safe loads, and the rules for foreign files.

A slimlab checkpoint is a plain dict that `torch.load(weights_only=True)` reads:
no pickled code. Rebuilding a model = build `arch`, apply `plan`, load `state_dict`,
so a pruned model reloads without its class having been pickled.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.atomic import atomic_file
from engine.errors import CheckpointError, NeedsTrust, SlimlabError, UntrustedCheckpoint
from engine.formats import CHECKPOINT_FORMAT
from engine.trust import Trust

FORMAT = CHECKPOINT_FORMAT


def arch_dict(arch: str, num_classes: int, in_channels: int = 3, kwargs: dict | None = None) -> dict:
    """What a checkpoint stores to rebuild its model."""
    return {"name": arch, "num_classes": num_classes, "in_channels": in_channels, "kwargs": dict(kwargs or {})}


def build_model(arch: dict, trust: Trust | None = None, source: str | None = None) -> nn.Module:
    """Build an arch dict; a `module:Class` only when `trust` permits it (see engine/trust.py)."""
    from engine import models

    check_arch_dict(arch, source or "checkpoint")
    return models.build_from(arch["name"], arch["num_classes"], arch.get("in_channels", 3), dict(arch.get("kwargs", {})),
                             trust=trust, source=source)


def check_arch_dict(arch: Any, source: str) -> None:
    """An arch read from a file is data of a fixed shape; anything else is a corrupt file."""
    ok = (
        isinstance(arch, dict)
        and isinstance(arch.get("name"), str)
        and type(arch.get("num_classes")) is int
        and type(arch.get("in_channels", 3)) is int
        and isinstance(arch.get("kwargs", {}), dict)
        and all(isinstance(k, str) for k in arch.get("kwargs", {}))
    )
    if not ok:
        raise CheckpointError(
            f"{source}: its arch entry is malformed (expected name, num_classes, in_channels, kwargs); "
            "the file is corrupt or was not written by slimlab"
        )


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves half a file."""
    with atomic_file(path, "wb", durable=True) as f:
        torch.save(obj, f)


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
    """torch.load with clear errors; pickled code only with `trust`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; for a run directory use {path}/weights/best.pt")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not _needs_code(e):
            raise CheckpointError(f"{path}: not a readable checkpoint ({_short(e)})") from None
        if not trust:
            raise UntrustedCheckpoint(
                f"{path}: holds pickled Python objects (e.g. a whole nn.Module); unpickling runs code from the file. "
                "Load it only if you trust its source: pass --trust (or confirm in the workbench).",
                kind="pickle", source=str(path),
            ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({_short(e)}); re-save or re-copy it") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # arbitrary unpickling failures: missing classes, modules, ...
        raise CheckpointError(
            f"{path}: unpickling failed ({_short(e)}); the code that saved it must be importable "
            "(e.g. run from the project that defines its classes)"
        ) from None


def _needs_code(e: Exception) -> bool:
    text = str(e)
    return "Weights only load failed" in text or "weights_only" in text


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Minimal reader for the safetensors layout (8-byte header length, JSON header, raw data)."""
    dtypes = {
        "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
        "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
        "BOOL": torch.bool,
    }  # fmt: skip
    header = safetensors_header(path)
    data = path.read_bytes()
    start = 8 + struct.unpack("<Q", data[:8])[0]
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        lo, hi = info["data_offsets"]
        buf = bytearray(data[start + lo : start + hi])
        t = torch.frombuffer(buf, dtype=dtypes[info["dtype"]]) if buf else torch.empty(0, dtype=dtypes[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


def safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file")
        n = struct.unpack("<Q", head)[0]
        if n > 100_000_000:
            raise CheckpointError(f"{path}: not a safetensors file (header length {n})")
        raw = f.read(n)
    try:
        return json.loads(raw)
    except ValueError:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors header") from None


@dataclass
class Loaded:
    model: nn.Module
    arch: dict
    plan: dict | None
    meta: dict
    raw: dict = field(repr=False, default_factory=dict)  # the whole checkpoint, for resume state
    source: str = "slimlab"  # slimlab | state_dict | module


def is_slimlab(raw: Any) -> bool:
    return isinstance(raw, dict) and str(raw.get("format", "")).startswith("slimlab/")


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataParallel / DDP save keys as `module.x`; models expect `x`."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def find_state_dict(raw: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        return raw
    if isinstance(raw, dict):
        for key in ("state_dict", "model_state_dict", "model", "net", "ema"):
            inner = raw.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return None


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
        model = rebuild(raw["arch"], raw.get("plan"), raw["state_dict"], source=str(path), trust=trust)
        return Loaded(model, raw["arch"], raw.get("plan"), raw.get("meta", {}), raw, "slimlab")
    module = find_module(raw)
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

        apply_plan(model, PrunePlan.from_dict(plan))
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
    model.load_state_dict(state)


# ---------------------------------------------------------------- peeking (no model built)


def peek(path: str | Path) -> dict:
    """What can be read without running pickled code: for the checkpoint browser's side panel."""
    path = Path(path)
    info: dict[str, Any] = {"path": str(path), "size": path.stat().st_size if path.exists() else 0}
    try:
        raw = read_raw(path, trust=False)
    except CheckpointError as e:
        info["error"] = str(e)
        info["needs_trust"] = "pickled Python objects" in str(e)
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

