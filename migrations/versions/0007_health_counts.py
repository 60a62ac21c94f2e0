"""blocklist_sync_health gains the last sweep's counts; the view becomes a replaceable object.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 21:30:00.000000

``blocklist-sync status`` showed each channel's health from the view but its last sweep's
pages, additions, removals and rejected rows from a join of its own. Now the view carries them
(``last_run_pages``, ``last_run_added``, ``last_run_removed``, ``last_run_rejected``, appended
after the existing columns, so no query that names columns changes), and ``status``, the
metrics and the dashboards read one definition, columns and all.

This is the first view change made the replaceable-objects way (sync/views.py): the new
version is stated once, below, and names the version it replaces, which downgrading restores
from 0004's own file.
"""

from __future__ import annotations

from sync.views import View, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The last sweep is the highest id among runs that are not dry runs: dry runs are reviews, not
# sweeps, so a dry run after a held sweep leaves the channel held.
SYNC_HEALTH = View(
    "blocklist_sync_health",
    """
WITH runs AS (
    SELECT id, account_sid, channel, status, started_at, finished_at, error,
           pages_fetched, added, removed, rejected,
           ROW_NUMBER() OVER (PARTITION BY account_sid, channel ORDER BY id DESC) AS newest
    FROM sync_runs
    WHERE status <> 'dry_run'
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
       COALESCE(counts.entries, 0) AS entries,
       last.pages_fetched AS last_run_pages,
       last.added AS last_run_added,
       last.removed AS last_run_removed,
       last.rejected AS last_run_rejected
FROM runs last
LEFT JOIN successes ok
       ON ok.account_sid = last.account_sid AND ok.channel = last.channel AND ok.newest = 1
LEFT JOIN counts
       ON counts.account_sid = last.account_sid AND counts.channel = last.channel
WHERE last.newest = 1
""",
    comment=(
        "Per account and channel ever swept: the last sweep whatever its outcome (dry runs "
        "left out), the last succeeded sweep and its age, and how many numbers are "
        "blocklisted now. For freshness alerts and dashboard footers; `blocklist-sync "
        "status` and the metrics read this view."
    ),
    columns={
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel: sms, whatsapp or voice.",
        "last_run_id": "sync_runs.id of the last sweep, whatever its status; dry runs are left "
        "out (they review, they do not sweep).",
        "last_run_status": "Status of the last sweep, dry runs left out: running, succeeded, "
        "failed, held or cancelled (see sync_runs.status). cancelled is "
        "neither a success nor a failure: judge freshness by "
        "last_success_age.",
        "last_run_started_at": "When the last sweep started (UTC).",
        "last_run_finished_at": "When the last sweep ended (UTC); NULL while running.",
        "last_run_error": "Why the last sweep failed, was held or was cancelled; NULL otherwise.",
        "last_success_run_id": "sync_runs.id of the last succeeded sweep; NULL if none yet.",
        "last_success_at": "When the last succeeded sweep committed (UTC): the tables are "
        "true as of this moment. NULL if none yet.",
        "last_success_age": "now() - last_success_at, an interval: how stale the data is. "
        "NULL if no sweep has succeeded yet.",
        "entries": "Numbers blocklisted now on this channel (rows in blocklist_entries).",
        "last_run_pages": "Listing pages the last sweep fetched (sync_runs.pages_fetched).",
        "last_run_added": "Numbers the last sweep added (held: that it would have added); 0 "
        "when it applied nothing and found no diff.",
        "last_run_removed": "Numbers the last sweep removed (held: that it would have "
        "removed); 0 when it applied nothing and found no diff.",
        "last_run_rejected": "Rows the last sweep's listing held that could not be a phone "
        "number; counted, never stored (see sync_runs.rejected).",
    },
    expressions={
        "postgresql": {"age": "now() - ok.finished_at"},
        # SQLite has no interval type: the age is a number of seconds there.
        "sqlite": {"age": "(julianday('now') - julianday(ok.finished_at)) * 86400.0"},
    },
)


def upgrade() -> None:
    op.replace_view(SYNC_HEALTH, replaces="0004.SYNC_HEALTH")


def downgrade() -> None:
    op.replace_view(SYNC_HEALTH, replace_with="0004.SYNC_HEALTH")
