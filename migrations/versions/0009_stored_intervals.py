"""History as stored intervals: blocklist_periods, kept by every sweep; entries become its open rows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 19:30:00.000000

Analysts ask three questions: who was blocklisted at T, how many each day, what changed in a
period. Until now the stretches were derived at query time by a window function over an
account's whole event log (11-13 s for 90 days of a year of history). This revision stores them:

- ``blocklist_periods``: one row per (account, channel, number, stretch of being listed), with
  the honest bounds of both ends (``added_not_before`` .. ``added_at``, ``removed_not_before`` ..
  ``removed_at``), the runs that opened and closed it, ``initial_load`` and ``channel_type``.
  Every sweep writes it in the same transaction as its events. It is built here from the
  events, exactly: each added event paired with the next event of its number (the old
  ``blocklist_intervals``). Before anything is written, the open stretches the events give are
  checked against ``blocklist_entries``; if the two disagree the upgrade stops with nothing
  changed. ``channel_type`` and ``proven_present_at`` come from the entries, so stretches
  closed before this revision have no ``channel_type`` (the events never recorded it).
- ``blocklist_entries`` becomes a view of the open stretches, with the same columns: every
  query that read it keeps working, and the current list can never disagree with the history.
- Fewer index entries per row written: the stretches have their primary key (number first, for
  look-ups and as-of questions of one number) and a unique index of the open ones (one open
  stretch per number, and the sweep's comparison); the events keep their primary key and, on
  PostgreSQL, a BRIN index on ``detected_at`` (a few pages for the whole log, for "what changed
  in a period") instead of three B-trees; SQLite, which has no BRIN, a B-tree on it.
- ``blocklist_intervals``, ``blocklist_daily_changes``, ``blocklist_daily_size`` and
  ``blocklist_daily_changes_by_country`` read the stretches (same names and columns). On
  PostgreSQL, ``blocklist_as_of(at)`` answers "listed at T" (``yes`` / ``uncertain``, one row per
  number) and ``blocklist_daily_size_in(tz)`` / ``blocklist_daily_changes_in(tz)`` give the daily
  figures in any time zone (``'Asia/Kolkata'``); the views are their UTC calls.

Downgrade rebuilds ``blocklist_entries`` from the open stretches and restores the indexes and
views of 0008. The events were never touched, so nothing is lost either way.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from sync.sql import sql_literal
from sync.views import View, migration, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

MAX_PREFIX_LENGTH = 10  # as in 0005, frozen

# -- the stretches, built from the events ---------------------------------------------------

# Each added event paired with the next event of the same number, in commit order; the old
# blocklist_intervals, with the run ids. Kaleyra lists a number once per channel, so the next
# event is its removal, or there is none yet.
_PAIRED = """
SELECT account_sid, channel, mobile, detected_at AS added_at, not_before AS added_not_before,
       CASE WHEN next_change = 'removed' THEN next_detected_at END AS removed_at,
       CASE WHEN next_change = 'removed' THEN next_not_before END AS removed_not_before,
       initial_load, run_id AS added_run_id,
       CASE WHEN next_change = 'removed' THEN next_run_id END AS removed_run_id
FROM (
    SELECT e.account_sid, e.channel, e.mobile, e.change, e.detected_at, e.not_before,
           e.initial_load, e.run_id,
           LEAD(e.change) OVER w AS next_change,
           LEAD(e.detected_at) OVER w AS next_detected_at,
           LEAD(e.not_before) OVER w AS next_not_before,
           LEAD(e.run_id) OVER w AS next_run_id
    FROM blocklist_events e
    WINDOW w AS (PARTITION BY e.account_sid, e.channel, e.mobile ORDER BY e.detected_at, e.id)
) paired
WHERE change = 'added'
"""

_COMMENTS = {
    "account_sid": "Kaleyra account SID.",
    "channel": "Channel the number was blocklisted on: sms, whatsapp or voice.",
    "mobile": "Number in canonical E.164: + then 7 to 15 digits, no spaces or separators.",
    "channel_type": "Kaleyra's channel_type for the row, opaque, as first seen. NULL for "
    "stretches that ended before migration 0009 (the events never recorded it).",
    "added_at": "detected_at of the addition: when the sweep that first saw the number listed "
    "committed (UTC). Listed from no later than this.",
    "added_not_before": "not_before of the addition: the number was added after this (UTC). NULL "
    "for the initial load (initial_load): blocklisted before the sync began, since when is "
    "unknown.",
    "removed_at": "detected_at of the removal: when the sweep that first proved the number gone "
    "committed (UTC). NULL while the number is still blocklisted (an open stretch).",
    "removed_not_before": "not_before of the removal: start of the last sweep that showed the "
    "number listed (UTC); the removal happened after this and no later than removed_at.",
    "initial_load": "True for stretches opened by a channel's first succeeded sweep: "
    "blocklisted before the sync began, not added then.",
    "added_run_id": "sync_runs.id of the run that detected the addition.",
    "removed_run_id": "sync_runs.id of the run that detected the removal; NULL while open.",
    "proven_present_at": "Open stretches only: NULL when the last succeeded sweep showed the "
    "number. Otherwise that sweep could not prove it either way (sync_runs.unconfirmed) and this "
    "is the start of the last sweep that did: listed for certain until then.",
}

PERIOD_COLUMNS = tuple(_COMMENTS)

_OPEN = "removed_at IS NULL"


def _key() -> sa.types.TypeEngine[str]:
    return sa.Text(collation="C") if op.get_bind().dialect.name == "postgresql" else sa.Text()


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


_PRIMARY_KEY = ("mobile", "account_sid", "channel", "added_run_id")


def _create_periods(*, with_primary_key: bool) -> None:
    """The table; on PostgreSQL its primary key is added after the load (one sorted build)."""
    c = _COMMENTS
    key = (
        [sa.PrimaryKeyConstraint(*_PRIMARY_KEY, name=op.f("pk_blocklist_periods"))]
        if with_primary_key
        else []
    )
    op.create_table(
        "blocklist_periods",
        sa.Column("account_sid", _key(), nullable=False, comment=c["account_sid"]),
        sa.Column("channel", _key(), nullable=False, comment=c["channel"]),
        sa.Column("mobile", _key(), nullable=False, comment=c["mobile"]),
        sa.Column("channel_type", sa.Text(), nullable=True, comment=c["channel_type"]),
        sa.Column("added_at", _time(), nullable=False, comment=c["added_at"]),
        sa.Column("added_not_before", _time(), nullable=True, comment=c["added_not_before"]),
        sa.Column("removed_at", _time(), nullable=True, comment=c["removed_at"]),
        sa.Column("removed_not_before", _time(), nullable=True, comment=c["removed_not_before"]),
        sa.Column("initial_load", sa.Boolean(), nullable=False, comment=c["initial_load"]),
        sa.Column("added_run_id", _id(), nullable=False, comment=c["added_run_id"]),
        sa.Column("removed_run_id", _id(), nullable=True, comment=c["removed_run_id"]),
        sa.Column("proven_present_at", _time(), nullable=True, comment=c["proven_present_at"]),
        *key,
        comment="History as stretches: one row per account, channel, number and stretch of "
        "being blocklisted, with honest bounds on both ends. The open rows (removed_at IS NULL) "
        "are the current blocklist (the view blocklist_entries). Written by every sweep in the "
        "same transaction as its events.",
    )


def _create_periods_indexes(*, primary_key: bool) -> None:
    # After the bulk load: one sorted build instead of a million inserts. The unique index is
    # the rule "one open stretch per number" and serves the sweep's comparison and counts.
    if primary_key:
        op.create_primary_key("pk_blocklist_periods", "blocklist_periods", list(_PRIMARY_KEY))
    op.create_index(
        "ux_blocklist_periods_open",
        "blocklist_periods",
        ["account_sid", "channel", "mobile"],
        unique=True,
        postgresql_where=sa.text(_OPEN),
        sqlite_where=sa.text(_OPEN),
    )
    # "What changed on these days": the stretches begun (initial load left out: it is a
    # channel's first million, never counted as additions) and ended, by time. Partial, so a
    # first load writes no entry in either.
    op.create_index(
        "ix_blocklist_periods_added",
        "blocklist_periods",
        ["account_sid", "channel", "added_at"],
        postgresql_where=sa.text("NOT initial_load"),
        sqlite_where=sa.text("NOT initial_load"),
    )
    op.create_index(
        "ix_blocklist_periods_removed",
        "blocklist_periods",
        ["account_sid", "channel", "removed_at"],
        postgresql_where=sa.text("removed_at IS NOT NULL"),
        sqlite_where=sa.text("removed_at IS NOT NULL"),
    )
    op.create_index(
        "ix_blocklist_periods_unproven",
        "blocklist_periods",
        ["account_sid", "channel"],
        postgresql_where=sa.text("proven_present_at IS NOT NULL"),
        sqlite_where=sa.text("proven_present_at IS NOT NULL"),
    )


def _check_entries_match_events() -> None:
    """Stop, with nothing changed, when the open stretches the events give are not exactly the
    entries: the history would say one thing and the current list another."""
    bind = op.get_bind()
    open_from_events = f"SELECT account_sid, channel, mobile FROM ({_PAIRED}) p WHERE removed_at IS NULL"
    entries = "SELECT account_sid, channel, mobile FROM blocklist_entries"
    differ = bind.execute(
        sa.text(
            f"SELECT (SELECT COUNT(*) FROM ({open_from_events} EXCEPT {entries}) a), "
            f"(SELECT COUNT(*) FROM ({entries} EXCEPT {open_from_events}) b)"
        )
    ).one()
    if any(differ):
        raise RuntimeError(
            f"blocklist_events and blocklist_entries disagree ({differ[0]} numbers listed by the "
            f"events only, {differ[1]} by the entries only); the stretches cannot be built "
            "exactly. Restore the database from a backup or ask for help; nothing was changed"
        )


def _fill_periods() -> None:
    columns = ", ".join(PERIOD_COLUMNS)
    op.execute(f"""
        INSERT INTO blocklist_periods ({columns})
        SELECT p.account_sid, p.channel, p.mobile, e.channel_type, p.added_at, p.added_not_before,
               p.removed_at, p.removed_not_before, p.initial_load, p.added_run_id,
               p.removed_run_id, e.proven_present_at
        FROM ({_PAIRED}) p
        LEFT JOIN blocklist_entries e
          ON p.removed_at IS NULL AND e.account_sid = p.account_sid
         AND e.channel = p.channel AND e.mobile = p.mobile
        ORDER BY p.added_at""")  # in time order, as the sweeps append them


# -- views ---------------------------------------------------------------------------------

ENTRIES = View(
    "blocklist_entries",
    f"""
SELECT account_sid, channel, mobile, channel_type, added_at, added_run_id, proven_present_at
FROM blocklist_periods
WHERE {_OPEN}
""",
    comment="The current blocklist: one row per number blocklisted now, per account and channel "
    "(the open stretches of blocklist_periods).",
    columns={
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel the number is blocklisted on.",
        "mobile": "Number in canonical E.164: + then 7 to 15 digits, no spaces or separators.",
        "channel_type": "Kaleyra's channel_type for the row, opaque, as first seen.",
        "added_at": "detected_at of the added event that began this stretch (UTC).",
        "added_run_id": "Run that detected the addition.",
        "proven_present_at": "NULL when the last succeeded sweep showed the number blocklisted. "
        "Otherwise that sweep could not prove it either way (see sync_runs.unconfirmed) and this "
        "is the start of the last sweep that did: a removal found later happened after this.",
    },
)

INTERVALS = View(
    "blocklist_intervals",
    """
SELECT account_sid, channel, mobile,
       added_at AS blocked_from,
       added_not_before AS blocked_from_not_before,
       removed_at AS unblocked_at,
       removed_not_before AS unblocked_not_before,
       initial_load
FROM blocklist_periods
""",
    comment="One row per stretch of time a number was blocklisted on a channel: "
    "blocklist_periods under the names of 0002. Prefer blocklist_periods, which also has the "
    "run ids.",
    columns={
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel the number was blocklisted on: sms, whatsapp or voice.",
        "mobile": "Number in canonical E.164.",
        "blocked_from": "blocklist_periods.added_at: when the sweep that first saw the number "
        "listed committed (UTC). The addition happened after blocked_from_not_before and no later "
        "than this.",
        "blocked_from_not_before": "blocklist_periods.added_not_before: the number was added after "
        "this (UTC). NULL for the initial load: blocklisted before the sync began.",
        "unblocked_at": "blocklist_periods.removed_at: when the sweep that proved the number gone "
        "committed (UTC). The removal happened after unblocked_not_before and no later than this. "
        "NULL while the number is still blocklisted.",
        "unblocked_not_before": "blocklist_periods.removed_not_before: start of the last sweep "
        "that showed the number listed (UTC).",
        "initial_load": "True for the stretches of a channel's first succeeded sweep.",
    },
)

# The calendar of each channel, from the day of its first succeeded sweep to today, in the
# zone {tz}. A filter on day or account_sid reaches it (a subquery, not a CTE), so the counts
# below run only for the days asked about.
_CALENDAR_PG = """
SELECT f.account_sid, f.channel, CAST(d AS date) AS day,
       CAST(d AS date)::timestamp AT TIME ZONE {tz} AS day_start,
       (CAST(d AS date) + 1)::timestamp AT TIME ZONE {tz} AS day_end
FROM (SELECT account_sid, channel, MIN(finished_at) AS first_at FROM sync_runs
      WHERE status = 'succeeded' GROUP BY account_sid, channel) f
CROSS JOIN LATERAL generate_series((f.first_at AT TIME ZONE {tz})::date,
                                   (now() AT TIME ZONE {tz})::date, interval '1 day') AS d
"""

# Per calendar day: the stretches that began (initial load left out) and ended in it, each a
# range read of an index on (account_sid, channel, time). Days without a change have no row.
_CHANGES_PG = f"""
SELECT c.day, c.account_sid::text, c.channel::text, a.added, r.removed, a.added - r.removed AS net
FROM ({_CALENDAR_PG}) c
CROSS JOIN LATERAL (
    SELECT COUNT(*) AS added FROM blocklist_periods p
    WHERE p.account_sid = c.account_sid AND p.channel = c.channel AND NOT p.initial_load
      AND p.added_at >= c.day_start AND p.added_at < c.day_end) a
CROSS JOIN LATERAL (
    SELECT COUNT(*) AS removed FROM blocklist_periods p
    WHERE p.account_sid = c.account_sid AND p.channel = c.channel AND p.removed_at IS NOT NULL
      AND p.removed_at >= c.day_start AND p.removed_at < c.day_end) r
WHERE a.added > 0 OR r.removed > 0
"""

_CHANGES_SQLITE = """
SELECT day, account_sid, channel, SUM(added) AS added, SUM(removed) AS removed,
       SUM(added) - SUM(removed) AS net
FROM (
    SELECT date(added_at) AS day, account_sid, channel, 1 AS added, 0 AS removed
    FROM blocklist_periods WHERE NOT initial_load
    UNION ALL
    SELECT date(removed_at), account_sid, channel, 0, 1
    FROM blocklist_periods WHERE removed_at IS NOT NULL
) changes
GROUP BY day, account_sid, channel
"""

# Size at the end of each day: the count the last succeeded sweep committed that day made of
# the channel's open stretches (sync_runs.entries_seen, checked against the rows it applied),
# carried over days without one: exactly the stretches begun by then and not ended (a test
# counts them), read from one row per sweep instead of millions of stretches.
_SIZE_PG = """
WITH swept AS (
    SELECT account_sid, channel, (finished_at AT TIME ZONE {tz})::date AS day, entries_seen,
           ROW_NUMBER() OVER (PARTITION BY account_sid, channel, (finished_at AT TIME ZONE {tz})::date
                              ORDER BY finished_at DESC, id DESC) AS newest
    FROM sync_runs
    WHERE status = 'succeeded'
), spans AS (
    SELECT account_sid, channel, day, entries_seen,
           LEAD(day) OVER (PARTITION BY account_sid, channel ORDER BY day) AS next_day
    FROM swept
    WHERE newest = 1
)
SELECT CAST(d AS date) AS day, s.account_sid, s.channel, s.entries_seen AS entries,
       CAST(d AS date) = s.day AS swept
FROM spans s
CROSS JOIN LATERAL generate_series(
    s.day, COALESCE(s.next_day - 1, (now() AT TIME ZONE {tz})::date), interval '1 day') AS d
"""

DAILY_CHANGES = View(
    "blocklist_daily_changes",
    "{select}",
    comment="Per UTC day, account and channel: additions detected that day (initial load left "
    "out), removals, and net; from blocklist_periods. Days without a change have no row. Other "
    "time zones: blocklist_daily_changes_in('Asia/Kolkata') on PostgreSQL.",
    columns={
        "day": "UTC calendar day on which the sweeps detected the changes.",
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel: sms, whatsapp or voice.",
        "added": "Stretches that began that day (added_at), initial load excluded.",
        "removed": "Stretches that ended that day (removed_at).",
        "net": "added - removed: how much the channel's list grew or shrank that day.",
    },
    expressions={
        "postgresql": {"select": "SELECT * FROM blocklist_daily_changes_in('UTC')"},
        "sqlite": {"select": _CHANGES_SQLITE},
    },
)

DAILY_SIZE = View(
    "blocklist_daily_size",
    "SELECT * FROM blocklist_daily_size_in('UTC')",
    comment="Per account, channel and UTC day, from the day of the channel's first succeeded "
    "sweep to today, gap-free: how many numbers were blocklisted at the end of the day. Other "
    "time zones: blocklist_daily_size_in('Asia/Kolkata').",
    columns={
        "day": "UTC calendar day.",
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel: sms, whatsapp or voice.",
        "entries": "Numbers blocklisted at the end of the day: the stretches of blocklist_periods "
        "begun by then and not ended, as the last succeeded sweep committed by then counted them "
        "(sync_runs.entries_seen). On a day without a succeeded sweep (swept false) no change was "
        "detected, so the last known size is carried forward; the list may have changed unseen.",
        "swept": "True when a succeeded sweep committed that day; false when entries is carried "
        "forward from an earlier day.",
    },
)

_LENGTHS = range(MAX_PREFIX_LENGTH, 1, -1)
_LONGEST_PREFIX = "COALESCE({}) AS prefix".format(", ".join(f"p{n}.prefix" for n in _LENGTHS))
_PREFIX_JOINS = "\n    ".join(
    f"LEFT JOIN phone_prefixes p{n} ON p{n}.prefix = substr(h.head, 1, {n})" for n in _LENGTHS
)

# Per day and head (a number's first MAX_PREFIX_LENGTH characters): on PostgreSQL from the
# calendar, each day a range read of the time indexes, as blocklist_daily_changes_in.
_HEADS_PG = f"""
SELECT c.day, c.account_sid::text AS account_sid, c.channel::text AS channel, x.head, x.added,
       x.removed
FROM ({_CALENDAR_PG.format(tz="'UTC'")}) c
CROSS JOIN LATERAL (
    SELECT head, SUM(added) AS added, SUM(removed) AS removed
    FROM (
        SELECT substr(p.mobile, 1, {MAX_PREFIX_LENGTH}) AS head, 1 AS added, 0 AS removed
        FROM blocklist_periods p
        WHERE p.account_sid = c.account_sid AND p.channel = c.channel AND NOT p.initial_load
          AND p.added_at >= c.day_start AND p.added_at < c.day_end
        UNION ALL
        SELECT substr(p.mobile, 1, {MAX_PREFIX_LENGTH}), 0, 1
        FROM blocklist_periods p
        WHERE p.account_sid = c.account_sid AND p.channel = c.channel
          AND p.removed_at IS NOT NULL AND p.removed_at >= c.day_start AND p.removed_at < c.day_end
    ) changes
    GROUP BY head
) x
"""

_HEADS_SQLITE = f"""
SELECT day, account_sid, channel, head, SUM(added) AS added, SUM(removed) AS removed
FROM (
    SELECT date(added_at) AS day, account_sid, channel,
           substr(mobile, 1, {MAX_PREFIX_LENGTH}) AS head, 1 AS added, 0 AS removed
    FROM blocklist_periods WHERE NOT initial_load
    UNION ALL
    SELECT date(removed_at), account_sid, channel, substr(mobile, 1, {MAX_PREFIX_LENGTH}), 0, 1
    FROM blocklist_periods WHERE removed_at IS NOT NULL
) changes
GROUP BY day, account_sid, channel, head
"""

DAILY_CHANGES_BY_COUNTRY = View(
    "blocklist_daily_changes_by_country",
    f"""
SELECT placed.day, placed.account_sid, placed.channel, p.region, p.calling_code,
       SUM(placed.added) AS added, SUM(placed.removed) AS removed,
       SUM(placed.added) - SUM(placed.removed) AS net
FROM (
    SELECT h.day, h.account_sid, h.channel, h.added, h.removed, {_LONGEST_PREFIX}
    FROM ({{heads}}) h
    {_PREFIX_JOINS}
) placed
LEFT JOIN phone_prefixes p ON p.prefix = placed.prefix
GROUP BY placed.day, placed.account_sid, placed.channel, p.region, p.calling_code
""",
    comment=(
        "blocklist_daily_changes broken down by country: per UTC day, account, channel and "
        "country, additions (initial load excluded), removals and net; from blocklist_periods. "
        "Days without a change have no row."
    ),
    columns={
        "day": "UTC calendar day on which the sweeps detected the changes.",
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel: sms, whatsapp or voice.",
        "region": "ISO 3166 region of the numbers: decided by the number where its digits do "
        "(+1 416 is CA, +1 876 is JM, +44 1534 is JE), else the calling code's main region (US "
        "for +1, GB for +44). NULL for non-geographic calling codes (+800, +882, ...) and for "
        "numbers no calling code matches.",
        "calling_code": "Country calling code of the numbers (1 for +1); NULL when none matches.",
        "added": "Additions of this country's numbers detected that day, initial load excluded.",
        "removed": "Removals of this country's numbers detected that day.",
        "net": "added - removed.",
    },
    expressions={"postgresql": {"heads": _HEADS_PG}, "sqlite": {"heads": _HEADS_SQLITE}},
)

# -- PostgreSQL functions ----------------------------------------------------------------------

# "Listed at T", per stretch: yes from added_at until the removal's not_before (for an open
# stretch: until the last sweep that proved it, or for ever); uncertain inside either window
# (an initial load's start is unknown: uncertain before it). A number's yes-stretches never
# overlap (each begins after the previous one was proven gone), so the yes rows are unique; a
# number uncertain in several stretches, or uncertain in one and yes in another, is one row:
# yes wins, else its latest stretch. LANGUAGE sql, one SELECT: the planner inlines it, so a
# filter on account_sid or mobile reaches the scans (the DISTINCT ON subquery names the raw
# columns, which a filter may be pushed to, and casts outside it). The keys are returned as blocklist_key
# (text in the "C" collation, like the columns): as plain text they would compare in the
# database's collation, and `WHERE mobile = '+91…'` could not use the primary key.
KEY_DOMAIN = 'CREATE DOMAIN blocklist_key AS text COLLATE "C"'

AS_OF = """
CREATE FUNCTION blocklist_as_of(at timestamptz)
RETURNS TABLE (account_sid blocklist_key, channel blocklist_key, mobile blocklist_key,
               state text, added_at timestamptz,
               added_not_before timestamptz, removed_not_before timestamptz,
               removed_at timestamptz, initial_load boolean, added_run_id bigint,
               removed_run_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT p.account_sid::blocklist_key, p.channel::blocklist_key, p.mobile::blocklist_key, 'yes',
       p.added_at, p.added_not_before,
       p.removed_not_before, p.removed_at, p.initial_load, p.added_run_id, p.removed_run_id
FROM blocklist_periods p
WHERE p.added_at <= at
  AND at < CASE WHEN p.removed_at IS NULL THEN COALESCE(p.proven_present_at, 'infinity')
                ELSE COALESCE(p.removed_not_before, p.added_at) END
UNION ALL
SELECT d.account_sid::blocklist_key, d.channel::blocklist_key, d.mobile::blocklist_key, 'uncertain',
       d.added_at, d.added_not_before, d.removed_not_before, d.removed_at, d.initial_load,
       d.added_run_id, d.removed_run_id
FROM (
    SELECT DISTINCT ON (u.account_sid, u.channel, u.mobile)
           u.account_sid, u.channel, u.mobile, u.added_at, u.added_not_before,
           u.removed_not_before, u.removed_at, u.initial_load, u.added_run_id, u.removed_run_id
    FROM blocklist_periods u
    WHERE COALESCE(u.added_not_before, '-infinity') <= at
      AND at < COALESCE(u.removed_at, 'infinity')
      AND NOT (u.added_at <= at
               AND at < CASE WHEN u.removed_at IS NULL THEN COALESCE(u.proven_present_at, 'infinity')
                             ELSE COALESCE(u.removed_not_before, u.added_at) END)
      AND NOT EXISTS (
          SELECT 1 FROM blocklist_periods y
          WHERE y.mobile = u.mobile AND y.account_sid = u.account_sid AND y.channel = u.channel
            AND y.added_at <= at
            AND at < CASE WHEN y.removed_at IS NULL THEN COALESCE(y.proven_present_at, 'infinity')
                          ELSE COALESCE(y.removed_not_before, y.added_at) END)
    ORDER BY u.account_sid, u.channel, u.mobile, u.added_at DESC
) d
$$"""

DAILY_CHANGES_IN = f"""
CREATE FUNCTION blocklist_daily_changes_in(tz text)
RETURNS TABLE (day date, account_sid text, channel text, added bigint, removed bigint, net bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
{_CHANGES_PG.format(tz="tz")}
$$"""

DAILY_SIZE_IN = f"""
CREATE FUNCTION blocklist_daily_size_in(tz text)
RETURNS TABLE (day date, account_sid text, channel text, entries bigint, swept boolean)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
{_SIZE_PG.format(tz="tz")}
$$"""

FUNCTIONS = {
    "blocklist_as_of(timestamptz)": (
        AS_OF,
        "Who was blocklisted at an instant: one row per account, channel and number listed "
        "(state yes) or possibly listed (state uncertain: the instant falls inside a window the "
        "sweeps could not narrow) at it, with the stretch that says so. A number not returned "
        "was not blocklisted then, as far as the sync knew.",
    ),
    "blocklist_daily_changes_in(text)": (
        DAILY_CHANGES_IN,
        "blocklist_daily_changes with days in the given time zone, e.g. 'Asia/Kolkata'.",
    ),
    "blocklist_daily_size_in(text)": (
        DAILY_SIZE_IN,
        "blocklist_daily_size with days in the given time zone, e.g. 'Asia/Kolkata'.",
    ),
}

# -- what 0008 had, for the downgrade ----------------------------------------------------------

# The entries table of 0008 had the comments its view now carries.
_ENTRIES_COMMENTS = ENTRIES.columns


def _in_schema(definition: str, schema: str) -> str:
    """A function's SQL with its tables and type named in ``schema``: a function body is
    resolved on each caller's search path (a view's is not), and a BI login whose path lacks an
    install's own schema (BLOCKLIST_SYNC_SCHEMA) must still read that install. Not ``SET
    search_path`` on the function: that would stop the planner inlining it."""
    quoted = '"' + schema.replace('"', '""') + '"'
    return re.sub(r"\b(blocklist_periods|sync_runs|blocklist_key)\b", rf"{quoted}.\1", definition)


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    _check_entries_match_events()
    # The views that read what changes are dropped first, and made again at the end.
    op.drop_view(migration("0008").SYNC_HEALTH)
    op.drop_view(migration("0005").BY_COUNTRY)
    op.drop_view(migration("0005").DAILY_CHANGES_BY_COUNTRY)
    if postgres:
        op.drop_view(migration("0005").DAILY_SIZE)
    op.drop_view(migration("0002").DAILY_CHANGES)
    op.drop_view(migration("0002").INTERVALS)
    _create_periods(with_primary_key=not postgres)
    _fill_periods()
    _create_periods_indexes(primary_key=postgres)
    if postgres:
        for name in ("st_blocklist_entries_head", "st_blocklist_events_day", "st_blocklist_events_day_head"):
            op.execute(f"DROP STATISTICS IF EXISTS {name}")
        op.execute("DROP INDEX IF EXISTS ix_blocklist_events_account_day")
    op.drop_table("blocklist_entries")
    op.drop_index("ix_blocklist_events_mobile", table_name="blocklist_events")
    op.drop_index("ix_blocklist_events_account_channel_detected", table_name="blocklist_events")
    op.create_index(
        "ix_blocklist_events_detected", "blocklist_events", ["detected_at"], postgresql_using="brin"
    )
    if postgres:
        # The country views group a million numbers into a few thousand heads.
        op.execute(
            "CREATE STATISTICS st_blocklist_periods_head (ndistinct) ON account_sid, channel, "
            f"(substr(mobile, 1, {MAX_PREFIX_LENGTH})) FROM blocklist_periods"
        )
        op.execute(KEY_DOMAIN)
        # The install's own schema (BLOCKLIST_SYNC_SCHEMA, kept beside Alembic's version
        # table), else the one the session creates in.
        schema = (
            op.get_context().opts.get("version_table_schema")
            or bind.execute(sa.text("SELECT current_schema()")).scalar_one()
        )
        for signature, (definition, comment) in FUNCTIONS.items():
            op.execute(_in_schema(definition, schema))
            op.execute(f"COMMENT ON FUNCTION {signature} IS {sql_literal(comment)}")
    for view in (ENTRIES, INTERVALS, DAILY_CHANGES, DAILY_CHANGES_BY_COUNTRY):
        op.create_view(view)
    if postgres:  # SQLite keeps 0005's, which reads the same runs without the functions
        op.create_view(DAILY_SIZE)
    op.create_view(migration("0005").BY_COUNTRY)
    op.create_view(migration("0008").SYNC_HEALTH)
    if postgres:
        op.execute("ANALYZE blocklist_periods")


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.drop_view(migration("0008").SYNC_HEALTH)
    op.drop_view(migration("0005").BY_COUNTRY)
    for view in (DAILY_CHANGES_BY_COUNTRY, DAILY_CHANGES, INTERVALS, ENTRIES):
        op.drop_view(view)
    if postgres:
        op.drop_view(DAILY_SIZE)
    if postgres:
        for signature in FUNCTIONS:
            op.execute(f"DROP FUNCTION {signature}")
        op.execute("DROP DOMAIN blocklist_key")
        op.execute("DROP STATISTICS IF EXISTS st_blocklist_periods_head")
    op.drop_index("ix_blocklist_events_detected", table_name="blocklist_events")
    c = _ENTRIES_COMMENTS
    op.create_table(
        "blocklist_entries",
        sa.Column("account_sid", _key(), nullable=False, comment=c["account_sid"]),
        sa.Column("channel", _key(), nullable=False, comment=c["channel"]),
        sa.Column("mobile", _key(), nullable=False, comment=c["mobile"]),
        sa.Column("channel_type", sa.Text(), nullable=True, comment=c["channel_type"]),
        sa.Column("added_at", _time(), nullable=False, comment=c["added_at"]),
        sa.Column("added_run_id", _id(), nullable=False, comment=c["added_run_id"]),
        sa.Column("proven_present_at", _time(), nullable=True, comment=c["proven_present_at"]),
        sa.PrimaryKeyConstraint("account_sid", "channel", "mobile", name=op.f("pk_blocklist_entries")),
        comment="The current blocklist: one row per number blocklisted now, per account and channel.",
    )
    op.execute(f"""
        INSERT INTO blocklist_entries ({", ".join(c)})
        SELECT {", ".join(c)} FROM blocklist_periods WHERE {_OPEN}
        ORDER BY account_sid, channel, mobile""")
    op.create_index("ix_blocklist_entries_mobile", "blocklist_entries", ["mobile"])
    op.create_index(
        "ix_blocklist_entries_unproven",
        "blocklist_entries",
        ["account_sid", "channel"],
        postgresql_where=sa.text("proven_present_at IS NOT NULL"),
        sqlite_where=sa.text("proven_present_at IS NOT NULL"),
    )
    op.create_index("ix_blocklist_events_mobile", "blocklist_events", ["mobile", "detected_at"])
    op.create_index(
        "ix_blocklist_events_account_channel_detected",
        "blocklist_events",
        ["account_sid", "channel", "detected_at"],
    )
    if postgres:
        op.execute(migration("0005").PG_INDEX)
        if (bind.dialect.server_version_info or ()) >= (14,):
            for name, target in migration("0005").PG_STATISTICS.items():
                op.execute(f"CREATE STATISTICS {name} (ndistinct) ON " + target.format(n=MAX_PREFIX_LENGTH))
    op.drop_table("blocklist_periods")
    op.create_view(migration("0002").INTERVALS)
    op.create_view(migration("0002").DAILY_CHANGES)
    if postgres:
        op.create_view(migration("0005").DAILY_SIZE)
    op.create_view(migration("0005").BY_COUNTRY)
    op.create_view(migration("0005").DAILY_CHANGES_BY_COUNTRY)
    op.create_view(migration("0008").SYNC_HEALTH)
