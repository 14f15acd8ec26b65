"""The union-find under channel tracing: same classes as a plain one, stars and chains included, and
freeze reasons by priority."""

from __future__ import annotations

import numpy as np

from engine.slim.atoms import OUTPUT, Atoms


def reference_classes(n: int, pairs: list[tuple[int, int]]) -> list[frozenset[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    classes: dict[int, set[int]] = {}
    for x in range(n):
        classes.setdefault(find(x), set()).add(x)
    return sorted(frozenset(c) for c in classes.values())


def classes_of(atoms: Atoms, n: int) -> list[frozenset[int]]:
    roots = atoms.find(np.arange(n))
    found: dict[int, set[int]] = {}
    for x, r in enumerate(roots):
        found.setdefault(int(r), set()).add(x)
    return sorted(frozenset(c) for c in found.values())


def test_random_unions_match_a_plain_union_find():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 300))
        atoms = Atoms()
        atoms.new(n)
        pairs = []
        for _ in range(int(rng.integers(1, 6))):
            a, b = rng.integers(0, n, 40), rng.integers(0, n, 40)
            atoms.union(a, b)
            pairs += list(zip(a.tolist(), b.tolist(), strict=True))
        assert classes_of(atoms, n) == reference_classes(n, pairs), trial


def test_a_star_and_a_chain_of_twenty_thousand_atoms_merge():
    n = 20_000
    star, chain = Atoms(), Atoms()
    ids = star.new(n)
    hub = star.new(1)
    star.union(np.repeat(hub, n), ids)  # one atom coupled with every channel of a wide tensor
    chain.new(n)
    chain.union(np.arange(n - 1), np.arange(1, n))
    assert len(set(star.find(np.arange(n + 1)).tolist())) == 1
    assert len(set(chain.find(np.arange(n)).tolist())) == 1


def test_constants_are_never_coupled_and_outputs_win_the_reason():
    atoms = Atoms()
    ids = atoms.new(3)
    atoms.union(np.array([0, -1]), np.array([1, 2]))
    assert atoms.find(np.array([-1, 2])).tolist() == [-1, 2]
    atoms.freeze(ids[:1], "sliced at fixed positions")
    atoms.freeze(ids[1:2], "they are model outputs", OUTPUT)
    assert atoms.class_reasons() == {0: "they are model outputs"}
