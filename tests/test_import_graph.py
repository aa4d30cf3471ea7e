"""The import graph of `edge_runtime` has no cycle.

Two graphs are checked. The module-level one counts only the imports executed when a module is
first imported: statements at module top level, including those inside top-level
`if`/`try`/`with` blocks and class bodies, but not those inside functions, and not those under
`if TYPE_CHECKING:`; a cycle there makes the import order matter. The full one also counts the
imports deferred into functions: a deferred import keeps a heavy dependency off the import path,
but a cycle through one still means two layers depend on each other (round 1's config -> nodes ->
models/select -> models/profiler -> config was such a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "edge_runtime"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module):
    """Import statements run at import time (not in functions, not under TYPE_CHECKING)."""
    stack = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                stack.extend(reversed(node.body))
            stack.extend(reversed(node.orelse))
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            for block in (node.body, node.orelse, node.finalbody):
                stack.extend(reversed(block))
            for handler in node.handlers:
                stack.extend(reversed(handler.body))
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            stack.extend(reversed(node.body))
        elif isinstance(node, ast.ClassDef):
            # a class body runs at import time; its methods do not
            stack.extend(reversed(node.body))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    # a module's package is its name minus the last part; a package is its own package
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _all_imports(tree: ast.Module):
    """Every import statement, deferred ones included (still not those under TYPE_CHECKING)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skipped.update(id(n) for b in node.body for n in ast.walk(b))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
            yield node


def _edges(modules: dict[str, Path], imports=_top_level_imports) -> dict[str, set[str]]:
    """module -> the `edge_runtime` modules it imports at top level.

    `import a.b.c` and `from a.b import c` also import the packages `a` and `a.b`; importing a
    package runs its `__init__`, so those count as edges too.
    """
    graph: dict[str, set[str]] = {m: set() for m in modules}

    def add(src: str, target: str, explicit: bool = True) -> None:
        # the target and every package above it (each __init__ runs), except the packages that
        # hold src: they are already being imported when src runs, so naming a sibling through
        # them (`from .sibling import x`) is no edge to them
        ancestors = {".".join(src.split(".")[:i]) for i in range(1, src.count(".") + 1)}
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in modules or name == src:
                continue
            if name in ancestors and not (explicit and name == target):
                continue
            graph[src].add(name)

    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in imports(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        add(name, alias.name)
                continue
            target = _resolve(name, is_package, node)
            if target.split(".")[0] != PACKAGE:
                continue
            # `from . import x`: x is a submodule (an edge to it) or a name defined in target's
            # module (an edge to target itself)
            names_in_target = False
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    add(name, sub, explicit=False)
                else:
                    names_in_target = True
            add(name, target, explicit=names_in_target)
    return graph


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
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

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(components)


def _find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path (shortest through its first module) per component that has a cycle."""
    cycles = []
    for comp in _components(graph):
        members = set(comp)
        start = comp[0]
        # shortest path from start back to start inside the component (BFS)
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v != start:
            path.append(v)
            v = prev[v]
        path.append(start)
        path[1:-1] = reversed(path[1:-1])
        cycles.append(path)
    return cycles


def test_graph_sees_the_package():
    """The walker finds the modules and their edges (a test that would pass on an empty graph
    would not be a test)."""
    modules = _modules()
    graph = _edges(modules)
    assert "edge_runtime.engine" in modules
    assert "edge_runtime.nodes" in modules
    # nodes/denoise.py: `from .model import ModelNode`, `from ..spectral import ...`
    assert {"edge_runtime.nodes.model", "edge_runtime.spectral"} <= graph["edge_runtime.nodes.denoise"]
    # ... and reaching a sibling through the package is no edge to the package
    assert "edge_runtime.nodes" not in graph["edge_runtime.nodes.denoise"]


def test_cycle_finder_reports_a_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycles(graph) == [["a", "b", "c", "a"]]
    assert _find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    "module, is_package, source, expected",
    [
        ("edge_runtime.nodes.vad", False, "from . import x", "edge_runtime.nodes"),
        ("edge_runtime.nodes", True, "from . import x", "edge_runtime.nodes"),
        ("edge_runtime.nodes.vad", False, "from ..models import y", "edge_runtime.models"),
        ("edge_runtime.models", True, "from ..state import z", "edge_runtime.state"),
    ],
)
def test_relative_imports_resolve(module, is_package, source, expected):
    node = ast.parse(source).body[0]
    assert _resolve(module, is_package, node) == expected


def test_deferred_imports_are_seen():
    graph = _edges(_modules(), _all_imports)
    # nodes/model.py resolves variants in a method: `from ..models.select import resolve_variants`
    assert "edge_runtime.models.select" in graph["edge_runtime.nodes.model"]
    assert "edge_runtime.models.select" not in _edges(_modules())["edge_runtime.nodes.model"]


def _describe(graph) -> str:
    return "\n".join(f"{' -> '.join(c)}\n  (all {len(m)} modules of that circle: {', '.join(m)})"
                     for c, m in zip(_find_cycles(graph), _components(graph)))


def test_no_import_cycle_inside_edge_runtime():
    graph = _edges(_modules())
    cycles = _find_cycles(graph)
    message = _describe(graph)
    assert not cycles, f"module-level import cycles in {PACKAGE}:\n{message}"


# Deferred imports that may close a cycle, as (importer, imported) pairs, each with the reason it
# cannot go; none today. Prefer moving the function to the layer that owns it.
ALLOWED_DEFERRED_EDGES: set[tuple[str, str]] = set()


def test_no_import_cycle_counting_deferred_imports():
    graph = _edges(_modules(), _all_imports)
    for src, dst in ALLOWED_DEFERRED_EDGES:
        graph[src].discard(dst)
    cycles = _find_cycles(graph)
    message = _describe(graph)
    assert not cycles, (f"import cycles in {PACKAGE} through imports inside functions:\n{message}\n"
                        "(move the function to the module that owns it, or into a leaf module both import)")
