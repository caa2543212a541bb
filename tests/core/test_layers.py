"""Packages in layers: lightmem_core ← workers ← producers ← bench, no import back up, and no import
circle between lightmem_core's modules (type-only imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["lightmem_core", "workers", "producers", "bench"]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """Every module named by an import statement anywhere in the file (functions and TYPE_CHECKING too).

    ``from package import submodule`` counts as importing the submodule (one of ``modules``), not the
    package's ``__init__``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                found.add(dotted if dotted in modules else node.module)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    files = {_module(p): p for p in (ROOT / package).rglob("*.py")}
    return {name: {i for i in _imports(path, set(files)) if i in files and i != name} for name, path in files.items()}


def test_no_package_imports_a_layer_above_it() -> None:
    for rank, package in enumerate(LAYERS):
        above = LAYERS[rank + 1:]
        for path in (ROOT / package).rglob("*.py"):
            upward = {i for i in _imports(path) if i.split(".")[0] in above}
            assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)} from a layer above {package}"


def test_lightmem_core_never_imports_celery_or_redis() -> None:
    for path in (ROOT / "lightmem_core").rglob("*.py"):
        assert not {i for i in _imports(path) if i.split(".")[0] in ("celery", "kombu", "redis")}, path


def test_no_import_circle_inside_lightmem_core() -> None:
    graph = _graph("lightmem_core")
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " → ".join(circle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_every_module_of_every_layer_imports() -> None:
    """A moved or renamed module breaks here, not in a benchmark or a worker at start-up."""
    import importlib

    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "__main__.py":
                importlib.import_module(_module(path))
