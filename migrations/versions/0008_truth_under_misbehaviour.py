"""What a sweep could prove: unconfirmed and rescued counts, complete listings, learned channel
codes, and windows that cannot end before they begin.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:00:00.000000

- ``sync_runs`` gains ``unconfirmed`` (held numbers whose removal the mobile filter could not
  prove: kept, counted, checked again), ``rescued`` (held numbers the listing skipped and the
  filter showed still blocklisted) and ``listing_complete`` (nothing shows the listing skipped
  a row). Only a complete listing proves a number absent: later additions take their
  ``not_before`` from the last one. Existing runs get NULL, "not judged", which the sync
  treats as it always did (complete).
- ``blocklist_entries.proven_present_at``: set only for numbers the last sweep could not prove,
  to the start of the last sweep that did; a removal found later takes it as its
  ``not_before``. A partial index keeps the few such rows cheap to find.
- ``blocklist_channel_types``: the channel_type codes each channel has carried, learned from
  applied listings, so a server that ignores ``channel`` is held instead of believed.
- ``blocklist_events`` gets CHECK (not_before <= detected_at). Both now come from the
  database's clock. On PostgreSQL the constraint is added NOT VALID: rows written before, by
  hosts whose clocks disagreed, are kept as they are (history is never rewritten) and only new
  rows are checked. SQLite cannot add a constraint in place, so the table is rebuilt (batch
  mode) around the views, which are set aside, before anything else changes: a row there that
  breaks it stops the upgrade at once, with nothing changed and a line saying what to do.
- ``blocklist_sync_health`` gains ``last_run_unconfirmed`` and ``last_run_listing_complete``,
  appended after the existing columns.
"""

from __future__ import annotations

import sqlalchemy as sa

from sync.views import View, op, views_set_aside

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

WINDOW = "not_before IS NULL OR not_before <= detected_at"

SYNC_HEALTH = View(
    "blocklist_sync_health",
    """
WITH runs AS (
    SELECT id, account_sid, channel, status, started_at, finished_at, error,
           pages_fetched, added, removed, rejected, unconfirmed, listing_complete,
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


def _key() -> sa.types.TypeEngine[str]:
    return sa.Text(collation="C") if op.get_bind().dialect.name == "postgresql" else sa.Text()


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if not postgres:
        # SQLite rebuilds the table to add the constraint, first of all, so that a row that
        # breaks it stops the upgrade before anything changed, with what to do.
        broken = (
            op.get_bind()
            .execute(sa.text(f"SELECT COUNT(*) FROM blocklist_events WHERE NOT ({WINDOW})"))
            .scalar_one()
        )
        if broken:
            raise RuntimeError(
                f"{broken} event(s) have not_before after detected_at (written by hosts whose "
                "clocks disagreed); set their not_before to NULL (unknown) and migrate again"
            )
        with views_set_aside(op), op.batch_alter_table("blocklist_events") as batch:
            batch.create_check_constraint("window", sa.text(WINDOW))
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(
            sa.Column(
                "unconfirmed",
                sa.BigInteger(),
                server_default="0",
                nullable=False,
                comment="Numbers held but not listed whose removal the mobile filter could not prove (an "
                "answer cut short, a control missing, an unreadable answer): kept as blocklisted, "
                "counted here, checked again by the next sweep.",
            )
        )
        batch.add_column(
            sa.Column(
                "rescued",
                sa.BigInteger(),
                server_default="0",
                nullable=False,
                comment="Numbers held but not listed that the mobile filter showed still blocklisted: the "
                "listing skipped them (the list moved while it was paged).",
            )
        )
        batch.add_column(
            sa.Column(
                "listing_complete",
                sa.Boolean(),
                nullable=True,
                comment="True when nothing shows the listing skipped a row (none rescued, none unconfirmed, "
                "no page repeated); only such a sweep proves a number absent, so the not_before of "
                "later additions is the start of the last one. NULL for runs that ended before "
                "their listing was judged, and for runs before migration 0008.",
            )
        )
    with op.batch_alter_table("blocklist_entries") as batch:
        batch.add_column(
            sa.Column(
                "proven_present_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="NULL when the last succeeded sweep showed the number blocklisted. Otherwise that "
                "sweep could not prove it either way (see sync_runs.unconfirmed) and this is the "
                "start of the last sweep that did: a removal found later happened after this.",
            )
        )
    op.create_index(
        "ix_blocklist_entries_unproven",
        "blocklist_entries",
        ["account_sid", "channel"],
        postgresql_where=sa.text("proven_present_at IS NOT NULL"),
        sqlite_where=sa.text("proven_present_at IS NOT NULL"),
    )
    op.create_table(
        "blocklist_channel_types",
        sa.Column("account_sid", _key(), nullable=False, comment="Kaleyra account SID."),
        sa.Column("channel", _key(), nullable=False, comment="Channel swept: sms, whatsapp or voice."),
        sa.Column(
            "channel_type",
            _key(),
            nullable=False,
            comment="A channel_type code this channel's listing carried (opaque: the vendor does not "
            "document the codes, so they are learned, never assumed).",
        ),
        sa.Column(
            "first_run_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            comment="Run that first applied a listing with this code.",
        ),
        sa.Column(
            "first_seen_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="detected_at of that run (UTC).",
        ),
        sa.PrimaryKeyConstraint(
            "account_sid", "channel", "channel_type", name=op.f("pk_blocklist_channel_types")
        ),
        comment="The channel_type codes each channel of an account has carried. A listing whose rows carry "
        "another channel's code, or a mix of codes this channel has not shown, is held for review: "
        "a server that ignores the channel asked for looks exactly like that.",
    )
    if postgres:
        op.execute(
            f"ALTER TABLE blocklist_events ADD CONSTRAINT ck_blocklist_events_window "
            f"CHECK ({WINDOW}) NOT VALID"
        )
    op.replace_view(SYNC_HEALTH, replaces="0007.SYNC_HEALTH")


def downgrade() -> None:
    op.replace_view(SYNC_HEALTH, replace_with="0007.SYNC_HEALTH")
    # SQLite drops a column by rebuilding the table, which fails while a view names it.
    with views_set_aside(op):
        if op.get_bind().dialect.name == "postgresql":
            op.drop_constraint(op.f("ck_blocklist_events_window"), "blocklist_events", type_="check")
        else:
            with op.batch_alter_table("blocklist_events") as batch:
                batch.drop_constraint(op.f("ck_blocklist_events_window"), type_="check")
        op.drop_table("blocklist_channel_types")
        op.drop_index("ix_blocklist_entries_unproven", table_name="blocklist_entries")
        with op.batch_alter_table("blocklist_entries") as batch:
            batch.drop_column("proven_present_at")
        with op.batch_alter_table("sync_runs") as batch:
            batch.drop_column("listing_complete")
            batch.drop_column("rescued")
            batch.drop_column("unconfirmed")
