"""The store's protocol, as the sweep and the import use it: the caller owns the transaction
(``LockedChannel.transaction()``, the one boundary; no store method commits on its own), and
an apply is a list of steps that check their row counts against the diff."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from sync.store import ApplyMismatch, Store, TransactionError
from sync.vocabulary import RunStatus, Trigger
from tests.conftest import numbers, rows

LISTING = [(mobile, None) for mobile in numbers(5)]


def _sid() -> str:
    return f"HXPROTO{uuid.uuid4().hex[:9].upper()}"


@pytest.mark.parametrize("backend", ["store", "sqlite_store"])
def test_nothing_runs_outside_the_callers_transaction_and_blocks_do_not_nest(
    backend: str, request: pytest.FixtureRequest
) -> None:
    store: Store = request.getfixturevalue(backend)
    sid = _sid()
    with store.lock_channel(sid, "sms") as session:
        with pytest.raises(TransactionError, match=r"outside LockedChannel\.transaction\(\)"):
            session.start_run(Trigger.MANUAL)
        with session.transaction(), pytest.raises(TransactionError, match="do not nest"):
            with session.transaction():
                pass
        # What a block wrote is committed at its end, and only then: the store never commits.
        with session.transaction():
            run_id = session.start_run(Trigger.MANUAL)
            assert rows(store.engine, "SELECT id FROM sync_runs WHERE account_sid = :a", a=sid) == []
        assert rows(store.engine, "SELECT status FROM sync_runs WHERE id = :r", r=run_id) == [("running",)]
        # keep=False rolls back (an import's dry run); so does a block that raised.
        with session.transaction(keep=False):
            session.finish_run(run_id, RunStatus.DRY_RUN)
        with pytest.raises(ZeroDivisionError), session.transaction():
            session.finish_run(run_id, RunStatus.HELD)
            _ = 1 / 0
        assert rows(store.engine, "SELECT status FROM sync_runs WHERE id = :r", r=run_id) == [("running",)]


@pytest.mark.parametrize("backend", ["store", "sqlite_store"])
def test_a_writer_that_bypassed_the_lock_is_caught_by_the_applys_row_counts(
    backend: str, request: pytest.FixtureRequest
) -> None:
    store: Store = request.getfixturevalue(backend)
    sid = _sid()
    with store.lock_channel(sid, "sms") as session:
        with session.transaction():
            run_id = session.start_run(Trigger.MANUAL)
            comparison = session.stage(LISTING).diff()
            comparison.apply(run_id, pages=1, diff=comparison.counts())
        with session.transaction():
            run_id = session.start_run(Trigger.MANUAL)
            comparison = session.stage(LISTING[1:]).diff()  # the first number is gone
            diff = comparison.counts()
        # Another writer ends that number's stretch behind the lock's back.
        with store.engine.begin() as c:
            c.execute(
                text(
                    "UPDATE blocklist_periods SET removed_at = added_at, removed_run_id = added_run_id, "
                    "removed_event_id = added_event_id + 1 "
                    "WHERE account_sid = :a AND mobile = :m"
                ),
                {"a": sid, "m": LISTING[0][0]},
            )
        with (
            pytest.raises(ApplyMismatch, match="removed 0 entries where the diff said 1"),
            session.transaction(),
        ):
            comparison.apply(run_id, pages=1, diff=diff)
    # Nothing of the apply was written: not the removal, not the run row's end.
    assert rows(store.engine, "SELECT change FROM blocklist_events WHERE run_id = :r", r=run_id) == []
    assert rows(store.engine, "SELECT status FROM sync_runs WHERE id = :r", r=run_id) == [("running",)]
