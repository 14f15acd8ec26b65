"""Checkpoints: atomic, weights_only-readable, and clear about every foreign or broken file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from engine import checkpoint
from engine.errors import CheckpointError

ARCH = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})


def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model = checkpoint.build_model(ARCH)
    path = tmp_path / "m.pt"
    checkpoint.save(path, model, ARCH, meta={"epoch": 3, "metrics": {"accuracy": 0.5}})
    return path, model


def test_round_trip_with_weights_only(tmp_path):
    path, model = saved(tmp_path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == checkpoint.FORMAT and raw["arch"] == ARCH and raw["plan"] is None
    loaded = checkpoint.load(path)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(loaded.model(x), model(x))
    assert loaded.meta["epoch"] == 3
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path, _ = saved(tmp_path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        checkpoint.save(path, checkpoint.build_model(ARCH), ARCH)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp"))


def test_truncated_checkpoint(tmp_path):
    path, _ = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load(path)
    assert "truncated" in checkpoint.peek(path)["error"]


def test_missing_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="directory"):
        checkpoint.load(tmp_path)


def test_arch_mismatch_names_the_tensor(tmp_path):
    path, _ = saved(tmp_path)
    raw = torch.load(path, weights_only=True)
    raw["arch"] = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.25})
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(path)
    assert "features.0.weight" in str(e.value) and "shape" in str(e.value)


def test_bare_and_dataparallel_state_dicts(tmp_path):
    model = checkpoint.build_model(ARCH).eval()
    bare = tmp_path / "bare.pth"
    torch.save(model.state_dict(), bare)
    with pytest.raises(CheckpointError, match="--arch"):
        checkpoint.load(bare)
    dp = tmp_path / "dp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, dp)
    for p in (bare, dp):
        loaded = checkpoint.load(p, arch=ARCH)
        x = torch.randn(1, 3, 32, 32)
        torch.testing.assert_close(loaded.model(x), model(x))


def test_pickled_module_needs_trust(tmp_path):
    model = checkpoint.build_model(ARCH).eval()
    path = tmp_path / "yolo_style.pt"
    torch.save({"model": model, "epoch": 1}, path)
    with pytest.raises(CheckpointError, match="--trust"):
        checkpoint.load(path)
    info = checkpoint.peek(path)
    assert info["needs_trust"] is True
    loaded = checkpoint.load(path, trust=True)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), model(x))


def test_peek_reads_without_building(tmp_path):
    path, model = saved(tmp_path)
    info = checkpoint.peek(path)
    assert info["format"] == checkpoint.FORMAT and info["epoch"] == 3
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["bn_layers"] == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_safetensors_files_are_read(tmp_path):
    import json
    import struct

    t = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b.running_var": torch.ones(3)}
    header, blobs, off = {}, b"", 0
    for k, v in t.items():
        raw = v.numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        blobs += raw
        off += len(raw)
    h = json.dumps(header).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(h)) + h + blobs)
    raw = checkpoint.read_raw(path)
    torch.testing.assert_close(raw["a"], t["a"])
    info = checkpoint.peek(path)
    assert info["format"] == "state_dict" and info["bn_layers"] == 1 and info["params"] == 6
