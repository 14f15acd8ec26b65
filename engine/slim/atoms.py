"""Channel atoms: the smallest things pruning can remove, and which of them must go together.

Every output channel of a conv or linear layer (and every channel of the model input, and every
element of a parameter used outside such a layer) is an atom. Tracing couples atoms that must be
cut together (a residual add, a depthwise conv, the same position in every group of a grouped
conv) with a union-find, and freezes atoms that can never be cut (model outputs, channels reduced
over, sliced at fixed positions), each with the reason.

Labels are int64 tensors naming, for every element of an activation, the atom its channel belongs
to (-1 for constants). They are kept compact: size 1 along every dimension the label does not vary
along (spatial and batch dimensions, almost always), so tracing stays cheap at any input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NONE = -1  # label of a constant (a tensor made inside forward from no model tensor)

# A freeze reason's priority: the lowest one found in a class of atoms is the one reported.
OUTPUT, STRUCTURE = 0, 1


class Atoms:
    """Union-find over atom ids, with the reason each frozen atom can never be cut."""

    def __init__(self) -> None:
        self.parent = np.zeros(1024, dtype=np.int64)
        self.reason = np.full(1024, -1, dtype=np.int64)  # index into self.reasons, per atom
        self.n = 0
        self.reasons: list[tuple[int, str]] = []
        self._reason_ids: dict[tuple[int, str], int] = {}

    def new(self, count: int) -> np.ndarray:
        """`count` fresh atoms, each in its own class."""
        need = self.n + count
        if need > self.parent.size:
            size = max(need, 2 * self.parent.size)
            self.parent = np.concatenate([self.parent, np.zeros(size - self.parent.size, np.int64)])
            self.reason = np.concatenate([self.reason, np.full(size - self.reason.size, -1, np.int64)])
        ids = np.arange(self.n, need, dtype=np.int64)
        self.parent[ids] = ids
        self.n = need
        return ids

    def find(self, ids: np.ndarray) -> np.ndarray:
        """The class representative (root) of each id; NONE stays NONE."""
        ids = np.asarray(ids, dtype=np.int64)
        out = ids.copy()
        valid = ids >= 0
        if not valid.any():
            return out
        r = self.parent[ids[valid]]
        while True:  # path halving: every node visited now points two steps higher
            p = self.parent[r]
            if np.array_equal(p, r):
                break
            pp = self.parent[p]
            self.parent[r] = pp
            r = pp
        self.parent[ids[valid]] = r
        out[valid] = r
        return out

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Put a[i] and b[i] in one class, for every i where both are atoms."""
        a = np.asarray(a, dtype=np.int64).ravel()
        b = np.asarray(b, dtype=np.int64).ravel()
        keep = (a >= 0) & (b >= 0) & (a != b)
        a, b = a[keep], b[keep]
        if a.size > 64:
            pairs = np.unique(np.stack([a, b], 1), axis=0)
            a, b = pairs[:, 0], pairs[:, 1]
        while a.size:
            ra, rb = self.find(a), self.find(b)
            differ = ra != rb
            if not differ.any():
                return
            lo, hi = np.minimum(ra[differ], rb[differ]), np.maximum(ra[differ], rb[differ])
            # every root takes its smallest partner at once: one atom coupled with thousands (a
            # single-channel tensor added to a wide one) links in two rounds, not thousands
            np.minimum.at(self.parent, hi, lo)
            a, b = a[differ], b[differ]

    def freeze(self, ids: np.ndarray, reason: str, priority: int = STRUCTURE) -> None:
        """Mark atoms as never cut (their whole class with them), recording why."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ids = np.unique(ids[ids >= 0])
        if not ids.size:
            return
        key = (priority, reason)
        rid = self._reason_ids.get(key)
        if rid is None:
            rid = self._reason_ids[key] = len(self.reasons)
            self.reasons.append(key)
        have = self.reason[ids]
        prio = np.array([r[0] for r in self.reasons], dtype=np.int64)
        better = (have < 0) | (prio[np.maximum(have, 0)] > priority)
        self.reason[ids[better]] = rid

    def class_reasons(self) -> dict[int, str]:
        """Root -> the reason its class is frozen (lowest priority, then earliest recorded)."""
        atoms = np.flatnonzero(self.reason[: self.n] >= 0)
        if not atoms.size:
            return {}
        roots = self.find(atoms)
        rids = self.reason[atoms]
        prio = np.array([self.reasons[r][0] for r in rids], dtype=np.int64)
        order = np.lexsort((rids, prio, roots))
        out: dict[int, str] = {}
        for i in order:
            out.setdefault(int(roots[i]), self.reasons[int(rids[i])][1])
        return out


@dataclass
class Lab:
    """Labels of one tensor: `c` compact (size 1 where the labels do not vary), `shape` the tensor's."""

    c: torch.Tensor
    shape: tuple[int, ...]

    @property
    def full(self) -> torch.Tensor:
        return self.c.expand(self.shape)

    def varying(self) -> list[int]:
        return [d for d, s in enumerate(self.c.shape) if s > 1]

    def atoms(self) -> np.ndarray:
        a = self.c.numpy().ravel()
        return np.unique(a[a >= 0])

    @property
    def labelled(self) -> bool:
        return bool((self.c >= 0).any())


def const(shape: tuple[int, ...]) -> Lab:
    return Lab(torch.full((1,) * len(shape), NONE, dtype=torch.int64), tuple(shape))


def single(atom: int, shape: tuple[int, ...]) -> Lab:
    return Lab(torch.full((1,) * len(shape), int(atom), dtype=torch.int64), tuple(shape))


def along(atoms: np.ndarray, dim: int, shape: tuple[int, ...]) -> Lab:
    """Labels that vary along `dim` only (one atom per channel)."""
    size = [1] * len(shape)
    size[dim] = len(atoms)
    return Lab(torch.from_numpy(np.asarray(atoms, dtype=np.int64)).reshape(size), tuple(shape))


def compact(t: torch.Tensor, shape: tuple[int, ...] | None = None) -> Lab:
    """Labels from any (possibly expanded) tensor, shrunk to size 1 along dimensions they do not vary on."""
    shape = tuple(t.shape) if shape is None else tuple(shape)
    t = t.expand(shape) if tuple(t.shape) != shape else t
    a = t.numpy()  # labels are small int64 arrays: numpy's per-call cost is far below torch's
    for d in range(a.ndim):
        if a.shape[d] <= 1:
            continue
        first = a[(slice(None),) * d + (slice(0, 1),)]
        if a.strides[d] == 0 or np.array_equal(np.broadcast_to(first, a.shape), a):
            a = first
    return Lab(torch.from_numpy(np.ascontiguousarray(a)), shape)


def reroot(lab: Lab, atoms: Atoms) -> Lab:
    """Labels naming class roots, compacted again (unions may make a dimension constant)."""
    flat = lab.c.numpy().ravel()
    roots = atoms.find(flat).reshape(lab.c.shape)
    return compact(torch.from_numpy(roots), lab.shape)
