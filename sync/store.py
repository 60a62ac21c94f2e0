"""The database side of a sweep: lock, run rows, staging, set-based diff, one-transaction apply.

Knows nothing of HTTP: rows arrive as ``(mobile, channel_type)`` tuples. One
:class:`LockedChannel` holds one connection for the whole sweep of an (account, channel); the
advisory lock, the temporary staging tables and the apply transaction all live on it, so
closing it (or the process dying) releases everything at once.

The diff is a handful of statements over temporary tables — one hash full join on PostgreSQL,
two anti-joins on SQLite — so memory in Python stays flat however long the blocklist. The same statements
run on SQLite; only the bulk load (COPY vs. executemany) and the lock (advisory lock vs. a
file lock) differ, each in one small method.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError

from sync.schema import UtcTime, blocklist_entries, sync_runs

__all__ = ["ChannelStatus", "Diff", "LockHeld", "LockedChannel", "Store"]

Row = tuple[str, str | None]
log = logging.getLogger("sync.store")

# Typed, so each dialect stores them as timestamps (SQLite included), not driver-chosen strings.
_DETECTED_AT = bindparam("detected_at", type_=UtcTime)
_NOT_BEFORE = bindparam("not_before", type_=UtcTime)

_STAGING_PREFIX = "kbs_staging_"
_ABANDONED = "the process ended before the sweep finished (crash, kill or restart); nothing was applied"


class _ListingFailed(Exception):
    """Stands in for the listing's own error while the COPY is abandoned."""


class LockHeld(Exception):
    """Another process is sweeping this account and channel right now."""


@dataclass(frozen=True)
class Diff:
    """What a sweep found, against the current entries of its channel."""

    current: int  # entries held before this sweep
    listed: int  # rows the listing returned, before de-duplication and confirmation
    added: int
    removed: int
    rejected: int = 0  # rows that could not be a phone number, never staged

    @property
    def seen(self) -> int:
        """Distinct numbers blocklisted now: kept current entries plus additions."""
        return self.current - self.removed + self.added


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
    last_error: str | None
    last_success_at: dt.datetime | None  # finished_at of the last succeeded sweep


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands timestamps back naive; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    @contextmanager
    def lock_channel(self, account_sid: str, channel: str) -> Iterator[LockedChannel]:
        """Lock (account, channel) for one sweep, or raise :class:`LockHeld` at once."""
        with self.engine.connect() as connection:
            with self._lock(connection, account_sid, channel):
                yield LockedChannel(connection, account_sid, channel, self.is_postgres)

    @contextmanager
    def _lock(self, connection: Connection, account_sid: str, channel: str) -> Iterator[None]:
        key = f"kaleyra-blocklist-sync:{account_sid}:{channel}"
        if self.is_postgres:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"), {"key": key}
            ).scalar_one()
            connection.commit()
            if not got:
                raise LockHeld(key)
            try:
                yield
            finally:
                # The connection closes right after (no pool), which also releases the lock;
                # unlocking explicitly keeps that true if pooling is ever turned on.
                try:
                    connection.rollback()
                    connection.execute(
                        text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), {"key": key}
                    )
                    connection.commit()
                except DBAPIError:  # a dead connection holds no lock any more
                    log.warning("could not unlock %s; the closed connection released it", key)
            return
        # SQLite: the nearest equivalent is an exclusive, non-blocking lock on a file beside
        # the database, one per account and channel; the kernel drops it when the process dies.
        with _file_lock(self._lock_path(account_sid, channel)) as got:
            if not got:
                raise LockHeld(key)
            yield

    def _lock_path(self, account_sid: str, channel: str) -> Path:
        database = self.engine.url.database or "blocklist-sync.db"
        return Path(f"{database}.locks") / f"{account_sid}.{channel}.lock"

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


class LockedChannel:
    """One locked sweep of one (account, channel), on one held connection."""

    def __init__(self, connection: Connection, account_sid: str, channel: str, is_postgres: bool) -> None:
        self.connection = connection
        self.account_sid = account_sid
        self.channel = channel
        self.is_postgres = is_postgres
        self._where = {"account_sid": account_sid, "channel": channel}
        # Staging tables are always named with their temporary schema, so no statement here —
        # the DROP before a CREATE least of all — can reach a user's permanent table that
        # happens to share a name.
        schema = "pg_temp" if is_postgres else "temp"
        self._seen = f"{schema}.{_STAGING_PREFIX}seen"
        self._added = f"{schema}.{_STAGING_PREFIX}added"
        self._removed = f"{schema}.{_STAGING_PREFIX}removed"
        self._current: int | None = None  # entries held before this sweep, counted by diff()
        self._staged = 0  # rows stage() loaded

    # -- the run row -------------------------------------------------------------------

    def fail_abandoned_runs(self) -> int:
        """Mark runs left ``running`` as failed. We hold the lock, so their process is gone."""
        result = self.connection.execute(
            sync_runs.update()
            .where(
                sync_runs.c.account_sid == self.account_sid,
                sync_runs.c.channel == self.channel,
                sync_runs.c.status == "running",
            )
            .values(status="failed", finished_at=utcnow(), error=_ABANDONED)
        )
        self.connection.commit()
        return result.rowcount

    def seconds_since_last_start(self, *, count_failures: bool = True) -> float | None:
        """Seconds since the last sweep of this channel started (any outcome but a dry run;
        without ``count_failures``, failed and cancelled sweeps are left out too, so a retry
        after a failure or a stop is not mistaken for a sweep done moments ago)."""
        ignored = ["dry_run"] if count_failures else ["dry_run", "failed", "cancelled"]
        last = _as_utc(
            self.connection.execute(
                select(func.max(sync_runs.c.started_at)).where(
                    sync_runs.c.account_sid == self.account_sid,
                    sync_runs.c.channel == self.channel,
                    sync_runs.c.status.not_in(ignored),
                )
            ).scalar_one()
        )
        self.connection.commit()
        return None if last is None else (utcnow() - last).total_seconds()

    def start_run(self, trigger: str) -> int:
        """Insert and commit the ``running`` row, so even a crash leaves a trace."""
        run_id = self.connection.execute(
            sync_runs.insert()
            .values(**self._where, trigger=trigger, status="running", started_at=utcnow())
            .returning(sync_runs.c.id)
        ).scalar_one()
        self.connection.commit()
        return int(run_id)

    def finish_run(
        self, run_id: int, status: str, *, pages: int = 0, diff: Diff | None = None, error: str | None = None
    ) -> None:
        """Record how a run ended that applied nothing (failed, held, dry_run)."""
        if self.connection.in_transaction():
            self.connection.rollback()
        self.connection.execute(
            sync_runs.update()
            # Only a run still going: never rewrite one whose changes were already committed.
            .where(sync_runs.c.id == run_id, sync_runs.c.status == "running")
            .values(status=status, finished_at=utcnow(), pages_fetched=pages, error=error, **_counts(diff))
        )
        self.connection.commit()

    def previous_success_start(self) -> dt.datetime | None:
        """Start of the last succeeded sweep: every change we detect now happened after it."""
        return _as_utc(
            self.connection.execute(
                select(func.max(sync_runs.c.started_at)).where(
                    sync_runs.c.account_sid == self.account_sid,
                    sync_runs.c.channel == self.channel,
                    sync_runs.c.status == "succeeded",
                )
            ).scalar_one()
        )

    # -- staging and diff --------------------------------------------------------------

    def stage(self, rows: Iterable[Row]) -> int:
        """Load the listing into a temporary table as it streams in; returns rows loaded.

        PostgreSQL: one COPY for the whole sweep. SQLite: batched inserts. If ``rows`` raises
        (a page failed), the load is abandoned and nothing outside the temp table changed.
        """
        c = self.connection
        for name in (self._seen, self._added, self._removed):
            c.execute(text(f"DROP TABLE IF EXISTS {name}"))
        # Numbers compare as bytes on PostgreSQL, as the tables' key columns do (migration
        # 0006); a join between two collations would not even be allowed.
        key = 'TEXT COLLATE "C"' if self.is_postgres else "TEXT"
        c.execute(text(f"CREATE TEMPORARY TABLE {self._seen} (mobile {key} NOT NULL, channel_type TEXT)"))
        # The added table is unique by construction (GROUP BY); the removed one's key serves keep().
        c.execute(text(f"CREATE TEMPORARY TABLE {self._added} (mobile {key} NOT NULL, channel_type TEXT)"))
        c.execute(text(f"CREATE TEMPORARY TABLE {self._removed} (mobile {key} PRIMARY KEY)"))
        loaded = 0
        if self.is_postgres:
            cursor = c.connection.driver_connection.cursor()  # type: ignore[union-attr]
            failure: BaseException | None = None
            try:
                with cursor.copy(f"COPY {self._seen} (mobile, channel_type) FROM STDIN") as copy:
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
        else:
            insert = text(f"INSERT INTO {self._seen} (mobile, channel_type) VALUES (:m, :t)")
            iterator = iter(rows)
            while batch := list(itertools.islice(iterator, 5000)):
                c.execute(insert, [{"m": m, "t": t} for m, t in batch])
                loaded += len(batch)
        c.commit()
        self._staged = loaded
        return loaded

    def diff(self, listed: int) -> Diff:
        """Compute additions and removal candidates into temp tables, set-based.

        A channel with no entries (a first load) skips the comparison: every distinct listed
        number is an addition. Otherwise PostgreSQL compares the two sets in one pass, a hash
        full join whose unmatched rows on each side are the additions and the removal
        candidates (two anti-joins would hash and scan both sides twice). SQLite, which has no
        FULL JOIN before 3.39 nor writing CTEs, runs the two anti-joins.
        """
        c = self.connection
        self._current = self._count_current()
        if self._current == 0:
            c.execute(
                text(
                    f"INSERT INTO {self._added} (mobile, channel_type) "
                    f"SELECT mobile, MAX(channel_type) FROM {self._seen} GROUP BY mobile "
                    "ORDER BY mobile"
                )
            )
        elif self.is_postgres:
            # A whole-set comparison: a hash join in memory is right whatever the statistics
            # say (stale ones, right after a large first load, once picked a nested loop over
            # the staging table: 10 s instead of 1 s at a million rows).
            c.execute(text("SET LOCAL enable_nestloop = off"))
            c.execute(text("SET LOCAL work_mem = '256MB'"))
            # No ANALYZE of the staging table (0.1 s a million rows): a full join can only be
            # hashed or merged, and the planner sizes the hash from the table's pages.
            # A listed number repeated by the paging is unmatched once per repeat, so the
            # additions are grouped; an entry is unmatched at most once.
            c.execute(
                text(f"""
                WITH unmatched AS (
                    SELECT s.mobile AS listed, s.channel_type, e.mobile AS held
                    FROM {self._seen} s
                    FULL JOIN (SELECT mobile FROM blocklist_entries
                               WHERE account_sid = :account_sid AND channel = :channel) e
                      ON e.mobile = s.mobile
                    WHERE s.mobile IS NULL OR e.mobile IS NULL
                ), added AS (
                    INSERT INTO {self._added} (mobile, channel_type)
                    SELECT listed, MAX(channel_type) FROM unmatched WHERE held IS NULL
                    GROUP BY listed ORDER BY listed
                )
                INSERT INTO {self._removed} (mobile)
                SELECT held FROM unmatched WHERE listed IS NULL"""),
                self._where,
            )
        else:  # SQLite only loops, so it needs the index
            c.execute(
                text(f"CREATE INDEX temp.{_STAGING_PREFIX}seen_mobile ON {_STAGING_PREFIX}seen (mobile)")
            )
            c.execute(
                text(f"""
                INSERT INTO {self._added} (mobile, channel_type)
                SELECT s.mobile, MAX(s.channel_type) FROM {self._seen} s
                WHERE NOT EXISTS (SELECT 1 FROM blocklist_entries e
                                  WHERE e.account_sid = :account_sid AND e.channel = :channel
                                    AND e.mobile = s.mobile)
                GROUP BY s.mobile"""),
                self._where,
            )
            c.execute(
                text(f"""
                INSERT INTO {self._removed} (mobile)
                SELECT e.mobile FROM blocklist_entries e
                WHERE e.account_sid = :account_sid AND e.channel = :channel
                  AND NOT EXISTS (SELECT 1 FROM {self._seen} s WHERE s.mobile = e.mobile)"""),
                self._where,
            )
        c.commit()
        return self.counts(listed)

    def _count_current(self) -> int:
        return self.connection.execute(
            select(func.count())
            .select_from(blocklist_entries)
            .where(
                blocklist_entries.c.account_sid == self.account_sid,
                blocklist_entries.c.channel == self.channel,
            )
        ).scalar_one()

    def counts(self, listed: int) -> Diff:
        """The diff as it stands. The entries are counted once, by :meth:`diff`: we hold the
        lock, so nobody changes them before :meth:`apply`, which checks its row counts anyway."""
        if self._current is None:
            self._current = self._count_current()
        added, removed = self.connection.execute(
            text(f"SELECT (SELECT COUNT(*) FROM {self._added}), (SELECT COUNT(*) FROM {self._removed})")
        ).one()
        return Diff(current=self._current, listed=listed, added=added, removed=removed)

    def removal_candidates(self, batch: int) -> Iterator[list[str]]:
        """Removal candidates in batches, by keyset paging so memory stays flat."""
        after = ""
        query = text(f"SELECT mobile FROM {self._removed} WHERE mobile > :after ORDER BY mobile LIMIT :batch")
        while mobiles := list(self.connection.execute(query, {"after": after, "batch": batch}).scalars()):
            yield mobiles
            after = mobiles[-1]

    def listed_sample(self, size: int) -> list[str]:
        """Up to ``size`` numbers this sweep's listing held, picked at random: numbers a
        working ``mobile`` filter must confirm, asked alongside the removal candidates."""
        if not self.is_postgres:
            return list(
                self.connection.execute(
                    text(f"SELECT mobile FROM {self._seen} ORDER BY random() LIMIT :size"), {"size": size}
                ).scalars()
            )
        # ORDER BY random() reads and sorts the whole listing (0.2 s at a million rows, paid
        # by every sweep). Random pages hold random numbers just as well: a block sample
        # sized for about 20 times the numbers needed reads a few pages; a small table is read
        # whole. Block sampling can miss on a tiny table, so an empty sample reads it all.
        percent = min(100.0, 100.0 * 20 * size / max(self._staged, 1))
        sample = list(
            self.connection.execute(
                text(
                    f"SELECT mobile FROM {self._seen} TABLESAMPLE SYSTEM (:percent) "
                    "ORDER BY random() LIMIT :size"
                ),
                {"percent": percent, "size": size},
            ).scalars()
        )
        if len(sample) < size and percent < 100:
            sample = list(
                self.connection.execute(
                    text(f"SELECT mobile FROM {self._seen} ORDER BY random() LIMIT :size"), {"size": size}
                ).scalars()
            )
        return sample

    def keep(self, present: Iterable[str]) -> None:
        """Numbers a direct check found still blocklisted: they are not removed after all."""
        mobiles = [{"m": m} for m in present]
        if mobiles:
            self.connection.execute(text(f"DELETE FROM {self._removed} WHERE mobile = :m"), mobiles)
            self.connection.commit()

    def changes(self) -> Iterator[tuple[str, str]]:
        """Every ('added' | 'removed', mobile) this sweep would apply, streamed."""
        yield from self.connection.execute(
            text(
                f"SELECT 'added', mobile FROM {self._added} UNION ALL "
                f"SELECT 'removed', mobile FROM {self._removed} ORDER BY 1, 2"
            ),
            execution_options={"yield_per": 5000},
        )

    # -- apply -------------------------------------------------------------------------

    def apply(self, run_id: int, *, pages: int, diff: Diff) -> None:
        """Apply additions and removals, append their events and finish the run row, in one
        transaction. Writes nothing to entries or events when nothing changed.

        Rows go in sorted by mobile, the leading key of the indexes they land in, so a large
        load appends to index pages instead of touching them at random. :meth:`diff` wrote the
        additions in that order, so they are read as stored rather than sorted again (twice,
        a second each at a million rows); the order only ever affects speed.
        """
        c = self.connection
        not_before = self.previous_success_start()
        params = {
            **self._where,
            "run_id": run_id,
            "detected_at": utcnow(),
            "not_before": not_before,
            "initial_load": not_before is None,
        }
        if c.in_transaction():
            c.commit()
        with c.begin():
            if self.is_postgres:  # room to sort in memory: see ORDER BY below
                c.execute(text("SET LOCAL work_mem = '256MB'"))
            if diff.added:
                _expect(
                    diff.added,
                    "added",
                    c.execute(
                        text(f"""
                    INSERT INTO blocklist_entries
                        (account_sid, channel, mobile, channel_type, added_at, added_run_id)
                    SELECT :account_sid, :channel, mobile, channel_type, :detected_at, :run_id
                    FROM {self._added}""").bindparams(_DETECTED_AT),
                        params,
                    ).rowcount,
                )
            if diff.removed:
                _expect(
                    diff.removed,
                    "removed",
                    c.execute(
                        text(f"""
                    DELETE FROM blocklist_entries
                    WHERE account_sid = :account_sid AND channel = :channel
                      AND mobile IN (SELECT mobile FROM {self._removed})"""),
                        params,
                    ).rowcount,
                )
            for change, table in (("added", self._added), ("removed", self._removed)):
                if getattr(diff, change):
                    c.execute(
                        text(f"""
                        INSERT INTO blocklist_events (account_sid, channel, mobile, change,
                            detected_at, not_before, initial_load, run_id)
                        SELECT :account_sid, :channel, mobile, '{change}', :detected_at,
                            :not_before, :initial_load, :run_id
                        FROM {table}{"" if table == self._added else " ORDER BY mobile"}""").bindparams(
                            _DETECTED_AT, _NOT_BEFORE
                        ),
                        params,
                    )
            c.execute(
                sync_runs.update()
                .where(sync_runs.c.id == run_id)
                .values(
                    status="succeeded",
                    finished_at=params["detected_at"],
                    pages_fetched=pages,
                    error=None,
                    **_counts(diff),
                )
            )
        if diff.added + diff.removed > max(10_000, diff.seen // 10):
            # Autovacuum analyzes eventually; the next sweep's diff plans with these numbers.
            # The changes are committed: nothing here may turn the run into a failure.
            try:
                c.execute(text("ANALYZE blocklist_entries"))
                c.commit()
            except Exception:
                log.warning("ANALYZE blocklist_entries failed; autovacuum will do it", exc_info=True)
                c.rollback()


class ApplyMismatch(Exception):
    """The entries changed between diff and apply: the lock was bypassed. Nothing is applied."""


def _expect(expected: int, change: str, rowcount: int) -> None:
    if rowcount != expected:
        raise ApplyMismatch(
            f"{change} {rowcount} entries where the diff said {expected}; "
            "another writer changed the table during the sweep"
        )


def _counts(diff: Diff | None) -> dict[str, int]:
    if diff is None:
        return {}
    return {
        "entries_seen": diff.seen,
        "added": diff.added,
        "removed": diff.removed,
        "rejected": diff.rejected,
    }
