"""One as-of rule: the database's ``blocklist_as_of`` and lookup's :func:`~sync.lookup.state_at`
(SQLite's copy) give the same state for every number at every instant, unknown included.

Seeded histories made by real sweeps of the simulator into PostgreSQL, each mixing the
operations that write history differently: sweeps with additions and removals, a sweep the
guard holds and the forced sweep that applies it, a sweep whose removals a lying filter leaves
unconfirmed (``proven_present_at``), a failed sweep, imports of dated exports into an empty
channel and placed before a live history, and sometimes a held sweep after the last success
(coverage ends before it). The instants are every time the rows hold (each run's start and end,
each end of each stretch's windows, each ``proven_present_at``), a microsecond either side,
the midpoints between them, and a day before and after everything: before, inside and after
coverage, and exactly at its edges.

At each instant, for every number of the pool on every channel:

- the function's rows (one row per number, and for a channel outside its coverage exactly one
  row with no number and ``unknown``) equal ``state_at`` over the same stretches and coverage,
  read from PostgreSQL and, copied row for row, from SQLite;
- ``lookup --at``'s answer (the function's, on PostgreSQL; ``state_at``'s, on SQLite) is that
  state too, with the same words;
- a channel with no succeeded run has no row.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Unpack

import pytest
from sqlalchemy import Connection, Engine, select, text

from sync import lookup, readings
from sync.backfill import Held, ImportOptions, Refused, Snapshot, import_snapshots
from sync.guard import GuardLimits
from sync.review import Review
from sync.simulator import Simulator
from sync.store import Store
from sync.store.schema import blocklist_periods, sync_runs
from sync.sweep import SweepOptions, sweep_channel
from sync.vocabulary import Outcome
from tests.conftest import SweepOptionFields, make_client


@pytest.fixture(scope="module")
def pg_url(module_pg_url: str) -> str:
    """This module's own database (conftest's ``module_pg_url``):
    its as-of questions read every account's rows."""
    return module_pg_url


SEEDS = int(os.environ.get("KBS_AS_OF_SEEDS", "3"))
US = dt.timedelta(microseconds=1)
DAY = dt.timedelta(days=1)
LOOSE = GuardLimits(max_removal_fraction=1.0, min_entries=1_000_000)  # never holds
STRICT = GuardLimits(max_removal_fraction=0.2, min_entries=2)  # holds a large removal
LOOKUPS = 3  # instants per history also asked through lookup (the rest through state_at alone)

Key = tuple[str, str]  # (channel, mobile)


class History:
    """One seeded history of one account, written by real sweeps and imports."""

    def __init__(self, seed: int, sim: Simulator, store: Store, tmp_path: Path, seen: Counter[str]) -> None:
        self.seed, self.rng = seed, random.Random(seed)
        self.sim, self.store, self.tmp_path, self.seen = sim, store, tmp_path, seen
        self.sid = f"HXASOF{seed:03d}{uuid.uuid4().hex[:6].upper()}"
        self.pool = [f"+9172{seed:03d}{i:04d}" for i in range(9)]
        sim.sid = self.sid
        for channel in ("sms", "whatsapp"):
            sim.remove(channel, sim.numbers(channel))
        sim.lying_filter = False

    def sweep(self, channel: str = "sms", **options: Unpack[SweepOptionFields]) -> Outcome:
        result = sweep_channel(make_client(self.sim), self.store, channel, SweepOptions(**options))
        self.seen[f"sweep {result.outcome.label}"] += 1
        return result.outcome

    def change(self, *, removals: int = 2) -> None:
        listed = self.sim.numbers("sms")
        absent = [m for m in self.pool if m not in listed]
        self.sim.add("sms", self.rng.sample(absent, min(len(absent), self.rng.randint(0, 3))))
        room = max(0, len(listed) - 3)  # never empty: an empty listing is held, not swept
        self.sim.remove("sms", self.rng.sample(listed, min(room, removals)))

    def export(self, at: dt.datetime) -> None:
        """An export of a random part of the pool, taken at ``at``, imported (or refused)."""
        listing = self.rng.sample(self.pool, self.rng.randint(3, 7))
        path = self.tmp_path / f"{self.sid}-{at:%Y%m%dT%H%M%S%f}.csv"
        path.write_text("mobile,channel_type\n" + "".join(f"{m},1\n" for m in sorted(listing)))
        snapshot = Snapshot(str(path), at)
        try:
            import_snapshots(self.store, [snapshot], ImportOptions(account_sid=self.sid, channel="sms"))
            self.seen["import"] += 1
        except Refused:
            self.seen["import refused"] += 1
        except Held:  # it lists a number the first sweep missed and a later one listed: forced
            forced = ImportOptions(account_sid=self.sid, channel="sms", review=Review.blind())
            import_snapshots(self.store, [snapshot], forced)
            self.seen["import held, then forced"] += 1

    def earliest(self) -> dt.datetime:
        with self.store.engine.connect() as c:
            found = c.execute(
                text("SELECT MIN(started_at) FROM sync_runs WHERE account_sid = :a AND status = 'succeeded'"),
                {"a": self.sid},
            ).scalar_one()
        assert isinstance(found, dt.datetime)
        return found

    def fail(self, channel: str) -> None:
        self.sim.inject("503", times=3, channel=channel)  # every attempt of its first page
        assert self.sweep(channel, guard=LOOSE) is Outcome.FAILED
        self.sim.clear_faults()

    def play(self) -> None:
        now = self.store.now()
        self.fail("whatsapp")  # a channel nothing ever succeeded on: no rows, ever
        if self.seed % 2 == 0:  # exports into an empty channel, oldest first
            for hours in (72, 48):
                self.export(now - dt.timedelta(hours=hours, seconds=self.rng.randint(0, 3600)))
        else:
            self.fail("sms")  # a failed first sweep begins nothing
        self.sim.add("sms", self.rng.sample(self.pool, self.rng.randint(4, 7)))
        assert self.sweep(guard=LOOSE) is Outcome.SUCCEEDED
        steps = ["change", "held", "unconfirmed", "failed", "before"]
        self.rng.shuffle(steps)
        for step in steps:
            getattr(self, f"step_{step}")()
        if self.seed % 3 != 1:  # held after the last success: the coverage ends before it
            self.step_held(force=False)

    def step_change(self) -> None:
        self.change()
        assert self.sweep(guard=LOOSE) is Outcome.SUCCEEDED

    def step_held(self, *, force: bool = True) -> None:
        """A removal of most of what the channel holds: the guard holds it; forced, it applies."""
        with self.store.engine.connect() as c:
            held = set(
                c.execute(
                    text("SELECT mobile FROM blocklist_entries WHERE account_sid = :a AND channel = 'sms'"),
                    {"a": self.sid},
                ).scalars()
            )
        listed = self.sim.numbers("sms")
        self.sim.add("sms", [m for m in self.pool if m not in listed and m not in held][:3])  # never empty
        self.sim.add("sms", sorted(held - set(listed)))  # what it holds listed again, then most of it gone
        self.sim.remove("sms", sorted(held)[: max(1, min(len(held) - 1, len(held) // 2 + 1))])
        outcome = self.sweep(guard=STRICT)  # applied when too small to hold, or unproven (kept)
        assert outcome in (Outcome.HELD, Outcome.SUCCEEDED)
        if force and outcome is Outcome.HELD:
            assert self.sweep(guard=STRICT, review=Review.blind()) is Outcome.SUCCEEDED

    def step_unconfirmed(self) -> None:
        self.change(removals=2)
        self.sim.lying_filter = True  # every check answers no rows: removals cannot be proven
        assert self.sweep(guard=LOOSE) is Outcome.SUCCEEDED
        self.sim.lying_filter = False

    def step_failed(self) -> None:
        self.change()
        self.fail("sms")

    def step_before(self) -> None:
        """An older export placed before the channel's earliest run (refused when it may not)."""
        self.export(self.earliest() - dt.timedelta(hours=self.rng.randint(1, 48), microseconds=1))

    # -- what is compared ------------------------------------------------------------------

    def instants(self) -> list[dt.datetime]:
        """Every time the rows hold, a microsecond either side, the midpoints between them, and a
        day before and after all of them."""
        with self.store.engine.connect() as c:
            times = [
                t
                for row in c.execute(
                    text(
                        "SELECT started_at, finished_at, NULL, NULL, NULL FROM sync_runs "
                        "WHERE account_sid = :a UNION ALL "
                        "SELECT added_not_before, added_at, removed_not_before, removed_at, "
                        "proven_present_at FROM blocklist_periods WHERE account_sid = :a"
                    ),
                    {"a": self.sid},
                )
                for t in row
                if t is not None
            ]
        edges = sorted(set(times))
        middles = [a + (b - a) / 2 for a, b in itertools.pairwise(edges)]
        around = [t + d for t in edges for d in (-US, US)]
        return sorted({*edges, *middles, *around, edges[0] - DAY, edges[-1] + DAY})

    def copy_to(self, target: Engine) -> None:
        """This account's runs and stretches, row for row, into another database."""
        with self.store.engine.connect() as source, target.begin() as into:
            for table in (sync_runs, blocklist_periods):
                found = source.execute(select(table).where(table.c.account_sid == self.sid)).mappings().all()
                into.execute(table.insert(), [dict(r) for r in found])


def in_sql(db: Connection, sid: str, at: dt.datetime, pool: list[str], channels: set[str]) -> dict[Key, str]:
    """``blocklist_as_of(at)`` of one account as a state per (channel, number): its rows, unknown
    for every number of a channel whose one row says so, no for a number not returned."""
    found = db.execute(
        text("SELECT channel, mobile, state FROM blocklist_as_of(:at) WHERE account_sid = :a"),
        {"at": at, "a": sid},
    ).all()
    keys = [(channel, mobile) for channel, mobile, _ in found]
    assert len(keys) == len(set(keys)), ("one row per number", at)
    unknown = {channel for channel, mobile, _ in found if mobile is None}
    assert {channel for channel, _, state in found if state == "unknown"} == unknown, at
    assert not unknown & {channel for channel, mobile, _ in found if mobile is not None}, at
    assert {channel for channel, _, _ in found} <= channels, ("a row of a channel never observed", at)
    rows = {(channel, mobile): state for channel, mobile, state in found}
    return {
        (channel, m): "unknown" if channel in unknown else rows.get((channel, m), "no")
        for channel in channels
        for m in pool
    }


def by_rule(reports: list[lookup.NumberReport], sid: str, at: dt.datetime) -> dict[Key, lookup.AsOf]:
    """``state_at`` over the stretches and coverage lookup read, per (channel, number)."""
    return {
        (channel.channel, report.mobile or ""): lookup.state_at(channel.intervals, at, channel.coverage)
        for report in reports
        for channel in report.channels
        if channel.account_sid == sid
    }


def looked_up(engine: Engine, sid: str, pool: list[str], at: dt.datetime) -> dict[Key, lookup.AsOf]:
    """``lookup --at``'s answers, per (channel, number)."""
    found = {}
    for report in lookup.look_up(engine, [readings.normalise(m) for m in pool], at=at):
        for channel in report.channels:
            if channel.account_sid == sid:
                assert channel.as_of is not None
                found[channel.channel, report.mobile or ""] = channel.as_of
    return found


def test_the_function_and_the_python_rule_agree_on_every_number_at_every_instant(
    store: Store, engine: Engine, sqlite_store: Store, tmp_path: Path
) -> None:
    seen: Counter[str] = Counter()
    compared: Counter[str] = Counter()
    with Simulator.start(numbers=0, channels=("sms", "whatsapp")) as sim, engine.connect() as db:
        for seed in range(SEEDS):
            history = History(seed, sim, store, tmp_path, seen)
            history.play()
            history.copy_to(sqlite_store.engine)
            seen["stretch kept unproven"] += db.execute(
                text(
                    "SELECT COUNT(*) FROM blocklist_periods "
                    "WHERE account_sid = :a AND proven_present_at IS NOT NULL"
                ),
                {"a": history.sid},
            ).scalar_one()
            sid, pool = history.sid, history.pool
            parsed = [readings.normalise(m) for m in pool]
            from_pg = lookup.look_up(engine, parsed)
            from_sqlite = lookup.look_up(sqlite_store.engine, parsed)
            channels = {c.channel for r in from_pg for c in r.channels if c.account_sid == sid}
            assert channels == {"sms"}, "whatsapp never succeeded: lookup has no channel to answer on"
            instants = history.instants()
            asked = set(random.Random(seed).sample(range(len(instants)), LOOKUPS))
            for index, at in enumerate(instants):
                expected = in_sql(db, sid, at, pool, channels)
                rule_pg, rule_sqlite = by_rule(from_pg, sid, at), by_rule(from_sqlite, sid, at)
                assert {k: str(a.state) for k, a in rule_pg.items()} == expected, (seed, at)
                assert {k: (a.state, a.why) for k, a in rule_sqlite.items()} == {
                    k: (a.state, a.why) for k, a in rule_pg.items()
                }, (seed, at)
                if index in asked:
                    for lookups in (
                        looked_up(engine, sid, pool, at),
                        looked_up(sqlite_store.engine, sid, pool, at),
                    ):
                        said = {k: (a.state, a.why, a.stretch) for k, a in lookups.items()}
                        assert said == {k: (a.state, a.why, a.stretch) for k, a in rule_pg.items()}, (
                            seed,
                            at,
                        )
                compared.update(expected.values())
    print(f"\n{SEEDS} histories: {dict(seen)}; answers compared: {dict(compared)}")
    # Every kind of history and every answer was met.
    assert {"sweep succeeded", "sweep held", "sweep failed", "import", "stretch kept unproven"} <= set(
        +seen
    ), seen
    assert set(compared) == {"yes", "no", "uncertain", "unknown"}, compared
