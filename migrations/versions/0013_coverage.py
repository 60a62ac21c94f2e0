"""Coverage made explicit: what the runs observed, and no as-of answer outside it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-09 10:00:00.000000

The sync sees Kaleyra's lists only when a run records a listing: a sweep when it commits, an
import of a dated export at the export's time. Before a channel's first observation nothing was
seen, and after its last succeeded run nothing has looked since; ``blocklist_as_of`` answered
there as if the sweeps had (before the first sweep a listed number was missing, read as "not
blocklisted"; after the last one a number unblocked since was still ``yes``). So:

- ``blocklist_coverage``: one row per account and channel with at least one succeeded run
  (sweeps and imports), from ``covered_from`` (the earliest run's ``finished_at``: the first by
  time, as the run ledger's ``first_run``) to ``covered_to`` (the newest succeeded run's: the
  last succeeded sweep by id, or the latest import while no sweep has succeeded, as the
  ledger's ``newest_first``), with both run ids and how many sweeps and imports succeeded.
  Both dialects. ``sync/store/ledger.py``'s ``coverage()`` states the same rule in Python;
  ``tests/test_coverage.py`` holds the two together.
- ``blocklist_as_of(at)`` (PostgreSQL) keeps its arguments and result columns. Inside a
  channel's coverage it answers as before (``yes``, ``uncertain``; a number not returned was not
  listed). Outside it, the channel has exactly one row: ``mobile`` NULL, ``state`` ``unknown``,
  every stretch column NULL, and no number rows. A channel without a succeeded run has no row
  (nothing was ever observed). The coverage is computed in the function from ``sync_runs``
  with the view's SQL (not by reading the view: a function bound to a view would stop
  ``views_set_aside`` from dropping it).
- ``blocklist_entries`` says, in its comment, that it is the list as of the last succeeded run
  (PostgreSQL; SQLite has no comments).

Downgrade restores 0011's function and 0009's comment of ``blocklist_entries`` and drops the view.
"""

from __future__ import annotations

import sqlalchemy as sa

from sync.sql import sql_literal
from sync.views import Function, View, migration, op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Each channel's first and newest succeeded runs, found by a few index probes per channel
# (reading every run to rank them took 0.3 s on a year of 20-minute sweeps, for every as-of
# question): the accounts by a loose scan of ix_sync_runs_account_channel_started, crossed
# with the three channels sync_runs' CHECK allows. ``first`` by time (ties by id), as the
# ledger's first_run; ``newest`` as the ledger's newest_first: the last sweep by id, else (no
# sweep has succeeded) the latest import by its time.
_OF_CHANNEL = "r.account_sid = a.sid AND r.channel = ch.channel AND r.status = 'succeeded'"
_BOUNDS = f"""
SELECT a.sid AS account_sid, ch.channel,
       (SELECT r.id FROM sync_runs r WHERE {_OF_CHANNEL}
        ORDER BY r.started_at, r.id LIMIT 1) AS first_id,
       COALESCE(
           (SELECT r.id FROM sync_runs r WHERE {_OF_CHANNEL} AND r.source_sha256 IS NULL
            ORDER BY r.id DESC LIMIT 1),
           (SELECT r.id FROM sync_runs r WHERE {_OF_CHANNEL} AND r.source_sha256 IS NOT NULL
            ORDER BY r.started_at DESC, r.id DESC LIMIT 1)) AS newest_id
FROM accounts a
CROSS JOIN (SELECT 'sms' AS channel UNION ALL SELECT 'whatsapp' UNION ALL SELECT 'voice') ch
WHERE a.sid IS NOT NULL
"""
_ACCOUNTS = """
accounts(sid) AS (
    SELECT MIN(account_sid) FROM sync_runs
    UNION ALL
    SELECT (SELECT MIN(r.account_sid) FROM sync_runs r WHERE r.account_sid > a.sid)
    FROM accounts a WHERE a.sid IS NOT NULL
)"""
# The two runs' times by their primary key, one row each (a join would invite a hash of
# every run).
_COVERAGE = f"""
SELECT b.account_sid, b.channel,
       (SELECT f.finished_at FROM sync_runs f WHERE f.id = b.first_id) AS covered_from,
       b.first_id AS covered_from_run_id,
       (SELECT t.finished_at FROM sync_runs t WHERE t.id = b.newest_id) AS covered_to,
       b.newest_id AS covered_to_run_id
FROM ({_BOUNDS}) b
WHERE b.first_id IS NOT NULL
"""

COVERAGE = View(
    "blocklist_coverage",
    f"""WITH RECURSIVE {_ACCOUNTS.strip()}
SELECT c.account_sid, c.channel, c.covered_from, c.covered_from_run_id, c.covered_to,
       c.covered_to_run_id,
       (SELECT COUNT(*) FROM sync_runs r WHERE r.account_sid = c.account_sid
          AND r.channel = c.channel AND r.status = 'succeeded' AND r.source_sha256 IS NULL) AS sweeps,
       (SELECT COUNT(*) FROM sync_runs r WHERE r.account_sid = c.account_sid
          AND r.channel = c.channel AND r.status = 'succeeded' AND r.source_sha256 IS NOT NULL) AS imports
FROM ({_COVERAGE}) c""",
    comment="What the runs observed, per account and channel with at least one succeeded run "
    "(sweeps, and imports of dated exports): from covered_from to covered_to. Inside it the "
    "history answers yes, no or uncertain; outside it nothing was observed, and "
    "blocklist_as_of answers unknown. A channel never swept or imported successfully has no row.",
    columns={
        "account_sid": "Kaleyra account SID.",
        "channel": "Channel: sms, whatsapp or voice.",
        "covered_from": "When the channel's first observation was recorded (UTC): finished_at of "
        "its earliest succeeded run by time, a sweep's commit or an import's export time. Before "
        "it nothing was observed: unknown.",
        "covered_from_run_id": "sync_runs.id of that earliest succeeded run.",
        "covered_to": "When the channel's last observation was recorded (UTC): finished_at of its "
        "newest succeeded run, the last succeeded sweep (blocklist_sync_health.last_success_at), "
        "or the latest import while no sweep has succeeded. The current list (blocklist_entries) "
        "is as of this moment; after it nothing has looked: unknown.",
        "covered_to_run_id": "sync_runs.id of that newest succeeded run.",
        "sweeps": "Succeeded sweeps of the channel (imports left out).",
        "imports": "Succeeded imports of dated exports into the channel (trigger backfill, with a "
        "source_sha256).",
    },
)

# "Listed at T" (0009's rules, word for word, stretch by stretch), only where the channel's
# coverage holds T; elsewhere one row per channel says unknown. The coverage is a CTE read three
# times, so computed once; a filter on mobile or account_sid still reaches the stretches' scans.
# A one-number question keeps the unknown rows with `mobile = :m OR state = 'unknown'`: state is
# a constant in each branch, so the number branches keep `mobile = :m` (their index) and the
# unknown branch keeps every row (`mobile IS NULL` instead would scan every stretch).
_IN = "c.covered_from <= at AND at <= c.covered_to"

_YES = """
p.added_at <= at
  AND at < CASE WHEN p.removed_at IS NULL THEN COALESCE(p.proven_present_at, 'infinity')
                ELSE COALESCE(p.removed_not_before, p.added_at) END"""

AS_OF_SELECT = f"""
WITH RECURSIVE {_ACCOUNTS.strip()}, coverage AS ({_COVERAGE})
SELECT p.account_sid::blocklist_key, p.channel::blocklist_key, p.mobile::blocklist_key, 'yes',
       p.added_at, p.added_not_before,
       p.removed_not_before, p.removed_at, p.initial_load, p.added_run_id, p.removed_run_id
FROM blocklist_periods p
JOIN coverage c ON c.account_sid = p.account_sid AND c.channel = p.channel
WHERE {_IN}
  AND {_YES.strip()}
UNION ALL
SELECT d.account_sid::blocklist_key, d.channel::blocklist_key, d.mobile::blocklist_key, 'uncertain',
       d.added_at, d.added_not_before, d.removed_not_before, d.removed_at, d.initial_load,
       d.added_run_id, d.removed_run_id
FROM (
    SELECT DISTINCT ON (u.account_sid, u.channel, u.mobile)
           u.account_sid, u.channel, u.mobile, u.added_at, u.added_not_before,
           u.removed_not_before, u.removed_at, u.initial_load, u.added_run_id, u.removed_run_id
    FROM blocklist_periods u
    WHERE COALESCE(u.added_not_before, '-infinity') <= at
      AND at < COALESCE(u.removed_at, 'infinity')
      AND NOT ({_YES.replace("p.", "u.").strip()})
      AND NOT EXISTS (
          SELECT 1 FROM blocklist_periods y
          WHERE y.mobile = u.mobile AND y.account_sid = u.account_sid AND y.channel = u.channel
            AND {_YES.replace("p.", "y.").strip()})
    ORDER BY u.account_sid, u.channel, u.mobile, u.added_at DESC
) d
JOIN coverage c ON c.account_sid = d.account_sid AND c.channel = d.channel
WHERE {_IN}
UNION ALL
SELECT c.account_sid::blocklist_key, c.channel::blocklist_key, NULL::blocklist_key, 'unknown',
       NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean,
       NULL::bigint, NULL::bigint
FROM coverage c
WHERE NOT ({_IN})
"""

AS_OF = Function(
    "blocklist_as_of",
    {"at": "timestamptz"},
    "TABLE (account_sid blocklist_key, channel blocklist_key, mobile blocklist_key, state text, "
    "added_at timestamptz, added_not_before timestamptz, removed_not_before timestamptz, "
    "removed_at timestamptz, initial_load boolean, added_run_id bigint, removed_run_id bigint)",
    AS_OF_SELECT,
    "Who was blocklisted at an instant, per account and channel the runs have observed "
    "(blocklist_coverage). Where the channel's coverage holds the instant: one row per number "
    "listed (state yes) or possibly listed (state uncertain: the instant falls inside a window "
    "the sweeps could not narrow), with the stretch that says so; a number not returned was not "
    "blocklisted then. Where it does not (before covered_from or after covered_to): exactly one "
    "row for the channel, mobile NULL, state unknown, the other columns NULL, and no number "
    "rows: nothing was observed then, so no number may be read as not blocklisted. A channel "
    "without a succeeded run has no row.",
)

ENTRIES_COMMENT = (
    "The blocklist as of each channel's last succeeded run (blocklist_coverage.covered_to, for "
    "sweeps blocklist_sync_health.last_success_at): one row per number, per account and channel "
    "(the open stretches of blocklist_periods). Changes since that run are not in it."
)


SUCCEEDED = "status = 'succeeded'"
IMPORTS = "status = 'succeeded' AND source_sha256 IS NOT NULL"


def upgrade() -> None:
    # The newest succeeded sweep of a channel, by id, in a few index pages.
    op.create_index(
        "ix_sync_runs_succeeded",
        "sync_runs",
        ["account_sid", "channel", "id"],
        postgresql_where=sa.text(SUCCEEDED),
        sqlite_where=sa.text(SUCCEEDED),
    )
    # A channel's latest import by time, where no sweep has succeeded: imports are few, so is
    # this index. Without it the planner costs that probe as a scan of the channel's runs, and
    # an as-of question crosses PostgreSQL's JIT threshold (seconds of compiling for a
    # millisecond's work).
    op.create_index(
        "ix_sync_runs_imports",
        "sync_runs",
        ["account_sid", "channel", "started_at"],
        postgresql_where=sa.text(IMPORTS),
        sqlite_where=sa.text(IMPORTS),
    )
    op.create_view(COVERAGE)
    op.replace_function(AS_OF)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"COMMENT ON VIEW blocklist_entries IS {sql_literal(ENTRIES_COMMENT)}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        entries = migration("0009").ENTRIES
        op.execute(f"COMMENT ON VIEW blocklist_entries IS {sql_literal(entries.comment)}")
    as_of, _, _ = migration("0011").functions()
    op.replace_function(as_of)
    op.drop_view(COVERAGE)
    op.drop_index("ix_sync_runs_imports", table_name="sync_runs")
    op.drop_index("ix_sync_runs_succeeded", table_name="sync_runs")
