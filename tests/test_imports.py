"""`ssvae_fast` has no import cycle: the graph of its modules' import-time imports of one another is acyclic,
and every module imports on its own in a fresh interpreter, taken in dependency order (a module's
package-internal imports first), so that the first failure names the module at fault."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ssvae_fast

PACKAGE_DIR = Path(ssvae_fast.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    """{dotted name: file} of every Python module of the package (packages by their __init__.py)."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _import_time_nodes(tree):
    """The import statements that run when the module is imported (not those inside functions)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The package modules `name` imports at import time (with the packages they sit in, except the
    importer's own ancestors, which are being imported already)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in _import_time_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        targets.add(base)
        targets.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    closed = set()
    for target in targets:
        parts = target.split(".")
        closed.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {t for t in closed if t in modules and t != name and t not in ancestors}


def _dependency_order() -> list[str]:
    """Every module after the modules it imports; AssertionError naming a cycle if there is one."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    order, state = [], {}

    def visit(name, trail):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import cycle: " + " -> ".join(trail + [name])
        state[name] = "open"
        for dependency in sorted(graph[name]):
            visit(dependency, trail + [name])
        state[name] = "done"
        order.append(name)

    for name in sorted(graph):
        visit(name, [])
    return order


def test_import_time_graph_has_no_cycle():
    order = _dependency_order()
    assert "ssvae_fast.ops.glue" in order
    assert order.index("ssvae_fast.rows") < order.index("ssvae_fast.ops.class_conditional_activation")


# Each module imported in a child forked from one interpreter that has imported torch (and nothing of
# ssvae_fast), so that every module starts from an empty package.
_IMPORT_EACH = """
import importlib, os, sys, traceback
import torch  # noqa: F401
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print("failed:", " ".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_on_its_own():
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *_dependency_order()], capture_output=True,
                            text=True, cwd=PACKAGE_DIR.parent, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
