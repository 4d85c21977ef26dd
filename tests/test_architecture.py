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


# -- the run's fetch tally is written by the fetch layer only (issue 21, point 5) --------------------------

FETCH_TALLY = ("runstate.py", "FetchTally")
"""Where the run's fetch bookkeeping (counters, skip list and cap) is declared."""
TALLY_WRITERS = {"app.fetch", "app.runstate"}
"""The fetch layer: the only modules that may write the tally (app.fetch also wires request counting
into the client stack it opens)."""
TALLY_READERS = {"as_dict"}
"""The tally's public methods that only read."""


def _tally_class() -> ast.ClassDef:
    path, name = FETCH_TALLY
    tree = ast.parse((APP / path).read_text(encoding="utf-8"))
    found = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name]
    assert found, f"{name} is not declared in app/{path}"
    return found[0]


def _decorators(function: ast.FunctionDef) -> set[str]:
    return {ast.unparse(d) for d in function.decorator_list}


def _targets(node: ast.AST) -> list[ast.expr]:
    """What an assignment, augmented or annotated assignment, or `del` writes (tuples unpacked,
    `x.attr[key] = ...` as a write to `x.attr`)."""
    if isinstance(node, ast.Assign | ast.Delete):
        targets = list(node.targets)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    else:
        return []
    found: list[ast.expr] = []
    while targets:
        target = targets.pop()
        if isinstance(target, ast.Tuple | ast.List):
            targets.extend(target.elts)
        elif isinstance(target, ast.Starred | ast.Subscript):
            targets.append(target.value)
        else:
            found.append(target)
    return found


def _tally_members() -> tuple[set[str], set[str], set[str]]:
    """The tally's mutating methods (its public methods but properties and `TALLY_READERS`), the
    attributes it keeps (set on `self` in its methods), and its public properties."""
    methods = [n for n in _tally_class().body if isinstance(n, ast.FunctionDef)]
    mutators = {m.name for m in methods if not m.name.startswith("_")
                and "property" not in _decorators(m) and m.name not in TALLY_READERS}
    kept = {t.attr for m in methods for node in ast.walk(m) for t in _targets(node)
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    properties = {m.name for m in methods if "property" in _decorators(m)}
    return mutators, kept, properties


def test_only_the_fetch_layer_writes_the_fetch_tally() -> None:
    """Outside app.fetch and app.runstate, no module names a tally's mutating method (a call, or
    a bound method handed on, as `on_request=state.count_request` was) nor touches the attributes
    it keeps; its public attributes are read-only properties (no setter, no deleter), so nothing
    can assign them."""
    mutators, kept, properties = _tally_members()
    offenders: list[str] = []
    for path in sorted(APP.rglob("*.py")):
        module = _module_name(path)
        if module in TALLY_WRITERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            own = isinstance(node.value, ast.Name) and node.value.id == "self"
            if node.attr in mutators or (node.attr in kept and not own):
                offenders.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []
    writable = [ast.unparse(d) for m in _tally_class().body if isinstance(m, ast.FunctionDef)
                for d in m.decorator_list if isinstance(d, ast.Attribute)
                and d.attr in {"setter", "deleter"}]
    public_fields = [ast.unparse(t) for n in _tally_class().body for t in _targets(n)
                     if isinstance(t, ast.Name) and not t.id.startswith("_")]
    assert writable == [] and public_fields == []
    assert kept.isdisjoint(properties)


def test_the_tally_checker_sees_the_fetch_layer_write() -> None:
    """The check is real: the tally has the mutating methods and attributes the fetch layer uses,
    and app.fetch names them (skips added and removed, pages, requests counted)."""
    mutators, kept, properties = _tally_members()
    assert {"add_skip", "remove_skip", "count_page", "count_request"} <= mutators
    assert {"pages", "skipped"} <= properties and kept
    source = (APP / "fetch.py").read_text(encoding="utf-8")
    names = {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)}
    assert {"add_skip", "remove_skip", "count_page", "count_request"} <= names
