"""The shared pacer against a rate-limited simulator, and the simulator's latency option.

The pacer and the simulator keep time on one fake clock (``clock``): the minutes of 429s, holds
and recovery these tests walk through pass in virtual seconds, over real HTTP.
"""

from __future__ import annotations

import logging

import pytest

from sync.kaleyra import KaleyraClient, RetryPolicy
from sync.simulator import Simulator
from tests.conftest import FakeClock, cli_env, make_client, numbers, run_cli

PATIENT = RetryPolicy(attempts=10, timeout=60, wait_initial=0.01, wait_max=0.05, wait_jitter=0)


def swept(client: KaleyraClient) -> list[str]:
    return [e.mobile for page in client.pages("sms") for e in page.entries]


def test_a_429_slows_every_request_so_a_rate_limited_sweep_completes(
    sim_on_clock: Simulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sim = sim_on_clock
    sim.add("sms", numbers(600))
    sim.rate_limit = 20  # requests/s; eight threads unpaced ask for hundreds
    caplog.set_level(logging.INFO, logger="sync.kaleyra")
    client = make_client(sim, concurrency=8, page_size=10, retry=PATIENT, clock=clock, sleep=clock.sleep)
    assert swept(client) == numbers(600)
    slowed = [r for r in caplog.records if "every request slowed to" in r.getMessage()]
    assert slowed, "a 429 must slow the whole client down, and say so"
    # Without a shared pace every thread keeps hitting the limit: most requests are refused.
    assert sim.rate_limited < sim.requests / 2


def test_max_rps_is_the_ceiling_the_pace_recovers_to(
    sim_on_clock: Simulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sim = sim_on_clock
    sim.add("sms", numbers(300))
    sim.inject("429", at=5, seconds=0)
    caplog.set_level(logging.INFO, logger="sync.kaleyra")
    client = make_client(sim, concurrency=4, page_size=10, max_rps=8, clock=clock, sleep=clock.sleep)
    assert swept(client) == numbers(300)
    paces = [r.requests_per_second for r in caplog.records if hasattr(r, "requests_per_second")]
    assert paces[0] == 4.0  # halved from the ceiling, not from the unlimited rate observed
    assert max(paces) <= 8
    assert paces[-1] == 8  # back at the ceiling, and said so


def test_simulate_refuses_a_latency_it_cannot_read() -> None:
    result = run_cli("simulate", "--latency", "fast", env=cli_env(None, None))
    assert result.returncode == 2
    assert "--latency" in result.stderr and "100ms" in result.stderr
