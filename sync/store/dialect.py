"""What PostgreSQL and SQLite do differently, in one place.

The store (:mod:`sync.store`) is portable SQL: the run rows, the staging tables, the apply
transaction and every statement that reads the same on both databases stay there. What cannot
read the same — how a channel is locked and who holds it, what limits a sweep's session runs
under, how the staging tables are named and keyed, how the listing is loaded and compared, how
a sample is drawn, how much memory a sort may take — is one member of :class:`Dialect` here,
with one implementation per database: :class:`PostgreSQL` and :class:`SQLite`.
:func:`dialect_for` picks one.

Knows nothing of HTTP nor of the Kaleyra client: rows arrive as ``(mobile, channel_type)``
tuples.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, overload

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

__all__ = ["Dialect", "Lease", "LockHolder", "LockLost", "PostgreSQL", "SQLite", "as_utc", "dialect_for"]

Row = tuple[str, str | None]
_MAX_MILLISECONDS = 2**31 - 1  # the largest value a PostgreSQL timeout setting takes
# The store's logger: what happens here is part of the store's work, and is logged as before.
log = logging.getLogger("sync.store")


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


class PostgreSQL(Dialect):
    # pg_temp always means this session's own temporary schema.
    temp_schema = "pg_temp"
    # Numbers compare as bytes on PostgreSQL, as the tables' key columns do (migration
    # 0006); a join between two collations would not even be allowed.
    key_type = 'TEXT COLLATE "C"'

    def set_session_limits(self, connection: Connection, seconds: float | None) -> None:
        """``set_config`` for the session (not the transaction), every limit in one statement:
        one round trip, and the role's own limit, however short, never has to fit more than
        that one call (a statement runs under the limits in force when it began)."""
        limit = "0" if seconds is None else f"{min(math.ceil(seconds * 1000), _MAX_MILLISECONDS)}ms"
        names = ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"]
        if (connection.dialect.server_version_info or (0,)) >= (14,):
            names.append("idle_session_timeout")
        calls = ", ".join(f"set_config('{name}', :limit, false)" for name in names)
        connection.execute(text(f"SELECT {calls}"), {"limit": limit})
        connection.commit()

    def lock_holder(self, connection: Connection, *, account_sid: str, channel: str) -> LockHolder | None:
        """The session whose transaction locked the channel's row: the row's ``xmax`` is that
        transaction, which ``pg_stat_activity`` shows as the session's ``backend_xid``."""
        row = connection.execute(
            text("""
                SELECT a.pid, a.usename, a.application_name, host(a.client_addr) AS client,
                       a.backend_start,
                       EXTRACT(EPOCH FROM clock_timestamp() - a.backend_start)::float8 AS held_for
                FROM sync_channel_locks k JOIN pg_stat_activity a ON a.backend_xid = k.xmax
                WHERE k.account_sid = :account_sid AND k.channel = :channel
                  AND a.datname = current_database()
                LIMIT 1"""),
            {"account_sid": account_sid, "channel": channel},
        ).first()
        connection.rollback()
        if row is None:
            return None
        return LockHolder(
            pid=row.pid,
            role=row.usename,
            application_name=row.application_name,
            client=row.client,
            since=row.backend_start,
            held_for=row.held_for,
        )

    @contextmanager
    def lock(
        self, connection: Connection, *, account_sid: str, channel: str, seconds: float | None
    ) -> Iterator[Lease | None]:
        """The channel's row, locked ``FOR UPDATE NOWAIT`` by a second session whose
        transaction stays open for the block: it ends with that session, or the process."""
        where = {"account_sid": account_sid, "channel": channel}
        # The row exists from the channel's first sweep on (an existing row is not written).
        connection.execute(
            text(
                "INSERT INTO sync_channel_locks (account_sid, channel) VALUES (:account_sid, :channel) "
                "ON CONFLICT DO NOTHING"
            ),
            where,
        )
        connection.commit()
        with connection.engine.connect() as holder:
            self.set_session_limits(holder, seconds)
            try:
                holder.execute(
                    text(
                        "SELECT 1 FROM sync_channel_locks WHERE account_sid = :account_sid "
                        "AND channel = :channel FOR UPDATE NOWAIT"
                    ),
                    where,
                )
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                    raise
                yield None
                return
            pid, xid = holder.execute(
                text("SELECT pid, backend_xid::text FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            ).one()
            try:
                yield _RowLease(pid, xid)
            finally:
                try:
                    holder.rollback()
                except DBAPIError:  # a dead session holds no lock any more
                    log.warning(
                        "could not unlock %s %s; the closed session released it", account_sid, channel
                    )

    def load(self, connection: Connection, table: str, rows: Iterable[Row]) -> int:
        """One COPY for the whole sweep."""
        loaded = 0
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        failure: BaseException | None = None
        try:
            with cursor.copy(f"COPY {table} (mobile, channel_type) FROM STDIN") as copy:
                try:
                    for row in rows:
                        copy.write_row(row)
                        loaded += 1
                except BaseException as exc:
                    # psycopg tells the server why the COPY failed, and the server logs it:
                    # say it in fixed words, never the error's own text (which may quote
                    # what a vendor or proxy sent, a key included).
                    failure = exc
                    raise _ListingFailed("the listing failed; the load was abandoned") from None
        except _ListingFailed:
            assert failure is not None
            raise failure from None
        return loaded

    def compare(
        self, connection: Connection, *, seen: str, added: str, removed: str, where: Mapping[str, str]
    ) -> None:
        """The two sets in one pass, a hash full join whose unmatched rows on each side are the
        additions and the removal candidates (two anti-joins would hash and scan both sides
        twice)."""
        c = connection
        # A whole-set comparison: a hash join in memory is right whatever the statistics
        # say (stale ones, right after a large first load, once picked a nested loop over
        # the staging table: 10 s instead of 1 s at a million rows).
        c.execute(text("SET LOCAL enable_nestloop = off"))
        self.make_room_to_sort(c)  # and to hash both sides in memory
        # No ANALYZE of the staging table (0.1 s a million rows): a full join can only be
        # hashed or merged, and the planner sizes the hash from the table's pages.
        # A listed number repeated by the paging is unmatched once per repeat, so the
        # additions are grouped; an entry is unmatched at most once.
        c.execute(
            text(f"""
                WITH unmatched AS (
                    SELECT s.mobile AS listed, s.channel_type, e.mobile AS held
                    FROM {seen} s
                    FULL JOIN (SELECT mobile FROM blocklist_entries
                               WHERE account_sid = :account_sid AND channel = :channel) e
                      ON e.mobile = s.mobile
                    WHERE s.mobile IS NULL OR e.mobile IS NULL
                ), added AS (
                    INSERT INTO {added} (mobile, channel_type)
                    SELECT listed, MAX(channel_type) FROM unmatched WHERE held IS NULL
                    GROUP BY listed ORDER BY listed
                )
                INSERT INTO {removed} (mobile)
                SELECT held FROM unmatched WHERE listed IS NULL"""),
            where,
        )

    def distinct_listed(self, connection: Connection, *, seen: str, added: str) -> None:
        """One sort, in memory, and the first row of each number: its greatest
        ``channel_type``, as ``MAX`` would give (NULL only where every row had none)."""
        self.make_room_to_sort(connection)
        connection.execute(
            text(f"""
                INSERT INTO {added} (mobile, channel_type)
                SELECT DISTINCT ON (mobile) mobile, channel_type FROM {seen}
                ORDER BY mobile, channel_type DESC NULLS LAST""")
        )

    def sample(self, connection: Connection, table: str, size: int, staged: int) -> list[str] | None:
        """A block sample of a few pages (``TABLESAMPLE``), the whole table only if it misses."""
        # ORDER BY random() reads and sorts the whole listing (0.2 s at a million rows, paid
        # by every sweep). Random pages hold random numbers just as well: a block sample
        # sized for about 20 times the numbers needed reads a few pages; a small table is read
        # whole. Block sampling can miss on a tiny table, so an empty sample reads it all.
        percent = min(100.0, 100.0 * 20 * size / max(staged, 1))
        sample = list(
            connection.execute(
                text(
                    f"SELECT mobile FROM {table} TABLESAMPLE SYSTEM (:percent) ORDER BY random() LIMIT :size"
                ),
                {"percent": percent, "size": size},
            ).scalars()
        )
        if len(sample) < size and percent < 100:
            return None
        return sample

    def make_room_to_sort(self, connection: Connection) -> None:
        """``work_mem`` for this transaction only: the default spills a large sort to disk."""
        connection.execute(text("SET LOCAL work_mem = '256MB'"))

    def now(self, connection: Connection) -> dt.datetime:
        """The server's clock: ``clock_timestamp()``."""
        value: dt.datetime = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value.astimezone(dt.UTC)


class SQLite(Dialect):
    # A temporary table lives in the schema named temp.
    temp_schema = "temp"
    # SQLite compares TEXT as bytes already (its default collation is BINARY).
    key_type = "TEXT"

    def set_session_limits(self, connection: Connection, seconds: float | None) -> None:
        """Nothing to set: SQLite has no statement or idle timeouts."""

    def lock_holder(self, connection: Connection, *, account_sid: str, channel: str) -> LockHolder | None:
        """``flock`` does not say who holds a lock."""
        return None

    @contextmanager
    def lock(
        self, connection: Connection, *, account_sid: str, channel: str, seconds: float | None
    ) -> Iterator[Lease | None]:
        """SQLite has no row locks."""
        # The nearest equivalent is an exclusive, non-blocking lock on a file beside the
        # database, one per account and channel; the kernel drops it when the process dies.
        database = connection.engine.url.database or "blocklist-sync.db"
        with _file_lock(Path(f"{database}.locks") / f"{account_sid}.{channel}.lock") as got:
            yield Lease() if got else None

    def load(self, connection: Connection, table: str, rows: Iterable[Row]) -> int:
        """Batched inserts: SQLite has no COPY."""
        loaded = 0
        insert = text(f"INSERT INTO {table} (mobile, channel_type) VALUES (:m, :t)")
        iterator = iter(rows)
        while batch := list(itertools.islice(iterator, 5000)):
            connection.execute(insert, [{"m": m, "t": t} for m, t in batch])
            loaded += len(batch)
        return loaded

    def compare(
        self, connection: Connection, *, seen: str, added: str, removed: str, where: Mapping[str, str]
    ) -> None:
        """Two anti-joins: SQLite has no FULL JOIN before 3.39 nor writing CTEs."""
        c = connection
        # SQLite only loops, so it needs the index. It names its schema on the index, and the
        # table (in that same schema) bare.
        bare = seen.removeprefix(f"{self.temp_schema}.")
        c.execute(text(f"CREATE INDEX {self.temp_schema}.{bare}_mobile ON {bare} (mobile)"))
        c.execute(
            text(f"""
                INSERT INTO {added} (mobile, channel_type)
                SELECT s.mobile, MAX(s.channel_type) FROM {seen} s
                WHERE NOT EXISTS (SELECT 1 FROM blocklist_entries e
                                  WHERE e.account_sid = :account_sid AND e.channel = :channel
                                    AND e.mobile = s.mobile)
                GROUP BY s.mobile"""),
            where,
        )
        c.execute(
            text(f"""
                INSERT INTO {removed} (mobile)
                SELECT e.mobile FROM blocklist_entries e
                WHERE e.account_sid = :account_sid AND e.channel = :channel
                  AND NOT EXISTS (SELECT 1 FROM {seen} s WHERE s.mobile = e.mobile)"""),
            where,
        )

    def distinct_listed(self, connection: Connection, *, seen: str, added: str) -> None:
        """Grouped: SQLite has no ``DISTINCT ON``."""
        connection.execute(
            text(
                f"INSERT INTO {added} (mobile, channel_type) "
                f"SELECT mobile, MAX(channel_type) FROM {seen} GROUP BY mobile ORDER BY mobile"
            )
        )

    def sample(self, connection: Connection, table: str, size: int, staged: int) -> list[str] | None:
        """No table sampling in SQLite: the whole table is read."""
        return None

    def make_room_to_sort(self, connection: Connection) -> None:
        """Nothing is set: ``work_mem`` is PostgreSQL's own."""

    def now(self, connection: Connection) -> dt.datetime:
        """SQLite's ``'now'``, which it reads from the clock of the process that opened it."""
        value = connection.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        return as_utc(str(value))


_LOCK_NOT_AVAILABLE = "55P03"  # FOR UPDATE NOWAIT found the row locked


class _RowLease(Lease):
    """PostgreSQL's lease: the holding session ``pid``, still inside transaction ``xid``."""

    def __init__(self, pid: int, xid: str) -> None:
        self.pid, self.xid = pid, xid

    def confirm(self, connection: Connection) -> None:
        alive = connection.execute(
            text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid AND backend_xid::text = :xid"),
            {"pid": self.pid, "xid": self.xid},
        ).first()
        if alive is None:
            raise LockLost(
                "the session holding this channel's lock ended before the sweep applied (a DBA "
                "or a server timeout ended it); nothing was applied, and the next sweep repeats it"
            )


def dialect_for(engine_or_connection: Engine | Connection) -> Dialect:
    """The dialect of the database the engine or connection talks to: PostgreSQL, or SQLite
    for anything else (the only other database the sync runs on)."""
    if engine_or_connection.dialect.name == "postgresql":
        return PostgreSQL()
    return SQLite()


@contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[Any] = open(path, "a")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()
