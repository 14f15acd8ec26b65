"""What a file holds, told from its bytes before anything tries to load it.

torch.load on a file that is not a checkpoint fails in many ways (IndexError, KeyError: 101, a
zip-directory RuntimeError, or an UnpicklingError that reads like a request for trust). `sniff`
looks at the first bytes (and a zip's directory) and says what the file is: a PyTorch zip
checkpoint, a legacy torch.save pickle, safetensors, TorchScript, a plain Python pickle, text or
unknown bytes; and what is wrong with it when it cannot be a loadable checkpoint (truncated,
damaged). `pickle_check` walks a pickle's opcodes without executing any of them, to tell a
well-formed pickle that imports code from a damaged one. Torch-free.
"""

from __future__ import annotations

import io
import json
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CHECKPOINT_FORMAT = "slimlab/1"  # the `format` tag of a slimlab checkpoint (engine/checkpoint.py)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")
ONNX_SUFFIX = ".onnx"  # deployment files (engine/deploy), listed beside the checkpoints
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
# torch.save's legacy (non-zip) format starts with its magic number pickled with protocol 2
LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."
SAFETENSORS_MAX_HEADER = 100_000_000
SAFETENSORS_DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                           "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
TEXT_SAMPLE = 4096


@dataclass
class Sniffed:
    """`kind`: zip | legacy | safetensors | torchscript | pickle | zip-other | text | empty | unknown.

    `problem`: why it cannot be loaded as a checkpoint (None when it may be). For a zip
    checkpoint `pickle_name` is its data.pkl; for safetensors `header`/`data_start` are parsed."""

    kind: str
    problem: str | None = None
    pickle_name: str | None = None
    header: dict[str, Any] = field(default_factory=dict)
    data_start: int = 0


def sniff(path: Path) -> Sniffed:
    size = path.stat().st_size
    if size == 0:
        return Sniffed("empty", "not a checkpoint: the file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(TEXT_SAMPLE)
    if head.startswith(ZIP_MAGIC) or head.startswith(EMPTY_ZIP_MAGIC):
        return _sniff_zip(path, size)
    if head.startswith(LEGACY_MAGIC[:4]):
        if head.startswith(LEGACY_MAGIC) or len(head) < len(LEGACY_MAGIC) and LEGACY_MAGIC.startswith(head):
            problem = None if size > len(LEGACY_MAGIC) else "truncated: a legacy torch.save file that ends after its header"
            return Sniffed("legacy", problem)
    safetensors = _sniff_safetensors(path, head, size)
    if safetensors is not None:
        return safetensors
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return Sniffed("pickle", "a plain Python pickle (pickle.dump), not a torch.save file, so torch.load cannot read "
                                 "it; load it in Python and save its state_dict with torch.save")
    if looks_like_text(head):
        return Sniffed("text", "not a checkpoint (looks like text)")
    return Sniffed("unknown", "not a checkpoint (unknown bytes: neither a PyTorch zip or pickle, nor safetensors)")


def looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # a character cut at the end of the sample is fine
            return False
        text = head[: e.start].decode("utf-8")
    printable = sum(c.isprintable() or c in "\t\n\r\f" for c in text)
    return bool(text) and printable >= 0.95 * len(text)


def _sniff_zip(path: Path, size: int) -> Sniffed:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            ends = max((i.header_offset + 30 + len(i.filename.encode()) + i.compress_size for i in infos), default=0)
            if ends > size:
                return Sniffed("zip", f"truncated: its zip entries need {ends} bytes but the file has {size}; re-copy it")
            pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
                return Sniffed("torchscript", "a TorchScript archive (torch.jit.save), not a checkpoint: slimlab reads "
                                              "torch.save files (a slimlab checkpoint or a state_dict)")
            if not pkl:
                return Sniffed("zip-other", "a zip archive, but not a PyTorch checkpoint (no data.pkl inside)")
            try:
                z.read(pkl[0])  # reading it whole checks its CRC: the pickle is what could mislead
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
                return Sniffed("zip", f"damaged: {pkl[0]} inside fails to read ({e}); re-save or re-copy it")
            return Sniffed("zip", pickle_name=pkl[0])
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, struct.error) as e:
        return Sniffed("zip", f"truncated or damaged zip container ({e}): a partial copy or download? re-copy it")


def _sniff_safetensors(path: Path, head: bytes, size: int) -> Sniffed | None:
    """None unless the first bytes say safetensors (8-byte length, then a JSON object)."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    n = struct.unpack("<Q", head[:8])[0]
    if n < 2 or n > SAFETENSORS_MAX_HEADER:
        return None
    if 8 + n > size:
        return Sniffed("safetensors", f"truncated safetensors file: its header alone needs {8 + n} bytes, the file has {size}")
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        return Sniffed("safetensors", "damaged safetensors file: its JSON header does not parse")
    if not isinstance(header, dict):
        return Sniffed("safetensors", "damaged safetensors file: its header is not a JSON object")
    data = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        problem = _tensor_problem(name, info, data)
        if problem:
            return Sniffed("safetensors", problem)
    return Sniffed("safetensors", header=header, data_start=8 + n)


def _tensor_problem(name: str, info: Any, data: int) -> str | None:
    try:
        dtype, shape, (lo, hi) = info["dtype"], info["shape"], info["data_offsets"]
        if not (isinstance(lo, int) and isinstance(hi, int) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        return f"damaged safetensors file: the entry of tensor {name!r} is malformed"
    if dtype not in SAFETENSORS_DTYPE_SIZES:
        return f"safetensors tensor {name!r} has dtype {dtype}, which slimlab does not read"
    numel = 1
    for s in shape:
        numel *= s
    if not 0 <= lo <= hi or hi - lo != numel * SAFETENSORS_DTYPE_SIZES[dtype]:
        return f"damaged safetensors file: tensor {name!r} has {hi - lo} bytes for shape {shape} of {dtype}"
    if hi > data:
        return f"truncated safetensors file: tensor {name!r} ends at byte {hi} of the data, the file holds {data}"
    return None


# ---------------------------------------------------------------- pickles, without running them


@dataclass
class PickleCheck:
    well_formed: bool
    globals: list[str] = field(default_factory=list)  # module.name of everything it would import
    problem: str | None = None


def pickle_check(path: Path, sniffed: Sniffed) -> PickleCheck:
    """Walk the checkpoint's pickle opcode by opcode (nothing is imported or called)."""
    try:
        if sniffed.kind == "zip" and sniffed.pickle_name:
            with zipfile.ZipFile(path) as z:
                return _walk(io.BytesIO(z.read(sniffed.pickle_name)))
        if sniffed.kind == "legacy":
            with open(path, "rb") as f:
                for _ in range(3):  # magic number, protocol version, system info
                    check = _walk(f)
                    if not check.well_formed:
                        return check
                return _walk(f)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return PickleCheck(False, problem=str(e))
    return PickleCheck(False, problem=f"{sniffed.kind} files hold no torch pickle")


STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
GET_OPS = {"BINGET", "LONG_BINGET", "GET"}
PUT_OPS = {"BINPUT", "LONG_BINPUT", "PUT"}
NO_PUSH_OPS = {"MEMOIZE", "FRAME", "PROTO", "STOP", "MARK", "POP", "POP_MARK"} | PUT_OPS


def _walk(stream: IO[bytes]) -> PickleCheck:
    """Opcodes up to STOP; the names GLOBAL / STACK_GLOBAL would import (values followed only
    as far as strings pushed and memoized, which is how pickle writes a global's name)."""
    names: list[str] = []
    pushed: list[Any] = []  # what recent opcodes pushed: a string, or None for anything else
    memo: dict[int, Any] = {}
    try:
        for op, arg, _pos in pickletools.genops(stream):
            name = op.name
            if name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL":
                module, attr = (pushed[-2:] if len(pushed) > 1 else [None, None])
                names.append(f"{module or '?'}.{attr or '?'}")
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in PUT_OPS:
                memo[int(arg)] = pushed[-1] if pushed else None
            if name == "STOP":
                return PickleCheck(True, list(dict.fromkeys(names)))
            if name in STRING_OPS:
                pushed.append(arg)
            elif name in GET_OPS:
                pushed.append(memo.get(int(arg)))
            elif name not in NO_PUSH_OPS:
                pushed.append(None)
            del pushed[:-2]
    except Exception as e:  # genops raises ValueError and friends on any malformed byte
        return PickleCheck(False, problem=f"{type(e).__name__}: {e}")
    return PickleCheck(False, problem="the pickle ends before its STOP opcode")
