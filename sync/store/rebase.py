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
from sync.store.apply import Step, event_ids, run_steps
from sync.store.ledger import FirstRun

if TYPE_CHECKING:
    from sync.store.session import LockedChannel

__all__ = ["Rebase", "RebaseCounts"]


@dataclass(frozen=True)
class RebaseCounts:
    """What placing a snapshot before a channel's earliest run changes.

    ``continuing``: numbers both list: the earliest run's stretch starts at the snapshot
    instead (initial load now the snapshot's). ``arrived``: numbers the earliest run listed
    and the snapshot did not: no longer initial load, added between the two. The numbers the
    snapshot listed and the earliest run did not are ``gone`` when that proves them gone (a
    stretch that ended between the two), else ``kept``: the earliest run was a sweep, whose
    listing may have skipped a row unseen (offset paging's blind spot), so its silence proves
    nothing, and the stretch stays open, unconfirmed since the snapshot, for the next sweep's
    removal check. ``relisted`` of the gone were listed again by a later sweep: their stretch
    cannot stay open, and closing it records a removal the earliest run did not prove, so
    :mod:`sync.backfill` holds the import unless forced."""

    listed: int  # rows the file held, before de-duplication
    numbers: int  # distinct numbers of the snapshot
    first_listed: int  # numbers the earliest run listed
    continuing: int
    arrived: int
    gone: int
    kept: int = 0
    relisted: int = 0

    @property
    def rewritten(self) -> int:
        """Stretches of the earliest run this rewrites."""
        return self.continuing + self.arrived


class Rebase:
    """An older snapshot against the channel's earliest run, made by
    :meth:`~sync.store.staging.Staged.before`: :meth:`counts` and :meth:`sample` say what it
    changes, :meth:`apply` writes it.

    What a sweep at the snapshot's time, followed by the earliest run as the next sweep, would
    have written to the stretches, where the earliest run proves it; nothing the runs proved
    is lost. ``blocklist_events`` is a view of the stretches, so it says the same: this run's
    additions (initial load) and the removals it proves, the earliest run's additions of what
    the snapshot did not list (no longer initial load), and no addition twice.
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

    def _not_first(self, a: str) -> str:
        """Numbers of the snapshot the earliest run did not list (``a``: the staged row)."""
        return (
            "NOT EXISTS (SELECT 1 FROM blocklist_periods p WHERE p.account_sid = :account_sid "
            f"AND p.channel = :channel AND p.added_run_id = :first AND p.mobile = {a}.mobile)"
        )

    @staticmethod
    def _listed_later(a: str) -> str:
        """Numbers with a stretch on the channel: one a later run opened, for a number the
        earliest run did not list."""
        return (
            "EXISTS (SELECT 1 FROM blocklist_periods l WHERE l.account_sid = :account_sid "
            f"AND l.channel = :channel AND l.mobile = {a}.mobile)"
        )

    def counts(self) -> RebaseCounts:
        t = self._t
        numbers, first_listed, continuing, relisted = self.connection.execute(
            text(f"""
            SELECT (SELECT COUNT(*) FROM {t.added}),
                   (SELECT COUNT(*) FROM blocklist_periods p
                    WHERE p.account_sid = :account_sid AND p.channel = :channel
                      AND p.added_run_id = :first),
                   (SELECT COUNT(*) FROM {t.added} a JOIN blocklist_periods p
                      ON p.account_sid = :account_sid AND p.channel = :channel
                     AND p.added_run_id = :first AND p.mobile = a.mobile),
                   (SELECT COUNT(*) FROM {t.added} a
                    WHERE {self._not_first("a")} AND {self._listed_later("a")})"""),
            self._params(),
        ).one()
        absent = numbers - continuing
        proves_absence = self._first.imported  # an export cannot move while it is read
        return RebaseCounts(
            listed=self.listed,
            numbers=numbers,
            first_listed=first_listed,
            continuing=continuing,
            arrived=first_listed - continuing,
            gone=absent if proves_absence else relisted,
            kept=0 if proves_absence else absent - relisted,
            relisted=0 if proves_absence else relisted,
        )

    def _closes(self, a: str) -> str:
        """Numbers of the snapshot whose stretch ends at the earliest run: gone, where that run
        proves it (an import), or listed again later (:class:`RebaseCounts`)."""
        if self._first.imported:
            return self._not_first(a)
        return f"{self._not_first(a)} AND {self._listed_later(a)}"

    def _keeps(self, a: str) -> str | None:
        """Numbers of the snapshot kept open, unconfirmed: a sweep's silence proves nothing."""
        if self._first.imported:
            return None
        return f"{self._not_first(a)} AND NOT {self._listed_later(a)}"

    def sample(self, size: int) -> dict[str, list[str]]:
        """Up to ``size`` numbers of each kind of change, the lowest first: what a dry run shows."""
        t = self._t
        queries = {
            "continuing": f"SELECT a.mobile FROM {t.added} a WHERE NOT {self._not_first('a')}",
            "gone": f"SELECT a.mobile FROM {t.added} a WHERE {self._closes('a')}",
            "arrived": f"""SELECT f.mobile FROM blocklist_periods f
                WHERE f.account_sid = :account_sid AND f.channel = :channel AND f.added_run_id = :first
                  AND NOT EXISTS (SELECT 1 FROM {t.added} a WHERE a.mobile = f.mobile)""",
        }
        if (keeps := self._keeps("a")) is not None:
            queries["kept"] = f"SELECT a.mobile FROM {t.added} a WHERE {keeps}"
        return {
            kind: list(
                self.connection.execute(
                    text(f"{query} ORDER BY 1 LIMIT :size"), self._params(size=size)
                ).scalars()
            )
            for kind, query in queries.items()
        }

    def apply(
        self,
        run_id: int,
        *,
        at: dt.datetime,
        counts: RebaseCounts,
        channel_types: Iterable[str] = (),
    ) -> None:
        """Write the snapshot's stretches and rewrite the earliest run's, and finish this run's
        row, with the checked row counts, in the caller's transaction (the import's, around
        every snapshot it places), after confirming the lock is held. The caller decides
        whether ``counts.relisted`` may be closed (:class:`RebaseCounts`)."""
        session, first = self._session, self._first
        params = self._params(run_id=run_id, at=at, first_at=first.finished_at, **event_ids(run_id))
        session.confirm_lock()
        run_steps(self.connection, self._steps(counts), params, self._session.timings)
        channel_types_of.learn(session, channel_types, run_id=run_id, at=at)
        session.record_success(
            run_id,
            at=at,
            pages=0,
            entries_seen=counts.numbers,
            added=counts.numbers,
            removed=counts.gone,
            rejected=0,  # an export with a row that cannot be a number is refused whole
            unconfirmed=counts.kept,
            rescued=0,
            listing_complete=True,
            rewritten=counts.rewritten,
        )

    def _steps(self, counts: RebaseCounts) -> list[Step]:
        """The statements of :meth:`apply`, in order. Every number of the snapshot is one
        addition of this run, whose event id is its rank in the snapshot (and a removal's, for
        a stretch it closes), whichever step writes it."""
        t = self._t
        ranked = f"(SELECT mobile, channel_type, ROW_NUMBER() OVER (ORDER BY mobile) AS n FROM {t.added})"
        steps = [
            # Numbers proven gone by the earliest run: a stretch from this snapshot to that run.
            Step("gone", counts.gone).runs(f"""
                INSERT INTO blocklist_periods
                    (account_sid, channel, mobile, channel_type, added_at, added_not_before,
                     removed_at, removed_not_before, initial_load, added_run_id, removed_run_id,
                     added_event_id, removed_event_id)
                SELECT :account_sid, :channel, a.mobile, a.channel_type, :at, NULL,
                    :first_at, :at, TRUE, :run_id, :first, :added_events + a.n, :removed_events + a.n
                FROM {ranked} a
                WHERE {self._closes("a")}"""),
        ]
        if (keeps := self._keeps("a")) is not None:
            steps.append(
                # Not shown by the earliest run, a sweep, and by no run since: kept open,
                # listed for certain only at this snapshot (as a sweep keeps what it cannot prove).
                Step("kept", counts.kept).runs(f"""
                    INSERT INTO blocklist_periods
                        (account_sid, channel, mobile, channel_type, added_at, added_not_before,
                         initial_load, added_run_id, proven_present_at, added_event_id)
                    SELECT :account_sid, :channel, a.mobile, a.channel_type, :at, NULL,
                        TRUE, :run_id, :at, :added_events + a.n
                    FROM {ranked} a
                    WHERE {keeps}""")
            )
        return [
            *steps,
            # Numbers both list: the stretch began by this snapshot, the initial load now its.
            Step("continuing", counts.continuing).runs(f"""
                UPDATE blocklist_periods
                SET added_at = :at, added_not_before = NULL, initial_load = TRUE, added_run_id = :run_id,
                    added_event_id = :added_events + a.n
                FROM {ranked} a
                WHERE account_sid = :account_sid AND channel = :channel AND added_run_id = :first
                  AND blocklist_periods.mobile = a.mobile"""),
            # The rest of the earliest run's numbers were not listed then: added in between.
            Step("arrived", counts.arrived).runs("""
                UPDATE blocklist_periods SET initial_load = FALSE, added_not_before = :at
                WHERE account_sid = :account_sid AND channel = :channel AND added_run_id = :first"""),
        ]
