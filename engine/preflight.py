"""Checks of a whole preset that need the model registry or the files it names: run before the
first stage, so a mistake never costs the stages before it.

- every model's kwargs against its constructor's signature (nothing is built);
- sparse / prune / sweep stages on a model without BatchNorm (the model is built on the meta
  device: no memory, no weights);
- the checkpoints and teachers the preset names: readable, and loadable under the run's trust
  (a pickle without --trust, or a module:Class the user did not name, is refused now rather than
  when its stage starts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import CheckpointError, ModelError, NeedsTrust, PresetError
from engine.trust import Trust

SLIMMING_STAGES = ("sparse", "prune", "sweep")


def check(spec: Any, trust: Trust, source: str = "preset") -> None:
    """Raise PresetError (or NeedsTrust, with the flag to pass) for what would fail later."""
    if spec.task != "classify":
        return  # detection checks its own models and data (engine/detect)
    models = [("model", spec.model)] + [(f"stages[{i}].model", s.model) for i, s in enumerate(spec.stages)
                                        if getattr(s, "model", None) is not None]
    for key, m in models:
        _check_kwargs(key, m, spec, trust, source)
    for key, path in _named_files(spec):
        _check_file(key, path, trust, source)
    slimming = [(i, s) for i, s in enumerate(spec.stages) if s.type in SLIMMING_STAGES]
    if slimming and spec.model.checkpoint is None and not _has_batchnorm(spec.model, spec, trust):
        i, stage = slimming[0]
        raise PresetError(
            f"{source}: stages[{i}] ({stage.name}): model {spec.model.arch} has no BatchNorm layers, so network "
            "slimming has nothing to score; use a model with BatchNorm (e.g. kd_student with bn: true), or drop "
            f"the {', '.join(sorted({s.type for _, s in slimming}))} stages"
        )


def _num_classes(spec: Any) -> int:
    return spec.data.num_classes if spec.data.dataset == "shapes" else 10  # the count does not change the check


def _check_kwargs(key: str, m: Any, spec: Any, trust: Trust, source: str) -> None:
    from engine.models import registry

    try:
        registry.check_kwargs(m.arch, _num_classes(spec), 3, dict(m.kwargs), trust=trust, source=f"{source}: {key}.arch")
    except NeedsTrust:
        raise
    except ModelError as e:
        raise PresetError(f"{source}: {key}: {e}") from None


def _named_files(spec: Any) -> list[tuple[str, Path]]:
    names = {s.name for s in spec.stages}
    files = [("model.checkpoint", spec.model.checkpoint)]
    for i, stage in enumerate(spec.stages):
        if getattr(stage, "model", None) is not None:
            files.append((f"stages[{i}].model.checkpoint", stage.model.checkpoint))
        teacher = getattr(stage, "teacher", None)
        if teacher and teacher != "original" and teacher not in names:
            path = Path(teacher)
            files.append((f"stages[{i}].teacher", path / "weights" / "best.pt" if path.is_dir() else path))
    return [(k, p) for k, p in files if p is not None and Path(p).is_file()]


def _check_file(key: str, path: Path, trust: Trust, source: str) -> None:
    from engine import checkpoint

    try:
        raw = checkpoint.read_raw(path, trust=trust.pickles)
    except NeedsTrust:
        raise
    except CheckpointError as e:
        raise PresetError(f"{source}: {key}: {e}") from None
    arch = raw.get("arch") if checkpoint.is_slimlab(raw) else None
    if isinstance(arch, dict) and isinstance(arch.get("name"), str):
        from engine.models.registry import check_trusted

        try:
            check_trusted(arch["name"], dict(arch.get("kwargs") or {}), trust, str(path))
        except NeedsTrust as e:
            from engine.errors import UntrustedCheckpoint

            raise UntrustedCheckpoint(str(e), kind=e.kind, arch=e.arch, kwargs=e.kwargs, source=str(path)) from None


def _has_batchnorm(m: Any, spec: Any, trust: Trust) -> bool:
    """Built on the meta device; True when that cannot be done (the stage itself will tell)."""
    import torch
    from torch import nn

    from engine.models import registry

    try:
        with torch.device("meta"):
            model = registry.build_from(m.arch, _num_classes(spec), 3, dict(m.kwargs), trust=trust)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is checked when its stage runs
        return True
    return any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in model.modules())
