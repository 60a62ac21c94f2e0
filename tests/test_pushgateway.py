"""Metrics pushed to a Pushgateway (issue 29, item 1), for CronJobs that leave no textfile and
serve no port: the same series as the textfile, at the start and end of every sweep, grouped
by job and instance, with a timeout, and one warning line when the gateway fails, never a
failed run, never a password printed.

A small real HTTP server stands in for the Pushgateway: it records every request, and can
answer 500 or not answer at all.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from sync.settings import Pushgateway, parse_pushgateway
from sync.simulator import Simulator
from sync.store import Store
from sync.telemetry import PUSH_RETRY, Publisher
from tests.conftest import REPO, TEST_PASSWORD, FakeClock, account_of, cli_env, invoke, numbers


@dataclass
class Push:
    method: str
    path: str
    authorization: str | None
    body: str


@dataclass
class FakeGateway:
    """Records what is pushed; ``status`` is what it answers, ``hang`` makes it never answer."""

    pushes: list[Push] = field(default_factory=list)
    status: int = 200
    hang: threading.Event | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            fake.pushes.append(Push("PUT", self.path, self.headers.get("Authorization"), body))
            if fake.hang is not None:
                fake.hang.wait(10)
                return
            self.send_response(fake.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        if fake.hang is not None:
            fake.hang.set()
        server.shutdown()
        server.server_close()


def grouping(path: str) -> dict[str, str]:
    """The grouping key of a push's path, as the Pushgateway reads it (``label@base64`` for a
    value with a slash)."""
    parts = path.removeprefix("/metrics/").split("/")
    key = {}
    for name, value in zip(parts[::2], parts[1::2], strict=True):
        if name.endswith("@base64"):
            name, value = name.removesuffix("@base64"), base64.urlsafe_b64decode(value + "==").decode()
        key[name] = value
    return key


def samples(exposition: str) -> set[str]:
    return {line for line in exposition.splitlines() if line and not line.startswith("#")}


def test_run_pushes_the_textfiles_series_at_the_start_and_end_of_every_sweep(
    sim: Simulator, pg_url: str, gateway: FakeGateway, tmp_path: Path
) -> None:
    sim.add("sms", numbers(5))
    sim.add("voice", numbers(3))
    metrics = tmp_path / "m.prom"
    url = f"http://pusher:{TEST_PASSWORD}@127.0.0.1:{gateway.port}"  # the suite fails a test that prints it
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms,voice", BLOCKLIST_SYNC_PUSHGATEWAY=url)
    result = invoke("run", "--metrics-file", str(metrics), env=env)
    assert result.returncode == 0, result.stderr
    # At the start of the run, as each of two sweeps starts and ends, and at the end.
    assert [p.method for p in gateway.pushes] == ["PUT"] * 6
    database = pg_url.rsplit("/", 1)[1]
    assert {tuple(grouping(p.path).items()) for p in gateway.pushes} == {
        (("job", "blocklist-sync"), ("instance", f"127.0.0.1:5432/{database}"))
    }
    expected = "Basic " + base64.b64encode(f"pusher:{TEST_PASSWORD}".encode()).decode()
    assert {p.authorization for p in gateway.pushes} == {expected}
    # The last push is the textfile, series for series and value for value.
    assert samples(gateway.pushes[-1].body) == samples(metrics.read_text())
    running = f'blocklist_sync_last_run_status{{account="{sim.sid}",channel="sms",status="running"}} 1.0'
    assert running in gateway.pushes[1].body  # pushed as the sms sweep started
    assert running.replace("1.0", "0.0") in gateway.pushes[-1].body
    assert "push" not in result.stderr.lower()  # nothing to warn about


def test_a_gateway_that_fails_is_one_warning_line_and_the_run_stands(
    sim: Simulator, pg_url: str, gateway: FakeGateway, engine: Engine
) -> None:
    sim.add("sms", numbers(5))
    gateway.status = 500
    url = f"http://pusher:{TEST_PASSWORD}@127.0.0.1:{gateway.port}/"
    result = invoke("run", "--pushgateway", url, env=cli_env(sim, pg_url, KALEYRA_CHANNELS="sms"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].endswith(
        f"cannot push the metrics to {gateway.url} (HTTP 500 Internal Server Error); the sweeps' "
        f"outcomes stand, and pushing is tried again in {PUSH_RETRY}s"
    )
    assert len(gateway.pushes) == 1  # while it fails, not once per sweep
    assert f"{sim.sid} sms: succeeded, 5 blocklisted, +5 -0" in result.stdout


def test_a_gateway_that_does_not_answer_costs_one_timeout(
    sim: Simulator, store: Store, gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sync.telemetry")
    gateway.hang = threading.Event()
    clock = FakeClock()
    publisher = Publisher(
        store, [account_of(sim)], pushgateway=Pushgateway(url=gateway.url, timeout=0.3), clock=clock
    )
    started = time.monotonic()
    publisher.publish()
    publisher.publish()  # within PUSH_RETRY of the failure: not tried
    assert time.monotonic() - started < 3
    assert len(gateway.pushes) == 1
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"cannot push the metrics to {gateway.url} (timed out); the sweeps' outcomes stand, and pushing "
        f"is tried again in {PUSH_RETRY}s"
    ]
    gateway.hang.set()
    gateway.hang = None
    clock.sleep(PUSH_RETRY)
    publisher.publish()
    assert len(gateway.pushes) == 2
    assert caplog.records[-1].getMessage() == f"pushing the metrics to {gateway.url} works again"


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://pusher:{TEST_PASSWORD}@gateway:9091",
        f"http://pusher:{TEST_PASSWORD}@:9091",
        f"http://pusher:{TEST_PASSWORD}@gateway:99999",
        f"http://pusher:{TEST_PASSWORD}@gateway:9091/?job=x",
        "gateway:9091",
    ],
)
def test_a_url_that_is_no_pushgateway_is_one_line_without_its_password(url: str, pg_url: str) -> None:
    result = invoke(
        "run", "--pushgateway", url, env=cli_env(None, pg_url, KALEYRA_SID="HX1", KALEYRA_API_KEY="k" * 32)
    )
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("blocklist-sync: error: --pushgateway: ") and "is not a Pushgateway URL" in line
    assert "pusher" not in line  # the user neither: only the host, port and path are shown


def test_a_pushgateway_url_keeps_its_credentials_apart() -> None:
    parsed = parse_pushgateway("https://me:p%40ss@push.example.com:9091/base/", "--pushgateway")
    assert (parsed.url, parsed.username, parsed.password) == (
        "https://push.example.com:9091/base",
        "me",
        "p@ss",
    )
    assert "p@ss" not in repr(parsed)


def test_the_cronjobs_push_and_the_alerts_cover_pushed_series() -> None:
    """Both CronJob manifests (the kustomize base is the sharded one) push; the review pod
    has the same settings; the alerts test the gateway's own push_time_seconds."""
    for name in ("kubernetes-cronjob.yaml", "kubernetes-cronjob-sharded.yaml"):
        [job] = [d for d in yaml.safe_load_all((REPO / "cron" / name).read_text()) if d]
        [container] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        gateway = parse_pushgateway(env["BLOCKLIST_SYNC_PUSHGATEWAY"], "BLOCKLIST_SYNC_PUSHGATEWAY")
        assert gateway.url.startswith("http://"), name
    tests = (REPO / "cron/blocklist-sync-alerts.test.yaml").read_text()
    assert re.search(r"series: 'push_time_seconds\{[^']*job=\"blocklist-sync\"", tests)
    assert re.search(r"series: 'blocklist_sync_\w+\{[^']*job=\"blocklist-sync\",[^']*instance=", tests)
