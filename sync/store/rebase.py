"""The rebase: an older snapshot placed before a channel's earliest run (``blocklist-sync import``).

:meth:`~sync.store.staging.Staged.before` makes a :class:`Rebase` of a staged export and the
channel's earliest succeeded run (:class:`~sync.store.ledger.FirstRun`): :meth:`Rebase.counts`
and :meth:`Rebase.sample` say what placing the export there changes, :meth:`Rebase.apply`
writes it. Where an export may go, and why only there, is :mod:`sync.backfill`'s to say.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from sync.store import channel_types as channel_types_of
from sync.store.apply import Step, run_steps
from sync.store.ledger import FirstRun

if TYPE_CHECKING:
    from sync.store.session import LockedChannel

__all__ = ["Rebase", "RebaseCounts"]


@dataclass(frozen=True)
class RebaseCounts:
    """What placing a snapshot before a channel's earliest run changes.

    ``continuing``: numbers both list: the earliest run's stretch starts at the snapshot
    instead (initial load now the snapshot's). ``arrived``: numbers the earliest run listed
    and the snapshot did not: no longer initial load, added between the two. ``gone``: numbers
    the snapshot listed and the earliest run did not: a stretch that ended between the two."""

    listed: int  # rows the file held, before de-duplication
    numbers: int  # distinct numbers of the snapshot
    first_listed: int  # numbers the earliest run listed
    continuing: int
    arrived: int
    gone: int

    @property
    def rewritten(self) -> int:
        """Stretches of the earliest run this rewrites."""
        return self.continuing + self.arrived


class Rebase:
    """An older snapshot against the channel's earliest run, made by
    :meth:`~sync.store.staging.Staged.before`: :meth:`counts` and :meth:`sample` say what it
    changes, :meth:`apply` writes it.

    Exactly what a sweep at the snapshot's time, followed by the earliest run as the next
    sweep, would have written to the stretches; and nothing the runs proved is lost. The
    audit log is append-only: the earliest run's ``initial_load`` additions stay as they are,
    and this run appends its own events (an addition, initial load, for each number it lists;
    a removal for each that was gone by the earliest run) and counts the stretches it
    rewrote on its run row (``sync_runs.rewritten``).
    """

    def __init__(self, session: LockedChannel, first: FirstRun, *, listed: int) -> None:
        self._session = session
        self._first = first
        self._t = session.staging
        self.listed = listed

    @property
    def connection(self) -> Connection:
        return self._session.connection

    def _params(self, **more: object) -> dict[str, object]:
        return {**self._session.where, "first": self._first.run_id, **more}

    def counts(self) -> RebaseCounts:
        t = self._t
        numbers, first_listed, continuing = self.connection.execute(
            text(f"""
            SELECT (SELECT COUNT(*) FROM {t.added}),
                   (SELECT COUNT(*) FROM blocklist_periods p
                    WHERE p.account_sid = :account_sid AND p.channel = :channel
                      AND p.added_run_id = :first),
                   (SELECT COUNT(*) FROM {t.added} a JOIN blocklist_periods p
                      ON p.account_sid = :account_sid AND p.channel = :channel
                     AND p.added_run_id = :first AND p.mobile = a.mobile)"""),
            self._params(),
        ).one()
        return RebaseCounts(
            listed=self.listed,
            numbers=numbers,
            first_listed=first_listed,
            continuing=continuing,
            arrived=first_listed - continuing,
            gone=numbers - continuing,
        )

    def sample(self, size: int) -> dict[str, list[str]]:
        """Up to ``size`` numbers of each kind of change, the lowest first: what a dry run shows."""
        t = self._t
        of_first = (
            "SELECT 1 FROM blocklist_periods p WHERE p.account_sid = :account_sid "
            "AND p.channel = :channel AND p.added_run_id = :first AND p.mobile = {}.mobile"
        )
        queries = {
            "continuing": f"SELECT a.mobile FROM {t.added} a WHERE EXISTS ({of_first.format('a')})",
            "gone": f"SELECT a.mobile FROM {t.added} a WHERE NOT EXISTS ({of_first.format('a')})",
            "arrived": f"""SELECT f.mobile FROM blocklist_periods f
                WHERE f.account_sid = :account_sid AND f.channel = :channel AND f.added_run_id = :first
                  AND NOT EXISTS (SELECT 1 FROM {t.added} a WHERE a.mobile = f.mobile)""",
        }
        return {
            kind: list(
                self.connection.execute(
                    text(f"{query} ORDER BY 1 LIMIT :size"), self._params(size=size)
                ).scalars()
            )
            for kind, query in queries.items()
        }

    def apply(
        self, run_id: int, *, at: dt.datetime, counts: RebaseCounts, channel_types: Iterable[str] = ()
    ) -> None:
        """Write the snapshot's stretches and rewrite the earliest run's, append this run's
        events and finish its run row, with the checked row counts, in the caller's transaction
        (the import's, around every snapshot it places), after confirming the lock is held."""
        session, first = self._session, self._first
        params = self._params(run_id=run_id, at=at, first_at=first.finished_at)
        session.confirm_lock()
        run_steps(self.connection, self._steps(counts), params)
        channel_types_of.learn(session, channel_types, run_id=run_id, at=at)
        session.record_success(
            run_id,
            at=at,
            pages=0,
            entries_seen=counts.numbers,
            added=counts.numbers,
            removed=counts.gone,
            rejected=0,
            unconfirmed=0,
            rescued=0,
            listing_complete=True,
            rewritten=counts.rewritten,
        )

    def _steps(self, counts: RebaseCounts) -> list[Step]:
        """The statements of :meth:`apply`, in order: the stretches, then this run's events."""
        t = self._t
        return [
            # Numbers gone by the earliest run: a stretch from this snapshot to that run.
            Step("gone", counts.gone).runs(f"""
                INSERT INTO blocklist_periods
                    (account_sid, channel, mobile, channel_type, added_at, added_not_before,
                     removed_at, removed_not_before, initial_load, added_run_id, removed_run_id)
                SELECT :account_sid, :channel, a.mobile, a.channel_type, :at, NULL,
                    :first_at, :at, TRUE, :run_id, :first
                FROM {t.added} a
                WHERE NOT EXISTS (
                    SELECT 1 FROM blocklist_periods p
                    WHERE p.account_sid = :account_sid AND p.channel = :channel
                      AND p.added_run_id = :first AND p.mobile = a.mobile)"""),
            # Numbers both list: the stretch began by this snapshot, the initial load now its.
            Step("continuing", counts.continuing).runs(f"""
                UPDATE blocklist_periods
                SET added_at = :at, added_not_before = NULL, initial_load = TRUE, added_run_id = :run_id
                WHERE account_sid = :account_sid AND channel = :channel AND added_run_id = :first
                  AND mobile IN (SELECT mobile FROM {t.added})"""),
            # The rest of the earliest run's numbers were not listed then: added in between.
            Step("arrived", counts.arrived).runs("""
                UPDATE blocklist_periods SET initial_load = FALSE, added_not_before = :at
                WHERE account_sid = :account_sid AND channel = :channel AND added_run_id = :first"""),
            Step("added events").runs(f"""
                INSERT INTO blocklist_events (account_sid, channel, mobile, change, detected_at,
                    not_before, initial_load, run_id)
                SELECT :account_sid, :channel, mobile, 'added', :at, NULL, TRUE, :run_id
                FROM {t.added}"""),
            Step("removed events").runs("""
                INSERT INTO blocklist_events (account_sid, channel, mobile, change, detected_at,
                    not_before, initial_load, run_id)
                SELECT account_sid, channel, mobile, 'removed', :first_at, :at, FALSE, :run_id
                FROM blocklist_periods
                WHERE account_sid = :account_sid AND channel = :channel AND added_run_id = :run_id
                  AND removed_run_id = :first
                ORDER BY mobile"""),
        ]
