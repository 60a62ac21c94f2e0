"""A seeded timeline against the truth: what ``blocklist_as_of`` and ``lookup --at`` answer,
compared with what was really listed, every true change timed on the database's clock.

A dated export is taken first (its time, hours back, is the truth's first instant); the
simulator then changes the list at real instants, read from the database's clock just before
and after each change, and sweeps run in between: some changes are undone before the next
sweep sees them (a number removed and added back, or added and removed). The export is then
imported before the first sweep. At more than 500 instants — spread over every stretch between
two observations, plus every edge the rows hold and a microsecond either side, before, inside
and after coverage — for every number of the pool:

- a definite answer (``yes``, or ``no``: a number not returned inside coverage) is the truth,
  except where the number changed and changed back between the two observations around the
  instant (no sweep can see that; counted apart, and documented in docs/analysts.md);
- outside coverage the answer is the channel's one ``unknown`` row, never a definite one;
- every stretch's windows hold a true change of its number;
- ``lookup --at`` answers exactly what ``blocklist_as_of`` does.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text

from sync import lookup, readings
from sync.backfill import Held, ImportOptions, Snapshot, import_snapshots
from sync.review import Review
from sync.simulator import Simulator
from sync.store import Store
from sync.vocabulary import Outcome
from tests.conftest import sweep


@pytest.fixture(scope="module")
def pg_url(module_pg_url: str) -> str:
    """This module's own database (conftest's ``module_pg_url``):
    its 500 as-of questions read every account's rows."""
    return module_pg_url


US = dt.timedelta(microseconds=1)
SWEEPS = 8
INSTANTS_PER_GAP = 30  # 17 gaps, and the edges: about 700 instants


def db_now(engine: Engine) -> dt.datetime:
    with engine.connect() as c:
        now = c.execute(text("SELECT clock_timestamp()")).scalar_one()
    assert isinstance(now, dt.datetime)
    return now


@dataclass
class Truth:
    """What was listed when: each number's changes, each known to lie in [before, after]."""

    start: dt.datetime  # the export's time: nothing is known before it
    listed_at_start: set[str]
    changes: dict[str, list[tuple[dt.datetime, dt.datetime, bool]]] = field(default_factory=dict)

    def change(self, mobile: str, listed: bool, before: dt.datetime, after: dt.datetime) -> None:
        self.changes.setdefault(mobile, []).append((before, after, listed))

    def listed(self, mobile: str, at: dt.datetime) -> bool | None:
        """Listed at ``at``; None inside a change's [before, after] (not known to the microsecond)."""
        state = mobile in self.listed_at_start
        for before, after, listed in self.changes.get(mobile, []):
            if before <= at <= after:
                return None
            if after < at:
                state = listed
        return state

    def changes_between(self, mobile: str, start: dt.datetime, end: dt.datetime) -> int:
        return sum(1 for before, after, _ in self.changes.get(mobile, []) if start <= before and after <= end)

    def changed_within(self, mobile: str, start: dt.datetime | None, end: dt.datetime, to: bool) -> bool:
        """A change of ``mobile`` to ``to`` in (start, end] (start None: since the beginning)."""
        if start is None and self.listed(mobile, self.start) is to:
            return True  # listed since before the sync began (an initial load)
        return any(
            listed is to and (start is None or before >= start) and after <= end
            for before, after, listed in self.changes.get(mobile, [])
        )


def _export(tmp_path: Path, listing: set[str]) -> Path:
    path = tmp_path / "export.csv"
    path.write_text("mobile,channel_type\n" + "".join(f"{m},1\n" for m in sorted(listing)))
    return path


def _as_of(c: Connection, sid: str, at: dt.datetime) -> tuple[dict[str, str], bool]:
    """blocklist_as_of(at) of sid's sms channel: each number's state, and whether it is unknown."""
    found = c.execute(
        text("SELECT mobile, state FROM blocklist_as_of(:at) WHERE account_sid = :a AND channel = 'sms'"),
        {"at": at, "a": sid},
    ).all()
    unknown = [m for m, s in found if s == "unknown"]
    assert not unknown or (unknown == [None] and len(found) == 1), found  # alone, and numberless
    return {str(m): str(s) for m, s in found if m is not None}, bool(unknown)


def test_the_answers_are_the_truth_wherever_they_are_definite(
    sim: Simulator, store: Store, engine: Engine, tmp_path: Path
) -> None:
    seed = int(os.environ.get("KBS_TIMELINE_SEED", "1"))
    rng = random.Random(seed)
    pool = [f"+9173{seed:03d}{i:04d}" for i in range(24)]
    sim.sid = sid = f"HXTIMELINE{seed:02d}{rng.randrange(16**6):06X}"
    # The export: the truth's first instant, two hours back.
    exported = set(rng.sample(pool, 12))
    truth = Truth(start=db_now(engine) - dt.timedelta(hours=2), listed_at_start=exported)
    listed = set(exported)

    def change(mobile: str, to: bool) -> None:
        before = db_now(engine)
        (sim.add if to else sim.remove)("sms", [mobile])
        truth.change(mobile, to, before, db_now(engine))
        (listed.add if to else listed.discard)(mobile)

    sim.add("sms", sorted(listed))  # as it was at the export; these rows change only below
    counts: Counter[str] = Counter()
    for k in range(SWEEPS):
        for mobile in rng.sample(pool, rng.randint(1, 4)):
            change(mobile, mobile not in listed)
        if k and rng.random() < 0.7:  # a change undone before any sweep sees it
            mobile = rng.choice(pool)
            change(mobile, mobile not in listed)
            change(mobile, mobile not in listed)
            counts["undone"] += 1
        result = sweep(sim, store)
        assert result.outcome is Outcome.SUCCEEDED, result.message
    snapshot = Snapshot(str(_export(tmp_path, exported)), truth.start)
    try:
        import_snapshots(store, [snapshot], ImportOptions(account_sid=sid, channel="sms"))
    except Held:  # a number the export lists, gone at the first sweep, listed again since: proven here
        import_snapshots(
            store, [snapshot], ImportOptions(account_sid=sid, channel="sms", review=Review.blind())
        )

    with engine.connect() as c:
        runs = c.execute(
            text(
                "SELECT started_at, finished_at FROM sync_runs WHERE account_sid = :a "
                "AND status = 'succeeded' ORDER BY finished_at"
            ),
            {"a": sid},
        ).all()
        stretches = c.execute(
            text(
                "SELECT mobile, added_not_before, added_at, removed_not_before, removed_at, "
                "proven_present_at FROM blocklist_periods WHERE account_sid = :a"
            ),
            {"a": sid},
        ).all()
        covered_from, covered_to = c.execute(
            text("SELECT covered_from, covered_to FROM blocklist_coverage WHERE account_sid = :a"), {"a": sid}
        ).one()
    # What a run observed, it observed from its start (the first page) to its commit.
    observations = sorted({t for run in runs for t in run})
    assert covered_from == truth.start and covered_to == runs[-1][1]

    # Every stretch's windows hold a true change of its number.
    for mobile, added_not_before, added_at, removed_not_before, removed_at, _ in stretches:
        assert truth.changed_within(mobile, added_not_before, added_at, True), (
            mobile,
            added_not_before,
            added_at,
        )
        if removed_at is not None:
            assert truth.changed_within(mobile, removed_not_before, removed_at, False), (mobile, removed_at)

    # The instants: every gap between observations sampled evenly, every edge the rows hold and
    # a microsecond either side, and hours before and after coverage.
    edges = {t for row in stretches for t in row[1:] if t is not None} | set(observations)
    instants = {e + d for e in edges for d in (-US, dt.timedelta(0), US)}
    spans = [truth.start - dt.timedelta(hours=1), *observations, covered_to + dt.timedelta(hours=1)]
    for start, end in itertools.pairwise(spans):
        instants |= {start + (end - start) * rng.random() for _ in range(INSTANTS_PER_GAP)}
    assert len(instants) >= 500

    connection = engine.connect()
    for at in sorted(instants):
        answers, unknown = _as_of(connection, sid, at)
        inside = covered_from <= at <= covered_to
        assert unknown is not inside, at  # unknown exactly outside coverage
        if unknown:
            counts["unknown"] += 1
            continue
        left = observations[max(0, bisect.bisect_right(observations, at) - 1)]
        right = observations[min(len(observations) - 1, bisect.bisect_left(observations, at))]
        for mobile in pool:
            state = answers.get(mobile, "no")
            true = truth.listed(mobile, at)
            if state == "uncertain" or true is None:
                counts[state] += 1
                continue
            if (state == "yes") is true:
                counts[f"{state}, true"] += 1
            elif truth.changes_between(mobile, left, right) >= 2:
                counts["undone between two observations, answered as both saw it"] += 1
            else:
                pytest.fail(f"{mobile} at {at}: answered {state}, truth {'listed' if true else 'not listed'}")
    # lookup --at answers what blocklist_as_of does, on every number, at a sample of instants.
    asked = [readings.normalise(m) for m in pool]
    for at in rng.sample(sorted(instants), 40):
        answers, unknown = _as_of(connection, sid, at)
        for report in lookup.look_up(engine, asked, at=at):
            [channel] = [c for c in report.channels if c.account_sid == sid]
            assert channel.as_of is not None
            expected = "unknown" if unknown else answers.get(str(report.mobile), "no")
            assert channel.as_of.state.value == expected, (report.mobile, at)
    connection.close()
    assert counts["yes, true"] and counts["no, true"] and counts["uncertain"] and counts["unknown"], counts
    print(f"\n{len(instants)} instants x {len(pool)} numbers: {dict(counts)}")
