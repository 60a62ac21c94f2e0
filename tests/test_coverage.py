"""Coverage (migration 0013): what a channel's succeeded runs observed, from its first observation
to its last succeeded run, stated by the run ledger (``sync/store/ledger.py``'s ``coverage()``)
and by the ``blocklist_coverage`` view, which must agree on any history; and the migration that
makes the view and the as-of function's unknown rows, undone and made again exactly, on both
dialects.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from sync import database
from sync.store import Store, as_utc, coverage
from sync.vocabulary import RunStatus
from tests.test_ledger import HOUR, _run

MINUTE = dt.timedelta(minutes=1)


@pytest.fixture(params=["postgresql", "sqlite"])
def any_store(request: pytest.FixtureRequest) -> Store:
    store: Store = request.getfixturevalue("store" if request.param == "postgresql" else "sqlite_store")
    return store


def _sid() -> str:
    return f"HXCOVER{uuid.uuid4().hex[:8].upper()}"


def _utc(value: Any) -> Any:
    """SQLite hands a view's timestamps back as naive text, written in UTC."""
    if isinstance(value, str) and value[:2] == "20" and ":" in value:
        value = dt.datetime.fromisoformat(value)
    return as_utc(value) if isinstance(value, dt.datetime) else value


def _view(store: Store, sids: list[str]) -> list[tuple[Any, ...]]:
    with store.engine.connect() as c:
        found = c.execute(text("SELECT * FROM blocklist_coverage ORDER BY account_sid, channel")).all()
    return [tuple(_utc(v) for v in row) for row in found if row[0] in sids]


def test_the_ledger_and_the_coverage_view_agree(any_store: Store) -> None:
    store, now = any_store, any_store.now()
    mixed, imports_only, never, one_sweep = _sid(), _sid(), _sid(), _sid()
    # Every outcome, dry runs, and an export placed long before the first sweep (numbered after it).
    first_sweep = _run(store, mixed, RunStatus.SUCCEEDED, now - 5 * HOUR, entries=10)
    _run(store, mixed, RunStatus.FAILED, now - 4 * HOUR)
    export = _run(store, mixed, RunStatus.SUCCEEDED, now - 100 * 24 * HOUR, entries=7, imported=True)
    _run(store, mixed, RunStatus.DRY_RUN, now - 3 * HOUR, entries=99)
    _run(store, mixed, RunStatus.HELD, now - 150 * MINUTE, entries=99)
    last_sweep = _run(store, mixed, RunStatus.SUCCEEDED, now - 2 * HOUR, entries=12, complete=False)
    _run(store, mixed, RunStatus.CANCELLED, now - HOUR)
    _run(store, mixed, RunStatus.RUNNING, now - MINUTE)
    # Two imports and no sweep: the newer export (imported first) ends the coverage.
    newer = _run(store, imports_only, RunStatus.SUCCEEDED, now - 10 * HOUR, entries=5, imported=True)
    older = _run(store, imports_only, RunStatus.SUCCEEDED, now - 20 * HOUR, entries=4, imported=True)
    # Nothing succeeded: nothing was observed, no row.
    _run(store, never, RunStatus.FAILED, now - HOUR)
    _run(store, never, RunStatus.HELD, now - HOUR + MINUTE)
    only = _run(store, one_sweep, RunStatus.SUCCEEDED, now - HOUR, entries=3)

    with store.engine.connect() as c:
        ledger = [tuple(r) for r in coverage(c) if r.account_sid in (mixed, imports_only, never, one_sweep)]
    assert _view(store, [mixed, imports_only, never, one_sweep]) == ledger
    if store.engine.dialect.name == "postgresql":  # the bounds blocklist_as_of reads (0014)
        with store.engine.connect() as c:
            bounds = c.execute(text("SELECT * FROM blocklist_coverage_bounds() ORDER BY 1, 2")).all()
        assert [tuple(r) for r in bounds if r[0] in (mixed, imports_only, never, one_sweep)] == [
            row[:6] for row in ledger
        ]
    finished = {k: now - h * HOUR + MINUTE for k, h in ((export, 2400), (last_sweep, 2), (newer, 10))}
    finished |= {older: now - 20 * HOUR + MINUTE, only: now - HOUR + MINUTE}
    assert sorted(ledger) == sorted(
        [
            (mixed, "sms", finished[export], export, finished[last_sweep], last_sweep, 2, 1),
            (imports_only, "sms", finished[older], older, finished[newer], newer, 0, 2),
            (one_sweep, "sms", finished[only], only, finished[only], only, 1, 0),
        ]
    )
    assert first_sweep not in [r[3] for r in ledger]  # the export before it begins the coverage


def _schema_state(engine: Engine) -> dict[str, Any]:
    """What the migration makes and unmakes: the views (and on PostgreSQL the as-of function's
    definition and every comment on the views, their columns and the functions)."""
    with engine.connect() as c:
        if engine.dialect.name == "sqlite":
            return {
                "views": c.execute(
                    text("SELECT name, sql FROM sqlite_master WHERE type = 'view' ORDER BY name")
                ).all()
            }
        return {
            "views": c.execute(
                text(
                    "SELECT c.relname, pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class'), "
                    "ARRAY(SELECT col_description(c.oid, a.attnum)::text FROM pg_attribute a "
                    "WHERE a.attrelid = c.oid AND a.attnum > 0 ORDER BY a.attnum) "
                    "FROM pg_class c WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace "
                    "ORDER BY c.relname"
                )
            ).all(),
            "functions": c.execute(
                text(
                    "SELECT p.proname, pg_get_functiondef(p.oid), obj_description(p.oid, 'pg_proc') "
                    "FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY p.proname"
                )
            ).all(),
        }


def _history(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text("SELECT * FROM sync_runs ORDER BY id"))] + [
            tuple(r) for r in c.execute(text("SELECT * FROM blocklist_periods ORDER BY added_run_id, mobile"))
        ]


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_the_migration_round_trips(dialect: str, make_database: Callable[[], str], tmp_path: Path) -> None:
    """0012 -> 0013 -> 0012 -> 0013: each step leaves exactly the objects (and, on PostgreSQL,
    the definitions and comments) the same revision made before, and the history untouched."""
    url = (
        database.resolve_database_url(make_database())
        if dialect == "postgresql"
        else f"sqlite:///{tmp_path / 'coverage.db'}"
    )
    engine = database.make_engine(url)
    config = database.alembic_config(engine)
    command.upgrade(config, "0012")
    sid = _sid()
    with engine.begin() as c:  # one sweep's rows: a number listed since the initial load
        c.execute(
            text(
                "INSERT INTO sync_runs (account_sid, channel, trigger, status, started_at, finished_at) "
                "VALUES (:a, 'sms', 'scheduled', 'succeeded', :s, :f)"
            ),
            {
                "a": sid,
                "s": dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC),
                "f": dt.datetime(2026, 12, 1, 12, 5, tzinfo=dt.UTC),
            },
        )
        run_id = c.execute(text("SELECT MAX(id) FROM sync_runs")).scalar_one()
        c.execute(
            text(
                "INSERT INTO blocklist_periods (account_sid, channel, mobile, added_at, initial_load, "
                "added_run_id, added_event_id) VALUES (:a, 'sms', '+919000000001', :f, true, :r, 1)"
            ),
            {"a": sid, "f": dt.datetime(2026, 12, 1, 12, 5, tzinfo=dt.UTC), "r": run_id},
        )
    before, history = _schema_state(engine), _history(engine)

    def as_of_now() -> list[tuple[Any, ...]]:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(text("SELECT mobile, state FROM blocklist_as_of(now())"))]

    command.upgrade(config, "head")
    after = _schema_state(engine)
    assert "blocklist_coverage" in str(after["views"]) and "blocklist_coverage" not in str(before["views"])
    if dialect == "postgresql":
        assert as_of_now() == [(None, "unknown")]  # after the last sweep: nothing has looked
    command.downgrade(config, "0012")
    assert _schema_state(engine) == before and _history(engine) == history
    if dialect == "postgresql":
        assert as_of_now() == [("+919000000001", "yes")]  # 0011's rule, as it was
    command.upgrade(config, "head")
    assert _schema_state(engine) == after and _history(engine) == history
    engine.dispose()
