"""The size limits of the tree: modules under 400 lines, function bodies under 40, at most 8
parameters except for the documented user-facing entry points listed here."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FOLDERS = ("pyroext", "models", "tests", "benchmarks", "examples")
MAX_MODULE_LINES = 400
MAX_BODY_LINES = 40
MAX_PARAMETERS = 8
# User-facing entry points whose keyword options mirror the libraries they extend.
ENTRY_POINTS = {
    ("pyroext/arviz/converter.py", "from_pyro_svi"),
    ("pyroext/arviz/converter.py", "from_pyro"),
    ("pyroext/infer/runner.py", "run_svi"),
    ("pyroext/guides/metflow.py", "__init__"),
    ("pyroext/guides/dais.py", "__init__"),
    ("pyroext/guides/markov.py", "__init__"),
    ("pyroext/diagnostics/vsbc.py", "vsbc"),
    ("models/gmm/vb.py", "vb_gmm"),
    ("models/gmm/em.py", "em"),
}
MODULES = sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))


def _functions(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _body_lines(function: ast.FunctionDef) -> int:
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring does not count
    return 0 if not body else body[-1].end_lineno - body[0].lineno + 1


def _parameters(function: ast.FunctionDef) -> int:
    arguments = function.args
    names = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    count = len(names) + (arguments.vararg is not None) + (arguments.kwarg is not None)
    return count - bool(names and names[0].arg in ("self", "cls"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_module_and_function_sizes(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    relative = str(path.relative_to(ROOT))
    for function in _functions(ast.parse(source)):
        where = f"{relative}:{function.lineno} {function.name}"
        assert _body_lines(function) <= MAX_BODY_LINES, where
        if (relative, function.name) not in ENTRY_POINTS:
            assert _parameters(function) <= MAX_PARAMETERS, where
