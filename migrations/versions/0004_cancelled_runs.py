"""Run status 'cancelled'; blocklist_sync_health judges the last real sweep.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 03:40:00.000000

An operator stopping a run (Ctrl-C, SIGTERM from systemd or Kubernetes) is not a broken API:
such a run is recorded as ``cancelled`` (nothing applied), which is neither a success nor a
failure. The CHECK constraint on ``sync_runs.status`` is widened for it.

``blocklist_sync_health`` now picks its last run the way ``blocklist-sync status`` does:
dry runs are reviews, not sweeps, so a dry run after a held sweep no longer makes the channel
look healthy. Its columns are unchanged.

SQLite: the views name ``sync_runs``, and Alembic's batch mode (copy, drop, rename) fails the
rename while they exist (see 0002), so all three are dropped and recreated around the change,
from 0002's own SQL.

SYNC_HEALTH is the health view as this migration leaves it, a replaceable object (see
sync/views.py) that a later migration replaces by name: ``replaces="0004.SYNC_HEALTH"``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

from sync.views import View

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

STATUSES_BEFORE = "status IN ('running', 'succeeded', 'failed', 'held', 'dry_run')"
STATUSES_AFTER = "status IN ('running', 'succeeded', 'failed', 'held', 'dry_run', 'cancelled')"

STATUS_COMMENT = ("running; succeeded (changes applied); failed (nothing applied, see error); "
                  "held (safety guard, nothing applied); dry_run (nothing applied); cancelled "
                  "(stopped by an operator or a signal, nothing applied).")
STATUS_COMMENT_BEFORE = ("running; succeeded (changes applied); failed (nothing applied, see "
                         "error); held (safety guard, nothing applied); dry_run (nothing applied).")
LAST_RUN_STATUS_COMMENT = ("Status of the last sweep, dry runs left out: running, succeeded, "
                           "failed, held or cancelled (see sync_runs.status). cancelled is "
                           "neither a success nor a failure: judge freshness by last_success_age.")


def _views_0002():
    """0002's module, for its view SQL: the views as that migration made them."""
    path = Path(__file__).with_name('0002_bi_views.py')
    spec = importlib.util.spec_from_file_location('migration_0002', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _health_sql(views, *, skip_dry_runs: bool) -> str:
    sql = views.SYNC_HEALTH
    if skip_dry_runs:
        sql = sql.replace(
            "ROW_NUMBER() OVER (PARTITION BY account_sid, channel ORDER BY id DESC) AS newest\n"
            "    FROM sync_runs\n), successes",
            "ROW_NUMBER() OVER (PARTITION BY account_sid, channel ORDER BY id DESC) AS newest\n"
            "    FROM sync_runs\n    WHERE status <> 'dry_run'\n), successes")
        assert "status <> 'dry_run'" in sql, "0002's SYNC_HEALTH changed shape"
    return sql


def _health_columns(views, *, forward: bool) -> dict[str, str]:
    columns = dict(views.COMMENTS['blocklist_sync_health'][1])
    if forward:
        columns['last_run_status'] = LAST_RUN_STATUS_COMMENT
    return columns


_0002 = _views_0002()
SYNC_HEALTH = View(
    'blocklist_sync_health',
    _health_sql(_0002, skip_dry_runs=True).removeprefix("\nCREATE VIEW blocklist_sync_health AS\n"),
    comment=_0002.COMMENTS['blocklist_sync_health'][0],
    columns=_health_columns(_0002, forward=True),
    expressions={
        'postgresql': {'age': "now() - ok.finished_at"},
        'sqlite': {'age': "(julianday('now') - julianday(ok.finished_at)) * 86400.0"},
    },
)


def _migrate(*, forward: bool) -> None:
    views = _views_0002()
    bind = op.get_bind()
    dialect = bind.dialect.name
    age = ("now() - ok.finished_at" if dialect == 'postgresql'
           else "(julianday('now') - julianday(ok.finished_at)) * 86400.0")
    day = "(detected_at AT TIME ZONE 'UTC')::date" if dialect == 'postgresql' else "date(detected_at)"
    health = _health_sql(views, skip_dry_runs=forward).format(age=age)
    if dialect == 'postgresql':
        if not forward:
            op.execute("UPDATE sync_runs SET status = 'failed' WHERE status = 'cancelled'")
        op.drop_constraint(op.f('ck_sync_runs_status'), 'sync_runs', type_='check')
        op.create_check_constraint('status', 'sync_runs',
                                   STATUSES_AFTER if forward else STATUSES_BEFORE)
        op.execute("COMMENT ON COLUMN sync_runs.status IS "
                   + views._quote(STATUS_COMMENT if forward else STATUS_COMMENT_BEFORE))
        op.execute("DROP VIEW blocklist_sync_health")
        op.execute(health)
        comment = views.COMMENTS['blocklist_sync_health'][0]
        columns = _health_columns(views, forward=forward)
        op.execute(f"COMMENT ON VIEW blocklist_sync_health IS {views._quote(comment)}")
        for column, text in columns.items():
            op.execute(f"COMMENT ON COLUMN blocklist_sync_health.{column} IS {views._quote(text)}")
        return
    for view in reversed(views.VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    if not forward:
        op.execute("UPDATE sync_runs SET status = 'failed' WHERE status = 'cancelled'")
    with op.batch_alter_table('sync_runs') as batch:
        batch.drop_constraint(op.f('ck_sync_runs_status'), type_='check')
        batch.create_check_constraint('status', STATUSES_AFTER if forward else STATUSES_BEFORE)
    op.execute(views.INTERVALS)
    op.execute(views.DAILY_CHANGES.format(day=day))
    op.execute(health)


def upgrade() -> None:
    _migrate(forward=True)


def downgrade() -> None:
    # A cancelled run applied nothing, as a failed one: downgrading keeps it as failed.
    _migrate(forward=False)
