"""Import Ultralytics with every network trap closed, or say how to install it.

Ultralytics reaches out to the network in several places; slimlab closes each before use:
- the online check run at import (DNS look-ups): YOLO_OFFLINE
- pip auto-installs of missing requirements: YOLO_AUTOINSTALL
- analytics events and the Platform/hub upload callbacks every trainer and validator adds:
  `add_integration_callbacks` replaced by one that adds nothing
- the AMP check, which downloads a model to compare fp16 with fp32: replaced by the setting itself
- fonts for plots (`plots=False` everywhere; and `check_det_dataset`, which the exporters' INT8
  calibration calls with a dataset yaml, fetches a font first: `check_font` there does nothing), dataset auto-download (slimlab validates the dataset
  yaml itself and hands Ultralytics the resolved dict), pretrained weights (`pretrained=False`; models
  are built from their yaml)
- model yamls built from checkpoints go through the restricted (no eval) model parser
- the label caches beside a dataset's labels (pickles) are read by an arrays-only unpickler and
  written atomically (engine/detect/label_cache.py)
A test runs a detection run with sockets refused and fails on any connection attempt.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from engine.errors import SlimlabError

INSTALL_HINT = (
    "install the detection extra into an environment whose torchvision loads: `make setup-detect` "
    "(creates .venv-detect), or `pip install 'slimlab[detect]'`"
)

_ENV = {
    "YOLO_OFFLINE": "true",
    "YOLO_AUTOINSTALL": "false",
    "YOLO_VERBOSE": "false",
    "ULTRALYTICS_SAFE_LOAD": "1",
}
_loaded: ModuleType | None = None


class DetectUnavailable(SlimlabError):
    """Ultralytics (or its torchvision) cannot be imported here."""


def load() -> ModuleType:
    """The `ultralytics` package, imported once with the traps above closed."""
    global _loaded
    if _loaded is not None:
        return _loaded
    for key, value in _ENV.items():
        os.environ.setdefault(key, value)
    try:
        import ultralytics
        from ultralytics.data import utils as data_utils
        from ultralytics.engine import trainer as trainer_mod
        from ultralytics.utils import callbacks
    except ImportError as e:
        raise DetectUnavailable(f"detection needs Ultralytics, which is not installed here ({e}); {INSTALL_HINT}") from None
    except (OSError, RuntimeError) as e:  # torchvision built for another torch
        raise DetectUnavailable(f"Ultralytics does not import here ({type(e).__name__}: {e}); {INSTALL_HINT}") from None

    def no_integrations(instance: object) -> None:
        """Analytics, Platform uploads and logger integrations all talk to the network: none are added."""

    callbacks.add_integration_callbacks = no_integrations
    trainer_mod.check_amp = _amp_as_asked
    data_utils.check_font = _no_font
    from engine.detect import label_cache

    label_cache.install()
    _loaded = ultralytics
    return ultralytics


def _amp_as_asked(model: object) -> bool:
    """AMP is used when the preset asks for it on CUDA; Ultralytics' check would download a model."""
    return True


def _no_font(font: str = "") -> None:
    """Fonts are for plots, which slimlab never draws; Ultralytics would download one."""


@contextlib.contextmanager
def one_process() -> Iterator[None]:
    """Ultralytics as a single process for what one rank does alone (validation outside the trainer,
    calibration loaders, exporters), also under torchrun.

    Ultralytics reads RANK and LOCAL_RANK from the environment once, at import, into the globals of
    each module that uses them; with them set, a validator gathers its statistics from every rank and
    `torch_distributed_zero_first` waits in a barrier, both collectives the other ranks never join
    while rank 0 measures a model alone. Inside this block those globals say -1 (no DDP), as in a
    process torchrun did not start; the trainer's DDP outside it sees the real ranks."""
    saved: list[tuple[ModuleType, str, int]] = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "ultralytics" or name.startswith("ultralytics.")):
            continue
        for attr in ("RANK", "LOCAL_RANK"):
            value = getattr(module, attr, None)
            if isinstance(value, int) and value != -1:
                saved.append((module, attr, value))
                setattr(module, attr, -1)
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def version() -> str:
    return str(load().__version__)
