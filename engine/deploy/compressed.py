"""The compressed weights file: sparse, weight-shared conv/linear layers stored as bits, in a zip.

A zip archive (DEFLATE), readable without running code:
- `header.json`: format, arch, plan, meta, bits, and every tensor's shape and encoding;
- per shared layer `<name>.mask.npy` (one bit per weight: nonzero or not, packed),
  `<name>.codes.npy` (the nonzero weights' cluster indices, `bits` bits each, packed) and
  `<name>.codebook.npy` (the 2**bits shared float32 values);
- every other tensor (biases, BatchNorm parameters and statistics) as `<name>.npy`.
Reloading decodes the layers to dense tensors and rebuilds the model as a checkpoint does
(build arch, apply plan, load state_dict), so the same trust rule applies to its arch.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.atomic import atomic_file
from engine.errors import DeployError

FORMAT = "slimlab-compressed/1"


@dataclass
class Shared:
    """One layer's weights as stored: nonzero mask, codes of the nonzero weights, codebook."""

    shape: tuple[int, ...]
    mask: np.ndarray  # bool, flat
    codes: np.ndarray  # uint8/uint16 per nonzero weight
    codebook: np.ndarray  # float32

    def decode(self) -> np.ndarray:
        dense = np.zeros(self.mask.size, np.float32)
        dense[self.mask] = self.codebook[self.codes]
        return dense.reshape(self.shape)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint16)
    return np.packbits(((codes.astype(np.uint16)[:, None] >> shifts) & 1).astype(np.uint8))


def _unpack_codes(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    flat = np.unpackbits(packed)[: n * bits].reshape(n, bits).astype(np.uint16)
    return (flat << np.arange(bits - 1, -1, -1, dtype=np.uint16)).sum(axis=1).astype(np.uint16)


def save(path: str | Path, state: dict[str, torch.Tensor], shared: dict[str, Shared], *, bits: int,
         arch: dict, plan: dict | None, meta: dict) -> int:
    """Write the compressed file atomically; returns its size in bytes."""
    tensors: dict[str, Any] = {}
    entries: list[tuple[str, bytes]] = []
    for name, t in state.items():
        if name in shared:
            s = shared[name]
            tensors[name] = {"kind": "shared", "shape": list(s.shape), "nonzero": int(s.mask.sum()),
                             "codebook": int(s.codebook.size)}
            entries += [(f"{name}.mask.npy", _npy(np.packbits(s.mask))),
                        (f"{name}.codes.npy", _npy(_pack_codes(s.codes, bits))),
                        (f"{name}.codebook.npy", _npy(s.codebook.astype(np.float32)))]
        else:
            array = t.detach().cpu().numpy()
            tensors[name] = {"kind": "dense", "shape": list(array.shape), "dtype": str(array.dtype)}
            entries.append((f"{name}.npy", _npy(array)))
    header = {"format": FORMAT, "bits": bits, "arch": arch, "plan": plan, "meta": meta, "tensors": tensors}
    with atomic_file(path, "wb", durable=True) as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            z.writestr("header.json", json.dumps(header, default=str))
            for name, data in entries:
                z.writestr(name, data)
    return Path(path).stat().st_size


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, dense state_dict) of a compressed file; np.load never unpickles here."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            header = json.loads(z.read("header.json"))
            if header.get("format") != FORMAT:
                raise DeployError(f"{path}: not a slimlab compressed file (format {header.get('format')!r})")
            bits = int(header["bits"])
            state = {}
            for name, info in header["tensors"].items():
                if info["kind"] == "shared":
                    shape = tuple(info["shape"])
                    size = int(np.prod(shape))
                    mask = np.unpackbits(_load(z, f"{name}.mask.npy"))[:size].astype(bool)
                    codes = _unpack_codes(_load(z, f"{name}.codes.npy"), bits, int(info["nonzero"]))
                    dense = Shared(shape, mask, codes, _load(z, f"{name}.codebook.npy")).decode()
                    state[name] = torch.from_numpy(dense)
                else:
                    state[name] = torch.from_numpy(_load(z, f"{name}.npy").copy())
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise DeployError(f"{path}: not a readable compressed file ({type(e).__name__}: {e})") from None
    return header, state


def _load(z: zipfile.ZipFile, name: str) -> np.ndarray:
    return np.load(io.BytesIO(z.read(name)), allow_pickle=False)


def load(path: str | Path, *, trust: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """(model rebuilt with the decoded weights, header)."""
    from engine import checkpoint

    header, state = read(path)
    model = checkpoint.rebuild(header["arch"], header.get("plan"), state, source=str(path), trust=trust)
    return model, header
