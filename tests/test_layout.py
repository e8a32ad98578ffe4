"""The package's shape: no import cycle between its modules (lazy imports included, type-only
ones left out), no function but the argument parser over 80 lines, and no subclass of the
trainer (its parts are swapped by composition)."""

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


def _definitions(kind: type) -> list[tuple[str, ast.AST]]:
    """(file name, node) for every `kind` node (a function, a class) in the package."""
    return [
        (path.name, node)
        for path in PACKAGE.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, kind)
    ]


def test_no_function_but_the_argument_parser_is_over_80_lines():
    long = [
        f"{name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, node in _definitions(ast.FunctionDef)
        if node.end_lineno - node.lineno + 1 > 80 and node.name != "build_parser"
    ]
    assert long == []


def test_no_class_subclasses_the_trainer():
    """One seed or a stack is a step object the one loop runs, not a Trainer subclass."""
    subclasses = [
        f"{name}:{node.name}"
        for name, node in _definitions(ast.ClassDef)
        if any(getattr(base, "id", getattr(base, "attr", None)) == "Trainer" for base in node.bases)
    ]
    assert subclasses == []
