"""The shape of the code: no import cycle between files, no module over 450 lines, no function
over 60 (issue 11). Read from the source with ``ast``; nothing is imported.

An import counts wherever it is written: at the top, inside a function, or under
``if TYPE_CHECKING:`` (a cycle that only a lazy import hides is still a cycle for a reader).
``from pkg import name`` is an arrow to ``pkg/name.py`` when that is a module, else to
``pkg/__init__.py``; ``import a.b`` is an arrow to ``a/b.py`` (or ``a/b/__init__.py``).
Importing a submodule also runs its package's ``__init__.py``; that arrow is not counted, so
that a package may re-export its modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("daemon", "protocol", "runtime", "schemas", "tui")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_file(dotted: str) -> str | None:
    """``runyard.a.b`` -> ``a/b.py`` or ``a/b/__init__.py``, when it is one of ours (installed
    as ``runyard.<package>``, the five packages are the checkout's top-level folders)."""
    dotted = dotted.removeprefix("runyard.")
    if dotted == "runyard":
        return None
    base = ROOT / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return _rel(candidate)
    return None


def _package_of(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1]  # a module's package; __init__.py's package is its own dir


def _targets(path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if (target := _module_file(alias.name)) is not None:
                yield target
        return
    if node.level:
        package = _package_of(path)
        if node.level > 1:
            package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    for alias in node.names:
        submodule = _module_file(f"{base}.{alias.name}") if base else None
        target = submodule or _module_file(base)
        if target is not None:
            yield target


def import_graph() -> dict[str, set[str]]:
    """File -> the files of ours it imports, every import statement counted."""
    graph: dict[str, set[str]] = {}
    for path in _sources():
        here = _rel(path)
        arrows = graph.setdefault(here, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                arrows.update(t for t in _targets(path, node) if t != here)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component of two or more files."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graph is a few hundred files deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(graph, c) for c in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first file, as a path back to it."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component of 2+ always has one


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def _long_functions() -> dict[str, int]:
    """``file:function`` -> lines, decorators included, for each function over the limit."""
    found: dict[str, int] = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - first + 1
                if length > MAX_FUNCTION_LINES:
                    found[f"{_rel(path)}:{node.name}"] = length
    return found


def test_no_import_cycle_between_files() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle_and_prints_it() -> None:
    graph = {"a.py": {"b.py"}, "b.py": {"c.py"}, "c.py": {"a.py", "d.py"}, "d.py": set()}
    assert find_cycles(graph) == [["a.py", "b.py", "c.py", "a.py"]]
    assert find_cycles({"a.py": {"b.py"}, "b.py": set()}) == []


def test_the_graph_counts_lazy_and_type_checking_imports() -> None:
    graph = import_graph()
    # tui/runs_screen.py imports host.py only under TYPE_CHECKING; runs/chain.py imports
    # runs/verify.py only inside a function.
    assert "tui/host.py" in graph["tui/runs_screen.py"]
    assert "runtime/runs/verify.py" in graph["runtime/runs/chain.py"]
    # `from . import x` is the module x when there is one, else the package's __init__.py.
    assert "daemon/handlers/start.py" in graph["daemon/handlers/__init__.py"]
    assert "runtime/runs/__init__.py" in graph["daemon/handlers/replay.py"]  # replay_run


def test_no_module_over_450_lines() -> None:
    over = {_rel(p): n for p in _sources() if (n := _lines(p)) > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}"


def test_no_function_over_60_lines() -> None:
    over = _long_functions()
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines: {over}"
