"""Property test: whatever bytes a file holds, loading it is a CheckpointError or a model.

Seeds (slimlab, bare, legacy-format and safetensors checkpoints; pickles with code; text; random
bytes) are cut at random points, flipped, overwritten and spliced. For every file: `load` and
`peek` never raise anything but a CheckpointError, never run code, and suggest --trust only for
a well-formed pickle that needs code (told by an independent unpickler that imports nothing).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from torch._weights_only_unpickler import _get_allowed_globals

from engine import checkpoint
from engine.errors import CheckpointError

ARCH = checkpoint.arch_dict("kd_student", 3, 3, {"bn": True})
MARKER_NAME = "CODE_RAN"
MUTANTS_PER_SEED = 60


class RunsCode:
    """Unpickling this calls os.system: the marker file appears if anything runs it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    header, blobs, off = {}, b"", 0
    for k, v in tensors.items():
        raw = v.numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        blobs += raw
        off += len(raw)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blobs


def seeds(tmp: Path) -> dict[str, bytes]:
    model = checkpoint.build_model(ARCH)
    marker = tmp / MARKER_NAME
    small = {k: v for k, v in list(model.state_dict().items())[:6]}

    def saved(obj, **kw) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf, **kw)
        return buf.getvalue()

    path = tmp / "slimlab.pt"
    checkpoint.save(path, model, ARCH, meta={"epoch": 1})
    return {
        "slimlab": path.read_bytes(),
        "bare": saved(small),
        "legacy": saved(small, _use_new_zipfile_serialization=False),
        "module": saved(model),
        "code": saved({"state_dict": small, "extra": RunsCode(marker)}),
        "legacy_code": saved({"x": RunsCode(marker)}, _use_new_zipfile_serialization=False),
        "plain_pickle": pickle.dumps(RunsCode(marker)),
        "safetensors": safetensors_bytes({k: v.float() for k, v in small.items() if v.is_floating_point()}),
        "text": b"model:\n  arch: vgg\ntraining:\n  lr: 0.1\n" * 40,
        "random": random.Random(1).randbytes(50_000),
    }


def mutants(name: str, data: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    out = [(f"{name}", data)]
    for i in range(MUTANTS_PER_SEED):
        b = bytearray(data)
        how = i % 6
        if how == 0:  # cut at a random point: a partial copy or download
            b = b[: rng.randrange(len(b))]
        elif how == 1:  # a few flipped bits
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif how == 2:  # a window of garbage
            p = rng.randrange(len(b))
            b[p : p + 32] = rng.randbytes(32)
        elif how == 3:  # bytes inserted: everything after shifts
            p = rng.randrange(len(b))
            b[p:p] = rng.randbytes(rng.randint(1, 64))
        elif how == 4:  # damage inside the pickle, where it misleads most
            b = _mutate_pickle(b, rng)
        else:  # cut inside the first kilobyte: headers only
            b = b[: rng.randrange(1, min(len(b), 1024))]
        out.append((f"{name}#{i}", bytes(b)))
    return out


def _mutate_pickle(b: bytearray, rng: random.Random) -> bytearray:
    """Change bytes inside a zip's data.pkl (its first entry), else anywhere."""
    lo, hi = 0, len(b)
    if b[:4] == b"PK\x03\x04" and len(b) > 30:
        size, = struct.unpack("<I", b[18:22])
        n, extra = struct.unpack("<HH", b[26:30])
        if b[30 : 30 + n].endswith(b"data.pkl"):
            lo = 30 + n + extra
            hi = min(len(b), lo + size)
    for _ in range(rng.randint(1, 4)):
        b[rng.randrange(lo, max(lo + 1, hi))] = rng.randrange(256)
    return b


# ---------------------------------------------------------------- the oracle


class _Stub:
    """Stands in for any imported global: calls, state and items are accepted and ignored."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Stub()

    def __setstate__(self, state):
        pass

    def __setitem__(self, k, v):
        pass

    def append(self, v):
        pass

    def extend(self, v):
        pass


class _Recorder(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.names: list[str] = []

    def find_class(self, module, name):
        self.names.append(f"{module}.{name}")
        return _Stub

    def persistent_load(self, pid):
        return None


def needs_code(data: bytes) -> bool:
    """A torch.save file whose pickle parses whole and imports something weights_only refuses."""
    try:
        if data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
                streams = [io.BytesIO(z.read(name))]
        else:
            streams = [io.BytesIO(data)]
        f = streams[0]
        if data[:4] != b"PK\x03\x04":
            for _ in range(3):  # legacy: magic number, protocol, system info
                pickle.Unpickler(f).load()
        rec = _Recorder(f)
        rec.load()
    except Exception:
        return False
    allowed = set(_get_allowed_globals())
    return any(n not in allowed and n.replace("__builtin__.", "builtins.") not in allowed for n in rec.names)


# ---------------------------------------------------------------- the property


def test_any_bytes_give_a_checkpoint_error_or_a_model_and_never_run_code(tmp_path):
    rng = random.Random(8)
    suggested, cases = [], 0
    for name, data in seeds(tmp_path).items():
        for label, blob in mutants(name, data, rng):
            path = tmp_path / "case.pt"
            path.write_bytes(blob)
            cases += 1
            for arch in (None, ARCH):  # as a checkpoint, and as a state_dict of a known arch
                try:
                    checkpoint.load(path, arch=arch)
                except CheckpointError as e:
                    if "--trust" in str(e):
                        assert needs_code(blob), f"{label}: --trust suggested for a file that is not a pickle needing code: {e}"
                        suggested.append(label)
                except Exception as e:  # noqa: BLE001 - the property under test
                    pytest.fail(f"{label}: {type(e).__name__} escaped: {e}")
            info = checkpoint.peek(path)
            assert info["size"] == len(blob), label
            assert not (tmp_path / MARKER_NAME).exists(), f"{label}: code ran"
    assert cases > 200
    # the intact pickles with code are told apart from the intact files without
    assert {"module", "code", "legacy_code"} <= set(suggested)
    assert not {"slimlab", "bare", "legacy", "plain_pickle", "text", "random"} & set(suggested)


def test_garbage_is_named_for_what_it_looks_like(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes\n" * 500)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(random.Random(0).randbytes(200_000))
    for path, expected in ((text, "not a checkpoint (looks like text)"), (junk, "not a checkpoint (unknown bytes")):
        with pytest.raises(CheckpointError, match=re.escape(expected)) as e:
            checkpoint.load(path)
        assert "--trust" not in str(e.value)
        info = checkpoint.peek(path)
        assert expected in info["error"] and info["size"] == path.stat().st_size and not info["needs_trust"]


def test_truncated_safetensors_and_zip_say_truncated(tmp_path):
    data = safetensors_bytes({"a.weight": torch.ones(64, 64)})
    st = tmp_path / "w.safetensors"
    st.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated safetensors"):
        checkpoint.load(st)
    path = tmp_path / "m.pt"
    checkpoint.save(path, checkpoint.build_model(ARCH), ARCH)
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load(path)
