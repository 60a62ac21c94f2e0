"""HTTP client for Kaleyra's Get Blocklist API. Knows nothing of the database.

Two operations:

- :meth:`KaleyraClient.pages` pages one channel's whole blocklist with ``limit``/``offset``.
  The offset advances by the rows actually received, so a server that returns fewer rows than
  asked never makes us skip any; the sweep ends on an empty page. Several pages may be in flight
  at once (``concurrency``): pages are requested ahead at the offsets a full page would lead to
  and consumed strictly in order, and the moment a page is not full the look-ahead is thrown
  away and re-planned from the real offset, so the result is the one a sequential sweep gives.
- :meth:`KaleyraClient.check` asks which of up to 100 given numbers are blocklisted (the
  ``mobile`` filter), used to confirm removals before they are recorded. What an answer
  proves is the sweep's to judge (:mod:`sync.sweep`): the client only reads it.

Only one page request is ever retried, never a sweep (a retried generator would restart).

Every response is bounded before it is believed: a deadline for the whole response (not only
each read), a cap on its size before and after decompression, no more rows than asked for.
Every number is reduced to its canonical E.164 form (:mod:`sync.numbers`) as it is parsed; a row
that cannot be a phone number is handed back as rejected, never as an entry.
Every other string the server chose that is kept or shown (a code, a message, Content-Type,
Content-Encoding, a row's ``channel_type``) is vendor text (:mod:`sync.vendor_text`): redacted,
escaped and bounded here, where it enters.

Requests run on daemon worker threads while the caller waits in short slices, so a stop (the
``cancel`` event) ends a sweep within a fraction of a second even while a server trickles a
response, and a request stuck in a read cannot hold the process open after it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import queue
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

import requests
import stamina
import stamina.instrumentation
import urllib3

from sync import __version__
from sync.kaleyra_errors import (
    Cancelled,
    KaleyraError,
    PagingError,
    ProtocolError,
    RateLimitedError,
    RetryableAPIError,
    TransportError,
    error_for_response,
    transport_error,
    unexpected_answer,
)
from sync.numbers import canonical
from sync.vendor_text import vendor_text

__all__ = ["MAX_LIMIT", "Entry", "KaleyraClient", "Page", "RetryPolicy", "Stoppable"]

MAX_LIMIT = 100  # the API never returns more than 100 rows, nor takes more than 100 numbers
SUCCESS_CODE = "CNT196"
# How much of a header the server chose (Content-Type, Content-Encoding) an error may quote.
_HEADER_CHARS = 100
# A row's channel_type is opaque ("3" in the sample); stored, so bounded short.
_CHANNEL_TYPE_CHARS = 64
# A page of 100 rows is a few kB; a megabyte is far past any honest page, before or after
# decompression, and far below what a 512 MiB pod can hold in flight at concurrency 32.
MAX_BODY_BYTES = 1 << 20
_READ_SLICE = 64 * 1024
_WAIT_SLICE = 0.2  # how often a waiting caller looks at its cancel event, in seconds

T = TypeVar("T")

log = logging.getLogger("sync.kaleyra")


def _log_retry(details: stamina.instrumentation.RetryDetails) -> None:
    """One line per retry: which attempt failed out of how many, why, and the wait. (Replaces
    stamina's own hook, whose lines name neither the host nor the cause.)"""
    exc = details.caused_by
    reason = exc.reason if isinstance(exc, KaleyraError) else str(exc)
    attempts = getattr(exc, "attempts", None) or "?"
    log.warning(
        "attempt %d of %s failed: %s; retrying in %.2fs",
        details.retry_num,
        attempts,
        reason,
        details.wait_for,
        extra={
            "channel": getattr(exc, "channel", None),
            "offset": getattr(exc, "offset", None),
            "attempt": details.retry_num,
            "attempts": attempts,
            "wait_seconds": round(details.wait_for, 3),
        },
    )


stamina.instrumentation.set_on_retry_hooks([_log_retry])


class Entry(NamedTuple):
    """One blocklisted number, canonical E.164 (:mod:`sync.numbers`); ``channel_type`` is opaque."""

    mobile: str
    channel_type: str | None


class Page(NamedTuple):
    offset: int
    entries: list[Entry]
    rejected: list[object]  # rows that cannot be a phone number, as the server sent them
    # Rows dropped as repeats of the previous page: the list shifted under the offset while it
    # was paged, so this listing may have skipped rows elsewhere.
    repeated: int = 0


class _Listing(NamedTuple):
    """One parsed response: the rows that are numbers, and those that are not."""

    entries: list[Entry]
    rejected: list[object]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Bounds on retrying one request: attempts and total seconds, both always finite."""

    attempts: int = 5
    timeout: float = 120.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0
    max_retry_after: float = 120.0  # a larger Retry-After is capped, never obeyed blindly


@dataclass(kw_only=True)
class KaleyraClient:
    """Client for one Kaleyra account. Thread-safe: one ``requests.Session`` per thread."""

    sid: str
    api_key: str = field(repr=False)
    base_url: str
    page_size: int = MAX_LIMIT
    max_pages: int = 200_000
    concurrency: int = 1
    max_rps: float | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0  # the longest silence between two reads
    response_timeout: float = 60.0  # the longest a whole response may take, however it trickles
    max_body_bytes: int = MAX_BODY_BYTES
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be between 1 and {MAX_LIMIT}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._url = f"{self.base_url.rstrip('/')}/{self.sid}/contacts/blocklisted"
        parts = urlsplit(self.base_url)
        self._host = (
            parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else self.base_url
        )
        self._local = threading.local()
        self._pacer = _Pacer(self.max_rps)
        # The longest one request may take, retries included. The response deadline is kept
        # while the body is read; this bound, kept by the waiting side, also covers a server
        # that trickles its status line and headers (the thread left reading is a daemon).
        self._request_budget = self.retry.timeout + self.response_timeout + self.connect_timeout + 1.0

    # -- public operations -------------------------------------------------------------

    def pages(self, channel: str, *, cancel: Stoppable | None = None) -> Iterator[Page]:
        """Yield every page of ``channel``'s blocklist in order, ending on the first empty page.

        Rows repeated from the previous page (the list shifted under the offset) are dropped
        here; full de-duplication across the sweep is the store's job, set-based. Raises
        :class:`PagingError` when the server ignores ``offset`` or the sweep passes
        ``max_pages``.

        Telling a server that ignores ``offset`` from a list that moved: rows inserted in front
        of the part already read shift it under the next offset, so an honest server can serve
        the page just read once more (the short last page, after as many numbers were added at
        the front) — but the next page then moves on, to new rows or to the end. A server that
        ignores ``offset`` serves the same page at every offset. So one repeat is a shift (its
        rows are dropped as already seen) and a second repeat in a row is the error.
        """
        previous: _Listing | None = None
        repeats = 0
        pages = 0
        for offset, listing in self._pages_in_order(channel, cancel):
            if not listing.entries and not listing.rejected:
                return
            pages += 1
            if pages > self.max_pages:
                raise PagingError(
                    f"the sweep passed the page cap of {self.max_pages} pages",
                    channel=channel,
                    offset=offset,
                )
            repeats = repeats + 1 if listing == previous else 0
            if repeats >= 2:
                raise PagingError(
                    "the same page came back at three offsets in a row (is the server ignoring offset?)",
                    channel=channel,
                    offset=offset,
                )
            fresh = listing.entries
            if previous is not None:
                seen_before = {e.mobile for e in previous.entries}
                fresh = [e for e in fresh if e.mobile not in seen_before]
            dropped = len(listing.entries) - len(fresh) + (len(listing.rejected) if repeats else 0)
            yield Page(offset, fresh, [] if repeats else listing.rejected, dropped)
            previous = listing

    def check(self, channel: str, mobiles: Sequence[str], *, cancel: Stoppable | None = None) -> set[str]:
        """Which of ``mobiles`` (canonical) are blocklisted on ``channel`` now, one request per
        :data:`MAX_LIMIT` numbers. Answers are compared in canonical form. An answer that names
        a number not asked about, or a row that is no number, cannot be read as an answer to
        this question: :class:`ProtocolError` (a server that ignores the filter must never
        confirm a removal). Whether an answer is complete is not the client's to judge: the
        sweep asks questions whose answers show it (:mod:`sync.sweep`)."""
        found: set[str] = set()
        workers = _Workers(1, "kaleyra-check")
        try:
            for start in range(0, len(mobiles), MAX_LIMIT):
                chunk = mobiles[start : start + MAX_LIMIT]
                params = {"channel": channel, "mobile": ",".join(chunk), "limit": MAX_LIMIT}
                answer = _wait(
                    workers.submit(self._request, channel, None, params, cancel),
                    cancel,
                    channel,
                    self._request_budget,
                )
                asked = set(chunk)
                strangers = sum(e.mobile not in asked for e in answer.entries) + len(answer.rejected)
                if strangers:
                    raise ProtocolError(
                        f"the mobile check answered {strangers} number(s) it was not asked "
                        "about; is the mobile filter ignored?",
                        channel=channel,
                    )
                found.update(e.mobile for e in answer.entries)
        finally:
            workers.shutdown()
        return found

    def probe(self, channel: str) -> int:
        """One ``limit=1`` listing request, for ``blocklist-sync check``: proves the host,
        the credentials and the channel answer. Returns the rows it got (0 or 1)."""
        workers = _Workers(1, "kaleyra-probe")
        try:
            listing = _wait(
                workers.submit(
                    self._request, channel, 0, {"channel": channel, "limit": 1, "offset": 0}, None
                ),
                None,
                channel,
                self._request_budget,
            )
        finally:
            workers.shutdown()
        return len(listing.entries) + len(listing.rejected)

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    # -- paging ------------------------------------------------------------------------

    def _pages_in_order(self, channel: str, cancel: Stoppable | None) -> Iterator[tuple[int, _Listing]]:
        """Pages in offset order, up to ``concurrency`` requested ahead and re-planned on a
        short page, so that every offset we consume is the one a sequential sweep would use
        (with ``concurrency`` 1 this is exactly the sequential walk)."""
        # The first page goes alone: a host that is down then fails one request, not a window
        # of them retrying side by side; full pages open the window to ``concurrency``.
        stride, window = self.page_size, 1
        workers = _Workers(self.concurrency, "kaleyra")
        ahead: deque[tuple[int, Future[_Listing]]] = deque()
        plan = _Plan(cancel)  # set when the pages requested under this plan are abandoned
        next_offset = 0
        try:
            while True:
                while len(ahead) < window:
                    future = workers.submit(self._fetch_page, channel, next_offset, plan)
                    ahead.append((next_offset, future))
                    next_offset += stride
                offset, future = ahead.popleft()
                listing = _wait(future, cancel, channel, self._request_budget)
                yield offset, listing
                rows = len(listing.entries) + len(listing.rejected)
                if not rows:
                    return
                if rows == stride:
                    window = self.concurrency
                    continue
                # Not the number of rows planned: the pages requested ahead start at the
                # wrong offsets. Drop them and probe one page at the real offset: usually the
                # list has ended; if not, the server caps pages at this size.
                plan.set()
                plan = _Plan(cancel)
                ahead.clear()
                stride, window, next_offset = rows, 1, offset + rows
        finally:
            plan.set()  # requests still retrying give up before their next attempt
            workers.shutdown()

    def _fetch_page(self, channel: str, offset: int, abandoned: Stoppable | None) -> _Listing:
        params = {"channel": channel, "limit": self.page_size, "offset": offset}
        listing = self._request(channel, offset, params, abandoned)
        rows = len(listing.entries) + len(listing.rejected)
        if rows > self.page_size:
            raise ProtocolError(
                f"the page has {rows} rows where {self.page_size} were asked for",
                channel=channel,
                offset=offset,
            )
        return listing

    # -- one request, retried ----------------------------------------------------------

    def _request(
        self, channel: str, offset: int | None, params: dict[str, Any], abandoned: Stoppable | None
    ) -> _Listing:
        policy = self.retry
        started = time.monotonic()
        try:
            for attempt in stamina.retry_context(
                on=self._backoff_for,
                attempts=policy.attempts,
                timeout=policy.timeout,
                wait_initial=policy.wait_initial,
                wait_max=policy.wait_max,
                wait_jitter=policy.wait_jitter,
            ):
                with attempt:
                    if abandoned is not None and abandoned.is_set():
                        raise Cancelled(
                            "stopped before finishing; nothing was applied", channel=channel, offset=offset
                        )
                    try:
                        return self._request_once(channel, offset, params, abandoned)
                    except RetryableAPIError as exc:  # for the retry hook's "attempt k of n"
                        exc.attempt, exc.attempts = attempt.num, policy.attempts
                        raise
        except RetryableAPIError as exc:
            log.error(
                "gave up after %d attempt(s) in %.1fs: %s",
                exc.attempt or 1,
                time.monotonic() - started,
                exc.reason,
                extra={
                    "channel": channel,
                    "offset": offset,
                    "attempt": exc.attempt,
                    "attempts": exc.attempts,
                },
            )
            raise
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    def _backoff_for(self, error: Exception) -> bool | float:
        """stamina hook: retry only retryable errors; a Retry-After overrides the backoff."""
        if not isinstance(error, RetryableAPIError):
            return False
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.retry.max_retry_after)
        return True

    def _request_once(
        self, channel: str, offset: int | None, params: dict[str, Any], abandoned: Stoppable | None
    ) -> _Listing:
        started = self._pacer.wait()
        deadline = time.monotonic() + self.response_timeout
        try:
            response = self._session().get(
                self._url,
                params=params,
                timeout=(self.connect_timeout, self.read_timeout),
                allow_redirects=False,  # the key must not follow a redirect to another host
                stream=True,  # the body is read by _read_body, under a deadline and a size cap
            )
            try:
                body = _read_body(
                    response, self.max_body_bytes, deadline, abandoned, channel=channel, offset=offset
                )
            finally:
                response.close()
        except requests.RequestException as exc:
            raise transport_error(
                exc,
                host=self._host,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                channel=channel,
                offset=offset,
            ) from None
        except urllib3.exceptions.HTTPError as exc:  # raised while _read_body reads the body
            raise TransportError(
                f"the response from {self._host} broke off ({type(exc).__name__})",
                channel=channel,
                offset=offset,
            ) from None
        try:
            listing = _parse_listing(response, body, channel, offset)
        except RateLimitedError as exc:
            self._pacer.slow_down(
                started, exc.retry_after and min(exc.retry_after, self.retry.max_retry_after)
            )
            raise
        self._pacer.speed_up()
        return listing

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = _ApiKeyAuth(self.api_key)
            session.headers.update(
                {
                    "accept": "application/json",
                    "accept-encoding": "gzip, deflate",  # only what _read_body can inflate under a cap
                    "user-agent": f"kaleyra-blocklist-sync/{__version__}",
                }
            )
            self._local.session = session
        return session


class _ApiKeyAuth(requests.auth.AuthBase):
    """Kaleyra's ``api-key`` header as a requests auth. Being the session's auth also keeps
    requests from searching ~/.netrc on every one of a sweep's thousands of requests."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["api-key"] = self._api_key
        return request

    def __repr__(self) -> str:
        return "_ApiKeyAuth(<hidden>)"


def _read_body(
    response: requests.Response,
    limit: int,
    deadline: float,
    abandoned: Stoppable | None,
    *,
    channel: str,
    offset: int | None,
) -> bytes:
    """The whole body, inflated, or an error: past ``deadline`` (a server trickling bytes keeps
    every single read alive, so each read's timeout alone bounds nothing), over ``limit`` bytes
    on the wire or once inflated (a gzip bomb is stopped at the limit, not after), or abandoned.
    """
    where: dict[str, Any] = {"channel": channel, "offset": offset}
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ProtocolError(
            f"the response announces {int(length)} bytes, over the {limit}-byte cap for one page", **where
        )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
        raise ProtocolError(
            f"the response is {vendor_text(encoding, _HEADER_CHARS)}-encoded, which was not asked for",
            **where,
        )
    inflate = None if encoding in ("identity", "") else zlib.decompressobj(32 + zlib.MAX_WBITS)
    wire = 0
    body = bytearray()
    try:
        while chunk := response.raw.read1(_READ_SLICE, decode_content=False):
            wire += len(chunk)
            if wire > limit:
                raise ProtocolError(f"the response passed the {limit}-byte cap for one page", **where)
            if inflate is not None:
                chunk = inflate.decompress(chunk, limit + 1 - len(body))
                if inflate.unconsumed_tail:
                    chunk += b"x"  # more is waiting: over the cap
            body += chunk
            if len(body) > limit:
                raise ProtocolError(f"the response inflates past the {limit}-byte cap for one page", **where)
            if time.monotonic() > deadline:
                raise TransportError(
                    "the response did not complete within its deadline (the server is sending it too slowly)",
                    **where,
                )
            if abandoned is not None and abandoned.is_set():
                raise Cancelled("stopped while reading a response; nothing was applied", **where)
    except zlib.error:
        raise ProtocolError(f"the {encoding} body is corrupt", **where) from None
    return bytes(body)


def _parse_listing(response: requests.Response, raw: bytes, channel: str, offset: int | None) -> _Listing:
    """Validate one response and return its rows, or raise the error it stands for."""
    status = response.status_code
    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
    try:
        # Bytes that are not UTF-8 become U+FFFD: the row holding them is rejected as no
        # number, instead of the whole page failing or a mis-decoded string being stored.
        body = json.loads(raw.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python goes
        body = None
    code = message = None
    if isinstance(body, dict):
        code = body.get("code") if isinstance(body.get("code"), str) else None
        message = body.get("message") if isinstance(body.get("message"), str) else None
    error = error_for_response(status, code, message, channel=channel, offset=offset, retry_after=retry_after)
    if error is not None:
        raise error
    if body is None:
        kind = vendor_text(response.headers.get("content-type", "unknown content type"), _HEADER_CHARS)
        raise ProtocolError(
            f"HTTP {status} body is not JSON ({kind})", channel=channel, offset=offset, status=status
        )
    if status != 200 or code != SUCCESS_CODE:
        raise unexpected_answer(
            status,
            code,
            message,
            expected=f"HTTP 200 {SUCCESS_CODE} with a listing",
            channel=channel,
            offset=offset,
        )
    data = body.get("data")
    if not isinstance(data, list):
        raise ProtocolError(f"'data' is {type(data).__name__}, not a list", channel=channel, offset=offset)
    entries: list[Entry] = []
    rejected: list[object] = []
    for row in data:
        mobile = canonical(row.get("mobile")) if isinstance(row, dict) else None
        if mobile is None:
            rejected.append(row.get("mobile", row) if isinstance(row, dict) else row)
            continue
        kind = row.get("channel_type")
        entries.append(Entry(mobile, None if kind is None else vendor_text(str(kind), _CHANNEL_TYPE_CHARS)))
    return _Listing(entries, rejected)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


class Stoppable(Protocol):
    """What the client polls to stop early: a ``threading.Event``, or anything with ``is_set``."""

    def is_set(self) -> bool: ...


def _wait(future: Future[T], cancel: Stoppable | None, channel: str, budget: float) -> T:
    """The future's result, waited for in short slices so that a stop is seen at once, and for
    at most ``budget`` seconds."""
    give_up = time.monotonic() + budget
    while True:
        try:
            return future.result(timeout=_WAIT_SLICE)
        except FutureTimeout:
            if cancel is not None and cancel.is_set():
                raise Cancelled(
                    "stopped while waiting for Kaleyra; nothing was applied", channel=channel
                ) from None
            if time.monotonic() > give_up:
                raise TransportError(
                    f"no complete answer within {budget:.0f}s (the server is sending its headers too slowly)",
                    channel=channel,
                ) from None


class _Workers:
    """A minimal thread pool of daemon threads. ``ThreadPoolExecutor`` joins its threads at
    interpreter exit, so one request stuck in a slow read would hold a stopped process open;
    a daemon thread is simply dropped."""

    def __init__(self, size: int, name: str) -> None:
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._size = size
        for i in range(size):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._tasks.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        for _ in range(self._size):
            self._tasks.put(None)

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, fn, args = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting caller, as an executor does
                future.set_exception(exc)


class _Plan:
    """The pages requested under one look-ahead plan: abandoned when the plan changes, the
    sweep ends, or the caller's ``cancel`` is set."""

    def __init__(self, cancel: Stoppable | None) -> None:
        self._abandoned = threading.Event()
        self._cancel = cancel

    def set(self) -> None:
        self._abandoned.set()

    def is_set(self) -> bool:
        return self._abandoned.is_set() or (self._cancel is not None and self._cancel.is_set())


class _Pacer:
    """When requests may start: one pacer shared by every thread of a client.

    Never faster than ``max_rps`` (when set). When Kaleyra answers 429, every request of the
    client slows down, not only the one retried — the others are hitting the same limit. The
    rate halves (multiplicative decrease; from no limit, half the rate of the last requests
    started) and then, while requests succeed, climbs back by ``increase`` requests/s every
    second (additive increase), up to ``max_rps``. Without ``max_rps`` it keeps climbing until
    the next 429: the limit is unknown (the vendor documents none), so it is probed.

    A 429 answering a request that started before the last slow-down was sent at the old
    pace and is not counted again; a ``Retry-After`` holds every request back that long.
    Each change of pace is logged: a slow-down as a warning, the climb back at every
    doubling and on reaching the ceiling.
    """

    floor = 0.2  # requests/s: one every five seconds, however often Kaleyra says 429
    increase = 2.0  # requests/s gained per second of success

    def __init__(self, max_rps: float | None) -> None:
        if max_rps is not None and max_rps <= 0:
            raise ValueError("max_rps must be positive")
        self._ceiling = max_rps
        self._rate: float | None = max_rps  # None: no limit (no ceiling, no 429 yet)
        self._next = 0.0
        self._slowed_at = -math.inf  # start time of the last slow-down
        self._logged_rate = 0.0
        self._starts: deque[float] = deque(maxlen=64)  # recent request starts, for the rate
        self._lock = threading.Lock()

    @property
    def rate(self) -> float | None:
        """Requests per second allowed now; None when nothing limits them."""
        return self._rate

    def wait(self) -> float:
        """Block until a request may start; returns its start time (``time.monotonic``)."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            if self._rate is not None:
                self._next = start + 1.0 / self._rate
            self._starts.append(start)
        if start > now:
            time.sleep(start - now)
        return start

    def slow_down(self, started: float, retry_after: float | None = None) -> None:
        """A request started at ``started`` was answered 429."""
        with self._lock:
            now = time.monotonic()
            if retry_after:
                self._next = max(self._next, now + retry_after)
            if started < self._slowed_at:
                return
            before = self._rate
            recent = self._recent_rate(now)
            current = recent if before is None else min(before, recent or before)
            self._rate = max(self.floor, (current or 1.0) / 2)
            self._slowed_at = now
            self._logged_rate = self._rate
        log.warning(
            "Kaleyra answered 429 (rate limited): every request slowed to %.1f/s (was %s)",
            self._rate,
            "unlimited" if before is None else f"{before:.1f}/s",
            extra={"requests_per_second": round(self._rate, 2)},
        )

    def speed_up(self) -> None:
        """A request succeeded: climb back towards the ceiling, ``increase`` per second."""
        if self._rate is None or self._rate == self._ceiling:
            return
        with self._lock:
            if self._rate is None:
                return
            rate = self._rate + self.increase / self._rate
            if self._ceiling is not None:
                rate = min(rate, self._ceiling)
            self._rate = rate
            log_now = rate == self._ceiling or rate >= 2 * self._logged_rate
            if log_now:
                self._logged_rate = rate
        if log_now:
            log.info(
                "no 429 for a while: requests back up to %.1f/s%s",
                rate,
                " (the configured ceiling)" if rate == self._ceiling else "",
                extra={"requests_per_second": round(rate, 2)},
            )

    def _recent_rate(self, now: float) -> float | None:
        """Requests started per second over the last few starts; None if too few to tell."""
        if len(self._starts) < 2 or now <= self._starts[0]:
            return None
        return (len(self._starts) - 1) / (now - self._starts[0])
