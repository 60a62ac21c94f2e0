"""What the operators' alarms read: the metrics while a sweep runs, the configured series, the
failures in a row, the process's counters, and a log free of APScheduler's chatter.

Every test runs the real CLI against real PostgreSQL and the simulator over HTTP; a sweep is
held in progress by a simulator hook that blocks one page until the test has looked, never by
sleeping.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync import __version__
from sync.simulator import Simulator
from tests.conftest import REPO, cli_env, free_port, invoke, numbers, wait_for


class HeldPage:
    """A simulator hook that holds the listing request at ``offset`` until released: the
    sweep's ``running`` row is committed by then (the row comes before the first page)."""

    def __init__(self, sim: Simulator, offset: str = "100") -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.offset = offset
        sim.on_request(self)

    def __call__(self, number: int, channel: str, params: dict[str, str]) -> None:
        if params.get("offset") == self.offset and not self.release.is_set():
            self.reached.set()
            self.release.wait(60)


@pytest.fixture
def held(sim: Simulator) -> Iterator[HeldPage]:
    hook = HeldPage(sim)
    yield hook
    hook.release.set()  # never leave the simulator's thread waiting


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text format, or None when it is not there."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}{{{re.escape(wanted)}}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sync", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- 1. metrics while a sweep runs -------------------------------------------------------------


def test_a_sweep_in_progress_is_in_the_metrics_file_while_it_runs(
    sim: Simulator, pg_url: str, tmp_path: Path, held: HeldPage
) -> None:
    sim.add("sms", numbers(250))
    metrics = tmp_path / "blocklist-sync.prom"
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", BLOCKLIST_SYNC_CONCURRENCY="1")
    proc = spawn("run", "--metrics-file", str(metrics), env=env)
    try:
        wait_for(held.reached.is_set)
        during = metrics.read_text()  # the sweep is paging now, held at its second page
    finally:
        held.release.set()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    pair = {"account": sim.sid, "channel": "sms"}
    assert sample(during, "blocklist_sync_last_run_status", **pair, status="running") == 1.0
    assert sample(during, "blocklist_sync_last_run_status", **pair, status="succeeded") == 0.0
    assert sample(during, "blocklist_sync_last_run_started_timestamp_seconds", **pair)
    assert sample(during, "blocklist_sync_configured", **pair) == 1.0
    after = metrics.read_text()
    assert sample(after, "blocklist_sync_last_run_status", **pair, status="running") == 0.0
    assert sample(after, "blocklist_sync_last_run_status", **pair, status="succeeded") == 1.0
    assert sample(after, "blocklist_sync_entries", **pair) == 250.0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def test_the_scheduler_serves_a_sweep_in_progress_and_logs_no_apscheduler_lines(
    sim: Simulator, pg_url: str, held: HeldPage
) -> None:
    sim.add("sms", numbers(250))
    port = free_port()
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", BLOCKLIST_SYNC_CONCURRENCY="1")
    # Ticks every 2 s from the epoch: the first comes within 2 s, and is held in progress.
    proc = spawn("schedule", "--every", "2s", "--metrics-port", str(port), env=env)
    pair = {"account": sim.sid, "channel": "sms"}
    try:
        wait_for(held.reached.is_set)
        during = scrape(port)
        assert sample(during, "blocklist_sync_last_run_status", **pair, status="running") == 1.0
    finally:
        proc.send_signal(signal.SIGTERM)
        held.release.set()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "INFO sync.scheduler: scheduler started" in err
    assert "apscheduler" not in err, err  # "Added job", "Running job ...", "Scheduler started"


def test_apschedulers_lines_come_back_with_debug(sim: Simulator, pg_url: str) -> None:
    proc = spawn("schedule", "--every", "1h", "--log-level", "debug", env=cli_env(sim, pg_url))
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        stderr = proc.stderr
        # APScheduler's own "Scheduler started" comes once its loop runs: then SIGTERM stops it.

        def started() -> bool:
            lines.append(stderr.readline())
            return "Scheduler started" in lines[-1]

        wait_for(started)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert re.search(r" INFO apscheduler\.scheduler: Scheduler started", "".join(lines))


# --- 2. configured pairs, failures in a row ------------------------------------------------------


def test_a_configured_pair_that_never_succeeded_and_failures_in_a_row_are_published(
    sim: Simulator, make_migrated_database: Callable[[], str], tmp_path: Path
) -> None:
    """What BlocklistSyncNeverSucceeded and BlocklistSyncLastSweepFailed read."""
    sim.add("sms", numbers(5))
    sim.inject("WA401", times=1000, channel="voice")  # refused for voice only
    metrics = tmp_path / "m.prom"
    env = cli_env(sim, make_migrated_database(), KALEYRA_CHANNELS="sms,voice")
    sms, voice = ({"account": sim.sid, "channel": c} for c in ("sms", "voice"))
    for run in (1, 2):
        assert invoke("run", "--metrics-file", str(metrics), env=env).returncode == 1
        text = metrics.read_text()
        assert sample(text, "blocklist_sync_configured", **voice) == 1.0
        assert sample(text, "blocklist_sync_last_success_timestamp_seconds", **voice) is None
        assert sample(text, "blocklist_sync_failed_sweeps_in_a_row", **voice) == float(run)
        assert sample(text, "blocklist_sync_failed_sweeps_in_a_row", **sms) == 0.0
        assert sample(text, "blocklist_sync_last_success_timestamp_seconds", **sms)
    # Kaleyra allows voice again: one success ends the row.
    sim.clear_faults()
    sim.add("voice", numbers(3, prefix="+9180000"))
    assert invoke("run", "--metrics-file", str(metrics), env=env).returncode == 0
    assert sample(metrics.read_text(), "blocklist_sync_failed_sweeps_in_a_row", **voice) == 0.0


# --- 3. build_info and the _total counters ------------------------------------------------------


def test_build_info_and_the_counters_say_what_this_process_did(
    sim: Simulator, pg_url: str, tmp_path: Path
) -> None:
    sim.add("sms", [*numbers(150), "garbage", "not-a-number"])
    sim.inject("WA500", at=1, times=1)  # one retry
    sim.inject("429", at=3, times=1, seconds=0)  # one slow-down (Retry-After: 0), and its retry
    metrics = tmp_path / "m.prom"
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms", BLOCKLIST_SYNC_CONCURRENCY="1")
    result = invoke("run", "--metrics-file", str(metrics), env=env)
    assert result.returncode == 0, result.stderr
    text = metrics.read_text()
    assert sample(text, "blocklist_sync_build_info", version=__version__) == 1.0
    counters = {
        name: float(value)
        for name, value in re.findall(r"^blocklist_sync_(\w+)_total (\S+)$", text, re.MULTILINE)
    }
    assert counters == {
        "http_requests": float(sim.requests),  # every GET the simulator answered
        "http_retries": 2.0,
        "rate_limited": 1.0,
        "rejected_rows": 2.0,
    }
    assert "# TYPE blocklist_sync_http_requests_total counter" in text
    # A second run in a new process starts from 0 again (the README says what that means).
    before = sim.requests
    assert invoke("run", "--metrics-file", str(metrics), env=env).returncode == 0
    assert re.search(
        rf"^blocklist_sync_http_requests_total {float(sim.requests - before)}$", metrics.read_text(), re.M
    )


# --- 4. the rules' own tests ---------------------------------------------------------------------

RULES = REPO / "cron" / "blocklist-sync-alerts.yaml"
RULE_TESTS = REPO / "cron" / "blocklist-sync-alerts.test.yaml"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    import yaml

    alerts = {
        rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    }
    cases = [
        (case["alertname"], bool(case["exp_alerts"]))
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    assert {name for name, _ in cases} == alerts
    for alert in alerts:
        assert {fires for name, fires in cases if name == alert} == {True, False}, alert


@pytest.mark.parametrize(
    ("old", "new", "alert"),
    [
        pytest.param(
            "blocklist_sync_failed_sweeps_in_a_row >= 2",
            "blocklist_sync_failed_sweeps_in_a_row >= 1",
            "BlocklistSyncLastSweepFailed",
            id="one-failure-pages",
        ),
        pytest.param("        for: 2h\n", "", "BlocklistSyncNeverSucceeded", id="first-sweep-not-waited-for"),
        pytest.param(
            'blocklist-sync\\\\.prom"', 'other\\\\.prom"', "BlocklistSyncMetricsFileStale", id="wrong-file"
        ),
        pytest.param(
            'push_time_seconds{job="blocklist-sync"}',
            "push_time_seconds",
            "BlocklistSyncPushStale",
            id="any-job",
        ),
    ],
)
def test_the_rule_tests_catch_a_broken_rule(tmp_path: Path, old: str, new: str, alert: str) -> None:
    """The promtool tests are not vacuous: each of these plausible mistakes fails them."""
    from tests.test_day_two import run_promtool

    text = RULES.read_text()
    assert text.count(old) == 1, old
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and alert in result.stdout + result.stderr


# --- 5. the run's deadline ------------------------------------------------------------------------


def test_a_run_past_its_run_timeout_fails_with_its_reason_before_any_kill(
    sim: Simulator, pg_url: str, held: HeldPage
) -> None:
    """What the shipped units rely on: a slow run ends `failed`, saying why, before systemd or
    Kubernetes would kill it (and record it `cancelled`)."""
    sim.add("sms", numbers(250))
    env = cli_env(sim, pg_url, BLOCKLIST_SYNC_CONCURRENCY="1")
    result = invoke("run", "--run-timeout", "2s", env=env)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{sim.sid} sms: failed, ")
    assert "the sweep passed its deadline of 2s while sweeping; nothing was applied" in result.stdout
    for channel in ("whatsapp", "voice"):
        at = lines.index(f"{sim.sid} {channel}: failed, 0.0s")
        assert lines[at + 1 : at + 3] == [
            "  not started: the run passed its run timeout of 2s; nothing was applied",
            "  raise --run-timeout (BLOCKLIST_SYNC_RUN_TIMEOUT), and the scheduler's kill above it, "
            "or shard the run",
        ]
    bad = invoke("run", "--run-timeout", "soon", env=env)
    assert bad.returncode == 2 and "--run-timeout: 'soon' is not a duration" in bad.stderr
    # Named as the operator set it: from the environment, by its variable.
    bad = invoke("run", env={**env, "BLOCKLIST_SYNC_RUN_TIMEOUT": "soon"})
    assert bad.returncode == 2 and "BLOCKLIST_SYNC_RUN_TIMEOUT: 'soon' is not a duration" in bad.stderr
