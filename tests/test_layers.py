"""The package's layers, read from the source with ``ast`` (nothing is imported, no Redis).

Every module under ``frappe_celery/`` is parsed and its imports of other frappe_celery modules
collected, those at module level and those inside a function (a late import) alike; imports
under ``if TYPE_CHECKING:`` never run and are left out. Then:

* no cycle between modules, late imports included: a late import that only dodges a cycle is
  still a cycle;
* no import from a lower layer to a higher one (:data:`MAY_IMPORT`): the shared modules at the
  top and ``broker/`` import nothing of the processes; ``caller/`` (what a web process needs)
  nothing of ``worker/``; ``ops/`` (the read and steer tools) nothing of ``worker/``;
* a package's ``__init__`` imports nothing of frappe_celery at module level (importing one
  module loads only what it needs), except the few in :data:`INIT_IMPORTS`.

The few exceptions are listed with their reason in :data:`ALLOWED`; an entry that no longer
matches an import fails too, so the list cannot go stale. One test checks the same in a real
interpreter (a subprocess, still no Redis): enqueueing and reading load nothing of the worker.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # pure: reads the source, no Redis, no worker

PACKAGE = "frappe_celery"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# The subpackages that are layers of their own; every other module is in the shared layer.
SUBPACKAGE_LAYERS = ("broker", "caller", "worker", "ops", "scheduler", "cli", "integrations")

# Which layers a layer's modules may import (its own included).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "shared": frozenset({"shared", "broker"}),
    "broker": frozenset({"shared", "broker"}),
    "caller": frozenset({"shared", "broker", "caller"}),
    "scheduler": frozenset({"shared", "broker", "caller", "scheduler"}),
    "worker": frozenset({"shared", "broker", "caller", "worker"}),
    "ops": frozenset({"shared", "broker", "caller", "scheduler", "ops"}),
    "integrations": frozenset(
        {"shared", "broker", "caller", "scheduler", "worker", "ops", "integrations"}
    ),
    "cli": frozenset(
        {"package", "shared", "broker", "caller", "scheduler", "worker", "ops", "integrations"}
        | {"cli"}
    ),
    # frappe_celery/__init__.py: the public API, resolved lazily (see INIT_IMPORTS).
    "package": frozenset(
        {"shared", "broker", "caller", "scheduler", "worker", "ops", "integrations", "cli"}
    ),
}

# Package __init__ modules that import frappe_celery modules at module level, and why.
INIT_IMPORTS = {
    "frappe_celery.cli": "the click group: `frappe-celery` loads its commands",
    "frappe_celery.integrations.frappe": "FrappeJobContext lives in it (a settings path)",
}

# (importer, imported): why this import may cross a layer. Each one is a function-level import.
ALLOWED: dict[tuple[str, str], str] = {
    ("frappe_celery.caller.enqueue", "frappe_celery.worker.attempt"): (
        "enqueue(is_async=False) runs the worker's path in the caller; only that branch imports "
        "worker/attempt.py, which imports nothing of Celery's worker (no billiard)"
    ),
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: str
    line: int
    late: bool  # inside a function

    def __str__(self) -> str:
        where = "inside a function" if self.late else "at module level"
        return f"{self.importer} ({self.path}:{self.line}) imports {self.imported} {where}"


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    is_package = path.name == "__init__.py"
    shown = str(path.relative_to(ROOT.parent))
    found: list[Import] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if node.level:
            base = module.split(".")
            if not is_package:
                base.pop()
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join([*base, *([node.module] if node.module else [])])
        else:
            origin = node.module or ""
        # `from package import submodule` imports the submodule.
        return [
            f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
            for alias in node.names
        ]

    def visit(node: ast.AST, late: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if is_type_checking(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in targets(child):
                    if target.split(".")[0] == PACKAGE and target != module:
                        # `import frappe_celery.a.b` or a name of a module: its module.
                        while target not in modules and "." in target:
                            target = target.rsplit(".", 1)[0]
                        edge = Import(module, target, shown, child.lineno, late)
                        if edge not in found:
                            found.append(edge)
            visit(child, late or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(path.read_text("utf-8"), str(path)), False)
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return parts[1] if parts[1] in SUBPACKAGE_LAYERS else "shared"


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    modules = module_files()
    edges = [edge for name, path in modules.items() for edge in imports_of(name, path, modules)]
    assert len(modules) > 50 and len(edges) > 200, "the package was not found or not parsed"
    return edges


def test_no_import_from_a_lower_layer_to_a_higher_one(graph: list[Import]) -> None:
    wrong = [
        edge
        for edge in graph
        if layer_of(edge.imported) not in MAY_IMPORT[layer_of(edge.importer)]
        and (edge.importer, edge.imported) not in ALLOWED
    ]
    assert not wrong, "imports against the layers (see MAY_IMPORT):\n" + "\n".join(
        f"  {edge} ({layer_of(edge.importer)} -> {layer_of(edge.imported)})" for edge in wrong
    )


def test_the_allowed_exceptions_are_late_imports_that_still_exist(graph: list[Import]) -> None:
    for pair, reason in ALLOWED.items():
        matching = [edge for edge in graph if (edge.importer, edge.imported) == pair]
        assert matching, f"ALLOWED names an import that is gone: {pair} ({reason})"
        assert all(edge.late for edge in matching), (
            f"ALLOWED is for late imports on one branch: {[str(e) for e in matching]}"
        )


def test_no_import_cycles(graph: list[Import]) -> None:
    successors: dict[str, set[str]] = {}
    for edge in graph:
        successors.setdefault(edge.importer, set()).add(edge.imported)
    cycles = strongly_connected(successors)
    described = []
    for members in cycles:
        inside = [e for e in graph if e.importer in members and e.imported in members]
        late = sum(edge.late for edge in inside)
        described.append(
            f"  cycle of {len(members)} modules ({late} of its {len(inside)} imports inside a "
            "function):\n" + "\n".join(f"    {edge}" for edge in inside)
        )
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_package_inits_import_nothing_at_module_level(graph: list[Import]) -> None:
    modules = module_files()
    loading = [
        edge
        for edge in graph
        if modules[edge.importer].name == "__init__.py"
        and not edge.late
        and edge.importer not in INIT_IMPORTS
    ]
    assert not loading, "a package __init__ that loads modules on import:\n" + "\n".join(
        f"  {edge}" for edge in loading
    )


def strongly_connected(successors: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one member (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in successors.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.add(member)
                if member == node:
                    break
            if len(members) > 1 or node in successors.get(node, ()):
                found.append(members)

    for node in sorted(successors):
        if node not in index:
            connect(node)
    return found


def test_a_process_that_enqueues_or_reads_loads_nothing_of_the_worker() -> None:
    """What the import graph says, checked in a real interpreter: the caller's and the ops'
    modules, the public API and the app load neither worker/ nor the worker's side of Celery
    (its request, consumer and worker app; any Celery app loads celery.worker's package for
    its Django fixup)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import frappe_celery as frappe\n"
        "from frappe_celery.caller import enqueue, publish, transaction\n"
        "from frappe_celery.ops import admin, monitor\n"
        "frappe.enqueue, frappe.get_job, frappe.Job, frappe.job_lock, frappe.app\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(\n"
        "    ('frappe_celery.worker', 'celery.worker.request', 'celery.worker.consumer',\n"
        "     'celery.apps.worker', 'billiard.pool')))))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert loaded == [], f"loaded by a process that only enqueues and reads: {loaded}"


TESTS = Path(__file__).resolve().parent


def test_a_test_module_imports_no_other_test_module_and_no_conftest() -> None:
    """What two test modules share lives in tests/support/ (CONTRIBUTING.md): a test module
    imported by another would run its tests' module-level code twice, and a conftest is
    pytest's, for fixtures."""
    wrong = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                last = node.module.rsplit(".", 1)[-1]
                if last.startswith("test_") or last == "conftest":
                    wrong.append(f"{path.relative_to(TESTS)}:{node.lineno} from {node.module}")
    assert not wrong, wrong
