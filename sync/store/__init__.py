"""The database side of a sweep: lock, run rows, staging, set-based diff, one-transaction apply.

Knows nothing of HTTP: rows arrive as ``(mobile, channel_type)`` tuples. One
:class:`LockedChannel` holds one connection for the whole sweep of an (account, channel); the
advisory lock, the temporary staging tables and the apply transaction all live on it, so
closing it (or the process dying) releases everything at once.

Every time it stores (a run's start and end, a change's ``detected_at`` and ``not_before``) and
every age it judges comes from the database's clock (:meth:`~sync.store.dialect.Dialect.now`), never
the host's: sweeps from hosts whose clocks disagree still write one consistent history. The one
exception is an import of a dated export (``blocklist-sync import``, :mod:`sync.backfill`): its
run and its changes carry the time the export was taken, and its run row says so (trigger
``backfill``, the file's name, size and SHA-256).

The diff is a handful of statements over temporary tables, so memory in Python stays flat
however long the blocklist. The SQL here is portable: it runs as written on PostgreSQL and
SQLite. What differs — the lock, the staging tables' schema and key type, the bulk load, the
comparison itself, the random sample and the room to sort — is one member each of the
connection's :class:`~sync.store.dialect.Dialect` (:mod:`sync.store.dialect`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import ColumnElement, Connection, Engine, TextClause, bindparam, case, func, select, text

from sync.store.dialect import Dialect, Lease, LockHolder, Row, dialect_for
from sync.store.schema import UtcTime, blocklist_channel_types, blocklist_entries, sync_runs
from sync.vocabulary import RunStatus, Trigger

__all__ = [
    "ChannelStatus",
    "Comparison",
    "Diff",
    "FirstRun",
    "LockHeld",
    "LockHolder",
    "LockedChannel",
    "Rebase",
    "RebaseCounts",
    "Source",
    "Staged",
    "Store",
    "TransactionError",
]

log = logging.getLogger("sync.store")

# Typed, so each dialect stores them as timestamps (SQLite included), not driver-chosen strings.
_DETECTED_AT = bindparam("detected_at", type_=UtcTime)
_NOT_BEFORE = bindparam("not_before", type_=UtcTime)
_PROVEN_AT = bindparam("proven_at", type_=UtcTime)

_STAGING_PREFIX = "kbs_staging_"
_ABANDONED = "the process ended before the sweep finished (crash, kill or restart); nothing was applied"


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


@dataclass(frozen=True)
class Source:
    """Where an imported snapshot came from, recorded on its run row (provenance)."""

    name: str  # the file's name, without its directory
    size: int  # bytes, as read
    sha256: str  # hex


@dataclass(frozen=True)
class FirstRun:
    """A channel's earliest succeeded run, before which an older snapshot is placed."""

    run_id: int
    started_at: dt.datetime
    finished_at: dt.datetime
    listing_complete: bool | None
    imported: bool  # an import's run, not a sweep's


def _imported() -> ColumnElement[bool]:
    """Runs that imported a dated export: history, but no sweep."""
    return sync_runs.c.source_sha256.is_not(None)


def _newest_first() -> list[ColumnElement[object]]:
    """Succeeded runs, the newest first: sweeps by id (runs are numbered in the order they
    started, under the lock, while a time written by a host whose clock was off may lie), and
    after every sweep the imports, by their time: an import is numbered when it is made, and
    it may place an export from last year before a sweep of last week."""
    sweep = case((_imported(), 0), else_=1)
    return [sweep.desc(), case((_imported(), 0), else_=sync_runs.c.id).desc(), sync_runs.c.started_at.desc()]


@dataclass(frozen=True)
class ChannelStatus:
    account_sid: str
    channel: str
    entries: int
    last_run_id: int | None
    last_status: str | None
    last_started_at: dt.datetime | None
    last_finished_at: dt.datetime | None
    last_pages: int | None
    last_added: int | None
    last_removed: int | None
    last_rejected: int | None
    last_unconfirmed: int | None
    last_error: str | None
    last_success_at: dt.datetime | None  # finished_at of the last succeeded sweep


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands timestamps back naive; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = dialect_for(engine)

    def now(self) -> dt.datetime:
        """The database's time: what every stored time was taken from, so the only clock
        an age (``status --max-age``, the shards' skip) may be measured against."""
        with self.engine.connect() as connection:
            return self.dialect.now(connection)

    def install_name(self) -> str:
        """Which install this is, in words safe to publish (no user, no password):
        ``host:port/database``, with ``/schema`` for an install outside ``public``, as the
        channels' locks tell installs apart; a SQLite file's path. It names the Pushgateway
        group every process of the install pushes into, whatever pod or shard it runs in."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite":
            return str(Path(url.database or "").resolve())
        with self.engine.connect() as connection:
            schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        host = url.host or str(url.query.get("host") or "localhost")
        where = f"{host}:{url.port or 5432}/{url.database or ''}"
        return where if schema in (None, "public") else f"{where}/{schema}"

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

    # -- reading, for `status` and the metrics -----------------------------------------

    def channel_statuses(self) -> list[ChannelStatus]:
        """The last sweep, last success and entry count of every (account, channel) swept.

        Read from the ``blocklist_sync_health`` view alone, the one definition of a channel's
        health: ``status``, the metrics and the dashboards that query the view cannot disagree.
        (Dry runs are reviews, not sweeps: the view never counts one as the last sweep, so a dry
        run of a held sweep cannot make its channel look healthy.)
        """
        query = text("""
            SELECT account_sid, channel, entries, last_run_id, last_run_status AS last_status,
                   last_run_started_at AS last_started_at, last_run_finished_at AS last_finished_at,
                   last_run_pages AS last_pages, last_run_added AS last_added,
                   last_run_removed AS last_removed, last_run_rejected AS last_rejected,
                   last_run_unconfirmed AS last_unconfirmed,
                   last_run_error AS last_error, last_success_at
            FROM blocklist_sync_health
            ORDER BY account_sid, channel""").columns(
            last_started_at=UtcTime, last_finished_at=UtcTime, last_success_at=UtcTime
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        times = ("last_started_at", "last_finished_at", "last_success_at")
        return [
            ChannelStatus(
                **{
                    str(k): _as_utc(v) if k in times else v  # type: ignore[arg-type]
                    for k, v in r.items()
                }
            )
            for r in rows
        ]

    def run_window(self, run_id: int) -> tuple[dt.datetime | None, dt.datetime | None]:
        """(``not_before``, ``detected_at``) of a run, for the run summary: what it found
        changed after ``not_before`` (the start of the channel's last succeeded sweep before it
        with a complete listing, as its additions' events record; None for an initial load) and
        no later than ``detected_at`` (when it committed; None unless it succeeded). Removals
        may carry an earlier ``not_before`` of their own in ``blocklist_events``."""
        run = sync_runs.alias("run")
        with self.engine.connect() as connection:
            found = connection.execute(
                select(
                    run.c.account_sid, run.c.channel, run.c.status, run.c.started_at, run.c.finished_at
                ).where(run.c.id == run_id)
            ).first()
            if found is None:
                return None, None
            not_before = connection.execute(
                select(sync_runs.c.started_at)
                .where(
                    sync_runs.c.account_sid == found.account_sid,
                    sync_runs.c.channel == found.channel,
                    sync_runs.c.status == RunStatus.SUCCEEDED,
                    sync_runs.c.listing_complete.is_not(False),
                    sync_runs.c.id < run_id,
                    sync_runs.c.started_at <= found.started_at,
                )
                .order_by(sync_runs.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        detected_at = found.finished_at if found.status == RunStatus.SUCCEEDED else None
        return _as_utc(not_before), _as_utc(detected_at)

    def failed_in_a_row(self) -> dict[tuple[str, str], int]:
        """How many sweeps of each (account, channel) failed since its last sweep that ended
        otherwise (succeeded, held, cancelled); pairs with none are left out.

        The alert on failures reads this, not the last status alone: the next tick retries a
        transient failure, and a sweep in progress (``running``) would interrupt any ``for:``
        on "the last sweep failed", so only a second failure in a row is worth a page.
        """
        runs = sync_runs.c
        ended = (
            select(runs.account_sid, runs.channel, func.max(runs.id).label("id"))
            .where(runs.status.in_([RunStatus.SUCCEEDED, RunStatus.HELD, RunStatus.CANCELLED]))
            .group_by(runs.account_sid, runs.channel)
            .cte("ended")
        )
        query = (
            select(runs.account_sid, runs.channel, func.count())
            .select_from(
                sync_runs.outerjoin(
                    ended, (ended.c.account_sid == runs.account_sid) & (ended.c.channel == runs.channel)
                )
            )
            .where(runs.status == RunStatus.FAILED, runs.id > func.coalesce(ended.c.id, 0))
            .group_by(runs.account_sid, runs.channel)
        )
        with self.engine.connect() as connection:
            return {(sid, channel): int(n) for sid, channel, n in connection.execute(query)}


@dataclass(frozen=True)
class _Staging:
    """The names of one sweep's temporary tables, always with their temporary schema, so no
    statement here — the DROP before a CREATE least of all — can reach a user's permanent
    table that happens to share a name."""

    seen: str  # the listing, as loaded
    added: str  # listed, not held: additions
    removed: str  # held, not listed: removal candidates, until proven
    unconfirmed: str  # removal candidates whose absence could not be proven
    rescued: str  # removal candidates the mobile filter showed listed: the listing skipped them

    @classmethod
    def in_schema(cls, schema: str) -> _Staging:
        names = ("seen", "added", "removed", "unconfirmed", "rescued")
        return cls(*(f"{schema}.{_STAGING_PREFIX}{name}" for name in names))

    def all(self) -> tuple[str, ...]:
        return (self.seen, self.added, self.removed, self.unconfirmed, self.rescued)


class LockedChannel:
    """One locked sweep of one (account, channel), on one held connection.

    The sweep's data passes through three objects, each made only by the one before, so the
    order of the calls is in their types: :meth:`stage` loads the listing and returns a
    :class:`Staged` listing, whose :meth:`~Staged.diff` returns the :class:`Comparison` that
    counts, confirms and applies.

    The caller owns the transaction: every method here and on those objects runs inside a
    :meth:`transaction` block the caller opened, and none commits or rolls back on its own.
    What is committed when is so written where the order of the work is decided, in the sweep
    (:mod:`sync.sweep`) and the import (:mod:`sync.backfill`).
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
        self._where = {"account_sid": account_sid, "channel": channel}
        self._staging = _Staging.in_schema(dialect.temp_schema)

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

    # -- the run row -------------------------------------------------------------------

    def fail_abandoned_runs(self) -> int:
        """Mark runs left ``running`` as failed. We hold the lock, so their process is gone."""
        result = self.connection.execute(
            sync_runs.update()
            .where(
                sync_runs.c.account_sid == self.account_sid,
                sync_runs.c.channel == self.channel,
                sync_runs.c.status == RunStatus.RUNNING,
            )
            .values(status=RunStatus.FAILED, finished_at=self.now(), error=_ABANDONED)
        )
        return result.rowcount

    def seconds_since_last_start(self, *, count_failures: bool = True) -> float | None:
        """Seconds since the last sweep of this channel started (any outcome but a dry run;
        without ``count_failures``, failed and cancelled sweeps are left out too, so a retry
        after a failure or a stop is not mistaken for a sweep done moments ago)."""
        ignored = [RunStatus.DRY_RUN]
        if not count_failures:
            ignored += [RunStatus.FAILED, RunStatus.CANCELLED]
        # The last by id, not the latest time: runs are numbered in the order they started
        # (under this lock), while a time written by a host whose clock was off may lie.
        last = _as_utc(
            self.connection.execute(
                select(sync_runs.c.started_at)
                .where(
                    sync_runs.c.account_sid == self.account_sid,
                    sync_runs.c.channel == self.channel,
                    sync_runs.c.status.not_in(ignored),
                    ~_imported(),  # an export's time says nothing of when the channel was swept
                )
                .order_by(sync_runs.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        )
        age = None if last is None else (self.now() - last).total_seconds()
        # A start in the future (written by such a host before 0008) says nothing of freshness.
        return age if age is None or age >= 0 else None

    def start_run(self, trigger: Trigger) -> int:
        """Insert the ``running`` row; the sweep commits it before anything else, so even a
        crash leaves a trace."""
        run_id = self.connection.execute(
            sync_runs.insert()
            .values(**self._where, trigger=trigger, status=RunStatus.RUNNING, started_at=self.now())
            .returning(sync_runs.c.id)
        ).scalar_one()
        return int(run_id)

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        *,
        pages: int = 0,
        diff: Diff | None = None,
        error: str | None = None,
    ) -> None:
        """Record how a run ended that applied nothing (failed, held, dry_run, cancelled)."""
        self.connection.execute(
            sync_runs.update()
            # Only a run still going: never rewrite one whose changes were already committed.
            .where(sync_runs.c.id == run_id, sync_runs.c.status == RunStatus.RUNNING)
            .values(status=status, finished_at=self.now(), pages_fetched=pages, error=error, **_counts(diff))
        )

    def previous_success_start(self, *, complete_listing: bool = False) -> dt.datetime | None:
        """Start of the last succeeded sweep: every number it showed was there then, so a
        removal found now happened after it. With ``complete_listing``, of the last one whose
        listing was complete: only such a listing proves a number absent, so an addition found
        now happened after it. (Runs from before that was judged count as complete, as they
        always did.)

        The last by id, not the latest time, and never one that started in the future: a
        time written by a host whose clock was off (before every time came from the database)
        would otherwise make a window end before it begins."""
        query = (
            select(sync_runs.c.started_at)
            .where(
                sync_runs.c.account_sid == self.account_sid,
                sync_runs.c.channel == self.channel,
                sync_runs.c.status == RunStatus.SUCCEEDED,
                sync_runs.c.started_at <= self.now(),
            )
            .order_by(*_newest_first())
            .limit(1)
        )
        if complete_listing:
            query = query.where(sync_runs.c.listing_complete.is_not(False))
        return _as_utc(self.connection.execute(query).scalar_one_or_none())

    def last_swept_size(self) -> int | None:
        """How many numbers the last succeeded sweep of this channel found (imports left out):
        what the next listing is measured against while it pages (its share and time left);
        None before the first sweep."""
        found = self.connection.execute(
            select(sync_runs.c.entries_seen)
            .where(
                sync_runs.c.account_sid == self.account_sid,
                sync_runs.c.channel == self.channel,
                sync_runs.c.status == RunStatus.SUCCEEDED,
                ~_imported(),
            )
            .order_by(sync_runs.c.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        return None if found is None else int(found)

    def _first_success(self) -> bool:
        """Whether no sweep of this channel has succeeded yet: this one is its initial load."""
        return (
            self.connection.execute(
                select(sync_runs.c.id)
                .where(
                    sync_runs.c.account_sid == self.account_sid,
                    sync_runs.c.channel == self.channel,
                    sync_runs.c.status == RunStatus.SUCCEEDED,
                )
                .limit(1)
            ).first()
            is None
        )

    def learn_channel_types(self, channel_types: Iterable[str], *, run_id: int, at: dt.datetime) -> None:
        """Within an apply: the codes this channel's applied listing carried."""
        known = set(
            self.connection.execute(
                select(blocklist_channel_types.c.channel_type).where(
                    blocklist_channel_types.c.account_sid == self.account_sid,
                    blocklist_channel_types.c.channel == self.channel,
                )
            ).scalars()
        )
        new = sorted(set(channel_types) - known)
        if new:
            self.connection.execute(
                blocklist_channel_types.insert(),
                [
                    {**self._where, "channel_type": code, "first_run_id": run_id, "first_seen_at": at}
                    for code in new
                ],
            )

    # -- imports of dated exports (sync/backfill.py) ------------------------------------

    def start_import(self, source: Source, at: dt.datetime) -> int:
        """Insert the ``running`` row of an import: trigger ``backfill``, the export's time as
        its start, the file's provenance. Part of the import's transaction: an import that
        fails leaves no row (nothing else of it is written either)."""
        return int(
            self.connection.execute(
                sync_runs.insert()
                .values(
                    **self._where,
                    trigger=Trigger.BACKFILL,
                    status=RunStatus.RUNNING,
                    started_at=at,
                    source_file=source.name,
                    source_bytes=source.size,
                    source_sha256=source.sha256,
                )
                .returning(sync_runs.c.id)
            ).scalar_one()
        )

    def imported_run(self, sha256: str, at: dt.datetime) -> int | None:
        """The run that already imported this file (by SHA-256) at this time, if any."""
        found = self.connection.execute(
            select(sync_runs.c.id, sync_runs.c.started_at).where(
                sync_runs.c.account_sid == self.account_sid,
                sync_runs.c.channel == self.channel,
                sync_runs.c.status == RunStatus.SUCCEEDED,
                sync_runs.c.source_sha256 == sha256,
            )
        ).all()
        return next((int(i) for i, started in found if _as_utc(started) == at), None)

    def succeeded_runs(self) -> list[tuple[int, dt.datetime, bool]]:
        """``(id, started_at, imported)`` of every succeeded run of this channel, oldest first:
        where an import may go (before the earliest, or after the latest import while no
        sweep has run)."""
        found = self.connection.execute(
            select(sync_runs.c.id, sync_runs.c.started_at, _imported())
            .where(
                sync_runs.c.account_sid == self.account_sid,
                sync_runs.c.channel == self.channel,
                sync_runs.c.status == RunStatus.SUCCEEDED,
            )
            .order_by(sync_runs.c.started_at, sync_runs.c.id)
        ).all()
        return [(int(i), _as_utc(started) or started, bool(imported)) for i, started, imported in found]

    def sweeps_applied_since(self, run_id: int) -> Iterator[tuple[int, Iterator[tuple[str, str]]]]:
        """Each succeeded sweep of this channel numbered after ``run_id`` (imports left out),
        oldest first, with the changes it applied: (``added`` | ``removed``, mobile), sorted
        by change, then number, as :meth:`Comparison.changes` streams a sweep's. Read lazily:
        a caller that finds what it looks for in the first run reads no other's events."""
        runs = (
            self.connection.execute(
                select(sync_runs.c.id)
                .where(
                    sync_runs.c.account_sid == self.account_sid,
                    sync_runs.c.channel == self.channel,
                    sync_runs.c.status == RunStatus.SUCCEEDED,
                    sync_runs.c.id > run_id,
                    ~_imported(),
                )
                .order_by(sync_runs.c.id)
            )
            .scalars()
            .all()
        )
        for found in runs:
            yield int(found), self._changes_of(int(found))

    def _changes_of(self, run_id: int) -> Iterator[tuple[str, str]]:
        # A run's events were all detected at its commit, its finished_at: that reaches them
        # through the index on detected_at, which the run id alone would not.
        query = text(
            "SELECT change, mobile FROM blocklist_events WHERE account_sid = :a AND channel = :c "
            "AND run_id = :r AND detected_at = (SELECT finished_at FROM sync_runs WHERE id = :r) "
            "ORDER BY change, mobile"
        )
        params = {"a": self.account_sid, "c": self.channel, "r": run_id}
        for change, mobile in self.connection.execute(query, params, execution_options={"yield_per": 5000}):
            yield str(change), str(mobile)

    def first_run(self) -> FirstRun | None:
        """The channel's earliest succeeded run (by time), or None for an empty channel."""
        found = self.connection.execute(
            select(
                sync_runs.c.id,
                sync_runs.c.started_at,
                sync_runs.c.finished_at,
                sync_runs.c.listing_complete,
                _imported(),
            )
            .where(
                sync_runs.c.account_sid == self.account_sid,
                sync_runs.c.channel == self.channel,
                sync_runs.c.status == RunStatus.SUCCEEDED,
            )
            .order_by(sync_runs.c.started_at, sync_runs.c.id)
            .limit(1)
        ).first()
        if found is None:
            return None
        run_id, started, finished, complete, imported = found
        return FirstRun(
            int(run_id),
            _as_utc(started) or started,
            _as_utc(finished) or finished,
            None if complete is None else bool(complete),
            bool(imported),
        )

    def channel_types(self) -> dict[str, set[str]]:
        """The channel_type codes each channel of this account has carried, by channel."""
        learned: dict[str, set[str]] = {}
        for channel, code in self.connection.execute(
            select(blocklist_channel_types.c.channel, blocklist_channel_types.c.channel_type).where(
                blocklist_channel_types.c.account_sid == self.account_sid
            )
        ):
            learned.setdefault(channel, set()).add(code)
        return learned

    # -- staging and diff --------------------------------------------------------------

    def stage(self, rows: Iterable[Row]) -> Staged:
        """Load the listing into a temporary table as it streams in.

        The dialect loads it (:meth:`~sync.store.dialect.Dialect.load`): one COPY for the whole sweep
        on PostgreSQL, batched inserts on SQLite. If ``rows`` raises (a page failed), the load
        is abandoned and nothing outside the temp table changed.
        """
        c, t = self.connection, self._staging
        for name in t.all():
            c.execute(text(f"DROP TABLE IF EXISTS {name}"))
        key = self.dialect.key_type
        c.execute(text(f"CREATE TEMPORARY TABLE {t.seen} (mobile {key} NOT NULL, channel_type TEXT)"))
        # The added table is unique by construction (GROUP BY); the removed one's key serves keep().
        c.execute(text(f"CREATE TEMPORARY TABLE {t.added} (mobile {key} NOT NULL, channel_type TEXT)"))
        c.execute(text(f"CREATE TEMPORARY TABLE {t.removed} (mobile {key} PRIMARY KEY)"))
        c.execute(text(f"CREATE TEMPORARY TABLE {t.unconfirmed} (mobile {key} PRIMARY KEY)"))
        c.execute(text(f"CREATE TEMPORARY TABLE {t.rescued} (mobile {key} PRIMARY KEY)"))
        loaded = self.dialect.load(c, t.seen, rows)
        return Staged(self, loaded)


class Staged:
    """A listing loaded into the staging table by :meth:`LockedChannel.stage`: all there is to
    do with it is compare it with the channel's entries (:meth:`diff`)."""

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
        c, t = session.connection, session._staging
        current = self._count_current()
        if current == 0:
            c.execute(
                text(
                    f"INSERT INTO {t.added} (mobile, channel_type) "
                    f"SELECT mobile, MAX(channel_type) FROM {t.seen} GROUP BY mobile "
                    "ORDER BY mobile"
                )
            )
        else:
            session.dialect.compare(c, seen=t.seen, added=t.added, removed=t.removed, where=session._where)
        comparison = Comparison(session, listed=self.rows, current=current)
        # Distinct numbers listed: the additions, and the entries that were not candidates.
        first = comparison.counts()
        comparison.listed_twice = self.rows - (first.added + current - first.removed)
        return comparison

    def before(self, first: FirstRun) -> Rebase:
        """Place this listing, an older snapshot, before the channel's earliest run ``first``:
        what it would change (:class:`Rebase`), computed against the numbers ``first`` listed
        (the stretches it opened: being the earliest, it opened one for each)."""
        session = self._session
        c, t = session.connection, session._staging
        c.execute(
            text(
                f"INSERT INTO {t.added} (mobile, channel_type) "
                f"SELECT mobile, MAX(channel_type) FROM {t.seen} GROUP BY mobile ORDER BY mobile"
            )
        )
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


class Comparison:
    """The listing against the channel's entries, made by :meth:`Staged.diff`: additions and
    removal candidates in temporary tables. The removal checks narrow the candidates
    (:meth:`keep`, :meth:`unconfirm`); :meth:`counts` says where they stand; :meth:`apply`
    writes them."""

    def __init__(self, session: LockedChannel, *, listed: int, current: int) -> None:
        self._session = session
        self._t = session._staging
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
        t, where = self._t, self._session._where
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
        """Apply additions and removals, append their events, mark what could not be proven,
        learn the listing's ``channel_types`` and finish the run row, all in the caller's
        transaction (the sweep opens one for this alone), after confirming the lock is held.
        Writes nothing to the stretches or events when nothing changed. An addition opens a
        stretch in ``blocklist_periods`` (the current entries are its open stretches) and a
        removal closes one, each beside its event: the history's two shapes cannot disagree.

        The windows are honest about what each sweep proved. An addition happened after the
        start of the last sweep whose listing was complete (an incomplete one may have skipped
        the number, so its absence there proves nothing). A removal happened after the start of
        the last sweep that showed the number: the previous succeeded sweep, unless that one
        could not prove it either way (``proven_present_at``). ``detected_at`` is the database's
        time inside this transaction.

        Rows go in sorted by mobile, the leading key of the indexes they land in, so a large
        load appends to index pages instead of touching them at random. :meth:`Staged.diff`
        wrote the additions in that order, so they are read as stored rather than sorted again
        (twice, a second each at a million rows); the order only ever affects speed.

        ``at``: an imported snapshot's time, which stands for the database's clock as
        ``detected_at`` and the run's end (:mod:`sync.backfill`); None for a sweep.
        """
        c, t, session = self.connection, self._t, self._session
        previous = session.previous_success_start()
        params = {
            **session._where,
            "run_id": run_id,
            "not_before": session.previous_success_start(complete_listing=True),
            "proven_at": previous,
            "initial_load": session._first_success(),
        }
        session.confirm_lock()
        detected_at = at or session.now()
        params["detected_at"] = detected_at
        session.dialect.make_room_to_sort(c)  # see ORDER BY below
        if diff.removed:
            # The events first: their window reads the stretches they end.
            _expect(
                diff.removed,
                "removed",
                c.execute(
                    text(f"""
                INSERT INTO blocklist_events (account_sid, channel, mobile, change,
                    detected_at, not_before, initial_load, run_id)
                SELECT :account_sid, :channel, r.mobile, 'removed', :detected_at,
                    COALESCE(e.proven_present_at, :proven_at), :initial_load, :run_id
                FROM {t.removed} r
                JOIN blocklist_entries e
                  ON e.account_sid = :account_sid AND e.channel = :channel AND e.mobile = r.mobile
                ORDER BY r.mobile""").bindparams(_DETECTED_AT, _PROVEN_AT),
                    params,
                ).rowcount,
            )
            # The stretch ends: its removal's window begins where the last sweep that
            # showed the number began.
            _expect(
                diff.removed,
                "removed",
                c.execute(
                    text(f"""
                UPDATE blocklist_periods
                SET removed_at = :detected_at,
                    removed_not_before = COALESCE(proven_present_at, :proven_at),
                    removed_run_id = :run_id, proven_present_at = NULL
                WHERE account_sid = :account_sid AND channel = :channel AND removed_at IS NULL
                  AND mobile IN (SELECT mobile FROM {t.removed})""").bindparams(_DETECTED_AT, _PROVEN_AT),
                    params,
                ).rowcount,
            )
        if diff.added:
            _expect(
                diff.added,
                "added",
                c.execute(
                    text(f"""
                INSERT INTO blocklist_periods
                    (account_sid, channel, mobile, channel_type, added_at, added_not_before,
                     initial_load, added_run_id)
                SELECT :account_sid, :channel, mobile, channel_type, :detected_at,
                    :not_before, :initial_load, :run_id
                FROM {t.added}""").bindparams(_DETECTED_AT, _NOT_BEFORE),
                    params,
                ).rowcount,
            )
            c.execute(
                text(f"""
                INSERT INTO blocklist_events (account_sid, channel, mobile, change,
                    detected_at, not_before, initial_load, run_id)
                SELECT :account_sid, :channel, mobile, 'added', :detected_at,
                    :not_before, :initial_load, :run_id
                FROM {t.added}""").bindparams(_DETECTED_AT, _NOT_BEFORE),
                params,
            )
        self._mark_unproven(params)
        session.learn_channel_types(channel_types, run_id=run_id, at=detected_at)
        c.execute(
            sync_runs.update()
            .where(sync_runs.c.id == run_id)
            .values(
                status=RunStatus.SUCCEEDED,
                finished_at=params["detected_at"],
                pages_fetched=pages,
                error=None,
                **_counts(diff),
            )
        )

    def refresh_statistics(self, diff: Diff) -> None:
        """After a large change (over 10,000 numbers, and a tenth of the channel), fresh
        statistics of the stretches: autovacuum analyzes eventually, but the next sweep's diff
        plans with these numbers. Run after the apply is committed, in a transaction of its
        own that may fail harmlessly (:meth:`LockedChannel.upkeep`)."""
        if diff.added + diff.removed > max(10_000, diff.seen // 10):
            self.connection.execute(text("ANALYZE blocklist_periods"))

    def _mark_unproven(self, params: Mapping[str, object]) -> None:
        """Within :meth:`apply`: numbers this sweep's listing did not show (unconfirmed, or
        rescued by a check) keep (or get) the start of the last sweep that listed them; every
        other held number was listed by this sweep, and is proven again. Both touch only the
        few rows concerned (a partial index)."""
        c, t = self.connection, self._t
        unshown = f"SELECT mobile FROM {t.unconfirmed} UNION ALL SELECT mobile FROM {t.rescued}"
        if params["proven_at"] is not None:
            c.execute(
                text(f"""
                UPDATE blocklist_periods SET proven_present_at = :proven_at
                WHERE account_sid = :account_sid AND channel = :channel AND removed_at IS NULL
                  AND proven_present_at IS NULL
                  AND mobile IN ({unshown})""").bindparams(_PROVEN_AT),
                params,
            )
        c.execute(
            text(f"""
            UPDATE blocklist_periods SET proven_present_at = NULL
            WHERE account_sid = :account_sid AND channel = :channel AND removed_at IS NULL
              AND proven_present_at IS NOT NULL
              AND mobile NOT IN ({unshown})"""),
            params,
        )


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
    """An older snapshot against the channel's earliest run, made by :meth:`Staged.before`:
    :meth:`counts` and :meth:`sample` say what it changes, :meth:`apply` writes it.

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
        self._t = session._staging
        self.listed = listed

    @property
    def connection(self) -> Connection:
        return self._session.connection

    def _params(self, **more: object) -> dict[str, object]:
        return {**self._session._where, "first": self._first.run_id, **more}

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
        c, t, session, first = self.connection, self._t, self._session, self._first
        params = self._params(run_id=run_id, at=at, first_at=first.finished_at)

        def stamped(sql: str) -> TextClause:
            """The statement, its times typed (each dialect stores them as timestamps)."""
            names = [name for name in ("at", "first_at") if f":{name}" in sql]
            return text(sql).bindparams(*(bindparam(name, type_=UtcTime) for name in names))

        session.confirm_lock()
        # Numbers gone by the earliest run: a stretch from this snapshot to that run.
        _expect(
            counts.gone,
            "gone",
            c.execute(
                stamped(f"""
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
                params,
            ).rowcount,
        )
        # Numbers both list: the stretch began by this snapshot, the initial load now its.
        _expect(
            counts.continuing,
            "continuing",
            c.execute(
                stamped(f"""
            UPDATE blocklist_periods
            SET added_at = :at, added_not_before = NULL, initial_load = TRUE, added_run_id = :run_id
            WHERE account_sid = :account_sid AND channel = :channel AND added_run_id = :first
              AND mobile IN (SELECT mobile FROM {t.added})"""),
                params,
            ).rowcount,
        )
        # The rest of the earliest run's numbers were not listed then: added in between.
        _expect(
            counts.arrived,
            "arrived",
            c.execute(
                stamped("""
            UPDATE blocklist_periods SET initial_load = FALSE, added_not_before = :at
            WHERE account_sid = :account_sid AND channel = :channel AND added_run_id = :first
            """),
                params,
            ).rowcount,
        )
        c.execute(
            stamped(f"""
            INSERT INTO blocklist_events (account_sid, channel, mobile, change, detected_at,
                not_before, initial_load, run_id)
            SELECT :account_sid, :channel, mobile, 'added', :at, NULL, TRUE, :run_id
            FROM {t.added}"""),
            params,
        )
        c.execute(
            stamped("""
            INSERT INTO blocklist_events (account_sid, channel, mobile, change, detected_at,
                not_before, initial_load, run_id)
            SELECT account_sid, channel, mobile, 'removed', :first_at, :at, FALSE, :run_id
            FROM blocklist_periods
            WHERE account_sid = :account_sid AND channel = :channel AND added_run_id = :run_id
              AND removed_run_id = :first
            ORDER BY mobile"""),
            params,
        )
        session.learn_channel_types(channel_types, run_id=run_id, at=at)
        c.execute(
            sync_runs.update()
            .where(sync_runs.c.id == run_id)
            .values(
                status=RunStatus.SUCCEEDED,
                finished_at=at,
                pages_fetched=0,
                error=None,
                entries_seen=counts.numbers,
                added=counts.numbers,
                removed=counts.gone,
                rejected=0,
                unconfirmed=0,
                rescued=0,
                listing_complete=True,
                rewritten=counts.rewritten,
            )
        )


class ApplyMismatch(Exception):
    """The entries changed between diff and apply: the lock was bypassed. Nothing is applied."""


def _expect(expected: int, change: str, rowcount: int) -> None:
    if rowcount != expected:
        raise ApplyMismatch(
            f"{change} {rowcount} entries where the diff said {expected}; "
            "another writer changed the table during the sweep"
        )


def _counts(diff: Diff | None) -> dict[str, int | bool | None]:
    if diff is None:
        return {}
    return {
        "entries_seen": diff.seen,
        "added": diff.added,
        "removed": diff.removed,
        "rejected": diff.rejected,
        "unconfirmed": diff.unconfirmed,
        "rescued": diff.rescued,
        "listing_complete": diff.listing_complete,
    }
