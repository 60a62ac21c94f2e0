"""What an operator and an orchestrator do around a sweep: a reviewed ``--force`` (a plan or
counts, refused when the sweep differs), the run summary, and the small fixes of issue 21
(``--skip-if-swept-within 0``, ``schedule --run-now``, settings named as they were set).

Everything through the CLI against a real PostgreSQL and the simulator over HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
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
        f"plan {sim.sid} sms: would add 0 and remove 50, 0 unconfirmed (kept), "
        "would be held: it would remove 50" in review.stdout
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


# -- what would change, and what is stored (issue 29, item 6) -------------------------------


def test_held_and_dry_run_say_what_would_change_and_status_keeps_it_apart_from_what_is_stored(
    held: dict[str, str], sim: Simulator, engine: Engine
) -> None:
    again = invoke("run", env=held)
    assert again.returncode == 3
    held_run = last_run(engine, sim)
    line = again.stdout.splitlines()[0]
    assert line.startswith(f"{sim.sid} sms: held, 200 blocklisted, unchanged: would add 0 and remove 50, ")
    assert "150 blocklisted" not in again.stdout  # the count it would leave is not stored state
    review = invoke("run", "--dry-run", env=held)
    assert f"{sim.sid} sms: dry_run, 200 blocklisted, unchanged: would add 0 and remove 50" in review.stdout
    status = invoke("status", env=held)
    assert status.returncode == 1
    [row] = [r for r in status.stdout.splitlines() if r.startswith(f"{sim.sid}  sms")]
    # STATUS, ADDED, REMOVED (nothing applied), REJECTED, ENTRIES (what is stored)
    assert row.split()[4:9] == ["held", "-", "-", "0", "200"]
    assert (
        f"{sim.sid} sms: the held sweep (run {held_run}) would add 0 and remove 50; "
        "nothing was applied, so the 200 entries stand"
    ) in status.stdout
    [channel] = mine(json.loads(invoke("status", "--json", env=held).stdout)["channels"], sim)
    assert channel["last_run"]["applied"] is False and channel["entries"] == 200
    sim.remove("sms", numbers(1, start=50))  # a small change the guard lets through
    sim.add("sms", numbers(50))
    applied = invoke("run", env=held)
    assert f"{sim.sid} sms: succeeded, 199 blocklisted, +0 -1" in applied.stdout
    [channel] = mine(json.loads(invoke("status", "--json", env=held).stdout)["channels"], sim)
    assert channel["last_run"]["applied"] is True and channel["last_run"]["removed"] == 1


def mine(channels: list[dict[str, Any]], sim: Simulator) -> list[dict[str, Any]]:
    """This test's channels of ``status --json`` (other tests' share the database)."""
    return [c for c in channels if c["account_sid"] == sim.sid]


def last_run(engine: Engine, sim: Simulator) -> int:
    [(run_id,)] = rows(engine, "SELECT MAX(id) FROM sync_runs WHERE account_sid = :a", a=sim.sid)
    return int(run_id)


# -- a plan applies once (issue 29, item 4) --------------------------------------------------


def test_a_plan_applied_twice_says_already_applied_and_writes_no_held_row(
    held: dict[str, str], sim: Simulator, engine: Engine, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    make_plan(held, plan)
    metrics = tmp_path / "m.prom"
    first = invoke("run", "--force", "--plan", str(plan), "--metrics-file", str(metrics), env=held)
    assert first.returncode == 0, first.stderr
    applied_by = last_run(engine, sim)
    runs = statuses(engine, sim)
    again = invoke("run", "--force", "--plan", str(plan), "--metrics-file", str(metrics), env=held)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{sim.sid} sms: skipped: the plan {plan}" in again.stdout
    assert (
        f"was already applied by run {applied_by}; nothing was swept or written. To review changes "
        "since, make a new plan with --dry-run --plan-out\n"
    ) in again.stdout
    assert statuses(engine, sim) == runs  # no held row, no row at all
    assert entries(engine, sim) == set(numbers(150, start=50))
    assert invoke("status", env=held).returncode == 0
    # The Held alert reads this series: it stays 0, the applying sweep's status stays 1.
    labels = f'account="{sim.sid}",channel="sms"'
    assert f'blocklist_sync_last_run_status{{{labels},status="held"}} 0.0' in metrics.read_text()
    assert f'blocklist_sync_last_run_status{{{labels},status="succeeded"}} 1.0' in metrics.read_text()


def test_a_plan_is_not_taken_as_applied_by_a_sweep_that_applied_other_changes(
    held: dict[str, str], sim: Simulator, engine: Engine, tmp_path: Path
) -> None:
    """Only the very changes the plan approves count: a plain --force that removed one number
    more applied something else, and the plan's sweep is held as differing, as before."""
    plan = tmp_path / "plan.json"
    make_plan(held, plan)
    sim.remove("sms", numbers(1, start=50))
    assert invoke("run", "--force", env=held).returncode == 0  # blind: removes 51
    again = invoke("run", "--force", "--plan", str(plan), env=held)
    assert again.returncode == 3
    assert "already applied" not in again.stdout
    assert "it would remove 0 number(s), 50 were approved" in again.stdout


# -- one review path, advice that works on each host (issue 29, item 5) ---------------------

ALERTS = REPO / "cron/blocklist-sync-alerts.yaml"


def alert_description(name: str, **labels: str) -> str:
    [rule] = [
        r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if r["alert"] == name
    ]
    text: str = rule["annotations"]["description"]
    for label, value in labels.items():
        text = text.replace(f"{{{{ $labels.{label} }}}}", value)
    return text


def reviewed_path(text: str) -> bool:
    """Whether ``text`` sends a held sweep down the reviewed path: a dry run that saves a plan,
    then --force with that plan; never a plain --force. Commands are in backticks; a bare
    `--force` is the flag named, not advice."""
    spans = re.findall(r"`([^`]*)`", text)
    forced = [span for span in spans if "--force" in span and span != "--force"]
    outside = re.sub(r"`[^`]*`", "", text)
    return (
        any("--dry-run" in span and "--plan-out" in span for span in spans)
        and bool(forced)
        and all(re.search(r"--plan(?!-)", span) for span in forced)
        and "--force" not in outside
    )


def test_every_page_gives_one_review_path_for_a_held_sweep(held: dict[str, str], sim: Simulator) -> None:
    docs = (REPO / "docs/operators.md").read_text()
    runbook = docs[docs.index("#### Reviewing a held sweep") : docs.index("##### Approving exactly")]
    rows_for_3 = re.findall(r"^\| 3 \|.*$", docs, re.MULTILINE)
    comments = {}
    for name in ("crontab", "blocklist-sync.service", "kubernetes-cronjob.yaml"):
        text = re.sub(r"\n#\s*", " ", (REPO / "cron" / name).read_text())  # the comment as one line
        found = re.search(r"3\s+held by the safety guard.{0,250}", text)
        assert found is not None, name
        comments[name] = found.group(0)
    said = {
        "the CLI": invoke("run", env=held).stdout,
        "the Held alert": alert_description("BlocklistSyncHeld", account=sim.sid, channel="sms"),
        "the runbook": runbook,
        **{f"exit-code table {k}": row for k, row in enumerate(rows_for_3)},
        **{f"cron/{name}": text for name, text in comments.items()},
    }
    assert len(rows_for_3) == 3
    assert {where: reviewed_path(text) for where, text in said.items()} == dict.fromkeys(said, True)
    # Not vacuous: the advice the pages gave before.
    assert not reviewed_path("review with `blocklist-sync run --dry-run`, apply with --force")
    assert not reviewed_path("`run --dry-run --plan-out p`; if right, `run --force --channel sms`")


def test_the_alerts_advice_runs_as_written_with_the_env_file(
    held: dict[str, str], sim: Simulator, engine: Engine, tmp_path: Path
) -> None:
    """The commands the alerts give, run as written on a systemd or cron host (the program's
    path and sudo aside): `status` reads the job's env file, and the Held alert's two commands,
    with the job's settings, apply what the dry run showed."""
    env_file = tmp_path / "env"  # /etc/blocklist-sync/env, in the shipped file's form
    shipped = (REPO / "cron/blocklist-sync.env").read_text()
    settings = {
        "KALEYRA_SID": sim.sid,
        "KALEYRA_BASE_URL": sim.base_url,
        "DATABASE_URL": held["DATABASE_URL"],
    }
    lines = [
        line for line in shipped.splitlines() if not line.startswith(("KALEYRA_SID=", "KALEYRA_REGION="))
    ]
    env_file.write_text("\n".join([*lines, *(f"{k}='{v}'" for k, v in settings.items())]) + "\n")
    bare = {k: v for k, v in held.items() if not k.startswith(("KALEYRA_", "DATABASE_URL"))}
    for alert in ("BlocklistSyncStale", "BlocklistSyncLastSweepFailed", "BlocklistSyncNeverSucceeded"):
        command = re.search(
            r"`sudo (\S+) (--env-file \S+ status)`", alert_description(alert, account=sim.sid)
        )
        assert command is not None and command.group(1) == "/opt/blocklist-sync/bin/blocklist-sync", alert
        args = shlex.split(command.group(2).replace("/etc/blocklist-sync/env", str(env_file)))
        status = invoke(*args, env=bare)
        assert status.returncode == 1, status.stderr  # the held sweep is the problem it names
        assert f"PROBLEM {sim.sid} sms: last sweep held" in status.stdout
    held_advice = alert_description("BlocklistSyncHeld", account=sim.sid, channel="sms")
    dry_run, force = re.findall(r"`blocklist-sync (run [^`]+)`", held_advice)
    with_key = {**bare, "KALEYRA_API_KEY": sim.api_key}  # the key, as the host's runbook hands it over
    for command in (dry_run, force):
        args = [
            "--env-file",
            str(env_file),
            *shlex.split(command.replace("plan.json", str(tmp_path / "p.json"))),
        ]
        assert invoke(*args, env=with_key).returncode == 0
    assert entries(engine, sim) == set(numbers(150, start=50))
    assert invoke("--env-file", str(env_file), "status", env=bare).returncode == 0


def test_env_file_settings_give_way_to_the_environment_and_a_bad_line_is_one_line(
    sim: Simulator, pg_url: str, tmp_path: Path
) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("KALEYRA_SID=HXNOTTHISONE\nDATABASE_URL=postgresql://nobody@127.0.0.1:1/none\n")
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    assert invoke("--env-file", str(env_file), "status", "--json", env=env).returncode == 0  # env wins
    env_file.write_text(f"DATABASE_URL=postgresql://u:{'pw-Zq8!secret:42'}@h/d\nnot a setting\n")
    bad = invoke("--env-file", str(env_file), "status", env=env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        f"blocklist-sync: error: --env-file: line 2 of {env_file} is not KEY=value (a name of letters, "
        "digits and _, then =); fix it, or start it with # to make it a comment"
    ]
    missing = invoke("--env-file", str(tmp_path / "nowhere"), "status", env=env)
    assert missing.returncode == 2 and "--env-file: cannot read" in missing.stderr
