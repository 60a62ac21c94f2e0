"""What a vendor answer may prove, when the vendor is stale, shrinking, shuffling or glitching
(issue 27, items 3-7). Each test drives the simulator over real HTTP into a real PostgreSQL and
asserts the stored history: no false removal, no false addition, no window that misses the
truth."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from sync.guard import GuardLimits
from sync.simulator import Simulator
from sync.store import Store
from sync.sweep import Outcome
from tests.conftest import entries, numbers, rows, sweep


def db_now(engine: Engine) -> dt.datetime:
    [(now,)] = rows(engine, "SELECT clock_timestamp()")
    assert isinstance(now, dt.datetime)
    return now


def removed_events(engine: Engine, sim: Simulator) -> list[str]:
    return [
        mobile
        for (mobile,) in rows(
            engine,
            "SELECT mobile FROM blocklist_events WHERE account_sid = :a AND change = 'removed'",
            a=sim.sid,
        )
    ]


def last_run(engine: Engine, sim: Simulator) -> tuple[object, ...]:
    return rows(
        engine,
        "SELECT status, added, removed, unconfirmed, listing_complete FROM sync_runs "
        "WHERE account_sid = :a ORDER BY id DESC LIMIT 1",
        a=sim.sid,
    )[0]


def test_a_filter_answering_from_a_stale_cache_proves_no_removal(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    """A cache older than the last sweep knows the long-listed controls, not the newest
    numbers: the newest listed numbers are controls too, so its answers prove nothing."""
    old = numbers(200)
    sim.add("sms", old)
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED
    sim.freeze_filter()  # the filter's cache stops here
    newest = numbers(10, start=500)
    sim.add("sms", newest)
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED  # adds the ten; no removal to check
    sim.listing_skips = {newest[3]}  # the listing skips one of the newest; it is still listed
    sim.add("sms", numbers(5, start=700))  # this sweep's own additions
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert removed_events(engine, sim) == []
    assert newest[3] in entries(engine, sim)
    assert last_run(engine, sim) == ("succeeded", 5, 0, 1, False)  # kept, counted, incomplete


def test_a_filter_cap_that_shrinks_after_it_was_measured_proves_no_removal(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    """The first check answers 100 rows, every later one at most 20, keeping the first rows in
    the order asked. Each question of 95 candidates holds 16 still listed: with the controls,
    21 rows, one cut. Each answer is judged by its own controls, one of which is asked last."""
    listed = numbers(600)
    sim.add("sms", listed)
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED
    candidates = listed[:285]  # three questions of 95, in the order they are asked
    skipped = [m for i, m in enumerate(candidates) if i % 95 < 16]  # still blocklisted, not listed
    gone = [m for m in candidates if m not in skipped]  # truly unblocked
    sim.listing_skips = set(skipped)
    sim.remove("sms", gone)
    checks = 0

    def shrink(number: int, channel: str, query: dict[str, str]) -> None:
        nonlocal checks
        if "mobile" in query and checks >= 0:
            checks += 1
            sim.filter_cap = 100 if checks == 1 else 20

    sim.on_request(shrink)
    result = sweep(sim, store)
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert checks == 7  # the measure, then three questions, each cut and asked once more
    assert set(skipped) <= entries(engine, sim)  # not one false removal
    assert set(removed_events(engine, sim)) <= set(gone)  # what was removed truly was
    # An honest filter again: the true removals are proven, the skipped numbers still kept.
    checks, sim.filter_cap = -1, None
    assert sweep(sim, store, guard=GuardLimits(max_removal_fraction=0.5)).outcome is Outcome.SUCCEEDED
    assert sorted(removed_events(engine, sim)) == sorted(gone)
    assert set(skipped) <= entries(engine, sim)


def test_a_listing_whose_order_changes_while_it_is_paged_is_not_complete(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    """One number re-sorted to the end is listed twice; the number behind it slides under the
    offset, unseen. The sweep is incomplete, so the skipped number's addition window, found by
    the next sweep, starts at the last complete listing and holds its true addition."""
    held = numbers(100)
    sim.add("sms", held)
    first = sweep(sim, store)
    assert first.outcome is Outcome.SUCCEEDED
    newcomers = numbers(300, start=1000)  # the moved number ends up pages away from its first
    sim.add("sms", newcomers)
    added_at = db_now(engine)  # the newcomers' true addition, on the database's clock
    moved = False

    def reorder(number: int, channel: str, query: dict[str, str]) -> None:
        nonlocal moved
        if query.get("offset") == "100" and not moved:  # page one was served
            sim.move_to_end("sms", held[5])
            moved = True

    sim.on_request(reorder)
    second = sweep(sim, store)
    assert second.outcome is Outcome.SUCCEEDED, second.message
    assert second.diff is not None and second.diff.listing_complete is False
    assert newcomers[0] not in entries(engine, sim)  # slid under the offset: not seen
    third = sweep(sim, store)
    assert third.outcome is Outcome.SUCCEEDED and third.diff is not None and third.diff.added == 1
    [(not_before, detected_at)] = rows(
        engine,
        "SELECT added_not_before, added_at FROM blocklist_periods WHERE account_sid = :a AND mobile = :m",
        a=sim.sid,
        m=newcomers[0],
    )
    assert not_before <= added_at <= detected_at  # the window holds the truth


ERROR_OBJECT = json.dumps(
    {
        "code": "CNT196",
        "message": "Successfully fetched blocklisted number(s)",
        "data": [],
        "error": {"description": "Unable to fetch the blocklisted number"},
    }
).encode()
EMPTY = json.dumps({"code": "CNT196", "message": "Successfully fetched", "data": [], "error": {}}).encode()


@pytest.mark.parametrize("body", [ERROR_OBJECT, EMPTY], ids=["error-object", "empty-once"])
def test_an_empty_or_error_page_inside_a_first_sweep_does_not_end_it(
    sim: Simulator, store: Store, engine: Engine, no_backoff: Iterator[None], body: bytes
) -> None:
    listed = numbers(350)
    sim.add("sms", listed)
    sim.inject("raw", at=3, body=body)  # the third page, after two full ones
    first = sweep(sim, store)
    assert first.outcome is Outcome.SUCCEEDED, first.message
    assert entries(engine, sim) == set(listed)
    second = sweep(sim, store)
    assert second.diff is not None and (second.diff.added, second.diff.removed) == (0, 0)


def test_an_error_object_that_persists_fails_the_sweep_with_nothing_applied(
    sim: Simulator, store: Store, engine: Engine, no_backoff: Iterator[None]
) -> None:
    sim.add("sms", numbers(150))
    sim.inject("raw", at=2, times=100, body=ERROR_OBJECT)
    result = sweep(sim, store)
    assert result.outcome is Outcome.FAILED
    assert "with an error object" in (result.message or "")
    assert "Unable to fetch the blocklisted number" in (result.message or "")
    assert entries(engine, sim) == set()


def test_a_server_refusing_an_offset_past_the_end_ends_the_listing_there(
    sim: Simulator, store: Store, engine: Engine
) -> None:
    """Decided: a 400 right after a short page is the end the short page showed; anywhere
    else it is the error it says."""
    sim.past_end_status = 400
    sim.add("sms", numbers(250))
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED
    assert entries(engine, sim) == set(numbers(250))
    sim.remove("sms", numbers(10))
    result = sweep(sim, store)
    assert result.diff is not None and (result.diff.removed, result.diff.listing_complete) == (10, True)
    sim.add("sms", numbers(60, start=250))  # 300: the page after the last full one is past the end
    result = sweep(sim, store)
    assert result.outcome is Outcome.FAILED  # no short page said the list ended there
    assert "WA400" in (result.message or "")
