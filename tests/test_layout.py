"""The package's shape: no import cycle between its modules (lazy imports included, type-only
ones left out), and no function but the argument parser over 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"


def _imports(tree: ast.Module) -> set[str]:
    """harness modules imported anywhere in the module, but under `if TYPE_CHECKING:`."""
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            found.add(node.module.split(".")[1] if "." in node.module else node.names[0].name)
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("harness.")}
    return found


def test_no_module_of_the_package_imports_itself_back():
    graph = {
        path.stem: _imports(ast.parse(path.read_text()))
        for path in PACKAGE.glob("*.py")
        if path.stem not in ("__init__", "__main__")
    }

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    cycles = sorted(name for name in graph if reaches(name, name, {name}))
    assert cycles == []


def test_no_function_but_the_argument_parser_is_over_80_lines():
    long = [
        f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in PACKAGE.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef)
        and node.end_lineno - node.lineno + 1 > 80
        and node.name != "build_parser"
    ]
    assert long == []
