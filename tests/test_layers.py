"""The package's layers hold (pyproject.toml, [tool.importlinter]): no module imports from a
layer above its own, no import cycle between the modules of any package, and an import inside
a function is there only to keep start-up light, saying so.

The contracts are checked with import-linter (the tool, not a hand-written graph walk), on
this checkout and on a copy with one upward import planted, which must fail.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# What an import inside a function must say (on its line or the line above): why it is not at
# the top of the module. Only start-up time is a reason (torch, PIL, timm... are imported when
# the function runs, not when `atreid --help` or a Snakefile parse imports the module).
DEFERRED = re.compile(r"#.*\bstart-up\b")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run in ``root`` (its pyproject.toml), on the atreid package found there."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def checkout_copy(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("layers")
    shutil.copytree(REPO / "atreid", copy / "atreid", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_the_layers_and_no_cycles_contracts_are_kept():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in done.stdout


@pytest.mark.parametrize("module, planted", [
    # the data layer reaching up into the evaluation
    ("atreid/data/__init__.py", "from atreid.eval import metrics as _planted  # noqa\n"),
    # an import inside a function counts as well
    ("atreid/model/uniat.py", "def _planted():\n    from atreid.engine import checkpoint  # start-up\n"),
])
def test_a_planted_upward_import_breaks_the_layers(checkout_copy, module, planted):
    path = checkout_copy / module
    original = path.read_text(encoding="utf-8")
    try:
        path.write_text(original + "\n" + planted, encoding="utf-8")
        done = lint_imports(checkout_copy)
    finally:
        path.write_text(original, encoding="utf-8")
    assert done.returncode != 0
    assert "atreid layers" in done.stdout and "BROKEN" in done.stdout
    importer = module.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    assert f"{importer} ->" in done.stdout, done.stdout[-3000:]


def test_a_planted_cycle_between_siblings_breaks_the_acyclic_contract(checkout_copy):
    # metrics <-> bootstrap, both in atreid.eval (one layer): only the acyclic contract sees it.
    planted = {checkout_copy / "atreid/eval/metrics.py": "from atreid.eval import bootstrap as _planted  # noqa\n",
               checkout_copy / "atreid/eval/bootstrap.py": "from atreid.eval import metrics as _planted  # noqa\n"}
    originals = {path: path.read_text(encoding="utf-8") for path in planted}
    try:
        for path, line in planted.items():
            path.write_text(originals[path] + "\n" + line, encoding="utf-8")
        done = lint_imports(checkout_copy)
    finally:
        for path, text in originals.items():
            path.write_text(text, encoding="utf-8")
    assert done.returncode != 0
    assert "no import cycles" in done.stdout and "BROKEN" in done.stdout
    assert "No cycles are allowed in atreid.eval" in done.stdout, done.stdout[-3000:]


def _statement_lists(function: ast.AST):
    """Every list of statements inside ``function`` (its body, and those of its blocks)."""
    for node in ast.walk(function):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                yield body
        for handler in getattr(node, "handlers", None) or []:
            yield handler.body


def function_level_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, imported module, its group's text) of every import inside a function. A group
    is a run of import statements with nothing else between them; its text runs from the
    line above its first import to its last, so one comment can explain the whole group."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found: dict[int, tuple[int, str, str]] = {}
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for body in _statement_lists(function):
            group: list[ast.stmt] = []
            for statement in [*body, None]:
                if isinstance(statement, (ast.Import, ast.ImportFrom)):
                    group.append(statement)
                    continue
                if group:
                    text = "\n".join(lines[max(group[0].lineno - 2, 0):group[-1].end_lineno])
                    for node in group:
                        name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                        found[node.lineno] = (node.lineno, name or ".", text)
                group = []
    return sorted(found.values())


def test_every_import_inside_a_function_says_it_is_for_start_up_time():
    unexplained = [f"{path.relative_to(REPO)}:{line}: import of {name}"
                   for path in sorted((REPO / "atreid").rglob("*.py"))
                   for line, name, context in function_level_imports(path)
                   if not DEFERRED.search(context)]
    assert not unexplained, ("imports inside functions without a '# ... start-up ...' comment "
                             "(move them to the top of the module, or say what they keep out of "
                             "start-up):\n" + "\n".join(unexplained))


def test_the_function_import_check_sees_an_unexplained_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import json\n    return json\n\n"
                      "def g():\n    # start-up: torch only when g runs\n    import torch\n    import timm\n"
                      "    x = 1\n    import PIL\n", encoding="utf-8")
    found = function_level_imports(module)
    assert [(line, name, bool(DEFERRED.search(context))) for line, name, context in found] == [
        (2, "json", False), (7, "torch", True), (8, "timm", True), (10, "PIL", False)]
