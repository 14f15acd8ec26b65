"""Every shim the YOLOv5 repository's code (the PyPI `yolov5` package, 7.0.14) needs on the PyTorch,
numpy and Python slimlab uses, in one place, each with what drifted.

`load()` imports the package once with its shims; `unpickler_module()` reads a checkpoint the
repository saved (its classes named `models.yolo.*`, `models.common.*`, `utils.*`), `pickler_module()`
writes one under those names. Nothing else in slimlab touches the package's import machinery.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import pickle
import sys
import types
from pathlib import Path
from typing import Any

from engine.detect import ultra
from engine.errors import CheckpointError

PACKAGE = "yolov5"
VERSION_RANGE = "YOLOv5 v5.0 - v7.0"  # the repository releases whose checkpoints slimlab reads
INSTALL_HINT = (
    "install the YOLOv5 family into the detection environment: `make setup-detect` (it installs the "
    "`yolov5` package with --no-deps beside Ultralytics), or `pip install --no-deps yolov5==7.0.14 pandas seaborn`"
)
# The repository runs from its root, so its pickles name top-level `models` and `utils`; the package
# ships the same modules under `yolov5.`.
REPOSITORY_ROOTS = ("models", "utils")
_loaded: types.ModuleType | None = None


class Yolov5Unavailable(ultra.DetectUnavailable):
    """The `yolov5` package cannot be imported here."""


def _pkg_resources() -> types.ModuleType:
    """Shim 1: setuptools 81 removed `pkg_resources`, which yolov5/utils/general.py imports at module
    level only for `pkg.parse_version` (version checks). `packaging`'s parser is what it wrapped."""
    from packaging.version import parse

    module = types.ModuleType("pkg_resources")
    module.parse_version = parse  # type: ignore[attr-defined]
    return module


class _NumpyWithTrapz(types.ModuleType):
    """Shim 2: numpy 2.0 renamed `np.trapz` to `np.trapezoid` (and 2.4 removed the old name);
    yolov5/utils/metrics.py `compute_ap` integrates the precision envelope with `np.trapz`."""

    def __init__(self, numpy: types.ModuleType):
        super().__init__("numpy")
        self._numpy = numpy

    def __getattr__(self, name: str) -> Any:
        if name == "trapz":
            return self._numpy.trapezoid
        return getattr(self._numpy, name)


def load() -> types.ModuleType:
    """The `yolov5` package, imported once with the shims above (and Ultralytics' network traps
    closed first: the package's utils import `ultralytics.utils.checks`)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    ultra.load()
    added = "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None
    if added:
        sys.modules["pkg_resources"] = _pkg_resources()
    logger = logging.getLogger(PACKAGE)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            package = importlib.import_module(PACKAGE)
            for name in ("models.yolo", "models.common", "models.experimental", "utils.loss", "utils.metrics",
                         "utils.general"):
                importlib.import_module(f"{PACKAGE}.{name}")
    except ImportError as e:
        raise Yolov5Unavailable(f"the YOLOv5 family needs the `yolov5` package, which does not import here ({e}); "
                                f"{INSTALL_HINT}") from None
    finally:
        if added:  # general.py holds its own reference; no other importer sees the stand-in
            sys.modules.pop("pkg_resources", None)
        # models/yolo.py appends the package folder to sys.path so that the repository's top-level
        # `models`/`utils` resolve (as a second copy of every module); slimlab maps those names
        # instead (shim 4), and a top-level `utils` of the package never shadows anyone else's
        folder = str(Path(importlib.util.find_spec(PACKAGE).origin).parent) if importlib.util.find_spec(PACKAGE) else None
        while folder in sys.path:
            sys.path.remove(folder)
    import numpy

    metrics = sys.modules[f"{PACKAGE}.utils.metrics"]
    if not hasattr(numpy, "trapz"):
        metrics.np = _NumpyWithTrapz(numpy)
    # Shim 3: the package logs model tables and notices at INFO through its own logger (and the
    # repository's `set_logging` reconfigures it at import); a slimlab run keeps its own log.
    logger.setLevel(logging.WARNING)
    _loaded = package
    return package


def version() -> str:
    return str(getattr(load(), "__version__", "?"))


def repository_name(module: str) -> str | None:
    """`yolov5.models.yolo` -> `models.yolo` (the name the repository's pickles use), else None."""
    root = module.split(".")[0]
    if root == PACKAGE and module.count(".") >= 1 and module.split(".")[1] in REPOSITORY_ROOTS:
        return module[len(PACKAGE) + 1 :]
    return None


def package_name(module: str) -> str | None:
    """`models.yolo` -> `yolov5.models.yolo` for the repository's own top-level modules, else None."""
    if module.split(".")[0] in REPOSITORY_ROOTS:
        return f"{PACKAGE}.{module}"
    return None


class _RepositoryUnpickler(pickle.Unpickler):
    """Shim 4: the repository's `models`/`utils` are the package's `yolov5.models`/`yolov5.utils`. The
    package itself resolves them by appending its folder to sys.path, which imports a second copy of
    every module under the top-level names; here the names are mapped instead, and a class the
    package does not define (a YOLOv5 release outside v5.0 - v7.0) is named in the error."""

    source = "checkpoint"

    def find_class(self, module: str, name: str) -> Any:
        mapped = package_name(module)
        if mapped is None:
            return super().find_class(module, name)
        try:
            target = importlib.import_module(mapped)
        except ImportError:
            raise CheckpointError(
                f"{self.source}: its model uses {module}.{name}, a module the YOLOv5 package (the repository's "
                f"{VERSION_RANGE}) does not have; slimlab reads checkpoints of {VERSION_RANGE}"
            ) from None
        if not hasattr(target, name):
            raise CheckpointError(
                f"{self.source}: its model uses {module}.{name}, a class the YOLOv5 repository's {VERSION_RANGE} "
                f"does not define (a checkpoint of another release or a fork); slimlab reads checkpoints of "
                f"{VERSION_RANGE}: re-save it with one of those releases"
            )
        return getattr(target, name)


def unpickler_module(source: str) -> types.ModuleType:
    """A `pickle_module` for torch.load that reads the repository's names (see `_RepositoryUnpickler`)."""
    load()

    class Unpickler(_RepositoryUnpickler):
        pass

    Unpickler.source = source
    module = types.ModuleType("slimlab_yolov5_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = pickle.load  # type: ignore[attr-defined]
    module.__name__ = "pickle"
    return module


class _RepositoryPickler(pickle._Pickler):  # type: ignore[misc,name-defined]
    """Writes the package's classes under the repository's names (`models.yolo.DetectionModel`), so
    the repository's own code (run from its root) and the package (which puts its folder on
    sys.path) both unpickle the file."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or ""
        mapped = repository_name(module)
        if mapped is None:
            return super().save_global(obj, name)
        qualname = name or obj.__qualname__
        self.write(pickle.GLOBAL + mapped.encode("utf-8") + b"\n" + qualname.encode("utf-8") + b"\n")
        self.memoize(obj)

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]
    dispatch[type] = save_global  # classes (and functions below) go through the renaming above
    dispatch[types.FunctionType] = save_global


def pickler_module() -> types.ModuleType:
    """A `pickle_module` for torch.save writing the repository's names (protocol 2, as torch.save)."""
    load()
    module = types.ModuleType("pickle")
    module.Pickler = _RepositoryPickler  # type: ignore[attr-defined]
    module.Unpickler = pickle.Unpickler  # type: ignore[attr-defined]
    module.dump = pickle.dump  # type: ignore[attr-defined]
    module.load = pickle.load  # type: ignore[attr-defined]
    return module


@contextlib.contextmanager
def repository_loading() -> Any:
    """Running the repository's own loader (its val.py / detect.py path) on a file slimlab wrote.

    Shim 5: torch 2.6 made `torch.load(weights_only=True)` the default; the repository's
    `attempt_load` (and so its val.py / detect.py) calls torch.load without it, on files that are
    pickles by design. Inside this block, a load that does not say otherwise unpickles (for files
    the user trusts: slimlab's own `--format yolov5` output in its tests and checks)."""
    import torch

    experimental = sys.modules[f"{PACKAGE}.models.experimental"]
    original, download = torch.load, experimental.attempt_download

    def trusted_load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    def local_file(file: Any, *args: Any, **kwargs: Any) -> str:
        """Shim 6: the PyPI package's `attempt_download` asks the Hugging Face hub first, even for a
        local file (and fails on current huggingface_hub, whose `utils._errors` moved); the repository
        returns a file that exists as it is, and slimlab never downloads."""
        if Path(str(file)).is_file():
            return str(file)
        raise FileNotFoundError(f"{file}: no such checkpoint (weights are never downloaded)")

    torch.load, experimental.attempt_download = trusted_load, local_file
    try:
        yield
    finally:
        torch.load, experimental.attempt_download = original, download
