"""The packages import one another only in the directions DESIGN.md section 1 allows.

Read from the source (every ``import`` and ``from ... import``, inside functions and
``TYPE_CHECKING`` blocks too), so an import against the layering fails here, not in review.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import taskorch

SRC = Path(taskorch.__file__).parent

# What each part of taskorch may import (besides itself and the root package, which holds
# only __version__). DESIGN.md: domain <- everything; store -> domain; events -> domain,
# store; core -> domain, store, events; server -> core, domain, v1, gateway (never the
# reverse); workers -> domain, client, inference; inference -> domain; client -> domain, v1.
# A top-level module counts as a part of its own.
ALLOWED: dict[str, frozenset[str]] = {
    "domain": frozenset(),
    "v1": frozenset(),  # generated stubs
    "structs": frozenset(),  # protobuf Struct <-> JSON, for the SDK, workers and the server
    "logs": frozenset(),
    "store": frozenset({"domain"}),
    "events": frozenset({"domain", "store"}),
    "core": frozenset({"domain", "store", "events"}),
    "inference": frozenset({"domain"}),
    "client": frozenset({"domain", "v1", "structs"}),
    # The remote worker speaks the worker protocol's stubs itself; in-process workers are
    # handed core's work source (core/local_work.py) by the server.
    "workers": frozenset({"domain", "client", "inference", "v1", "structs"}),
    "worker": frozenset({"domain", "workers"}),  # the remote worker SDK's entry
    "gateway": frozenset({"domain", "v1", "config"}),
    "config": frozenset({"domain", "core", "store"}),  # a server's settings
    # The server also wires the process together (app.py): settings, in-process workers and
    # the inference engine behind ModelService.
    "server": frozenset(
        {"core", "domain", "v1", "gateway", "config", "structs", "inference", "workers"}
    ),
    "__main__": frozenset({"cli"}),
}
# The command line may use every part but the entry point that runs it.
ALLOWED["cli"] = frozenset(ALLOWED) - {"__main__"}
# Imports against the table that are tolerated for now: none. (The composition root,
# server/app.py, builds its database and event hub through core/backing.py.) A pair added
# here must leave again once its module stops using it.
NOT_YET: frozenset[tuple[str, str]] = frozenset()


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[1:2] == ("v1",):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every taskorch module ``module`` imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "taskorch":  # from taskorch import structs
                yield from (f"taskorch.{alias.name}" for alias in node.names)
            else:
                yield target


def _part(module: str) -> str:
    """The package or top-level module of ``taskorch.a.b`` (``a``); ``""`` for the root."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__version__":
        return ""
    return parts[1]


def _edges() -> set[tuple[str, str, str]]:
    """(importing module, its part, imported part) for every import across parts."""
    found = set()
    for module, path in _modules():
        source = _part(module)
        for target in _imports(module, path):
            if target.split(".")[0] != "taskorch":
                continue
            imported = _part(target)
            if imported and imported != source:
                found.add((module, source, imported))
    return found


def test_every_part_of_the_package_is_in_the_table() -> None:
    parts = {_part(module) for module, _ in _modules()} - {""}
    assert parts == set(ALLOWED) - {"v1"}


def test_every_exception_is_still_needed() -> None:
    """A module that stopped reaching past core leaves NOT_YET (it cannot slip back)."""
    used = {(module, imported) for module, _, imported in _edges()}
    assert NOT_YET - used == set()


def test_packages_import_only_in_the_allowed_directions() -> None:
    wrong = sorted(
        f"{module} ({source} -> {imported})"
        for module, source, imported in _edges()
        if imported not in ALLOWED[source] and (module, imported) not in NOT_YET
    )
    assert wrong == []


def test_the_allowed_directions_have_no_cycle() -> None:
    done: set[str] = set()

    def visit(part: str, path: tuple[str, ...]) -> None:
        assert part not in path, f"cycle: {' -> '.join([*path, part])}"
        if part in done:
            return
        for imported in ALLOWED[part]:
            visit(imported, (*path, part))
        done.add(part)

    for part in ALLOWED:
        visit(part, ())


def test_the_domain_imports_only_the_standard_library() -> None:
    outside = sorted(
        f"{module}: {target}"
        for module, path in _modules()
        if _part(module) == "domain"
        for target in _imports(module, path)
        if target.split(".")[0] not in sys.stdlib_module_names
        and not target.startswith("taskorch.domain")
    )
    assert outside == []


def test_a_remote_worker_loads_no_server_store_core_sqlalchemy_or_yaml() -> None:
    check = (
        "import sys, taskorch.worker\n"
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'yaml')\n"
        "    or m.startswith(('taskorch.server', 'taskorch.store', 'taskorch.core'))))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert loaded == []
