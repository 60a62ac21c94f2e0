"""A hostile or broken server, config or operator: bounded, clear outcomes, nothing false stored.

Each test drives a misbehaving simulator over real HTTP into a real PostgreSQL (or runs the real
CLI) and asserts what a user would see: the tables, the run row, the output, the exit code, the
time taken and the memory used.
"""

from __future__ import annotations

import gzip
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Unpack

import pytest
from sqlalchemy import Engine, text

from sync import database
from sync.kaleyra import PagingError, ProtocolError, TransportError
from sync.numbers import canonical
from sync.output import summary_line
from sync.simulator import Response as SimulatorAnswer
from sync.simulator import Simulator
from sync.store import Store
from sync.sweep import Outcome, SweepOptions, SweepResult, sweep_channel
from tests.conftest import (
    PG_SERVER,
    REPO,
    TEST_PASSWORD,
    SweepOptionFields,
    cli_env,
    entries,
    invoke,
    leaked_secret,
    make_client,
    numbers,
    rows,
    run_cli,
)


def events(engine: Engine, sim: Simulator) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in rows(
            engine,
            "SELECT mobile, change FROM blocklist_events WHERE account_sid = :a ORDER BY id",
            a=sim.sid,
        )
    ]


def last_run(engine: Engine, sim: Simulator) -> tuple[Any, ...]:
    return rows(
        engine,
        "SELECT status, rejected, error, added, removed FROM sync_runs "
        "WHERE account_sid = :a ORDER BY id DESC LIMIT 1",
        a=sim.sid,
    )[0]


def sweep(
    sim: Simulator, store: Store, response_timeout: float | None = None, **options: Unpack[SweepOptionFields]
) -> SweepResult:
    client = (
        make_client(sim) if response_timeout is None else make_client(sim, response_timeout=response_timeout)
    )
    return sweep_channel(client, store, "sms", SweepOptions(**options))


# -- 1. canonical numbers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+919800000001", "+919800000001"),
        (" +919800000001", "+919800000001"),
        ("+91 98000-00001\n", "+919800000001"),
        ("+1 (415) 555.0100", "+14155550100"),
        ("+6834002", "+6834002"),  # Niue: 7 digits is a real number
        ("919800000001", None),  # no country is guessed
        ("+091980000000", None),
        ("+", None),
        ("abc", None),
        ("<script>", None),
        ("+91\n9800000001", "+919800000001"),  # any Unicode whitespace is a separator
        ("+91\t9800000001", "+919800000001"),
        ("+91\u30009800000001", "+919800000001"),  # ideographic space
        ("\ufeff+91\u200b9800\u200d000001\u200e", "+919800000001"),  # BOM, zero-width, bidi mark
        ("+٩١٩٨٠٠٠٠٠٠٠١", "+919800000001"),  # Arabic-Indic digits
        ("+۹۱۹۸۰۰۰۰۰۰۰۱", "+919800000001"),  # Extended Arabic-Indic (Persian) digits
        ("+९१९८०००००००१", "+919800000001"),  # Devanagari digits
        ("＋９１９８０００００００１", "+919800000001"),  # fullwidth plus and digits
        ("＋919800000001", "+919800000001"),
        ("+9198000000011234", None),
        ("+91980000\x0001", None),  # NUL, ESC and other controls still reject the row
        ("+91\x1b9800000001", None),
        ("+91\x1c9800000001", None),  # a file separator: Python's isspace(), not Unicode's
        ("+91\x7f9800000001", None),
        ("+٠٩١٩٨٠٠٠٠٠٠٠١", None),  # a leading zero in other digits is still a leading zero
        ("+91 abc 9800000001", None),
        ("+" + "9" * 3000, None),
        (919800000001, None),
        (None, None),
    ],
)
def test_canonical_form(raw: object, expected: str | None) -> None:
    assert canonical(raw) == expected


def test_variants_of_one_number_are_one_entry_with_one_history(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", ["+919800000001", " +919800000001", "+91 9800000001", "+919800000002"])
    first = sweep(sim, store)
    assert first.outcome is Outcome.SUCCEEDED
    assert entries(engine, sim) == {"+919800000001", "+919800000002"}
    assert sorted(events(engine, sim)) == [("+919800000001", "added"), ("+919800000002", "added")]
    # The held number is now listed only with a leading space: it did not change.
    sim.remove("sms", ["+919800000001", "+91 9800000001"])
    sim.add("sms", ["  +919800000001  "])
    second = sweep(sim, store)
    assert second.outcome is Outcome.SUCCEEDED and second.diff
    assert (second.diff.added, second.diff.removed) == (0, 0)
    assert len(events(engine, sim)) == 2


def test_rows_that_are_no_number_are_counted_never_stored(
    sim: Simulator, store: Store, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    sim.add("sms", numbers(150))
    garbage = ["abc", "<script>alert(1)</script>", "+", "+" + "1" * 3000, "+91\x1b[2J98"]
    sim.add("sms", garbage)
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED
    assert entries(engine, sim) == set(numbers(150))
    assert all(m.startswith("+9190000") for m, _ in events(engine, sim))
    assert last_run(engine, sim)[:2] == ("succeeded", 5)
    warning = next(r.getMessage() for r in caplog.records if "cannot be a phone number" in r.msg)
    assert "5 listed row(s)" in warning and "'abc'" in warning and "\x1b" not in warning
    assert len(warning) < 400  # a few short, escaped examples, not the 3,000-character row


def test_bytes_that_are_not_utf8_reject_their_row_only(sim: Simulator, store: Store, engine: Engine) -> None:
    body = (
        b'{"code":"CNT196","message":"ok","error":{},"data":['
        b'{"mobile":"+91\xff\xfe9800000001","channel_type":"1"},'
        b'{"mobile":"+919800000009","channel_type":"1"}]}'
    )
    sim.inject("raw", at=1, body=body)
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED
    assert entries(engine, sim) == {"+919800000009"}
    assert last_run(engine, sim)[:2] == ("succeeded", 1)


def test_status_shows_rejected_rows(sim: Simulator, pg_url: str) -> None:
    sim.add("sms", ["+919800000001", "garbage"])
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    assert invoke("run", env=env).returncode == 0
    status = invoke("status", "--json", env=env)
    channel = next(c for c in json.loads(status.stdout)["channels"] if c["account_sid"] == sim.sid)
    assert channel["last_run"]["rejected"] == 1
    text_status = invoke("status", env=env).stdout
    assert f"{sim.sid} sms: the last sweep rejected 1 listed row(s)" in text_status


def test_removal_checks_send_and_compare_canonical_forms(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(200))
    sweep(sim, store)
    # The listing skips 10 numbers (a shifting list), but they are still blocklisted.
    skipped = numbers(10)
    original = sim.lists["sms"].page
    # The simulator's listing, patched to move or lie as a vendor's (mypy forbids assigning a method).
    sim.lists["sms"].page = lambda offset, limit: [  # type: ignore[method-assign]
        m for m in original(offset, limit) if m not in skipped
    ]
    result = sweep(sim, store)
    assert result.diff and result.diff.removed == 0
    asked = {m for _, _, q in sim.request_log if "mobile" in q for m in q["mobile"].split(",")}
    assert set(skipped) <= asked and all(canonical(m) == m for m in asked)


# -- 2. secrets ---------------------------------------------------------------------------


def test_a_key_file_with_a_second_line_is_refused_without_printing_it(
    sim: Simulator, pg_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"{sim.api_key}\nsecond-line-of-the-file\n")
    env = cli_env(
        None, pg_url, KALEYRA_SID=sim.sid, KALEYRA_API_KEY_FILE=str(key_file), KALEYRA_BASE_URL=sim.base_url
    )
    result = invoke("run", env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "line breaks" in result.stderr
    assert "second-line" not in result.stderr + result.stdout


@pytest.mark.parametrize("sid", ["HXSIM0001\n", "HX SIM", "HX\x07SIM"])
def test_a_sid_with_whitespace_or_control_characters_is_refused(sid: str, pg_url: str) -> None:
    env = cli_env(None, pg_url, KALEYRA_SID=sid, KALEYRA_API_KEY="some-key-value")
    result = invoke("run", env=env)
    assert result.returncode == 2 and result.stderr.startswith("blocklist-sync: error: KALEYRA_SID")
    assert result.stderr.count("\n") == 1


def test_an_error_body_echoing_the_key_is_blanked_everywhere(
    sim: Simulator, pg_url: str, engine: Engine
) -> None:
    sim.add("sms", numbers(5))
    sim.inject("echo_key", at=1, times=10)
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", BLOCKLIST_SYNC_LOG_FORMAT="json")
    result = run_cli("run", env=env)  # run_cli fails the test if the key is in any output
    assert result.returncode == 1 and "Incorrect SID or API key" in result.stdout
    assert "***" in result.stdout
    stored = last_run(engine, sim)[2]
    assert "***" in stored and sim.api_key not in stored


def test_a_query_password_in_database_url_is_never_printed(
    sim: Simulator, make_database: Callable[..., str]
) -> None:
    url = make_database().replace("postgresql://postgres@", f"postgresql://postgres:{TEST_PASSWORD}@")
    query_url = f"{make_database()}?password={TEST_PASSWORD}&application_name=kbs"
    for db_url in (url, query_url):
        env = cli_env(None, db_url)
        migrate = invoke("migrate", env=env)
        status = invoke("status", env=env)
        assert migrate.returncode == 0 and "schema upgraded" in migrate.stdout
        assert status.returncode == 0
        assert "***" in migrate.stdout + status.stdout


def test_a_traceback_is_redacted_too(sim: Simulator) -> None:
    """Even an uncaught exception's traceback goes through the redaction."""
    code = (
        "from sync import redaction; redaction.install(); "
        f"redaction.register_secret({sim.api_key!r}); "
        f"raise RuntimeError('key was ' + {json.dumps(sim.api_key)!s})"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert "RuntimeError: key was ***" in result.stderr and sim.api_key not in result.stderr


# -- 3. only our own tables ---------------------------------------------------------------


def test_a_users_tables_with_the_staging_names_survive_sweeps(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    names = (
        "sweep_seen",
        "sweep_added",
        "sweep_removed",
        "kbs_staging_seen",
        "kbs_staging_added",
        "kbs_staging_removed",
    )
    with engine.begin() as c:
        for name in names:
            c.execute(text(f"CREATE TABLE IF NOT EXISTS {name} (mobile TEXT, channel_type TEXT)"))
            c.execute(text(f"INSERT INTO {name} VALUES ('user data', :sid)"), {"sid": sim.sid})
    sim.add("sms", numbers(120))
    sweep(sim, store)
    sim.remove("sms", numbers(3))
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED
    for name in names:
        assert rows(engine, f"SELECT mobile FROM {name} WHERE channel_type = :sid", sid=sim.sid) == [
            ("user data",)
        ]


def test_sqlite_staging_leaves_a_users_tables_alone(sim: Simulator, sqlite_store: Store) -> None:
    with sqlite_store.engine.begin() as c:
        c.execute(text("CREATE TABLE kbs_staging_seen (mobile TEXT, channel_type TEXT)"))
        c.execute(text("INSERT INTO kbs_staging_seen VALUES ('user data', NULL)"))
    sim.add("sms", numbers(20))
    assert sweep(sim, sqlite_store).outcome is Outcome.SUCCEEDED
    assert rows(sqlite_store.engine, "SELECT mobile FROM main.kbs_staging_seen") == [("user data",)]


# -- 4. checks that prove themselves ------------------------------------------------------


def test_a_filter_that_denies_everything_confirms_no_removal(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(300))
    sweep(sim, store)
    before = (entries(engine, sim), events(engine, sim))
    # The listing skips 30 rows (under the 20% guard), and the filter answers [] to everything.
    skipped = set(numbers(30, start=100))
    original = sim.lists["sms"].page
    # The simulator's listing, patched to move or lie as a vendor's (mypy forbids assigning a method).
    sim.lists["sms"].page = lambda offset, limit: [  # type: ignore[method-assign]
        m for m in original(offset, limit) if m not in skipped
    ]
    sim.lying_filter = True
    result = sweep(sim, store)
    # Proves nothing, so nothing is removed; and it is not a reason to fail the channel.
    assert result.outcome is Outcome.SUCCEEDED
    assert (entries(engine, sim), events(engine, sim)) == before
    assert rows(
        engine, "SELECT unconfirmed, listing_complete FROM sync_runs WHERE id = :i", i=result.run_id
    ) == [(30, False)]


# -- 5. bounded in time and memory --------------------------------------------------------


def test_a_trickling_server_meets_the_response_deadline(sim: Simulator, store: Store, engine: Engine) -> None:
    sim.add("sms", numbers(10))
    sim.inject("trickle", at=1, times=10, seconds=0.2)
    started = time.monotonic()
    result = sweep(sim, store, response_timeout=1.0)
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.FAILED and "deadline" in (result.message or "")
    assert elapsed < 15  # 3 attempts of ~1 s each, not 10 rows x 0.2 s x 100 bytes each
    assert entries(engine, sim) == set()


def test_the_client_reports_a_trickle_as_a_transport_error(sim: Simulator) -> None:
    sim.add("sms", numbers(3))
    sim.inject("trickle", at=1, times=10, seconds=0.1)
    with pytest.raises(TransportError, match="deadline"):
        list(make_client(sim, response_timeout=0.5).pages("sms"))


def test_the_sweep_deadline_stops_a_slow_sweep(sim: Simulator, store: Store, engine: Engine) -> None:
    sim.add("sms", numbers(500))
    sim.inject("slow", at=2, times=100, seconds=0.5)
    started = time.monotonic()
    result = sweep(sim, store, timeout=1.0)
    assert time.monotonic() - started < 5
    assert result.outcome is Outcome.FAILED and "deadline of 1s" in (result.message or "")
    assert last_run(engine, sim)[0] == "failed" and entries(engine, sim) == set()
    # The run row says what happened; which setting to raise is the CLI's advice, not history.
    with engine.connect() as c:
        query = text("SELECT error FROM sync_runs WHERE id = :id")
        error = c.execute(query, {"id": result.run_id}).scalar_one()
    assert "deadline of 1s" in error and "--" not in error
    assert "raise --sweep-timeout" in summary_line(result)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_trickled_sweep_within_seconds(
    sim: Simulator, pg_url: str, engine: Engine, stop: int
) -> None:
    sim.add("sms", numbers(50))
    sim.inject("trickle", at=1, times=100, seconds=0.5)
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    process = subprocess.Popen(
        [sys.executable, "-m", "sync", "run"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not rows(engine, "SELECT 1 FROM sync_runs WHERE account_sid = :a", a=sim.sid):
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.1)
    time.sleep(1.0)  # mid-response
    process.send_signal(stop)
    signalled = time.monotonic()
    process.communicate(timeout=15)
    assert time.monotonic() - signalled < 5
    assert process.returncode != 0
    status = last_run(engine, sim)
    assert status[0] != "running" and entries(engine, sim) == set()


def test_a_gzip_bomb_is_stopped_at_the_cap_in_flat_memory(
    sim: Simulator, pg_url: str, engine: Engine
) -> None:
    sim.add("sms", numbers(5))
    sim.inject("gzip_bomb", at=1, times=10, size=1 << 30)  # inflates to 1 GiB
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    result, peak_mb = run_cli_measuring_memory("run", env=env)
    assert result.returncode == 1 and "inflates past" in result.stdout
    assert peak_mb < 200, f"the CLI peaked at {peak_mb:.0f} MB"
    assert entries(engine, sim) == set()


def run_cli_measuring_memory(
    *args: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``run_cli``, and that one process's own peak resident memory in MB, as the process
    itself reads it at exit (``tests/peak_memory.py`` says why no figure from outside will do:
    they include what the pytest worker or an earlier child used)."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "peak-kib"
        result = subprocess.run(
            [sys.executable, str(REPO / "tests" / "peak_memory.py"), str(peak_file), *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            errors="backslashreplace",
        )
        peak_kib = int(peak_file.read_text())
    secret = leaked_secret(result.stdout + result.stderr)
    assert secret is None, f"blocklist-sync {' '.join(args)} printed a secret: {secret[:6]}…"
    return result, peak_kib / 1024


def test_the_memory_measured_is_the_clis_own_not_its_parents() -> None:
    """Run from a parent that has used 300 MB, the CLI measures as the CLI: the kernel's own
    figure for the child (``wait4``) reports the parent's 300 MB, which once failed the bomb
    test depending on what ran before it."""
    parent = (
        "import os, subprocess, sys\n"
        "ballast = bytearray(300 << 20)\n"
        "for i in range(0, len(ballast), 4096): ballast[i] = 1\n"
        "child = subprocess.Popen([sys.executable, *sys.argv[1:]], stdout=subprocess.DEVNULL)\n"
        "_, status, usage = os.wait4(child.pid, 0)\n"
        "print(usage.ru_maxrss // 1024)\n"
    )
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "peak-kib"
        wrapper = [str(REPO / "tests" / "peak_memory.py"), str(peak_file), "--version"]
        done = subprocess.run(
            [sys.executable, "-c", parent, *wrapper], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        own_mb = int(peak_file.read_text()) / 1024
    assert int(done.stdout) >= 300, "wait4 no longer inherits the parent's peak: simplify the helper"
    assert own_mb < 100, f"the CLI's own peak, {own_mb:.0f} MB, includes its parent's"


def test_a_huge_body_is_refused_before_it_is_read(sim: Simulator) -> None:
    body = json.dumps({"code": "CNT196", "message": "x" * (2 << 20), "data": [], "error": {}})
    sim.inject("raw", at=1, body=body.encode())
    with pytest.raises(ProtocolError, match="byte cap"):
        list(make_client(sim).pages("sms"))


def test_a_gzipped_honest_page_is_read(sim: Simulator) -> None:
    rows_ = [{"mobile": m, "channel_type": "1"} for m in numbers(3)]
    body = gzip.compress(json.dumps({"code": "CNT196", "message": "ok", "data": rows_, "error": {}}).encode())
    original = sim.get_blocklist

    def gzipped(sid: str, api_key: str | None, query: dict[str, str]) -> SimulatorAnswer:
        if query.get("offset") == "0":
            return 200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, body
        return original(sid, api_key, query)

    sim.get_blocklist = gzipped  # type: ignore[method-assign]  # patched: another answer
    assert [e.mobile for p in make_client(sim).pages("sms") for e in p.entries] == numbers(3)


def test_a_page_with_more_rows_than_asked_is_a_protocol_error(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(300))
    sim.inject("oversize", at=2)
    with pytest.raises(ProtocolError, match="101 rows where 100 were asked"):
        list(make_client(sim).pages("sms"))
    sim.inject("oversize", at=sim.requests + 2)
    assert sweep(sim, store).outcome is Outcome.FAILED
    assert entries(engine, sim) == set()


# -- 6. loop detection without false alarms -----------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_short_last_page_repeated_by_a_front_insert_ends_in_a_correct_sweep(
    sim: Simulator, store: Store, engine: Engine, concurrency: int
) -> None:
    sim.add("sms", numbers(230))  # pages of 100, 100, 30
    front = numbers(30, prefix="+9170000")

    def insert_at_front(request_number: int, channel: str, query: dict[str, str]) -> None:
        # Right after the short last page is served, 30 numbers arrive at the front: the page
        # at the next offset is the same 30 rows again.
        if query.get("offset") == "230" and not sim.lists["sms"]._members.issuperset(front):
            lst = sim.lists["sms"]
            lst._order[:0] = front
            lst._members.update(front)

    sim.on_request(insert_at_front)
    original = sim.get_blocklist
    served: list[str] = []

    def record(sid: str, api_key: str | None, query: dict[str, str]) -> SimulatorAnswer:
        answer = original(sid, api_key, query)
        if "offset" in query:
            served.append(query["offset"])
        return answer

    sim.get_blocklist = record  # type: ignore[method-assign]  # patched: another answer
    client = make_client(sim, concurrency=concurrency)
    from sync.sweep import sweep_channel as run_sweep

    result = run_sweep(client, store, "sms", SweepOptions())
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert "260" in served  # the page at 230 repeated the one at 200, and the sweep went on
    assert entries(engine, sim) == set(numbers(230))  # the 30 new ones come next sweep
    diff = sweep(sim, store).diff
    assert diff is not None and diff.added == 30


def test_a_server_ignoring_offset_still_fails_fast(sim: Simulator) -> None:
    sim.add("sms", numbers(30))  # one short page, served at every offset
    sim.ignore_offset = True
    with pytest.raises(PagingError, match="ignoring offset"):
        list(make_client(sim).pages("sms"))
    assert len([q for _, _, q in sim.request_log]) == 3


# -- 7. small ones ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"{PG_SERVER.replace('5432', 'abc')}/x", "port"),
        (f"{PG_SERVER.replace('5432', '99999')}/x", "out of range"),
        (f"{PG_SERVER}/x?sslmod=require", "unknown connection option sslmod"),
        ("mysql://u@h/db", "not supported"),
    ],
)
def test_a_malformed_database_url_is_one_line_and_exit_2(url: str, says: str) -> None:
    result = invoke("migrate", env=cli_env(None, url))
    assert result.returncode == 2 and says in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_canonical_costs_little_per_row() -> None:
    """Not a timing assertion: a sanity bound ten times the measured cost (README figure)."""
    seconds = min(timeit.repeat(lambda: canonical("+919800000001"), number=100_000, repeat=3))
    assert seconds / 100_000 < 5e-6


# -- the migration that repairs stored rows -----------------------------------------------


def test_migration_0003_merges_variants_and_drops_garbage_without_inventing_events(
    make_database: Callable[..., str],
) -> None:
    url = database.resolve_database_url(make_database())
    engine = database.make_engine(url)
    from alembic import command

    command.upgrade(database.alembic_config(engine), "0002")
    a, ch = "HXREPAIR", "sms"
    history = [  # (run, mobile, change): what the old code recorded
        (1, "+919800000001", "added"),
        (1, " +919800000001", "added"),  # two spellings, one sweep
        (1, "abc", "added"),
        (1, "+919800000002", "added"),
        (2, "+919800000002", "added"),
        (2, "+919800000002", "removed"),  # wrong: fixed below
        (3, "+91 9800000003", "added"),
        (4, "+919800000003", "added"),
        (4, "+91 9800000003", "removed"),  # re-spelled listing
        (5, "+919800000004", "added"),
        (6, "+919800000004", "removed"),
        (7, "+91 9800000004", "added"),  # truly re-added, in another spelling
    ]
    history = [h for h in history if h[0] != 2]
    present = {"+919800000001", " +919800000001", "abc", "+919800000002", "+919800000003", "+91 9800000004"}
    with engine.begin() as c:
        for run in range(1, 8):
            c.execute(
                text(
                    "INSERT INTO sync_runs (id, account_sid, channel, trigger, status, "
                    "started_at, finished_at) VALUES (:id, :a, :ch, 'manual', 'succeeded', "
                    "now() - make_interval(days => 10 - :id), "
                    "now() - make_interval(days => 10 - :id))"
                ),
                {"id": run, "a": a, "ch": ch},
            )
        for run, mobile, change in history:
            c.execute(
                text(
                    "INSERT INTO blocklist_events (account_sid, channel, mobile, change, "
                    "detected_at, initial_load, run_id) VALUES (:a, :ch, :m, :c, "
                    "now() - make_interval(days => 10 - :r), :r = 1, :r)"
                ),
                {"a": a, "ch": ch, "m": mobile, "c": change, "r": run},
            )
        for mobile in present:
            run = max(r for r, m, c in history if m == mobile and c == "added")
            c.execute(
                text(
                    "INSERT INTO blocklist_entries (account_sid, channel, mobile, "
                    "channel_type, added_at, added_run_id) VALUES (:a, :ch, :m, '1', "
                    "now() - make_interval(days => 10 - :r), :r)"
                ),
                {"a": a, "ch": ch, "m": mobile, "r": run},
            )
    command.upgrade(database.alembic_config(engine), "head")
    got_events = rows(engine, "SELECT run_id, mobile, change FROM blocklist_events ORDER BY id")
    assert got_events == [
        (1, "+919800000001", "added"),
        (1, "+919800000002", "added"),
        (3, "+919800000003", "added"),
        (5, "+919800000004", "added"),
        (6, "+919800000004", "removed"),
        (7, "+919800000004", "added"),
    ]
    got_entries = rows(
        engine, "SELECT mobile, added_run_id, channel_type FROM blocklist_entries ORDER BY mobile"
    )
    assert got_entries == [
        ("+919800000001", 1, "1"),
        ("+919800000002", 1, "1"),
        ("+919800000003", 3, "1"),
        ("+919800000004", 7, "1"),
    ]
    assert all(re.fullmatch(r"\+[1-9]\d{6,14}", m) for _, m, _ in got_events)


# -- found by review ----------------------------------------------------------------------


def test_a_server_capping_every_response_confirms_no_false_removal(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(500))
    sim.rows_per_page = 40  # listing pages and check answers alike
    sweep(sim, store)
    # The listing skips 60 numbers that are still blocklisted: 60 removal candidates, more
    # than one capped answer can hold.
    skipped = set(numbers(60, start=200))
    original = sim.lists["sms"].page
    # The simulator's listing, patched to move or lie as a vendor's (mypy forbids assigning a method).
    sim.lists["sms"].page = lambda offset, limit: [  # type: ignore[method-assign]
        m for m in original(offset, limit) if m not in skipped
    ]
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert result.diff and result.diff.removed == 0
    assert entries(engine, sim) == set(numbers(500))
    # The first check measures what the filter honours (40 of 100 listed numbers); every
    # later one asks no more than that, so no answer can be cut short.
    checks = [q["mobile"].split(",") for _, _, q in sim.request_log if "mobile" in q]
    assert len(checks[0]) == 100 and len(checks) > 1 and max(len(c) for c in checks[1:]) <= 40


def test_a_few_controls_unblocked_meanwhile_do_not_fail_the_sweep(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(1000))
    sweep(sim, store)
    listed = sim.numbers("sms")
    skipped = set(numbers(150, start=300))  # removal candidates that are still blocklisted
    original = sim.lists["sms"].page
    # The simulator's listing, patched to move or lie as a vendor's (mypy forbids assigning a method).
    sim.lists["sms"].page = lambda offset, limit: [  # type: ignore[method-assign]
        m for m in original(offset, limit) if m not in skipped
    ]
    first_check = True

    def unblock_some(request_number: int, channel: str, query: dict[str, str]) -> None:
        nonlocal first_check
        if "mobile" in query and first_check:  # between listing and checks, 3% are unblocked
            first_check = False
            sim.remove("sms", [m for m in listed[::33] if m not in skipped])

    sim.on_request(unblock_some)
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED, result.message  # some controls were denied
    assert set(sim.numbers("sms")) <= entries(engine, sim)  # nothing present was removed
    assert result.diff and result.diff.removed > 0  # the truly unblocked ones were


def test_a_failed_shard_sweep_is_retried_not_skipped(sim: Simulator, store: Store) -> None:
    sim.add("sms", numbers(10))
    sim.inject("503", times=3)  # every attempt of the first sweep's first page
    shard_like: SweepOptionFields = {"skip_if_swept_within": 1800.0, "lock_held_is_skip": True}
    assert sweep(sim, store, **shard_like).outcome is Outcome.FAILED
    assert sweep(sim, store, **shard_like).outcome is Outcome.SUCCEEDED
    assert sweep(sim, store, **shard_like).outcome is Outcome.SKIPPED  # done moments ago


def test_a_slow_status_line_is_bounded_by_the_request_budget(sim: Simulator) -> None:
    from sync.kaleyra import RetryPolicy

    sim.add("sms", numbers(3))
    sim.inject("slow", times=5, seconds=20)  # nothing at all for 20 s, within the read timeout
    client = make_client(
        sim,
        retry=RetryPolicy(attempts=1, timeout=0.5),
        response_timeout=0.5,
        connect_timeout=0.5,
        read_timeout=30.0,
    )
    started = time.monotonic()
    with pytest.raises(TransportError, match="no complete answer"):
        client.probe("sms")
    assert time.monotonic() - started < 10


def test_json_nested_too_deep_is_a_protocol_error(sim: Simulator) -> None:
    sim.inject("raw", at=1, body=b"[" * 200_000)
    with pytest.raises(ProtocolError, match="not JSON"):
        list(make_client(sim).pages("sms"))


def test_a_base_url_with_a_bad_port_is_one_line_and_exit_2(pg_url: str) -> None:
    env = cli_env(
        None,
        pg_url,
        KALEYRA_SID="HXSIM0001",
        KALEYRA_API_KEY="some-key-value",
        KALEYRA_BASE_URL="http://127.0.0.1:99999/v1",
    )
    result = invoke("check", env=env)
    assert result.returncode == 2 and "KALEYRA_BASE_URL" in result.stderr
    assert result.stderr.count("\n") == 1


def test_lookup_finds_a_number_stored_as_given(sim: Simulator, tmp_path: Path) -> None:
    sim.add("sms", ["+4407911123456"])  # E.164's shape, but phonenumbers writes it +447911…
    db = f"sqlite:///{tmp_path / 'x.db'}"
    env = cli_env(sim, db, KALEYRA_CHANNELS="sms")
    assert invoke("migrate", env=env).returncode == 0
    assert invoke("run", env=env).returncode == 0
    found = invoke("lookup", "+4407911123456", env=env)
    assert found.returncode == 0 and "sms: blocklisted" in found.stdout


def test_a_failed_listing_never_reaches_the_server_log(sim: Simulator, pg_url: str) -> None:
    """psycopg reports a COPY's failure to the server, which logs it: in fixed words only."""
    logs = sorted(Path("/var/log/postgresql").glob("postgresql-*.log"))
    if not logs:
        pytest.skip("no PostgreSQL server log readable here")
    sim.add("sms", numbers(300))
    sim.inject("echo_key", at=2, times=10)  # the first page is staged, then the key comes back
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", BLOCKLIST_SYNC_CONCURRENCY="1")
    log = logs[-1]
    start = log.stat().st_size
    assert invoke("run", env=env).returncode == 1
    # The server writes its log when it gets to it: a line logged after the run, once it shows,
    # means everything the run caused is in the file too.
    marker = f"kbs-test-marker {uuid.uuid4().hex}"
    with database.make_engine(pg_url).begin() as conn:
        conn.execute(text(f"DO $$ BEGIN RAISE LOG '{marker}'; END $$"))
    deadline = time.monotonic() + 30
    while marker not in (written := read_from(log, start)):
        assert time.monotonic() < deadline, "the server never logged the marker"
        time.sleep(0.02)
    assert sim.api_key not in written


def read_from(log: Path, offset: int) -> str:
    """What the server wrote to ``log`` from ``offset`` on (all of it, if it was rotated)."""
    with log.open("rb") as handle:
        handle.seek(offset if log.stat().st_size >= offset else 0)
        return handle.read().decode(errors="replace")
