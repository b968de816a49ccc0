"""No import cycle between packserve's modules: each module can be read, tested and replaced
from the bottom up.

A short AST walk over ``src/packserve``: every import counts — top-level, lazy ones inside
functions, and type-only ones under ``TYPE_CHECKING`` (a cycle of annotations is still a cycle
for a reader). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else
to ``pkg``. A package's ``__init__`` is a module like any other; importing ``a.b.c`` does not
count as importing ``a.b`` (Python runs the parents' ``__init__`` first, but they are no
dependency of ``a.b.c``'s code).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "packserve"


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` as the package)."""
    out: dict[str, Path] = {}
    for path in sorted((src / ROOT).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """Absolute name of a (possibly relative) ``from`` import's base module."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The packserve modules ``module`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != module}


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    files = module_files(src)
    known = set(files)
    return {m: imports_of(m, p, known) for m, p in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def describe(cycle: list[str], graph: dict[str, set[str]]) -> str:
    """One component as its edges, e.g. ``a -> b``, so the fix is easy to find."""
    members = set(cycle)
    edges = [f"    {a} -> {b}" for a in cycle for b in sorted(graph[a] & members)]
    return "\n".join([" <-> ".join(cycle), *edges])


def test_the_walk_sees_lazy_relative_and_type_only_imports(tmp_path: Path) -> None:
    pkg = tmp_path / ROOT
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from packserve.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import X\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n"
    )
    (pkg / "sub" / "c.py").write_text("import packserve.a\nX = 1\n")
    graph = import_graph(tmp_path)
    assert graph["packserve.a"] == {"packserve.sub.b"}
    assert graph["packserve.sub"] == {"packserve.sub.c"}
    assert graph["packserve.sub.c"] == {"packserve.a"}
    assert find_cycles(graph) == [["packserve.a", "packserve.sub.b"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 50, "the walk found too few modules: wrong source path?"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in packserve:\n" + "\n".join(describe(c, graph) for c in cycles)
