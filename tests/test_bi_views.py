"""The BI contract: the views, the README's queries and the read-only role, on real sweeps.

The data comes from real sweeps of the simulator (four rounds over three channels, with numbers
added, removed and added again between them), so every event is one the sync itself wrote. The
analysts' guide's queries (``docs/analysts.md``) are read from it and run exactly as written there: what
analysts copy is what is tested.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from psycopg import errors as pg_errors
from psycopg import sql
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from sync import database, roles
from sync.simulator import Simulator
from sync.store import Store
from sync.sweep import Outcome, SweepOptions, SweepResult, sweep_channel
from sync.vocabulary import Trigger
from tests.conftest import (
    PG_SERVER,
    REPO,
    cli_env,
    column_comments,
    invoke,
    make_client,
    numbers,
    rows,
    serve_simulator,
)

VIEWS = ("blocklist_intervals", "blocklist_daily_changes", "blocklist_sync_health", "blocklist_events")
TABLES = ("sync_runs", "blocklist_periods")
CHANNELS = ("sms", "whatsapp", "voice")
N = numbers(7)  # N[0] .. N[6]: +919000000000 .. +919000000006

# The scripted history: what Kaleyra lists on each channel at each round (indexes into N), and
# how many days ago each round's sweep ran. Round 1 is the initial load; between rounds numbers
# are added, removed, and added again (N[1] on sms: listed, removed, re-added, removed again).
# N[6] stays on voice throughout: a removal is proven only by a listing of two numbers or more
# (one to ask about beside it, one to show the answer was not cut short), so voice never
# shrinks to a single listed number.
ROUNDS: list[dict[str, set[int]]] = [
    {"sms": {0, 1, 2}, "whatsapp": {0, 1}, "voice": {0, 3, 6}},
    {"sms": {0, 2, 4}, "whatsapp": {0, 1, 2}, "voice": {0, 6}},
    {"sms": {0, 1, 2, 4}, "whatsapp": {1, 2}, "voice": {0, 1, 6}},
    {"sms": {0, 2, 4, 5}, "whatsapp": {0, 1, 2}, "voice": {0, 1, 2, 4, 6}},
]
# More than 7 days ago is surely before this week's Monday; the last round is this moment.
DAYS_AGO = (20, 13, 8, 0)
SWEEP_MINUTES = 5


@dataclass(frozen=True)
class Scenario:
    sid: str
    starts: list[dt.datetime]  # started_at of each round's sweeps (UTC)
    finishes: list[dt.datetime]  # finished_at, which is the detected_at of its events
    today: dt.date  # the UTC date of the last round

    def day(self, days_ago: int) -> dt.date:
        return self.today - dt.timedelta(days=days_ago)


def sweep(sim: Simulator, store: Store, channel: str) -> SweepResult:
    return sweep_channel(make_client(sim), store, channel, SweepOptions(trigger=Trigger.SCHEDULED))


def play_rounds(sim: Simulator, store: Store, rounds: list[dict[str, set[int]]]) -> None:
    """Change the simulator's lists to each round's, then sweep every channel: real events."""
    listed: dict[str, set[int]] = {channel: set() for channel in CHANNELS}
    for wanted in rounds:
        for channel in CHANNELS:
            sim.add(channel, [N[i] for i in sorted(wanted[channel] - listed[channel])])
            sim.remove(channel, [N[i] for i in sorted(listed[channel] - wanted[channel])])
            listed[channel] = set(wanted[channel])
            result = sweep(sim, store, channel)
            assert result.outcome is Outcome.SUCCEEDED, result.message


def date_the_rounds(engine: Engine, sid: str) -> Scenario:
    """Move this account's sweeps to DAYS_AGO, keeping every relation the sync wrote.

    The sweeps really ran seconds apart; the date queries need them days apart. So this test
    rewrites the timestamps of its own rows (account_sid = this test's SID, nothing else):
    each run's started_at/finished_at, then each stretch's added_at and removed_at (its runs'
    finished_at) and their not_before (the start of the previous succeeded run), exactly
    as the sync would have written them had the sweeps run on those days. Rounds 1-3 run at
    12:00 UTC; round 4 ends now.
    """
    with engine.begin() as c:
        now = c.execute(text("SELECT now()")).scalar_one().astimezone(dt.UTC)
        today = now.date()
        finishes = [
            now
            if days == 0
            else dt.datetime.combine(today - dt.timedelta(days=days), dt.time(12, SWEEP_MINUTES), dt.UTC)
            for days in DAYS_AGO
        ]
        starts = [t - dt.timedelta(minutes=SWEEP_MINUTES) for t in finishes]
        runs = c.execute(
            text("SELECT id, channel FROM sync_runs WHERE account_sid = :a ORDER BY id"), {"a": sid}
        ).all()
        round_of: dict[str, int] = {}
        for run_id, channel in runs:
            k = round_of[channel] = round_of.get(channel, -1) + 1
            c.execute(
                text("UPDATE sync_runs SET started_at = :s, finished_at = :f WHERE id = :id"),
                {"s": starts[k], "f": finishes[k], "id": run_id},
            )
        # Each stretch's ends take the times of the runs that detected them: the run's end,
        # and the start of the channel's succeeded run before it (blocklist_events, a view of
        # the stretches, follows).
        previous_start = (
            "(SELECT MAX(b.started_at) FROM sync_runs b WHERE b.account_sid = p.account_sid "
            "AND b.channel = p.channel AND b.status = 'succeeded' AND b.id < {run})"
        )
        c.execute(
            text(f"""
            UPDATE blocklist_periods p
            SET added_at = (SELECT finished_at FROM sync_runs r WHERE r.id = p.added_run_id),
                added_not_before = {previous_start.format(run="p.added_run_id")},
                removed_at = (SELECT finished_at FROM sync_runs r WHERE r.id = p.removed_run_id),
                removed_not_before = {previous_start.format(run="p.removed_run_id")}
            WHERE p.account_sid = :a"""),
            {"a": sid},
        )
    return Scenario(sid=sid, starts=starts, finishes=finishes, today=today)


@pytest.fixture(scope="module")
def scenario(pg_url: str) -> Scenario:
    """The four rounds, played and dated once per module (per worker) on a simulator of their
    own: the tests that take it only read it (the README's queries, the intervals, the daily
    changes), and playing it for each of them was 12 sweeps a test. A test that sweeps on
    after the rounds takes :func:`own_scenario`."""
    with serve_simulator() as sim:
        play_rounds(sim, Store(database.make_engine(pg_url)), ROUNDS)
    return date_the_rounds(database.make_engine(pg_url), sim.sid)


@pytest.fixture
def own_scenario(sim: Simulator, store: Store) -> Scenario:
    """The four rounds on ``sim``'s account, for a test that goes on sweeping it."""
    play_rounds(sim, store, ROUNDS)
    return date_the_rounds(store.engine, sim.sid)


# -- the README's queries ------------------------------------------------------------------

README = REPO / "docs" / "analysts.md"  # where the analysts' queries live
QUERY_NAMES = {
    "was-blocklisted-at",
    "blocklisted-at",
    "daily-trend-india",
    "was-blocklisted-on-date",
    "added-this-week",
    "blocklisted-on-every-channel",
    "daily-trend",
    "size-per-channel",
    "entries-by-country",
    "additions-by-country",
}
_QUERY = re.compile(r"<!-- query: ([\w-]+) -->\s*```sql\n(.*?)```", re.S)
_PSQL_VARIABLE = re.compile(r":'(\w+)'")


def readme_queries() -> dict[str, str]:
    """The ```sql blocks of docs/analysts.md, by their ``<!-- query: name -->``."""
    found = _QUERY.findall(README.read_text())
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"a query appears twice in docs/analysts.md: {names}"
    return dict(found)


def run_readme_query(engine: Engine, name: str, **params: object) -> list[tuple[Any, ...]]:
    """Run a README query as written, its psql variables (``:'x'``) bound as parameters.

    The session runs in India's time zone: the queries must mean UTC whatever the session's.
    """
    query = _PSQL_VARIABLE.sub(r"(:\1)", readme_queries()[name])
    with engine.connect() as c:
        c.execute(text("SET TIME ZONE 'Asia/Kolkata'"))
        return [tuple(r) for r in c.execute(text(query), params)]


def test_readme_has_every_query() -> None:
    assert set(readme_queries()) == QUERY_NAMES


@pytest.mark.parametrize(
    "mobile, days_ago, expected",
    [
        # N[1] on sms: initial load, removed by round 2, re-added by round 3, removed by round 4.
        # On whatsapp it stays from the initial load on; on voice it is added by round 3.
        (N[1], 20, [("sms", "yes"), ("whatsapp", "yes")]),  # round 1's sweep saw it that day
        (N[1], 15, [("sms", "maybe"), ("whatsapp", "yes")]),  # removed from sms between rounds 1-2
        (N[1], 25, [("sms", "maybe"), ("whatsapp", "maybe")]),  # before the sync began
        (N[1], 10, [("sms", "maybe"), ("voice", "maybe"), ("whatsapp", "yes")]),  # re-added later
        (N[1], 0, [("sms", "maybe"), ("voice", "yes"), ("whatsapp", "yes")]),
        (N[3], 13, [("voice", "maybe")]),  # removed from voice by round 2, which ran that day
        (N[3], 5, []),  # long gone
        (N[5], 1, [("sms", "maybe")]),  # added by round 4 (today), after round 3 started
        (N[5], 0, [("sms", "yes")]),
    ],
)
def test_readme_was_blocklisted_on_date(
    scenario: Scenario, engine: Engine, mobile: str, days_ago: int, expected: list[tuple[str, str]]
) -> None:
    found = run_readme_query(
        engine,
        "was-blocklisted-on-date",
        account=scenario.sid,
        mobile=mobile,
        day=scenario.day(days_ago).isoformat(),
    )
    assert [(r[0], r[1]) for r in found] == expected


def test_readme_was_blocklisted_on_date_gives_the_windows(scenario: Scenario, engine: Engine) -> None:
    s = scenario
    found = run_readme_query(
        engine, "was-blocklisted-on-date", account=s.sid, mobile=N[1], day=s.day(0).isoformat()
    )
    # sms: re-added by round 3 (after round 2 started), removed by round 4 (after round 3 started)
    assert found[0] == ("sms", "maybe", s.starts[1], s.finishes[2], s.starts[2], s.finishes[3])


def test_readme_added_this_week(scenario: Scenario, engine: Engine) -> None:
    # Only round 4 ran this week: sms +N5 (-N1), whatsapp +N0, voice +N2 +N4.
    found = run_readme_query(engine, "added-this-week", account=scenario.sid)
    assert found == [("sms", 1), ("voice", 2), ("whatsapp", 1)]


def test_readme_blocklisted_on_every_channel(scenario: Scenario, engine: Engine) -> None:
    found = run_readme_query(engine, "blocklisted-on-every-channel", account=scenario.sid)
    assert found == [(N[0],), (N[2],)]


def test_readme_daily_trend(scenario: Scenario, engine: Engine) -> None:
    d13, d8, today = scenario.day(13), scenario.day(8), scenario.day(0)
    found = run_readme_query(engine, "daily-trend", account=scenario.sid)
    assert found == [  # the initial load (20 days ago) is not a change
        (d13, "sms", 1, 1, 0),
        (d13, "voice", 0, 1, -1),
        (d13, "whatsapp", 1, 0, 1),
        (d8, "sms", 1, 0, 1),
        (d8, "voice", 1, 0, 1),
        (d8, "whatsapp", 0, 1, -1),
        (today, "sms", 1, 1, 0),
        (today, "voice", 2, 0, 2),
        (today, "whatsapp", 1, 0, 1),
    ]


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_readme_queries_run_in_psql(scenario: Scenario, pg_url: str, engine: Engine) -> None:
    """The README tells analysts to run the queries with psql -v; that must work as shown."""
    at = dt.datetime.combine(
        scenario.day(10), dt.time(17, 30), dt.timezone(dt.timedelta(hours=5, minutes=30))
    )
    params = {"account": scenario.sid, "mobile": N[1], "day": scenario.day(10).isoformat(), "at": str(at)}
    plain_url = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    for name, query in readme_queries().items():
        variables = [arg for key, value in params.items() for arg in ("-v", f"{key}={value}")]
        out = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                *variables,
                "-d",
                plain_url,
                "-f",
                "-",
            ],
            input=query,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PGTZ": "Asia/Kolkata"},
        )
        assert out.returncode == 0, out.stderr
        in_psql = [line.split("\t")[:2] for line in out.stdout.splitlines() if line]
        expected = run_readme_query(engine, name, **params)
        assert in_psql == [[str(v) for v in r[:2]] for r in expected], name
        assert expected, f"{name} returned nothing; the comparison would prove little"


# -- the views against the events ----------------------------------------------------------


def events_of(engine: Engine, sid: str) -> list[tuple[Any, ...]]:
    return rows(
        engine,
        "SELECT channel, mobile, change, detected_at, not_before, initial_load "
        "FROM blocklist_events WHERE account_sid = :a ORDER BY detected_at, id",
        a=sid,
    )


def intervals_from_events(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Stretches computed the slow, obvious way: walk the events in order, per number."""
    open_: dict[tuple[str, str], list[object]] = {}
    stretches: list[list[object]] = []
    for channel, mobile, change, detected_at, not_before, initial_load in events:
        if change == "added":
            assert (channel, mobile) not in open_, "added twice without a removal"
            open_[channel, mobile] = [channel, mobile, detected_at, not_before, None, None, initial_load]
            stretches.append(open_[channel, mobile])
        else:
            stretch = open_.pop((channel, mobile))
            stretch[4:6] = [detected_at, not_before]
    return sorted((tuple(s) for s in stretches), key=lambda s: (s[0], s[1], s[2]))


def intervals_of(engine: Engine, sid: str) -> list[tuple[Any, ...]]:
    return rows(
        engine,
        "SELECT channel, mobile, blocked_from, blocked_from_not_before, "
        "unblocked_at, unblocked_not_before, initial_load FROM blocklist_intervals "
        "WHERE account_sid = :a ORDER BY channel, mobile, blocked_from",
        a=sid,
    )


def test_intervals_agree_with_the_events(scenario: Scenario, engine: Engine) -> None:
    assert intervals_of(engine, scenario.sid) == intervals_from_events(events_of(engine, scenario.sid))


def test_intervals_of_a_number_removed_and_added_again(scenario: Scenario, engine: Engine) -> None:
    s = scenario
    sms_n1 = [r[2:] for r in intervals_of(engine, s.sid) if r[:2] == ("sms", N[1])]
    assert sms_n1 == [
        # initial load; removal seen by round 2, after round 1 started
        (s.finishes[0], None, s.finishes[1], s.starts[0], True),
        # re-added: seen by round 3, after round 2 started; removed again by round 4
        (s.finishes[2], s.starts[1], s.finishes[3], s.starts[2], False),
    ]


def test_intervals_say_what_each_sweep_saw(scenario: Scenario, engine: Engine) -> None:
    """At each sweep's commit, the stretches open then are exactly the lists it read."""
    stretches = intervals_of(engine, scenario.sid)
    for k, wanted in enumerate(ROUNDS):
        at = scenario.finishes[k]
        for channel in CHANNELS:
            open_then = {
                r[1] for r in stretches if r[0] == channel and r[2] <= at and (r[4] is None or r[4] > at)
            }
            assert open_then == {N[i] for i in wanted[channel]}, (k, channel)


def test_open_intervals_are_the_current_entries(scenario: Scenario, engine: Engine) -> None:
    open_now = rows(
        engine,
        "SELECT channel, mobile, blocked_from FROM blocklist_intervals "
        "WHERE account_sid = :a AND unblocked_at IS NULL ORDER BY 1, 2",
        a=scenario.sid,
    )
    entries = rows(
        engine,
        "SELECT channel, mobile, added_at FROM blocklist_entries WHERE account_sid = :a ORDER BY 1, 2",
        a=scenario.sid,
    )
    assert open_now == entries


def test_daily_changes_agree_with_the_events(scenario: Scenario, engine: Engine) -> None:
    expected: dict[tuple[dt.date, str], list[int]] = {}
    for channel, _, change, detected_at, _, initial_load in events_of(engine, scenario.sid):
        if change == "added" and initial_load:
            continue
        counts = expected.setdefault((detected_at.astimezone(dt.UTC).date(), channel), [0, 0])
        counts[change == "removed"] += 1
    found = rows(
        engine,
        "SELECT day, channel, added, removed, net FROM blocklist_daily_changes "
        "WHERE account_sid = :a ORDER BY day, channel",
        a=scenario.sid,
    )
    assert found == [(day, channel, a, r, a - r) for (day, channel), (a, r) in sorted(expected.items())]


def health_of(engine: Engine, sid: str) -> dict[str, tuple[Any, ...]]:
    found = rows(
        engine,
        """
        SELECT channel, last_run_id, last_run_status, last_run_started_at, last_run_finished_at,
               last_run_error, last_success_run_id, last_success_at,
               last_success_age = now() - last_success_at, entries
        FROM blocklist_sync_health WHERE account_sid = :a""",
        a=sid,
    )
    return {r[0]: r[1:] for r in found}


def test_sync_health(own_scenario: Scenario, sim: Simulator, store: Store, engine: Engine) -> None:
    s = own_scenario
    last_runs = dict(
        rows(
            engine, "SELECT channel, MAX(id) FROM sync_runs WHERE account_sid = :a GROUP BY channel", a=s.sid
        )
    )
    entries = {"sms": 4, "whatsapp": 3, "voice": 5}
    assert health_of(engine, s.sid) == {
        channel: (
            last_runs[channel],
            "succeeded",
            s.starts[3],
            s.finishes[3],
            None,
            last_runs[channel],
            s.finishes[3],
            True,
            entries[channel],
        )
        for channel in CHANNELS
    }
    # The view and `blocklist-sync status` must tell the same story.
    for status in store.channel_statuses():
        if status.account_sid == s.sid:
            row = health_of(engine, s.sid)[status.channel]
            assert (row[0], row[1], row[2], row[3], row[4], row[6], row[8]) == (
                status.last_run_id,
                status.last_status,
                status.last_started_at,
                status.last_finished_at,
                status.last_error,
                status.last_success_at,
                status.entries,
            )

    # Kaleyra suddenly lists nothing on voice: held, so the last run differs from the last success.
    sim.remove("voice", sim.numbers("voice"))
    held = sweep(sim, store, "voice")
    assert held.outcome is Outcome.HELD
    run_id, status, _, finished_at, error, success_id, success_at, age_ok, count = health_of(engine, s.sid)[
        "voice"
    ]
    assert (run_id, status, success_id, success_at, age_ok, count) == (
        held.run_id,
        "held",
        last_runs["voice"],
        s.finishes[3],
        True,
        5,
    )
    assert finished_at > s.finishes[3] and error.startswith("held by the safety guard")
    age = rows(
        engine,
        "SELECT last_success_age FROM blocklist_sync_health WHERE account_sid = :a AND channel = 'voice'",
        a=s.sid,
    )[0][0]
    assert isinstance(age, dt.timedelta) and age >= dt.timedelta(0)


def test_views_and_their_columns_are_commented(engine: Engine) -> None:
    for view in VIEWS:
        found = column_comments(engine, view)
        assert found and all(r[1] and r[2] for r in found), view
    comments = dict(
        r[:2]
        for r in rows(
            engine,
            """
        SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a
        WHERE a.attrelid = 'blocklist_intervals'::regclass AND a.attnum > 0""",
        )
    )
    assert "after blocked_from_not_before and no later than" in comments["blocked_from"]
    assert "after unblocked_not_before and no later than" in comments["unblocked_at"]


# -- the migration -------------------------------------------------------------------------


def test_migration_downgrades_and_upgrades(make_database: Callable[[], str], tmp_path: Path) -> None:
    for url in (database.resolve_database_url(make_database()), f"sqlite:///{tmp_path / 'm.db'}"):
        engine = database.make_engine(url)
        database.upgrade(engine)
        assert set(VIEWS) <= set(inspect(engine).get_view_names())
        command.downgrade(database.alembic_config(engine), "0001")
        assert not set(VIEWS) & set(inspect(engine).get_view_names())
        at_0001 = {"sync_runs", "blocklist_entries", "blocklist_events"}
        assert at_0001 <= set(inspect(engine).get_table_names())
        database.upgrade(engine)
        assert set(VIEWS) <= set(inspect(engine).get_view_names())


def test_views_on_sqlite_agree_with_the_events(sim: Simulator, sqlite_store: Store) -> None:
    """The demo runs on SQLite: the same views must exist there and mean the same."""
    play_rounds(sim, sqlite_store, ROUNDS)
    engine = sqlite_store.engine
    assert intervals_of(engine, sim.sid) == intervals_from_events(events_of(engine, sim.sid))
    # One day (all sweeps just ran): the day's counts are all changes after the initial load.
    daily = rows(
        engine,
        "SELECT channel, added, removed, net FROM blocklist_daily_changes "
        "WHERE account_sid = :a ORDER BY channel",
        a=sim.sid,
    )
    assert daily == [("sms", 3, 2, 1), ("voice", 3, 1, 2), ("whatsapp", 2, 1, 1)]
    health = rows(
        engine,
        "SELECT channel, last_run_status, last_success_age, entries "
        "FROM blocklist_sync_health WHERE account_sid = :a ORDER BY channel",
        a=sim.sid,
    )
    assert [(r[0], r[1], r[3]) for r in health] == [
        ("sms", "succeeded", 4),
        ("voice", "succeeded", 5),
        ("whatsapp", "succeeded", 3),
    ]
    assert all(0 <= r[2] < 600 for r in health)  # seconds: SQLite has no interval type


# -- the read-only role --------------------------------------------------------------------


def _plain(url: str, username: str | None = None) -> str:
    """A libpq URL (for psycopg and psql) from a SQLAlchemy one, with the user replaced."""
    return make_url(url).set(drivername="postgresql", username=username).render_as_string(hide_password=False)


@pytest.fixture
def reader(make_migrated_database: Callable[[], str]) -> Iterator[tuple[str, str]]:
    """A fresh migrated database (so default privileges stay in it) and a new login role.

    The role is cluster-wide, so it is dropped at the end: first what it holds in that database
    (DROP OWNED also removes its privileges and default privileges), then the role.
    """
    url = database.resolve_database_url(make_migrated_database())
    role = f"kbs_reader_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield url, role
    finally:
        with psycopg.connect(_plain(url), autocommit=True) as owner:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def connect_as(url: str, role: str) -> psycopg.Connection:
    return psycopg.connect(_plain(url, username=role), autocommit=True)


WRITES = [
    "INSERT INTO {t} DEFAULT VALUES",
    "UPDATE {t} SET account_sid = account_sid",
    "DELETE FROM {t}",
    "TRUNCATE {t}",
]


def test_read_only_role_reads_and_cannot_write(reader: tuple[str, str], sim: Simulator) -> None:
    url, role = reader
    engine = database.make_engine(url)
    play_rounds(sim, Store(engine), ROUNDS[:2])  # rows in every table and view
    roles.grant_read(engine, role)
    roles.grant_read(engine, role)  # again: changes nothing, fails nothing

    with connect_as(url, role) as c:
        assert c.execute("SELECT current_user").fetchone() == (role,)
        for relation in (*TABLES, *VIEWS):
            counted = c.execute(f"SELECT COUNT(*) FROM {relation}").fetchone()
            assert counted is not None and counted[0] > 0, relation
        for table in TABLES:
            for write in WRITES:
                with pytest.raises(pg_errors.InsufficientPrivilege):
                    c.execute(write.format(t=table))
        with pytest.raises(pg_errors.InsufficientPrivilege):
            c.execute("SELECT nextval('sync_runs_id_seq')")
        if c.info.server_version >= 150000:  # before 15, PUBLIC itself may create in public
            with pytest.raises(pg_errors.InsufficientPrivilege):
                c.execute("CREATE VIEW kbs_mine AS SELECT 1")
    granted = rows(
        engine,
        "SELECT DISTINCT privilege_type FROM information_schema.role_table_grants WHERE grantee = :r",
        r=role,
    )
    assert granted == [("SELECT",)]

    # A later migration adds a table and a view: the role can read them at once, not write.
    with engine.begin() as c:
        c.execute(text("CREATE TABLE kbs_later (n integer)"))
        c.execute(text("INSERT INTO kbs_later VALUES (7)"))
        c.execute(text("CREATE VIEW kbs_later_view AS SELECT n + 1 AS m FROM kbs_later"))
    with connect_as(url, role) as c:
        assert c.execute("SELECT m FROM kbs_later_view").fetchone() == (8,)
        with pytest.raises(pg_errors.InsufficientPrivilege):
            c.execute("INSERT INTO kbs_later VALUES (1)")


def test_grant_read_command(
    reader: tuple[str, str], make_database: Callable[[], str], tmp_path: Path
) -> None:
    url, role = reader
    with connect_as(url, role) as c, pytest.raises(pg_errors.InsufficientPrivilege):
        c.execute("SELECT 1 FROM blocklist_intervals")  # nothing before the grant

    done = invoke("grant-read", role, env=cli_env(None, url))
    assert done.returncode == 0, done.stderr
    assert role in done.stdout
    with connect_as(url, role) as c:
        assert c.execute("SELECT COUNT(*) FROM blocklist_intervals").fetchone() == (0,)

    def one_error(args: tuple[str, ...], db_url: str) -> str:
        result = invoke(*args, env=cli_env(None, db_url))
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("blocklist-sync: error: "), result.stderr
        return errors[0]

    unknown = f"kbs_nobody_{uuid.uuid4().hex[:8]}"
    assert f"role '{unknown}' does not exist" in one_error(("grant-read", unknown), url)
    sqlite = f"sqlite:///{tmp_path / 'blocklist-sync.db'}"
    assert "needs PostgreSQL" in one_error(("grant-read", role), sqlite)
    unmigrated = make_database()
    assert "migrate" in one_error(("grant-read", role), unmigrated)
