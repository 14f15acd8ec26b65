"""Network slimming: BatchNorm-gamma sparsity, coupled channel groups, prune plans, pruning.

Names are loaded on first use so `import engine.slim` does not import torch. A name equal to a
submodule's (`sweep`) is left out: once the submodule is imported, the attribute is the module.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SparsePenalty": "engine.slim.sparse",
    "sparsity_figures": "engine.slim.sparse",
    "GammaStats": "engine.slim.gamma",
    "gamma_stats": "engine.slim.gamma",
    "Trace": "engine.slim.trace",
    "TraceBudget": "engine.slim.trace",
    "build_trace": "engine.slim.trace",
    "ChannelGroup": "engine.slim.groups",
    "find_groups": "engine.slim.groups",
    "group_scores": "engine.slim.groups",
    "PlanInputs": "engine.slim.inputs",
    "precompute": "engine.slim.inputs",
    "PrunePlan": "engine.slim.plan",
    "PlanGroup": "engine.slim.plan",
    "make_plan": "engine.slim.plan",
    "plan_from_inputs": "engine.slim.plan",
    "apply_plan": "engine.slim.apply",
    "check_plan": "engine.slim.apply",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.slim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
