"""The apply: what a sweep found, written as an ordered list of steps that check their row counts.

An addition opens a stretch in ``blocklist_periods`` (the current entries are its open
stretches) and a removal closes one; ``blocklist_events`` is a view of the same rows (migration
0012), so each change is written once and the history's two shapes cannot disagree. Then the
numbers the listing did not show are marked unproven, the listing's ``channel_type`` codes
learnt, and the run row finished
(:meth:`~sync.store.ledger.RunLedger.record_success`). Each :class:`Step` is one statement and
the rows it must change: a count that differs from the diff's means a writer bypassed the
lock (:class:`ApplyMismatch`), and the caller's transaction rolls back, so nothing is applied.
The rebase of an older snapshot (:mod:`sync.store.rebase`) is written as steps too.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlalchemy import Connection, TextClause, bindparam, text

from sync.store import channel_types as channel_types_of
from sync.store.ledger import run_counts
from sync.store.schema import UtcTime
from sync.store.timings import Timings

if TYPE_CHECKING:
    from sync.store.comparison import Diff
    from sync.store.session import LockedChannel
    from sync.store.staging import Staging

__all__ = ["ApplyMismatch", "Step", "apply_comparison", "event_ids", "run_steps"]

# The times a step may bind, typed so each dialect stores them as timestamps (SQLite included),
# not driver-chosen strings.
_TIMES = ("detected_at", "not_before", "proven_at", "at", "first_at")


def event_ids(run_id: int) -> dict[str, int]:
    """The ids before a run's first addition and first removal in ``blocklist_events``: the
    ``n``-th change of each kind gets that base plus ``n``. Derived from the run, so ids are
    unique without a sequence, on both dialects, and increase with the run that recorded
    them; each kind has room for 2^31 changes a run. Binds ``added_events`` and
    ``removed_events`` of a step's SQL."""
    base = run_id << 32
    return {"added_events": base, "removed_events": base + (1 << 31)}


class ApplyMismatch(Exception):
    """The entries changed between diff and apply: the lock was bypassed. Nothing is applied."""


@dataclass(frozen=True)
class Step:
    """One statement of an apply: the change it makes (``what``), how many rows it must change
    (the diff's count; None where there is nothing to check it against), and the SQL it
    :meth:`runs`."""

    what: str
    rows: int | None = None
    sql: str = ""

    def runs(self, sql: str) -> Step:
        """This step, running ``sql``."""
        return replace(self, sql=sql)

    def statement(self) -> TextClause:
        """The SQL, its times typed."""
        times = [name for name in _TIMES if re.search(rf":{name}\b", self.sql)]
        return text(self.sql).bindparams(*(bindparam(name, type_=UtcTime) for name in times))


def run_steps(
    connection: Connection, steps: Iterable[Step], params: Mapping[str, object], timings: Timings
) -> None:
    """Run ``steps`` in order, each checked against its count (:class:`ApplyMismatch`) and
    timed under its name."""
    for step in steps:
        with timings.timed(step.what):
            changed = connection.execute(step.statement(), params).rowcount
        if step.rows is not None and changed != step.rows:
            raise ApplyMismatch(
                f"{step.what} {changed} entries where the diff said {step.rows}; "
                "another writer changed the table during the sweep"
            )


def apply_comparison(
    session: LockedChannel,
    run_id: int,
    *,
    pages: int,
    diff: Diff,
    channel_types: Iterable[str] = (),
    at: dt.datetime | None = None,
) -> None:
    """Apply additions and removals, mark what could not be proven,
    learn the listing's ``channel_types`` and finish the run row, all in the caller's
    transaction (the sweep opens one for this alone), after confirming the lock is held.
    Writes nothing to the stretches or events when nothing changed.

    The windows are honest about what each sweep proved. An addition happened after the
    start of the last sweep whose listing was complete (an incomplete one may have skipped
    the number, so its absence there proves nothing). A removal happened after the start of
    the last sweep that showed the number: the previous succeeded sweep, unless that one
    could not prove it either way (``proven_present_at``). ``detected_at`` is the database's
    time inside this transaction.

    ``at``: an imported snapshot's time, which stands for the database's clock as
    ``detected_at`` and the run's end (:mod:`sync.backfill`); None for a sweep.
    """
    c = session.connection
    timed = session.timings.timed
    with timed("ledger"):
        previous = session.previous_success_start()
        params = {
            **session.where,
            "run_id": run_id,
            "not_before": session.previous_success_start(complete_listing=True),
            "proven_at": previous,
            "initial_load": session.first_success(),
            **event_ids(run_id),
        }
    with timed("confirm lock"):
        session.confirm_lock()
        params["detected_at"] = detected_at = at or session.now()
        session.dialect.make_room_to_sort(c)  # the steps insert in order of mobile
    run_steps(c, _steps(session.staging, diff, proven_at_known=previous is not None), params, session.timings)
    with timed("channel types"):
        channel_types_of.learn(session, channel_types, run_id=run_id, at=detected_at)
    with timed("run row"):
        session.record_success(run_id, at=detected_at, pages=pages, **run_counts(diff))


def _steps(t: Staging, diff: Diff, *, proven_at_known: bool) -> list[Step]:
    """The statements of :func:`apply_comparison`, in order.

    Rows go in sorted by mobile, the leading key of the indexes they land in, so a large
    load appends to index pages instead of touching them at random.
    :meth:`~sync.store.staging.Staged.diff` wrote the additions in that order, so they are
    read as stored rather than sorted again (twice, a second each at a million rows); the
    order only ever affects speed."""
    steps: list[Step] = []
    if diff.removed:
        steps.append(
            # The stretch ends: its removal's window begins where the last sweep that showed
            # the number began.
            Step("removed", diff.removed).runs(f"""
                UPDATE blocklist_periods
                SET removed_at = :detected_at,
                    removed_not_before = COALESCE(proven_present_at, :proven_at),
                    removed_run_id = :run_id, proven_present_at = NULL,
                    removed_event_id = :removed_events + r.n
                FROM (SELECT mobile, ROW_NUMBER() OVER () AS n FROM {t.removed}) r
                WHERE account_sid = :account_sid AND channel = :channel AND removed_at IS NULL
                  AND blocklist_periods.mobile = r.mobile""")
        )
    if diff.added:
        steps.append(
            Step("added", diff.added).runs(f"""
                INSERT INTO blocklist_periods
                    (account_sid, channel, mobile, channel_type, added_at, added_not_before,
                     initial_load, added_run_id, added_event_id)
                SELECT :account_sid, :channel, mobile, channel_type, :detected_at,
                    :not_before, :initial_load, :run_id, :added_events + ROW_NUMBER() OVER ()
                FROM {t.added}""")
        )
    if not diff.current:
        # Nothing was held: no stretch was open before these additions, which open theirs
        # proven, so no stretch is left to mark or clear (at a million additions, the planner
        # knows nothing yet of the rows just written, and scanned them all: 0.65 s, loaded).
        return steps
    # Numbers this sweep's listing did not show (unconfirmed, or rescued by a check) keep (or
    # get) the start of the last sweep that listed them; every other held number was listed by
    # this sweep, and is proven again. Both touch only the few rows concerned (a partial index).
    unshown = f"SELECT mobile FROM {t.unconfirmed} UNION ALL SELECT mobile FROM {t.rescued}"
    if proven_at_known:
        steps.append(
            Step("unproven").runs(f"""
                UPDATE blocklist_periods SET proven_present_at = :proven_at
                WHERE account_sid = :account_sid AND channel = :channel AND removed_at IS NULL
                  AND proven_present_at IS NULL
                  AND mobile IN ({unshown})""")
        )
    steps.append(
        Step("proven again").runs(f"""
            UPDATE blocklist_periods SET proven_present_at = NULL
            WHERE account_sid = :account_sid AND channel = :channel AND removed_at IS NULL
              AND proven_present_at IS NOT NULL
              AND mobile NOT IN ({unshown})""")
    )
    return steps
