"""Backfill from dated exports (issue 20): ``blocklist-sync import`` against real databases.

Into an empty channel, snapshots become exactly the history sweeps at those times would have
written (checked against real sweeps of the simulator, event for event and stretch for
stretch, with each time named by the run it belongs to); before a live history, only what the
snapshots prove changes; the same file twice is a no-op; bad input is one line, exit 2, and
nothing applied.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from sync import database, lookup, readings
from sync.simulator import Simulator
from sync.store import Store
from sync.vocabulary import Outcome
from tests.conftest import cli_env, invoke, numbers, rows, sweep

N = numbers(40)
# Four listings of one channel, with numbers coming, going and coming back.
LISTINGS = [
    set(N[0:20]),
    set(N[5:25]),
    set(N[5:15]) | set(N[25:30]) | {N[0]},
    set(N[5:12]) | set(N[25:35]),
]
DAY = dt.timedelta(days=1)


def _utc(value: Any) -> Any:
    if isinstance(value, str) and value[:2] == "20" and ":" in value:
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value


def history(
    engine: Engine, sid: str, channel: str = "sms"
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Stretches and events of one channel, every time and run id replaced by the position of
    the run it belongs to (0 for the first): what two histories made at different times share."""
    runs = rows(
        engine,
        "SELECT id, started_at, finished_at FROM sync_runs WHERE account_sid = :a AND channel = :c "
        "AND status = 'succeeded' ORDER BY started_at",
        a=sid,
        c=channel,
    )
    of_run = {run_id: k for k, (run_id, _, _) in enumerate(runs)}
    of_time: dict[Any, str] = {}
    for k, (_, started, finished) in enumerate(runs):
        of_time[_utc(started)] = f"start {k}"
        of_time.setdefault(_utc(finished), f"end {k}")

    def when(value: Any) -> Any:
        return None if value is None else of_time[_utc(value)]

    stretches = sorted(
        (
            m,
            when(aa),
            when(anb),
            when(ra),
            when(rnb),
            bool(il),
            of_run[ar],
            None if rr is None else of_run[rr],
        )
        for m, aa, anb, ra, rnb, il, ar, rr in rows(
            engine,
            "SELECT mobile, added_at, added_not_before, removed_at, removed_not_before, initial_load, "
            "added_run_id, removed_run_id FROM blocklist_periods WHERE account_sid = :a AND channel = :c",
            a=sid,
            c=channel,
        )
    )
    events = sorted(
        (m, change, when(at), when(nb), bool(il), of_run[r])
        for m, change, at, nb, il, r in rows(
            engine,
            "SELECT mobile, change, detected_at, not_before, initial_load, run_id FROM blocklist_events "
            "WHERE account_sid = :a AND channel = :c",
            a=sid,
            c=channel,
        )
    )
    return stretches, events


def _same_start_and_end(stretches: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """An import's run starts and ends at the export's time: name both the same."""
    return [
        tuple(v.replace("end", "start") if isinstance(v, str) and v[:3] == "end" else v for v in s)
        for s in stretches
    ]


def write_csv(path: Path, listing: set[str]) -> Path:
    path.write_text("mobile,channel_type\n" + "".join(f"{m},1\n" for m in sorted(listing)))
    return path


def exports(tmp_path: Path, listings: list[set[str]], first: dt.datetime) -> list[Path]:
    """The listings as export files named with their times, a day apart."""
    return [
        write_csv(tmp_path / f"blocklist-sms-{(first + k * DAY).strftime('%Y-%m-%dT%H%MZ')}.csv", listing)
        for k, listing in enumerate(listings)
    ]


def _import(url: str, sid: str, *args: str) -> Any:
    return invoke("import", "--account", sid, "--channel", "sms", *args, env=cli_env(None, url))


def _sid() -> str:
    return f"HXIMPORT{uuid.uuid4().hex[:10].upper()}"


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_an_empty_channel_import_equals_sweeping_the_same_listings(
    dialect: str, sim: Simulator, store: Store, tmp_path: Path
) -> None:
    for listing, previous in zip(LISTINGS, [set(), *LISTINGS], strict=False):
        sim.add("sms", sorted(listing - previous))
        sim.remove("sms", sorted(previous - listing))
        assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED
    swept = history(store.engine, sim.sid)

    url = str(store.engine.url.render_as_string(hide_password=False))
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'import.db'}"
        database.upgrade(database.make_engine(url))
    sid = _sid()
    files = exports(tmp_path, LISTINGS, dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC))
    done = _import(url, sid, *map(str, files))
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(LISTINGS)
    imported = history(database.make_engine(url), sid)

    assert imported[1] == [
        tuple(v.replace("end", "start") if isinstance(v, str) else v for v in e) for e in swept[1]
    ]
    assert imported[0] == _same_start_and_end(swept[0])
    assert len(imported[1]) > len(LISTINGS[0]) and any(e[1] == "removed" for e in imported[1])


def test_before_a_live_history_only_what_the_exports_prove_changes(
    sim: Simulator, store: Store, tmp_path: Path
) -> None:
    engine, sid = store.engine, sim.sid
    live = [set(N[10:30]), set(N[12:30])]
    sim.add("sms", sorted(live[0]))
    assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED
    sim.remove("sms", sorted(live[0] - live[1]))
    assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED
    live_removals = rows(
        engine, "SELECT * FROM blocklist_events WHERE account_sid = :a AND change = 'removed'", a=sid
    )
    (first_run, first_start, first_end), (last_run, last_start, _) = rows(
        engine, "SELECT id, started_at, finished_at FROM sync_runs WHERE account_sid = :a ORDER BY id", a=sid
    )
    # A year-old export and a newer one: N[0:15] then N[5:20] (N[20:30] arrived later, N[0:10]
    # and N[5:10] went before the first sweep).
    older, newer = set(N[0:15]), set(N[5:20])
    t_old, t_new = dt.datetime(2025, 12, 1, tzinfo=dt.UTC), dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    files = exports(tmp_path, [older], t_old) + exports(tmp_path, [newer], t_new)
    url = engine.url.render_as_string(hide_password=False)

    dry = _import(url, sid, *map(str, files), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would import" in dry.stdout and "e.g. gone before the earliest run" in dry.stdout
    assert rows(engine, "SELECT COUNT(*) FROM sync_runs WHERE account_sid = :a", a=sid) == [(2,)]

    done = _import(url, sid, *map(str, files))
    assert done.returncode == 0, done.stderr
    stretches = {
        (m, r): (_utc(aa), _utc(anb), _utc(ra), _utc(rnb), bool(il), ar, _utc(pp))
        for m, aa, anb, ra, rnb, il, ar, r, pp in rows(
            engine,
            "SELECT mobile, added_at, added_not_before, removed_at, removed_not_before, initial_load, "
            "added_run_id, removed_run_id, proven_present_at FROM blocklist_periods WHERE account_sid = :a",
            a=sid,
        )
    }
    runs = dict(
        rows(
            engine,
            "SELECT started_at, id FROM sync_runs WHERE account_sid = :a AND source_sha256 IS NOT NULL",
            a=sid,
        )
    )
    old_run, new_run = runs[t_old], runs[t_new]
    first_end = _utc(first_end)
    # Listed by both exports and the first sweep: one stretch, from the older export on.
    assert stretches[N[12], None] == (t_old, None, None, None, True, old_run, None)
    # Listed by the newer export and the first sweep only: added between the exports.
    assert stretches[N[16], None] == (t_new, t_old, None, None, False, new_run, None)
    # Listed by the first sweep only: added after the newer export, no longer initial load.
    assert stretches[N[25], None] == (first_end, t_new, None, None, False, first_run, None)
    # Listed by both exports, not shown by the first sweep: a sweep's listing may skip a row
    # unseen, so that proves no removal; kept open, listed for certain at the newer export.
    assert stretches[N[7], None] == (t_old, None, None, None, True, old_run, t_new)
    # Gone between the two exports: the newer export proves it.
    assert stretches[N[2], new_run] == (t_old, None, t_new, t_old, True, old_run, None)
    # The live removal is untouched.
    assert stretches[N[10], last_run][2:4] == (
        _utc(rows(engine, "SELECT finished_at FROM sync_runs WHERE id = :i", i=last_run)[0][0]),
        _utc(first_start),
    )
    # The events are the stretches': the live removals as they were, each addition once.
    assert (
        rows(
            engine, "SELECT * FROM blocklist_events WHERE account_sid = :a AND run_id = :l", a=sid, l=last_run
        )
        == live_removals
    )
    assert (
        rows(
            engine,
            "SELECT mobile FROM blocklist_events WHERE account_sid = :a AND change = 'added' "
            "GROUP BY mobile HAVING COUNT(*) > 1",
            a=sid,
        )
        == []
    )
    unconfirmed = dict(rows(engine, "SELECT id, unconfirmed FROM sync_runs WHERE account_sid = :a", a=sid))
    assert unconfirmed[new_run] == 5 and unconfirmed[old_run] == 0  # N[5:10], kept by the newer
    rewritten = dict(rows(engine, "SELECT id, rewritten FROM sync_runs WHERE account_sid = :a", a=sid))
    assert rewritten[new_run] == 20 and rewritten[old_run] == 15  # 20 of run 1, then 15 of the newer's
    # lookup shows imported history like swept history, marked, and answers as of the last
    # sweep (not of the import numbered after it) and at instants the exports reach.
    [report] = lookup.look_up(engine, [readings.normalise(N[12])], at=t_old + dt.timedelta(days=30))
    [channel] = [c for c in report.channels if c.account_sid == sid]
    last_end = rows(engine, "SELECT finished_at FROM sync_runs WHERE id = :i", i=last_run)[0][0]
    assert channel.last_success_at == _utc(last_end)
    assert [i.imported for i in channel.intervals] == [True]
    assert channel.as_of is not None and channel.as_of.state is lookup.State.YES
    assert "(from an imported export)" in "\n".join(lookup.describe(report))
    # An export is no sweep: the channel's health and the next sweep's window stay the live ones.
    assert rows(engine, "SELECT last_run_id FROM blocklist_sync_health WHERE account_sid = :a", a=sid) == [
        (last_run,)
    ]
    sim.add("sms", [N[39]])
    checked = sweep(sim, store, "sms")
    assert checked.outcome is Outcome.SUCCEEDED, checked.message
    # Its removal check proves the kept numbers gone: after the newer export, by this sweep.
    assert [
        (_utc(rnb), rr)
        for rnb, rr in rows(
            engine,
            "SELECT removed_not_before, removed_run_id FROM blocklist_periods "
            "WHERE account_sid = :a AND mobile = :m",
            a=sid,
            m=N[7],
        )
    ] == [(t_new, checked.run_id)]
    assert [
        (_utc(nb),)
        for (nb,) in rows(
            engine,
            "SELECT not_before FROM blocklist_events WHERE account_sid = :a AND mobile = :m",
            a=sid,
            m=N[39],
        )
    ] == [(_utc(last_start),)]


def test_the_same_file_twice_is_a_no_op(pg_url: str, tmp_path: Path) -> None:
    sid = _sid()
    (file,) = exports(tmp_path, [LISTINGS[0]], dt.datetime(2026, 2, 1, 9, tzinfo=dt.UTC))
    assert _import(pg_url, sid, str(file)).returncode == 0
    before = rows(
        database.make_engine(pg_url), "SELECT COUNT(*) FROM blocklist_events WHERE account_sid = :a", a=sid
    )
    again = _import(pg_url, sid, str(file))
    assert again.returncode == 0
    assert "already imported as run" in again.stdout and "nothing to do" in again.stdout
    engine = database.make_engine(pg_url)
    assert rows(engine, "SELECT COUNT(*) FROM blocklist_events WHERE account_sid = :a", a=sid) == before
    assert rows(engine, "SELECT COUNT(*) FROM sync_runs WHERE account_sid = :a", a=sid) == [(1,)]


def _bad_files(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = write_csv(tmp_path / "good.csv", LISTINGS[0])
    html = tmp_path / "page.csv"
    html.write_text("<html><body>Sign in</body></html>\n")
    no_column = tmp_path / "phones.csv"
    no_column.write_text("phone,date\n+919000000001,2026-01-01\n")
    letters = tmp_path / "letters.txt"
    letters.write_text("mobile\nabc\ndef\n")
    error = tmp_path / "error.json"
    error.write_text(json.dumps({"code": "CNT195", "message": "Unable to fetch", "data": [], "error": {}}))
    accepted = tmp_path / "accepted.json.gz"
    accepted.write_bytes(gzip.compress(json.dumps({"code": "WA202", "data": {"message_id": "A1"}}).encode()))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\x00\x81")
    truncated = tmp_path / "cut.json.gz"
    truncated.write_bytes(gzip.compress(b'{"data": [{"mobile": "+919000000001"}, {"mob')[:-6])
    at = "2026-03-01T00:00Z"
    return {
        "a missing file": (["--as-of", at, str(tmp_path / "missing.csv")], "cannot read"),
        "a directory": (["--as-of", at, str(tmp_path)], "not a regular file"),
        "a time in the future": (["--as-of", "2999-01-01T00:00Z", str(good)], "in the future"),
        "a time without a zone": (["--as-of", "2026-03-01T00:00", str(good)], "with a zone"),
        "a name without a time": ([str(good)], "give --as-of"),
        "an HTML page": (["--as-of", at, str(html)], "no `mobile` column"),
        "no mobile column": (["--as-of", at, str(no_column)], "no `mobile` column"),
        "no row a number": (["--as-of", at, str(letters)], "line 2 ('abc') cannot be read as a phone number"),
        "an error response": (["--as-of", at, str(error)], "not a listing"),
        "a 202 response": (["--as-of", at, str(accepted)], "not a listing"),
        "not text": (["--as-of", at, str(binary)], "not UTF-8"),
        "a cut gzip": (["--as-of", at, str(truncated)], "cannot be read"),
        "a bad file after a good one": (
            ["--as-of", "2026-01-01T00:00Z", "--as-of", at, str(good), str(html)],
            "no `mobile` column",
        ),
        "two times for one file": (["--as-of", at, "--as-of", at, str(good)], "once per file"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "a missing file",
        "a directory",
        "a time in the future",
        "a time without a zone",
        "a name without a time",
        "an HTML page",
        "no mobile column",
        "no row a number",
        "an error response",
        "a 202 response",
        "not text",
        "a cut gzip",
        "a bad file after a good one",
        "two times for one file",
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_applied(case: str, pg_url: str, tmp_path: Path) -> None:
    args, said = _bad_files(tmp_path)[case]
    sid = _sid()
    result = _import(pg_url, sid, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("blocklist-sync: error")]
    assert len(errors) == 1 and said in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    engine = database.make_engine(pg_url)
    assert rows(engine, "SELECT COUNT(*) FROM sync_runs WHERE account_sid = :a", a=sid) == [(0,)]
    assert rows(engine, "SELECT COUNT(*) FROM blocklist_periods WHERE account_sid = :a", a=sid) == [(0,)]


def test_a_time_between_live_sweeps_or_after_is_refused(sim: Simulator, store: Store, tmp_path: Path) -> None:
    sim.add("sms", N[:5])
    assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED
    assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED
    engine = store.engine
    (first_start,) = rows(engine, "SELECT MIN(started_at) FROM sync_runs WHERE account_sid = :a", a=sim.sid)[
        0
    ]
    file = write_csv(tmp_path / "x.csv", set(N[:3]))
    between = (_utc(first_start) + dt.timedelta(microseconds=1)).isoformat()
    url = engine.url.render_as_string(hide_password=False)
    before = rows(engine, "SELECT COUNT(*) FROM blocklist_periods WHERE account_sid = :a", a=sim.sid)
    result = _import(url, sim.sid, "--as-of", between, str(file))
    assert result.returncode == 2 and "not before the channel's first sweep" in result.stderr
    assert rows(engine, "SELECT COUNT(*) FROM blocklist_periods WHERE account_sid = :a", a=sim.sid) == before


def test_the_guard_holds_an_export_that_empties_a_channel(pg_url: str, tmp_path: Path) -> None:
    sid = _sid()
    full, empty = exports(tmp_path, [set(N[:30]), set()], dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    assert _import(pg_url, sid, str(full)).returncode == 0
    held = _import(pg_url, sid, str(empty))
    assert held.returncode == 3 and "held by the safety guard" in held.stderr
    engine = database.make_engine(pg_url)
    assert rows(engine, "SELECT COUNT(*) FROM sync_runs WHERE account_sid = :a", a=sid) == [(1,)]
    assert _import(pg_url, sid, str(empty), "--force").returncode == 0
    assert rows(engine, "SELECT COUNT(*) FROM blocklist_entries WHERE account_sid = :a", a=sid) == [(0,)]


def test_json_and_gzip_exports_as_the_api_returns_them(pg_url: str, tmp_path: Path) -> None:
    sid = _sid()
    body = {
        "code": "CNT196",
        "message": "ok",
        "data": [{"mobile": m, "channel_type": "3"} for m in numbers(107)],
        "error": {},
    }
    file = tmp_path / "blocklist-sms-2026-05-01T0000Z.json.gz"
    file.write_bytes(gzip.compress(json.dumps(body).encode()))
    done = _import(pg_url, sid, str(file))
    assert done.returncode == 0, done.stderr
    assert "107 numbers" in done.stdout
    engine = database.make_engine(pg_url)
    assert rows(
        engine,
        "SELECT source_file, source_bytes, length(source_sha256), trigger FROM sync_runs "
        "WHERE account_sid = :a",
        a=sid,
    ) == [(file.name, file.stat().st_size, 64, "backfill")]
    assert rows(
        engine, "SELECT DISTINCT channel_type FROM blocklist_entries WHERE account_sid = :a", a=sid
    ) == [("3",)]


def test_lookup_after_an_import_and_before_any_sweep_says_it_answers_as_of_the_import(
    sim: Simulator, pg_url: str, tmp_path: Path
) -> None:
    """Issue 29, item 8: the answer rests on an export, not on a sweep, and says so; once a
    sweep has run it rests on that sweep. A sweep recorded ``--trigger backfill`` (a backfill
    of a new channel by hand) is a sweep: its stretches are not "from an imported export"."""
    at = dt.datetime(2026, 2, 1, 9, tzinfo=dt.UTC)
    (file,) = exports(tmp_path, [{N[3]}], at)
    assert _import(pg_url, sim.sid, str(file)).returncode == 0
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")

    def mine(*numbers: str) -> list[str]:
        """This account's lines of the answer (other tests share the database and the numbers):
        its channel line and the stretch lines under it."""
        answer = invoke("lookup", *numbers, env=env)
        assert answer.returncode == 0, answer.stderr
        lines, keep = [], False
        for line in answer.stdout.splitlines():
            if not line.startswith("    "):
                keep = line.startswith(f"  {sim.sid} ")
            if keep:
                lines.append(line)
        return lines

    before = mine(N[3])
    assert before[0] == (
        f"  {sim.sid} sms: blocklisted (as of the last import (no sweep yet), an export of "
        "2026-02-01 09:00:00 UTC)"
    )
    record = json.loads(invoke("lookup", "--json", N[3], env=env).stdout)["numbers"][0]
    assert [c["as_of_import"] for c in record["channels"] if c["account_sid"] == sim.sid] == [True]
    sim.add("sms", [N[3], N[4]])
    assert invoke("run", "--trigger", "backfill", env=env).returncode == 0
    after = mine(N[3], N[4])
    answers = [line for line in after if not line.startswith("    ")]
    assert len(answers) == 2 and all("blocklisted (as of the last sweep, " in a for a in answers), answers
    # N[3]'s stretch came from the export; N[4]'s from the sweep, though it ran as a backfill.
    assert sum("(from an imported export)" in line for line in after) == 1
