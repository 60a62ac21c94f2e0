"""The session of one sweep: the locked channel, its held connection and the caller's transactions.

:meth:`Store.lock_channel` takes an (account, channel)'s lock (:meth:`~sync.store.dialect.Dialect.lock`:
a row lock held by a second session of the sweep on PostgreSQL, a file lock on SQLite) and
yields the :class:`LockedChannel`, which holds one connection for the whole sweep: the
temporary staging tables and every transaction live on it, so closing it (or the process
dying) releases everything at once.

The caller owns the transaction, as SQLAlchemy's session docs advise: the sweep
(:mod:`sync.sweep`) and the import (:mod:`sync.backfill`) open and end every one with
:meth:`LockedChannel.transaction`, where the order of their work is decided, and no method of
the store commits or rolls back on its own. A statement outside a block is refused
(:class:`TransactionError`), so nothing is left in a transaction nobody ends. The only commits
the session makes itself are its setup, before the caller's first block: the sweep's own
session limits, and the channel's row in ``sync_channel_locks`` (:mod:`sync.store.dialect`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from sync.store import channel_types
from sync.store.dialect import Dialect, Lease, LockHolder, Row
from sync.store.ledger import RunLedger
from sync.store.read_model import ReadModel
from sync.store.staging import Staged, Staging, stage
from sync.store.timings import Timings

__all__ = ["LockHeld", "LockedChannel", "Store", "TransactionError"]

log = logging.getLogger("sync.store")


class TransactionError(RuntimeError):
    """The caller's transaction protocol was broken: a statement of a locked channel ran
    outside :meth:`LockedChannel.transaction`, or a block was opened inside another. A bug in
    the caller, never a state of the data."""


class LockHeld(Exception):
    """Another session holds this account and channel's lock: a sweep in progress, or one
    that is stuck or whose host is gone. ``holder`` says who, where the database can tell."""

    def __init__(self, account_sid: str, channel: str, holder: LockHolder | None) -> None:
        super().__init__(f"{account_sid} {channel}")
        self.holder = holder


class Store(ReadModel):
    """The database: what ``status``, the metrics and the run summary read
    (:class:`~sync.store.read_model.ReadModel`), and the lock a sweep or an import takes."""

    @contextmanager
    def lock_channel(
        self, account_sid: str, channel: str, *, timeout: float | None = None
    ) -> Iterator[LockedChannel]:
        """Lock (account, channel) for one sweep, or raise :class:`LockHeld` at once, naming
        the holder.

        The session first takes the sweep's own limits (``timeout`` seconds for any statement,
        lock wait or idle spell; ``None``: none), so a role's defaults cannot end a long sweep,
        and a session that outlives its sweep is ended by the server, lock and all
        (:meth:`~sync.store.dialect.Dialect.set_session_limits`).
        """
        with self.engine.connect() as connection:
            self.dialect.set_session_limits(connection, timeout)
            where = {"account_sid": account_sid, "channel": channel}
            with self.dialect.lock(connection, **where, seconds=timeout) as lease:
                if lease is None:
                    raise LockHeld(account_sid, channel, self.dialect.lock_holder(connection, **where))
                yield LockedChannel(connection, account_sid, channel, self.dialect, lease)


class LockedChannel(RunLedger):
    """One locked sweep of one (account, channel), on one held connection: its transactions,
    its runs (:class:`~sync.store.ledger.RunLedger`, whose methods it has), and its listing.

    The sweep's data passes through three objects, each made only by the one before, so the
    order of the calls is in their types: :meth:`stage` loads the listing and returns a
    :class:`~sync.store.staging.Staged` listing, whose :meth:`~sync.store.staging.Staged.diff`
    returns the :class:`~sync.store.comparison.Comparison` that counts, confirms and applies.
    Every method here and on those objects runs inside a :meth:`transaction` block the caller
    opened.
    """

    def __init__(
        self, connection: Connection, account_sid: str, channel: str, dialect: Dialect, lease: Lease
    ) -> None:
        self._connection = connection
        self._open = False  # inside the caller's transaction() block
        self._lease = lease
        self.account_sid = account_sid
        self.channel = channel
        self.dialect = dialect
        self.where = {"account_sid": account_sid, "channel": channel}
        self.staging = Staging.in_schema(dialect.temp_schema)
        self.timings = Timings()  # seconds of each of this sweep's statements, by name

    @property
    def connection(self) -> Connection:
        """The held connection, for a statement inside the caller's :meth:`transaction`."""
        if not self._open:
            raise TransactionError(
                "a statement of the locked channel ran outside LockedChannel.transaction(); "
                "the caller opens and ends every transaction"
            )
        return self._connection

    def now(self) -> dt.datetime:
        return self.dialect.now(self.connection)

    @contextmanager
    def transaction(self, *, keep: bool = True) -> Iterator[None]:
        """The one transaction boundary, which only the caller opens and ends: what the block
        does on this channel is committed when it ends, or rolled back instead when not
        ``keep`` (an import's dry run, which applies every snapshot to count exactly what each
        would change); whatever raised in it, it is rolled back. Blocks do not nest, and a
        statement outside one is refused (:class:`TransactionError`), so no work is left in a
        transaction that nobody ends.

        The sweep opens one per step (the ``running`` row is committed before the first page,
        so even a crash leaves a trace; the apply, with its run row, is one); an import opens
        one around every snapshot it places, so it applies all of them or none."""
        if self._open:
            raise TransactionError("a transaction block was opened inside another; they do not nest")
        transaction = self._connection.begin()
        self._open = True
        try:
            yield
        except BaseException:
            transaction.rollback()
            raise
        else:
            if keep:
                with self.timings.timed("commit"):
                    transaction.commit()
            else:
                transaction.rollback()
        finally:
            self._open = False

    @contextmanager
    def upkeep(self, failed: str) -> Iterator[None]:
        """A transaction for upkeep of work already committed (fresh statistics after a large
        apply): committed when the block ends; if anything in it fails, its commit included,
        it is rolled back and ``failed`` is logged as a warning, never raised, so the upkeep
        cannot turn work that succeeded into a failure."""
        try:
            with self.transaction():
                yield
        except Exception:
            log.warning(failed, exc_info=True)

    def confirm_lock(self) -> None:
        """Raise :class:`~sync.store.dialect.LockLost` unless this sweep still holds the
        channel's lock: the first statement of every apply, inside its transaction, so a sweep
        whose lock ended while it paged applies nothing."""
        self._lease.confirm(self.connection)

    def stage(self, rows: Iterable[Row]) -> Staged:
        """Load the listing into a temporary table as it streams in (:func:`~sync.store.staging.stage`)."""
        return stage(self, rows)

    def channel_types(self) -> dict[str, set[str]]:
        """The channel_type codes each channel of this account has carried, by channel."""
        return channel_types.carried(self)
