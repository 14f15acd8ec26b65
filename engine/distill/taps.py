"""Forward hooks that capture intermediate outputs of named modules."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from types import TracebackType

from torch import Tensor, nn

from engine.errors import DistillError


def closest_module_names(model: nn.Module, name: str, n: int = 5) -> list[str]:
    """Module paths of ``model`` that look most like ``name`` (for error messages)."""
    names = [k for k, _ in model.named_modules() if k]
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if close:
        return close
    # Nothing similar: the top-level children are the most useful orientation.
    return [k for k, _ in model.named_children()][:n]


def resolve_module(model: nn.Module, name: str, label: str = "model") -> nn.Module:
    """The submodule at module path ``name``, or a DistillError listing near names."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    near = ", ".join(closest_module_names(model, name)) or "(model has no submodules)"
    raise DistillError(
        f"{label} has no module {name!r}; closest module paths: {near} "
        "(tap names are paths from model.named_modules(), e.g. 'layer3' or 'features.6')"
    )


class FeatureTaps:
    """Captures the latest forward output of each named module of ``model``.

    Hooks return None, so outputs are never changed. Use as a context manager or
    call ``close()``: every hook this object registered is removed.
    """

    def __init__(self, model: nn.Module, names: Iterable[str], label: str = "model") -> None:
        self.label = label
        self.names: list[str] = list(dict.fromkeys(names))
        # Resolve every name before registering anything, so a bad name leaks no hook.
        modules = {n: resolve_module(model, n, label) for n in self.names}
        self.outputs: dict[str, object] = {}
        self.calls: dict[str, int] = dict.fromkeys(self.names, 0)
        self._handles = [m.register_forward_hook(self._hook_for(n)) for n, m in modules.items()]
        self._closed = False

    def _hook_for(self, name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: object) -> None:
            self.outputs[name] = output
            self.calls[name] += 1

        return hook

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.calls:
            raise DistillError(f"{self.label} tap {name!r} was not registered; taps: {self.names}")
        if name not in self.outputs:
            raise DistillError(
                f"{self.label} module {name!r} did not run in the last forward pass; "
                "tap a module that the model's forward() calls"
            )
        out = self.outputs[name]
        if not isinstance(out, Tensor):
            raise DistillError(
                f"{self.label} module {name!r} returns {type(out).__name__}, not a tensor; "
                "tap a module whose output is a single feature tensor"
            )
        return out

    def reset(self) -> None:
        """Forget captured outputs and call counts (drops references to activations)."""
        self.outputs.clear()
        self.calls = dict.fromkeys(self.names, 0)

    def close(self) -> None:
        """Remove every hook; safe to call more than once."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.outputs.clear()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
