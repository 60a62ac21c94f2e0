"""The questions people ask: lookup, size over time, country, the HTML report.

Data comes from real sweeps of the simulator over real HTTP into the real PostgreSQL (and the
SQLite default), four rounds dated 20, 13, 8 and 0 days ago, so there are days without a sweep.
The numbers include a number removed and added back, and numbers from calling codes several
countries share (+1: Canada, Jamaica and the US; +44: Jersey; +7: Kazakhstan).
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import subprocess
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from sqlalchemy import Engine, text

from sync import database, regions, roles
from sync.simulator import Simulator
from sync.store import Store
from sync.store.schema import sync_runs
from sync.sweep import Outcome, SweepOptions, sweep_channel
from sync.vocabulary import Trigger
from tests.conftest import (
    cli_env,
    column_comments,
    invoke,
    make_client,
    require_tool,
    rows,
    run_cli,
    serve_simulator,
)
from tests.test_bi_views import (  # noqa: F401 - reader is a fixture
    Scenario,
    connect_as,
    date_the_rounds,
    reader,
    readme_queries,
    run_readme_query,
)

IN0, IN1, CA, JM, US, JE, KZ = M = [
    "+919876500000",
    "+919876500001",
    "+14165550123",
    "+18762101234",
    "+12015550123",
    "+447797712345",
    "+77012345678",
]
# What Kaleyra lists at each round (indexes into M). IN1 on sms: initial load, removed by
# round 2, added back by round 3, removed again by round 4.
ROUNDS: list[dict[str, set[int]]] = [
    {"sms": {0, 1, 2, 3}, "voice": {0, 4}},
    {"sms": {0, 2, 3, 5, 6}, "voice": {0, 4, 6}},
    {"sms": {0, 1, 2, 3, 5, 6}, "voice": {0, 6}},
    {"sms": {0, 2, 3, 4, 5}, "voice": {0, 6, 2}},
]
DAYS_AGO = (20, 13, 8, 0)  # as in test_bi_views, whose date_the_rounds moves the sweeps there


def play(sim: Simulator, store: Store) -> None:
    listed: dict[str, set[int]] = {"sms": set(), "voice": set()}
    for wanted in ROUNDS:
        for channel, now in wanted.items():
            sim.add(channel, [M[i] for i in sorted(now - listed[channel])])
            sim.remove(channel, [M[i] for i in sorted(listed[channel] - now)])
            listed[channel] = set(now)
            result = sweep_channel(make_client(sim), store, channel, SweepOptions(trigger=Trigger.SCHEDULED))
            assert result.outcome is Outcome.SUCCEEDED, result.message


@pytest.fixture(scope="module")
def history(pg_url: str) -> Scenario:
    """The rounds, played and dated once per module (per worker) on a simulator of their own:
    the 13 tests that take it only read it (lookup, the daily and country views), and playing
    it for each was 13 x 8 sweeps."""
    with serve_simulator() as sim:
        play(sim, Store(database.make_engine(pg_url)))
    return date_the_rounds(database.make_engine(pg_url), sim.sid)


@pytest.fixture
def own_database(sim: Simulator, make_migrated_database: Callable[[], str]) -> tuple[str, Scenario]:
    """A database holding only this history: the report shows every account it finds."""
    url = database.resolve_database_url(make_migrated_database())
    engine = database.make_engine(url)
    play(sim, Store(engine))
    return url, date_the_rounds(engine, sim.sid)


def expected_sizes(s: Scenario) -> dict[str, dict[dt.date, tuple[int, bool]]]:
    """Per channel and day from the first sweep to today: (entries at day's end, swept)."""
    out: dict[str, dict[dt.date, tuple[int, bool]]] = {}
    for channel in ("sms", "voice"):
        days = {}
        for day_ago in range(DAYS_AGO[0], -1, -1):
            done = [k for k, ago in enumerate(DAYS_AGO) if ago >= day_ago]
            days[s.day(day_ago)] = (len(ROUNDS[done[-1]][channel]), day_ago in DAYS_AGO)
        out[channel] = days
    return out


# -- lookup --------------------------------------------------------------------------------


def lookup(*args: str, db_url: str) -> tuple[int, str, str]:
    done = invoke("lookup", *args, env=cli_env(None, db_url))
    return done.returncode, done.stdout, done.stderr


def lookup_json(*args: str, db_url: str) -> tuple[int, Any, str]:
    """``lookup ARGS --json``: its exit code, its answer parsed (unless the command as a whole
    failed, with nothing on stdout) and its stderr. The answer is a JSON tree: a test indexes
    it as it expects it to be."""
    code, out, err = lookup(*args, "--json", db_url=db_url)
    return code, json.loads(out) if out else out, err


STRETCH_KEYS = ("added_not_before", "added_by", "removed_not_before", "removed_by", "initial_load")


def test_lookup_accepts_numbers_as_people_write_them(history: Scenario, pg_url: str) -> None:
    s = history
    code, out, _ = lookup_json("+91 98765 00001", "0091 98765-00001", "919876500001", db_url=pg_url)
    assert code == 0
    code, national, _ = lookup_json("098765 00001", "--country", "in", db_url=pg_url)
    assert code == 0
    answers = out["numbers"] + national["numbers"]
    assert {a["mobile"] for a in answers} == {IN1}
    for answer in answers:
        assert (answer["region"], answer["calling_code"], answer["found"], answer["blocklisted_now"]) == (
            "IN",
            91,
            True,
            False,
        )
        mine = {c["channel"]: c for c in answer["channels"] if c["account_sid"] == s.sid}
        assert set(mine) == {"sms", "voice"}  # every channel swept, found there or not
        assert mine["voice"]["intervals"] == [] and not mine["voice"]["blocklisted_now"]
        iso = [t.isoformat() for t in (*s.starts, *s.finishes)]
        starts, finishes = iso[:4], iso[4:]
        assert mine["sms"]["as_of"] == finishes[3]
        stretches = [{k: v for k, v in i.items() if k in STRETCH_KEYS} for i in mine["sms"]["intervals"]]
        assert stretches == [
            {
                "added_not_before": None,
                "added_by": finishes[0],
                "removed_not_before": starts[0],
                "removed_by": finishes[1],
                "initial_load": True,
            },
            {
                "added_not_before": starts[1],
                "added_by": finishes[2],
                "removed_not_before": starts[2],
                "removed_by": finishes[3],
                "initial_load": False,
            },
        ]


def test_lookup_prints_the_windows(history: Scenario, pg_url: str) -> None:
    s = history
    code, out, _ = lookup(JE, db_url=pg_url)
    assert code == 0
    assert isinstance(out, str)
    assert out.splitlines()[0] == f"{JE} (JE, +44): blocklisted now"
    stamp = "{:%Y-%m-%d %H:%M:%S} UTC".format
    assert (
        f"  {s.sid} sms: blocklisted (as of the last sweep, {stamp(s.finishes[3])})\n"
        f"    added between {stamp(s.starts[0])} and {stamp(s.finishes[1])}; "
        "still blocklisted\n"
    ) in out
    assert f"  {s.sid} voice: not blocklisted" in out


def test_lookup_exit_codes(history: Scenario, pg_url: str) -> None:
    code, out, _ = lookup("+919999999999", db_url=pg_url)
    assert code == 1 and "never seen on any channel swept" in str(out)
    assert lookup(CA, "+919999999999", db_url=pg_url)[0] == 1  # one never seen: 1
    assert lookup(CA, KZ, db_url=pg_url)[0] == 0
    for garbage in ("hello", "+12", "0091", "98765 43210 --country XX", "+91" + "9" * 5000):
        code, out, err = lookup(*garbage.split(), db_url=pg_url)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and err.startswith("blocklist-sync: error: ")
        assert len(err) < 200


def test_a_national_number_is_read_in_the_default_country(history: Scenario, pg_url: str) -> None:
    """Indian support staff write mobiles as ten digits: with the default country set, that is
    the Indian number, found as stored."""
    env = cli_env(None, pg_url, BLOCKLIST_SYNC_DEFAULT_COUNTRY="IN")
    done = invoke("lookup", "98765 00001", "0 98765 00000", "+1 416 555 0123", "--json", env=env)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)["numbers"]
    assert [a["mobile"] for a in answers] == [IN1, IN0, CA]  # "+" still means international
    assert all(a["found"] and a["warning"] is None for a in answers)
    code, _, _ = lookup("9876500001", "--country", "in", db_url=pg_url)  # the flag, without the variable
    assert code == 0
    # What cannot be a number in that country names the setting as the operator set it.
    bad = invoke("lookup", "12", env=env)
    assert bad.returncode == 2 and bad.stderr == (
        "blocklist-sync: error: '12' cannot be a phone number in IN; write it as +919876543210, "
        "or with the right BLOCKLIST_SYNC_DEFAULT_COUNTRY\n"
    )
    _, _, err = lookup("12", "--country", "IN", db_url=pg_url)
    assert err.endswith("write it as +919876543210, or with the right --country\n")


def test_a_number_not_valid_where_it_was_read_is_never_a_silent_never_seen(
    history: Scenario, pg_url: str
) -> None:
    """Without a country, ten digits are read as an international number, +98 76…: Iran, and
    not a valid number there. The answer says so and names the reading the sync has seen."""
    code, out, _ = lookup("9876500001", db_url=pg_url)
    assert code == 2, "a doubtful reading never seen must not pass for 'not blocklisted' (exit 1)"
    header, warning = out.splitlines()[:2]
    assert header == "+9876500001 (IR, +98): never seen on any channel swept"
    assert warning == (
        "  warning: 9876500001 read as +9876500001 (Iran) is not a valid number there; "
        f"did you mean {IN1} (India, --country IN)? the sync has seen it"
    )
    # A reading nothing in the tables matches still gets a hint: the readings that are valid.
    code, answer, _ = lookup_json("9876543219", db_url=pg_url)
    [number] = answer["numbers"]
    assert code == 2 and number["exit_code"] == 2 and not number["found"]
    # Brazil, Germany, India, Mexico, the Philippines, Russia: the countries whose numbers the
    # tables hold (+91, +7) come first.
    assert (
        "not a valid number there; valid readings, none seen by the sync: "
        "+919876543219 (India, --country IN), +79876543219 (Russia, --country RU), "
        "+559876543219 (Brazil, --country BR) and 3 more: "
    ) in number["warning"]
    # A valid reading that is simply not blocklisted: exit 1, no warning.
    code, answer, _ = lookup_json("+919876543219", db_url=pg_url)
    assert code == 1 and answer["numbers"][0]["warning"] is None


def test_lookup_region_is_the_old_name_of_country(history: Scenario, pg_url: str) -> None:
    """--region means the API region everywhere else; on lookup it still reads a country, as
    scripts written before the rename expect, and says to use --country."""
    code, out, err = lookup("9876500001", "--region", "IN", db_url=pg_url)
    assert code == 0 and out.startswith(f"{IN1} (IN, +91): ")
    assert err == (
        "blocklist-sync: warning: lookup --region is deprecated, use --country: "
        "--region means the Kaleyra API region on every other command\n"
    )
    code, out, err = lookup("9876500001", "--region", "IN", "--country", "IN", db_url=pg_url)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "not --region too" in err


def test_every_number_the_sync_stores_is_found_as_stored(sim: Simulator, store: Store, pg_url: str) -> None:
    """Kaleyra lists numbers phonenumbers calls impossible or invalid; the sync stores them, so
    lookup finds them exactly as stored, and shows them so (not phonenumbers' rewriting)."""
    odd = ["+1234567", "+8001234", "+999123456789", "+4407911123456"]
    sim.add("sms", odd)
    assert sweep_channel(make_client(sim), store, "sms", SweepOptions()).outcome is Outcome.SUCCEEDED
    code, answer, err = lookup_json(*odd, "+44 07911 123456", db_url=pg_url)
    assert code == 0, err
    answers = answer["numbers"]
    assert [a["mobile"] for a in answers] == [*odd, "+4407911123456"]
    for a in answers:
        mine = [c for c in a["channels"] if c["account_sid"] == sim.sid]
        assert [(c["channel"], c["mobile"], c["blocklisted_now"]) for c in mine] == [
            ("sms", a["mobile"], True)
        ]
    assert [a["warning"] is not None for a in answers] == [True, True, True, False, False]
    code, out, _ = lookup("+999 123 456 789", db_url=pg_url)
    assert code == 0 and out.startswith("+999123456789 (no region): blocklisted now\n")


def test_each_argument_gets_its_own_answer(history: Scenario, pg_url: str) -> None:
    """One bad argument does not stop the others; the exit code is the worst of them."""
    code, out, err = lookup(CA, "hello", "+919999999999", db_url=pg_url)
    assert code == 2
    assert [line for line in out.splitlines() if not line.startswith(" ")] == [
        f"{CA} (CA, +1): blocklisted now",
        "+919999999999 (IN, +91): never seen on any channel swept",
    ]
    assert err == (
        "blocklist-sync: error: 'hello' cannot be a phone number; write it as +919876543210, "
        "or give --country for a national number\n"
    )
    code, answer, _ = lookup_json(CA, "hello", "+919999999999", db_url=pg_url)
    assert code == 2
    assert [(a["input"], a["exit_code"], a["error"] is None) for a in answer["numbers"]] == [
        (CA, 0, True),
        ("hello", 2, False),
        ("+919999999999", 1, True),
    ]
    assert lookup(CA, "+919999999999", db_url=pg_url)[0] == 1  # never seen is worse than found


def test_lookup_on_sqlite(sim: Simulator, sqlite_store: Store) -> None:
    play(sim, sqlite_store)
    url = str(sqlite_store.engine.url)
    code, out, _ = lookup_json("+1 416 555 0123", db_url=url)
    assert code == 0
    [answer] = out["numbers"]
    assert (answer["mobile"], answer["region"]) == (CA, "CA")
    channels = {c["channel"]: c for c in answer["channels"]}
    assert channels["voice"]["blocklisted_now"] and len(channels["voice"]["intervals"]) == 1
    assert channels["sms"]["blocklisted_now"] and channels["sms"]["intervals"][0]["initial_load"]
    code, out, _ = lookup_json("91 98765 00001", db_url=url)
    channels = {c["channel"]: c for c in out["numbers"][0]["channels"]}
    assert code == 0 and len(channels["sms"]["intervals"]) == 2 and not channels["voice"]["intervals"]


# -- size over time ------------------------------------------------------------------------


def sizes_of(engine: Engine, sid: str) -> dict[str, dict[dt.date, tuple[int, bool]]]:
    out: dict[str, dict[dt.date, tuple[int, bool]]] = {}
    with engine.connect() as c:
        c.execute(text("SET TIME ZONE 'Asia/Kolkata'"))
        for day, channel, entries, swept in c.execute(
            text(
                "SELECT day, channel, entries, swept FROM blocklist_daily_size "
                "WHERE account_sid = :a ORDER BY channel, day"
            ),
            {"a": sid},
        ):
            out.setdefault(channel, {})[day] = (entries, swept)
    return out


def test_daily_size_is_gap_free_and_carries_days_without_a_sweep(history: Scenario, engine: Engine) -> None:
    assert sizes_of(engine, history.sid) == expected_sizes(history)


def test_daily_size_agrees_with_the_events(history: Scenario, engine: Engine) -> None:
    net: Counter[tuple[str, dt.date]] = Counter()
    for channel, change, at in rows(
        engine,
        "SELECT channel, change, detected_at FROM blocklist_events WHERE account_sid = :a",
        a=history.sid,
    ):
        net[channel, at.astimezone(dt.UTC).date()] += 1 if change == "added" else -1
    for channel, days in sizes_of(engine, history.sid).items():
        for day, (entries, _) in days.items():
            assert entries == sum(n for (ch, d), n in net.items() if ch == channel and d <= day)


def test_readme_size_per_channel(history: Scenario, engine: Engine) -> None:
    found = run_readme_query(engine, "size-per-channel", account=history.sid)
    expected = expected_sizes(history)
    assert found == sorted(
        (day, channel, entries) for channel, days in expected.items() for day, (entries, _) in days.items()
    )


# -- country -------------------------------------------------------------------------------


def test_prefix_table_agrees_with_phonenumbers() -> None:
    """Every example number phonenumbers knows, shared calling codes included, lands where
    phonenumbers puts it, by the longest prefix in the committed table."""
    table: dict[str, object] = {}
    for row in regions.load():
        assert isinstance(row["prefix"], str)
        table[row["prefix"]] = row["region"]
    assert max(map(len, table)) <= regions.MAX_PREFIX_LENGTH == 10  # the views compare 10
    checked = 0
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in range(12):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            prefix = next(e164[:n] for n in range(len(e164), 1, -1) if e164[:n] in table)
            assert table[prefix] == regions.region_of(example), e164
            checked += 1
    assert checked > 1000


def by_country(engine: Engine, sid: str) -> dict[str, dict[tuple[str, int], int]]:
    out: dict[str, dict[tuple[str, int], int]] = {}
    for channel, region, code, entries in rows(
        engine,
        "SELECT channel, region, calling_code, entries FROM blocklist_by_country WHERE account_sid = :a",
        a=sid,
    ):
        out.setdefault(channel, {})[region, code] = entries
    return out


NOW_BY_COUNTRY = {
    "sms": {("IN", 91): 1, ("CA", 1): 1, ("JM", 1): 1, ("US", 1): 1, ("JE", 44): 1},
    "voice": {("IN", 91): 1, ("KZ", 7): 1, ("CA", 1): 1},
}


def test_entries_by_country_split_shared_calling_codes(history: Scenario, engine: Engine) -> None:
    assert by_country(engine, history.sid) == NOW_BY_COUNTRY


def test_changes_by_country_agree_with_phonenumbers(history: Scenario, engine: Engine) -> None:
    expected: Counter[tuple[Any, ...]] = Counter()
    for day, channel, mobile, change in rows(
        engine,
        "SELECT detected_at, channel, mobile, change FROM blocklist_events "
        "WHERE account_sid = :a AND NOT (change = 'added' AND initial_load)",
        a=history.sid,
    ):
        number = phonenumbers.parse(mobile)
        expected[
            day.astimezone(dt.UTC).date(), channel, regions.region_of(number), number.country_code, change
        ] += 1
    found: Counter[tuple[Any, ...]] = Counter()
    for day, channel, region, code, added, removed, net in rows(
        engine,
        "SELECT day, channel, region, calling_code, added, removed, net FROM "
        "blocklist_daily_changes_by_country WHERE account_sid = :a",
        a=history.sid,
    ):
        assert net == added - removed
        found.update(
            {(day, channel, region, code, "added"): added, (day, channel, region, code, "removed"): removed}
        )
    assert +found == expected and ("JE" in {k[2] for k in expected})


def test_readme_country_queries(history: Scenario, engine: Engine) -> None:
    now = run_readme_query(engine, "entries-by-country", account=history.sid)
    assert now == [("CA", 1, 2), ("IN", 91, 2), ("JE", 44, 1), ("JM", 1, 1), ("KZ", 7, 1), ("US", 1, 1)]
    # Last 30 days, initial load excluded: sms -IN1 +JE +KZ, +IN1, -IN1 +US -KZ; voice +KZ,
    # -US, +CA. Most additions first.
    added = run_readme_query(engine, "additions-by-country", account=history.sid)
    assert added == [("KZ", 7, 2, 1), ("CA", 1, 1, 0), ("IN", 91, 1, 2), ("JE", 44, 1, 0), ("US", 1, 1, 1)]


# -- the views on SQLite, comments, grant-read ---------------------------------------------


def test_views_on_sqlite(sim: Simulator, sqlite_store: Store) -> None:
    """The SQLite default has the same views; a day without a sweep carries the size there too."""
    play(sim, sqlite_store)
    engine = sqlite_store.engine
    today = dt.datetime.now(dt.UTC).date()
    with engine.begin() as c:  # move each channel's sweeps to DAYS_AGO, at noon UTC
        for channel in ("sms", "voice"):
            ids = (
                c.execute(text("SELECT id FROM sync_runs WHERE channel = :c ORDER BY id"), {"c": channel})
                .scalars()
                .all()
            )
            for run_id, ago in zip(ids, DAYS_AGO, strict=True):
                at = dt.datetime.combine(today - dt.timedelta(days=ago), dt.time(12), dt.UTC)
                c.execute(
                    sync_runs.update().where(sync_runs.c.id == run_id).values(started_at=at, finished_at=at)
                )
        # The stretches were detected by those sweeps: they take the same times.
        # The stretches were detected by those sweeps: they take the same times, and their
        # windows open at the start of the sweep before (the table refuses a window that ends
        # before it begins).
        before = (
            "(SELECT MAX(b.started_at) FROM sync_runs b WHERE b.account_sid = blocklist_periods.account_sid "
            "AND b.channel = blocklist_periods.channel AND b.status = 'succeeded' AND b.id < {})"
        )
        c.execute(
            text(
                "UPDATE blocklist_periods SET "
                "added_at = (SELECT finished_at FROM sync_runs WHERE id = added_run_id), "
                "added_not_before = CASE WHEN added_not_before IS NOT NULL "
                f"THEN {before.format('added_run_id')} END, "
                "removed_at = (SELECT finished_at FROM sync_runs WHERE id = removed_run_id), "
                f"removed_not_before = {before.format('removed_run_id')}"
            )
        )
    found = {
        (ch, dt.date.fromisoformat(d)): (n, bool(s))
        for d, ch, n, s in rows(engine, "SELECT day, channel, entries, swept FROM blocklist_daily_size")
    }
    scenario = Scenario(sid=sim.sid, starts=[], finishes=[], today=today)
    assert found == {(ch, d): v for ch, days in expected_sizes(scenario).items() for d, v in days.items()}
    assert by_country(engine, sim.sid) == NOW_BY_COUNTRY
    changes = rows(
        engine,
        "SELECT channel, region, SUM(added), SUM(removed) FROM "
        "blocklist_daily_changes_by_country GROUP BY channel, region "
        "ORDER BY channel, region",
    )
    assert ("sms", "IN", 1, 2) in changes and ("voice", "US", 0, 1) in changes


NEW_RELATIONS = (
    "blocklist_daily_size",
    "blocklist_by_country",
    "blocklist_daily_changes_by_country",
    "phone_prefixes",
)


def test_new_views_are_commented(engine: Engine) -> None:
    for view in NEW_RELATIONS:
        found = column_comments(engine, view)
        assert found and all(r[1] and r[2] for r in found), view
    comment = rows(engine, "SELECT col_description('blocklist_daily_size'::regclass, 4)")[0][0]
    assert "carried forward" in comment


def test_grant_read_covers_the_new_views(reader: tuple[str, str], sim: Simulator) -> None:  # noqa: F811
    url, role = reader
    engine = database.make_engine(url)
    play(sim, Store(engine))
    roles.grant_read(engine, role)
    with connect_as(url, role) as c:
        for relation in NEW_RELATIONS:
            counted = c.execute(f"SELECT COUNT(*) FROM {relation}").fetchone()
            assert counted is not None and counted[0] > 0, relation


# -- the report ----------------------------------------------------------------------------


def test_report_content(own_database: tuple[str, Scenario], tmp_path: Path) -> None:
    pg_url, s = own_database
    out = tmp_path / "report.html"
    done = invoke("report", "--out", str(out), "--days", "30", env=cli_env(None, pg_url))
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    # Fewer than 30 days of data: the period starts at the first sweep.
    assert (f"Period covered: {s.day(20).isoformat()} to {s.day(0).isoformat()} (UTC days, 21 days)") in page
    for channel, entries in (("sms", 5), ("voice", 3)):
        assert (
            f"<tr><td>{s.sid}</td><td>{channel}</td><td>succeeded</td>"
            f"<td>{s.finishes[3]:%Y-%m-%d %H:%M} UTC</td>"
        ) in page
        assert f"<td>{entries}</td>" in page
        for legend in (f"{s.sid} {channel}<", f"{s.sid} {channel} added<", f"{s.sid} {channel} removed<"):
            assert legend in page
    assert page.count("<svg") == 2
    # Self-contained: nothing is fetched, no script is loaded from anywhere.
    assert "<script src" not in page and " src=" not in page and "@import" not in page
    assert "href=" not in page.replace('xlink:href="#', "")

    nowhere = invoke("report", "--out", str(tmp_path / "no" / "such" / "dir.html"), env=cli_env(None, pg_url))
    assert nowhere.returncode == 2 and nowhere.stderr.strip().splitlines() == [
        f"blocklist-sync: error: cannot write {tmp_path}/no/such/dir.html: No such file or "
        "directory; choose another --out"
    ]

    short = invoke("report", "--out", str(out), "--days", "5", env=cli_env(None, pg_url))
    assert short.returncode == 0
    assert f"Period covered: {s.day(4).isoformat()} to {s.day(0).isoformat()}" in out.read_text()


def test_report_without_the_charting_extra(tmp_path: Path, pg_url: str) -> None:
    blocker = tmp_path / "no_pygal"
    (blocker / "pygal").mkdir(parents=True)
    (blocker / "pygal" / "__init__.py").write_text("raise ImportError('pygal is not installed')\n")
    done = run_cli(
        "report", "--out", str(tmp_path / "r.html"), env=cli_env(None, pg_url, PYTHONPATH=str(blocker))
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "blocklist-sync: error: the report needs the charting extra: pip install "
        "'kaleyra-blocklist-sync[report]' (or pip install pygal)"
    ]
    assert not (tmp_path / "r.html").exists()


def _browser() -> str:
    return require_tool(
        "chromium", "chromium-browser", "google-chrome", install="Debian: apt-get install chromium"
    )


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit, non-interlaced PNG (Chromium's)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        header = chunk if kind == b"IHDR" else header
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    bpp = 3 if colour == 2 else 4
    raw, stride, lines, previous = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                near = min(
                    (abs(p - left), left), (abs(p - up), up), (abs(p - corner), corner), key=lambda t: t[0]
                )
                line[i] = (line[i] + near[1]) & 0xFF
        lines.append(bytes(line))
        previous = line
    return (
        width,
        height,
        [
            bytes(x)
            for x in (lines if bpp == 3 else [bytes(b for j, b in enumerate(r) if j % 4 != 3) for r in lines])
        ],
    )


@pytest.mark.slow
def test_report_renders_in_a_browser(own_database: tuple[str, Scenario], tmp_path: Path) -> None:
    pg_url, _ = own_database
    browser = _browser()
    out, shot = tmp_path / "report.html", tmp_path / "report.png"
    assert invoke("report", "--out", str(out), env=cli_env(None, pg_url)).returncode == 0
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1100,1300",
            out.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    width, height, lines = png_pixels(shot.read_bytes())
    assert (width, height) == (1100, 1300)
    pixels = Counter(line[i : i + 3] for line in lines for i in range(0, len(line), 3))
    # pygal's first series colour (CleanStyle: dark blue, drawn at 70% opacity) is nowhere
    # else on the page: blue pixels are the chart lines and legend boxes. And much is not blank.
    assert sum(n for (r, g, b), n in pixels.items() if b - r > 60 and b - g > 30) > 200
    assert sum(n for rgb, n in pixels.items() if rgb != b"\xff\xff\xff") > width * height // 20


def test_report_on_sqlite(sim: Simulator, sqlite_store: Store, tmp_path: Path) -> None:
    play(sim, sqlite_store)
    out = tmp_path / "report.html"
    done = invoke("report", "--out", str(out), env=cli_env(None, str(sqlite_store.engine.url)))
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert f"Period covered: {today} to {today} (UTC days, 1 day)" in page
    # The line says what the page shows (one day: the first sweep was today), not the 90 asked.
    assert done.stdout.strip() == f"{out}: report of {today} to {today} (UTC days, 1 day) written"
    assert f"<td>{sim.sid}</td><td>sms</td><td>succeeded</td>" in page
    assert f"{sim.sid} voice added<" in page and page.count("<svg") == 2
