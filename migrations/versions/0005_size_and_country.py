"""Size over time and country: phone_prefixes, blocklist_daily_size, blocklist_by_country,
blocklist_daily_changes_by_country.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 04:00:00.000000

Like 0002's views these are public contract for dashboards, exist on SQLite too with the same
names and columns, and differ by dialect only in the UTC day, the calendar (generate_series vs.
a recursive CTE) and the comments. Each is a replaceable object (sync/views.py): a later
migration changes one by naming it, e.g. ``replaces="0005.DAILY_SIZE"``.

blocklist_daily_size reads sync_runs, not blocklist_events: every succeeded sweep records how
many numbers its channel held when it committed (entries_seen, checked against the applied row
counts), so the size on a day is the count of the last sweep that committed by its end. That
reads one row per sweep instead of millions of events, and a day without a sweep carries the
last count forward, as its column comment says.

The country views place each number by its longest prefix in phone_prefixes (generated from
phonenumbers' metadata, see sync/regions.py). They first count numbers per leading
MAX_PREFIX_LENGTH characters, then place each distinct head once: thousands of prefix look-ups
instead of one per number, so the sweep pays nothing and a query pays little.
"""

from __future__ import annotations

import sqlalchemy as sa

from sync.regions import load
from sync.views import View, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Frozen here (sync.regions.MAX_PREFIX_LENGTH may grow with a regenerated table; a migration
# that loads longer prefixes must recreate the country views).
MAX_PREFIX_LENGTH = 10

# The last succeeded sweep committed on each UTC day, and the day of the next one; each such
# day then stands for itself and every day up to the next sweep's (or today). The calendar is
# generate_series on PostgreSQL and a recursive CTE on SQLite.
DAILY_SIZE = View(
    "blocklist_daily_size",
    """
WITH {recursive}swept AS (
    SELECT account_sid, channel, {run_day} AS day, entries_seen,
           ROW_NUMBER() OVER (PARTITION BY account_sid, channel, {run_day}
                              ORDER BY finished_at DESC, id DESC) AS newest
    FROM sync_runs
    WHERE status = 'succeeded'
), spans AS (
    SELECT account_sid, channel, day, entries_seen,
           LEAD(day) OVER (PARTITION BY account_sid, channel ORDER BY day) AS next_day
    FROM swept
    WHERE newest = 1
){calendar}
""",
    comment=(
        "Per account, channel and UTC day, from the day of the channel's first succeeded "
        "sweep to today, gap-free: how many numbers were blocklisted at the end of the day, "
        "as the last succeeded sweep committed by then counted them."
    ),
    columns={
        "day": "UTC calendar day.",
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel: sms, whatsapp or voice.",
        "entries": "Numbers blocklisted at the end of the day: sync_runs.entries_seen of the "
        "last succeeded sweep committed on or before that day. On a day without a "
        "succeeded sweep (swept false) this is the last known size carried "
        "forward; the list may have changed unseen.",
        "swept": "True when a succeeded sweep committed that day; false when entries is "
        "carried forward from an earlier day.",
    },
    expressions={
        "postgresql": {
            "recursive": "",
            "run_day": "(finished_at AT TIME ZONE 'UTC')::date",
            "calendar": """
SELECT CAST(d AS date) AS day, s.account_sid, s.channel, s.entries_seen AS entries,
       CAST(d AS date) = s.day AS swept
FROM spans s
CROSS JOIN LATERAL generate_series(
    s.day, COALESCE(s.next_day - 1, (now() AT TIME ZONE 'UTC')::date), interval '1 day') AS d
""",
        },
        "sqlite": {
            "recursive": "RECURSIVE ",
            "run_day": "date(finished_at)",
            "calendar": """, calendar(day, account_sid, channel, entries, swept, next_day) AS (
    SELECT day, account_sid, channel, entries_seen, 1, next_day FROM spans
    UNION ALL
    SELECT date(day, '+1 day'), account_sid, channel, entries, 0, next_day FROM calendar
    WHERE date(day, '+1 day') < COALESCE(next_day, date('now', '+1 day'))
)
SELECT day, account_sid, channel, entries, swept FROM calendar
""",
        },
    },
)

# Where each head (a number's first MAX_PREFIX_LENGTH characters) belongs: its longest prefix
# in phone_prefixes, found by one equality join per prefix length, longest first. Hash joins
# against a few hundred rows; far cheaper than a correlated look-up per head.
_LENGTHS = range(MAX_PREFIX_LENGTH, 1, -1)
_LONGEST_PREFIX = "COALESCE({}) AS prefix".format(", ".join(f"p{n}.prefix" for n in _LENGTHS))
_PREFIX_JOINS = "\n    ".join(
    f"LEFT JOIN phone_prefixes p{n} ON p{n}.prefix = substr(h.head, 1, {n})" for n in _LENGTHS
)

_REGION = (
    "ISO 3166 region of the numbers: decided by the number where its digits do (+1 416 "
    "is CA, +1 876 is JM, +44 1534 is JE), else the calling code's main region (US for "
    "+1, GB for +44). NULL for non-geographic calling codes (+800, +882, ...) and for "
    "numbers no calling code matches."
)
_CALLING_CODE = "Country calling code of the numbers (1 for +1); NULL when none matches."

BY_COUNTRY = View(
    "blocklist_by_country",
    f"""
SELECT placed.account_sid, placed.channel, p.region, p.calling_code,
       SUM(placed.entries) AS entries
FROM (
    SELECT h.account_sid, h.channel, h.entries, {_LONGEST_PREFIX}
    FROM (
        SELECT account_sid, channel, substr(mobile, 1, {MAX_PREFIX_LENGTH}) AS head,
               COUNT(*) AS entries
        FROM blocklist_entries
        GROUP BY account_sid, channel, substr(mobile, 1, {MAX_PREFIX_LENGTH})
    ) h
    {_PREFIX_JOINS}
) placed
LEFT JOIN phone_prefixes p ON p.prefix = placed.prefix
GROUP BY placed.account_sid, placed.channel, p.region, p.calling_code
""",
    comment=(
        "Per account, channel and country: how many numbers are blocklisted now "
        "(blocklist_entries), placed by their longest prefix in phone_prefixes."
    ),
    columns={
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel: sms, whatsapp or voice.",
        "region": _REGION,
        "calling_code": _CALLING_CODE,
        "entries": "Numbers of this country blocklisted now on this channel.",
    },
)

# Counted like blocklist_daily_changes (initial load left out), per country.
DAILY_CHANGES_BY_COUNTRY = View(
    "blocklist_daily_changes_by_country",
    f"""
SELECT placed.day, placed.account_sid, placed.channel, p.region, p.calling_code,
       SUM(placed.added) AS added, SUM(placed.removed) AS removed,
       SUM(placed.added) - SUM(placed.removed) AS net
FROM (
    SELECT h.day, h.account_sid, h.channel, h.added, h.removed, {_LONGEST_PREFIX}
    FROM (
        SELECT {{day}} AS day, account_sid, channel,
               substr(mobile, 1, {MAX_PREFIX_LENGTH}) AS head,
               COUNT(CASE WHEN change = 'added' THEN 1 END) AS added,
               COUNT(CASE WHEN change = 'removed' THEN 1 END) AS removed
        FROM blocklist_events
        WHERE NOT (change = 'added' AND initial_load)
        GROUP BY {{day}}, account_sid, channel, substr(mobile, 1, {MAX_PREFIX_LENGTH})
    ) h
    {_PREFIX_JOINS}
) placed
LEFT JOIN phone_prefixes p ON p.prefix = placed.prefix
GROUP BY placed.day, placed.account_sid, placed.channel, p.region, p.calling_code
""",
    comment=(
        "blocklist_daily_changes broken down by country: per UTC day (of detected_at), "
        "account, channel and country, additions (initial load excluded), removals and net. "
        "Days without a change have no row."
    ),
    columns={
        "day": "UTC calendar day on which the sweeps detected the changes (detected_at).",
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel: sms, whatsapp or voice.",
        "region": _REGION,
        "calling_code": _CALLING_CODE,
        "added": "Additions of this country's numbers detected that day, initial load excluded.",
        "removed": "Removals of this country's numbers detected that day.",
        "net": "added - removed.",
    },
    expressions={
        "postgresql": {"day": "(detected_at AT TIME ZONE 'UTC')::date"},
        "sqlite": {"day": "date(detected_at)"},
    },
)

VIEWS = (DAILY_SIZE, BY_COUNTRY, DAILY_CHANGES_BY_COUNTRY)


# PostgreSQL only, for the 90-day questions on a year of history (README, Performance): an
# account's events by UTC day, indexed, so "account_sid = A AND day > today - 90" reads 90 days
# of that account's events, not the year nor other accounts' (one more index entry per event a
# sweep writes); and planner statistics on the groupings the
# views use, so the planner knows a million numbers share a few thousand heads (without them it
# expects a million groups and spends longer compiling the query than running it).
PG_INDEX = (
    "CREATE INDEX ix_blocklist_events_account_day ON blocklist_events "
    "(account_sid, ((detected_at AT TIME ZONE 'UTC')::date))"
)
PG_STATISTICS = {  # expressions in statistics need PostgreSQL 14
    "st_blocklist_entries_head": "account_sid, channel, (substr(mobile, 1, {n})) FROM blocklist_entries",
    "st_blocklist_events_day": "((detected_at AT TIME ZONE 'UTC')::date), account_sid, channel "
    "FROM blocklist_events",
    "st_blocklist_events_day_head": "((detected_at AT TIME ZONE 'UTC')::date), account_sid, "
    "channel, (substr(mobile, 1, {n})) FROM blocklist_events",
}


def upgrade() -> None:
    prefixes = op.create_table(
        "phone_prefixes",
        sa.Column(
            "prefix",
            sa.Text(),
            nullable=False,
            comment="E.164 prefix: '+', the calling code, and for a shared calling code "
            "the national digits that decide the country.",
        ),
        sa.Column(
            "calling_code",
            sa.Integer(),
            nullable=False,
            comment="Country calling code the prefix belongs to.",
        ),
        sa.Column(
            "region",
            sa.Text(),
            nullable=True,
            comment="ISO 3166 region of numbers whose longest matching prefix this is; "
            "NULL for non-geographic calling codes.",
        ),
        sa.PrimaryKeyConstraint("prefix", name=op.f("pk_phone_prefixes")),
        comment="Reference data generated from phonenumbers' metadata (sync/regions.py): a "
        "number belongs to the region of its longest matching prefix.",
    )
    op.bulk_insert(prefixes, load())
    for view in VIEWS:
        op.create_view(view)
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(PG_INDEX)
        if (bind.dialect.server_version_info or ()) >= (14,):
            for name, target in PG_STATISTICS.items():
                op.execute(f"CREATE STATISTICS {name} (ndistinct) ON " + target.format(n=MAX_PREFIX_LENGTH))


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.drop_view(view)
    if op.get_bind().dialect.name == "postgresql":
        for name in PG_STATISTICS:
            op.execute(f"DROP STATISTICS IF EXISTS {name}")
        op.execute("DROP INDEX IF EXISTS ix_blocklist_events_account_day")
    op.drop_table("phone_prefixes")
