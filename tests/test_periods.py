"""History as stored stretches (migration 0009): what sweeps write, what the migration builds,
and "was this number blocklisted at T" — in SQL (``blocklist_as_of``) and in ``lookup --at``.

The history comes from real sweeps of the simulator (tests/test_bi_views.py's four rounds over
three channels, moved to days apart), so every stretch is one the sync itself wrote.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from sqlalchemy import Engine, text

from sync import database, lookup, readings
from sync.simulator import Simulator
from sync.store import Store
from tests.conftest import cli_env, invoke, rows, serve_simulator
from tests.test_bi_views import (
    CHANNELS,
    DAYS_AGO,
    ROUNDS,
    N,
    Scenario,
    date_the_rounds,
    play_rounds,
    run_readme_query,
)


@pytest.fixture(scope="module")
def pg_url(module_pg_url: str) -> str:
    """This module's own database (conftest's ``module_pg_url``):
    its as-of questions read every account's rows."""
    return module_pg_url


IST = ZoneInfo("Asia/Kolkata")

PERIODS = """
    SELECT account_sid, channel, mobile, CASE WHEN removed_at IS NULL THEN channel_type END,
           added_at, added_not_before, removed_at, removed_not_before, initial_load,
           added_run_id, removed_run_id, proven_present_at
    FROM blocklist_periods ORDER BY account_sid, channel, mobile, added_run_id"""


def _same_times(table: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """SQLite hands back naive UTC datetimes or text; PostgreSQL aware ones: compare as UTC."""

    def utc(value: Any) -> Any:
        if isinstance(value, str) and value[:2] == "20" and ":" in value:
            value = dt.datetime.fromisoformat(value)
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return value

    return [tuple(utc(v) for v in row) for row in table]


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_the_migration_builds_exactly_the_stretches_the_sweeps_wrote(
    dialect: str, sim: Simulator, make_migrated_database: Callable[[], str], tmp_path: Path
) -> None:
    """Replay a recorded history, go back to 0008 (entries rebuilt from the open stretches; the
    events untouched) and forward again (stretches rebuilt from the events): every stretch comes
    back as the sweeps wrote it. Only channel_type of a stretch that ended is lost: the events
    never recorded it."""
    url = (
        database.resolve_database_url(make_migrated_database())
        if dialect == "postgresql"
        else f"sqlite:///{tmp_path / 'replay.db'}"
    )
    engine = database.make_engine(url)
    database.upgrade(engine)
    play_rounds(sim, Store(engine), ROUNDS)
    swept = _same_times(rows(engine, PERIODS))
    assert len(swept) > 10 and any(r[6] is not None for r in swept)  # closed stretches too
    open_stretches = {r[:3] for r in swept if r[6] is None}

    command.downgrade(database.alembic_config(engine), "0008")
    assert set(rows(engine, "SELECT account_sid, channel, mobile FROM blocklist_entries")) == open_stretches
    command.upgrade(database.alembic_config(engine), "head")
    assert _same_times(rows(engine, PERIODS)) == swept
    engine.dispose()


def test_the_migration_refuses_events_and_entries_that_disagree(tmp_path: Path) -> None:
    engine = database.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = database.alembic_config(engine)
    command.upgrade(config, "0008")
    with engine.begin() as c:  # an entry no event ever added
        c.execute(
            text(
                "INSERT INTO blocklist_entries (account_sid, channel, mobile, channel_type, added_at, "
                "added_run_id) VALUES ('HX1', 'sms', '+919000000001', '1', '2026-01-01 10:00:00', 1)"
            )
        )
    with pytest.raises(RuntimeError, match="disagree"):
        command.upgrade(config, "head")
    assert database.current_revision(engine) == "0008"
    assert rows(engine, "SELECT mobile FROM blocklist_entries") == [("+919000000001",)]
    engine.dispose()


# -- as of an instant ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario(pg_url: str) -> Scenario:
    """The four rounds over three channels, played and dated once per module (per worker) on a
    simulator of their own: every test here only reads them (as-of answers, lookup, daily
    figures, the README's questions), and playing them for each of the 21 tests was 21 x 12
    sweeps."""
    with serve_simulator() as sim:
        play_rounds(sim, Store(database.make_engine(pg_url)), ROUNDS)
    return date_the_rounds(database.make_engine(pg_url), sim.sid)


class AsOfRows(dict[tuple[str, str | None], str]):
    """``blocklist_as_of``'s rows of one account: (channel, mobile) -> state; a channel outside
    its coverage is one row, (channel, None) -> unknown."""

    def state(self, channel: str, mobile: str) -> str:
        """What the rows say of one number: its state, unknown for a channel outside its
        coverage, no when not returned."""
        if (channel, None) in self:
            return self[channel, None]
        return self.get((channel, mobile), "no")


def as_of(engine: Engine, sid: str, at: dt.datetime) -> AsOfRows:
    found = rows(
        engine,
        "SELECT channel, mobile, state FROM blocklist_as_of(:at) WHERE account_sid = :a",
        at=at,
        a=sid,
    )
    keys = [(c, m) for c, m, _ in found]
    assert len(keys) == len(set(keys)), "one row per number"
    unknown = {c for c, m, s in found if m is None}
    assert {c for c, m, s in found if s == "unknown"} == unknown, "only unknown rows have no number"
    assert not {c for c, m, _ in found if m is not None} & unknown, "an unknown channel has no number rows"
    return AsOfRows({(c, m): s for c, m, s in found})


def noon(scenario: Scenario, days_ago: float) -> dt.datetime:
    """An instant ``days_ago`` days before today's noon, UTC."""
    today = dt.datetime.combine(scenario.today, dt.time(12), dt.UTC)
    return today - dt.timedelta(days=days_ago)


@pytest.mark.parametrize(
    ("channel", "index", "days_ago", "state"),
    [
        ("sms", 0, 10, "yes"),  # listed at every sweep
        ("voice", 3, 10, "no"),  # removed by the sweep 13 days ago, never back
        ("voice", 3, 16, "uncertain"),  # between the sweep that showed it and the one that missed it
        ("voice", 3, 25, "unknown"),  # before the sync began: nothing was observed then
        ("sms", 0, 25, "unknown"),  # the same for a number listed at every sweep
        ("sms", 6, 25, "unknown"),  # and for one never listed: not a "no"
        ("sms", 0, -1, "unknown"),  # tomorrow: after the last sweep nothing has looked
        ("voice", 3, -1, "unknown"),  # the same for a number removed long ago
        ("sms", 5, 10, "no"),  # added by the last sweep, after the one 8 days ago began
        ("sms", 5, 5, "uncertain"),  # inside the window of that addition
        ("sms", 4, 10, "yes"),  # added 13 days ago, shown again 8 days ago
        ("sms", 4, 16, "uncertain"),  # inside the window of its addition
    ],
)
def test_as_of_answers_yes_no_uncertain_or_unknown(
    scenario: Scenario, engine: Engine, channel: str, index: int, days_ago: float, state: str
) -> None:
    at = noon(scenario, days_ago)
    assert as_of(engine, scenario.sid, at).state(channel, N[index]) == state


def test_as_of_agrees_with_lookup_at_every_instant(scenario: Scenario, engine: Engine) -> None:
    """The SQL function and lookup's rules are one definition: at each sweep's start and end,
    a minute either side, between sweeps, before the first and after the last, ``lookup --at``
    (which reads the function on PostgreSQL) and :func:`lookup.state_at` (SQLite's copy of the
    rule, applied here to the same stretches) give the function's answer for every number."""
    instants = [noon(scenario, 30), noon(scenario, -1)]
    for start, finish in zip(scenario.starts, scenario.finishes, strict=True):
        for t in (start, finish):
            instants += [t - dt.timedelta(minutes=1), t, t + dt.timedelta(minutes=1)]
        instants.append(start - dt.timedelta(days=2))
    parsed = [readings.normalise(n) for n in N]
    states: set[str] = set()
    for at in instants:
        in_sql = as_of(engine, scenario.sid, at)
        for report in lookup.look_up(engine, parsed, at=at):
            assert report.mobile is not None
            for ch in report.channels:
                if ch.account_sid != scenario.sid:
                    continue
                assert ch.as_of is not None
                in_python = lookup.state_at(ch.intervals, at, ch.coverage)
                expected = in_sql.state(ch.channel, report.mobile)
                assert (str(ch.as_of.state), str(in_python.state)) == (expected, expected), (
                    at,
                    ch.channel,
                    report.mobile,
                )
                assert ch.as_of.why == in_python.why and ch.as_of.stretch == in_python.stretch
                states.add(expected)
    assert states == {"yes", "no", "uncertain", "unknown"}


def test_as_of_reaches_one_number_through_its_index(scenario: Scenario, engine: Engine) -> None:
    """The one-number question (compliance: "was it suppressed when we sent?") reads the
    stretches' primary key, never the whole table."""
    # The scenario's table is tiny, so the planner would rightly scan it: forbid that, to see
    # that the filter reaches the index through the inlined function at all.
    with engine.connect() as c:
        c.execute(text("SET enable_seqscan = off"))
        explained = c.execute(
            text("EXPLAIN SELECT * FROM blocklist_as_of(now()) WHERE mobile = :m"), {"m": N[1]}
        )
        plan = "\n".join(r[0] for r in explained)
    assert "Seq Scan on blocklist_periods" not in plan, plan
    # The guide's pattern that keeps a channel's unknown row reads the number's entries alone.
    with engine.connect() as c:
        c.execute(text("SET enable_seqscan = off"))
        explained = c.execute(
            text(
                "EXPLAIN SELECT * FROM blocklist_as_of(now()) "
                "WHERE account_sid = :a AND (mobile = :m OR state = 'unknown')"
            ),
            {"m": N[1], "a": scenario.sid},
        )
        plan = "\n".join(r[0] for r in explained)
    lines = plan.splitlines()
    scans = [i for i, line in enumerate(lines) if " on blocklist_periods" in line]
    assert scans and "Seq Scan on blocklist_periods" not in plan, plan
    assert all("Index Cond: ((mobile = " in lines[i + 1] for i in scans), plan


def test_lookup_at_answers_with_the_runs_that_prove_it(
    scenario: Scenario, engine: Engine, pg_url: str
) -> None:
    at = noon(scenario, 10).astimezone(IST)
    env = cli_env(None, pg_url)
    result = invoke("lookup", N[3], N[0], "--at", at.isoformat(), env=env)
    assert result.returncode == 0, result.stderr
    [removal] = rows(
        engine,
        "SELECT removed_run_id FROM blocklist_periods WHERE account_sid = :a AND channel = 'voice' "
        "AND mobile = :m",
        a=scenario.sid,
        m=N[3],
    )
    assert f"no, not blocklisted (removed by run {removal[0]}" in result.stdout
    assert "yes, blocklisted (added by run" in result.stdout
    record = json.loads(invoke("lookup", N[3], "--at", at.isoformat(), "--json", env=env).stdout)
    voice = next(
        c
        for c in record["numbers"][0]["channels"]
        if c["account_sid"] == scenario.sid and c["channel"] == "voice"
    )
    assert voice["at"]["state"] == "no" and voice["at"]["removed_run_id"] == removal[0]


@pytest.mark.parametrize("instant", ["yesterday", "2026-12-03T09:00", "2026-13-01T00:00Z", "9" * 100])
def test_lookup_at_refuses_an_instant_it_cannot_read(pg_url: str, instant: str) -> None:
    result = invoke("lookup", N[0], "--at", instant, env=cli_env(None, pg_url))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "with a zone" in line and len(line) < 200


# -- daily figures in a reporting time zone -------------------------------------------------


def test_daily_figures_in_india_count_the_days_of_india(scenario: Scenario, engine: Engine) -> None:
    """blocklist_daily_changes_in('Asia/Kolkata') counts each stretch's start and end on its
    Indian calendar day; the views are the same functions in UTC."""
    stretches = rows(
        engine,
        "SELECT channel, added_at, removed_at, initial_load FROM blocklist_periods WHERE account_sid = :a",
        a=scenario.sid,
    )
    for zone in ("Asia/Kolkata", "UTC"):
        tz = ZoneInfo(zone)
        expected: dict[tuple[dt.date, str], list[int]] = {}
        for channel, added_at, removed_at, initial in stretches:
            if not initial:
                expected.setdefault((added_at.astimezone(tz).date(), channel), [0, 0])[0] += 1
            if removed_at is not None:
                expected.setdefault((removed_at.astimezone(tz).date(), channel), [0, 0])[1] += 1
        found = rows(
            engine,
            "SELECT day, channel, added, removed FROM blocklist_daily_changes_in(:tz) WHERE account_sid = :a",
            tz=zone,
            a=scenario.sid,
        )
        assert {(d, c): [a, r] for d, c, a, r in found} == expected
    view = rows(
        engine, "SELECT * FROM blocklist_daily_size WHERE account_sid = :a ORDER BY 1, 3", a=scenario.sid
    )
    utc = rows(
        engine,
        "SELECT * FROM blocklist_daily_size_in('UTC') WHERE account_sid = :a ORDER BY 1, 3",
        a=scenario.sid,
    )
    assert view == utc and len(view) == 3 * (DAYS_AGO[0] + 1)
    india = rows(
        engine,
        "SELECT channel, entries FROM blocklist_daily_size_in('Asia/Kolkata') "
        "WHERE account_sid = :a AND day = (now() AT TIME ZONE 'Asia/Kolkata')::date",
        a=scenario.sid,
    )
    now = {
        c: n
        for c, n in rows(
            engine,
            "SELECT channel, COUNT(*) FROM blocklist_entries WHERE account_sid = :a GROUP BY channel",
            a=scenario.sid,
        )
    }
    assert dict(india) == now and set(now) == set(CHANNELS)


# -- the README's queries on the stretches ----------------------------------------------------


def test_readme_was_blocklisted_when_we_sent(scenario: Scenario, engine: Engine) -> None:
    # N[1], 10 days ago (between the rounds of 13 and 8 days ago): on whatsapp throughout; on sms
    # removed before and re-added after, on voice added after: the sweeps cannot say when.
    at = noon(scenario, 10).astimezone(IST).isoformat()
    found = run_readme_query(engine, "was-blocklisted-at", account=scenario.sid, mobile=N[1], at=at)
    assert [r[:2] for r in found] == [("sms", "uncertain"), ("voice", "uncertain"), ("whatsapp", "yes")]
    assert all(r[5] is not None for r in found)  # the run that proves each


def test_readme_how_many_were_blocklisted_at(scenario: Scenario, engine: Engine) -> None:
    at = noon(scenario, 10).astimezone(IST).isoformat()
    found = run_readme_query(engine, "blocklisted-at", account=scenario.sid, at=at)
    assert found == [
        # channel, blocklisted (yes), uncertain, unknown
        ("sms", 3, 1, False),  # N0, N2, N4; N1
        ("voice", 2, 1, False),  # N0, N6 (N3 was removed 13 days ago); N1
        ("whatsapp", 2, 1, False),  # N1, N2; N0, removed 8 days ago
    ]
    # Before the first sweep and after the last, every channel is unknown: no count, not 0.
    for days_ago in (25, -1):
        at = noon(scenario, days_ago).astimezone(IST).isoformat()
        found = run_readme_query(engine, "blocklisted-at", account=scenario.sid, at=at)
        assert found == [(channel, None, None, True) for channel in sorted(CHANNELS)]


def test_readme_was_blocklisted_when_we_sent_outside_coverage(scenario: Scenario, engine: Engine) -> None:
    """Before the sync began, the compliance question gets an unknown row per channel, never no
    rows (which would read as "not blocklisted"), even for a number listed at every sweep."""
    for days_ago in (25, -1):
        at = noon(scenario, days_ago).astimezone(IST).isoformat()
        found = run_readme_query(engine, "was-blocklisted-at", account=scenario.sid, mobile=N[0], at=at)
        assert found == [(channel, "unknown", *[None] * 5) for channel in sorted(CHANNELS)]


def test_readme_daily_trend_in_india(scenario: Scenario, engine: Engine) -> None:
    """The same changes as the UTC trend, on IST days: the rounds of past days ran at 12:05
    UTC (17:35 IST, the same date); today's ran now, which may already be tomorrow in India."""
    utc = run_readme_query(engine, "daily-trend", account=scenario.sid)
    today_in_india = scenario.finishes[-1].astimezone(IST).date()
    expected = [(today_in_india if d == scenario.today else d, *rest) for d, *rest in utc]
    assert run_readme_query(engine, "daily-trend-india", account=scenario.sid) == expected
