"""Sweeps into PostgreSQL (and SQLite): the history must never be wrong."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from sync import database
from sync.guard import GuardLimits
from sync.output import summary_line
from sync.review import Review
from sync.simulator import Simulator
from sync.store import Store
from sync.sweep import Outcome, PageProgress, SweepOptions, sweep_channel
from sync.vocabulary import RunStatus
from tests.conftest import (
    REPO,
    cli_env,
    entries,
    invoke,
    make_client,
    numbers,
    rows,
    run_cli,
    sweep,
)


def events(engine: Engine, sim: Simulator) -> list[tuple[Any, ...]]:
    return rows(
        engine,
        "SELECT channel, mobile, change, initial_load, not_before IS NULL, run_id "
        "FROM blocklist_events WHERE account_sid = :a ORDER BY id",
        a=sim.sid,
    )


def runs(engine: Engine, sim: Simulator) -> list[tuple[Any, ...]]:
    return rows(
        engine,
        "SELECT id, channel, status, trigger, pages_fetched, entries_seen, added, "
        "removed, error FROM sync_runs WHERE account_sid = :a ORDER BY id",
        a=sim.sid,
    )


def test_initial_load_then_add_then_remove_then_re_add(sim: Simulator, store: Store, engine: Engine) -> None:
    sim.add("sms", numbers(250))
    first = sweep(sim, store)
    assert first.outcome is Outcome.SUCCEEDED and first.diff and first.diff.added == 250
    assert entries(engine, sim) == set(numbers(250))
    assert all(e[2:5] == ("added", True, True) for e in events(engine, sim))

    sim.add("sms", ["+917777700001"])
    sim.remove("sms", numbers(2))
    second = sweep(sim, store)
    assert second.diff and (second.diff.added, second.diff.removed) == (1, 2)
    new = [e for e in events(engine, sim) if e[5] == second.run_id]
    assert sorted((e[1], e[2], e[3], e[4]) for e in new) == [
        ("+917777700001", "added", False, False),
        (numbers(1)[0], "removed", False, False),
        (numbers(2)[1], "removed", False, False),
    ]
    sim.add("sms", numbers(1))  # blocklisted again
    sweep(sim, store)
    history = [e[2] for e in events(engine, sim) if e[1] == numbers(1)[0]]
    assert history == ["added", "removed", "added"]
    assert numbers(1)[0] in entries(engine, sim)

    # The change window: after the previous succeeded sweep started, no later than commit.
    window = rows(
        engine,
        """
        SELECT e.not_before, e.detected_at, prev.started_at, r.finished_at
        FROM blocklist_events e JOIN sync_runs r ON r.id = e.run_id
        JOIN sync_runs prev ON prev.id = :prev WHERE e.run_id = :run""",
        prev=first.run_id,
        run=second.run_id,
    )
    assert all(nb == prev_start and detected == finished for nb, detected, prev_start, finished in window)
    assert [r[2] for r in runs(engine, sim)] == ["succeeded"] * 3


def test_a_no_change_sweep_writes_no_entry_or_event_row(sim: Simulator, store: Store, engine: Engine) -> None:
    sim.add("sms", numbers(300))
    sweep(sim, store)
    versions = "SELECT ctid::text, xmin::text FROM {} WHERE account_sid = :a ORDER BY 1"
    # blocklist_events is a view of the stretches: no stretch row written, no event either.
    before = rows(engine, versions.format("blocklist_periods"), a=sim.sid)
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED and result.diff and result.diff.seen == 300
    after = rows(engine, versions.format("blocklist_periods"), a=sim.sid)
    assert after == before  # same row versions: not even rewritten in place


def test_duplicates_across_pages_count_once(sim: Simulator, store: Store, engine: Engine) -> None:
    sim.add("sms", numbers(150))
    sim.lists["sms"]._order += numbers(30)  # the server lists 30 numbers again on a later page
    result = sweep(sim, store)
    assert result.diff and result.diff.added == 150 and result.diff.seen == 150
    assert len(events(engine, sim)) == 150


@pytest.mark.parametrize("fault", ["WA500", "malformed", "RBC001", "E110"])
def test_a_failure_at_page_k_applies_nothing(
    sim: Simulator, store: Store, engine: Engine, fault: str
) -> None:
    sim.add("sms", numbers(500))
    sweep(sim, store)
    sim.add("sms", numbers(50, start=900))
    sim.remove("sms", numbers(10))
    before = (entries(engine, sim), events(engine, sim))
    sim.inject(fault, at=sim.requests + 3, times=1 if fault == "malformed" else 10)
    result = sweep(sim, store)
    assert result.outcome is Outcome.FAILED
    assert (entries(engine, sim), events(engine, sim)) == before
    last = runs(engine, sim)[-1]
    assert last[2] == "failed" and "offset 200" in last[8] and sim.api_key not in last[8]


def test_rows_deleted_mid_sweep_produce_no_false_removal(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(1000))
    sweep(sim, store)
    gone = numbers(30, start=100)

    def delete_early_rows(request_number: int, channel: str, query: dict[str, str]) -> None:
        if query.get("offset") == "500":  # halfway: the list shifts left under our offset
            sim.remove("sms", gone)

    sim.on_request(delete_early_rows)
    result = sweep(sim, store)
    # 30 rows after offset 500 slid behind the offset and were never listed, yet they are still
    # blocklisted: the removal check keeps them. The 30 deleted numbers had been listed before
    # they went, so this sweep saw them; the next sweep records their removal.
    assert result.outcome is Outcome.SUCCEEDED and result.diff
    assert result.diff.listed == 970 and result.diff.removed == 0
    assert entries(engine, sim) == set(numbers(1000))
    assert [e for e in events(engine, sim) if e[2] == "removed"] == []
    result = sweep(sim, store)
    assert result.diff and result.diff.removed == 30
    assert {e[1] for e in events(engine, sim) if e[2] == "removed"} == set(gone)
    assert entries(engine, sim) == set(numbers(1000)) - set(gone)


def test_the_guard_holds_a_large_removal_until_forced(sim: Simulator, store: Store, engine: Engine) -> None:
    sim.add("sms", numbers(200))
    sweep(sim, store)
    sim.remove("sms", numbers(50))  # 25% > 20%
    held = sweep(sim, store)
    assert held.outcome is Outcome.HELD and held.exit_code == 3
    # The run row says why; the CLI's summary line says what to do about it.
    assert "it would remove 50 of 200 entries" in (held.message or "")
    advice = summary_line(held)
    assert f"run --dry-run --account {sim.sid} --channel sms" in advice and "--force" in advice
    assert len(entries(engine, sim)) == 200
    assert runs(engine, sim)[-1][2:3] == ("held",)
    looser = sweep(sim, store, guard=GuardLimits(max_removal_fraction=0.3))
    assert looser.outcome is Outcome.SUCCEEDED and len(entries(engine, sim)) == 150


def test_the_guard_ignores_small_channels(sim: Simulator, store: Store, engine: Engine) -> None:
    sim.add("sms", numbers(100))
    sweep(sim, store)
    sim.remove("sms", numbers(90))
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED  # 100 entries is not "over 100"


def test_an_empty_listing_over_held_entries_is_held_then_forced(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(20))
    sweep(sim, store)
    sim.remove("sms", numbers(20))
    held = sweep(sim, store)
    assert held.outcome is Outcome.HELD and "no numbers" in (held.message or "")
    assert len(entries(engine, sim)) == 20
    forced = sweep(sim, store, review=Review.blind())
    assert forced.outcome is Outcome.SUCCEEDED and entries(engine, sim) == set()


def test_dry_run_reports_changes_and_writes_only_its_run_row(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(200))
    sweep(sim, store)
    sim.remove("sms", numbers(60))
    sim.add("sms", ["+917777700001"])
    before = (entries(engine, sim), events(engine, sim))
    seen: list[tuple[str, str]] = []
    result = sweep_channel(
        make_client(sim),
        store,
        "sms",
        SweepOptions(review=Review.dry()),
        on_change=lambda _, ch, change, mobile: seen.append((change, mobile)),
    )
    assert result.outcome is Outcome.DRY_RUN and result.exit_code == 0
    assert sorted(seen) == [("added", "+917777700001")] + [("removed", m) for m in numbers(60)]
    assert (entries(engine, sim), events(engine, sim)) == before
    last = runs(engine, sim)[-1]
    assert last[2] == "dry_run" and (last[6], last[7]) == (1, 60) and "would be held" in last[8]


def test_a_held_lock_makes_the_other_run_exit_75_writing_nothing(
    sim: Simulator, store: Store, engine: Engine, pg_url: str
) -> None:
    sim.add("sms", numbers(10))
    with store.lock_channel(sim.sid, "sms"):
        result = invoke("run", "--channel", "sms", env=cli_env(sim, pg_url))
    assert result.returncode == 75, result.stderr
    assert "another blocklist-sync process" in result.stdout
    assert runs(engine, sim) == []


@pytest.mark.slow
def test_two_runs_at_once_exactly_one_applies(sim: Simulator, engine: Engine, pg_url: str) -> None:
    sim.add("sms", numbers(20_000))  # 200 slow pages: the second process starts well within
    sim.inject("slow", times=100_000, seconds=0.01)
    env = cli_env(sim, pg_url, BLOCKLIST_SYNC_CONCURRENCY="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sync", "run", "--channel", "sms"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    codes = sorted(p.wait(timeout=120) for p in procs)
    assert codes == [0, 75]
    assert [r[2] for r in runs(engine, sim)] == ["succeeded"]
    assert len(events(engine, sim)) == 20_000


def _start_run_and_wait(sim: Simulator, pg_url: str, pages: int) -> subprocess.Popen[str]:
    sim.inject("slow", times=100_000, seconds=0.02)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync", "run", "--channel", "sms"],
        env=cli_env(sim, pg_url, BLOCKLIST_SYNC_CONCURRENCY="1"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while sim.requests < pages and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


def test_a_process_killed_mid_sweep_leaves_consistent_tables(
    sim: Simulator, store: Store, engine: Engine, pg_url: str
) -> None:
    sim.add("sms", numbers(500))
    sweep(sim, store)
    sim.add("sms", numbers(10_000, start=1000))
    before = (entries(engine, sim), events(engine, sim))
    proc = _start_run_and_wait(sim, pg_url, pages=sim.requests + 5)
    proc.kill()
    proc.wait(timeout=10)
    assert (entries(engine, sim), events(engine, sim)) == before
    assert runs(engine, sim)[-1][2] == "running"  # the trace a crash leaves
    sim._faults.clear()
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED and result.diff and result.diff.added == 10_000
    statuses = [r[2] for r in runs(engine, sim)]
    assert statuses == ["succeeded", "failed", "succeeded"]
    assert "process ended" in runs(engine, sim)[1][8]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_sweep_cancels_applies_nothing_and_exits_128_plus_it(
    sim: Simulator, store: Store, engine: Engine, pg_url: str, signum: int, code: int
) -> None:
    sim.add("sms", numbers(10_000))
    proc = _start_run_and_wait(sim, pg_url, pages=5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert entries(engine, sim) == set() and events(engine, sim) == []
    last = runs(engine, sim)[-1]
    name = signal.Signals(signum).name
    assert (last[2], last[8]) == ("cancelled", f"cancelled by {name}; nothing was applied")
    assert f"{sim.sid} sms: cancelled, " in out


def test_run_cli_end_to_end_with_status(sim: Simulator, make_database: Callable[..., str]) -> None:
    url = make_database()  # status reports every account: give it a database of its own
    engine = database.make_engine(database.resolve_database_url(url))
    for channel in ("sms", "whatsapp", "voice"):
        sim.add(channel, numbers(120))
    env = cli_env(sim, url)
    assert invoke("migrate", env=env).returncode == 0
    result = invoke("run", "--trigger", "backfill", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("succeeded, 120 blocklisted, +120 -0") == 3
    assert {r[3] for r in runs(engine, sim)} == {"backfill"}
    sim.remove("voice", numbers(2))
    dry = invoke("run", "--dry-run", "--channel", "voice", env=env)
    assert dry.returncode == 0
    assert f"would-be-removed\t{sim.sid}\tvoice\t{numbers(1)[0]}" in dry.stdout
    status = invoke("status", env=env)
    assert status.returncode == 0 and sim.sid in status.stdout
    assert "dry_run" not in status.stdout  # a review is not a sweep
    sim.inject("E110", times=10, channel="sms")
    failed = invoke("run", "--channel", "sms", env=env)
    assert failed.returncode == 1 and "low balance" in failed.stdout
    status = invoke("status", env=env)
    assert status.returncode == 1 and "failed" in status.stdout


def test_bad_configuration_is_one_line_and_exit_2(sim: Simulator, pg_url: str, tmp_path: Path) -> None:
    env = cli_env(sim, pg_url)
    del env["KALEYRA_SID"]
    result = invoke("run", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "blocklist-sync: error: KALEYRA_SID is not set; set it to the account SID from the Kaleyra console"
    ]
    bad = invoke("run", env=cli_env(sim, pg_url, KALEYRA_CHANNELS="sms,fax"))
    assert bad.returncode == 2 and "KALEYRA_CHANNELS: fax is not a channel" in bad.stderr
    missing = invoke("run", env=cli_env(sim, pg_url, KALEYRA_API_KEY_FILE=str(tmp_path / "no")))
    assert missing.returncode == 2 and "not both" in missing.stderr
    assert sim.api_key not in bad.stderr + missing.stderr


def test_run_refuses_a_schema_behind_head(sim: Simulator, make_database: Callable[..., str]) -> None:
    url = make_database()
    result = invoke("run", env=cli_env(sim, url))
    assert result.returncode == 2
    assert "run `blocklist-sync migrate` first" in result.stderr
    assert invoke("migrate", env=cli_env(None, url)).returncode == 0
    assert invoke("run", env=cli_env(sim, url)).returncode == 0


def test_database_password_never_appears_in_output(sim: Simulator) -> None:
    url = "postgresql://postgres:s3cret-pass@127.0.0.1:1/nowhere"
    result = run_cli("run", env=cli_env(sim, url))
    assert result.returncode != 0
    assert "s3cret-pass" not in result.stdout + result.stderr


def test_alembic_check_finds_no_difference_between_models_and_migrations(
    make_database: Callable[..., str],
) -> None:
    env = cli_env(None, make_database())
    upgrade = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    check = subprocess.run(
        [sys.executable, "-m", "alembic", "check"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_the_same_sweep_works_on_embedded_sqlite(sim: Simulator, sqlite_store: Store) -> None:
    sim.add("sms", numbers(300))
    diff = sweep(sim, sqlite_store).diff
    assert diff is not None and diff.added == 300
    sim.remove("sms", numbers(5))
    sim.add("sms", ["+917777700001"])
    result = sweep(sim, sqlite_store)
    assert result.diff and (result.diff.added, result.diff.removed) == (1, 5)
    engine = sqlite_store.engine
    assert len(entries(engine, sim)) == 296
    assert [r[2] for r in runs(engine, sim)] == ["succeeded", "succeeded"]
    with sqlite_store.lock_channel(sim.sid, "sms"):  # the file lock stands in for the advisory lock
        assert sweep(sim, sqlite_store).outcome is Outcome.LOCKED


def test_demo_runs_from_nothing(tmp_path: Path) -> None:
    result = invoke("demo", env=cli_env(None, None), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "production should set DATABASE_URL to PostgreSQL" in result.stderr
    assert "added    sms" in result.stdout and "removed  whatsapp" in result.stdout
    assert (tmp_path / "blocklist-sync-demo.db").exists()
    assert not (tmp_path / "blocklist-sync.db").exists()  # the job's own default stays untouched
    engine = database.make_engine(f"sqlite:///{tmp_path / 'blocklist-sync-demo.db'}")
    counts = rows(
        engine, "SELECT change, initial_load, COUNT(*) FROM blocklist_events GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert counts == [("added", 0, 12), ("added", 1, 15000), ("removed", 0, 10)]


def test_demo_on_postgresql_only_when_asked(make_database: Callable[..., str], tmp_path: Path) -> None:
    url, production = make_database(), make_database()
    # DATABASE_URL names "production": the demo must not write its made-up account there.
    result = invoke("demo", "--database-url", url, env=cli_env(None, production), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"/{url.rsplit('/', 1)[1]}" in result.stdout and "postgresql://" in result.stdout
    result = invoke("demo", env=cli_env(None, production), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sqlite:///blocklist-sync-demo.db" in result.stdout
    assert rows(
        database.make_engine(database.resolve_database_url(production)),
        "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'sync_runs'",
    ) == [(0,)]


def test_stop_event_between_pages_applies_nothing(sim: Simulator, store: Store, engine: Engine) -> None:
    sim.add("sms", numbers(1000))
    stop = threading.Event()
    result = sweep_channel(
        make_client(sim),
        store,
        "sms",
        SweepOptions(),
        stop=stop,
        on_page=lambda progress: stop.set() if progress.pages == 3 else None,
    )
    assert result.outcome is Outcome.CANCELLED
    assert result.message == "cancelled by a stop request; nothing was applied"
    assert entries(engine, sim) == set()
    assert runs(engine, sim)[-1][2] == "cancelled"


def test_a_check_ignoring_the_mobile_filter_records_no_removal(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(300))
    sweep(sim, store)
    sim.remove("sms", numbers(3))
    sim.ignore_mobile_filter = True
    before = (entries(engine, sim), events(engine, sim))
    result = sweep(sim, store)
    # An answer that cannot be read proves nothing: the three are kept, counted, and the
    # channel is not failed for it.
    assert result.outcome is Outcome.SUCCEEDED
    assert result.diff and (result.diff.removed, result.diff.unconfirmed) == (0, 3)
    assert (entries(engine, sim), events(engine, sim)) == before
    sim.ignore_mobile_filter = False  # the filter works again: the next sweep proves them gone
    diff = sweep(sim, store).diff
    assert diff is not None and diff.removed == 3


def test_a_failure_after_commit_never_rewrites_a_succeeded_run(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(5))
    result = sweep(sim, store)
    with store.lock_channel(sim.sid, "sms") as session:
        assert result.run_id is not None
        with session.transaction():
            session.finish_run(result.run_id, RunStatus.FAILED, error="late failure")
    assert runs(engine, sim)[-1][2] == "succeeded"


def test_losing_the_database_mid_sweep_fails_cleanly_and_the_next_run_recovers(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(800))

    def kill_our_backend(progress: PageProgress) -> None:
        if progress.pages == 3:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() "
                        "AND query LIKE 'COPY pg_temp.kbs_staging_seen%'"
                    )
                )

    result = sweep_channel(make_client(sim), store, "sms", SweepOptions(), on_page=kill_our_backend)
    assert result.outcome is Outcome.FAILED
    assert entries(engine, sim) == set() and events(engine, sim) == []
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED
    assert [r[2] for r in runs(engine, sim)] == ["failed", "succeeded"]
    assert len(entries(engine, sim)) == 800


def test_flags_override_the_environment(sim: Simulator, pg_url: str, tmp_path: Path) -> None:
    sim.add("voice", numbers(3))
    key_file = tmp_path / "key"
    key_file.write_text(sim.api_key + "\n")
    env = cli_env(
        sim,
        pg_url,
        KALEYRA_SID="HXWRONG",
        KALEYRA_API_KEY="wrong-key",
        KALEYRA_REGION="eu",
        KALEYRA_BASE_URL="",
    )
    result = invoke(
        "run",
        "--channel",
        "voice",
        "--sid",
        sim.sid,
        "--api-key-file",
        str(key_file),
        "--base-url",
        sim.base_url,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert f"{sim.sid} voice: succeeded, 3 blocklisted" in result.stdout


def test_channel_flag_sweeps_a_channel_not_yet_configured(
    sim: Simulator, engine: Engine, pg_url: str
) -> None:
    sim.add("voice", numbers(7))
    result = invoke(
        "run", "--trigger", "backfill", "--channel", "voice", env=cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    )
    assert result.returncode == 0, result.stderr
    assert len(entries(engine, sim, "voice")) == 7
    assert [r[1] for r in runs(engine, sim)] == ["voice"]


def test_account_flags_with_a_config_file_are_refused(sim: Simulator, pg_url: str, tmp_path: Path) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text(f'[[accounts]]\nsid = "{sim.sid}"\napi_key = "k"\n')
    result = invoke("run", "--config", str(config), "--sid", "HXOTHER", env=cli_env(None, pg_url))
    assert result.returncode == 2 and "with a config file, set them in the file" in result.stderr


def test_a_held_channel_stays_unhealthy_after_a_dry_run_review(
    sim: Simulator,
    make_database: Callable[..., str],
    tmp_path: Path,
) -> None:
    url = make_database()
    env = cli_env(sim, url, KALEYRA_CHANNELS="sms")
    assert invoke("migrate", env=env).returncode == 0
    sim.add("sms", numbers(200))
    assert invoke("run", env=env).returncode == 0
    sim.remove("sms", numbers(100))
    metrics = tmp_path / "m.prom"
    assert invoke("run", "--metrics-file", str(metrics), env=env).returncode == 3
    assert invoke("run", "--dry-run", "--metrics-file", str(metrics), env=env).returncode == 0
    text_ = metrics.read_text()
    labels = f'{{account="{sim.sid}",channel="sms"}}'
    assert f"blocklist_sync_last_run_success{labels} 0.0" in text_
    assert f"blocklist_sync_removed{labels} 0.0" in text_  # held: nothing was removed
    status = invoke("status", "--json", env=env)
    assert status.returncode == 1
    engine = database.make_engine(database.resolve_database_url(url))
    held_run = runs(engine, sim)[1][0]
    assert f'"problem": "last sweep held (run {held_run})"' in status.stdout
    # The BI view tells the same story since migration 0004: the review is not the last run.
    assert rows(
        engine,
        "SELECT last_run_id, last_run_status FROM blocklist_sync_health WHERE account_sid = :a",
        a=sim.sid,
    ) == [(held_run, "held")]
    assert f"blocklist_sync_last_run_removed{labels} 0.0" in text_
