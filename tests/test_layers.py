"""The import contracts (``[tool.importlinter]`` in pyproject.toml, run by ``lint-imports`` in
the test command) hold today, and catch a change that breaks them: a copy of ``sync/`` where
the store imports the sweep above it, or the Kaleyra client the store, fails, naming the
contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


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
