"""The in-process CLI of the tests (``invoke``) leaves the process as it found it.

A ``run`` sets what a process keeps for its life: SIGTERM/SIGINT handlers, the root logger's
handler and level, wrapped ``sys.stdout``/``sys.stderr`` and ``sys.excepthook``, the keys and
passwords it read in the redaction registry. A test after it must see none of that, or tests
would pass or fail by which ran before them in the same worker.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from sync import redaction
from sync.simulator import Simulator
from tests.conftest import cli_env, invoke, numbers


def test_invoke_leaves_the_process_as_it_found_it(sim: Simulator, pg_url: str, tmp_path: Path) -> None:
    sim.add("sms", numbers(3))
    root = logging.getLogger()
    before = (
        list(root.handlers),
        root.level,
        {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)},
        sys.stdout,
        sys.stderr,
        sys.excepthook,
        sys.argv,
        dict(os.environ),
        Path.cwd(),
        set(redaction._forms),
    )
    result = invoke(
        "run", "--log-level", "debug", env=cli_env(sim, pg_url, KALEYRA_CHANNELS="sms"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"{sim.sid} sms: succeeded, 3 blocklisted" in result.stdout and "DEBUG" in result.stderr
    after = (
        list(root.handlers),
        root.level,
        {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)},
        sys.stdout,
        sys.stderr,
        sys.excepthook,
        sys.argv,
        dict(os.environ),
        Path.cwd(),
        set(redaction._forms),
    )
    assert after == before
    assert sim.api_key not in redaction._forms  # read by the run, forgotten with it
