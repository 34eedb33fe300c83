"""The package's structure: no import circle (function-level imports included, so none can be
dodged by importing late), and docs/architecture.md names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "benchmark"
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at any level of the file. `from pkg import
    sub` counts as an import of `pkg.sub` when `sub` is a module."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                subs = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in modules]
                if len(targets) < len(subs):
                    targets.append(node.module)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_circle_detector_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_a_cell_imports_none_of_the_places_that_run_it():
    reached, todo = set(), ["benchmark.running.cell"]
    graph = import_graph()
    while todo:
        for target in graph[todo.pop()] - reached:
            reached.add(target)
            todo.append(target)
    runners = {"benchmark.running.runner"} | {
        m for m in graph if m.startswith("benchmark.running.executors")
    }
    assert not reached & (runners | {"benchmark.running.rescoring", "benchmark.cli"})


def test_docs_architecture_names_every_module():
    documented = set(re.findall(r"`(benchmark/[a-z_/]+\.py)`", ARCHITECTURE.read_text()))
    modules = {
        str(p.relative_to(PACKAGE.parent))
        for p in PACKAGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert documented == modules


def function_level_imports() -> dict[str, set[str]]:
    """Top-level module name -> the package files that import it inside a function (the
    standard library left out)."""
    import sys

    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        where = str(path.relative_to(PACKAGE.parent))
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["benchmark" if node.level else (node.module or "")]
                else:
                    continue
                for top in {name.split(".")[0] for name in names}:
                    if top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(where)
    return found


def undeclared() -> set[str]:
    """What benchmark/cli/lazy_imports.py and the code disagree on: a module imported inside a
    function without an entry, an entry without such an import, a package file importing its
    own modules late without being named (or named without doing so)."""
    from benchmark.cli.lazy_imports import OWN, THIRD_PARTY

    found = function_level_imports()
    own = found.pop("benchmark", set())
    return (set(found) ^ set(THIRD_PARTY)) | (own ^ set(OWN))


def test_every_import_inside_a_function_is_declared_with_why():
    """benchmark/cli/lazy_imports.py is the one list: a third-party module imported inside a
    function has its entry (why, pip package), a module of the package that imports its own
    modules late is named with why, and no entry outlives its import."""
    from benchmark.cli.lazy_imports import OWN, THIRD_PARTY

    assert undeclared() == set()
    assert all(lazy.why and lazy.package for lazy in THIRD_PARTY.values())
    assert all(OWN.values())


def test_the_declaration_check_finds_an_undeclared_import_and_a_stale_entry(monkeypatch):
    from benchmark.cli import lazy_imports

    monkeypatch.delitem(lazy_imports.THIRD_PARTY, "sweeps")
    monkeypatch.setitem(lazy_imports.OWN, "benchmark/records/results.py", "imports nothing late")
    assert undeclared() == {"sweeps", "benchmark/records/results.py"}
