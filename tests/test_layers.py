"""The import contracts (``[tool.importlinter]`` in pyproject.toml, run by ``lint-imports`` in
the test command) hold today, and catch a change that breaks them: a copy of ``sync/`` where
the store imports the sweep above it, or the Kaleyra client the store, fails, naming the
contract. And the layer that words: only the CLI and ``sync/output.py`` name command-line
flags; below them errors carry what they found, and the CLI says it in the flag or variable
the operator set."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]+")
# What words things with flags: the command line, and the one output module it prints through.
WORDING = ("sync/cli/", "sync/output.py")
# Flags left on purpose below the CLI, by module, and why.
LEFT = {
    # The demo is a command of its own, beside the CLI (cli -> demo in the layers contract):
    # its last line tells the user which command to try next, and that command has flags.
    ("sync/demo.py", "--all"),
    ("sync/demo.py", "--database-url"),
    # The scheduler's log line when `schedule --run-now` sweeps out of turn keeps the flag:
    # operators (and tests/test_review.py) grep the log for it.
    ("sync/scheduler.py", "--run-now"),
}


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "store/apply.py",
            "import sync.sweep",
            "The data's path is layered: the CLI wires, runs orchestrate, a sweep or an import "
            "joins the client, the exports and the store",
        ),
        ("kaleyra/client.py", "import sync.store", "The Kaleyra client never imports the database side"),
    ],
)
def test_a_broken_layer_fails_lint_imports(module: str, line: str, contract: str, tmp_path: Path) -> None:
    if not LINT_IMPORTS.exists():
        pytest.skip("lint-imports is not installed beside this Python")
    shutil.copytree(REPO / "sync", tmp_path / "sync", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    assert _lint(tmp_path).returncode == 0  # the copy as it is keeps every contract
    target = tmp_path / "sync" / module
    target.write_text(target.read_text() + f"\n{line}  # a broken layer\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert f"{contract} BROKEN" in " ".join(broken.stdout.split()), broken.stdout[-2000:]


def _flags_in_strings(source: str) -> list[tuple[int, str]]:
    """Each flag named by a string constant of ``source`` that is no docstring, with its line."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, flag)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        for flag in FLAG.findall(node.value)
    ]


def test_the_scan_finds_flags_in_strings_not_in_docstrings() -> None:
    source = (
        '"""Module: --docstring."""\n'
        "def f(n):\n"
        '    """Function: --docstring."""\n'
        '    raise ValueError(f"{n}: give --country, not a-b--c or ---x")\n'
    )
    assert _flags_in_strings(source) == [(4, "--country")]


def test_only_the_cli_and_output_name_flags() -> None:
    """Errors, results and log lines below the CLI carry what they found; the CLI (or
    sync/output.py) words them with the flag or the variable the operator set. A flag named in
    a string below it is a setting worded where nobody knows how it was set."""
    found = []
    for path in sorted((REPO / "sync").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        if name.startswith(WORDING):
            continue
        found += [
            f"{name}:{line}: {flag}"
            for line, flag in _flags_in_strings(path.read_text(encoding="utf-8"))
            if (name, flag) not in LEFT
        ]
    assert not found, (
        "flags named below the CLI (carry the facts, word them in sync/cli or sync/output.py):\n"
        + "\n".join(found)
    )
