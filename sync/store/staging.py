"""Staging: the listing, loaded into temporary tables as it streams in, and what can be done with it.

Knows nothing of HTTP: rows arrive as ``(mobile, channel_type)`` tuples. The listing lands in
a temporary table of the sweep's own connection, so memory in Python stays flat however long
the blocklist, and everything after it is set-based SQL: :meth:`Staged.diff` compares it with
the channel's entries (:class:`~sync.store.comparison.Comparison`), :meth:`Staged.before`
places an older snapshot before the channel's earliest run (:class:`~sync.store.rebase.Rebase`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, func, select, text

from sync.store.comparison import Comparison
from sync.store.dialect import Row
from sync.store.ledger import FirstRun
from sync.store.rebase import Rebase
from sync.store.schema import blocklist_entries

if TYPE_CHECKING:
    from sync.store.session import LockedChannel

__all__ = ["Staged", "Staging", "stage"]

_STAGING_PREFIX = "kbs_staging_"


@dataclass(frozen=True)
class Staging:
    """The names of one sweep's temporary tables, always with their temporary schema, so no
    statement here — the DROP before a CREATE least of all — can reach a user's permanent
    table that happens to share a name."""

    seen: str  # the listing, as loaded
    added: str  # listed, not held: additions
    removed: str  # held, not listed: removal candidates, until proven
    unconfirmed: str  # removal candidates whose absence could not be proven
    rescued: str  # removal candidates the mobile filter showed listed: the listing skipped them

    @classmethod
    def in_schema(cls, schema: str) -> Staging:
        names = ("seen", "added", "removed", "unconfirmed", "rescued")
        return cls(*(f"{schema}.{_STAGING_PREFIX}{name}" for name in names))

    def all(self) -> tuple[str, ...]:
        return (self.seen, self.added, self.removed, self.unconfirmed, self.rescued)


def stage(session: LockedChannel, rows: Iterable[Row]) -> Staged:
    """Load the listing into a temporary table as it streams in.

    The dialect loads it (:meth:`~sync.store.dialect.Dialect.load`): one COPY for the whole
    sweep on PostgreSQL, batched inserts on SQLite. If ``rows`` raises (a page failed), the load
    is abandoned and nothing outside the temp table changed.
    """
    c, t, timed = session.connection, session.staging, session.timings.timed
    with timed("staging tables"):
        _create_tables(c, t, session.dialect.key_type)
    listed: list[float] = []  # when the listing's last row was handed to the load
    loaded = session.dialect.load(c, t.seen, _marking_the_end(rows, listed))
    if listed:  # what the load did after the listing ended: what the server still had to do
        session.timings.seconds["load end"] = time.perf_counter() - listed[0]
    return Staged(session, loaded)


def _marking_the_end(rows: Iterable[Row], listed: list[float]) -> Iterator[Row]:
    yield from rows
    listed.append(time.perf_counter())


def _create_tables(c: Connection, t: Staging, key: str) -> None:
    for name in t.all():
        c.execute(text(f"DROP TABLE IF EXISTS {name}"))
    c.execute(text(f"CREATE TEMPORARY TABLE {t.seen} (mobile {key} NOT NULL, channel_type TEXT)"))
    # The added table is unique by construction (GROUP BY); the removed one's key serves keep().
    c.execute(text(f"CREATE TEMPORARY TABLE {t.added} (mobile {key} NOT NULL, channel_type TEXT)"))
    c.execute(text(f"CREATE TEMPORARY TABLE {t.removed} (mobile {key} PRIMARY KEY)"))
    c.execute(text(f"CREATE TEMPORARY TABLE {t.unconfirmed} (mobile {key} PRIMARY KEY)"))
    c.execute(text(f"CREATE TEMPORARY TABLE {t.rescued} (mobile {key} PRIMARY KEY)"))


class Staged:
    """A listing loaded into the staging table by :meth:`~sync.store.LockedChannel.stage`: all
    there is to do with it is compare it with the channel's entries (:meth:`diff`), or place it
    before the channel's earliest run (:meth:`before`)."""

    def __init__(self, session: LockedChannel, rows: int) -> None:
        self._session = session
        self.rows = rows  # rows loaded: the listing, before de-duplication

    def diff(self) -> Comparison:
        """Compute additions and removal candidates into temp tables, set-based.

        A channel with no entries (a first load) skips the comparison: every distinct listed
        number is an addition. Otherwise the dialect compares the two sets
        (:meth:`~sync.store.dialect.Dialect.compare`): one hash full join on PostgreSQL, two
        anti-joins on SQLite.
        """
        session = self._session
        c, t, timed = session.connection, session.staging, session.timings.timed
        with timed("count current"):
            current = self._count_current()
        if current == 0:
            with timed("first additions"):
                session.dialect.distinct_listed(c, seen=t.seen, added=t.added)
        else:
            with timed("compare"):
                session.dialect.compare(c, seen=t.seen, added=t.added, removed=t.removed, where=session.where)
        comparison = Comparison(session, listed=self.rows, current=current)
        # Distinct numbers listed: the additions, and the entries that were not candidates.
        with timed("counts"):
            first = comparison.counts()
        comparison.listed_twice = self.rows - (first.added + current - first.removed)
        return comparison

    def before(self, first: FirstRun) -> Rebase:
        """Place this listing, an older snapshot, before the channel's earliest run ``first``:
        what it would change (:class:`Rebase`), computed against the numbers ``first`` listed
        (the stretches it opened: being the earliest, it opened one for each)."""
        session = self._session
        c, t = session.connection, session.staging
        with session.timings.timed("distinct listed"):
            session.dialect.distinct_listed(c, seen=t.seen, added=t.added)
        return Rebase(session, first, listed=self.rows)

    def _count_current(self) -> int:
        session = self._session
        return session.connection.execute(
            select(func.count())
            .select_from(blocklist_entries)
            .where(
                blocklist_entries.c.account_sid == session.account_sid,
                blocklist_entries.c.channel == session.channel,
            )
        ).scalar_one()
