"""What PostgreSQL and SQLite do differently, in one place.

The store (:mod:`sync.store`) is portable SQL: the run rows, the staging tables, the apply
transaction and every statement that reads the same on both databases stay there. What cannot
read the same — how a channel is locked and who holds it, what limits a sweep's session runs
under, how the staging tables are named and keyed, how the listing is loaded and compared, how
a sample is drawn, how much memory a sort may take — is one member of :class:`Dialect`
(:mod:`~sync.store.dialect.base`), with one implementation per database: :class:`PostgreSQL`
and :class:`SQLite`. :func:`dialect_for` picks one.

Knows nothing of HTTP nor of the Kaleyra client: rows arrive as ``(mobile, channel_type)``
tuples.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from sync.store.dialect.base import Dialect, Lease, LockHolder, LockLost, Row, as_utc
from sync.store.dialect.postgresql import PostgreSQL
from sync.store.dialect.sqlite import SQLite

__all__ = [
    "Dialect",
    "Lease",
    "LockHolder",
    "LockLost",
    "PostgreSQL",
    "Row",
    "SQLite",
    "as_utc",
    "dialect_for",
]


def dialect_for(engine_or_connection: Engine | Connection) -> Dialect:
    """The dialect of the database the engine or connection talks to: PostgreSQL, or SQLite
    for anything else (the only other database the sync runs on)."""
    if engine_or_connection.dialect.name == "postgresql":
        return PostgreSQL()
    return SQLite()
