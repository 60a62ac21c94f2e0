"""Running it the way operators do: scheduler, signals, several accounts, logs, metrics."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from sync import database
from sync.scheduler import crontab_trigger
from sync.settings import ConfigError
from sync.simulator import Simulator
from tests.conftest import (
    REPO,
    FakeClock,
    cli_env,
    invoke,
    make_client,
    numbers,
    rows,
    run_on_a_terminal,
    wait_for,
)


def start_schedule(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sync", "schedule", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_rows(engine: Engine, sid: str) -> list[tuple[Any, ...]]:
    return rows(
        engine,
        "SELECT channel, status, started_at, error FROM sync_runs WHERE account_sid = :a ORDER BY id",
        a=sid,
    )


def consistent(engine: Engine, sid: str) -> bool:
    """Entries are exactly what the events say is blocklisted now."""
    from_events = rows(
        engine,
        """
        SELECT channel, mobile FROM (
            SELECT channel, mobile, change,
                   ROW_NUMBER() OVER (PARTITION BY channel, mobile ORDER BY id DESC) AS n
            FROM blocklist_events WHERE account_sid = :a) last
        WHERE n = 1 AND change = 'added'""",
        a=sid,
    )
    current = rows(engine, "SELECT channel, mobile FROM blocklist_entries WHERE account_sid = :a", a=sid)
    return sorted(from_events) == sorted(current)


def test_sigterm_stops_the_scheduler_mid_sweep_cleanly(sim: Simulator, engine: Engine, pg_url: str) -> None:
    sim.add("sms", numbers(20_000))  # 200 slow pages: SIGTERM surely lands mid-sweep
    sim.inject("slow", times=100_000, seconds=0.01)
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", BLOCKLIST_SYNC_CONCURRENCY="1")
    proc = start_schedule(env, "--every", "1s", "--run-now")
    wait_for(lambda: sim.requests >= 5)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    statuses = [r[1] for r in run_rows(engine, sim.sid)]
    assert statuses and "running" not in statuses
    # A stop is not a failure: the interrupted sweep is recorded as cancelled.
    assert statuses[-1] == "cancelled"
    assert run_rows(engine, sim.sid)[-1][3] == "cancelled by SIGTERM; nothing was applied"
    assert consistent(engine, sim.sid)
    assert rows(engine, "SELECT COUNT(*) FROM blocklist_entries WHERE account_sid = :a", a=sim.sid) == [(0,)]


def test_the_scheduler_keeps_going_after_a_failed_sweep(sim: Simulator, engine: Engine, pg_url: str) -> None:
    sim.add("sms", numbers(50))
    sim.inject("E110", at=1, times=1)
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", BLOCKLIST_SYNC_CONCURRENCY="1")
    proc = start_schedule(env, "--every", "1s", "--run-now")
    try:
        wait_for(lambda: "succeeded" in [r[1] for r in run_rows(engine, sim.sid)])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert [r[1] for r in run_rows(engine, sim.sid)][:2] == ["failed", "succeeded"]


@pytest.mark.slow
def test_two_schedulers_sweep_each_channel_once_per_tick(sim: Simulator, engine: Engine, pg_url: str) -> None:
    for channel in ("sms", "whatsapp"):
        sim.add(channel, numbers(400))
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms,whatsapp")
    started = time.monotonic()
    procs = [start_schedule(env, "--every", "2s") for _ in range(2)]
    try:
        # Three ticks' sweeps of each channel, however long the two processes took to start.
        wait_for(
            lambda: all(
                len([r for r in run_rows(engine, sim.sid) if r[0] == channel]) >= 3
                for channel in ("sms", "whatsapp")
            ),
            timeout=60,
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        ran = time.monotonic() - started
        for proc in procs:
            proc.communicate(timeout=30)
    assert [p.returncode for p in procs] == [0, 0]
    runs = run_rows(engine, sim.sid)
    ticks = math.floor(ran / 2) + 1  # the 2 s ticks while both ran (7.5 s: 4)
    for channel in ("sms", "whatsapp"):
        starts = [r[2] for r in runs if r[0] == channel]
        assert 3 <= len(starts) <= ticks, (len(starts), ran)  # one sweep per tick, not two
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
        assert all(gap > 1.0 for gap in gaps), gaps
    # Every sweep succeeded, but for one our SIGTERM may have caught mid-sweep.
    assert all(r[1] in ("succeeded", "cancelled") for r in runs), runs


@pytest.mark.slow
def test_metrics_file_after_success_and_after_failure(
    sim: Simulator, pg_url: str, tmp_path: Path, no_backoff: None
) -> None:
    sim.add("sms", numbers(150))
    metrics = tmp_path / "blocklist_sync.prom"
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    assert invoke("run", "--metrics-file", str(metrics), env=env).returncode == 0
    labels = f'account="{sim.sid}",channel="sms"'
    text = metrics.read_text()
    success = float(_metric(text, "blocklist_sync_last_success_timestamp_seconds", labels))
    assert abs(success - time.time()) < 60
    assert _metric(text, "blocklist_sync_last_run_success", labels) == "1.0"
    assert _metric(text, "blocklist_sync_entries", labels) == "150.0"
    assert _metric(text, "blocklist_sync_added", labels) == "150.0"
    assert _metric(text, "blocklist_sync_pages", labels) == "2.0"
    assert float(_metric(text, "blocklist_sync_duration_seconds", labels)) > 0
    sim.inject("WA500", times=100)
    assert invoke("run", "--metrics-file", str(metrics), env=env).returncode == 1
    text = metrics.read_text()
    assert _metric(text, "blocklist_sync_last_run_success", labels) == "0.0"
    assert float(_metric(text, "blocklist_sync_last_success_timestamp_seconds", labels)) == success
    assert float(_metric(text, "blocklist_sync_last_run_timestamp_seconds", labels)) > success
    assert _metric(text, "blocklist_sync_entries", labels) == "150.0"
    assert sim.api_key not in text
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, no leftovers


def _metric(text: str, name: str, labels: str) -> str:
    prefix = f"{name}{{{labels}}} "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert lines, f"{prefix} missing from:\n{text}"
    return lines[0][len(prefix) :]


def test_json_logs_parse_carry_fields_and_never_the_key(sim: Simulator, pg_url: str) -> None:
    sim.add("sms", numbers(120))
    sim.inject("WA500", at=2)
    result = invoke("run", "--log-format", "json", env=cli_env(sim, pg_url, KALEYRA_CHANNELS="sms"))
    assert result.returncode == 0
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len([x for x in result.stderr.splitlines() if x.strip()])
    done = next(line for line in lines if line["message"].startswith("sweep succeeded"))
    assert done["account"] == sim.sid and done["channel"] == "sms" and done["added"] == 120
    assert isinstance(done["run_id"], int) and done["level"] == "INFO"
    assert sim.api_key not in result.stderr + result.stdout


def test_two_accounts_one_failing_the_other_still_syncs(tmp_path: Path, engine: Engine, pg_url: str) -> None:
    with (
        Simulator.start(sid="HXGOOD0000001", api_key="good-key-1234") as good,
        Simulator.start(sid="HXBAD00000001", api_key="bad-key-5678") as bad,
    ):
        good.add("sms", numbers(10))
        bad.inject("RBC001", times=100)
        key_file = tmp_path / "good.key"
        key_file.write_text("good-key-1234\n")
        config = tmp_path / "accounts.toml"
        config.write_text(f"""
[[accounts]]
sid = "{bad.sid}"
api_key_env = "BAD_KEY"
base_url = "{bad.base_url}"
channels = ["sms", "voice"]

[[accounts]]
sid = "{good.sid}"
api_key_file = "{key_file}"
base_url = "{good.base_url}"
channels = ["sms"]
""")
        result = invoke("run", "--config", str(config), env=cli_env(None, pg_url, BAD_KEY="bad-key-5678"))
        assert result.returncode == 1
        assert "HXGOOD0000001 sms: succeeded" in result.stdout
        assert "HXBAD00000001 sms: failed" in result.stdout
        # Wrong credentials: the account's other channel is not tried.
        assert {channel for _, channel, _ in bad.request_log} == {"sms"}
        assert "bad-key-5678" not in result.stdout + result.stderr
        assert rows(engine, "SELECT COUNT(*) FROM blocklist_entries WHERE account_sid = :a", a=good.sid) == [
            (10,)
        ]


def test_bad_config_file_is_one_line(tmp_path: Path, pg_url: str) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text('[[accounts]]\nsid = "HX1"\napi_key = "k"\nchanels = ["sms"]\n')
    result = invoke("run", "--config", str(config), env=cli_env(None, pg_url))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"blocklist-sync: error: {config} account 1: unknown key chanels; check spelling"
    )


def test_status_json_and_max_age(sim: Simulator, make_database: Callable[..., str]) -> None:
    url = make_database()  # status reports every account: give it a database of its own
    engine = database.make_engine(database.resolve_database_url(url))
    sim.add("voice", numbers(5))
    env = cli_env(sim, url, KALEYRA_CHANNELS="voice")
    assert invoke("migrate", env=env).returncode == 0
    assert invoke("run", env=env).returncode == 0
    result = invoke("status", "--json", "--max-age", "2h", env=env)
    assert result.returncode == 0, result.stdout
    mine = [c for c in json.loads(result.stdout)["channels"] if c["account_sid"] == sim.sid]
    assert mine[0]["entries"] == 5 and mine[0]["last_run"]["status"] == "succeeded"
    assert mine[0]["ok"] is True
    # Age the last success past the limit: --max-age must notice.
    with engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(
            text(
                "UPDATE sync_runs SET finished_at = finished_at - interval '3 hours' WHERE account_sid = :a"
            ),
            {"a": sim.sid},
        )
    stale = invoke("status", "--json", "--max-age", "2h", env=env)
    assert stale.returncode == 1
    mine = [c for c in json.loads(stale.stdout)["channels"] if c["account_sid"] == sim.sid]
    assert mine[0]["ok"] is False
    assert invoke("status", "--max-age", "soon", env=env).returncode == 2


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("15 * * * 1-5", "mon,tue,wed,thu,fri"),
        ("0 9 * * 0", "sun"),
        ("0 9 * * 7", "sun"),
        ("0 9 * * 0-6", "sun,mon,tue,wed,thu,fri,sat"),
        ("0 9 * * sat", "sat"),
        ("0 9 * * mon-fri", "mon,tue,wed,thu,fri"),
        ("0 9 * * 6,0", "sat,sun"),
    ],
)
def test_cron_weekdays_mean_what_they_mean_in_crontab(expr: str, expected: str) -> None:
    trigger = crontab_trigger(expr, setting="--cron")
    weekday = next(f for f in trigger.fields if f.name == "day_of_week")
    assert str(weekday) == expected
    # And the next firing really falls on such a day: 2026-11-29 is a Sunday.
    sunday = dt.datetime(2026, 11, 29, 0, 0, tzinfo=dt.UTC)
    fire = trigger.get_next_fire_time(None, sunday)
    assert fire is not None and fire.strftime("%a").lower() in expected


@pytest.mark.parametrize(
    "expr", ["*/5 * * * 1/2", "0 9 1 * 1", "0 9 * *", "61 * * * *", "0 9 * * 5-1", "0 9 * * 8"]
)
def test_cron_expressions_that_cannot_keep_their_meaning_are_rejected(expr: str) -> None:
    with pytest.raises(ConfigError, match="--cron"):
        crontab_trigger(expr, setting="--cron")


def test_progress_bar_only_on_a_terminal(sim: Simulator, pg_url: str) -> None:
    sim.add("sms", numbers(300))
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    plain = invoke("run", env=env)
    assert plain.returncode == 0 and "rows" not in plain.stderr  # not a terminal: no bar
    command = f"stty cols 120 rows 40; {sys.executable} -m sync run"  # a terminal has a size
    tty = run_on_a_terminal(command, env)
    assert tty.returncode == 0, tty.stdout
    assert "sms:" in tty.stdout and " rows" in tty.stdout  # tqdm drew the bar on the terminal


def test_schedule_serves_metrics_over_http(sim: Simulator, engine: Engine, pg_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim.add("whatsapp", numbers(42))
    proc = start_schedule(
        cli_env(sim, pg_url, KALEYRA_CHANNELS="whatsapp"),
        "--every",
        "1h",
        "--run-now",
        "--metrics-port",
        str(port),
    )
    try:
        wait_for(lambda: "succeeded" in [r[1] for r in run_rows(engine, sim.sid)])

        def scraped() -> bool:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.RequestException:
                return False
            return f'blocklist_sync_entries{{account="{sim.sid}",channel="whatsapp"}} 42.0' in body

        wait_for(scraped)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_max_rps_spaces_requests(sim_on_clock: Simulator, clock: FakeClock) -> None:
    sim = sim_on_clock  # its request log is stamped on the client's clock
    sim.add("sms", numbers(900))
    client = make_client(sim, concurrency=4, max_rps=20, clock=clock, sleep=clock.sleep)
    assert sum(len(p.entries) for p in client.pages("sms")) == 900
    starts = sorted(t for t, _, _ in sim.request_log)
    assert len(starts) >= 10
    # 20 per second: ten requests cannot fit in less than nine intervals of 50 ms.
    assert starts[-1] - starts[0] >= (len(starts) - 1) / 20 - 0.05
