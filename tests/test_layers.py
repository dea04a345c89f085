"""The layers of frameflow, enforced from the real imports (docs/architecture.md, "Layers").

Every ``import`` and ``from ... import`` of the project's modules is read with :mod:`ast` (those under
``if TYPE_CHECKING:`` included: a type-only import still ties two modules together). Each module
belongs to one layer; an import may point to its own layer or a lower one, never up, and the graph
of modules has no cycle. ``pipeline/__init__.py`` is the public facade: it imports lazily, by name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "middleware", "workers")

#: Bottom to top. A module's layer is that of the longest prefix listed here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("pipeline.errors", "pipeline.settings", "pipeline.version", "pipeline.config_files")),
    ("broker core", ("pipeline.streams",)),
    ("frame domain", ("pipeline.domain",)),
    ("middleware", ("middleware",)),
    ("processes", ("pipeline.processes", "pipeline.broker")),
    ("edges", ("pipeline.cameras", "pipeline.ingest", "pipeline.mqtt")),
    ("operator tools", ("pipeline.tools", "pipeline.dashboard")),
    ("workers", ("workers",)),
]

#: The facade: re-exports by name, imported by nothing of the project.
FACADE = "pipeline"


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (a package counts as its ``__init__``)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                found.add(submodule if submodule in modules else origin)
    return {target for target in found if target in modules and target != name}


def layer_of(module: str) -> int:
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS (and to docs/architecture.md)"
    return best


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_module_belongs_to_a_layer(graph: dict[str, set[str]]) -> None:
    for module in graph:
        if module != FACADE:
            layer_of(module)


def test_imports_point_down_only(graph: dict[str, set[str]]) -> None:
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(graph.items())
        if module != FACADE
        for target in sorted(targets)
        if target != FACADE and layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_only_workers_import_the_facade(graph: dict[str, set[str]]) -> None:
    """Workers are processors written as users write them (``from pipeline import ProcessorClient``);
    inside ``pipeline`` and ``middleware`` a module imports from the module that defines a name."""
    importers = sorted(
        module for module, targets in graph.items() if FACADE in targets and not module.startswith("workers")
    )
    assert not importers, f"modules import the facade `pipeline` instead of the module defining a name: {importers}"


def test_there_is_no_import_cycle(graph: dict[str, set[str]]) -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_broker_core_imports_alone() -> None:
    """``import pipeline.streams`` loads the core and the foundation, nothing of the layers above."""
    code = (
        "import sys, pipeline.streams, pipeline.streams.broker; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('pipeline', 'middleware', 'workers'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = loaded.stdout.split()
    assert "pipeline.streams.broker" in modules
    above = [module for module in modules if module != FACADE and layer_of(module) > layer_of("pipeline.streams")]
    assert not above, f"importing the broker core loaded modules above it: {above}"
