"""Run status 'cancelled'; blocklist_sync_health judges the last real sweep.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 03:40:00.000000

An operator stopping a run (Ctrl-C, SIGTERM from systemd or Kubernetes) is not a broken API:
such a run is recorded as ``cancelled`` (nothing applied), which is neither a success nor a
failure. The CHECK constraint on ``sync_runs.status`` is widened for it.

``blocklist_sync_health`` now picks its last run the way ``blocklist-sync status`` does:
dry runs are reviews, not sweeps, so a dry run after a held sweep no longer makes the channel
look healthy. Its columns are unchanged. SYNC_HEALTH below is that version, a replaceable
object (sync/views.py): it replaces ``0002.SYNC_HEALTH``, which downgrading restores, and a
later migration replaces it by name, ``replaces="0004.SYNC_HEALTH"``.

SQLite: the views name ``sync_runs``, and Alembic's batch mode (copy, drop, rename) fails the
rename while they exist, so they are set aside around the change of the constraint.
"""

from __future__ import annotations

from sync.sql import sql_literal
from sync.views import View, op, views_set_aside

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATUSES_BEFORE = "status IN ('running', 'succeeded', 'failed', 'held', 'dry_run')"
STATUSES_AFTER = "status IN ('running', 'succeeded', 'failed', 'held', 'dry_run', 'cancelled')"

STATUS_COMMENT = (
    "running; succeeded (changes applied); failed (nothing applied, see error); "
    "held (safety guard, nothing applied); dry_run (nothing applied); cancelled "
    "(stopped by an operator or a signal, nothing applied)."
)
STATUS_COMMENT_BEFORE = (
    "running; succeeded (changes applied); failed (nothing applied, see "
    "error); held (safety guard, nothing applied); dry_run (nothing applied)."
)

# The last sweep is the highest id among runs that are not dry runs.
SYNC_HEALTH = View(
    "blocklist_sync_health",
    """
WITH runs AS (
    SELECT id, account_sid, channel, status, started_at, finished_at, error,
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
        "last_run_status": "Status of the last sweep, dry runs left out: running, succeeded, "
        "failed, held or cancelled (see sync_runs.status). cancelled is "
        "neither a success nor a failure: judge freshness by last_success_age.",
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


def _allow_statuses(condition: str, comment: str) -> None:
    """Replace the CHECK constraint on ``sync_runs.status`` (and, on PostgreSQL, its comment)."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_sync_runs_status"), "sync_runs", type_="check")
        op.create_check_constraint("status", "sync_runs", condition)
        op.execute(f"COMMENT ON COLUMN sync_runs.status IS {sql_literal(comment)}")
        return
    with views_set_aside(op), op.batch_alter_table("sync_runs") as batch:
        batch.drop_constraint(op.f("ck_sync_runs_status"), type_="check")
        batch.create_check_constraint("status", condition)


def upgrade() -> None:
    _allow_statuses(STATUSES_AFTER, STATUS_COMMENT)
    op.replace_view(SYNC_HEALTH, replaces="0002.SYNC_HEALTH")


def downgrade() -> None:
    op.replace_view(SYNC_HEALTH, replace_with="0002.SYNC_HEALTH")
    # A cancelled run applied nothing, as a failed one: downgrading keeps it as failed.
    op.execute("UPDATE sync_runs SET status = 'failed' WHERE status = 'cancelled'")
    _allow_statuses(STATUSES_BEFORE, STATUS_COMMENT_BEFORE)
