"""PostgreSQL's side of :class:`~sync.store.dialect.base.Dialect`: the lock a row held ``FOR
UPDATE`` by a second session, one COPY, one hash full join, ``clock_timestamp()``."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from sync.store.dialect.base import Dialect, Lease, LockHolder, LockLost, Row, _ListingFailed

__all__ = ["PostgreSQL"]

_MAX_MILLISECONDS = 2**31 - 1  # the largest value a PostgreSQL timeout setting takes
# The store's logger: what happens here is part of the store's work, and is logged as before.
log = logging.getLogger("sync.store")


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
