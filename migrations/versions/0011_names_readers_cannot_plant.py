"""Names a reader cannot plant: the sweeps' lock is a row only the job may lock, and the
functions are bound when they are made.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 23:30:00.000000

A login that may create objects in a schema the job's names resolve through (``public`` on a
database made by PostgreSQL 14 or older, where PUBLIC may create there) could plant a function
whose argument types fit a call better than the built-in's, and PostgreSQL would run it with
the rights of whoever called: ``public.hashtextextended(text, integer)`` ran with the job's
rights at the next sweep, ``public.generate_series(date, date, interval)`` with every reader's
at the next query of the daily views. And any login could take the sweeps' advisory locks and
keep every sweep "locked". So:

- ``sync_channel_locks``: one row per account and channel; a sweep holds its row ``FOR
  UPDATE`` while it runs (:meth:`sync.dialect.Dialect.lock`), which needs the right to update
  the table: a read-only login (``grant-read``) cannot. The advisory locks are gone, and with
  them the job's one call of ``hashtextextended``. The job's sessions also search the install's
  schema alone (:func:`sync.database.make_engine`).
- ``blocklist_as_of``, ``blocklist_daily_changes_in`` and ``blocklist_daily_size_in`` keep their
  signatures, results and comments, with SQL-standard bodies (``BEGIN ATOMIC``): every name in
  them is resolved once, here, and stored as what it meant, so a caller's search_path no
  longer decides which ``generate_series`` runs, nor which install's tables are read (0009
  qualified three table names by a regular expression for that). The planner inlines them as
  before. This needs PostgreSQL 14 or later; on an older server the upgrade stops with
  nothing changed and says so.

Downgrade restores 0009's functions and drops the lock table (a sweep of 0010's code takes
advisory locks again).
"""

from __future__ import annotations

import sqlalchemy as sa

from sync.views import Function, migration, op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

KEY = sa.Text(collation="C").with_variant(sa.Text(), "sqlite")  # as sync.schema.Key, frozen


def _body(definition: str) -> str:
    """The SELECT between a 0009 definition's ``$$`` quotes: the rules stay 0009's, word for word."""
    return definition.split("$$")[1]


def functions() -> tuple[Function, Function, Function]:
    """This revision's versions of the functions (a later one that replaces them restores these)."""
    old = migration("0009")
    comments = {signature: comment for signature, (_, comment) in old.FUNCTIONS.items()}
    as_of = Function(
        "blocklist_as_of",
        {"at": "timestamptz"},
        "TABLE (account_sid blocklist_key, channel blocklist_key, mobile blocklist_key, state text, "
        "added_at timestamptz, added_not_before timestamptz, removed_not_before timestamptz, "
        "removed_at timestamptz, initial_load boolean, added_run_id bigint, removed_run_id bigint)",
        _body(old.AS_OF),
        comments["blocklist_as_of(timestamptz)"],
    )
    changes = Function(
        "blocklist_daily_changes_in",
        {"tz": "text"},
        "TABLE (day date, account_sid text, channel text, added bigint, removed bigint, net bigint)",
        _body(old.DAILY_CHANGES_IN),
        comments["blocklist_daily_changes_in(text)"],
    )
    size = Function(
        "blocklist_daily_size_in",
        {"tz": "text"},
        "TABLE (day date, account_sid text, channel text, entries bigint, swept boolean)",
        _body(old.DAILY_SIZE_IN),
        comments["blocklist_daily_size_in(text)"],
    )
    return as_of, changes, size


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres and bind.execute(sa.text("SHOW server_version_num")).scalar_one() < "140000":
        raise RuntimeError(
            "this version needs PostgreSQL 14 or later (its functions are bound when created, "
            "BEGIN ATOMIC); upgrade the server, then run `blocklist-sync migrate` again"
        )
    op.create_table(
        "sync_channel_locks",
        sa.Column("account_sid", KEY, nullable=False, comment="Kaleyra account SID."),
        sa.Column("channel", KEY, nullable=False, comment="Channel swept: sms, whatsapp or voice."),
        sa.PrimaryKeyConstraint("account_sid", "channel", name="pk_sync_channel_locks"),
        comment="The sweeps' locks: one row per account and channel ever swept, holding no data. A "
        "sweep keeps its channel's row locked (SELECT ... FOR UPDATE) while it runs; only a role "
        "that may update this table can, so a read-only login cannot hold the sweeps back.",
    )
    for function in functions():
        op.replace_function(function)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        old = migration("0009")
        schema = (
            op.get_context().opts.get("version_table_schema")
            or op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one()
        )
        for definition, _ in old.FUNCTIONS.values():
            replace = definition.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
            op.execute(old._in_schema(replace, schema))
    op.drop_table("sync_channel_locks")
