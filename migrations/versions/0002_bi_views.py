"""BI views: blocklist_intervals, blocklist_daily_changes, blocklist_sync_health.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 18:00:00.000000

The views are public contract for dashboards, like the tables: names, columns and meanings
change only with a migration and a note to analysts. They are plain views over the tables, so
they always reflect the latest sweep and need no refresh.

PostgreSQL is where dashboards read; the views also exist on SQLite (demo, trial) with the same
names and columns, built from the same window-function SQL. Only two expressions differ by
dialect: the UTC day (``date`` vs. ``AT TIME ZONE 'UTC'``) and the age of the last success
(SQLite has no interval type, so there it is a number of seconds); SQLite has no comments.

Each view is a replaceable object (sync/views.py): the version below is the one this migration
makes, and a later migration that changes a view names it, e.g. ``replaces="0002.SYNC_HEALTH"``.
A later migration that alters a column these views read sets them aside around the change
(``views_set_aside``): PostgreSQL refuses to change the type of a column a view uses, and on
SQLite Alembic's batch mode (copy, drop, rename) fails the rename while a view names the table.
"""

from __future__ import annotations

from sync.views import View, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Each 'added' event is paired with the next event of the same (account, channel, mobile), in
# commit order. Kaleyra's list for a channel holds a number at most once, so the next event is its
# 'removed' (or there is none yet: still blocklisted). A number removed and added again gets a new
# 'added' event, hence a new row here. Filters on account_sid, channel or mobile are pushed below
# the window by PostgreSQL, so a lookup of one number uses ix_blocklist_events_mobile.
INTERVALS = View(
    "blocklist_intervals",
    """
SELECT account_sid,
       channel,
       mobile,
       detected_at AS blocked_from,
       not_before AS blocked_from_not_before,
       CASE WHEN next_change = 'removed' THEN next_detected_at END AS unblocked_at,
       CASE WHEN next_change = 'removed' THEN next_not_before END AS unblocked_not_before,
       initial_load
FROM (
    SELECT e.account_sid, e.channel, e.mobile, e.change, e.detected_at, e.not_before,
           e.initial_load,
           LEAD(e.change) OVER w AS next_change,
           LEAD(e.detected_at) OVER w AS next_detected_at,
           LEAD(e.not_before) OVER w AS next_not_before
    FROM blocklist_events e
    WINDOW w AS (PARTITION BY e.account_sid, e.channel, e.mobile ORDER BY e.detected_at, e.id)
) paired
WHERE change = 'added'
""",
    comment=(
        "One row per stretch of time a number was blocklisted on a channel, from "
        "blocklist_events: each added event paired with the next removed event of the same "
        "account, channel and mobile. A number removed and added again has one row per stretch."
    ),
    columns={
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel the number was blocklisted on: sms, whatsapp or voice.",
        "mobile": "Number in E.164, as Kaleyra gave it.",
        "blocked_from": "detected_at of the added event: when the sweep that first saw the "
        "number listed committed (UTC). The addition happened after "
        "blocked_from_not_before and no later than this; the sweeps cannot "
        "tell closer.",
        "blocked_from_not_before": "not_before of the added event: start of the previous "
        "succeeded sweep (UTC); the number was added after this. "
        "NULL for the initial load: blocklisted before the sync "
        "began, since when is unknown.",
        "unblocked_at": "detected_at of the removed event: when the sweep that first missed "
        "the number committed (UTC). The removal happened after "
        "unblocked_not_before and no later than this. NULL while the "
        "number is still blocklisted.",
        "unblocked_not_before": "not_before of the removed event: start of the previous "
        "succeeded sweep (UTC), which still saw the number listed; "
        "the removal happened after this. NULL while still "
        "blocklisted.",
        "initial_load": "True when the stretch began with the first succeeded sweep of the "
        "channel: the number was already blocklisted when the sync began.",
    },
)

# Counts events, so net is exactly how much the channel's list grew or shrank that day. The
# initial load is left out: those numbers were blocklisted before the sync began, not that day.
DAILY_CHANGES = View(
    "blocklist_daily_changes",
    """
SELECT {day} AS day,
       account_sid,
       channel,
       COUNT(CASE WHEN change = 'added' THEN 1 END) AS added,
       COUNT(CASE WHEN change = 'removed' THEN 1 END) AS removed,
       COUNT(CASE WHEN change = 'added' THEN 1 END)
           - COUNT(CASE WHEN change = 'removed' THEN 1 END) AS net
FROM blocklist_events
WHERE NOT (change = 'added' AND initial_load)
GROUP BY {day}, account_sid, channel
""",
    comment=(
        "Per UTC day (of detected_at), account and channel: additions, removals and net change, "
        "counted from blocklist_events. The initial load is not counted; days without a change "
        "have no row."
    ),
    columns={
        "day": "UTC calendar day on which the sweeps detected the changes (detected_at); a "
        "change detected just after midnight may have happened the day before "
        "(see not_before in blocklist_events).",
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel: sms, whatsapp or voice.",
        "added": "Additions detected that day, initial load excluded (a number added twice "
        "that day counts twice).",
        "removed": "Removals detected that day.",
        "net": "added - removed: how much the channel's blocklist grew (negative: shrank) that day.",
    },
    expressions={
        "postgresql": {"day": "(detected_at AT TIME ZONE 'UTC')::date"},
        # SQLite: date() reads the stored UTC text ('+00:00' or naive).
        "sqlite": {"day": "date(detected_at)"},
    },
)

# The last run is the highest id, as in `blocklist-sync status` (sync.store.channel_statuses).
SYNC_HEALTH = View(
    "blocklist_sync_health",
    """
WITH runs AS (
    SELECT id, account_sid, channel, status, started_at, finished_at, error,
           ROW_NUMBER() OVER (PARTITION BY account_sid, channel ORDER BY id DESC) AS newest
    FROM sync_runs
), successes AS (
    SELECT id, account_sid, channel, finished_at,
           ROW_NUMBER() OVER (PARTITION BY account_sid, channel ORDER BY id DESC) AS newest
    FROM sync_runs
    WHERE status = 'succeeded'
), counts AS (
    SELECT account_sid, channel, COUNT(*) AS entries
    FROM blocklist_entries
    GROUP BY account_sid, channel
)
SELECT last.account_sid,
       last.channel,
       last.id AS last_run_id,
       last.status AS last_run_status,
       last.started_at AS last_run_started_at,
       last.finished_at AS last_run_finished_at,
       last.error AS last_run_error,
       ok.id AS last_success_run_id,
       ok.finished_at AS last_success_at,
       {age} AS last_success_age,
       COALESCE(counts.entries, 0) AS entries
FROM runs last
LEFT JOIN successes ok
       ON ok.account_sid = last.account_sid AND ok.channel = last.channel AND ok.newest = 1
LEFT JOIN counts
       ON counts.account_sid = last.account_sid AND counts.channel = last.channel
WHERE last.newest = 1
""",
    comment=(
        "Per account and channel ever swept: the last sweep whatever its outcome, the last "
        "succeeded sweep and its age, and how many numbers are blocklisted now. For freshness "
        "alerts and dashboard footers."
    ),
    columns={
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel: sms, whatsapp or voice.",
        "last_run_id": "sync_runs.id of the last sweep, whatever its status.",
        "last_run_status": "Status of the last sweep: running, succeeded, failed, held or "
        "dry_run (see sync_runs.status).",
        "last_run_started_at": "When the last sweep started (UTC).",
        "last_run_finished_at": "When the last sweep ended (UTC); NULL while running.",
        "last_run_error": "Why the last sweep failed or was held; NULL otherwise.",
        "last_success_run_id": "sync_runs.id of the last succeeded sweep; NULL if none yet.",
        "last_success_at": "When the last succeeded sweep committed (UTC): the tables are "
        "true as of this moment. NULL if none yet.",
        "last_success_age": "now() - last_success_at, an interval: how stale the data is. "
        "NULL if no sweep has succeeded yet.",
        "entries": "Numbers blocklisted now on this channel (rows in blocklist_entries).",
    },
    expressions={
        "postgresql": {"age": "now() - ok.finished_at"},
        # SQLite has no interval type: the age is a number of seconds there.
        "sqlite": {"age": "(julianday('now') - julianday(ok.finished_at)) * 86400.0"},
    },
)

VIEWS = (INTERVALS, DAILY_CHANGES, SYNC_HEALTH)


def upgrade() -> None:
    for view in VIEWS:
        op.create_view(view)


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.drop_view(view)
