"""The test command on a machine a newcomer has: what is missing is said, not a traceback.

No PostgreSQL: the session stops before any test, in one line saying how to start one. A
system tool missing (promtool, systemd-analyze, script, chromium, faketime): the tests that need
it are skipped with the reason, except on CI (``CI`` set), where they fail: CI installs every
tool, and a skip there would hide a test that never ran.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, START_POSTGRESQL, require_tool


def test_no_postgresql_stops_the_suite_at_once_saying_how_to_start_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    env["KBS_TEST_PG"] = "postgresql://postgres@127.0.0.1:9"  # the discard port: nothing listens
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "tests/test_invoke.py"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:]
    assert "no PostgreSQL for the tests at postgresql://postgres@127.0.0.1:9" in done.stdout
    assert START_POSTGRESQL in done.stdout
    assert "passed" not in done.stdout and "Traceback" not in done.stdout


def test_a_missing_tool_skips_with_how_to_install_it_but_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="kbs-no-such-tool is not installed; apt-get install x"):
        require_tool("kbs-no-such-tool", install="apt-get install x")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set: a missing tool fails, never skips"):
        require_tool("kbs-no-such-tool", install="apt-get install x")
    assert require_tool("kbs-no-such-tool", "sh", install="-").endswith("/sh")  # the first installed
