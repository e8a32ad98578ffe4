"""The package's shape: subpackages by layer, each with a docstring and an import-free
`__init__`, a handful of modules at the top; no function but the argument parser over 80 lines,
and no subclass of the trainer (its parts are swapped by composition). Which layer may import
which, and that no import circle exists, is import-linter's contract in pyproject.toml
(`lint-imports`, run by CI and `nox -s lint`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"
LAYERS = (
    "config", "training", "families", "runs", "tracking", "reporting", "experiments", "tools", "cli"
)  # fmt: skip


def test_the_package_is_its_layers_and_a_handful_of_modules():
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert subpackages == sorted(LAYERS)
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "files", "variants"]


def test_every_layer_says_what_it_is_for_and_imports_nothing():
    for layer in LAYERS:
        tree = ast.parse((PACKAGE / layer / "__init__.py").read_text())
        assert ast.get_docstring(tree), layer
        assert not any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(tree)), layer


def test_the_readme_import_path_and_m2h_list_stay_free_of_torch():
    code = (
        "import sys\nfrom harness.variants import Variant, register_variant\n"
        "from harness.cli.main import main\nmain(['list'])\nassert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "exact" in done.stdout


def _definitions(kind: type) -> list[tuple[str, ast.AST]]:
    """(file name, node) for every `kind` node (a function, a class) in the package."""
    return [
        (str(path.relative_to(PACKAGE)), node)
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, kind)
    ]


def test_no_function_is_over_80_lines():
    long = [
        f"{name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, node in _definitions(ast.FunctionDef)
        if node.end_lineno - node.lineno + 1 > 80
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


def test_the_readmes_variants_table_names_every_registered_variant():
    from harness.config.variants import list_variants

    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme.split("## Variants")[1].split("\n\n")[1]
    named = {
        part.strip("` ") for row in table.splitlines()[2:] for part in row.split("|")[1].split(",")
    }
    assert named == {v.name for v in list_variants()}
