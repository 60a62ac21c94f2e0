"""What an operator and an orchestrator do around a sweep: a reviewed ``--force`` (a plan or
counts, refused when the sweep differs), the run summary, and the small fixes of issue 21
(``--skip-if-swept-within 0``, ``schedule --run-now``, settings named as they were set).

Everything through the CLI against a real PostgreSQL and the simulator over HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from sync.simulator import Simulator
from tests.conftest import REPO, cli_env, entries, invoke, numbers, rows, wait_for


def statuses(engine: Engine, sim: Simulator) -> list[str]:
    return [
        r[0]
        for r in rows(engine, "SELECT status FROM sync_runs WHERE account_sid = :a ORDER BY id", a=sim.sid)
    ]


@pytest.fixture
def held(sim: Simulator, pg_url: str, engine: Engine) -> dict[str, str]:
    """A channel of 200 numbers whose next sweep would remove 50 (25%: held by the guard);
    the environment that sweeps it."""
    sim.add("sms", numbers(200))
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    assert invoke("run", env=env).returncode == 0
    sim.remove("sms", numbers(50))
    assert invoke("run", env=env).returncode == 3
    return env


def make_plan(env: dict[str, str], path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = invoke("run", "--dry-run", "--plan-out", str(path), *args, env=env)
    assert result.returncode == 0, result.stderr
    return result


# -- a reviewed force ----------------------------------------------------------------------


def test_force_with_a_plan_applies_what_the_dry_run_showed(
    held: dict[str, str], sim: Simulator, engine: Engine, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    review = make_plan(held, plan)
    assert (
        f"plan {sim.sid} sms: +0 -50, 0 unconfirmed (kept), would be held: it would remove 50"
        in review.stdout
    )
    assert len(entries(engine, sim)) == 200  # a dry run applies nothing
    forced = invoke("run", "--force", "--plan", str(plan), env=held)
    assert forced.returncode == 0, forced.stderr
    assert entries(engine, sim) == set(numbers(150, start=50))
    assert "approves blind" not in forced.stderr


def test_a_plan_holds_no_number_and_no_secret_and_says_what_it_is_for(
    held: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    make_plan(held, plan)
    text = plan.read_text()
    assert "+91" not in text and sim.api_key not in text
    document = json.loads(text)
    (channel,) = document["channels"]
    assert (channel["account_sid"], channel["channel"], channel["removed"], channel["added"]) == (
        sim.sid,
        "sms",
        50,
        0,
    )
    assert dt.datetime.fromisoformat(document["made_at"]).tzinfo is not None


def test_force_refuses_a_sweep_that_removes_more_than_the_plan(
    held: dict[str, str], sim: Simulator, engine: Engine, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    make_plan(held, plan)
    sim.remove("sms", numbers(1, start=60))  # one more gone since the review
    forced = invoke("run", "--force", "--plan", str(plan), env=held)
    assert forced.returncode == 3
    assert "it would remove 51 number(s), 50 were approved" in forced.stdout
    assert len(entries(engine, sim)) == 200
    assert statuses(engine, sim)[-1] == "held"


def test_force_refuses_other_numbers_even_when_the_count_is_the_same(
    held: dict[str, str], sim: Simulator, engine: Engine, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    make_plan(held, plan)
    sim.add("sms", numbers(1, start=0))  # back again ...
    sim.remove("sms", numbers(1, start=60))  # ... and another gone: still 50 removals
    forced = invoke("run", "--force", "--plan", str(plan), env=held)
    assert forced.returncode == 3
    assert "it would remove 50 number(s), but not the same ones as approved" in forced.stdout
    assert len(entries(engine, sim)) == 200


def test_a_plan_for_another_channel_or_too_old_is_refused_before_any_sweep(
    held: dict[str, str], sim: Simulator, engine: Engine, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    make_plan(held, plan)
    before = statuses(engine, sim)
    other = invoke("run", "--force", "--plan", str(plan), "--channel", "voice", env=held)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [
        f"blocklist-sync: error: --plan {plan}: the plan has no entry for {sim.sid} voice (it was made "
        f"for {sim.sid} sms); name its channels with --account and --channel, or make a plan for this one"
    ]
    document = json.loads(plan.read_text())
    document["made_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()
    plan.write_text(json.dumps(document))
    stale = invoke("run", "--force", "--plan", str(plan), env=held)
    assert stale.returncode == 2
    assert "the plan was made 2h00m ago, longer than --plan-max-age (1h) allows" in stale.stderr
    assert stale.stderr.count("\n") == 1
    assert invoke("run", "--force", "--plan", str(plan), "--plan-max-age", "3h", env=held).returncode == 0
    assert statuses(engine, sim)[len(before) :] == ["succeeded"]  # the refusals swept nothing


def test_a_file_that_is_no_plan_is_one_line(held: dict[str, str], tmp_path: Path) -> None:
    bogus = tmp_path / "plan.json"
    bogus.write_text(
        '{"format": "blocklist-sync-plan/1", "made_at": "2026-01-01T00:00:00+00:00", '
        '"channels": [{"removed": "50"}]}'
    )
    result = invoke("run", "--force", "--plan", str(bogus), env=held)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "is not a plan written by `blocklist-sync run --dry-run --plan-out`" in result.stderr


def test_expect_removed_applies_the_count_approved_and_refuses_another(
    held: dict[str, str], sim: Simulator, engine: Engine
) -> None:
    wrong = invoke("run", "--force", "--expect-removed", "40", env=held)
    assert wrong.returncode == 3
    assert "--expect-removed 40 approved: it would remove 50 number(s), 40 were approved" in wrong.stdout
    assert len(entries(engine, sim)) == 200
    right = invoke("run", "--force", "--expect-removed", "50", "--expect-added", "0", env=held)
    assert right.returncode == 0, right.stdout
    assert len(entries(engine, sim)) == 150


def test_expect_removed_approves_one_channel_only(sim: Simulator, pg_url: str, engine: Engine) -> None:
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms,voice")
    result = invoke("run", "--force", "--expect-removed", "5", env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "approves the sweep of one account and channel, and this run sweeps 2" in result.stderr
    assert statuses(engine, sim) == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--plan-out", "p.json"], "--plan-out saves a dry run's plan; add --dry-run"),
        (["--expect-removed", "3"], "use them with --force, without --dry-run"),
        (["--dry-run", "--force", "--plan", "p.json"], "use them with --force, without --dry-run"),
    ],
)
def test_review_flags_that_cannot_go_together_are_one_line(
    args: list[str], says: str, sim: Simulator, pg_url: str, engine: Engine, tmp_path: Path
) -> None:
    result = invoke("run", *args, env=cli_env(sim, pg_url), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and says in result.stderr
    assert statuses(engine, sim) == []


def test_a_plain_force_still_applies_with_a_warning(
    held: dict[str, str], sim: Simulator, engine: Engine
) -> None:
    result = invoke("run", "--force", env=held)
    assert result.returncode == 0
    assert "warning: --force alone approves blind" in result.stderr
    assert len(entries(engine, sim)) == 150


# -- the run summary -----------------------------------------------------------------------


def test_the_summary_has_one_object_per_channel_and_the_exit_code(
    held: dict[str, str], sim: Simulator, engine: Engine, tmp_path: Path
) -> None:
    sim.add("voice", numbers(3))
    summary = tmp_path / "summary.json"
    env = {**held, "KALEYRA_CHANNELS": "sms,voice"}
    result = invoke("run", "--summary-json", str(summary), env=env)
    assert result.returncode == 3
    document: dict[str, Any] = json.loads(summary.read_text())
    assert document["exit_code"] == 3
    by_channel = {r["channel"]: r for r in document["results"]}
    assert set(by_channel) == {"sms", "voice"}
    sms, voice = by_channel["sms"], by_channel["voice"]
    assert (sms["status"], sms["exit_code"], sms["counts"]["removed"]) == ("held", 3, 50)
    assert "it would remove 50 of 200 entries" in sms["reason"]
    assert sms["window"]["detected_at"] is None  # held: nothing was detected
    assert (voice["status"], voice["counts"]["added"], voice["counts"]["entries"]) == ("succeeded", 3, 3)
    run_id, started, finished = rows(
        engine,
        "SELECT id, started_at, finished_at FROM sync_runs WHERE account_sid = :a AND channel = 'voice'",
        a=sim.sid,
    )[0]
    assert voice["run_id"] == run_id
    assert dt.datetime.fromisoformat(voice["window"]["detected_at"]) == finished
    assert voice["window"]["not_before"] is None  # voice's initial load: since when is unknown
    # sms's window starts at its last succeeded sweep with a complete listing
    first_sms = rows(engine, "SELECT MIN(started_at) FROM sync_runs WHERE account_sid = :a", a=sim.sid)[0][0]
    assert dt.datetime.fromisoformat(sms["window"]["not_before"]) == first_sms
    assert started >= first_sms


def test_summary_to_stdout_is_json_alone(sim: Simulator, pg_url: str) -> None:
    sim.add("sms", numbers(5))
    result = invoke("run", "--summary-json", "-", env=cli_env(sim, pg_url, KALEYRA_CHANNELS="sms"))
    assert result.returncode == 0
    document = json.loads(result.stdout)  # the result lines went to stderr
    assert [(r["channel"], r["status"]) for r in document["results"]] == [("sms", "succeeded")]
    assert result.stdout.count("\n") == 1  # one line: the last line of stdout is the summary
    assert f"{sim.sid} sms: succeeded" in result.stderr


def test_a_summary_left_by_an_earlier_run_is_replaced_by_a_run_that_could_not_start(
    sim: Simulator, pg_url: str, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text('{"exit_code": 0}')
    env = cli_env(sim, pg_url, BLOCKLIST_SYNC_CONCURRENCY="x")  # stops at click: before the file
    assert invoke("run", "--summary-json", str(summary), env=env).returncode == 2
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="fax")  # stops after the file was checked
    assert invoke("run", "--summary-json", str(summary), env=env).returncode == 2
    # An orchestrator cannot read the earlier run's 0 as this one's: the file is this run's,
    # written whole over the earlier one (issue 27: nothing is deleted before it).
    assert json.loads(summary.read_text())["exit_code"] == 2


# -- the small fixes -----------------------------------------------------------------------


@pytest.mark.parametrize("off", ["0", "0s", "0m"])
def test_skip_if_swept_within_0_turns_the_shards_default_off(
    off: str, sim: Simulator, pg_url: str, engine: Engine
) -> None:
    sim.add("sms", numbers(5))
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    assert invoke("run", "--shard", "0/1", env=env).returncode == 0
    skipped = invoke("run", "--shard", "0/1", env=env)
    assert "skipped: swept" in skipped.stdout  # the 30m default
    assert invoke("run", "--shard", "0/1", "--skip-if-swept-within", off, env=env).returncode == 0
    from_env = invoke("run", "--shard", "0/1", env={**env, "BLOCKLIST_SYNC_SKIP_IF_SWEPT_WITHIN": off})
    assert from_env.returncode == 0
    assert statuses(engine, sim) == ["succeeded"] * 3


@pytest.mark.timeout(90)
def test_schedule_run_now_sweeps_a_channel_swept_moments_ago(
    sim: Simulator, pg_url: str, engine: Engine
) -> None:
    sim.add("sms", numbers(5))
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    assert invoke("run", env=env).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync", "schedule", "--every", "1h", "--run-now"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: statuses(engine, sim) == ["succeeded", "succeeded"])
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "--run-now: sweeping account" in err


@pytest.mark.parametrize(
    ("variable", "flag", "value", "args"),
    [
        ("BLOCKLIST_SYNC_CONCURRENCY", "--concurrency", "x", ["run"]),
        ("BLOCKLIST_SYNC_SWEEP_TIMEOUT", "--sweep-timeout", "0s", ["run"]),
        ("BLOCKLIST_SYNC_SKIP_IF_SWEPT_WITHIN", "--skip-if-swept-within", "soon", ["run"]),
        ("BLOCKLIST_SYNC_SHARD", "--shard", "x", ["run"]),
        ("BLOCKLIST_SYNC_METRICS_FILE", "--metrics-file", "/nowhere/m.prom", ["run"]),
        ("BLOCKLIST_SYNC_CONFIG", "--config", "/nowhere.toml", ["run"]),
        ("KALEYRA_API_KEY_FILE", "--api-key-file", "/nowhere.key", ["run"]),
    ],
)
def test_a_bad_value_is_named_as_the_operator_set_it(
    variable: str, flag: str, value: str, args: list[str], sim: Simulator, pg_url: str
) -> None:
    env = cli_env(sim, pg_url)
    if variable == "KALEYRA_API_KEY_FILE":
        del env["KALEYRA_API_KEY"]
    from_env = invoke(*args, env={**env, variable: value})
    assert from_env.returncode == 2 and from_env.stderr.count("\n") == 1
    assert variable in from_env.stderr and flag not in from_env.stderr, from_env.stderr
    from_flag = invoke(*args, flag, value, env=env)
    assert from_flag.returncode == 2 and from_flag.stderr.count("\n") == 1
    assert flag in from_flag.stderr and variable not in from_flag.stderr, from_flag.stderr
