"""As-of at 0011's cost: the same answers as 0013, without what 0013 added to each question.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 05:00:00.000000

0013 made ``blocklist_as_of`` answer ``unknown`` outside each channel's coverage, and a
whole-account question became 1.8x slower on a year of history (docs/performance.md): the
coverage, inlined into every question, added some twenty small plan nodes that PostgreSQL
JIT-compiles with the question (half a second per question on a 2-core machine), and its join to
the stretches was estimated at 1/200 of its rows, so a ``GROUP BY state`` sorted a million rows
on disk. So, with the rules unchanged word for word (0009's "listed at T", 0013's coverage):

- ``blocklist_coverage_bounds()``: each account and channel's coverage bounds, as
  ``blocklist_coverage`` has them (without its counts, which read every run). It runs as a
  query of its own (declared STRICT, which the planner does not inline), a millisecond's work
  that nothing compiles, and safe in a parallel plan.
- ``blocklist_as_of(at)`` is 0011's SELECT again (0009's rules), each number branch filtered
  by the channel's coverage as a hashed set of (account, channel), which the planner counts
  as half the rows, not 1/200 of them, and the unknown rows as in 0013. The tie 0009 left open
  (two uncertain stretches added at the same instant) is decided by the later run, as
  ``lookup --at`` decides it. The whole question is costed as 0011's was, under the threshold
  where PostgreSQL spends seconds inlining and optimising its JIT code.

Arguments, result columns, comment and the unknown rows are 0013's. Downgrade restores 0013's
function and drops the bounds.

And once the migrations have committed (``after_commit``, run by ``blocklist-sync migrate``),
the stretches are rewritten in time order per channel. 0012's two UPDATEs gave every stretch
its event ids and left the table at 2.6 times its live rows (938 MB for 353 MB on a year of
1M-entry history, 59% free space): 0012 rewrote it with CLUSTER inside the migrations'
transaction, where CLUSTER keeps every row version that transaction wrote, so the rewrite freed
nothing. Every scan of the stretches read the bloat (the by-country views 0.26 s at 0011, 0.37 s
after).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from sync.views import Function, migration, op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


BOUNDS_COMMENT = (
    "Each account and channel's coverage bounds, as blocklist_coverage (covered_from, "
    "covered_to and their runs) without its counts: what blocklist_as_of reads. A query of its "
    "own (STRICT: not inlined), so a question over every stretch does not compile it."
)


def _yes(alias: str, rule: str) -> str:
    return rule.replace("p.", f"{alias}.").strip()


def functions() -> tuple[Function, Function]:
    """This revision's coverage bounds and as-of, built from 0013's rules (a later revision that
    replaces them restores these)."""
    old = migration("0013")
    bounds = Function(
        "blocklist_coverage_bounds",
        {},
        "TABLE (account_sid blocklist_key, channel blocklist_key, covered_from timestamptz, "
        "covered_from_run_id bigint, covered_to timestamptz, covered_to_run_id bigint)",
        f"""WITH RECURSIVE {old._ACCOUNTS.strip()}
SELECT c.account_sid::blocklist_key, c.channel::blocklist_key, c.covered_from,
       c.covered_from_run_id, c.covered_to, c.covered_to_run_id
FROM ({old._COVERAGE}) c""",
        BOUNDS_COMMENT,
        inlined=False,
    )
    yes = old._YES
    # The coverage is a filter on each branch (`... IS TRUE` keeps it a hashed subplan, not a
    # join), which the planner counts as half the rows: as a join it was counted as 1/200 of
    # them. Each branch's state stays a constant, so a filter on state (the guide's `mobile = :m
    # OR state = 'unknown'`) leaves each branch its number's index.
    covered = (
        "(({a}.account_sid, {a}.channel) IN (SELECT c.account_sid, c.channel "
        f"FROM blocklist_coverage_bounds() c WHERE {old._IN})) IS TRUE"
    )
    select = f"""
SELECT p.account_sid::blocklist_key, p.channel::blocklist_key, p.mobile::blocklist_key, 'yes',
       p.added_at, p.added_not_before,
       p.removed_not_before, p.removed_at, p.initial_load, p.added_run_id, p.removed_run_id
FROM blocklist_periods p
WHERE {yes.strip()}
  AND {covered.format(a="p")}
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
      AND NOT ({_yes("u", yes)})
      AND NOT EXISTS (
          SELECT 1 FROM blocklist_periods y
          WHERE y.mobile = u.mobile AND y.account_sid = u.account_sid AND y.channel = u.channel
            AND {_yes("y", yes)})
      AND {covered.format(a="u")}
    ORDER BY u.account_sid, u.channel, u.mobile, u.added_at DESC, u.added_run_id DESC
) d
UNION ALL
SELECT c.account_sid, c.channel, NULL::blocklist_key, 'unknown',
       NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean,
       NULL::bigint, NULL::bigint
FROM blocklist_coverage_bounds() c
WHERE NOT ({old._IN})
"""
    as_of = Function(old.AS_OF.name, old.AS_OF.arguments, old.AS_OF.returns, select, old.AS_OF.comment)
    return bounds, as_of


def after_commit(connection: Connection) -> None:
    """Rewrite the stretches without the dead space 0012 left, in time order per channel
    (CLUSTER needs a full index: one is made for it and dropped). Run after the migrations'
    transaction (:func:`sync.database.upgrade`), under CLUSTER's exclusive lock: about 20 s on a
    year of 1M-entry history. PostgreSQL only: SQLite's tables are rewritten by the migration."""
    if connection.dialect.name != "postgresql":
        return
    connection.execute(
        text("CREATE INDEX kbs_0014_order ON blocklist_periods (account_sid, channel, added_at)")
    )
    try:
        connection.execute(text("CLUSTER blocklist_periods USING kbs_0014_order"))
    finally:
        connection.execute(text("DROP INDEX kbs_0014_order"))
    connection.execute(text("ANALYZE blocklist_periods"))


def upgrade() -> None:
    bounds, as_of = functions()
    op.create_function(bounds)
    op.replace_function(as_of)


def downgrade() -> None:
    bounds, _ = functions()
    op.replace_function(migration("0013").AS_OF)
    op.drop_function(bounds)
