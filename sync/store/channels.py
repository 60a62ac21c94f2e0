"""The run ledger's rules (:mod:`sync.store.ledger`), read across every channel: which run
each channel is answered as of, its coverage, a run's window, the failures in a row. For
``lookup``, the run summary and the metrics; a sweep asks :class:`~sync.store.ledger.RunLedger`
of its one locked channel instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import Connection, case, func, select

from sync.store.dialect import as_utc
from sync.store.ledger import imported, newest_first
from sync.store.schema import sync_runs
from sync.vocabulary import RunStatus

__all__ = [
    "Coverage",
    "LastSuccess",
    "coverage",
    "failed_in_a_row",
    "imports_among",
    "last_successes",
    "run_window",
]

_runs = sync_runs.c


class LastSuccess(NamedTuple):
    """A channel's newest succeeded run (:func:`newest_first`), as ``lookup`` answers as of it."""

    account_sid: str
    channel: str
    finished_at: dt.datetime
    listing_complete: bool | None
    first_sweep: dt.datetime  # the start of the channel's earliest succeeded run
    imported: bool  # the newest is an import: the channel has had no sweep


def imports_among(connection: Connection, run_ids: Iterable[int]) -> set[int]:
    """Those of ``run_ids`` that imported a dated export (:func:`imported`), not swept."""
    ids = sorted(set(run_ids))
    if not ids:
        return set()
    found = connection.execute(select(_runs.id).where(_runs.id.in_(ids), imported())).scalars()
    return {int(i) for i in found}


def last_successes(connection: Connection) -> list[LastSuccess]:
    """Each channel's newest succeeded run, by account and channel."""
    channel = (_runs.account_sid, _runs.channel)
    ranked = (
        select(
            _runs.account_sid,
            _runs.channel,
            _runs.finished_at,
            _runs.listing_complete,
            func.min(_runs.started_at).over(partition_by=channel).label("first_sweep"),
            imported().label("imported"),
            func.row_number().over(partition_by=channel, order_by=newest_first()).label("newest"),
        )
        .where(_runs.status == RunStatus.SUCCEEDED)
        .subquery()
    )
    r = ranked.c
    query = (
        select(r.account_sid, r.channel, r.finished_at, r.listing_complete, r.first_sweep, r.imported)
        .where(r.newest == 1)
        .order_by(r.account_sid, r.channel)
    )
    return [
        LastSuccess(
            str(sid),
            str(name),
            as_utc(finished) or finished,
            None if complete is None else bool(complete),
            as_utc(first) or first,
            bool(was),
        )
        for sid, name, finished, complete, first, was in connection.execute(query)
    ]


class Coverage(NamedTuple):
    """What the succeeded runs of a channel observed: from the earliest run's listing (the first
    by time, as :meth:`RunLedger.first_run`; an import's is the export's time) to the newest's
    (:func:`newest_first`: the last succeeded sweep, or the latest import while no sweep has
    succeeded), each recorded at its run's ``finished_at``. Outside it no observation says
    anything of the channel: an as-of answer there is ``unknown``."""

    account_sid: str
    channel: str
    covered_from: dt.datetime
    covered_from_run_id: int
    covered_to: dt.datetime
    covered_to_run_id: int
    sweeps: int  # succeeded sweeps
    imports: int  # succeeded imports of dated exports

    def contains(self, at: dt.datetime) -> bool:
        return self.covered_from <= at <= self.covered_to


def coverage(connection: Connection) -> list[Coverage]:
    """Each channel's coverage, by account and channel; channels without a succeeded run have
    none (nothing was observed)."""
    channel, by_time = (_runs.account_sid, _runs.channel), [_runs.started_at, _runs.id]  # as first_run
    ranked = (
        select(
            _runs.account_sid,
            _runs.channel,
            _runs.id,
            _runs.finished_at,
            func.row_number().over(partition_by=channel, order_by=by_time).label("earliest"),
            func.row_number().over(partition_by=channel, order_by=newest_first()).label("newest"),
            func.sum(case((imported(), 0), else_=1)).over(partition_by=channel).label("sweeps"),
            func.sum(case((imported(), 1), else_=0)).over(partition_by=channel).label("imports"),
        )
        .where(_runs.status == RunStatus.SUCCEEDED)
        .subquery()
    )
    first, last = ranked.alias("first"), ranked.alias("last")
    query = (
        select(
            first.c.account_sid,
            first.c.channel,
            first.c.finished_at,
            first.c.id,
            last.c.finished_at,
            last.c.id,
            first.c.sweeps,
            first.c.imports,
        )
        .join(last, (last.c.account_sid == first.c.account_sid) & (last.c.channel == first.c.channel))
        .where(first.c.earliest == 1, last.c.newest == 1)
        .order_by(first.c.account_sid, first.c.channel)
    )
    return [
        Coverage(
            str(sid),
            str(name),
            as_utc(since) or since,
            int(since_run),
            as_utc(until) or until,
            int(until_run),
            int(sweeps),
            int(imports),
        )
        for sid, name, since, since_run, until, until_run, sweeps, imports in connection.execute(query)
    ]


def run_window(connection: Connection, run_id: int) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(``not_before``, ``detected_at``) of a run, for the run summary: what it found
    changed after ``not_before`` (the start of the channel's last succeeded sweep before it
    with a complete listing, as its additions' events record; None for an initial load) and no
    later than ``detected_at`` (when it committed; None unless it succeeded). Removals may
    carry an earlier ``not_before`` of their own in ``blocklist_events``."""
    run = sync_runs.alias("run")
    found = connection.execute(
        select(run.c.account_sid, run.c.channel, run.c.status, run.c.started_at, run.c.finished_at).where(
            run.c.id == run_id
        )
    ).first()
    if found is None:
        return None, None
    not_before = connection.execute(
        select(_runs.started_at)
        .where(
            _runs.account_sid == found.account_sid,
            _runs.channel == found.channel,
            _runs.status == RunStatus.SUCCEEDED,
            _runs.listing_complete.is_not(False),
            _runs.id < run_id,
            _runs.started_at <= found.started_at,
        )
        .order_by(*newest_first())
        .limit(1)
    ).scalar_one_or_none()
    detected_at = found.finished_at if found.status == RunStatus.SUCCEEDED else None
    return as_utc(not_before), as_utc(detected_at)


def failed_in_a_row(connection: Connection) -> dict[tuple[str, str], int]:
    """How many sweeps of each (account, channel) failed since its last sweep that ended
    otherwise (succeeded, held, cancelled); pairs with none are left out.

    The alert on failures reads this, not the last status alone: the next tick retries a
    transient failure, and a sweep in progress (``running``) would interrupt any ``for:``
    on "the last sweep failed", so only a second failure in a row is worth a page.
    """
    ended = (
        select(_runs.account_sid, _runs.channel, func.max(_runs.id).label("id"))
        .where(_runs.status.in_([RunStatus.SUCCEEDED, RunStatus.HELD, RunStatus.CANCELLED]))
        .group_by(_runs.account_sid, _runs.channel)
        .cte("ended")
    )
    query = (
        select(_runs.account_sid, _runs.channel, func.count())
        .select_from(
            sync_runs.outerjoin(
                ended, (ended.c.account_sid == _runs.account_sid) & (ended.c.channel == _runs.channel)
            )
        )
        .where(_runs.status == RunStatus.FAILED, _runs.id > func.coalesce(ended.c.id, 0))
        .group_by(_runs.account_sid, _runs.channel)
    )
    return {(sid, channel): int(n) for sid, channel, n in connection.execute(query)}
