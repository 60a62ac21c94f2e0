"""Faster writes: key text columns in the "C" collation, no foreign keys to sync_runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 04:30:00.000000

Measured on a 1M-entry first load (README, Performance): the two foreign keys on
``blocklist_entries.added_run_id`` and ``blocklist_events.run_id`` cost 2-6 s per million rows
written (a trigger and a look-up into ``sync_runs`` per row), and comparing keys under the
database's linguistic collation costs more than comparing bytes. Canonical E.164 numbers, SIDs
and channel names are ASCII, so "C" orders them exactly as the linguistic collation did for
every query the project and the README run; only the sort of non-ASCII text would differ, and
these columns hold none.

The foreign keys guarded nothing the sweep does not already guarantee: run rows are never
deleted, and every entry and event is written in the same transaction as the run row it names.
BI tools no longer discover the join from a constraint: join run_id to sync_runs.id.

PostgreSQL will not change the type of a column a view reads, so the views (whatever their
definition and comments are at this revision) are saved from the catalog, dropped, and
recreated as they were (sync.views.views_set_aside). SQLite has no "C" collation (its default,
BINARY, already compares bytes), so there only the foreign keys go, by batch mode, around the
same save and restore.
"""

from __future__ import annotations

import sqlalchemy as sa

from sync.views import op, views_set_aside

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEY_COLUMNS = ("account_sid", "channel", "mobile")
FOREIGN_KEYS = (("blocklist_entries", "added_run_id"), ("blocklist_events", "run_id"))
# Extended statistics name mobile in an expression; they are dropped and recreated around it.
STATISTICS = ("st_blocklist_entries_head", "st_blocklist_events_day_head")


def _fk_name(table: str, column: str) -> str:
    return f"fk_{table}_{column}_sync_runs"


def _statistics() -> dict[str, str]:
    """CREATE STATISTICS of the objects that name mobile (PostgreSQL 14+ made them)."""
    rows = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT stxname, pg_get_statisticsobjdef(oid) FROM pg_statistic_ext "
                "WHERE stxname = ANY(:names)"
            ),
            {"names": list(STATISTICS)},
        )
        .all()
    )
    return dict(rows)


def _migrate(*, forward: bool) -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with views_set_aside(op):
        if postgres:
            statistics = _statistics()
            for name in statistics:
                op.execute(f"DROP STATISTICS {name}")
            collate = ' COLLATE "C"' if forward else ""
            for table in ("blocklist_entries", "blocklist_events"):
                op.execute(
                    f"ALTER TABLE {table} "
                    + ", ".join(f"ALTER COLUMN {c} TYPE text{collate}" for c in KEY_COLUMNS)
                )
            for table, column in FOREIGN_KEYS:
                if forward:
                    op.drop_constraint(_fk_name(table, column), table, type_="foreignkey")
                else:
                    op.create_foreign_key(_fk_name(table, column), table, "sync_runs", [column], ["id"])
            for definition in statistics.values():
                op.execute(definition)
        else:
            for table, column in FOREIGN_KEYS:
                with op.batch_alter_table(table) as batch:
                    if forward:
                        batch.drop_constraint(_fk_name(table, column), type_="foreignkey")
                    else:
                        batch.create_foreign_key(_fk_name(table, column), "sync_runs", [column], ["id"])


def upgrade() -> None:
    _migrate(forward=True)


def downgrade() -> None:
    _migrate(forward=False)
