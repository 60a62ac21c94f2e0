"""The run ledger: the one owner of which run was a channel's last sweep, last success and last
complete listing, and of how imports order against sweeps.

Every run of an (account, channel) is a row of ``sync_runs``. Three rules decide what "last"
means, and are written here only:

- **Sweeps are ordered by id**, never by time (:func:`last_sweep_first`): runs are numbered in
  the order they started, under the channel's lock, while a time written by a host whose clock
  was off (before every time came from the database) may lie.
- **An import is no sweep** (:func:`imported`): it carries the file's provenance, and its time
  is the time the export was taken. ``run --trigger backfill`` is a sweep all the same. So the
  age of a channel's last sweep, and the size the next listing is measured against, leave
  imports out.
- **Succeeded runs, newest first** (:func:`newest_first`): every sweep by id, then the imports
  by their time. An import is numbered when it is made and may place an export from last year
  before a sweep of last week, so it is the newest only while no sweep has succeeded.

:class:`RunLedger` asks these of one locked channel (its run rows, the windows a sweep's
changes are dated in, where an import may go); :mod:`sync.store.channels` asks them of every
channel, for ``lookup``, the run summary and the metrics. The ``blocklist_sync_health`` view, which
``status``, the metrics and the dashboards read, states the same last sweep and last success in
SQL, frozen in its migration (0010), and the ``blocklist_coverage`` view (and
``blocklist_coverage_bounds()``, which ``blocklist_as_of`` reads) the same coverage, frozen
in 0013 and 0014; ``tests/test_ledger.py`` and
``tests/test_coverage.py`` hold them together.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Connection, case, select, text

from sync.store.dialect import as_utc
from sync.store.schema import sync_runs
from sync.vocabulary import RunStatus, Trigger

if TYPE_CHECKING:
    from sync.store.comparison import Diff

__all__ = [
    "FirstRun",
    "RunLedger",
    "Source",
    "imported",
    "last_sweep_first",
    "newest_first",
]

_ABANDONED = "the process ended before the sweep finished (crash, kill or restart); nothing was applied"
_runs = sync_runs.c


def imported() -> ColumnElement[bool]:
    """Runs that imported a dated export: history, but no sweep."""
    return _runs.source_sha256.is_not(None)


def last_sweep_first() -> ColumnElement[object]:
    """Sweeps, the last first: by id (see the module's first rule)."""
    return _runs.id.desc()


def newest_first() -> list[ColumnElement[object]]:
    """Succeeded runs, the newest first: every sweep by id, then the imports by their time."""
    sweep = case((imported(), 0), else_=1)
    return [sweep.desc(), case((imported(), 0), else_=_runs.id).desc(), _runs.started_at.desc()]


@dataclass(frozen=True)
class Source:
    """Where an imported snapshot came from, recorded on its run row (provenance)."""

    name: str  # the file's name, without its directory
    size: int  # bytes, as read
    sha256: str  # hex


@dataclass(frozen=True)
class FirstRun:
    """A channel's earliest succeeded run, before which an older snapshot is placed."""

    run_id: int
    started_at: dt.datetime
    finished_at: dt.datetime
    listing_complete: bool | None
    imported: bool  # an import's run, not a sweep's


def run_counts(diff: Diff | None) -> dict[str, int | bool | None]:
    """What a run row records of a sweep's diff."""
    if diff is None:
        return {}
    return {
        "entries_seen": diff.seen,
        "added": diff.added,
        "removed": diff.removed,
        "rejected": diff.rejected,
        "unconfirmed": diff.unconfirmed,
        "rescued": diff.rescued,
        "listing_complete": diff.listing_complete,
    }


class RunLedger:
    """The runs of one locked (account, channel): what :class:`~sync.store.LockedChannel`
    knows of its channel's history, on its held connection, inside the caller's transaction.
    Nothing here commits: the ``running`` row a sweep starts is committed by the sweep's own
    transaction, before its first page."""

    account_sid: str
    channel: str
    where: dict[str, str]  # account_sid and channel, as bind parameters

    @property
    def connection(self) -> Connection:
        raise NotImplementedError  # the locked channel's, inside the caller's transaction

    def now(self) -> dt.datetime:
        raise NotImplementedError  # the database's clock

    def _of_channel(self) -> list[ColumnElement[bool]]:
        return [_runs.account_sid == self.account_sid, _runs.channel == self.channel]

    # -- a sweep's run row ---------------------------------------------------------------

    def fail_abandoned_runs(self) -> int:
        """Mark runs left ``running`` as failed. We hold the lock, so their process is gone."""
        result = self.connection.execute(
            sync_runs.update()
            .where(*self._of_channel(), _runs.status == RunStatus.RUNNING)
            .values(status=RunStatus.FAILED, finished_at=self.now(), error=_ABANDONED)
        )
        return result.rowcount

    def start_run(self, trigger: Trigger) -> int:
        """Insert the ``running`` row; the sweep commits it before anything else, so even a
        crash leaves a trace."""
        run_id = self.connection.execute(
            sync_runs.insert()
            .values(**self.where, trigger=trigger, status=RunStatus.RUNNING, started_at=self.now())
            .returning(_runs.id)
        ).scalar_one()
        return int(run_id)

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        *,
        pages: int = 0,
        diff: Diff | None = None,
        error: str | None = None,
    ) -> None:
        """Record how a run ended that applied nothing (failed, held, dry_run, cancelled)."""
        self.connection.execute(
            sync_runs.update()
            # Only a run still going: never rewrite one whose changes were already committed.
            .where(_runs.id == run_id, _runs.status == RunStatus.RUNNING)
            .values(
                status=status, finished_at=self.now(), pages_fetched=pages, error=error, **run_counts(diff)
            )
        )

    def record_success(
        self, run_id: int, *, at: dt.datetime, pages: int, **counts: int | bool | None
    ) -> None:
        """Within an apply, its last write: the run succeeded at ``at`` (its changes'
        ``detected_at``), with what it counted."""
        self.connection.execute(
            sync_runs.update()
            .where(_runs.id == run_id)
            .values(status=RunStatus.SUCCEEDED, finished_at=at, pages_fetched=pages, error=None, **counts)
        )

    # -- what a sweep reads of the runs before it ------------------------------------------

    def seconds_since_last_start(self, *, count_failures: bool = True) -> float | None:
        """Seconds since the last sweep of this channel started (any outcome but a dry run;
        without ``count_failures``, failed and cancelled sweeps are left out too, so a retry
        after a failure or a stop is not mistaken for a sweep done moments ago)."""
        ignored = [RunStatus.DRY_RUN]
        if not count_failures:
            ignored += [RunStatus.FAILED, RunStatus.CANCELLED]
        last = as_utc(
            self.connection.execute(
                select(_runs.started_at)
                # an export's time says nothing of when the channel was swept
                .where(*self._of_channel(), _runs.status.not_in(ignored), ~imported())
                .order_by(last_sweep_first())
                .limit(1)
            ).scalar_one_or_none()
        )
        age = None if last is None else (self.now() - last).total_seconds()
        # A start in the future (written by such a host before 0008) says nothing of freshness.
        return age if age is None or age >= 0 else None

    def last_swept_size(self) -> int | None:
        """How many numbers the last succeeded sweep of this channel found (imports left out):
        what the next listing is measured against while it pages (its share and time left);
        None before the first sweep."""
        found = self.connection.execute(
            select(_runs.entries_seen)
            .where(*self._of_channel(), _runs.status == RunStatus.SUCCEEDED, ~imported())
            .order_by(last_sweep_first())
            .limit(1)
        ).scalar_one_or_none()
        return None if found is None else int(found)

    def previous_success_start(self, *, complete_listing: bool = False) -> dt.datetime | None:
        """Start of the last succeeded sweep: every number it showed was there then, so a
        removal found now happened after it. With ``complete_listing``, of the last one whose
        listing was complete: only such a listing proves a number absent, so an addition found
        now happened after it. (Runs from before that was judged count as complete, as they
        always did.)

        The last by id (:func:`newest_first`), not the latest time, and never one that started
        in the future: a time written by a host whose clock was off (before every time came
        from the database) would otherwise make a window end before it begins."""
        query = (
            select(_runs.started_at)
            .where(*self._of_channel(), _runs.status == RunStatus.SUCCEEDED, _runs.started_at <= self.now())
            .order_by(*newest_first())
            .limit(1)
        )
        if complete_listing:
            query = query.where(_runs.listing_complete.is_not(False))
        return as_utc(self.connection.execute(query).scalar_one_or_none())

    def first_success(self) -> bool:
        """Whether no sweep of this channel has succeeded yet: this one is its initial load."""
        found = self.connection.execute(
            select(_runs.id).where(*self._of_channel(), _runs.status == RunStatus.SUCCEEDED).limit(1)
        ).first()
        return found is None

    def sweeps_applied_since(self, run_id: int) -> Iterator[tuple[int, Iterator[tuple[str, str]]]]:
        """Each succeeded sweep of this channel numbered after ``run_id`` (imports left out),
        oldest first, with the changes it applied: (``added`` | ``removed``, mobile), sorted
        by change, then number, as :meth:`~sync.store.Comparison.changes` streams a sweep's.
        Read lazily: a caller that finds what it looks for in the first run reads no other's
        events."""
        runs = (
            self.connection.execute(
                select(_runs.id)
                .where(
                    *self._of_channel(), _runs.status == RunStatus.SUCCEEDED, _runs.id > run_id, ~imported()
                )
                .order_by(_runs.id)
            )
            .scalars()
            .all()
        )
        for found in runs:
            yield int(found), self._changes_of(int(found))

    def _changes_of(self, run_id: int) -> Iterator[tuple[str, str]]:
        # The stretches a run opened or closed; its changes were all detected at its commit,
        # its finished_at, which reaches its additions through the index on added_at (an
        # initial load reads the channel's rows, all of which it opened).
        query = text(
            "SELECT 'added' AS change, mobile FROM blocklist_periods WHERE account_sid = :a "
            "AND channel = :c AND added_run_id = :r "
            "AND added_at = (SELECT finished_at FROM sync_runs WHERE id = :r) "
            "UNION ALL SELECT 'removed', mobile FROM blocklist_periods WHERE account_sid = :a "
            "AND channel = :c AND removed_run_id = :r "
            "AND removed_at = (SELECT finished_at FROM sync_runs WHERE id = :r) "
            "ORDER BY 1, 2"
        )
        params = {"a": self.account_sid, "c": self.channel, "r": run_id}
        for change, mobile in self.connection.execute(query, params, execution_options={"yield_per": 5000}):
            yield str(change), str(mobile)

    # -- imports of dated exports (sync/backfill.py) ------------------------------------

    def start_import(self, source: Source, at: dt.datetime) -> int:
        """Insert the ``running`` row of an import: trigger ``backfill``, the export's time as
        its start, the file's provenance. Part of the import's transaction: an import that
        fails leaves no row (nothing else of it is written either)."""
        return int(
            self.connection.execute(
                sync_runs.insert()
                .values(
                    **self.where,
                    trigger=Trigger.BACKFILL,
                    status=RunStatus.RUNNING,
                    started_at=at,
                    source_file=source.name,
                    source_bytes=source.size,
                    source_sha256=source.sha256,
                )
                .returning(_runs.id)
            ).scalar_one()
        )

    def imported_run(self, sha256: str, at: dt.datetime) -> int | None:
        """The run that already imported this file (by SHA-256) at this time, if any."""
        found = self.connection.execute(
            select(_runs.id, _runs.started_at).where(
                *self._of_channel(), _runs.status == RunStatus.SUCCEEDED, _runs.source_sha256 == sha256
            )
        ).all()
        return next((int(i) for i, started in found if as_utc(started) == at), None)

    def succeeded_runs(self) -> list[tuple[int, dt.datetime, bool]]:
        """``(id, started_at, imported)`` of every succeeded run of this channel, oldest first:
        where an import may go (before the earliest, or after the latest import while no
        sweep has run)."""
        found = self.connection.execute(
            select(_runs.id, _runs.started_at, imported())
            .where(*self._of_channel(), _runs.status == RunStatus.SUCCEEDED)
            .order_by(_runs.started_at, _runs.id)
        ).all()
        return [(int(i), as_utc(started) or started, bool(was)) for i, started, was in found]

    def first_run(self) -> FirstRun | None:
        """The channel's earliest succeeded run (by time), or None for an empty channel."""
        found = self.connection.execute(
            select(_runs.id, _runs.started_at, _runs.finished_at, _runs.listing_complete, imported())
            .where(*self._of_channel(), _runs.status == RunStatus.SUCCEEDED)
            .order_by(_runs.started_at, _runs.id)
            .limit(1)
        ).first()
        if found is None:
            return None
        run_id, started, finished, complete, was = found
        return FirstRun(
            int(run_id),
            as_utc(started) or started,
            as_utc(finished) or finished,
            None if complete is None else bool(complete),
            bool(was),
        )
