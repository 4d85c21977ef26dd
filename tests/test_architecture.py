"""Imports flow one way (issue 21), checked from the source: the fetch layer knows no storage, and
no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"

ORCHESTRATION = {"app.job", "app.runner", "app.__main__", "app.demo", "app.involve_asia"}
"""Modules that wire the fetch layer to storage: they may import both."""
FETCH_ROOTS = {"app.http", "app.api"}
STORING = ("app.sinks", "app.store", "app.output", "app.writer")
STORING_WORDS = ("layout", "snapshot", "result")


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """Every app module `path` imports, at module level or inside a function (lazy imports count:
    they run), leaving out `if TYPE_CHECKING:` blocks (they never run). `from package import
    submodule` depends on the submodule, not on the package's `__init__`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(base)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in APP.rglob("*.py")}
    return {name: {m for m in _imports(path, name, set(modules)) if m in modules and m != name}
            for name, path in modules.items()}


def _stores(module: str) -> bool:
    return module.startswith(STORING) or any(word in module.rpartition(".")[2]
                                             for word in STORING_WORDS)


def test_the_fetch_layer_imports_no_module_that_stores() -> None:
    """No module importing app.http or app.api, orchestration aside, imports (even through
    others) a module that stores: sinks, store, output, writer, or one named for layout,
    snapshots or results."""
    graph = _graph()

    def reach(module: str) -> set[str]:
        seen: set[str] = set()
        todo = [module]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    offenders = {module: sorted(m for m in reach(module) if _stores(m))
                 for module, imported in graph.items()
                 if module not in ORCHESTRATION and imported & FETCH_ROOTS}
    assert {m: s for m, s in offenders.items() if s} == {}


def test_no_import_cycles() -> None:
    """The app's import graph (lazy imports included) has no cycle."""
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt] if nxt in path else [module, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checker_sees_a_storing_import() -> None:
    """The graph is real: app.job imports app.fetch and app.store, and app.fetch imports
    app.http."""
    graph = _graph()
    assert {"app.store", "app.api"} & graph["app.job"]
    assert "app.http" in graph["app.fetch"] or "app.api" in graph["app.fetch"]
