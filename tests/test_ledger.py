"""The run ledger (``sync/store/ledger.py``) is the one owner of "last sweep", "last success" and
"last complete listing": the shard skip, the progress estimate, the windows a sweep dates its
changes in and ``lookup`` all ask it, and the ``blocklist_sync_health`` view, which ``status``,
the metrics and dashboards read, states the same rules in SQL frozen in its migration. Here a
history mixing every outcome, dry runs and an import placed in the past is read both ways,
on PostgreSQL and SQLite, and the answers must agree.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import text

from sync.store import Store, as_utc
from sync.store.channels import last_successes
from sync.store.schema import sync_runs
from sync.vocabulary import RunStatus, Trigger

HOUR = dt.timedelta(hours=1)


@pytest.fixture(params=["postgresql", "sqlite"])
def any_store(request: pytest.FixtureRequest) -> Store:
    store: Store = request.getfixturevalue("store" if request.param == "postgresql" else "sqlite_store")
    return store


def _run(
    store: Store,
    sid: str,
    status: RunStatus,
    started: dt.datetime,
    *,
    entries: int = 0,
    complete: bool | None = True,
    imported: bool = False,
) -> int:
    """One run row as its sweep (or import) would have left it; ids follow the calls' order."""
    values = {
        "account_sid": sid,
        "channel": "sms",
        "trigger": Trigger.BACKFILL if imported else Trigger.SCHEDULED,
        "status": status,
        "started_at": started,
        "finished_at": None if status is RunStatus.RUNNING else started + dt.timedelta(minutes=1),
        "entries_seen": entries,
        "listing_complete": complete,
    }
    if imported:
        values.update(source_file="export.csv", source_bytes=1, source_sha256=uuid.uuid4().hex)
    with store.engine.begin() as c:
        return int(c.execute(sync_runs.insert().values(**values).returning(sync_runs.c.id)).scalar_one())


def _health(store: Store, sid: str) -> dict[str, object] | None:
    with store.engine.connect() as c:
        found = c.execute(
            text("SELECT last_run_id, last_success_run_id FROM blocklist_sync_health WHERE account_sid = :a"),
            {"a": sid},
        ).first()
    return None if found is None else dict(found._mapping)


def test_the_ledger_and_the_health_view_agree_on_the_last_sweep_and_success(any_store: Store) -> None:
    store, sid = any_store, f"HXLEDGER{uuid.uuid4().hex[:8].upper()}"
    now = store.now()
    _run(store, sid, RunStatus.SUCCEEDED, now - 5 * HOUR, entries=10)
    _run(store, sid, RunStatus.FAILED, now - 4 * HOUR)
    # An export from long ago, placed before the first sweep: numbered after it, never its last.
    _run(store, sid, RunStatus.SUCCEEDED, now - 100 * 24 * HOUR, entries=7, imported=True)
    _run(store, sid, RunStatus.DRY_RUN, now - 3 * HOUR, entries=99)
    success = _run(store, sid, RunStatus.SUCCEEDED, now - 2 * HOUR, entries=12, complete=False)
    last = _run(store, sid, RunStatus.CANCELLED, now - HOUR)
    _run(store, sid, RunStatus.DRY_RUN, now - dt.timedelta(minutes=30), entries=98)

    assert _health(store, sid) == {"last_run_id": last, "last_success_run_id": success}
    with store.lock_channel(sid, "sms") as session, session.transaction():
        # The shard skip measures from the last sweep (the view's), or the last that did not fail.
        since_last = session.seconds_since_last_start()
        since_unfailed = session.seconds_since_last_start(count_failures=False)
        assert since_last is not None and since_unfailed is not None
        assert HOUR.total_seconds() <= since_last < 1.5 * HOUR.total_seconds()
        assert 2 * HOUR.total_seconds() <= since_unfailed < 2.5 * HOUR.total_seconds()
        # The progress estimate: the view's last success.
        assert session.last_swept_size() == 12
        # Windows: the last success, and the last complete listing, sweeps before imports.
        assert session.previous_success_start() == now - 2 * HOUR
        assert session.previous_success_start(complete_listing=True) == now - 5 * HOUR
        assert not session.first_success()
    with store.engine.connect() as c:
        [answer] = [row for row in last_successes(c) if row.account_sid == sid]
    # lookup answers as of the last success, and knows the history from the export on.
    assert (as_utc(answer.finished_at), answer.imported) == (now - 2 * HOUR + dt.timedelta(minutes=1), False)
    assert as_utc(answer.first_sweep) == now - 100 * 24 * HOUR


def test_imports_alone_are_no_sweep_and_the_newest_by_time_is_the_last_success(any_store: Store) -> None:
    store, sid = any_store, f"HXLEDGER{uuid.uuid4().hex[:8].upper()}"
    now = store.now()
    _run(store, sid, RunStatus.SUCCEEDED, now - 10 * HOUR, entries=5, imported=True)
    # Imported later, but an older export: placed before the first.
    _run(store, sid, RunStatus.SUCCEEDED, now - 20 * HOUR, entries=4, imported=True)

    assert _health(store, sid) is None  # the view counts no import as a sweep
    with store.lock_channel(sid, "sms") as session, session.transaction():
        assert session.seconds_since_last_start() is None
        assert session.last_swept_size() is None
        assert session.previous_success_start() == now - 10 * HOUR
    with store.engine.connect() as c:
        [answer] = [row for row in last_successes(c) if row.account_sid == sid]
    assert answer.imported and as_utc(answer.finished_at) == now - 10 * HOUR + dt.timedelta(minutes=1)
