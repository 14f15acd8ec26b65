"""Shared fixtures: tiny presets and runs that finish in seconds on two cores."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml

# tiny models gain nothing from threads, and busy-waiting threads slow a shared machine badly
os.environ.setdefault("OMP_NUM_THREADS", "1")
# the key that signs run directories' spec.yaml (engine/trust.py) stays out of the user's home
os.environ.setdefault("SLIMLAB_STATE_DIR", tempfile.mkdtemp(prefix="slimlab-state-"))

def pytest_collection_modifyitems(config, items):
    """Detection tests need Ultralytics: outside its environment they are skipped, naming it."""
    import importlib.util

    if importlib.util.find_spec("ultralytics") is None:  # found, not imported: importing it goes online
        skip = pytest.mark.skip(reason="needs the detection environment (ultralytics): make test-detect")
        for item in items:
            if item.get_closest_marker("detect"):
                item.add_marker(skip)


TINY = {
    "name": "tiny",
    "model": {"arch": "vgg", "kwargs": {"depth": 11, "width": 0.125}},
    "data": {"dataset": "shapes", "num_classes": 4, "train_size": 256, "val_size": 64, "augment": True},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "log_every": 2, "device": "cpu"},
    "stages": [{"type": "train"}],
}


@pytest.fixture
def tiny_preset(tmp_path: Path):
    """Write a tiny preset (optionally changed) and return its path."""

    def make(**changes) -> Path:
        data = yaml.safe_load(yaml.safe_dump(TINY))
        for key, value in changes.items():
            node = data
            parts = key.split("__")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        path = tmp_path / f"{data['name']}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


@pytest.fixture
def ultralytics_offline():
    """Ultralytics imported through slimlab, which closes its network traps first (detection tests)."""
    from engine.detect import ultra

    ultra.load()
