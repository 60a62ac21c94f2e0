"""Create sync_runs, blocklist_entries and blocklist_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 17:18:13.729290
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
            comment="Run id, referenced by events.",
        ),
        sa.Column("account_sid", sa.Text(), nullable=False, comment="Kaleyra account SID swept."),
        sa.Column("channel", sa.Text(), nullable=False, comment="Channel swept: sms, whatsapp or voice."),
        sa.Column(
            "trigger",
            sa.Text(),
            nullable=False,
            comment="What started the run: scheduled, manual or backfill.",
        ),
        sa.Column(
            "status",
            sa.Text(),
            nullable=False,
            comment="running; succeeded (changes applied); failed (nothing applied, see error); held "
            "(safety guard, nothing applied); dry_run (nothing applied).",
        ),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, comment="When the sweep started (UTC)."
        ),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the run ended (UTC); NULL while running.",
        ),
        sa.Column(
            "pages_fetched",
            sa.Integer(),
            server_default="0",
            nullable=False,
            comment="Listing pages fetched from Kaleyra.",
        ),
        sa.Column(
            "entries_seen",
            sa.BigInteger(),
            server_default="0",
            nullable=False,
            comment="Distinct numbers the sweep found blocklisted.",
        ),
        sa.Column(
            "added",
            sa.BigInteger(),
            server_default="0",
            nullable=False,
            comment="Numbers added (for held and dry_run runs: that would have been added).",
        ),
        sa.Column(
            "removed",
            sa.BigInteger(),
            server_default="0",
            nullable=False,
            comment="Numbers removed (for held and dry_run runs: that would have been removed).",
        ),
        sa.Column(
            "error",
            sa.Text(),
            nullable=True,
            comment="Why the run failed or was held, readable; never a secret.",
        ),
        sa.CheckConstraint("channel IN ('sms', 'whatsapp', 'voice')", name=op.f("ck_sync_runs_channel")),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'held', 'dry_run')",
            name=op.f("ck_sync_runs_status"),
        ),
        sa.CheckConstraint(
            "trigger IN ('scheduled', 'manual', 'backfill')", name=op.f("ck_sync_runs_trigger")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
        comment="One row per sweep of one account and channel.",
    )
    op.create_index(
        "ix_sync_runs_account_channel_started",
        "sync_runs",
        ["account_sid", "channel", "started_at"],
        unique=False,
    )
    op.create_table(
        "blocklist_entries",
        sa.Column("account_sid", sa.Text(), nullable=False, comment="Kaleyra account SID."),
        sa.Column("channel", sa.Text(), nullable=False, comment="Channel the number is blocklisted on."),
        sa.Column("mobile", sa.Text(), nullable=False, comment="Number in E.164, as Kaleyra gave it."),
        sa.Column(
            "channel_type",
            sa.Text(),
            nullable=True,
            comment="Kaleyra's channel_type for the row, opaque, as first seen.",
        ),
        sa.Column(
            "added_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="detected_at of the added event that began this stretch (UTC).",
        ),
        sa.Column(
            "added_run_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            comment="Run that detected the addition.",
        ),
        sa.ForeignKeyConstraint(
            ["added_run_id"], ["sync_runs.id"], name=op.f("fk_blocklist_entries_added_run_id_sync_runs")
        ),
        sa.PrimaryKeyConstraint("account_sid", "channel", "mobile", name=op.f("pk_blocklist_entries")),
        comment="The current blocklist: one row per number blocklisted now, per account and channel.",
    )
    op.create_index("ix_blocklist_entries_mobile", "blocklist_entries", ["mobile"], unique=False)
    op.create_table(
        "blocklist_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
            comment="Event id, in commit order.",
        ),
        sa.Column("account_sid", sa.Text(), nullable=False, comment="Kaleyra account SID."),
        sa.Column("channel", sa.Text(), nullable=False, comment="Channel of the change."),
        sa.Column("mobile", sa.Text(), nullable=False, comment="Number in E.164, as Kaleyra gave it."),
        sa.Column("change", sa.Text(), nullable=False, comment="added or removed."),
        sa.Column(
            "detected_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the sweep that saw the change committed (UTC): the change happened no later than "
            "this.",
        ),
        sa.Column(
            "not_before",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Start of the previous succeeded sweep (UTC): the change happened after this. NULL on "
            "the first sweep of a channel.",
        ),
        sa.Column(
            "initial_load",
            sa.Boolean(),
            nullable=False,
            comment="True for rows of the first succeeded sweep of a channel: they were blocklisted before "
            "the sync began, not added then.",
        ),
        sa.Column(
            "run_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            comment="Run that detected the change.",
        ),
        sa.CheckConstraint("change IN ('added', 'removed')", name=op.f("ck_blocklist_events_change")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_blocklist_events_run_id_sync_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocklist_events")),
        comment="Append-only history of additions and removals; never updated or deleted.",
    )
    op.create_index(
        "ix_blocklist_events_account_channel_detected",
        "blocklist_events",
        ["account_sid", "channel", "detected_at"],
        unique=False,
    )
    op.create_index("ix_blocklist_events_mobile", "blocklist_events", ["mobile", "detected_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_blocklist_events_mobile", table_name="blocklist_events")
    op.drop_index("ix_blocklist_events_account_channel_detected", table_name="blocklist_events")
    op.drop_table("blocklist_events")
    op.drop_index("ix_blocklist_entries_mobile", table_name="blocklist_entries")
    op.drop_table("blocklist_entries")
    op.drop_index("ix_sync_runs_account_channel_started", table_name="sync_runs")
    op.drop_table("sync_runs")
