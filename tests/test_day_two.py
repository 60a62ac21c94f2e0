"""What an operator meets on the second day: check, interruptions, scope, explanations, logs,
metrics and shards. Each test runs the real CLI against real PostgreSQL and the simulator."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from sync import database
from sync.run import pairs_to_sweep
from sync.settings import Account, ConfigError, Shard, parse_shard
from sync.simulator import Simulator
from sync.telemetry import JSON_FIELDS
from sync.vocabulary import Channel
from tests.conftest import (
    REPO,
    TEST_PASSWORD,
    beside_simulate,
    cli_env,
    documentation,
    free_port,
    invoke,
    numbers,
    require_tool,
    rows,
    run_on_a_terminal,
)

# The default: every channel the vocabulary names, in its order.
CHANNELS = tuple(Channel)


def fresh_db(make_migrated_database: Callable[[], str]) -> tuple[str, Engine]:
    """A migrated database of its own: status judges what it finds, so share nothing."""
    url = database.resolve_database_url(make_migrated_database())
    return url, database.make_engine(url)


def run_rows(engine: Engine, sid: str) -> list[tuple[Any, ...]]:
    return rows(
        engine, "SELECT channel, status, error FROM sync_runs WHERE account_sid = :a ORDER BY id", a=sid
    )


def row_count(engine: Engine) -> int:
    [(count,)] = rows(
        engine, "SELECT (SELECT COUNT(*) FROM sync_runs) + (SELECT COUNT(*) FROM blocklist_events)"
    )
    assert isinstance(count, int)
    return count


@pytest.fixture
def other_sim() -> Iterator[Simulator]:
    sid = f"HXOTHER{uuid.uuid4().hex[:8].upper()}"
    with Simulator.start(numbers=0, sid=sid, api_key=f"key-{uuid.uuid4().hex}") as simulator:
        yield simulator


def two_accounts(tmp_path: Path, *sims: Simulator) -> Path:
    config = tmp_path / "accounts.toml"
    config.write_text(
        "".join(
            f'[[accounts]]\nsid = "{s.sid}"\napi_key = "{s.api_key}"\nbase_url = "{s.base_url}"\n\n'
            for s in sims
        )
    )
    return config


# --- 1. check -----------------------------------------------------------------------------


def test_check_passes_one_line_per_check_and_writes_nothing(
    sim: Simulator, make_migrated_database: Callable[[], str]
) -> None:
    url, engine = fresh_db(make_migrated_database)
    sim.add("sms", numbers(3))
    before = row_count(engine)
    result = invoke("check", env=cli_env(sim, url))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok    configuration",
        "ok    database",
        "ok    schema",
        "ok    rights",
        *(f"ok    kaleyra {sim.sid} {c}" for c in CHANNELS),
    ]
    assert f"kaleyra {sim.sid} sms: {sim.base_url} answered the listing" in result.stdout
    assert row_count(engine) == before  # no run row, no event
    # Exactly one limit=1 request per channel.
    assert sorted((q["channel"], q["limit"]) for _, _, q in sim.request_log) == sorted(
        (c, "1") for c in CHANNELS
    )
    assert sim.api_key not in result.stdout + result.stderr


def test_commands_that_only_read_create_no_database_file(tmp_path: Path) -> None:
    """``status``, ``lookup`` and ``report`` typed where no database is set (SQLite, by
    default) say so in one line, exit 2, and leave no empty ``blocklist-sync.db`` behind."""
    missing = (
        "blocklist-sync: error: blocklist-sync.db does not exist (DATABASE_URL is not set, so "
        "that is the default); set DATABASE_URL to your PostgreSQL database, or run "
        "`blocklist-sync migrate` to create it\n"
    )
    for args in (("status",), ("lookup", "+919876543210"), ("report", "--out", "report.html")):
        result = invoke(*args, env=cli_env(None, None), cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", missing), args
    named = invoke("status", env=cli_env(None, "sqlite:///elsewhere.db"), cwd=tmp_path)
    assert named.returncode == 2 and named.stderr.startswith(
        "blocklist-sync: error: elsewhere.db does not exist;"
    )
    assert list(tmp_path.iterdir()) == []


def test_urls_are_shown_as_psql_takes_them(pg_url: str) -> None:
    """The database URL printed for people is libpq's form, which ``psql "$URL"`` accepts, not
    SQLAlchemy's ``postgresql+psycopg://``; the password stays masked."""
    server = make_url(pg_url)
    db, at = server.database, f"{server.host}:{server.port or 5432}"
    given = f"postgresql://{server.username}:{quote(TEST_PASSWORD, safe='')}@{at}/{db}"
    result = invoke("status", "--all", env=cli_env(None, given))
    shown = result.stdout.splitlines()[0].removesuffix(": no sweeps yet; run `blocklist-sync run`")
    assert shown == f"postgresql://{server.username}:***@{at}/{db}"
    assert conninfo_to_dict(shown)["dbname"] == db  # libpq's parser: it takes this form
    with pytest.raises(psycopg.ProgrammingError):
        conninfo_to_dict(f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}")  # and not SQLAlchemy's
    status = json.loads(invoke("status", "--all", "--json", env=cli_env(None, given)).stdout)
    assert status["database"] == shown


def test_check_names_what_is_wrong_and_what_to_do(
    sim: Simulator,
    make_database: Callable[..., str],
    tmp_path: Path,
) -> None:
    empty = database.resolve_database_url(make_database())  # not migrated
    env = cli_env(sim, empty, KALEYRA_API_KEY="wrong-key-123")
    result = invoke("check", env=env)
    assert result.returncode == 1
    assert (
        f"FAIL  schema: empty, not {database.head_revision()}; run `blocklist-sync migrate`" in result.stdout
    )
    assert f"FAIL  kaleyra {sim.sid} sms: Kaleyra answered HTTP 401 RBC001" in result.stdout
    assert f"FAIL  kaleyra {sim.sid} voice: skipped: sms failed account-wide" in result.stdout
    assert "wrong-key-123" not in result.stdout + result.stderr
    # A host that refuses: named, with the cause, at once (no retries in a check).
    started = time.monotonic()
    dead = invoke("check", env=cli_env(sim, empty, KALEYRA_BASE_URL="http://127.0.0.1:9/v1"))
    assert time.monotonic() - started < 20
    assert f"FAIL  kaleyra {sim.sid} sms: cannot connect to 127.0.0.1:9: connection refused" in dead.stdout
    # No database file is created by looking for it.
    missing = invoke("check", env=cli_env(sim, None), cwd=tmp_path)
    assert "FAIL  database: blocklist-sync.db does not exist" in missing.stdout
    assert not (tmp_path / "blocklist-sync.db").exists()
    # A configuration error: one line, exit 2.
    bad = invoke("check", env=cli_env(None, empty))
    assert (bad.returncode, bad.stdout, bad.stderr.strip()) == (
        2,
        "",
        "blocklist-sync: error: KALEYRA_SID is not set; set it to the account SID from the Kaleyra console",
    )


# --- 2. interrupted runs -----------------------------------------------------------------------


def test_a_cancelled_run_is_neither_success_nor_failure(
    sim: Simulator,
    make_migrated_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    url, engine = fresh_db(make_migrated_database)
    sim.add("sms", numbers(5000))
    env = cli_env(sim, url, KALEYRA_CHANNELS="sms,voice", BLOCKLIST_SYNC_CONCURRENCY="1")
    assert invoke("run", env=env).returncode == 0
    sim.inject("slow", times=100_000, seconds=0.02)
    metrics = tmp_path / "m.prom"
    served = sim.requests
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync", "run", "--metrics-file", str(metrics)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while sim.requests < served + 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"{sim.sid} voice: cancelled: not started: cancelled by SIGINT; nothing was applied" in out
    assert [r[:2] for r in run_rows(engine, sim.sid)] == [
        ("sms", "succeeded"),
        ("voice", "succeeded"),
        ("sms", "cancelled"),
    ]
    status = invoke("status", env=env)
    assert status.returncode == 0, status.stdout  # not a failure ...
    assert re.search(rf"{sim.sid}\s+sms\s+\S+ ago\s+cancelled", status.stdout)
    stale = invoke("status", "--max-age", "1s", env=env)
    assert stale.returncode == 1  # ... but staleness still shows
    assert f"PROBLEM {sim.sid} sms: last success " in stale.stdout
    text = metrics.read_text()
    labels = f'account="{sim.sid}",channel="sms"'
    assert f'blocklist_sync_last_run_status{{{labels},status="cancelled"}} 1.0' in text
    assert f"blocklist_sync_last_run_success{{{labels}}}" not in text  # neither 1 nor 0
    assert f"blocklist_sync_last_success_timestamp_seconds{{{labels}}}" in text
    health = rows(
        engine,
        "SELECT channel, last_run_status, last_success_at IS NOT NULL "
        "FROM blocklist_sync_health WHERE account_sid = :a ORDER BY channel",
        a=sim.sid,
    )
    assert health == [("sms", "cancelled", True), ("voice", "succeeded", True)]


# --- 3. scope --------------------------------------------------------------------------------


def test_status_and_metrics_judge_only_the_configured_accounts(
    sim: Simulator, other_sim: Simulator, make_migrated_database: Callable[[], str], tmp_path: Path
) -> None:
    url, _ = fresh_db(make_migrated_database)
    other_sim.add("sms", numbers(5))
    other_env = cli_env(other_sim, url, KALEYRA_CHANNELS="sms")
    assert invoke("run", env=other_env).returncode == 0
    other_sim.inject("E110", times=10)
    assert invoke("run", env=other_env).returncode == 1  # the old account's last sweep failed
    sim.add("sms", numbers(5))
    env = cli_env(sim, url, KALEYRA_CHANNELS="sms")
    metrics = tmp_path / "m.prom"
    assert invoke("run", "--metrics-file", str(metrics), env=env).returncode == 0
    status = invoke("status", "--max-age", "2h", env=env)
    assert status.returncode == 0, status.stdout
    assert "not configured (listed, not judged; --all judges them):" in status.stdout
    assert re.search(rf"^  {other_sim.sid}\s+sms\s+.*failed", status.stdout, re.MULTILINE)
    assert invoke("status", "--all", env=env).returncode == 1
    assert other_sim.sid not in metrics.read_text() and sim.sid in metrics.read_text()
    records = json.loads(invoke("status", "--json", env=env).stdout)["channels"]
    assert {(r["account_sid"], r["configured"], r["ok"]) for r in records} == {
        (sim.sid, True, True),
        (other_sim.sid, False, True),
    }
    # A configured channel never swept is judged: --max-age fails on it, naming it.
    never = invoke("status", "--max-age", "2h", env=cli_env(sim, url, KALEYRA_CHANNELS="sms,voice"))
    assert never.returncode == 1
    assert f"PROBLEM {sim.sid} voice: never swept, and --max-age is 2h" in never.stdout


def test_account_flag_scopes_run_status_and_check(
    sim: Simulator, other_sim: Simulator, make_migrated_database: Callable[[], str], tmp_path: Path
) -> None:
    url, engine = fresh_db(make_migrated_database)
    for s in (sim, other_sim):
        s.add("sms", numbers(5))
    config = two_accounts(tmp_path, sim, other_sim)
    env = cli_env(None, url, BLOCKLIST_SYNC_CONFIG=str(config))
    result = invoke("run", "--account", sim.sid, "--channel", "sms", env=env)
    assert result.returncode == 0, result.stderr
    assert run_rows(engine, sim.sid) == [("sms", "succeeded", None)]
    assert run_rows(engine, other_sim.sid) == []
    assert invoke("status", "--account", sim.sid, env=env).returncode == 0
    assert invoke("status", env=env).returncode == 0
    # Everything configured is judged: the other account was never swept.
    assert invoke("status", "--max-age", "1h", env=env).returncode == 1
    only = invoke("status", "--max-age", "1h", "--account", sim.sid, "--json", env=env)
    assert {r["account_sid"] for r in json.loads(only.stdout)["channels"]} == {sim.sid}
    check = invoke("check", "--account", other_sim.sid, env=env)
    assert check.returncode == 0 and sim.sid not in check.stdout
    unknown = invoke("run", "--account", "HXNOPE", env=env)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("blocklist-sync: error: --account HXNOPE is not configured")


# --- 4. failures that explain themselves -------------------------------------------------------


@pytest.mark.slow
def test_an_unreachable_host_is_named_with_its_cause_and_every_channel_gets_a_line(
    sim: Simulator, make_migrated_database: Callable[[], str]
) -> None:
    url, engine = fresh_db(make_migrated_database)
    env = cli_env(sim, url, KALEYRA_BASE_URL="http://127.0.0.1:9/v1")
    started = time.monotonic()
    result = invoke("run", env=env)
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    retries = [line for line in result.stderr.splitlines() if "sync.kaleyra" in line]
    attempts = [
        re.search(
            r"attempt (\d) of 5 failed: cannot connect to 127\.0\.0\.1:9: connection "
            r"refused; retrying in [\d.]+s",
            line,
        )
        for line in retries[:-1]
    ]
    assert [a.group(1) if a else None for a in attempts] == ["1", "2", "3", "4"]
    assert re.search(
        r"ERROR sync\.kaleyra: gave up after 5 attempt\(s\) in [\d.]+s: cannot "
        r"connect to 127\.0\.0\.1:9: connection refused",
        retries[-1],
    )
    assert "stamina" not in result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith(f"{sim.sid} sms: failed, ")
    assert "cannot connect to 127.0.0.1:9: connection refused" in out[1]
    for channel in ("whatsapp", "voice"):
        assert (
            f"{sim.sid} {channel}: skipped: not tried, because sms failed with an error for "
            "the whole account (above)" in out
        )
    assert [r[:2] for r in run_rows(engine, sim.sid)] == [("sms", "failed")]


def test_a_name_that_does_not_resolve_says_so(
    sim: Simulator, make_migrated_database: Callable[[], str]
) -> None:
    url, _ = fresh_db(make_migrated_database)
    env = cli_env(sim, url, KALEYRA_BASE_URL="http://no-such-host.invalid/v1", KALEYRA_CHANNELS="sms")
    result = invoke("check", env=env)
    assert "cannot resolve no-such-host.invalid: name not resolved" in result.stdout


def test_status_max_age_names_each_stale_channel_in_text(
    sim: Simulator, make_migrated_database: Callable[[], str]
) -> None:
    url, engine = fresh_db(make_migrated_database)
    sim.add("sms", numbers(5))
    env = cli_env(sim, url, KALEYRA_CHANNELS="sms,whatsapp")
    assert invoke("run", env=env).returncode == 0
    with engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(
            text(
                "UPDATE sync_runs SET finished_at = finished_at - interval '3 hours' WHERE account_sid = :a"
            ),
            {"a": sim.sid},
        )
    result = invoke("status", "--max-age", "2h", env=env)
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    assert problems == [
        f"PROBLEM {sim.sid} sms: last success 3h00m ago, older than --max-age 2h",
        f"PROBLEM {sim.sid} whatsapp: last success 3h00m ago, older than --max-age 2h",
    ]


# --- 5. logs ---------------------------------------------------------------------------------


def test_json_logs_have_millisecond_utc_times_and_only_documented_flat_keys(
    sim: Simulator, pg_url: str
) -> None:
    sim.add("sms", numbers(150))
    sim.inject("WA500", at=1, times=1)  # one retry: the retry line's fields too
    result = invoke("run", "--log-format", "json", "-v", env=cli_env(sim, pg_url, KALEYRA_CHANNELS="sms"))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(r["message"].startswith("attempt 1 of 5 failed") for r in records)
    readme = documentation()
    for record in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), record
        assert set(record) <= set(JSON_FIELDS), record
        assert not any("." in key for key in record)
    for field in JSON_FIELDS:
        assert f"`{field}`" in readme, f"JSON log field {field} is not documented in the README"


def test_log_level_flags(sim: Simulator, pg_url: str) -> None:
    sim.add("sms", numbers(5))
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    assert "INFO sync.job: sweep succeeded" in invoke("run", env=env).stderr
    for flags in (["-q"], ["--log-level", "warning"]):
        result = invoke("run", *flags, env=env)
        assert result.returncode == 0 and " INFO " not in result.stderr, flags
    assert "DEBUG" in invoke("run", "-v", env=env).stderr
    both = invoke("run", "-v", "--log-level", "info", env=env)
    assert both.returncode == 2 and "give --log-level or -v/-q, not both" in both.stderr


def test_log_lines_never_land_inside_the_progress_bar(sim: Simulator, pg_url: str) -> None:
    sim.add("sms", numbers(3000))
    sim.inject("WA500", at=10, times=1)  # a retry line while the bar is drawn
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", BLOCKLIST_SYNC_CONCURRENCY="1")
    command = f"stty cols 120 rows 40; {sys.executable} -m sync run"
    tty = run_on_a_terminal(command, env)
    assert tty.returncode == 0, tty.stdout
    assert " rows" in tty.stdout  # the bar was drawn
    # Every log line starts a line of its own: after a newline or a carriage return that
    # cleared the bar, never glued behind the bar's text.
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty.stdout)
    for match in re.finditer(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING)", screen):
        before = screen[: match.start()].rstrip(" ")
        assert before == "" or before[-1] in "\r\n", repr(screen[match.start() - 80 : match.end()])
    assert "attempt 1 of 5 failed" in screen


# --- 6. metrics and alerts -------------------------------------------------------------------


def test_last_run_gauges_and_their_deprecated_names(sim: Simulator, pg_url: str, tmp_path: Path) -> None:
    sim.add("sms", numbers(150))
    metrics = tmp_path / "m.prom"
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    assert invoke("run", "--metrics-file", str(metrics), env=env).returncode == 0
    text = metrics.read_text()
    labels = f'{{account="{sim.sid}",channel="sms"}}'
    for new, old, value in (
        ("last_run_added", "added", "150.0"),
        ("last_run_pages", "pages", "2.0"),
        ("last_run_removed", "removed", "0.0"),
    ):
        assert f"blocklist_sync_{new}{labels} {value}" in text
        assert f"blocklist_sync_{old}{labels} {value}" in text
        assert f"# HELP blocklist_sync_{old} Deprecated (removed in 0.4): use blocklist_sync_{new}." in text
    assert f"blocklist_sync_last_run_duration_seconds{labels}" in text
    assert (
        f'blocklist_sync_last_run_status{{account="{sim.sid}",channel="sms",status="succeeded"}} 1.0' in text
    )


def listening_addresses(pid: int, port: int) -> set[str]:
    """Local addresses ``pid`` listens on at ``port`` (from /proc/PID/net/tcp)."""
    found = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.parametrize(
    ("flags", "expected"), [([], "127.0.0.1"), (["--metrics-address", "0.0.0.0"], "0.0.0.0")]
)
def test_metrics_port_listens_on_loopback_unless_told(
    sim: Simulator, pg_url: str, flags: list[str], expected: str
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync", "schedule", "--every", "1h", "--metrics-port", str(port), *flags],
        env=cli_env(sim, pg_url, KALEYRA_CHANNELS="sms"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not listening_addresses(proc.pid, port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listening_addresses(proc.pid, port) == {expected}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def promtool() -> str:
    return require_tool("promtool", install="Debian/Ubuntu: apt-get install prometheus")


def run_promtool(*args: str, cwd: Path = REPO / "cron") -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_alerting_rules_pass_promtool() -> None:
    check = run_promtool("check", "rules", "blocklist-sync-alerts.yaml")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 8 rules found" in check.stdout
    test = run_promtool("test", "rules", "blocklist-sync-alerts.test.yaml")
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def test_promtool_would_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The rule test is not vacuous: a rule that fires an hour late fails it."""
    for name in ("blocklist-sync-alerts.yaml", "blocklist-sync-alerts.test.yaml"):
        (tmp_path / name).write_text((REPO / "cron" / name).read_text())
    rules = tmp_path / "blocklist-sync-alerts.yaml"
    rules.write_text(rules.read_text().replace("> 2 * 3600", "> 3 * 3600"))
    test = run_promtool("test", "rules", "blocklist-sync-alerts.test.yaml", cwd=tmp_path)
    assert test.returncode != 0 and "BlocklistSyncStale" in test.stdout + test.stderr


def test_every_metric_the_alerts_read_is_published(sim: Simulator, pg_url: str, tmp_path: Path) -> None:
    sim.add("sms", numbers(5))
    metrics = tmp_path / "m.prom"
    assert (
        invoke(
            "run", "--metrics-file", str(metrics), env=cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
        ).returncode
        == 0
    )
    published = set(re.findall(r"^# TYPE (\w+) ", metrics.read_text(), re.MULTILINE))
    read = set(re.findall(r"\bblocklist_sync_\w+", (REPO / "cron/blocklist-sync-alerts.yaml").read_text()))
    assert read - published == set()


# --- 8. shards -------------------------------------------------------------------------------


def accounts(count: int) -> list[Account]:
    return [Account(sid=f"HX{i:04d}", api_key="k", channels=CHANNELS[: 1 + i % 3]) for i in range(count)]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("size", [1, 4, 37])
def test_n_shards_cover_every_pair_exactly_once(count: int, size: int) -> None:
    configured = accounts(size)
    every = sorted((a.sid, c) for a in configured for c in a.channels)
    swept = [
        (a.sid, c)
        for k in range(count)
        for a, chans in pairs_to_sweep(configured, shard=Shard(k, count))
        for c in chans
    ]
    assert sorted(swept) == every  # each pair once: no gap, no overlap
    shares = [sum(len(c) for _, c in pairs_to_sweep(configured, shard=Shard(k, count))) for k in range(count)]
    assert max(shares) - min(shares) <= 1


def test_shard_settings() -> None:
    assert parse_shard("2/4", {}, "--shard") == Shard(2, 4)
    assert parse_shard("4", {"JOB_COMPLETION_INDEX": "3"}, "--shard") == Shard(3, 4)
    bad_shards: list[tuple[str, dict[str, str]]] = [("4/4", {}), ("1/0", {}), ("x", {}), ("4", {})]
    for bad, env in bad_shards:
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad, env, "--shard")


@pytest.mark.slow
def test_shards_in_parallel_sweep_every_pair_once(
    sim: Simulator, other_sim: Simulator, make_migrated_database: Callable[[], str], tmp_path: Path
) -> None:
    url, engine = fresh_db(make_migrated_database)
    for s in (sim, other_sim):
        for channel in CHANNELS:
            s.add(channel, numbers(150))
    env = cli_env(
        None, url, BLOCKLIST_SYNC_CONFIG=str(two_accounts(tmp_path, sim, other_sim)), BLOCKLIST_SYNC_SHARD="4"
    )
    # Four pods of an Indexed Job: the index comes from JOB_COMPLETION_INDEX.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sync", "run"],
            env={**env, "JOB_COMPLETION_INDEX": str(k)},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    swept = rows(engine, "SELECT account_sid, channel, status FROM sync_runs ORDER BY 1, 2")
    assert swept == sorted((s.sid, c, "succeeded") for s in (sim, other_sim) for c in CHANNELS)


@pytest.mark.slow
def test_overlapping_shards_never_sweep_a_pair_twice(
    sim: Simulator, other_sim: Simulator, make_migrated_database: Callable[[], str], tmp_path: Path
) -> None:
    url, engine = fresh_db(make_migrated_database)
    for s in (sim, other_sim):
        for channel in CHANNELS:
            s.add(channel, numbers(150))
    env = cli_env(None, url, BLOCKLIST_SYNC_CONFIG=str(two_accounts(tmp_path, sim, other_sim)))
    first = invoke("run", "--shard", "0/2", env=env)
    assert first.returncode == 0, first.stderr
    # A pod of an older rollout that thinks it is the only shard: it overlaps shard 0/2 ...
    sim.inject("slow", times=100_000, seconds=0.01)
    other_sim.inject("slow", times=100_000, seconds=0.01)
    both = [
        subprocess.Popen(
            [sys.executable, "-m", "sync", "run", "--shard", shard],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for shard in ("0/1", "1/2")
    ]
    outs = [p.communicate(timeout=120) for p in both]
    assert [p.returncode for p in both] == [0, 0], outs
    # ... and yet every pair was swept exactly once, by whichever shard got there first.
    swept = rows(
        engine,
        "SELECT account_sid, channel, COUNT(*) FROM sync_runs "
        "WHERE status <> 'skipped' GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert swept == sorted((s.sid, c, 1) for s in (sim, other_sim) for c in CHANNELS)
    assert "skipped" in outs[0][0]


# --- 9. the README ---------------------------------------------------------------------------


def test_the_configuration_table_names_every_setting() -> None:
    import click

    from sync.cli import cli

    readme = documentation()
    table = readme[readme.index("## Configuration") : readme.index("## Commands")]
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                assert f"`{param.envvar}`" in table, f"{name} {param.opts[0]}: {param.envvar}"
                assert f"`{param.opts[-1]}" in table, f"{name} {param.opts[-1]} missing"
    for flag in ("--account SID", "--shard K/N", "--metrics-address", "--log-level"):
        assert flag in table


def test_the_documented_shell_completion_line_prints_a_completion_script() -> None:
    readme = documentation()
    assert 'eval "$(_BLOCKLIST_SYNC_COMPLETE=bash_source blocklist-sync)"' in readme
    script = subprocess.run(
        [str(Path(sys.executable).parent / "blocklist-sync")],
        env={**cli_env(None, None), "_BLOCKLIST_SYNC_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 0 and "complete -o nosort -F _blocklist_sync_completion" in script.stdout


@pytest.mark.slow
def test_the_simulator_example_shows_a_real_diff(tmp_path: Path) -> None:
    """The README's simulate + curl + run example, run line by line as written (the port
    swapped for a free one, so parallel test runs do not collide)."""
    readme = documentation()
    start = readme.index("<!-- example: simulator-diff -->")
    block = readme[
        readme.index("```sh\n", start) + 6 : readme.index("```", readme.index("```sh\n", start) + 6)
    ]
    port = str(free_port())
    lines = block.replace("8099", port).replace("\\\n", " ").splitlines()
    simulate = lines[0].split("&")[0].split()
    result, printed = beside_simulate(simulate, "\n".join(lines[1:]), port=port, cwd=tmp_path, timeout=120)
    assert "KALEYRA_SID=HXSIM000000001IN" in printed  # the SID and key the example exports
    assert "KALEYRA_API_KEY=sim-key-0000000000000000000000000" in printed
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HXSIM000000001IN sms: succeeded, 500 blocklisted, +500 -0" in result.stdout
    assert "HXSIM000000001IN sms: succeeded, 502 blocklisted, +2 -0" in result.stdout


def test_a_wrong_key_gives_every_channel_a_summary_line(sim: Simulator, pg_url: str) -> None:
    result = invoke("run", env=cli_env(sim, pg_url, KALEYRA_API_KEY="wrong-key-123"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{sim.sid} sms: failed, ")
    assert "RBC001" in lines[1] and "check KALEYRA_SID and the API key" in lines[2]
    assert lines[3:] == [
        f"{sim.sid} {channel}: skipped: not tried, because sms failed with an error for the "
        "whole account (above)"
        for channel in ("whatsapp", "voice")
    ]
    assert "wrong-key-123" not in result.stdout + result.stderr
