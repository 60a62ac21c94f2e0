"""Operations that must end in the truth: a pod killed mid-sweep, a signal after the commit, a
database whose role defaults are hostile to long sessions, a lock someone else holds."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from sync import database
from sync.simulator import Simulator
from sync.store import Store
from sync.sweep import Outcome
from sync.vocabulary import Trigger
from tests.conftest import (
    REPO,
    SweepOptionFields,
    cli_env,
    entries,
    invoke,
    numbers,
    rows,
    sweep,
    wait_for,
)

# What a shard runs with (`run --shard`): a pair swept moments ago, or being swept, is not its.
SHARD: SweepOptionFields = {
    "trigger": Trigger.SCHEDULED,
    "skip_if_swept_within": 1800.0,
    "lock_held_is_skip": True,
}


def runs(engine: Engine, sim: Simulator) -> list[tuple[Any, ...]]:
    return rows(
        engine,
        "SELECT channel, status, error FROM sync_runs WHERE account_sid = :a ORDER BY id",
        a=sim.sid,
    )


def own_database(make_migrated_database: Callable[[], str]) -> tuple[str, Engine]:
    """A migrated database of the test's own, for settings no other test may share."""
    url = database.resolve_database_url(make_migrated_database())
    return url, database.make_engine(url)


def libpq(url: str, **query: str) -> str:
    """``url`` as psycopg and libpq take it, with ``query`` options added."""
    parsed = make_url(url).set(drivername="postgresql").update_query_dict(query)
    return parsed.render_as_string(hide_password=False)


# -- a pod killed mid-sweep ------------------------------------------------------------------


def test_a_shard_retry_fails_the_run_a_killed_pod_left_running_and_sweeps(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(150))
    # What a SIGKILLed pod (OOM, a lost node) leaves: its run row `running`, a minute old.
    with psycopg.connect(libpq(str(engine.url)), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO sync_runs (account_sid, channel, trigger, status, started_at) "
            "VALUES (%s, 'sms', 'scheduled', 'running', now() - interval '1 minute')",
            (sim.sid,),
        )
    result = sweep(sim, store, **SHARD)  # the Job's retry, moments later
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert entries(engine, sim) == set(numbers(150))
    (killed_status, killed_error), (status, error) = [r[1:] for r in runs(engine, sim)]
    assert killed_status == "failed" and "process ended before the sweep finished" in killed_error
    assert (status, error) == ("succeeded", None)
    # A sweep that did succeed moments ago still counts: the next retry skips the pair.
    assert sweep(sim, store, **SHARD).outcome is Outcome.SKIPPED


# -- a signal after the commit ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "code"),
    [
        (("sms",), 0),  # the stop came after the last channel applied: nothing was stopped
        (("sms", "whatsapp"), 143),  # whatsapp was never started: that the stop did stop
    ],
)
def test_sigterm_while_the_changes_commit_reports_them_committed(
    sim: Simulator, make_migrated_database: Callable[[], str], channels: tuple[str, ...], code: int
) -> None:
    url, engine = own_database(make_migrated_database)
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        # Holds the apply transaction open, inside it, long enough to signal the process there.
        conn.execute("""
            CREATE FUNCTION kbs_test_linger() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$;
            CREATE TRIGGER kbs_test_linger BEFORE INSERT ON blocklist_periods
            FOR EACH STATEMENT EXECUTE FUNCTION kbs_test_linger()""")
    for channel in channels:
        sim.add(channel, numbers(300))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync", "run"],
        env=cli_env(sim, url, KALEYRA_CHANNELS=",".join(channels)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: rows(
                engine,
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event = 'PgSleep'",
            )
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert entries(engine, sim, "sms") == set(numbers(300))
    assert rows(engine, "SELECT COUNT(*) FROM blocklist_events WHERE account_sid = :a", a=sim.sid) == [(300,)]
    assert runs(engine, sim)[0] == ("sms", "succeeded", None)
    assert f"{sim.sid} sms: succeeded, 300 blocklisted, +300 -0" in out
    assert "SIGTERM arrived while the changes were being applied; they were committed" in out + err
    assert "applies nothing" not in err and "nothing was applied" not in err
    if "whatsapp" in channels:
        assert f"{sim.sid} whatsapp: cancelled: not started: cancelled by SIGTERM" in out
        assert entries(engine, sim, "whatsapp") == set()


# -- role defaults meant for web traffic -----------------------------------------------------


@pytest.mark.slow
def test_a_databases_short_timeouts_do_not_starve_a_sweep(
    sim: Simulator, make_migrated_database: Callable[[], str]
) -> None:
    url, engine = own_database(make_migrated_database)
    name = make_url(url).database
    # What a managed server's defaults for web traffic look like; on this test's database only.
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        for setting, value in (
            ("statement_timeout", "50ms"),
            ("idle_in_transaction_session_timeout", "100ms"),
            ("idle_session_timeout", "100ms"),
            ("lock_timeout", "10ms"),
        ):
            conn.execute(f"ALTER DATABASE \"{name}\" SET {setting} = '{value}'")
    store = Store(database.make_engine(url))
    sim.add("sms", numbers(800))
    sim.latency = 0.15  # the listing's COPY (9 pages) outlasts 50 ms many times over
    first = sweep(sim, store)
    assert first.outcome is Outcome.SUCCEEDED, first.message
    sim.remove("sms", numbers(150))  # each removal check idles in a transaction for 150 ms
    second = sweep(sim, store)
    assert second.outcome is Outcome.SUCCEEDED, second.message
    assert second.diff and (second.diff.added, second.diff.removed) == (0, 150)
    # The test's own reads keep the defaults meant for web traffic, and on a busy machine may
    # idle longer than them between a SELECT and its ROLLBACK: they read in autocommit.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        held = set(
            c.execute(
                text("SELECT mobile FROM blocklist_entries WHERE account_sid = :a AND channel = 'sms'"),
                {"a": sim.sid},
            ).scalars()
        )
    assert held == set(numbers(650, start=150))


# -- a lock someone else holds ---------------------------------------------------------------


def lock_holder_pid(engine: Engine, account_sid: str, channel: str) -> int:
    """The session whose transaction holds the channel's lock row."""
    [(pid,)] = rows(
        engine,
        "SELECT a.pid FROM pg_stat_activity a JOIN sync_channel_locks k ON a.backend_xid = k.xmax "
        "WHERE k.account_sid = :a AND k.channel = :c",
        a=account_sid,
        c=channel,
    )
    assert isinstance(pid, int)
    return pid


def test_a_locked_channel_names_the_blocklist_sync_process_that_holds_it(
    sim: Simulator, store: Store, engine: Engine, pg_url: str
) -> None:
    sim.add("sms", numbers(5000))
    sim.inject("slow", times=100_000, seconds=0.05)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync", "run", "--channel", "sms"],
        env=cli_env(sim, pg_url, BLOCKLIST_SYNC_CONCURRENCY="1"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: sim.requests >= 3)
        locked = sweep(sim, store)
        shard = sweep(sim, store, **SHARD)
        # The holder, as the server sees it: the other process's session, named for the program.
        pid = int((locked.message or "").split("pid ")[1].split(",")[0])
        holder = rows(
            engine,
            "SELECT a.application_name FROM pg_stat_activity a JOIN sync_channel_locks k "
            "ON a.backend_xid = k.xmax WHERE a.pid = :pid AND k.account_sid = :sid AND k.channel = 'sms'",
            pid=pid,
            sid=sim.sid,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert holder == [(database.APPLICATION_NAME,)]
    assert locked.outcome is Outcome.LOCKED and locked.exit_code == 75
    assert locked.message is not None and locked.message.startswith(
        f"another blocklist-sync process is sweeping this channel (pid {pid}, role postgres, "
        f"application '{database.APPLICATION_NAME}', from 127.0.0.1, connected "
    )
    assert locked.message.endswith("s ago); nothing was written")
    assert shard.outcome is Outcome.SKIPPED and f"pid {pid}," in (shard.message or "")
    assert ("sms", "cancelled") in [r[:2] for r in runs(engine, sim)]  # only the holder's run


def test_a_lock_held_longer_than_a_sweep_may_run_fails_and_names_its_holder(
    sim: Simulator, store: Store, engine: Engine, pg_url: str
) -> None:
    sim.add("sms", numbers(10))
    # A session stuck with the lock, named by its URL: that name wins over ours.
    stuck = Store(database.make_engine(f"{pg_url}?application_name=kbs-stuck-holder"))
    with stuck.lock_channel(sim.sid, "sms"):
        pid = lock_holder_pid(engine, sim.sid, "sms")
        fresh = sweep(sim, store)  # a lock held for less than a sweep may run: someone's sweep
        time.sleep(0.6)
        result = invoke("run", "--channel", "sms", "--sweep-timeout", "0.5s", env=cli_env(sim, pg_url))
        shard_in_time: SweepOptionFields = {**SHARD, "timeout": 0.5}
        shard = sweep(sim, store, **shard_in_time)
    assert fresh.outcome is Outcome.LOCKED
    assert f"another session holds this channel's lock (pid {pid}, role postgres, " in (fresh.message or "")
    assert "application 'kbs-stuck-holder'" in (fresh.message or "")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{sim.sid} sms: failed" in result.stdout
    assert "this channel's lock has been held for " in result.stdout
    assert "longer than a sweep may run (0.5s)" in result.stdout
    holder = f"by pid {pid}, role postgres, application 'kbs-stuck-holder', from 127.0.0.1, connected "
    assert holder in result.stdout
    assert f"SELECT pg_terminate_backend({pid})" in result.stdout
    # Not a shard's "someone else is on it" either: a success that would hide it for ever.
    assert shard.outcome is Outcome.FAILED and f"pg_terminate_backend({pid})" in (shard.message or "")
    assert runs(engine, sim) == []  # nothing was written without the lock
