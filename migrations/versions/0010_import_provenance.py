"""Provenance of backfills from dated exports: a run row says which file it imported.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 10:00:00.000000

``blocklist-sync import`` turns dated blocklist exports (CSV, JSON, gzip) into history, each
file one run with trigger ``backfill`` whose ``started_at`` and ``finished_at`` are the time
the export was taken: the one place a stored time is not the database's clock. The run row
records where that history came from:

- ``sync_runs.source_file``, ``source_bytes``, ``source_sha256``: the file's name, size and
  SHA-256 as imported. NULL for sweeps. The same file (SHA-256), account, channel and time
  imported again is recognised by them and skipped.
- ``sync_runs.rewritten``: for an import placed before a channel's earliest run, how many of
  that run's stretches it rewrote (an earlier start for numbers the export lists, a real
  addition window for numbers it does not). NULL for every other run.
- ``blocklist_sync_health`` leaves imports out: an export from last year is no sweep, and must
  not become a channel's "last sweep" (its age would raise a freshness alarm). Imports still
  count everywhere history is read: stretches, events, ``blocklist_as_of``, the daily views.

Downgrade drops the columns and restores the view as 0008 made it; the history imports wrote stays (rows of
``blocklist_periods`` and ``blocklist_events`` like any sweep's).
"""

from __future__ import annotations

import sqlalchemy as sa

from sync.views import View, op, views_set_aside

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COMMENTS = {
    "source_file": "Imports of dated exports only (trigger backfill): the name of the file "
    "imported, without its directory. NULL for sweeps.",
    "source_bytes": "Imports only: the file's size in bytes, as read (compressed if it was).",
    "source_sha256": "Imports only: SHA-256 of the file's bytes, hex. The same file, account, "
    "channel and time is never imported twice.",
    "rewritten": "Imports placed before a channel's earliest run only: stretches of that run "
    "this import rewrote (an earlier start for numbers the export lists; an addition window for "
    "numbers it does not). NULL otherwise.",
}

SYNC_HEALTH = View(
    "blocklist_sync_health",
    """
WITH runs AS (
    SELECT id, account_sid, channel, status, started_at, finished_at, error,
           pages_fetched, added, removed, rejected, unconfirmed, listing_complete,
           ROW_NUMBER() OVER (PARTITION BY account_sid, channel ORDER BY id DESC) AS newest
    FROM sync_runs
    WHERE status <> 'dry_run' AND source_sha256 IS NULL
), successes AS (
    SELECT id, account_sid, channel, finished_at,
           ROW_NUMBER() OVER (PARTITION BY account_sid, channel ORDER BY id DESC) AS newest
    FROM sync_runs
    WHERE status = 'succeeded' AND source_sha256 IS NULL
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
       last.rejected AS last_run_rejected,
       last.unconfirmed AS last_run_unconfirmed,
       last.listing_complete AS last_run_listing_complete
FROM runs last
LEFT JOIN successes ok
       ON ok.account_sid = last.account_sid AND ok.channel = last.channel AND ok.newest = 1
LEFT JOIN counts
       ON counts.account_sid = last.account_sid AND counts.channel = last.channel
WHERE last.newest = 1
""",
    comment=(
        "Per account and channel ever swept: the last sweep whatever its outcome (dry runs "
        "and imports of dated exports left out), the last succeeded sweep and its age, and how "
        "many numbers are blocklisted now. For freshness alerts and dashboard footers; `blocklist-sync "
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
        "last_run_started_at": "When the last sweep started (UTC, the database's clock).",
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
        "last_run_unconfirmed": "Held numbers the last sweep did not list and could not prove "
        "removed; kept as blocklisted (see sync_runs.unconfirmed).",
        "last_run_listing_complete": "Whether the last sweep's listing was complete (see "
        "sync_runs.listing_complete); NULL if not judged.",
    },
    expressions={
        "postgresql": {"age": "now() - ok.finished_at"},
        # SQLite has no interval type: the age is a number of seconds there.
        "sqlite": {"age": "(julianday('now') - julianday(ok.finished_at)) * 86400.0"},
    },
)


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("source_file", sa.Text(), nullable=True, comment=COMMENTS["source_file"]))
        batch.add_column(
            sa.Column("source_bytes", sa.BigInteger(), nullable=True, comment=COMMENTS["source_bytes"])
        )
        batch.add_column(
            sa.Column("source_sha256", sa.Text(), nullable=True, comment=COMMENTS["source_sha256"])
        )
        batch.add_column(
            sa.Column("rewritten", sa.BigInteger(), nullable=True, comment=COMMENTS["rewritten"])
        )
    op.replace_view(SYNC_HEALTH, replaces="0008.SYNC_HEALTH")


def downgrade() -> None:
    op.replace_view(SYNC_HEALTH, replace_with="0008.SYNC_HEALTH")
    # SQLite drops a column by rebuilding the table, which fails while a view names it.
    with views_set_aside(op), op.batch_alter_table("sync_runs") as batch:
        for name in reversed(COMMENTS):
            batch.drop_column(name)
