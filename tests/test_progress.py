"""Progress where the operator looks (issue 29, item 2): a log line at each tenth of the last
sweep's size and at least every 30 s when the output is no terminal (journald, ``kubectl
logs``, a cron log), in text and JSON; on a terminal, a bar with that total and the time left.

The 30 s are never waited for: :class:`~sync.telemetry.Progress` takes its clock and interval.
"""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest

from sync.simulator import Simulator
from sync.sweep import PageProgress
from sync.telemetry import Progress
from tests.conftest import FakeClock, cli_env, invoke, numbers, run_on_a_terminal


def paged(pages: int, expected: int | None = 1000, *, done: bool = False) -> PageProgress:
    return PageProgress(
        account_sid="HX1",
        channel="sms",
        run_id=7,
        pages=pages,
        rows=pages * 100,
        expected_rows=expected,
        done=done,
    )


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sync.progress"]


def test_a_line_at_each_tenth_with_rate_share_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = Progress(terminal=False, clock=clock)
    caplog.set_level(logging.INFO, logger="sync.progress")
    progress.update(paged(0))  # paging starts
    for page in range(1, 13):  # 12 pages of 100 rows, one a second, against 1,000 last time
        clock.sleep(1.0)
        progress.update(paged(page))
    progress.update(paged(12, done=True))
    progress.close()
    said = lines(caplog)
    assert said[0] == "sms: 1 page, 100 rows at 100 rows/s, 10% of the last sweep's 1,000, about 9s left"
    assert said[4] == "sms: 5 pages, 500 rows at 100 rows/s, 50% of the last sweep's 1,000, about 5s left"
    assert (
        said[9]
        == "sms: 10 pages, 1,000 rows at 100 rows/s, 100% of the last sweep's 1,000, as many as last time"
    )
    assert (
        said[11]
        == "sms: 12 pages, 1,200 rows at 100 rows/s, 120% of the last sweep's 1,000, more than last time"
    )
    assert len(said) == 12  # one per tenth, past 100% too: a longer listing is said as well
    record = next(r for r in caplog.records if r.getMessage() == said[4])
    names = ("run_id", "account", "channel", "pages", "rows", "rows_per_second", "expected_rows", "share")
    assert {k: getattr(record, k) for k in (*names, "eta_seconds")} == {
        "run_id": 7,
        "account": "HX1",
        "channel": "sms",
        "pages": 5,
        "rows": 500,
        "rows_per_second": 100.0,
        "expected_rows": 1000,
        "share": 0.5,
        "eta_seconds": 5,
    }


def test_at_least_one_line_every_interval_also_while_no_page_comes(caplog: pytest.LogCaptureFixture) -> None:
    """A first sweep has no size to take tenths of: the interval alone speaks, and a listing
    that stalls is said to be waiting (the heartbeat's tick, called here by hand)."""
    clock = FakeClock()
    progress = Progress(terminal=False, clock=clock, interval=30.0)
    caplog.set_level(logging.INFO, logger="sync.progress")
    progress.update(paged(0, expected=None))
    for page in range(1, 60):  # a page every second for a minute: two lines
        clock.sleep(1.0)
        progress.update(paged(page, expected=None))
    assert lines(caplog) == [
        "sms: 30 pages, 3,000 rows at 100 rows/s (no earlier sweep to measure against)",
    ]
    clock.sleep(1.0)
    progress.update(paged(60, expected=None))
    clock.sleep(29.0)
    progress.tick()  # 29 s since the last line: nothing yet
    assert len(lines(caplog)) == 2
    clock.sleep(16.0)
    progress.tick()  # 30 s since the last line, 45 s since the last page
    assert lines(caplog)[-1] == (
        "sms: 60 pages, 6,000 rows at 57 rows/s (no earlier sweep to measure against); no page for 45s"
    )
    progress.update(paged(60, expected=None, done=True))
    clock.sleep(60.0)
    progress.tick()  # paging is over: the sweep's own lines take over
    assert len(lines(caplog)) == 3
    progress.close()


def test_run_logs_progress_when_not_on_a_terminal_in_text_and_json(sim: Simulator, pg_url: str) -> None:
    sim.add("sms", numbers(1000))
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", BLOCKLIST_SYNC_CONCURRENCY="1")
    first = invoke("run", env=env)
    assert first.returncode == 0 and " sync.progress: " not in first.stderr  # no size to measure against yet
    text = invoke("run", env=env)
    assert text.returncode == 0, text.stderr
    said = re.findall(r" INFO sync\.progress: (sms: .*?) \[(.*)\]$", text.stderr, re.MULTILINE)
    assert [line.split(",")[0] for line, _ in said] == [
        f"sms: {n} page{'s' if n > 1 else ''}" for n in range(1, 11)
    ]
    assert re.fullmatch(
        r"sms: 5 pages, 500 rows at [\d,]+ rows/s, 50% of the last sweep's 1,000, about [\d.]+s left",
        said[4][0],
    )
    assert f"account={sim.sid} channel=sms pages=5" in said[4][1] and "rows=500 " in said[4][1]
    logged = invoke("run", "--log-format", "json", env=env)
    records = [json.loads(line) for line in logged.stderr.splitlines() if '"sync.progress"' in line]
    assert len(records) == 10
    half = records[4]
    assert (half["account"], half["channel"], half["pages"], half["rows"]) == (sim.sid, "sms", 5, 500)
    assert (half["expected_rows"], half["share"]) == (1000, 0.5)
    assert half["rows_per_second"] > 0 and half["eta_seconds"] >= 0 and isinstance(half["run_id"], int)


def test_the_terminal_bar_shows_the_last_sweeps_size_and_the_time_left(sim: Simulator, pg_url: str) -> None:
    sim.add("sms", numbers(3000))
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", BLOCKLIST_SYNC_CONCURRENCY="1")
    assert invoke("run", env=env).returncode == 0
    tty = run_on_a_terminal(f"stty cols 120 rows 40; {sys.executable} -m sync run", env)
    assert tty.returncode == 0, tty.stdout
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty.stdout)
    # tqdm's bar against a total: share, count of the total, elapsed<left.
    assert re.search(r"sms: +\d+%\|[^|]*\| [\d.]+k?/3\.00k \[\d\d:\d\d<\d\d:\d\d", screen), screen[-400:]
    assert "sync.progress" not in screen  # a terminal gets the bar, not the lines
