"""The vendor cannot make us lie: a misbehaving API never becomes history.

Each test drives a simulator that misbehaves the way a real API can (a filter that truncates
its answers, a tiny channel, a server that ignores ``channel``, offset drift that skips a new
number, a host whose clock is off) over real HTTP into a real PostgreSQL, and asserts the
invariant an analyst relies on: no event that did not happen, and every stored window holds the
moment the change truly happened.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from sync import database, lookup, readings
from sync.review import Review
from sync.simulator import Simulator
from sync.store import Store
from sync.sweep import Outcome
from sync.telemetry import Metrics
from tests.conftest import cli_env, entries, invoke, numbers, require_tool, rows, sweep


def events(engine: Engine, sim: Simulator, channel: str = "sms") -> list[tuple[Any, ...]]:
    """(mobile, change, not_before, detected_at) of ``sim``'s account on ``channel``, in order."""
    return rows(
        engine,
        "SELECT mobile, change, not_before, detected_at FROM blocklist_events "
        "WHERE account_sid = :a AND channel = :c ORDER BY id",
        a=sim.sid,
        c=channel,
    )


def run_row(engine: Engine, run_id: int | None) -> dict[str, Any]:
    found = rows(
        engine,
        "SELECT status, added, removed, unconfirmed, rescued, listing_complete FROM sync_runs WHERE id = :i",
        i=run_id,
    )
    names = ("status", "added", "removed", "unconfirmed", "rescued", "listing_complete")
    return dict(zip(names, found[0], strict=True))


def db_now(engine: Engine) -> dt.datetime:
    [(now,)] = rows(engine, "SELECT clock_timestamp()")
    assert isinstance(now, dt.datetime)
    return now


def skip_in_listing(sim: Simulator, channel: str, hidden: set[str]) -> None:
    """The listing leaves out ``hidden`` (still blocklisted): as paging over a moving list can."""
    original = sim.lists[channel].page
    # The simulator's listing, patched to move or lie as a vendor's (mypy forbids assigning a method).
    sim.lists[channel].page = lambda offset, limit: [  # type: ignore[method-assign]
        m for m in original(offset, limit) if m not in hidden
    ]


# -- 1. a filter that truncates its answers ----------------------------------------------------


@pytest.mark.parametrize("cap", [5, 20])
def test_a_truncating_filter_records_no_false_removal_and_the_true_ones(
    sim: Simulator, store: Store, engine: Engine, cap: int
) -> None:
    sim.add("sms", numbers(300))
    sweep(sim, store)
    hidden = set(numbers(30, start=100))  # still blocklisted, skipped by the listing
    gone = numbers(10, start=200)  # truly unblocked
    sim.remove("sms", gone)
    skip_in_listing(sim, "sms", hidden)
    sim.filter_cap = cap  # answers at most `cap` rows, whatever was asked
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED, result.message
    removed = {m for m, change, _, _ in events(engine, sim) if change == "removed"}
    assert removed == set(gone)  # the true removals, and not one false one
    assert hidden <= entries(engine, sim)
    assert run_row(engine, result.run_id)["rescued"] == 30  # the listing skipped them
    # Every check after the first asked no more than the filter had shown it answers.
    asked = [len(q["mobile"].split(",")) for _, _, q in sim.request_log if "mobile" in q]
    assert max(asked[1:]) <= cap


def test_an_answer_missing_a_control_proves_no_absence(sim: Simulator, store: Store, engine: Engine) -> None:
    sim.add("sms", numbers(300))
    sweep(sim, store)
    hidden = set(numbers(20, start=50))
    skip_in_listing(sim, "sms", hidden)
    calls = 0

    def cut_every_answer_after_the_first(request_number: int, channel: str, query: dict[str, str]) -> None:
        nonlocal calls
        if "mobile" in query:
            calls += 1
            sim.filter_cap = None if calls == 1 else 3  # honest once, then cut short

    sim.on_request(cut_every_answer_after_the_first)
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert not [e for e in events(engine, sim) if e[1] == "removed"]
    assert entries(engine, sim) == set(numbers(300))
    row = run_row(engine, result.run_id)
    assert row["unconfirmed"] + row["rescued"] == 20 and row["listing_complete"] is False


# -- 2. a tiny channel, or pages of one row -----------------------------------------------------


def test_a_listing_of_one_row_over_a_small_channel_confirms_no_removal(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(50))
    sweep(sim, store)
    before = (entries(engine, sim), events(engine, sim))
    # The simulator's listing, patched to move or lie as a vendor's (mypy forbids assigning a method).
    sim.lists["sms"].page = lambda offset, limit: numbers(1)[offset : offset + limit]  # type: ignore[method-assign]
    sim.lying_filter = True  # and the filter answers [] to everything
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert (entries(engine, sim), events(engine, sim)) == before
    assert run_row(engine, result.run_id)["unconfirmed"] == 49
    # Reported where operators look: status (from the health view) and the metrics.
    [status] = [s for s in store.channel_statuses() if s.account_sid == sim.sid]
    assert status.last_unconfirmed == 49
    metrics = Metrics()
    metrics.update([status])
    assert (
        metrics.registry.get_sample_value(
            "blocklist_sync_last_run_unconfirmed", {"account": sim.sid, "channel": "sms"}
        )
        == 49
    )
    # Controls are asked all the same: no answer was believed without one.
    assert all(numbers(1)[0] in q["mobile"] for _, _, q in sim.request_log if "mobile" in q)


def test_a_server_serving_one_row_per_page_confirms_no_false_removal(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(60))
    sweep(sim, store)
    skip_in_listing(sim, "sms", set(numbers(10, start=20)))
    sim.rows_per_page = 1  # listing pages and check answers alike
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert entries(engine, sim) == set(numbers(60))
    assert not [e for e in events(engine, sim) if e[1] == "removed"]


# -- 3. a server that ignores `channel` ----------------------------------------------------------


def test_a_server_ignoring_channel_applies_nothing_from_the_first_sweep(
    sim: Simulator, engine: Engine, pg_url: str
) -> None:
    for channel, count in (("sms", 300), ("whatsapp", 250), ("voice", 150)):
        sim.add(channel, numbers(count, start=1000 * len(channel)))
    sim.ignore_channel = True
    result = invoke("run", env=cli_env(sim, pg_url))
    assert result.returncode == 3, result.stderr
    # The codes, counted, in the message.
    assert "300 row(s) carry channel_type '1'" in result.stdout
    assert rows(engine, "SELECT COUNT(*) FROM blocklist_entries WHERE account_sid = :a", a=sim.sid) == [(0,)]
    assert rows(engine, "SELECT COUNT(*) FROM blocklist_events WHERE account_sid = :a", a=sim.sid) == [(0,)]


def test_a_server_that_starts_ignoring_channel_is_held_and_force_learns_the_codes(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    for channel in ("sms", "whatsapp"):
        sim.add(channel, numbers(50, start=100 if channel == "sms" else 500))
    sim.lists["sms"].channel_type = "7"  # any code, one per channel: never held
    for channel in ("sms", "whatsapp"):
        assert sweep(sim, store, channel).outcome is Outcome.SUCCEEDED
    sim.ignore_channel = True
    before = (entries(engine, sim, "sms"), events(engine, sim, "sms"))
    held = sweep(sim, store, "sms")
    assert held.outcome is Outcome.HELD and "whatsapp channels carry" in (held.message or "")
    assert (entries(engine, sim, "sms"), events(engine, sim, "sms")) == before
    forced = sweep(sim, store, "sms", review=Review.blind())
    assert forced.outcome is Outcome.SUCCEEDED
    learned = rows(
        engine,
        "SELECT channel, channel_type FROM blocklist_channel_types WHERE account_sid = :a ORDER BY 1, 2",
        a=sim.sid,
    )
    assert learned == [("sms", "3"), ("sms", "7"), ("whatsapp", "3")]


def test_rows_without_a_code_are_accepted(sim: Simulator, store: Store, engine: Engine) -> None:
    sim.add("sms", numbers(5))
    sim.inject(
        "raw",
        body=b'{"code": "CNT196", "message": "ok", "error": {}, "data": '
        b'[{"mobile": "+919000000000"}, {"mobile": "+919000000001", "channel_type": null}]}',
    )
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert {"+919000000000", "+919000000001"} <= entries(engine, sim)


# -- 4. honest windows under drift ----------------------------------------------------------------


def test_a_new_number_skipped_by_drift_gets_a_window_that_holds_its_true_time(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    held = numbers(300)
    sim.add("sms", held)
    first = sweep(sim, store)
    new = "+919111111111"
    added_at = db_now(engine)  # the moment the number is truly blocklisted
    # The vendor's order is not documented: here the new number sits among the old ones.
    order = [*held[:101], new, *held[101:]]
    sim.remove("sms", held)
    sim.add("sms", order)
    moved = False

    def drift(request_number: int, channel: str, query: dict[str, str]) -> None:
        nonlocal moved
        if query.get("offset") == "100" and "mobile" not in query and not moved:
            moved = True  # two numbers before the offset are unblocked while the sweep pages
            sim.remove("sms", held[:2])

    sim.on_request(drift)
    drifted = sweep(sim, store)
    assert drifted.outcome is Outcome.SUCCEEDED, drifted.message
    assert new not in entries(engine, sim)  # the listing skipped it ...
    row = run_row(engine, drifted.run_id)
    assert row["rescued"] >= 1 and row["listing_complete"] is False  # ... and knows it skipped rows
    after = sweep(sim, store)
    assert after.outcome is Outcome.SUCCEEDED
    [(_, change, not_before, detected_at)] = [e for e in events(engine, sim) if e[0] == new]
    assert change == "added"
    assert not_before <= added_at <= detected_at  # the window holds the truth
    started = rows(engine, "SELECT started_at FROM sync_runs WHERE id = :i", i=first.run_id)[0][0]
    assert not_before == started  # from the last complete listing, not the drifted one


# -- 5. one clock ---------------------------------------------------------------------------------


def _faketime() -> str:
    return require_tool("faketime", install="Debian/Ubuntu: apt-get install faketime")


@pytest.mark.slow
@pytest.mark.parametrize("offset", ["-1h", "+1h"])
def test_a_host_clock_that_is_off_never_reaches_a_stored_time(
    sim: Simulator, engine: Engine, pg_url: str, offset: str
) -> None:
    faketime = _faketime()
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", FAKETIME_DONT_FAKE_MONOTONIC="1")

    def run_skewed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [faketime, "-f", offset, *run_cli_argv(*args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    sim.add("sms", numbers(20))
    before = db_now(engine)
    assert run_skewed("run").returncode == 0
    sim.add("sms", ["+919222222222"])
    sim.remove("sms", numbers(2))
    second = run_skewed("run")
    assert second.returncode == 0, second.stderr
    after = db_now(engine)
    stored = rows(
        engine,
        "SELECT started_at, finished_at FROM sync_runs WHERE account_sid = :a "
        "UNION ALL SELECT not_before, detected_at FROM blocklist_events WHERE account_sid = :a",
        a=sim.sid,
    )
    times = [t for pair in stored for t in pair if t is not None]
    assert times and all(before <= t <= after for t in times)
    for _, _, not_before, detected_at in events(engine, sim):
        assert not_before is None or not_before <= detected_at
    # Freshness is judged on the database's clock too: just swept is fresh, seen from any host,
    # and a shard does not skip a channel for a sweep "in the future".
    assert run_skewed("status", "--max-age", "30m").returncode == 0
    skipped = run_skewed("run", "--skip-if-swept-within", "1s")
    assert skipped.returncode == 0 and "-" not in _ages(skipped.stdout)


def run_cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sync", *args]


def _ages(output: str) -> str:
    """The 'swept Ns ago' figures in a run's output, to look for a negative one."""
    return " ".join(re.findall(r"swept (-?\d+)s ago", output))


def test_a_window_that_ends_before_it_begins_cannot_be_stored(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(3))
    result = sweep(sim, store)
    for window, stretch in {
        "added_window": "now() - interval '1 hour', now(), NULL, NULL",
        "removed_window": "now() - interval '2 hours', NULL, now() - interval '1 hour', now()",
    }.items():
        with pytest.raises(Exception, match=f"ck_blocklist_periods_{window}"), engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO blocklist_periods (account_sid, channel, mobile, added_at, "
                    "added_not_before, removed_at, removed_not_before, initial_load, added_run_id, "
                    f"removed_run_id, added_event_id, removed_event_id) VALUES (:a, 'sms', "
                    f"'+919000000009', {stretch}, false, :r, :r, 1, 2)"
                ),
                {"a": sim.sid, "r": result.run_id},
            )


# -- found by review: the corners of the rules above ------------------------------------------------


def test_a_server_ignoring_channel_is_held_even_when_one_channel_holds_every_number(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(50))  # the other channels are empty: every row carries sms's code
    sim.ignore_channel = True
    held = sweep(sim, store, "sms")
    assert held.outcome is Outcome.HELD
    said = "50 row(s) carry channel_type '1', which the account's voice and whatsapp channels carry"
    assert said in (held.message or "")
    assert entries(engine, sim) == set() and events(engine, sim) == []


def test_an_honest_server_with_empty_channels_is_not_held(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(50))
    assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED
    assert entries(engine, sim) == set(numbers(50))


def test_a_channel_whose_single_code_turns_into_another_channels_is_held(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(20))
    assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED  # sms has carried '1'
    sim.remove("sms", numbers(20))
    sim.add("whatsapp", numbers(50, start=500))  # never swept here: nothing learned of it
    sim.ignore_channel = True  # sms now lists whatsapp's rows only, all '3'
    before = (entries(engine, sim), events(engine, sim))
    held = sweep(sim, store, "sms")
    assert held.outcome is Outcome.HELD, held.message
    assert (entries(engine, sim), events(engine, sim)) == before


def test_after_force_an_honest_channel_is_not_held_for_ever(sim: Simulator, store: Store) -> None:
    for channel, start in (("sms", 100), ("whatsapp", 500)):
        sim.add(channel, numbers(50, start=start))
        assert sweep(sim, store, channel).outcome is Outcome.SUCCEEDED
    sim.ignore_channel = True
    assert sweep(sim, store, "sms", review=Review.blind()).outcome is Outcome.SUCCEEDED  # sms learns '3' too
    sim.ignore_channel = False
    assert sweep(sim, store, "whatsapp").outcome is Outcome.SUCCEEDED, "whatsapp still carries its own '3'"


def test_force_over_an_empty_listing_still_proves_cut_answers(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(300))
    sweep(sim, store)
    sim.lists["sms"].page = lambda offset, limit: []  # type: ignore[method-assign]  # patched: an outage
    sim.filter_cap = 5  # and a filter that cuts its answers
    forced = sweep(sim, store, review=Review.blind())
    assert forced.outcome is Outcome.SUCCEEDED, forced.message
    assert entries(engine, sim) == set(numbers(300))  # all still blocklisted: none removed
    assert not [e for e in events(engine, sim) if e[1] == "removed"]


def test_force_over_an_emptied_channel_records_the_removals(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(30))
    sweep(sim, store)
    sim.remove("sms", numbers(30))
    assert sweep(sim, store).outcome is Outcome.HELD
    diff = sweep(sim, store, review=Review.blind()).diff
    assert diff is not None and diff.removed == 30
    assert entries(engine, sim) == set()


def test_a_run_dated_in_the_future_by_a_skewed_host_moves_no_window(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(20))
    first = sweep(sim, store)
    with engine.begin() as c:  # as a host an hour ahead wrote it, before 0008
        c.execute(
            text("UPDATE sync_runs SET started_at = started_at + interval '1 hour' WHERE id = :i"),
            {"i": first.run_id},
        )
    removed_at = db_now(engine)
    sim.remove("sms", numbers(2))
    skip = sweep(sim, store, skip_if_swept_within=1800.0, lock_held_is_skip=True)
    assert skip.outcome is Outcome.SUCCEEDED, skip.message  # not "swept -3599s ago"
    for _, change, not_before, detected_at in events(engine, sim):
        if change == "removed":
            assert not_before is None or not_before <= removed_at <= detected_at


def test_a_sqlite_upgrade_that_meets_a_window_written_by_skewed_hosts_changes_nothing(tmp_path: Path) -> None:
    engine = database.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = database.alembic_config(engine)
    command.upgrade(config, "0007")
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO blocklist_events (account_sid, channel, mobile, change, detected_at, "
                "not_before, initial_load, run_id) VALUES ('HX1', 'sms', '+919000000001', 'added', "
                "'2026-01-01 10:00:00.000000', '2026-01-01 11:00:00.000000', 0, 1)"
            )
        )
    with pytest.raises(RuntimeError, match="set their not_before to NULL"):
        command.upgrade(config, "head")
    assert database.current_revision(engine) == "0007"
    assert "unconfirmed" not in {c["name"] for c in inspect(engine).get_columns("sync_runs")}
    assert "blocklist_sync_health" in inspect(engine).get_view_names()
    with engine.begin() as c:  # what the message says to do
        c.execute(text("UPDATE blocklist_events SET not_before = NULL WHERE not_before > detected_at"))
    command.upgrade(config, "0008")
    assert database.current_revision(engine) == "0008"
    engine.dispose()


def _looked_up(engine: Engine, sim: Simulator, mobile: str) -> tuple[str, dict[str, object]]:
    [report] = lookup.look_up(engine, [readings.normalise(mobile)])
    report.channels = [c for c in report.channels if c.account_sid == sim.sid]
    channels = lookup.as_record(report)["channels"]
    assert isinstance(channels, list)
    [channel] = channels
    assert isinstance(channel, dict)
    return "\n".join(lookup.describe(report)), channel


def test_lookup_says_when_an_answer_rests_on_what_a_sweep_could_not_prove(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    sim.add("sms", numbers(50))
    sweep(sim, store)
    # The simulator's listing, patched to move or lie as a vendor's (mypy forbids assigning a method).
    sim.lists["sms"].page = lambda offset, limit: numbers(1)[offset : offset + limit]  # type: ignore[method-assign]
    sim.lying_filter = True
    diff = sweep(sim, store).diff
    assert diff is not None and diff.unconfirmed == 49
    kept = numbers(1, start=7)[0]
    said, record = _looked_up(engine, sim, kept)
    assert "kept: the last sweep could not confirm it" in said and record["unproven_since"]
    assert record["listing_complete"] is False
    never = "+919555555555"  # not held; the last listing was incomplete, so it may have missed it
    said, record = _looked_up(engine, sim, never)
    assert "that sweep's listing was incomplete" in said and record["blocklisted_now"] is False
