"""The vocabulary is the schema's: CHECK constraints allow exactly the enums' values; errors
decide their own scope."""

from __future__ import annotations

import enum
import re

import psycopg
import pytest
from sqlalchemy import Engine, text

from sync.job import Outcome, SweepOptions, sweep_accounts
from sync.simulator import Simulator
from sync.store import Store
from sync.vocabulary import Change, Channel, RunStatus, Trigger
from tests.conftest import account_of, make_client, numbers

CHECKED = [("sync_runs", "channel", Channel), ("sync_runs", "trigger", Trigger),
           ("sync_runs", "status", RunStatus), ("blocklist_events", "change", Change)]


@pytest.mark.parametrize(("table", "column", "words"), CHECKED)
def test_each_check_constraint_allows_exactly_the_enum(engine: Engine, table: str, column: str,
                                                       words: type[enum.StrEnum]) -> None:
    with engine.connect() as c:
        definition = c.execute(text(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname = :name"), {"name": f"ck_{table}_{column}"}).scalar_one()
    assert set(re.findall(r"'([^']+)'::text", definition)) == {w.value for w in words}
    # And the database really enforces it: every value goes in, anything else does not.
    with engine.connect() as c:
        c.execute(text("INSERT INTO sync_runs (id, account_sid, channel, trigger, status, "
                       "started_at) VALUES (-1, 'HXCHECK', 'sms', 'manual', 'running', now())"))
        for value in [*(w.value for w in words), "not-a-word"]:
            row = {"account_sid": "HXCHECK", "channel": "sms", "trigger": "manual",
                   "status": "failed", "mobile": "+919800000001", "change": "added",
                   column: value}
            statement = (
                "INSERT INTO sync_runs (account_sid, channel, trigger, status, started_at) "
                "VALUES (:account_sid, :channel, :trigger, :status, now())" if table == "sync_runs"
                else "INSERT INTO blocklist_events (account_sid, channel, mobile, change, "
                     "detected_at, initial_load, run_id) VALUES (:account_sid, :channel, :mobile, "
                     ":change, now(), false, -1)")
            c.execute(text("SAVEPOINT one"))
            try:
                c.execute(text(statement), row)
                accepted = True
            except Exception as exc:
                assert isinstance(getattr(exc, "orig", None), psycopg.errors.CheckViolation)
                accepted = False
            c.execute(text("ROLLBACK TO SAVEPOINT one"))
            assert accepted is (value != "not-a-word"), value
        c.rollback()


def test_a_whatsapp_only_refusal_does_not_skip_the_other_channels(sim: Simulator,
                                                                  store: Store) -> None:
    for channel in ("sms", "voice", "whatsapp"):
        sim.add(channel, numbers(5))
    sim.inject("WA401", channel="whatsapp", times=10)
    account = account_of(sim, ("whatsapp", "sms", "voice"))
    results = sweep_accounts([account], store, SweepOptions(), lambda _: make_client(sim))
    assert [(r.channel, r.outcome) for r in results] == [
        ("whatsapp", Outcome.FAILED), ("sms", Outcome.SUCCEEDED), ("voice", Outcome.SUCCEEDED)]


def test_a_low_balance_skips_the_rest_of_the_account(sim: Simulator, store: Store) -> None:
    sim.add("sms", numbers(5))
    sim.inject("E110", times=10)
    account = account_of(sim, ("sms", "whatsapp", "voice"))
    results = sweep_accounts([account], store, SweepOptions(), lambda _: make_client(sim))
    assert [(r.channel, r.outcome) for r in results] == [
        ("sms", Outcome.FAILED), ("whatsapp", Outcome.SKIPPED), ("voice", Outcome.SKIPPED)]
