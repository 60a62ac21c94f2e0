"""A year of synthetic history for one 1M-entry channel, made with set-based SQL, and the
timings of the questions people ask of it (README queries, lookup, views over 90 days).

    .venv/bin/python tests/bench/history.py            # its own database, dropped at the end

Also run by bench_sync.py. The history is what 365 daily sweeps at 1% churn would have written
(1M initial load, then 5,000 numbers removed and 5,000 added every day: about 4.65M events),
made in one pass of INSERT ... SELECT instead of 365 sweeps. Numbers are first in, first out,
spread over India, the US, Canada, the UK, Nigeria and Kazakhstan, so the country views have
work to do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from alembic import command
from sqlalchemy import Engine, text

from sync import database
from sync.lookup import look_up
from sync.readings import normalise

README = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
SID, CHANNEL = "HXHISTORY0001", "sms"
DAYS, INITIAL, DAILY = 365, 1_000_000, 5_000
_QUERY = re.compile(r"<!-- query: ([\w-]+) -->\s*```sql\n(.*?)```", re.S)

# Sequence number s -> a number; buckets of s % 10 land in different countries.
MOBILE = """CASE s % 10
    WHEN 5 THEN '+1' || (2012000000 + s)
    WHEN 6 THEN '+1' || (4160000000 + s)
    WHEN 7 THEN '+44' || (7700000000 + s)
    WHEN 8 THEN '+234' || (8030000000 + s)
    WHEN 9 THEN '+7' || (7010000000 + s)
    ELSE '+91' || (6000000000 + s) END"""
# Day a number was added (0: initial load) and removed (first in, first out; > DAYS: still listed).
ADDED_DAY = f"CASE WHEN s < {INITIAL} THEN 0 ELSE 1 + (s - {INITIAL}) / {DAILY} END"
REMOVED_DAY = f"1 + s / {DAILY}"


def build(engine: Engine) -> str:
    """Write the history; returns a number that was blocklisted and removed, for lookups."""
    total = INITIAL + DAYS * DAILY
    with engine.begin() as c:
        c.execute(
            text("""
            INSERT INTO sync_runs (account_sid, channel, trigger, status, started_at,
                                   finished_at, pages_fetched, entries_seen, added, removed)
            SELECT :sid, :channel, 'scheduled', 'succeeded', t, t + interval '5 minutes', 10000,
                   :initial, CASE WHEN k = 0 THEN :initial ELSE :daily END,
                   CASE WHEN k = 0 THEN 0 ELSE :daily END
            FROM generate_series(0, :days) AS k,
                 LATERAL (SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                          - (:days - k) * interval '1 day' + interval '12 hours' AS t) AS day"""),
            {"sid": SID, "channel": CHANNEL, "initial": INITIAL, "daily": DAILY, "days": DAYS},
        )
        c.execute(
            text("""
            CREATE TEMP TABLE runs AS
            SELECT id, ROW_NUMBER() OVER (ORDER BY started_at) - 1 AS k, started_at, finished_at,
                   LAG(started_at) OVER (ORDER BY started_at) AS previous_start
            FROM sync_runs WHERE account_sid = :sid AND channel = :channel"""),
            {"sid": SID, "channel": CHANNEL},
        )
        c.execute(text("CREATE UNIQUE INDEX ON runs (k)"))
        c.execute(
            text(f"""
            CREATE TEMP TABLE numbers AS
            SELECT s, {MOBILE} AS mobile, {ADDED_DAY} AS added_day, {REMOVED_DAY} AS removed_day
            FROM generate_series(0, :last) AS s"""),
            {"last": total - 1},
        )
        c.execute(
            text("""
            INSERT INTO blocklist_events (account_sid, channel, mobile, change, detected_at,
                                          not_before, initial_load, run_id)
            SELECT :sid, :channel, n.mobile, e.change, r.finished_at, r.previous_start,
                   r.k = 0 AND e.change = 'added', r.id
            FROM numbers n
            CROSS JOIN LATERAL (VALUES ('added', n.added_day), ('removed', n.removed_day))
                AS e(change, day)
            JOIN runs r ON r.k = e.day
            ORDER BY r.k, e.change, n.mobile"""),
            {"sid": SID, "channel": CHANNEL},
        )
        c.execute(
            text("""
            INSERT INTO blocklist_entries (account_sid, channel, mobile, channel_type, added_at,
                                           added_run_id)
            SELECT :sid, :channel, n.mobile, '1', r.finished_at, r.id
            FROM numbers n JOIN runs r ON r.k = n.added_day
            WHERE n.removed_day > :days
            ORDER BY n.mobile"""),
            {"sid": SID, "channel": CHANNEL, "days": DAYS},
        )
        # Added on day 1, removed on day 201: one stretch with both ends.
        removed = c.execute(text(f"SELECT {MOBILE} FROM (SELECT {INITIAL + 123} AS s) AS x")).scalar_one()
        assert isinstance(removed, str)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE"))
    return removed


def _timed(engine: Engine, sql: str, params: Mapping[str, object]) -> tuple[float, int]:
    """Best of three, in a non-UTC session, as an analyst's tool would run it."""
    best, count = float("inf"), 0
    for _ in range(3):
        with engine.connect() as c:
            c.execute(text("SET TIME ZONE 'Asia/Kolkata'"))
            started = time.monotonic()
            count = len(c.execute(text(sql), params).all())
            best = min(best, time.monotonic() - started)
    return round(best, 3), count


VIEWS_90_DAYS = {
    "blocklist_daily_size": "SELECT * FROM blocklist_daily_size WHERE account_sid = :account "
    "AND day > (now() AT TIME ZONE 'UTC')::date - 90",
    "blocklist_daily_changes": "SELECT * FROM blocklist_daily_changes WHERE account_sid = :account "
    "AND day > (now() AT TIME ZONE 'UTC')::date - 90",
    "blocklist_daily_changes_by_country": "SELECT * FROM blocklist_daily_changes_by_country "
    "WHERE account_sid = :account "
    "AND day > (now() AT TIME ZONE 'UTC')::date - 90",
    "blocklist_by_country": "SELECT * FROM blocklist_by_country WHERE account_sid = :account",
    "blocklist_intervals": "SELECT * FROM blocklist_intervals WHERE account_sid = :account "
    "AND blocked_from > now() - interval '90 days'",
    "blocklist_periods": "SELECT * FROM blocklist_periods WHERE account_sid = :account "
    "AND added_at > now() - interval '90 days'",
    "blocklist_sync_health": "SELECT * FROM blocklist_sync_health",
    "blocklist_daily_size_in(Asia/Kolkata)": "SELECT * FROM blocklist_daily_size_in('Asia/Kolkata') "
    "WHERE account_sid = :account AND day > (now() AT TIME ZONE 'Asia/Kolkata')::date - 90",
    "blocklist_daily_changes_in(Asia/Kolkata)": "SELECT * FROM blocklist_daily_changes_in('Asia/Kolkata') "
    "WHERE account_sid = :account AND day > (now() AT TIME ZONE 'Asia/Kolkata')::date - 90",
}

# "Who was blocklisted at T" (T: 09:00 IST, 200 days ago), as a dashboard asks it: counted for
# the whole account, listed in full, and for one number.
AS_OF = {
    "as_of:count_all": "SELECT state, COUNT(*) FROM blocklist_as_of(:at) WHERE account_sid = :account "
    "GROUP BY state",
    "as_of:list_all": "SELECT mobile, state FROM blocklist_as_of(:at) WHERE account_sid = :account",
    "as_of:one_number": "SELECT * FROM blocklist_as_of(:at) WHERE mobile = :mobile",
}


def timings(engine: Engine, mobile: str) -> dict[str, object]:
    at = _asked_at()
    params = {
        "at": at,
        "account": SID,
        "mobile": mobile,
        "day": (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=200)).isoformat(),
    }
    out: dict[str, object] = {}
    for name, query in _QUERY.findall(README.read_text()):
        out[f"readme:{name}"] = _timed(engine, re.sub(r":'(\w+)'", r":\1", query), params)
    for name, query in VIEWS_90_DAYS.items():
        out[f"view:{name}"] = _timed(engine, query, params)
    for name, query in AS_OF.items():
        out[name] = _timed(engine, query, params)
    best = float("inf")
    for _ in range(3):
        started = time.monotonic()
        [report] = look_up(engine, [normalise(mobile)])
        best = min(best, time.monotonic() - started)
    out["lookup"] = (round(best, 3), sum(len(ch.intervals) for ch in report.channels))
    return out


_EVENTS = (
    "SELECT id, account_sid, channel, mobile, change, detected_at, not_before, initial_load, run_id "
    "FROM blocklist_events"
)


def _differ(engine: Engine, table: str, before: str) -> int:
    """Rows of ``before`` (a table of rows kept) and the events now that are not in the other."""
    with engine.connect() as c:
        return int(
            c.execute(
                text(
                    f"SELECT (SELECT COUNT(*) FROM ({_EVENTS} EXCEPT ALL SELECT * FROM {before}) a) "
                    f"+ (SELECT COUNT(*) FROM (SELECT * FROM {before} EXCEPT ALL {_EVENTS}) b)"
                )
            ).scalar_one()
        )


def _timed_migration(engine: Engine, upgrade: bool, revision: str) -> float:
    """As ``blocklist-sync migrate`` runs it (an upgrade with its upkeep after the commit)."""
    started = time.monotonic()
    if upgrade:
        database.upgrade(engine, revision)
    else:
        command.downgrade(database.alembic_config(engine), revision)
    return round(time.monotonic() - started, 1)


def run(dsn: str) -> dict[str, object]:
    """Build the year at revision 0008 (events and entries, as a year of sweeps left them),
    then upgrade: 0009 builds the stretches from the events, 0012 makes the events a view of
    them (timed, then downgraded and upgraded again: the events every way are the same rows)."""
    engine = database.make_engine(database.resolve_database_url(dsn))
    started = time.monotonic()
    mobile = build(engine)
    built = time.monotonic() - started
    migrated = _timed_migration(engine, True, "0011")
    with engine.begin() as c:  # the events as the table holds them, to compare with the view
        c.execute(text(f"CREATE TABLE kbs_events_0011 AS {_EVENTS}"))
    to_view = _timed_migration(engine, True, "0012")
    view_differs = _differ(engine, "blocklist_events", "kbs_events_0011")
    to_table = _timed_migration(engine, False, "0011")
    table_differs = _differ(engine, "blocklist_events", "kbs_events_0011")
    again = _timed_migration(engine, True, "head")
    again_differs = _differ(engine, "blocklist_events", "kbs_events_0011")
    with engine.begin() as c:
        c.execute(text("DROP TABLE kbs_events_0011"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE"))
    with engine.connect() as c:
        events = c.execute(
            text("SELECT COUNT(*) FROM blocklist_events WHERE account_sid = :a"), {"a": SID}
        ).scalar_one()
    return {
        "events": events,
        "build_seconds": round(built, 1),
        "migrate_0009_to_0011_seconds": migrated,
        "migrate_0012": {
            "upgrade_seconds": to_view,
            "downgrade_seconds": to_table,
            "upgrade_again_seconds": again,
            "rows_that_differ_after_upgrade_downgrade_upgrade": [view_differs, table_differs, again_differs],
        },
        "seconds_and_rows": timings(engine, mobile),
    }


def measure(pg: str, *, keep: bool = False) -> dict[str, object]:
    """The whole measurement in a database of its own on the server ``pg``: made at revision
    0008, filled, migrated to head, timed, and dropped (unless ``keep``)."""
    name = f"kbs_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(f"{pg}/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"{pg}/{name}"
    try:
        engine = database.make_engine(database.resolve_database_url(dsn))
        command.upgrade(database.alembic_config(engine), "0008")
        engine.dispose()
        return run(dsn)
    finally:
        if keep:
            print(f"kept {dsn}")
        else:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def compare(pg: str, before: str) -> dict[str, object]:
    """The views and as-of questions at revision ``before`` and at head, on one year of history
    in one run (figures from different days differ by more than most changes do)."""
    name = f"kbs_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(f"{pg}/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    engine = database.make_engine(database.resolve_database_url(f"{pg}/{name}"))
    try:
        config = database.alembic_config(engine)
        command.upgrade(config, "0008")
        mobile = build(engine)
        figures: dict[str, object] = {}
        for revision in (before, "head"):
            database.upgrade(engine, revision)  # as `blocklist-sync migrate` does
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE"))
            params = {"at": _asked_at(), "account": SID, "mobile": mobile}
            questions = {**VIEWS_90_DAYS, **AS_OF}
            figures[revision] = {q: _timed(engine, sql, params) for q, sql in questions.items()}
        return figures
    finally:
        engine.dispose()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _asked_at() -> dt.datetime:
    """The instant every as-of question asks about: 200 days back, 09:00 in India."""
    return dt.datetime.combine(
        dt.datetime.now(dt.UTC).date() - dt.timedelta(days=200), dt.time(9), ZoneInfo("Asia/Kolkata")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pg", default=os.environ.get("KBS_TEST_PG", "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its URL)")
    parser.add_argument(
        "--compare",
        metavar="REVISION",
        help="time the views and as-of questions at REVISION (e.g. 0011) and at head, in one run",
    )
    args = parser.parse_args()
    result = compare(args.pg, args.compare) if args.compare else measure(args.pg, keep=args.keep)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
