"""One stored history: ``blocklist_events`` becomes a view of the stretches.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 02:00:00.000000

Since 0009 every sweep wrote each change twice, as an event and on its stretch, and an import
placed before a channel's earliest run rewrote the stretches but could only append events: the
two histories disagreed (an ``added`` after an ``added``, counts that differ between
``blocklist_events`` and ``blocklist_daily_changes``). Now ``blocklist_periods`` is the record
and ``blocklist_events`` is derived from it: each stretch gives its addition, and its removal
once it ended. Same columns, same meanings; a first load writes each number once.

Event ids are stored on the stretch (``added_event_id``, ``removed_event_id``), so they are
stable and ``ORDER BY id`` keeps working:

- an event the table held keeps its id (matched by account, channel, number, run and change);
- an event recorded from here on gets ``run_id * 2^32 + n`` for an addition and
  ``run_id * 2^32 + 2^31 + n`` for a removal, ``n`` counting from 1 within the run (see
  :func:`sync.store.apply.event_ids`): larger than every id the table's sequence gave (short
  of 2^32 events), unique without a sequence, the same on both dialects; the upgrade stops,
  with nothing changed, if two changes would share an id;
- a stretch end no event matched (one an import rewrote) gets an id by the same rule, from the
  run that recorded it.

The events the table held that no stretch end matches are the copies an import left behind
(the earliest sweep's ``added`` of a number the import moved earlier, the import's own
``removed`` beside the stretch it closed): the stretches were right, so they are not kept. The
migration logs how many.

Downgrade makes the table again, exactly as 0011 had it, from the view's rows (ids included),
and drops the two columns: the events then agree with the stretches, so upgrading again gives
the same rows. Readers' SELECT grants on the table are given on the view, and back.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from sync.views import View, op, views_set_aside

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # as sync.store.schema.Id, frozen

# The id rule, frozen here as of this revision (sync.store.apply.event_ids owns the live one).
RUN_SHIFT = 2**32
REMOVED_OFFSET = 2**31

EVENTS = View(
    "blocklist_events",
    """
    SELECT added_event_id AS id, account_sid, channel, mobile, {added} AS change,
           added_at AS detected_at, added_not_before AS not_before, initial_load,
           added_run_id AS run_id
    FROM blocklist_periods
    UNION ALL
    SELECT removed_event_id, account_sid, channel, mobile, {removed},
           removed_at, removed_not_before, FALSE, removed_run_id
    FROM blocklist_periods
    WHERE removed_at IS NOT NULL""",
    expressions={
        "postgresql": {"added": "'added'::text", "removed": "'removed'::text"},
        "sqlite": {"added": "'added'", "removed": "'removed'"},
    },
    comment="History as changes, derived from blocklist_periods (migration 0012): each stretch "
    "gives its addition, and its removal once it ended. Read-only; never disagrees with the "
    "stretches.",
    columns={
        "id": "Event id, unique. Increases with the run that recorded the change (ids the table "
        "gave before migration 0012 are kept), so ORDER BY id lists a channel's sweeps' changes in "
        "the order they were detected; an import placed before the earliest sweep records its "
        "changes later, with larger ids, though their detected_at is older.",
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel of the change.",
        "mobile": "Number in canonical E.164: + then 7 to 15 digits, no spaces or separators.",
        "change": "added or removed.",
        "detected_at": "When the sweep that saw the change committed (UTC): the change happened "
        "no later than this. An import's: the time its export was taken.",
        "not_before": "The change happened after this (UTC): for an addition, the start of the "
        "last sweep before it whose listing was complete; for a removal, the start of the last "
        "sweep that showed the number. NULL for the initial load, whose start is unknown.",
        "initial_load": "True for additions of a channel's first observation (its first "
        "succeeded sweep, or the oldest export imported before it): blocklisted before the sync "
        "began, not added then. False for removals.",
        "run_id": "sync_runs.id of the run that detected the change.",
    },
)

_MATCH = """
    UPDATE blocklist_periods SET {column} = e.id
    FROM (SELECT account_sid, channel, mobile, run_id, MIN(id) AS id
          FROM blocklist_events WHERE change = '{change}'
          GROUP BY account_sid, channel, mobile, run_id) e
    WHERE e.account_sid = blocklist_periods.account_sid AND e.channel = blocklist_periods.channel
      AND e.mobile = blocklist_periods.mobile AND e.run_id = blocklist_periods.{run}"""

# Stretch ends no event matched: an id by the live rule, from the run that recorded the end.
_NUMBER = """
    UPDATE blocklist_periods SET {column} = n.id
    FROM (SELECT account_sid, channel, mobile, {run} AS run,
                 {run} * {shift} + {offset}
                 + ROW_NUMBER() OVER (PARTITION BY {run} ORDER BY account_sid, channel, mobile) AS id
          FROM blocklist_periods WHERE {run} IS NOT NULL AND {column} IS NULL) n
    WHERE n.account_sid = blocklist_periods.account_sid AND n.channel = blocklist_periods.channel
      AND n.mobile = blocklist_periods.mobile AND n.run = blocklist_periods.{run}"""

_ENDS = {
    "added_event_id": ("added", "added_run_id", 0),
    "removed_event_id": ("removed", "removed_run_id", REMOVED_OFFSET),
}

_SELECT_GRANTS = """
    SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
    FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
    LEFT JOIN pg_roles r ON r.oid = a.grantee
    WHERE c.oid = to_regclass('blocklist_events') AND a.privilege_type = 'SELECT'
      AND a.grantee <> c.relowner"""


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _readers() -> list[str]:
    """Who may SELECT from blocklist_events (the owner aside), quoted for a GRANT."""
    if not _postgres():
        return []
    return list(op.get_bind().execute(sa.text(_SELECT_GRANTS)).scalars())


def _grant(readers: list[str]) -> None:
    for reader in readers:
        op.execute(f"GRANT SELECT ON blocklist_events TO {reader}")


def _check_unique() -> None:
    """Stop, with nothing changed, if two changes got one id (the table's sequence reached the
    range a run's new ids take: only after 2^32 events, or a downgrade that went on writing)."""
    twice = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT id FROM (SELECT added_event_id AS id FROM blocklist_periods UNION ALL "
                "SELECT removed_event_id FROM blocklist_periods WHERE removed_event_id IS NOT NULL) i "
                "GROUP BY id HAVING COUNT(*) > 1 LIMIT 1"
            )
        )
        .scalar_one_or_none()
    )
    if twice is not None:
        raise RuntimeError(
            f"two events would share id {twice}; nothing was changed: report this, with the id"
        )


def upgrade() -> None:
    bind = op.get_bind()
    readers = _readers()
    op.add_column(
        "blocklist_periods",
        sa.Column("added_event_id", ID, comment=ADDED_EVENT_ID),
    )
    op.add_column(
        "blocklist_periods",
        sa.Column("removed_event_id", ID, comment=REMOVED_EVENT_ID),
    )
    matched = 0
    for column, (change, run, _) in _ENDS.items():
        matched += bind.execute(sa.text(_MATCH.format(column=column, change=change, run=run))).rowcount
    for column, (_, run, offset) in _ENDS.items():
        op.execute(_NUMBER.format(column=column, run=run, shift=RUN_SHIFT, offset=offset))
    _check_unique()
    # Each stretch end took one event's id: the events no end took are the ones not kept.
    left = bind.execute(sa.text("SELECT COUNT(*) FROM blocklist_events")).scalar_one() - matched
    if left:
        log.info(
            "0012: %d event(s) that imports left beside the stretches they rewrote are not kept; "
            "the stretches hold the history",
            left,
        )
    postgres = _postgres()
    with views_set_aside(op):
        with op.batch_alter_table("blocklist_periods") as batch:
            batch.alter_column("added_event_id", existing_type=ID, nullable=False)
            batch.create_check_constraint("removal_event", REMOVAL_EVENT)
            if not postgres:  # SQLite's events held these windows checked, and gave the stretches
                for name, rule in WINDOWS.items():
                    batch.create_check_constraint(name, rule)
        if postgres:  # as 0008 did for the events: rows skewed hosts wrote before stay as they are
            for name, rule in WINDOWS.items():
                op.execute(
                    f"ALTER TABLE blocklist_periods ADD CONSTRAINT ck_blocklist_periods_{name} "
                    f"CHECK ({rule}) NOT VALID"
                )
        op.drop_index("ix_blocklist_events_detected", table_name="blocklist_events")
        op.drop_table("blocklist_events")
    # The UPDATEs above leave the table with every row twice or thrice; rewriting it here would
    # keep those versions too (this transaction might still need them), so 0014's after_commit
    # compacts it once the migrations have committed.
    op.create_view(EVENTS)
    _grant(readers)
    if _postgres():
        op.create_table_comment("blocklist_periods", PERIODS_COMMENT, existing_comment=PERIODS_COMMENT_0009)


PERIODS_COMMENT_0009 = (
    "History as stretches: one row per account, channel, number and stretch of being blocklisted, "
    "with honest bounds on both ends. The open rows (removed_at IS NULL) are the current blocklist "
    "(the view blocklist_entries). Written by every sweep in the same transaction as its events."
)
PERIODS_COMMENT = (
    "History as stretches: one row per account, channel, number and stretch of being blocklisted, "
    "with honest bounds on both ends. The open rows (removed_at IS NULL) are the current blocklist "
    "(the view blocklist_entries). The one stored history: the view blocklist_events is derived "
    "from it."
)

# The two columns' comments, and the rule that ties the removal's to the removal.
ADDED_EVENT_ID = "blocklist_events.id of this stretch's addition (migration 0012)."
REMOVED_EVENT_ID = "blocklist_events.id of this stretch's removal; NULL while open."
REMOVAL_EVENT = "(removed_at IS NULL) = (removed_event_id IS NULL)"
# The events' window rule (0008), now the stretches' own: a window that ends before it begins
# is a clock fault, never history.
WINDOWS = {
    "added_window": "added_not_before IS NULL OR added_not_before <= added_at",
    "removed_window": "removed_not_before IS NULL OR removed_not_before <= removed_at",
}

# -- downgrade: the table of 0011, from the view -------------------------------------------

_EVENT_COLUMNS = "id, account_sid, channel, mobile, change, detected_at, not_before, initial_load, run_id"
WINDOW = "not_before IS NULL OR not_before <= detected_at"


def _key() -> sa.types.TypeEngine[str]:
    return sa.Text(collation="C") if _postgres() else sa.Text()


def _events_select(postgres: bool) -> str:
    return EVENTS.select.format(**EVENTS.expressions["postgresql" if postgres else "sqlite"])


def downgrade() -> None:
    postgres = _postgres()
    readers = _readers()
    op.drop_view(EVENTS)
    comments = EVENTS.columns
    op.create_table(
        "blocklist_events",
        sa.Column(
            "id",
            ID,
            primary_key=True,
            autoincrement=True,
            comment="Event id, in commit order.",
        ),
        sa.Column("account_sid", _key(), nullable=False, comment="Kaleyra account SID."),
        sa.Column("channel", _key(), nullable=False, comment="Channel of the change."),
        sa.Column("mobile", _key(), nullable=False, comment=comments["mobile"]),
        sa.Column("change", sa.Text(), nullable=False, comment="added or removed."),
        sa.Column(
            "detected_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the sweep that saw the change committed (UTC): the change happened no "
            "later than this.",
        ),
        sa.Column(
            "not_before",
            sa.DateTime(timezone=True),
            comment="Start of the previous succeeded sweep (UTC): the change happened after this. "
            "NULL on the first sweep of a channel.",
        ),
        sa.Column(
            "initial_load",
            sa.Boolean(),
            nullable=False,
            comment="True for rows of the first succeeded sweep of a channel: they were "
            "blocklisted before the sync began, not added then.",
        ),
        sa.Column(
            "run_id",
            ID,
            nullable=False,
            comment="Run that detected the change.",
        ),
        sa.CheckConstraint("change IN ('added', 'removed')", name=op.f("ck_blocklist_events_change")),
        *([] if postgres else [sa.CheckConstraint(WINDOW, name=op.f("ck_blocklist_events_window"))]),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocklist_events")),
        comment="Append-only history of additions and removals; never updated or deleted.",
    )
    op.execute(
        f"INSERT INTO blocklist_events ({_EVENT_COLUMNS}) "
        f"SELECT {_EVENT_COLUMNS} FROM ({_events_select(postgres)}) e "
        "ORDER BY id"
    )
    if postgres:
        op.execute(
            "ALTER TABLE blocklist_events ADD CONSTRAINT ck_blocklist_events_window "
            f"CHECK ({WINDOW}) NOT VALID"
        )
        op.execute(
            "SELECT setval(pg_get_serial_sequence('blocklist_events', 'id'), "
            "COALESCE((SELECT MAX(id) FROM blocklist_events), 1), "
            "(SELECT MAX(id) FROM blocklist_events) IS NOT NULL)"
        )
    op.create_index(
        "ix_blocklist_events_detected", "blocklist_events", ["detected_at"], postgresql_using="brin"
    )
    _grant(readers)
    if postgres:
        op.create_table_comment("blocklist_periods", PERIODS_COMMENT_0009, existing_comment=PERIODS_COMMENT)
    with views_set_aside(op), op.batch_alter_table("blocklist_periods") as batch:
        batch.drop_constraint(op.f("ck_blocklist_periods_removal_event"), type_="check")
        for name in WINDOWS:
            batch.drop_constraint(op.f(f"ck_blocklist_periods_{name}"), type_="check")
        batch.drop_column("removed_event_id")
        batch.drop_column("added_event_id")
