"""The one member per difference between PostgreSQL and SQLite (:class:`Dialect`), and what
both give the store: the lock's holder and lease, and times read back in UTC (:func:`as_utc`).

The implementations are :mod:`~sync.store.dialect.postgresql` and
:mod:`~sync.store.dialect.sqlite`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import overload

from sqlalchemy import Connection

__all__ = ["Dialect", "Lease", "LockHolder", "LockLost", "Row", "as_utc"]

Row = tuple[str, str | None]


@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: dt.datetime | str) -> dt.datetime: ...
@overload
def as_utc(value: dt.datetime | str | None) -> dt.datetime | None: ...
def as_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """A time as either database hands it back, aware and in UTC. PostgreSQL returns it
    aware; SQLite returns a column naive and a view's or an aggregate's value as text, and
    every time the store writes is UTC. The one place that reading is undone."""
    if value is None:
        return None
    stamp = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class LockHolder:
    """The session holding a channel's lock, as far as the database lets this role see it.

    PostgreSQL does not record when a lock was granted, so ``since`` is when the holding
    session connected: the lock can be no older. A sweep connects only to take its lock, so for
    a sweep the two agree. Another role's session shows only its pid, role and application name
    unless this role may read all statistics (``pg_read_all_stats``): then ``since`` is None.
    """

    pid: int
    role: str | None
    application_name: str | None
    client: str | None  # the holder's address; None over a local socket, or when hidden
    since: dt.datetime | None  # when the holding session connected
    held_for: float | None  # seconds since then, on the database's clock


class LockLost(Exception):
    """The session holding a channel's lock ended before the sweep applied (a DBA ended it, or
    the server did, past a timeout): another sweep may hold the channel now, so nothing is
    applied."""


class Lease:
    """A channel's lock, as :meth:`Dialect.lock` took it. :meth:`confirm` is asked inside the
    apply's transaction, so a sweep whose lock ended while it paged applies nothing."""

    def confirm(self, connection: Connection) -> None:
        """Raise :class:`LockLost` unless the lock is still held; SQLite's file lock is held
        by this process's open file, which nothing but the process ending can release."""


class _ListingFailed(Exception):
    """Stands in for the listing's own error while the COPY is abandoned."""


class Dialect:
    """One member per difference between the databases, each saying why they differ; the store
    asks these, and nothing else, what depends on the database it runs on."""

    temp_schema: str
    """The connection's temporary schema, which qualifies every staging table: PostgreSQL calls
    it ``pg_temp``, SQLite ``temp``."""

    key_type: str
    """The column type of a staging table's ``mobile``, which is joined to the entries' key: on
    PostgreSQL that key is in the ``"C"`` collation (migration 0006) and a join across two
    collations is refused, so the staging key must say so; SQLite's ``TEXT`` compares bytes
    already."""

    def set_session_limits(self, connection: Connection, seconds: float | None) -> None:
        """Make the sweep's own session wait, run and idle for up to ``seconds`` (``None``: no
        limit), whatever defaults the role or database set; commits.

        On PostgreSQL a role default meant for web traffic (``statement_timeout = '5s'``, common
        on managed servers) would end every large sweep: its COPY lasts as long as the whole
        listing, and the session sits idle in a transaction while Kaleyra answers a removal
        check. The sweep's own timeout is the right bound for each limit (``statement_timeout``,
        ``lock_timeout``, ``idle_in_transaction_session_timeout`` and, from PostgreSQL 14,
        ``idle_session_timeout``): no statement, lock wait or idle spell of a sweep may outlast
        the sweep, and a session whose process hangs or vanished (a lost node) is ended by the
        server soon after, releasing the channel's lock, instead of holding it for ever. SQLite
        has no such settings."""
        raise NotImplementedError

    def lock_holder(self, connection: Connection, *, account_sid: str, channel: str) -> LockHolder | None:
        """Who holds the lock :meth:`lock` could not take, or None when that cannot be known
        (SQLite's file lock does not say; the holder may also have just let go).

        PostgreSQL marks a locked row with the locking transaction (``xmax``), and lists that
        transaction's session in ``pg_stat_activity``."""
        raise NotImplementedError

    def lock(
        self, connection: Connection, *, account_sid: str, channel: str, seconds: float | None
    ) -> AbstractContextManager[Lease | None]:
        """Try, without waiting, to lock one (account, channel) for as long as the block runs;
        yields the :class:`Lease`, or None when the lock was not taken (then nothing is held
        and nothing is undone). ``seconds`` bounds how long the lock may be held, as
        :meth:`set_session_limits` bounds the sweep's session.

        PostgreSQL locks the channel's row of ``sync_channel_locks`` (``FOR UPDATE``), which
        only a role that may update that table can do: a read-only login cannot hold a sweep
        back, as it could an advisory lock, which any login may take. The row lock lives as
        long as a transaction, and the sweep commits several, so a second session of the sweep
        holds it. SQLite has no row locks: a file lock beside the database, named by account
        and channel, stands in."""
        raise NotImplementedError

    def load(self, connection: Connection, table: str, rows: Iterable[Row]) -> int:
        """Load ``rows`` into ``table`` (``mobile, channel_type``) as they stream in, without
        committing; returns the rows loaded. If ``rows`` raises, that error propagates and the
        load is abandoned.

        PostgreSQL streams one COPY, far faster than inserts; SQLite has no COPY, so it takes
        batched inserts."""
        raise NotImplementedError

    def compare(
        self, connection: Connection, *, seen: str, added: str, removed: str, where: Mapping[str, str]
    ) -> None:
        """Fill ``added`` with the numbers listed in ``seen`` but not held by the channel that
        ``where`` (``account_sid``, ``channel``) names, one row each, in order of mobile (only
        speed depends on that order); fill ``removed`` with those held but not listed. Does not
        commit.

        PostgreSQL does it in one hash full join; SQLite has no FULL JOIN before 3.39 nor
        writing CTEs, and joins only by looping, so it indexes the listing and runs two
        anti-joins."""
        raise NotImplementedError

    def distinct_listed(self, connection: Connection, *, seen: str, added: str) -> None:
        """Fill ``added`` with every number listed in ``seen``, once, in order of mobile, with
        the greatest ``channel_type`` it was listed with: a first load's additions, or an
        older snapshot's numbers. Does not commit.

        PostgreSQL sorts once and keeps each number's first row (``DISTINCT ON``: a million
        rows in about half the time of grouping them, which hashes them and then sorts the
        groups), with room to sort in memory; SQLite has no ``DISTINCT ON``, and groups."""
        raise NotImplementedError

    def sample(self, connection: Connection, table: str, size: int, staged: int) -> list[str] | None:
        """Up to ``size`` numbers of ``table`` (which holds ``staged`` rows) at random, read
        cheaply; ``None`` where that cannot be done, and the whole table is to be read.

        PostgreSQL can sample a few pages (``TABLESAMPLE``) instead of sorting the whole
        listing; SQLite cannot."""
        raise NotImplementedError

    def make_room_to_sort(self, connection: Connection) -> None:
        """Let the current transaction sort a large set in memory rather than on disk.

        PostgreSQL's default ``work_mem`` spills a large sort to disk, and can be raised for one
        transaction; on SQLite nothing is set."""
        raise NotImplementedError

    def now(self, connection: Connection) -> dt.datetime:
        """The database's current time, in UTC: the one clock every stored time is read from.
        Sweeps may run on hosts whose clocks disagree; the database they write to is one.

        PostgreSQL's ``clock_timestamp()`` is the server's clock at the moment of asking (not the
        transaction's start, as ``now()`` is); SQLite has no server, and reads the clock of the
        process that opened it, to the millisecond."""
        raise NotImplementedError
