"""The apply: what a sweep found, written in one transaction, its row counts checked.

An addition opens a stretch in ``blocklist_periods`` and a removal closes one, each beside its
event in ``blocklist_events``; the numbers the listing did not show are marked unproven, the
listing's ``channel_type`` codes learnt, and the run row finished. Every statement that
changes the history checks the rows it touched against the diff, so a writer that bypassed the
lock is caught (:class:`ApplyMismatch`) and nothing is applied.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, text

from sync.store import channel_types as channel_types_of
from sync.store.ledger import run_counts
from sync.store.schema import UtcTime, sync_runs
from sync.vocabulary import RunStatus

if TYPE_CHECKING:
    from sync.store.comparison import Diff
    from sync.store.session import LockedChannel

__all__ = ["ApplyMismatch", "apply_comparison"]

# Typed, so each dialect stores them as timestamps (SQLite included), not driver-chosen strings.
_DETECTED_AT = bindparam("detected_at", type_=UtcTime)
_NOT_BEFORE = bindparam("not_before", type_=UtcTime)
_PROVEN_AT = bindparam("proven_at", type_=UtcTime)


class ApplyMismatch(Exception):
    """The entries changed between diff and apply: the lock was bypassed. Nothing is applied."""


def _expect(expected: int, change: str, rowcount: int) -> None:
    if rowcount != expected:
        raise ApplyMismatch(
            f"{change} {rowcount} entries where the diff said {expected}; "
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
    """Apply additions and removals, append their events, mark what could not be proven,
    learn the listing's ``channel_types`` and finish the run row, all in the caller's
    transaction (the sweep opens one for this alone), after confirming the lock is held.
    Writes nothing to the stretches or events when nothing changed. An addition opens a
    stretch in ``blocklist_periods`` (the current entries are its open stretches) and a
    removal closes one, each beside its event: the history's two shapes cannot disagree.

    The windows are honest about what each sweep proved. An addition happened after the
    start of the last sweep whose listing was complete (an incomplete one may have skipped
    the number, so its absence there proves nothing). A removal happened after the start of
    the last sweep that showed the number: the previous succeeded sweep, unless that one
    could not prove it either way (``proven_present_at``). ``detected_at`` is the database's
    time inside this transaction.

    Rows go in sorted by mobile, the leading key of the indexes they land in, so a large
    load appends to index pages instead of touching them at random. :meth:`~sync.store.staging.Staged.diff`
    wrote the additions in that order, so they are read as stored rather than sorted again
    (twice, a second each at a million rows); the order only ever affects speed.

    ``at``: an imported snapshot's time, which stands for the database's clock as
    ``detected_at`` and the run's end (:mod:`sync.backfill`); None for a sweep.
    """
    c, t = session.connection, session.staging
    previous = session.previous_success_start()
    params = {
        **session.where,
        "run_id": run_id,
        "not_before": session.previous_success_start(complete_listing=True),
        "proven_at": previous,
        "initial_load": session.first_success(),
    }
    session.confirm_lock()
    detected_at = at or session.now()
    params["detected_at"] = detected_at
    session.dialect.make_room_to_sort(c)  # see ORDER BY below
    if diff.removed:
        # The events first: their window reads the stretches they end.
        _expect(
            diff.removed,
            "removed",
            c.execute(
                text(f"""
            INSERT INTO blocklist_events (account_sid, channel, mobile, change,
                detected_at, not_before, initial_load, run_id)
            SELECT :account_sid, :channel, r.mobile, 'removed', :detected_at,
                COALESCE(e.proven_present_at, :proven_at), :initial_load, :run_id
            FROM {t.removed} r
            JOIN blocklist_entries e
              ON e.account_sid = :account_sid AND e.channel = :channel AND e.mobile = r.mobile
            ORDER BY r.mobile""").bindparams(_DETECTED_AT, _PROVEN_AT),
                params,
            ).rowcount,
        )
        # The stretch ends: its removal's window begins where the last sweep that
        # showed the number began.
        _expect(
            diff.removed,
            "removed",
            c.execute(
                text(f"""
            UPDATE blocklist_periods
            SET removed_at = :detected_at,
                removed_not_before = COALESCE(proven_present_at, :proven_at),
                removed_run_id = :run_id, proven_present_at = NULL
            WHERE account_sid = :account_sid AND channel = :channel AND removed_at IS NULL
              AND mobile IN (SELECT mobile FROM {t.removed})""").bindparams(_DETECTED_AT, _PROVEN_AT),
                params,
            ).rowcount,
        )
    if diff.added:
        _expect(
            diff.added,
            "added",
            c.execute(
                text(f"""
            INSERT INTO blocklist_periods
                (account_sid, channel, mobile, channel_type, added_at, added_not_before,
                 initial_load, added_run_id)
            SELECT :account_sid, :channel, mobile, channel_type, :detected_at,
                :not_before, :initial_load, :run_id
            FROM {t.added}""").bindparams(_DETECTED_AT, _NOT_BEFORE),
                params,
            ).rowcount,
        )
        c.execute(
            text(f"""
            INSERT INTO blocklist_events (account_sid, channel, mobile, change,
                detected_at, not_before, initial_load, run_id)
            SELECT :account_sid, :channel, mobile, 'added', :detected_at,
                :not_before, :initial_load, :run_id
            FROM {t.added}""").bindparams(_DETECTED_AT, _NOT_BEFORE),
            params,
        )
    _mark_unproven(session, params)
    channel_types_of.learn(session, channel_types, run_id=run_id, at=detected_at)
    c.execute(
        sync_runs.update()
        .where(sync_runs.c.id == run_id)
        .values(
            status=RunStatus.SUCCEEDED,
            finished_at=params["detected_at"],
            pages_fetched=pages,
            error=None,
            **run_counts(diff),
        )
    )


def _mark_unproven(session: LockedChannel, params: Mapping[str, object]) -> None:
    """Within :func:`apply_comparison`: numbers this sweep's listing did not show (unconfirmed, or
    rescued by a check) keep (or get) the start of the last sweep that listed them; every
    other held number was listed by this sweep, and is proven again. Both touch only the
    few rows concerned (a partial index)."""
    c, t = session.connection, session.staging
    unshown = f"SELECT mobile FROM {t.unconfirmed} UNION ALL SELECT mobile FROM {t.rescued}"
    if params["proven_at"] is not None:
        c.execute(
            text(f"""
            UPDATE blocklist_periods SET proven_present_at = :proven_at
            WHERE account_sid = :account_sid AND channel = :channel AND removed_at IS NULL
              AND proven_present_at IS NULL
              AND mobile IN ({unshown})""").bindparams(_PROVEN_AT),
            params,
        )
    c.execute(
        text(f"""
        UPDATE blocklist_periods SET proven_present_at = NULL
        WHERE account_sid = :account_sid AND channel = :channel AND removed_at IS NULL
          AND proven_present_at IS NOT NULL
          AND mobile NOT IN ({unshown})"""),
        params,
    )
