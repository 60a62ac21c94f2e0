"""SQLite's side of :class:`~sync.store.dialect.base.Dialect`: a file lock beside the
database, anti-joins, the process's clock."""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, text

from sync.store.dialect.base import Dialect, Lease, LockHolder, Row, as_utc

__all__ = ["SQLite"]


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
