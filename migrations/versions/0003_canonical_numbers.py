"""Canonical numbers: merge stored variants of one number, drop garbage, count rejected rows.

Before this revision numbers were stored as Kaleyra sent them, so ``" +919800000001"``,
``"+91 9800000001"`` and ``"+919800000001"`` were three entries with three histories, and a
listed ``"abc"`` was an entry. From now on every number is canonical E.164 (``sync.numbers``);
this migration brings stored rows to the same form, without inventing events:

- A value that cannot be a phone number is deleted from ``blocklist_entries`` and
  ``blocklist_events``: it never was a blocklisted number, so its events were false history.
  (The counts on old ``sync_runs`` rows stay as they were recorded.)
- The variants of one number are one number. It was blocklisted while *any* variant was, so its
  true history is the union of the variants' stretches: an ``added`` event is kept only where the
  number of variants present goes from 0 to 1, a ``removed`` event only where it goes back to 0,
  in event-id (commit) order; every other event of the group (a second variant's "addition", or
  the removed/added pair one re-spelled listing produced) is deleted, and the kept ones are
  rewritten to the canonical form. The group's entry is rebuilt from its last kept event.

The canonical rule is frozen here (a copy, not an import), so this revision means the same
thing however ``sync.numbers`` evolves.

Revision ID: 0003
Revises: 0002
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SEPARATORS = re.compile(r"[ \-.()\u00a0]")
_CANONICAL_MOBILE = "Number in canonical E.164: + then 7 to 15 digits, no spaces or separators."
_OLD_MOBILE = "Number in E.164, as Kaleyra gave it."


def _canonical(raw: str) -> str | None:
    if _E164.fullmatch(raw):
        return raw
    if len(raw) > 40:
        return None
    cleaned = _SEPARATORS.sub("", raw.strip())
    return cleaned if _E164.fullmatch(cleaned) else None


def upgrade() -> None:
    op.add_column(
        "sync_runs",
        sa.Column(
            "rejected",
            sa.BigInteger(),
            server_default="0",
            nullable=False,
            comment="Rows the listing returned that cannot be a phone number (letters, control "
            "characters, too long); never stored, counted here.",
        ),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":  # SQLite keeps no comments
        for table in ("blocklist_entries", "blocklist_events"):
            op.alter_column(
                table,
                "mobile",
                existing_type=sa.Text(),
                existing_nullable=False,
                comment=_CANONICAL_MOBILE,
                existing_comment=_OLD_MOBILE,
            )
    _repair_numbers(bind)


def downgrade() -> None:
    # Merged and deleted rows are not restored: the old spelling was the defect.
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in ("blocklist_entries", "blocklist_events"):
            op.alter_column(
                table,
                "mobile",
                existing_type=sa.Text(),
                existing_nullable=False,
                comment=_OLD_MOBILE,
                existing_comment=_CANONICAL_MOBILE,
            )
        op.drop_column("sync_runs", "rejected")
    else:  # natively (SQLite 3.35+): batch mode's table copy would trip over the views
        op.execute("ALTER TABLE sync_runs DROP COLUMN rejected")


def _repair_numbers(bind: sa.Connection) -> None:
    postgres = bind.dialect.name == "postgresql"
    tmp = "pg_temp." if postgres else "temp."
    # Only values that are not canonical already come back to Python: none, on a healthy table.
    not_canonical = (
        r"mobile !~ '^\+[1-9][0-9]{6,14}$'"
        if postgres
        else "NOT (mobile GLOB '+[1-9]*' AND substr(mobile, 2) NOT GLOB '*[^0-9]*' "
        "AND length(mobile) BETWEEN 8 AND 16)"
    )
    raw_values = (
        bind.execute(
            sa.text(
                f"SELECT mobile FROM blocklist_entries WHERE {not_canonical} UNION "
                f"SELECT mobile FROM blocklist_events WHERE {not_canonical}"
            )
        )
        .scalars()
        .all()
    )
    if not raw_values:
        return

    def run(sql: str, params: dict[str, object] | list[dict[str, object]] | None = None) -> None:
        bind.execute(sa.text(sql), params or {})

    run(f"CREATE TEMPORARY TABLE {tmp}kbs_repair_map (raw TEXT PRIMARY KEY, canon TEXT)")
    run(
        f"INSERT INTO {tmp}kbs_repair_map (raw, canon) VALUES (:raw, :canon)",
        [{"raw": raw, "canon": _canonical(raw)} for raw in raw_values],
    )

    garbage = f"SELECT raw FROM {tmp}kbs_repair_map WHERE canon IS NULL"
    run(f"DELETE FROM blocklist_entries WHERE mobile IN ({garbage})")
    run(f"DELETE FROM blocklist_events WHERE mobile IN ({garbage})")

    # Every (account, channel, number) that has a variant, and all of its events.
    run(f"""CREATE TEMPORARY TABLE {tmp}kbs_repair_events AS
        SELECT e.id, e.account_sid, e.channel, COALESCE(m.canon, e.mobile) AS canon, e.change
        FROM blocklist_events e LEFT JOIN {tmp}kbs_repair_map m ON m.raw = e.mobile
        WHERE EXISTS (
            SELECT 1 FROM blocklist_events v JOIN {tmp}kbs_repair_map vm ON vm.raw = v.mobile
            WHERE vm.canon IS NOT NULL AND v.account_sid = e.account_sid
              AND v.channel = e.channel AND vm.canon = COALESCE(m.canon, e.mobile))""")
    # Keep the events where the number of variants present crosses 0.
    run(f"""DELETE FROM blocklist_events WHERE id IN (
        SELECT id FROM (
            SELECT id, change, SUM(CASE WHEN change = 'added' THEN 1 ELSE -1 END) OVER (
                PARTITION BY account_sid, channel, canon ORDER BY id
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS present
            FROM {tmp}kbs_repair_events) counted
        WHERE NOT ((change = 'added' AND present = 1) OR (change = 'removed' AND present = 0)))""")
    run(f"""UPDATE blocklist_events SET mobile = (
            SELECT canon FROM {tmp}kbs_repair_map WHERE raw = blocklist_events.mobile)
        WHERE mobile IN (SELECT raw FROM {tmp}kbs_repair_map)""")

    # Rebuild each group's entry from its last kept event; channel_type from its old entries.
    run(f"""CREATE TEMPORARY TABLE {tmp}kbs_repair_groups AS
        SELECT DISTINCT account_sid, channel, canon FROM {tmp}kbs_repair_events""")
    run(f"""CREATE TEMPORARY TABLE {tmp}kbs_repair_types AS
        SELECT b.account_sid, b.channel, COALESCE(m.canon, b.mobile) AS canon,
               MAX(b.channel_type) AS channel_type
        FROM blocklist_entries b LEFT JOIN {tmp}kbs_repair_map m ON m.raw = b.mobile
        GROUP BY b.account_sid, b.channel, COALESCE(m.canon, b.mobile)""")
    run(f"""DELETE FROM blocklist_entries WHERE mobile IN (SELECT raw FROM {tmp}kbs_repair_map)
        OR EXISTS (SELECT 1 FROM {tmp}kbs_repair_groups g
                   WHERE g.account_sid = blocklist_entries.account_sid
                     AND g.channel = blocklist_entries.channel
                     AND g.canon = blocklist_entries.mobile)""")
    run(f"""INSERT INTO blocklist_entries
            (account_sid, channel, mobile, channel_type, added_at, added_run_id)
        SELECT e.account_sid, e.channel, e.mobile, t.channel_type, e.detected_at, e.run_id
        FROM blocklist_events e
        JOIN (SELECT ev.account_sid, ev.channel, ev.mobile, MAX(ev.id) AS id
              FROM blocklist_events ev JOIN {tmp}kbs_repair_groups g
                ON g.account_sid = ev.account_sid AND g.channel = ev.channel
               AND g.canon = ev.mobile
              GROUP BY ev.account_sid, ev.channel, ev.mobile) last ON last.id = e.id
        LEFT JOIN {tmp}kbs_repair_types t ON t.account_sid = e.account_sid
              AND t.channel = e.channel AND t.canon = e.mobile
        WHERE e.change = 'added'""")
    for name in ("kbs_repair_types", "kbs_repair_groups", "kbs_repair_events", "kbs_repair_map"):
        run(f"DROP TABLE {tmp}{name}")
