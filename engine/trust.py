"""What may run code: the trust rule for everything slimlab reads from disk.

Checkpoints, presets, run directories and plans are data. Two things in them could run code:
pickled Python objects (unpickling calls whatever the file names), and an architecture given
as `package.module:Class` (importing the module and calling the class runs its code, with
keyword arguments from the file). So:

- pickled objects load only when the user says so (`--trust`, or a confirmation);
- an architecture read from a file is built only if it is a registry form (a built-in name,
  `torchvision:<name>`, ...) or a `module:Class` the user named: in the preset they ran
  (`model.arch`, a stage's `model.arch`, `allow_archs`), with `--arch` / `--allow-arch`, in a
  confirmation that showed it, or under `--trust` ("I trust this file");
- and what is called must be an `nn.Module` class (checked by the registry before the call).

A run directory's spec.yaml is the preset the user ran, so its architectures count as named
by the user, but only when this user wrote it: the run signs spec.yaml with a key kept in the
user's state folder (`spec.sig`), and a folder copied from elsewhere fails the check.
Torch-free: the workbench and the config code use it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.models import catalog

SIGNATURE_FILE = "spec.sig"
_SIG_PREFIX = "hmac-sha256:"


def is_module_class(arch: Any) -> bool:
    """True for `package.module:Class`: a name whose building imports and calls user code."""
    return isinstance(arch, str) and catalog.is_external(arch)


@dataclass(frozen=True)
class Trust:
    """What the user said may run code while files are read.

    `pickles`: unpickling objects is allowed. `archs`: `module:Class` names the user named.
    `any_arch`: every `module:Class` a file names may be built (`--trust`).
    """

    pickles: bool = False
    archs: frozenset[str] = field(default_factory=frozenset)
    any_arch: bool = False

    @classmethod
    def everything(cls) -> Trust:
        """`--trust`: the user vouches for the files themselves."""
        return cls(pickles=True, any_arch=True)

    @classmethod
    def of(cls, value: Trust | bool | None) -> Trust:
        if isinstance(value, Trust):
            return value
        return cls.everything() if value else cls()

    def allowing(self, *names: str | None) -> Trust:
        """This trust plus the `module:Class` names given (others are ignored)."""
        extra = {n for n in names if is_module_class(n)}
        if not extra or extra <= self.archs:
            return self
        return Trust(self.pickles, self.archs | frozenset(extra), self.any_arch)

    def permits_arch(self, arch: str) -> bool:
        """Registry forms always; a `module:Class` only when the user named it."""
        if not is_module_class(arch):
            return True
        return self.any_arch or arch in self.archs


def spec_archs(spec: Any) -> list[str]:
    """The `module:Class` names a RunSpec names itself (model, stages' models, allow_archs)."""
    models = [spec.model] + [s.model for s in spec.stages if getattr(s, "model", None) is not None]
    names = [m.arch for m in models]
    names += [ref for m in models for ref in catalog.class_refs(getattr(m, "kwargs", {}) or {})]  # e.g. a block
    names += list(getattr(spec, "allow_archs", []) or [])
    return [n for n in dict.fromkeys(names) if is_module_class(n)]


def from_spec(spec: Any, base: Trust | None = None) -> Trust:
    """`base` plus the architectures the (user's own) spec names."""
    return (base or Trust()).allowing(*spec_archs(spec))


def describe_arch(name: str, kwargs: dict | None) -> str:
    """`pkg.mod:Class(a=1, b='x')`: what a confirmation shows, exactly."""
    args = ", ".join(f"{k}={v!r}" for k, v in (kwargs or {}).items())
    return f"{name}({args})"


# ---------------------------------------------------------------- signing run directories


def state_dir() -> Path:
    """Where the signing key lives: $SLIMLAB_STATE_DIR, else $XDG_STATE_HOME/slimlab, else ~/.local/state/slimlab."""
    env = os.environ.get("SLIMLAB_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "slimlab"


def _key(create: bool) -> bytes | None:
    path = state_dir() / "spec.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        if not create:
            return None
    except (OSError, ValueError):
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # readable by this user only
    except FileExistsError:  # another process made it first
        return _key(create=False)
    except OSError:
        return None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return _key(create=False)


def _digest(key: bytes, data: bytes) -> str:
    return _SIG_PREFIX + hmac.new(key, data, hashlib.sha256).hexdigest()


def sign_spec(run_dir: Path) -> bool:
    """Sign run_dir/spec.yaml as written by this user; False when no key can be kept."""
    from engine.atomic import atomic_file

    key = _key(create=True)
    if key is None:
        return False
    data = (Path(run_dir) / "spec.yaml").read_bytes()
    with atomic_file(Path(run_dir) / SIGNATURE_FILE, "w") as f:
        f.write(_digest(key, data) + "\n")
    return True


def spec_signed(run_dir: Path) -> bool:
    """True when run_dir/spec.yaml is exactly what this user's slimlab wrote."""
    key = _key(create=False)
    if key is None:
        return False
    try:
        sig = (Path(run_dir) / SIGNATURE_FILE).read_text().strip()
        data = (Path(run_dir) / "spec.yaml").read_bytes()
    except OSError:
        return False
    return hmac.compare_digest(sig, _digest(key, data))


def unsigned_archs(run_dir: Path, spec: Any, trust: Trust) -> list[str]:
    """The `module:Class` names of a run's spec.yaml that may not be built under `trust`.

    Empty when the spec is signed by this user (it is the preset they ran)."""
    if spec_signed(run_dir):
        return []
    return [a for a in spec_archs(spec) if not trust.permits_arch(a)]


def arch_names(values: Iterable[str]) -> list[str]:
    """Validate `--allow-arch` values: each must be a `package.module:Class`."""
    out = []
    for v in values:
        if not is_module_class(v) or v.count(":") != 1 or not all(v.split(":")):
            raise ValueError(f"--allow-arch {v!r}: expected package.module:Class")
        out.append(v)
    return out
