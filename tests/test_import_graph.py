"""The import graph of engine/ and tui/ has no circles, and no module imports another's private names.

Imports are read from the source (ast), wherever they stand: module level, inside functions, under
`if TYPE_CHECKING:`. A circle means two modules that cannot be understood (or moved) one without
the other; a private name imported elsewhere is an interface nobody declared.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOTS = ("engine", "tui")


def module_files() -> dict[str, Path]:
    """Module name -> file, for every first-party module (a package is its __init__.py)."""
    found = {}
    for root in ROOTS:
        for path in sorted(Path(root).rglob("*.py")):
            parts = list(path.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every first-party import in `path`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] in ROOTS]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.split(".")[0] not in ROOTS:
                continue
            names = []
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in modules:  # `from engine import data`: the module engine.data
                    out.append((sub, [], node.lineno))
                else:
                    names.append(a.name)
            if names:
                out.append((base, names, node.lineno))
    return out


def graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, list[str], int]]]]:
    modules = module_files()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    found = {}
    for name, path in modules.items():
        found[name] = imports_of(path, name, modules)
        edges[name] |= {target for target, _, _ in found[name] if target in modules and target != name}
    return edges, found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest circle through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [shortest_circle(edges, comp) for comp in components]


def shortest_circle(edges: dict[str, set[str]], comp: list[str]) -> list[str]:
    inside = set(comp)
    best: list[str] = comp + comp  # longer than any circle inside
    for start in comp:
        paths = {start: [start]}
        frontier = [start]
        while frontier:
            nxt = []
            for v in frontier:
                for w in sorted(edges[v] & inside):
                    if w == start and len(paths[v]) + 1 < len(best):
                        best = paths[v] + [start]
                    if w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
            frontier = nxt
    return best


def test_no_import_circles():
    edges, _ = graph()
    found = cycles(edges)
    assert not found, "import circles:\n" + "\n".join("  " + " -> ".join(c) for c in found)


def private_imports(found: dict[str, list[tuple[str, list[str], int]]]) -> list[str]:
    return [f"{name}:{line}: from {target} import {n}" for name, imports in found.items()
            for target, names, line in imports for n in names if n.startswith("_") and not n.startswith("__")]


def test_no_private_names_imported_from_another_module():
    _, found = graph()
    offenders = private_imports(found)
    assert not offenders, "private names imported:\n" + "\n".join("  " + o for o in offenders)


def test_the_reader_sees_a_private_import_wherever_it_stands(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine.a import _hidden\n"
                      "def f():\n    from . import b\n    from engine.a import shown, _other\n")
    modules = {"engine.a": tmp_path / "a.py", "engine.pkg.b": tmp_path / "b.py"}
    found = imports_of(source, "engine.pkg.m", modules)
    assert ("engine.pkg.b", [], 5) in found
    assert private_imports({"engine.pkg.m": found}) == ["engine.pkg.m:3: from engine.a import _hidden",
                                                        "engine.pkg.m:6: from engine.a import _other"]


def test_the_reader_sees_a_circle():
    """The checks above can fail: a made-up circle is found, the shortest way round."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert cycles({"a": {"b", "c"}, "b": {"a"}, "c": {"b"}}) == [["a", "b", "a"]]
