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
  query of its own (``SET jit = off`` keeps it from being inlined), planned and executed once
  per question, a millisecond's work that nothing compiles.
- ``blocklist_as_of(at)`` reads the stretches twice, not three times: once for ``yes`` (0009's
  rule), once for ``uncertain``: ``at`` falls in the stretch or one of its windows, and no
  stretch of the same number is ``yes`` or later (by ``added_at``, then ``added_run_id``) and
  also holds ``at``. That is 0009's "yes wins, else the latest uncertain stretch", with the tie
  it left open decided as ``lookup --at`` decides it, checked by one probe of the number's key
  for each of the few stretches in a window (0013 read and hashed every ``yes`` stretch for it).
  A stretch is kept where its channel's coverage holds ``at``, tested as a hashed set of
  (account, channel), which the planner counts as half the rows, not 1/200 of them.

Arguments, result columns, comment and the unknown rows are 0013's. Downgrade restores 0013's
function and drops the bounds.
"""

from __future__ import annotations

from types import ModuleType

from sync.views import Function, op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _revision(name: str) -> ModuleType:
    script = op.get_context().script
    assert script is not None
    module = script.get_revision(name).module
    assert isinstance(module, ModuleType)
    return module


BOUNDS_COMMENT = (
    "Each account and channel's coverage bounds, as blocklist_coverage (covered_from, "
    "covered_to and their runs) without its counts: what blocklist_as_of reads. A query of its "
    "own (SET jit = off), so a question over every stretch does not compile it."
)


def _yes(alias: str, rule: str) -> str:
    return rule.replace("p.", f"{alias}.").strip()


def functions() -> tuple[Function, Function]:
    """This revision's coverage bounds and as-of, built from 0013's rules (a later revision that
    replaces them restores these)."""
    old = _revision("0013")
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
        settings={"jit": "off"},
    )
    # Where 'at' falls in a stretch or one of its windows (an initial load's start is unknown).
    holds = "COALESCE({a}.added_not_before, '-infinity') <= at AND at < COALESCE({a}.removed_at, 'infinity')"
    yes = old._YES
    # Each branch's state is a constant, so a filter on state (the guide's `mobile = :m OR state
    # = 'unknown'`) leaves each branch its number's index. The coverage is a filter (`... IS
    # TRUE` keeps it a hashed subplan), which the planner counts as half the rows: as a join it
    # was counted as 1/200 of them. The uncertain rule's check of the number's other stretches is
    # one probe of its key (LATERAL ... LIMIT 1), made only for the few stretches whose window
    # holds `at`: 0013's anti-join read and hashed every yes stretch for it.
    covered = (
        "((p.account_sid, p.channel) IN "
        f"(SELECT c.account_sid, c.channel FROM coverage c WHERE {old._IN})) IS TRUE"
    )
    select = f"""
WITH coverage AS (SELECT * FROM blocklist_coverage_bounds())
SELECT p.account_sid::blocklist_key, p.channel::blocklist_key, p.mobile::blocklist_key, 'yes',
       p.added_at, p.added_not_before, p.removed_not_before, p.removed_at, p.initial_load,
       p.added_run_id, p.removed_run_id
FROM blocklist_periods p
WHERE {_yes("p", yes)}
  AND {covered}
UNION ALL
SELECT p.account_sid::blocklist_key, p.channel::blocklist_key, p.mobile::blocklist_key,
       'uncertain', p.added_at, p.added_not_before, p.removed_not_before, p.removed_at,
       p.initial_load, p.added_run_id, p.removed_run_id
FROM blocklist_periods p
LEFT JOIN LATERAL (
    SELECT 1 AS found FROM blocklist_periods o
    WHERE o.mobile = p.mobile AND o.account_sid = p.account_sid AND o.channel = p.channel
      AND ({_yes("o", yes)}
           OR (o.added_at, o.added_run_id) > (p.added_at, p.added_run_id) AND {holds.format(a="o")})
    LIMIT 1
) overruled ON true
WHERE {holds.format(a="p")}
  AND NOT ({_yes("p", yes)})
  AND overruled.found IS NULL
  AND {covered}
UNION ALL
SELECT c.account_sid, c.channel, NULL::blocklist_key, 'unknown',
       NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean,
       NULL::bigint, NULL::bigint
FROM coverage c
WHERE NOT ({old._IN})
"""
    as_of = Function(old.AS_OF.name, old.AS_OF.arguments, old.AS_OF.returns, select, old.AS_OF.comment)
    return bounds, as_of


def upgrade() -> None:
    bounds, as_of = functions()
    op.create_function(bounds)
    op.replace_function(as_of)


def downgrade() -> None:
    bounds, _ = functions()
    op.replace_function(_revision("0013").AS_OF)
    op.drop_function(bounds)
