"""The package's import structure: no import circles, and imports that run one way.

Read from the source with :mod:`ast` (every ``import`` statement, including
those under ``if TYPE_CHECKING:`` and inside functions, since a circle that
only type checkers or late imports see is still a circle for a reader):

* no module imports itself back through others;
* nothing in the package imports ``catbird.cli`` (except ``__main__``);
* the client never imports the worker, and definitions never import the
  client, the worker or the CLI;
* Wire and the dashboard sit beside the worker on the client: neither
  imports the worker (nor Wire the dashboard).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "catbird"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package modules ``name`` imports (``from . import x`` counts as ``x``)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in known:
                    yield submodule
                elif target in known:
                    yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {t for t in _imports(name, path, known) if t != name}
        for name, path in modules.items()
    }


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_sees_the_package() -> None:
    graph = _graph()
    assert "catbird.client.client_async" in graph
    assert "catbird.client.handles_async" in graph["catbird.client.client_async"]
    assert "catbird._sql" in graph["catbird.client.handles_async"]


def test_no_import_circles() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its own submodules is not a circle for
    # a reader: drop the edges from a package to its own submodules and back.
    edges = {
        name: {t for t in targets if not (_is_within(t, name) or _is_within(name, t))}
        for name, targets in graph.items()
    }
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                circles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert circles == []


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("catbird.client", "catbird.worker"),
        ("catbird.client", "catbird.cli"),
        ("catbird.definitions", "catbird.client"),
        ("catbird.definitions", "catbird.worker"),
        ("catbird.definitions", "catbird.cli"),
        ("catbird._sql", "catbird.client"),
        ("catbird._sql", "catbird.worker"),
        ("catbird.worker", "catbird.cli"),
        ("catbird.db", "catbird.cli"),
        ("catbird.wire", "catbird.worker"),
        ("catbird.wire", "catbird.cli"),
        ("catbird.wire", "catbird.dashboard"),
        ("catbird.dashboard", "catbird.worker"),
        ("catbird.dashboard", "catbird.cli"),
        ("catbird.events", "catbird.client"),
        ("catbird.metrics", "catbird.worker"),
    ],
)
def test_imports_run_one_way(importer: str, forbidden: str) -> None:
    wrong = sorted(
        f"{name} -> {target}"
        for name, targets in _graph().items()
        if _is_within(name, importer)
        for target in targets
        if _is_within(target, forbidden)
    )
    assert wrong == []


def test_only_main_imports_the_cli() -> None:
    wrong = sorted(
        name
        for name, targets in _graph().items()
        if not _is_within(name, "catbird.cli") and name != "catbird.__main__"
        if any(_is_within(t, "catbird.cli") for t in targets)
    )
    assert wrong == []
