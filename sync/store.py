"""The database side of a sweep: lock, run rows, staging, set-based diff, one-transaction apply.

Knows nothing of HTTP: rows arrive as ``(mobile, channel_type)`` tuples. One
:class:`LockedChannel` holds one connection for the whole sweep of an (account, channel); the
advisory lock, the temporary staging tables and the apply transaction all live on it, so
closing it (or the process dying) releases everything at once.

Every time it stores (a run's start and end, a change's ``detected_at`` and ``not_before``) and
every age it judges comes from the database's clock (:meth:`~sync.dialect.Dialect.now`), never
the host's: sweeps from hosts whose clocks disagree still write one consistent history.

The diff is a handful of statements over temporary tables, so memory in Python stays flat
however long the blocklist. The SQL here is portable: it runs as written on PostgreSQL and
SQLite. What differs — the lock, the staging tables' schema and key type, the bulk load, the
comparison itself, the random sample and the room to sort — is one member each of the
connection's :class:`~sync.dialect.Dialect` (:mod:`sync.dialect`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, bindparam, func, select, text

from sync.dialect import Dialect, LockHolder, Row, dialect_for
from sync.schema import UtcTime, blocklist_channel_types, blocklist_entries, sync_runs
from sync.vocabulary import RunStatus, Trigger

__all__ = [
    "ChannelStatus",
    "Comparison",
    "Diff",
    "LockHeld",
    "LockHolder",
    "LockedChannel",
    "Staged",
    "Store",
]

log = logging.getLogger("sync.store")

# Typed, so each dialect stores them as timestamps (SQLite included), not driver-chosen strings.
_DETECTED_AT = bindparam("detected_at", type_=UtcTime)
_NOT_BEFORE = bindparam("not_before", type_=UtcTime)
_PROVEN_AT = bindparam("proven_at", type_=UtcTime)

_STAGING_PREFIX = "kbs_staging_"
_ABANDONED = "the process ended before the sweep finished (crash, kill or restart); nothing was applied"


class LockHeld(Exception):
    """Another session holds this account and channel's lock: a sweep in progress, or one
    that is stuck or whose host is gone. ``holder`` says who, where the database can tell."""

    def __init__(self, key: str, holder: LockHolder | None) -> None:
        super().__init__(key)
        self.key = key
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

    @contextmanager
    def lock_channel(
        self, account_sid: str, channel: str, *, timeout: float | None = None
    ) -> Iterator[LockedChannel]:
        """Lock (account, channel) for one sweep, or raise :class:`LockHeld` at once, naming
        the holder.

        The session first takes the sweep's own limits (``timeout`` seconds for any statement,
        lock wait or idle spell; ``None``: none), so a role's defaults cannot end a long sweep,
        and a session that outlives its sweep is ended by the server, lock and all
        (:meth:`~sync.dialect.Dialect.set_session_limits`).
        """
        key = f"kaleyra-blocklist-sync:{account_sid}:{channel}"
        with self.engine.connect() as connection:
            self.dialect.set_session_limits(connection, timeout)
            with self.dialect.lock(connection, key=key, account_sid=account_sid, channel=channel) as got:
                if not got:
                    raise LockHeld(key, self.dialect.lock_holder(connection, key=key))
                yield LockedChannel(connection, account_sid, channel, self.dialect)

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

    @classmethod
    def in_schema(cls, schema: str) -> _Staging:
        names = ("seen", "added", "removed", "unconfirmed")
        return cls(*(f"{schema}.{_STAGING_PREFIX}{name}" for name in names))

    def all(self) -> tuple[str, ...]:
        return (self.seen, self.added, self.removed, self.unconfirmed)


class LockedChannel:
    """One locked sweep of one (account, channel), on one held connection.

    The sweep's data passes through three objects, each made only by the one before, so the
    order of the calls is in their types: :meth:`stage` loads the listing and returns a
    :class:`Staged` listing, whose :meth:`~Staged.diff` returns the :class:`Comparison` that
    counts, confirms and applies.
    """

    def __init__(self, connection: Connection, account_sid: str, channel: str, dialect: Dialect) -> None:
        self.connection = connection
        self.account_sid = account_sid
        self.channel = channel
        self.dialect = dialect
        self._where = {"account_sid": account_sid, "channel": channel}
        self._staging = _Staging.in_schema(dialect.temp_schema)

    def now(self) -> dt.datetime:
        return self.dialect.now(self.connection)

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
        self.connection.commit()
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
                )
                .order_by(sync_runs.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        )
        age = None if last is None else (self.now() - last).total_seconds()
        self.connection.commit()
        # A start in the future (written by such a host before 0008) says nothing of freshness.
        return age if age is None or age >= 0 else None

    def start_run(self, trigger: Trigger) -> int:
        """Insert and commit the ``running`` row, so even a crash leaves a trace."""
        run_id = self.connection.execute(
            sync_runs.insert()
            .values(**self._where, trigger=trigger, status=RunStatus.RUNNING, started_at=self.now())
            .returning(sync_runs.c.id)
        ).scalar_one()
        self.connection.commit()
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
        """Record how a run ended that applied nothing (failed, held, dry_run)."""
        if self.connection.in_transaction():
            self.connection.rollback()
        self.connection.execute(
            sync_runs.update()
            # Only a run still going: never rewrite one whose changes were already committed.
            .where(sync_runs.c.id == run_id, sync_runs.c.status == RunStatus.RUNNING)
            .values(status=status, finished_at=self.now(), pages_fetched=pages, error=error, **_counts(diff))
        )
        self.connection.commit()

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
            .order_by(sync_runs.c.id.desc())
            .limit(1)
        )
        if complete_listing:
            query = query.where(sync_runs.c.listing_complete.is_not(False))
        return _as_utc(self.connection.execute(query).scalar_one_or_none())

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

    def channel_types(self) -> dict[str, set[str]]:
        """The channel_type codes each channel of this account has carried, by channel."""
        learned: dict[str, set[str]] = {}
        for channel, code in self.connection.execute(
            select(blocklist_channel_types.c.channel, blocklist_channel_types.c.channel_type).where(
                blocklist_channel_types.c.account_sid == self.account_sid
            )
        ):
            learned.setdefault(channel, set()).add(code)
        self.connection.commit()
        return learned

    # -- staging and diff --------------------------------------------------------------

    def stage(self, rows: Iterable[Row]) -> Staged:
        """Load the listing into a temporary table as it streams in.

        The dialect loads it (:meth:`~sync.dialect.Dialect.load`): one COPY for the whole sweep
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
        loaded = self.dialect.load(c, t.seen, rows)
        c.commit()
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
        (:meth:`~sync.dialect.Dialect.compare`): one hash full join on PostgreSQL, two
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
        c.commit()
        return Comparison(session, listed=self.rows, current=current)

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
        self.connection = session.connection
        self.listed = listed  # rows the listing returned
        # The entries are counted once, by the diff: we hold the lock, so nobody changes them
        # before apply(), which checks its row counts anyway.
        self.current = current
        self._rescued = 0  # removal candidates the filter found still listed, by keep()

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

    def keep(self, present: Iterable[str]) -> None:
        """Numbers a direct check found still blocklisted: they are not removed after all, and
        the listing that did not show them skipped them (counted as rescued)."""
        mobiles = [{"m": m} for m in present]
        if mobiles:
            self._rescued += self.connection.execute(
                text(f"DELETE FROM {self._t.removed} WHERE mobile = :m"), mobiles
            ).rowcount
            self.connection.commit()

    def unconfirm(self, unproven: Iterable[str]) -> None:
        """Removal candidates whose absence could not be proven: kept as blocklisted, counted
        as unconfirmed, and checked again by the next sweep."""
        mobiles = [{"m": m} for m in unproven]
        if mobiles:
            c, t = self.connection, self._t
            move = f"INSERT INTO {t.unconfirmed} SELECT mobile FROM {t.removed} WHERE mobile = :m"
            c.execute(text(move), mobiles)
            c.execute(text(f"DELETE FROM {t.removed} WHERE mobile = :m"), mobiles)
            c.commit()

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

    def apply(self, run_id: int, *, pages: int, diff: Diff, channel_types: Iterable[str] = ()) -> None:
        """Apply additions and removals, append their events, mark what could not be proven,
        learn the listing's ``channel_types`` and finish the run row, in one transaction.
        Writes nothing to entries or events when nothing changed.

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
        if c.in_transaction():
            c.commit()
        with c.begin():
            params["detected_at"] = session.now()
            session.dialect.make_room_to_sort(c)  # see ORDER BY below
            if diff.removed:
                # The events first: their window reads the entries they end.
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
                _expect(
                    diff.removed,
                    "removed",
                    c.execute(
                        text(f"""
                    DELETE FROM blocklist_entries
                    WHERE account_sid = :account_sid AND channel = :channel
                      AND mobile IN (SELECT mobile FROM {t.removed})"""),
                        params,
                    ).rowcount,
                )
            if diff.added:
                _expect(
                    diff.added,
                    "added",
                    c.execute(
                        text(f"""
                    INSERT INTO blocklist_entries
                        (account_sid, channel, mobile, channel_type, added_at, added_run_id)
                    SELECT :account_sid, :channel, mobile, channel_type, :detected_at, :run_id
                    FROM {t.added}""").bindparams(_DETECTED_AT),
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
            self._learn_channel_types(channel_types, params)
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
        if diff.added + diff.removed > max(10_000, diff.seen // 10):
            # Autovacuum analyzes eventually; the next sweep's diff plans with these numbers.
            # The changes are committed: nothing here may turn the run into a failure.
            try:
                c.execute(text("ANALYZE blocklist_entries"))
                c.commit()
            except Exception:
                log.warning("ANALYZE blocklist_entries failed; autovacuum will do it", exc_info=True)
                c.rollback()

    def _mark_unproven(self, params: Mapping[str, object]) -> None:
        """Within :meth:`apply`: numbers this sweep could not prove keep (or get) the start of
        the last sweep that did; every other held number was shown by this sweep, and is
        proven again. Both touch only the few rows concerned (a partial index)."""
        c = self.connection
        if params["proven_at"] is not None:
            c.execute(
                text(f"""
                UPDATE blocklist_entries SET proven_present_at = :proven_at
                WHERE account_sid = :account_sid AND channel = :channel
                  AND proven_present_at IS NULL
                  AND mobile IN (SELECT mobile FROM {self._t.unconfirmed})""").bindparams(_PROVEN_AT),
                params,
            )
        c.execute(
            text(f"""
            UPDATE blocklist_entries SET proven_present_at = NULL
            WHERE account_sid = :account_sid AND channel = :channel
              AND proven_present_at IS NOT NULL
              AND mobile NOT IN (SELECT mobile FROM {self._t.unconfirmed})"""),
            params,
        )

    def _learn_channel_types(self, channel_types: Iterable[str], params: Mapping[str, object]) -> None:
        """Within :meth:`apply`: the codes this channel's applied listing carried."""
        known = set(
            self.connection.execute(
                select(blocklist_channel_types.c.channel_type).where(
                    blocklist_channel_types.c.account_sid == self._session.account_sid,
                    blocklist_channel_types.c.channel == self._session.channel,
                )
            ).scalars()
        )
        new = sorted(set(channel_types) - known)
        if new:
            self.connection.execute(
                blocklist_channel_types.insert(),
                [
                    {
                        **self._session._where,
                        "channel_type": code,
                        "first_run_id": params["run_id"],
                        "first_seen_at": params["detected_at"],
                    }
                    for code in new
                ],
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
