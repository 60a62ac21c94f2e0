"""One stored history (migration 0012): ``blocklist_events`` is a view of ``blocklist_periods``.

After every kind of operation — a first sweep, sweeps with changes, a held sweep, a forced one,
imports into an empty channel and before a live history — counting additions and removals from
the events equals counting them from the stretches, pairing the events rebuilds the stretches
exactly, and every event id is unique. The migration is exact both ways on both dialects.
"""

from __future__ import annotations

import datetime as dt
import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, inspect, text

from sync import database
from sync.backfill import ImportOptions, Snapshot, import_snapshots
from sync.guard import GuardLimits
from sync.review import Review
from sync.simulator import Simulator
from sync.store import Store
from sync.vocabulary import Change, Outcome
from tests.conftest import numbers, rows, sweep

N = numbers(40)
TIGHT = GuardLimits(max_removal_fraction=0.1, min_entries=5)


def _store(dialect: str, make_migrated_database: Callable[[], str], tmp_path: Path) -> Store:
    if dialect == "sqlite":
        engine = database.make_engine(f"sqlite:///{tmp_path / 'history.db'}")
        database.upgrade(engine)
        return Store(engine)
    return Store(database.make_engine(database.resolve_database_url(make_migrated_database())))


def _utc(value: Any) -> Any:
    if isinstance(value, str) and value[:2] in ("19", "20") and ":" in value:
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value


def _table(engine: Engine | Connection, sql: str, **params: object) -> list[tuple[Any, ...]]:
    found = (
        rows(engine, sql, **params) if isinstance(engine, Engine) else engine.execute(text(sql), params).all()
    )
    return sorted(tuple(_utc(v) for v in row) for row in found)


def assert_one_history(engine: Engine, sid: str | None = None) -> None:
    """The events say exactly what the stretches say, of account ``sid`` (in a database other
    tests write to as well) or of every account."""
    with engine.connect() as connection:
        _assert_one_history(connection, sid)


def _assert_one_history(connection: Connection, sid: str | None) -> None:
    mine = "account_sid = :a" if sid else "TRUE"

    def table(sql: str) -> list[tuple[Any, ...]]:
        return _table(connection, sql.replace("{mine}", mine), **({"a": sid} if sid else {}))

    by_events = table(
        "SELECT account_sid, channel, change, COUNT(*) FROM blocklist_events WHERE {mine} "
        "GROUP BY account_sid, channel, change"
    )
    by_stretches = table(
        "SELECT account_sid, channel, 'added', COUNT(*) FROM blocklist_periods WHERE {mine} "
        "GROUP BY account_sid, channel UNION ALL SELECT account_sid, channel, 'removed', COUNT(*) "
        "FROM blocklist_periods WHERE {mine} AND removed_at IS NOT NULL GROUP BY account_sid, channel"
    )
    assert by_events == by_stretches
    # Each addition paired with the next event of its number (its removal, if any) rebuilds
    # each stretch: the ends, their windows and their runs.
    events = table(
        "SELECT account_sid, channel, mobile, detected_at, id, change, not_before, run_id "
        "FROM blocklist_events WHERE {mine}"
    )
    paired = []
    for k, (account, channel, mobile, at, _, change, not_before, run) in enumerate(events):
        if change != "added":
            continue
        after = events[k + 1] if k + 1 < len(events) else None
        if after is not None and after[:3] == (account, channel, mobile) and after[5] == "removed":
            paired.append((account, channel, mobile, at, not_before, run, after[3], after[6], after[7]))
        else:
            paired.append((account, channel, mobile, at, not_before, run, None, None, None))
    stretches = table(
        "SELECT account_sid, channel, mobile, added_at, added_not_before, added_run_id, removed_at, "
        "removed_not_before, removed_run_id FROM blocklist_periods WHERE {mine}"
    )
    assert sorted(paired) == stretches
    ids = [row[0] for row in table("SELECT id FROM blocklist_events WHERE {mine}")]
    assert len(ids) == len(set(ids)) and None not in ids
    assert {row[0] for row in table("SELECT DISTINCT change FROM blocklist_events WHERE {mine}")} <= {
        c.value for c in Change
    }


def _import(store: Store, sid: str, path: Path, at: dt.datetime, *, force: bool = False) -> None:
    review = Review.blind() if force else Review()
    import_snapshots(
        store, [Snapshot(str(path), at)], ImportOptions(account_sid=sid, channel="sms", review=review)
    )


def _export(tmp_path: Path, name: str, listing: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("mobile,channel_type\n" + "".join(f"{m},1\n" for m in listing))
    return path


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_every_operation_keeps_the_events_exactly_the_stretches(
    dialect: str, sim: Simulator, make_migrated_database: Callable[[], str], tmp_path: Path
) -> None:
    store = _store(dialect, make_migrated_database, tmp_path)
    engine = store.engine
    # An import into an empty channel (another account), then one after it: sweeps at T.
    other = "HXEMPTY0000001"
    _import(store, other, _export(tmp_path, "a.csv", N[0:8]), dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    _import(store, other, _export(tmp_path, "b.csv", N[4:10]), dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
    assert_one_history(engine)

    sim.add("sms", N[10:30])
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED  # the initial load
    sim.remove("sms", N[10:12])
    sim.add("sms", N[30:32])
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED
    assert_one_history(engine)

    sim.remove("sms", N[12:20])  # 8 of 20: over the tight guard
    held = sweep(sim, store, guard=TIGHT)
    assert held.outcome is Outcome.HELD
    assert_one_history(engine)
    forced = sweep(sim, store, guard=TIGHT, review=Review.blind())
    assert forced.outcome is Outcome.SUCCEEDED and forced.diff and forced.diff.removed == 8
    sim.add("sms", N[10:11])  # back again: a second stretch of one number
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED
    assert_one_history(engine)

    # An export from before the first sweep: N[5:15] listed then (N[5:10] never swept, N[10:15]
    # swept and some removed since).
    _import(store, sim.sid, _export(tmp_path, "c.csv", N[5:15]), dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
    assert_one_history(engine)
    counts = rows(
        engine,
        "SELECT added, removed, unconfirmed, rewritten FROM sync_runs "
        "WHERE account_sid = :a AND trigger = 'backfill'",
        a=sim.sid,
    )
    assert counts == [(10, 0, 5, 20)]  # N[5:10] kept open: no sweep showed them, none proved them gone
    # Each number's additions: exactly one per stretch (no "added" after "added").
    twice = rows(
        engine,
        "SELECT mobile FROM (SELECT mobile, change, LEAD(change) OVER "
        "(PARTITION BY account_sid, channel, mobile ORDER BY detected_at, id) AS next "
        "FROM blocklist_events) e WHERE change = 'added' AND next = 'added'",
    )
    assert twice == []
    # The next sweep's summary window is the one its additions record: from the start of the
    # last complete sweep, not from the import's time (numbered after it, dated a year before).
    last_sweep_start = rows(
        engine,
        "SELECT MAX(started_at) FROM sync_runs WHERE account_sid = :a AND trigger <> 'backfill'",
        a=sim.sid,
    )[0][0]
    sim.add("sms", N[35:36])
    after = sweep(sim, store)
    assert after.run_id is not None
    not_before, _ = store.run_window(after.run_id)
    assert not_before == _utc(last_sweep_start)
    assert rows(engine, "SELECT added_not_before FROM blocklist_periods WHERE mobile = :m", m=N[35]) == [
        (last_sweep_start,)
    ]


def test_an_export_listing_a_number_the_first_sweep_missed_and_a_later_one_listed_is_held(
    sim: Simulator, store: Store, tmp_path: Path
) -> None:
    """Only closing the export's stretch fits a number listed again later, and that records a
    removal no sweep proved: held, with the reason; forced, it is recorded."""
    sim.add("sms", N[0:10])
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED
    sim.add("sms", N[10:11])
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED
    export = _export(tmp_path, "old.csv", N[5:11])
    before = rows(
        store.engine, "SELECT * FROM blocklist_periods WHERE account_sid = :a ORDER BY 1, 5", a=sim.sid
    )
    with pytest.raises(Exception, match=r"1 number\(s\) the export lists were not shown by run \d+"):
        _import(store, sim.sid, export, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    after = rows(
        store.engine, "SELECT * FROM blocklist_periods WHERE account_sid = :a ORDER BY 1, 5", a=sim.sid
    )
    assert after == before
    _import(store, sim.sid, export, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), force=True)
    assert_one_history(store.engine)
    ends = rows(
        store.engine,
        "SELECT COUNT(*) FROM blocklist_events WHERE account_sid = :a AND mobile = :m",
        a=sim.sid,
        m=N[10],
    )
    assert ends == [(3,)]  # listed by the export, gone (forced), listed again by the later sweep


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_the_migration_is_exact_both_ways(
    dialect: str, sim: Simulator, make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = (
        database.resolve_database_url(make_database())
        if dialect == "postgresql"
        else f"sqlite:///{tmp_path / 'm.db'}"
    )
    engine = database.make_engine(url)
    database.upgrade(engine)
    store = Store(engine)
    sim.add("sms", N[0:20])
    sweep(sim, store)
    sim.remove("sms", N[0:3])
    sim.add("sms", N[20:22])
    sweep(sim, store)
    _import(store, sim.sid, _export(tmp_path, "old.csv", N[1:6]), dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    every = "SELECT * FROM blocklist_events ORDER BY id"
    stretches = "SELECT * FROM blocklist_periods ORDER BY mobile, added_run_id"
    view, periods = _table(engine, every), _table(engine, stretches)
    config = database.alembic_config(engine)

    command.downgrade(config, "0011")
    assert "blocklist_events" in inspect(engine).get_table_names()
    assert _table(engine, every) == view  # the table, every column, from the view
    next_id = rows(engine, "SELECT MAX(id) FROM blocklist_events")[0][0]
    command.upgrade(config, "head")
    assert _table(engine, every) == view  # and back: the same ids, the same rows
    assert _table(engine, stretches) == periods
    assert next_id == max(row[0] for row in view)
    assert_one_history(engine)


def test_an_upgrade_keeps_the_ids_and_drops_only_what_an_import_left_beside_the_stretches(
    sim: Simulator, make_database: Callable[[], str]
) -> None:
    engine = database.make_engine(database.resolve_database_url(make_database()))
    command.upgrade(database.alembic_config(engine), "0011")
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO sync_runs (id, account_sid, channel, trigger, status, started_at, "
                "finished_at) VALUES "
                "(1, 'HX1', 'sms', 'manual', 'succeeded', '2026-01-02', '2026-01-02 00:01'), "
                "(2, 'HX1', 'sms', 'manual', 'succeeded', '2026-01-03', '2026-01-03 00:01'), "
                "(3, 'HX1', 'sms', 'backfill', 'succeeded', '2026-01-01', '2026-01-01')"
            )
        )
        # What 0011's import wrote before a live history: the sweep's initial-load addition
        # of +919000000001 stays in the log, the import appends its own, and the stretch is the
        # import's; +919000000002 was removed by run 2.
        c.execute(
            text(
                "INSERT INTO blocklist_events (id, account_sid, channel, mobile, change, detected_at, "
                "not_before, initial_load, run_id) VALUES "
                "(11, 'HX1', 'sms', '+919000000001', 'added', '2026-01-02 00:01', NULL, true, 1), "
                "(12, 'HX1', 'sms', '+919000000002', 'added', '2026-01-02 00:01', NULL, true, 1), "
                "(13, 'HX1', 'sms', '+919000000002', 'removed', '2026-01-03 00:01', '2026-01-02', false, 2), "
                "(14, 'HX1', 'sms', '+919000000001', 'added', '2026-01-01', NULL, true, 3)"
            )
        )
        c.execute(
            text(
                "INSERT INTO blocklist_periods (account_sid, channel, mobile, added_at, added_not_before, "
                "removed_at, removed_not_before, initial_load, added_run_id, removed_run_id) VALUES "
                "('HX1', 'sms', '+919000000001', '2026-01-01', NULL, NULL, NULL, true, 3, NULL), "
                "('HX1', 'sms', '+919000000002', '2026-01-02 00:01', NULL, '2026-01-03 00:01', "
                "'2026-01-02', true, 1, 2)"
            )
        )
    database.upgrade(engine)
    assert rows(engine, "SELECT id, mobile, change, run_id FROM blocklist_events ORDER BY id") == [
        (12, "+919000000002", "added", 1),
        (13, "+919000000002", "removed", 2),
        (14, "+919000000001", "added", 3),
    ]
    assert_one_history(engine)


def test_migrate_compacts_the_stretches_once_its_transaction_has_committed(
    make_database: Callable[[], str],
) -> None:
    """0012's UPDATEs leave every stretch two or three times in the table, and a rewrite inside
    the migrations' own transaction keeps those versions (it did: 938 MB for 353 MB of rows on a
    year of history). ``blocklist-sync migrate`` (``database.upgrade``) rewrites the table after
    the commit (0014's ``after_commit``): the same rows, in a fraction of the pages."""
    engine = database.make_engine(database.resolve_database_url(make_database()))
    database.upgrade(engine, "0013")
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO sync_runs (account_sid, channel, trigger, status, started_at, finished_at) "
                "VALUES ('HXCOMPACT', 'sms', 'scheduled', 'succeeded', now(), now())"
            )
        )
        c.execute(
            text(
                "INSERT INTO blocklist_periods (account_sid, channel, mobile, added_at, initial_load, "
                "added_run_id, added_event_id) SELECT 'HXCOMPACT', 'sms', '+91900' || (1000000 + s), "
                "now(), true, (SELECT MAX(id) FROM sync_runs), s FROM generate_series(1, 5000) s"
            )
        )
    for _ in range(2):  # as 0012 did: every row written again, committed
        with engine.begin() as c:
            c.execute(text("UPDATE blocklist_periods SET added_event_id = added_event_id"))
    stretches = "SELECT * FROM blocklist_periods ORDER BY mobile"
    size = "SELECT pg_relation_size('blocklist_periods')"
    file = "SELECT pg_relation_filenode('blocklist_periods')"
    before, bloated, written = rows(engine, stretches), rows(engine, size)[0][0], rows(engine, file)
    assert database.upgrade(engine) == ("0013", database.head_revision())
    assert rows(engine, stretches) == before
    assert rows(engine, file) != written  # the upkeep rewrote the table
    # A rewrite keeps the row versions a transaction still open anywhere on the server may see
    # (the other tests' transactions, on a busy machine): the upkeep is then run again, as
    # `migrate` would be, until they have ended.
    upkeep = importlib.import_module("migrations.versions.0014_as_of_at_its_old_cost").after_commit
    for _ in range(40):
        if rows(engine, size)[0][0] < bloated / 2:
            break
        time.sleep(0.25)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            upkeep(c)
    assert rows(engine, size)[0][0] < bloated / 2
    with engine.connect() as c:  # the index made for the rewrite is gone
        assert "kbs_0014_order" not in {i["name"] for i in inspect(c).get_indexes("blocklist_periods")}
