"""The Kaleyra client against the simulator, over real HTTP."""

from __future__ import annotations

import logging
import time

import pytest
import requests

from sync.kaleyra import (
    AuthenticationError,
    BadRequestError,
    Cancelled,
    FatalAPIError,
    KaleyraClient,
    KaleyraError,
    LowBalanceError,
    NotAllowedError,
    PagingError,
    ProtocolError,
    RateLimitedError,
    RetryableAPIError,
    RetryPolicy,
    ServerError,
    Stoppable,
    TransportError,
)
from sync.output import advice_for
from sync.simulator import VENDOR_ERRORS, Simulator
from sync.simulator import Response as SimulatorAnswer
from tests.conftest import FakeClock, make_client, numbers


def swept(client: KaleyraClient, channel: str = "sms") -> list[str]:
    return [e.mobile for page in client.pages(channel) for e in page.entries]


@pytest.mark.parametrize("count", [0, 1, 99, 100, 101, 10_000])
@pytest.mark.parametrize("concurrency", [1, 4])
def test_paging_returns_every_row_once_and_stops_on_the_empty_page(
    sim: Simulator, count: int, concurrency: int
) -> None:
    sim.add("sms", numbers(count))
    client = make_client(sim, concurrency=concurrency)
    assert swept(client) == numbers(count)
    listing = [q for _, ch, q in sim.request_log if "mobile" not in q]
    # Sequential paging asks exactly one page past the end, and asks it again where the page
    # before was full (an empty page is believed only where a short page showed the end);
    # look-ahead may ask a few more.
    confirmed = 0 if count % 100 else 1
    assert len(listing) - count // 100 - (1 if count % 100 else 0) - confirmed in range(1, concurrency + 1)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_server_capping_rows_per_page_loses_nothing(sim: Simulator, concurrency: int) -> None:
    sim.add("sms", numbers(1000))
    sim.rows_per_page = 37
    assert swept(make_client(sim, concurrency=concurrency)) == numbers(1000)


def test_channel_and_limit_are_sent_and_limit_is_capped(sim: Simulator) -> None:
    sim.add("voice", numbers(150))
    sim.add("sms", numbers(5, prefix="+9180000"))
    assert swept(make_client(sim), "voice") == numbers(150)
    first = next(q for _, ch, q in sim.request_log if ch == "voice")
    assert first == {"channel": "voice", "limit": "100", "offset": "0"}
    with pytest.raises(ValueError, match="page_size"):
        make_client(sim, page_size=101)


def test_rows_repeated_by_a_shifting_list_are_dropped(sim: Simulator) -> None:
    """An insertion at the front while paging shifts rows: the next page repeats some."""
    sim.add("sms", numbers(250))

    def insert_at_front(request_number: int, channel: str, query: dict[str, str]) -> None:
        if request_number == 2:
            lst = sim.lists["sms"]
            lst._order[:0] = numbers(3, prefix="+9170000")
            lst._members.update(numbers(3, prefix="+9170000"))

    sim.on_request(insert_at_front)
    got = swept(make_client(sim))
    assert len(got) == len(set(got)) == 250  # the 3 repeats are gone; the 3 new ones are behind us


def test_a_server_ignoring_offset_is_an_error_not_data(sim: Simulator) -> None:
    sim.add("sms", numbers(300))
    sim.ignore_offset = True
    with pytest.raises(PagingError, match="ignoring offset"):
        swept(make_client(sim))


def test_a_sweep_past_the_page_cap_is_an_error(sim: Simulator) -> None:
    sim.add("sms", numbers(500))
    with pytest.raises(PagingError, match="page cap of 3"):
        swept(make_client(sim, max_pages=3))


def test_check_sends_plus_encoded_in_batches_of_100_and_reports_who_is_blocklisted(
    sim: Simulator,
) -> None:
    blocked = numbers(150)
    sim.add("whatsapp", blocked)
    asked = blocked[::2] + numbers(60, start=500)  # 75 blocklisted, 60 not
    found = make_client(sim).check("whatsapp", asked)
    assert found == set(blocked[::2])
    checks = [q for _, _, q in sim.request_log if "mobile" in q]
    assert [len(q["mobile"].split(",")) for q in checks] == [100, 35]


# Every vendor error body -> the class the caller acts on.
# Each code, what it is, and whether it leaves the account's other channels unusable too.
VENDOR_CASES: dict[str, tuple[type[KaleyraError], bool]] = {
    "RBC001": (AuthenticationError, True),
    "WA401": (NotAllowedError, False),
    "WA-401": (NotAllowedError, False),
    "WA-401-version": (NotAllowedError, False),
    "WA400": (BadRequestError, False),
    "E110": (LowBalanceError, True),
    "WA500": (ServerError, False),
    "CNT195": (ServerError, False),
}


@pytest.mark.parametrize("fault", sorted(VENDOR_CASES))
def test_each_vendor_error_maps_to_its_class_retry_behaviour_and_scope(sim: Simulator, fault: str) -> None:
    sim.add("sms", numbers(10))
    sim.inject(fault, times=100)
    client = make_client(sim)
    expected, account_wide = VENDOR_CASES[fault]
    with pytest.raises(expected) as caught:
        swept(client)
    error = caught.value
    code = VENDOR_ERRORS[fault][1]["code"]
    assert isinstance(code, str)
    assert error.code == code and error.channel == "sms" and error.offset == 0
    assert code in str(error) and "offset 0" in str(error)
    retryable = issubclass(expected, RetryableAPIError)
    assert sim.requests == (client.retry.attempts if retryable else 1)
    assert error.account_wide is account_wide
    assert isinstance(error, FatalAPIError) != retryable


def test_a_202_request_accepted_is_never_read_as_an_empty_listing(sim: Simulator) -> None:
    sim.add("sms", numbers(10))
    sim.inject("WA202", at=1)
    with pytest.raises(ProtocolError, match="WA202"):
        swept(make_client(sim))


@pytest.mark.parametrize(
    ("fault", "error", "said"),
    [
        ("malformed", ProtocolError, "not JSON"),
        ("html500", ServerError, "HTTP 502"),
        ("503", ServerError, "HTTP 503"),
        ("drop", TransportError, "dropped before an answer"),
    ],
)
def test_broken_responses_are_errors_naming_channel_and_offset(
    sim: Simulator, fault: str, error: type[Exception], said: str
) -> None:
    sim.add("sms", numbers(250))
    sim.inject(fault, times=100, at=None)
    with pytest.raises(error, match=said) as caught:
        swept(make_client(sim))
    assert "channel sms" in str(caught.value)


def test_rows_without_a_mobile_are_rejected_not_entries(sim: Simulator) -> None:
    original = sim.get_blocklist

    def bad_rows(sid: str, api_key: str | None, query: dict[str, str]) -> SimulatorAnswer:
        if query.get("offset") != "0":
            return original(sid, api_key, query)
        return (
            200,
            {"Content-Type": "application/json"},
            (
                b'{"code":"CNT196","message":"ok","data":[{"number":"+91"}, "+919800000001", '
                b'{"mobile": 919800000002}, {"mobile": "+919800000003"}],"error":{}}'
            ),
        )

    sim.get_blocklist = bad_rows  # type: ignore[method-assign]  # patched: another answer
    pages = list(make_client(sim).pages("sms"))
    assert [e.mobile for e in pages[0].entries] == ["+919800000003"]
    assert pages[0].rejected == [{"number": "+91"}, "+919800000001", 919800000002]


def test_a_retryable_error_that_clears_on_retry_loses_no_rows(sim: Simulator) -> None:
    sim.add("sms", numbers(250))
    sim.inject("WA500", at=2)
    sim.inject("CNT195", at=4)
    assert swept(make_client(sim)) == numbers(250)


def test_a_retryable_error_that_never_clears_gives_up_after_the_bound(sim: Simulator) -> None:
    sim.add("sms", numbers(250))
    sim.inject("WA500", times=1000)
    client = make_client(
        sim, retry=RetryPolicy(attempts=4, timeout=10, wait_initial=0.01, wait_max=0.02, wait_jitter=0)
    )
    with pytest.raises(ServerError):
        swept(client)
    assert sim.requests == 4


@pytest.mark.usefixtures("no_backoff")  # stamina would wait the same second, in real time
def test_429_waits_for_retry_after(sim_on_clock: Simulator, clock: FakeClock) -> None:
    sim = sim_on_clock  # its request log is stamped on the client's clock
    sim.add("sms", numbers(50))
    sim.inject("429", at=1, seconds=1)
    client = make_client(sim, clock=clock, sleep=clock.sleep)
    assert swept(client) == numbers(50)
    first, second = sim.request_log[0][0], sim.request_log[1][0]
    assert second - first >= 0.95  # the header's one second, not the policy's 10 ms


def test_429_that_persists_is_a_rate_limit_error(sim: Simulator, clock: FakeClock) -> None:
    sim.inject("429", times=10, seconds=0)
    with pytest.raises(RateLimitedError, match="429"):
        swept(make_client(sim, clock=clock, sleep=clock.sleep))


def test_a_read_timeout_is_retried_then_reported(sim: Simulator) -> None:
    sim.add("sms", numbers(10))
    sim.inject("slow", at=1, seconds=1.0)
    client = make_client(sim, read_timeout=0.3)
    assert swept(client) == numbers(10)  # the retry was answered in time
    sim.inject("slow", times=10, seconds=1.0)
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"did not answer within 0\.3s \(read timeout\)"):
        make_client(sim, read_timeout=0.3).check("sms", numbers(1))
    assert time.monotonic() - started < 5


def test_wrong_credentials_are_fatal_and_never_retried(sim: Simulator) -> None:
    client = KaleyraClient(sid=sim.sid, api_key="wrong-key-123", base_url=sim.base_url)
    with pytest.raises(AuthenticationError, match="RBC001") as caught:
        swept(client)
    # The HTTP layer says what happened; which setting to fix is the CLI's advice, by class.
    assert "KALEYRA" not in str(caught.value)
    assert "KALEYRA_API_KEY" in (advice_for(type(caught.value)) or "")
    assert sim.requests == 1


def test_the_api_key_never_appears_in_logs_errors_or_reprs(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.add("sms", numbers(120))
    sim.inject("WA500", at=1)
    sim.inject("429", at=3, seconds=0)
    client = make_client(sim)
    swept(client)
    messages = []
    for fault in ("RBC001", "malformed", "html500"):
        sim.inject(fault, times=10)
        with pytest.raises(Exception) as caught:
            swept(client)
        messages.append(str(caught.value) + repr(caught.value))
    everything = "\n".join([caplog.text, repr(client), *messages])
    assert sim.api_key not in everything
    assert caplog.records  # retries and connections were logged, so the check means something


def test_change_blocklist_post_updates_the_simulator(sim: Simulator) -> None:
    url = f"{sim.base_url}/{sim.sid}/contacts/blocklisted"
    body = {
        "channel": "sms",
        "contacts": [
            {"blocklist_status": 1, "numbers": numbers(3)},
            {"blocklist_status": 0, "numbers": numbers(1)},
        ],
    }
    answer = requests.post(url, json=body, headers={"api-key": sim.api_key}, timeout=5)
    assert answer.status_code == 200
    assert sim.numbers("sms") == numbers(3)[1:]
    too_many = {"channel": "sms", "contacts": [{"blocklist_status": 1, "numbers": numbers(101)}]}
    answer = requests.post(url, json=too_many, headers={"api-key": sim.api_key}, timeout=5)
    assert answer.json()["code"] == "WA400"


def test_simulator_numbers_are_valid_unique_and_reproducible() -> None:
    a, b = Simulator(numbers=2000, seed=7), Simulator(numbers=2000, seed=7)
    sms = a.numbers("sms")
    assert sms == b.numbers("sms") and len(set(sms)) == 2000
    assert all(n.startswith("+91") and len(n) == 13 and n[3] in "6789" for n in sms)
    assert set(sms) & set(a.numbers("voice"))  # channels overlap like real lists


def test_a_check_answered_with_numbers_not_asked_about_is_an_error(sim: Simulator) -> None:
    sim.add("sms", numbers(300))
    sim.ignore_mobile_filter = True  # the server answers with a page of its list instead
    with pytest.raises(ProtocolError, match="not asked"):
        make_client(sim).check("sms", numbers(3, start=5000))


def test_a_redirect_is_not_followed_with_the_key(sim: Simulator) -> None:
    sim.add("sms", numbers(10))
    sim.inject("redirect", at=1)
    with pytest.raises(ProtocolError, match="HTTP 302"):
        swept(make_client(sim))
    assert sim.requests == 1  # nothing followed the Location header (a foreign host)


def test_an_unreadable_retry_after_falls_back_to_backoff(sim: Simulator, clock: FakeClock) -> None:
    sim.add("sms", numbers(10))
    sim.inject("429", at=1, seconds=float("nan"))
    assert swept(make_client(sim, clock=clock, sleep=clock.sleep)) == numbers(10)


def test_look_ahead_pages_past_the_end_stop_retrying_once_abandoned(sim: Simulator) -> None:
    sim.add("sms", numbers(250))

    def fail_past_the_end(request_number: int, channel: str, query: dict[str, str]) -> None:
        if int(query.get("offset", 0)) >= 300:
            sim.inject("WA500", at=request_number)

    sim.on_request(fail_past_the_end)
    slow_retries = RetryPolicy(attempts=5, timeout=30, wait_initial=1.0, wait_max=1.0, wait_jitter=0)
    started = time.monotonic()
    assert swept(make_client(sim, concurrency=4, retry=slow_retries)) == numbers(250)
    assert time.monotonic() - started < 3  # not 4 retries x 1 s for pages nobody needs


def test_a_cancel_stops_a_sweep_without_waiting_out_its_retries(sim: Simulator) -> None:
    import threading

    sim.add("sms", numbers(500))
    sim.inject("WA500", at=3, times=1000)
    cancel = threading.Event()
    client = make_client(
        sim, retry=RetryPolicy(attempts=10, timeout=60, wait_initial=0.5, wait_max=0.5, wait_jitter=0)
    )
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        swept_with(client, cancel)
    assert time.monotonic() - started < 2  # not ten half-second retries


def swept_with(client: KaleyraClient, cancel: Stoppable) -> list[str]:
    return [e.mobile for page in client.pages("sms", cancel=cancel) for e in page.entries]
