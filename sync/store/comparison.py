"""The listing compared with the channel's entries: additions and removal candidates, narrowed by
the removal checks, counted, and applied.

:meth:`~sync.store.staging.Staged.diff` makes a :class:`Comparison`: additions and removal
candidates in temporary tables. The sweep's removal checks narrow the candidates (:meth:`~Comparison.keep`,
:meth:`~Comparison.unconfirm`), drawing their controls from the listing (:meth:`~Comparison.listed_sample`,
:meth:`~Comparison.newest_listed`); :meth:`~Comparison.counts` says where they stand as a
:class:`Diff`, and :meth:`~Comparison.apply` writes them (:mod:`sync.store.apply`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from sync.store.apply import apply_comparison

if TYPE_CHECKING:
    from sync.store.session import LockedChannel

__all__ = ["Comparison", "Diff"]


@dataclass(frozen=True)
class Diff:
    """What a sweep found, against the current entries of its channel."""

    current: int  # entries held before this sweep
    listed: int  # rows the listing returned, before de-duplication and confirmation
    added: int
    removed: int
    rejected: int = 0  # rows that could not be a phone number, never staged
    # Held numbers the listing did not show, which the mobile filter could neither prove gone
    # (kept, counted) nor still there ...
    unconfirmed: int = 0
    # ... and those it showed still there: the listing skipped them.
    rescued: int = 0
    # Nothing shows the listing skipped a row; None until the removal checks have judged it.
    listing_complete: bool | None = None

    @property
    def seen(self) -> int:
        """Distinct numbers blocklisted now: kept current entries plus additions."""
        return self.current - self.removed + self.added


class Comparison:
    """The listing against the channel's entries, made by
    :meth:`~sync.store.staging.Staged.diff`: additions and removal candidates in temporary
    tables. The removal checks narrow the candidates (:meth:`keep`, :meth:`unconfirm`);
    :meth:`counts` says where they stand; :meth:`apply` writes them."""

    def __init__(self, session: LockedChannel, *, listed: int, current: int) -> None:
        self._session = session
        self._t = session.staging
        self.listed = listed  # rows the listing returned
        # The entries are counted once, by the diff: we hold the lock, so nobody changes them
        # before apply(), which checks its row counts anyway.
        self.current = current
        self._rescued = 0  # removal candidates the filter found still listed, by keep()
        # Rows that repeated a number listed elsewhere in the listing (set by Staged.diff).
        self.listed_twice = 0

    @property
    def connection(self) -> Connection:
        return self._session.connection

    def counts(self) -> Diff:
        """The diff as it stands."""
        t = self._t
        added, removed, unconfirmed = self.connection.execute(
            text(
                f"SELECT (SELECT COUNT(*) FROM {t.added}), (SELECT COUNT(*) FROM {t.removed}), "
                f"(SELECT COUNT(*) FROM {t.unconfirmed})"
            )
        ).one()
        return Diff(
            current=self.current,
            listed=self.listed,
            added=added,
            removed=removed,
            unconfirmed=unconfirmed,
            rescued=self._rescued,
        )

    def removal_candidates(self, batch: int) -> Iterator[list[str]]:
        """Removal candidates in batches, by keyset paging so memory stays flat."""
        after = ""
        query = text(
            f"SELECT mobile FROM {self._t.removed} WHERE mobile > :after ORDER BY mobile LIMIT :batch"
        )
        while mobiles := list(self.connection.execute(query, {"after": after, "batch": batch}).scalars()):
            yield mobiles
            after = mobiles[-1]

    def listed_sample(self, size: int) -> list[str]:
        """Up to ``size`` numbers this sweep's listing held, picked at random: numbers a
        working ``mobile`` filter must confirm, asked alongside the removal candidates."""
        with self._session.timings.timed("sample"):
            return self._sample(size)

    def _sample(self, size: int) -> list[str]:
        sample = self._session.dialect.sample(self.connection, self._t.seen, size, self.listed)
        if sample is None:
            sample = list(
                self.connection.execute(
                    text(f"SELECT mobile FROM {self._t.seen} ORDER BY random() LIMIT :size"), {"size": size}
                ).scalars()
            )
        return sample

    def newest_listed(self, size: int) -> list[str]:
        """Up to ``size`` of the newest numbers this listing held: its own additions, else the
        channel's latest additions still listed. A ``mobile`` filter answering from a cache
        older than the last sweeps does not know them, so as controls they show its staleness."""
        t, where = self._t, self._session.where
        query = text(f"SELECT mobile FROM {t.added} LIMIT :size")
        newest = list(self.connection.execute(query, {"size": size}).scalars())
        if len(newest) < size:
            newest += self.connection.execute(
                text(f"""
                    SELECT p.mobile FROM blocklist_periods p
                    WHERE p.account_sid = :account_sid AND p.channel = :channel
                      AND NOT p.initial_load AND p.removed_at IS NULL
                      AND NOT EXISTS (SELECT 1 FROM {t.removed} r WHERE r.mobile = p.mobile)
                    ORDER BY p.added_at DESC LIMIT :size"""),
                {**where, "size": size - len(newest)},
            ).scalars()
        return newest

    def keep(self, present: Iterable[str]) -> None:
        """Numbers a direct check found still blocklisted: they are not removed after all, and
        the listing that did not show them skipped them (counted as rescued). The check is not
        the listing: a filter may answer from a stale cache, so a rescued number is not proven
        listed by this sweep (its removal window, one day, starts at the last sweep that
        listed it)."""
        mobiles = [{"m": m} for m in present]
        if mobiles:
            c, t = self.connection, self._t
            move = f"INSERT INTO {t.rescued} SELECT mobile FROM {t.removed} WHERE mobile = :m"
            c.execute(text(move), mobiles)
            self._rescued += c.execute(text(f"DELETE FROM {t.removed} WHERE mobile = :m"), mobiles).rowcount

    def unconfirm(self, unproven: Iterable[str]) -> None:
        """Removal candidates whose absence could not be proven: kept as blocklisted, counted
        as unconfirmed, and checked again by the next sweep."""
        mobiles = [{"m": m} for m in unproven]
        if mobiles:
            c, t = self.connection, self._t
            move = f"INSERT INTO {t.unconfirmed} SELECT mobile FROM {t.removed} WHERE mobile = :m"
            c.execute(text(move), mobiles)
            c.execute(text(f"DELETE FROM {t.removed} WHERE mobile = :m"), mobiles)

    def changes(self) -> Iterator[tuple[str, str]]:
        """Every ('added' | 'removed', mobile) this sweep would apply, streamed."""
        yield from self.connection.execute(
            text(
                f"SELECT 'added', mobile FROM {self._t.added} UNION ALL "
                f"SELECT 'removed', mobile FROM {self._t.removed} ORDER BY 1, 2"
            ),
            execution_options={"yield_per": 5000},
        )

    # -- apply -------------------------------------------------------------------------

    def apply(
        self,
        run_id: int,
        *,
        pages: int,
        diff: Diff,
        channel_types: Iterable[str] = (),
        at: dt.datetime | None = None,
    ) -> None:
        """Apply additions and removals and the run row, in the caller's
        transaction (:func:`~sync.store.apply.apply_comparison`, which says how each change is
        dated). ``at``: an imported snapshot's time, which stands for the database's clock
        (:mod:`sync.backfill`); None for a sweep."""
        apply_comparison(self._session, run_id, pages=pages, diff=diff, channel_types=channel_types, at=at)

    def refresh_statistics(self, diff: Diff) -> None:
        """After a large change (over 10,000 numbers, and a tenth of the channel), fresh
        statistics of the stretches: autovacuum analyzes eventually, but the next sweep's diff
        plans with these numbers. Run after the apply is committed, in a transaction of its
        own that may fail harmlessly (:meth:`LockedChannel.upkeep`)."""
        if diff.added + diff.removed > max(10_000, diff.seen // 10):
            with self._session.timings.timed("analyze"):
                self.connection.execute(text("ANALYZE blocklist_periods"))
