"""HTTP client for Kaleyra's Get Blocklist API. Knows nothing of the database.

Two operations:

- :meth:`KaleyraClient.sweep` pages one channel's whole blocklist with ``limit``/``offset``.
  The offset advances by the rows actually received, so a server that returns fewer rows than
  asked never makes us skip any; the sweep ends on an empty page. Several pages may be in flight
  at once (``concurrency``): pages are requested ahead at the offsets a full page would lead to
  and consumed strictly in order, and the moment a page is not full the look-ahead is thrown
  away and re-planned from the real offset, so the result is the one a sequential sweep gives.
- :meth:`KaleyraClient.check` asks which of up to 100 given numbers are blocklisted (the
  ``mobile`` filter), used to confirm removals before they are recorded.

Only one page request is ever retried, never a sweep (a retried generator would restart).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import requests
import stamina
import stamina.instrumentation

from sync import __version__
from sync.kaleyra_errors import (
    Cancelled,
    KaleyraError,
    PagingError,
    ProtocolError,
    RetryableAPIError,
    error_for_response,
    transport_error,
)

__all__ = ["MAX_LIMIT", "Entry", "KaleyraClient", "Page", "RetryPolicy"]

MAX_LIMIT = 100  # the API never returns more than 100 rows, nor takes more than 100 numbers
SUCCESS_CODE = "CNT196"

log = logging.getLogger("sync.kaleyra")


def _log_retry(details: stamina.instrumentation.RetryDetails) -> None:
    """One line per retry: which attempt failed out of how many, why, and the wait. (Replaces
    stamina's own hook, whose lines name neither the host nor the cause.)"""
    exc = details.caused_by
    reason = exc.reason if isinstance(exc, KaleyraError) else str(exc)
    attempts = getattr(exc, "attempts", None) or "?"
    log.warning("attempt %d of %s failed: %s; retrying in %.2fs", details.retry_num, attempts,
                reason, details.wait_for,
                extra={"channel": getattr(exc, "channel", None), "offset": getattr(exc, "offset", None),
                       "attempt": details.retry_num, "attempts": attempts,
                       "wait_seconds": round(details.wait_for, 3)})


stamina.instrumentation.set_on_retry_hooks([_log_retry])


class Entry(NamedTuple):
    """One blocklisted number as the API gave it; ``channel_type`` is opaque."""

    mobile: str
    channel_type: str | None


class Page(NamedTuple):
    offset: int
    entries: list[Entry]


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
    read_timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be between 1 and {MAX_LIMIT}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._url = f"{self.base_url.rstrip('/')}/{self.sid}/contacts/blocklisted"
        parts = urlsplit(self.base_url)
        self._host = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname \
            else self.base_url
        self._local = threading.local()
        self._pacer = _Pacer(self.max_rps)

    # -- public operations -------------------------------------------------------------

    def sweep(self, channel: str, *, cancel: threading.Event | None = None) -> Iterator[Page]:
        """Yield every page of ``channel``'s blocklist in order, ending on the first empty page.

        Rows repeated from the previous page (the list shifted under the offset) are dropped
        here; full de-duplication across the sweep is the store's job, set-based. Raises
        :class:`PagingError` when a page repeats the previous one (a server ignoring
        ``offset``) or the sweep passes ``max_pages``.
        """
        previous: list[Entry] | None = None
        pages = 0
        for offset, entries in self._pages_in_order(channel, cancel):
            if not entries:
                return
            pages += 1
            if pages > self.max_pages:
                raise PagingError(
                    f"the sweep passed the page cap of {self.max_pages} pages",
                    channel=channel,
                    offset=offset,
                )
            if previous is not None and entries == previous:
                raise PagingError(
                    "the page is identical to the one before it (is the server ignoring offset?)",
                    channel=channel,
                    offset=offset,
                )
            fresh = entries
            if previous is not None:
                seen_before = {e.mobile for e in previous}
                fresh = [e for e in entries if e.mobile not in seen_before]
            previous = entries
            yield Page(offset, fresh)

    def check(self, channel: str, mobiles: Sequence[str], *,
              cancel: threading.Event | None = None) -> list[Entry]:
        """Which of ``mobiles`` are blocklisted on ``channel`` now (one request per 100)."""
        found: list[Entry] = []
        for start in range(0, len(mobiles), MAX_LIMIT):
            chunk = mobiles[start : start + MAX_LIMIT]
            params = {"channel": channel, "mobile": ",".join(chunk), "limit": MAX_LIMIT}
            answer = self._request(channel, None, params, cancel)
            asked = set(chunk)
            strangers = [e.mobile for e in answer if e.mobile not in asked]
            if strangers:
                # A filter the server ignored, or numbers in another format: either way this
                # answer cannot confirm anything, and trusting it could record false removals.
                raise ProtocolError(
                    f"the mobile check answered {len(strangers)} number(s) it was not asked "
                    f"about (e.g. {strangers[0]!r}); is the mobile filter ignored?",
                    channel=channel)
            found.extend(answer)
        return found

    def probe(self, channel: str) -> int:
        """One ``limit=1`` listing request, for ``blocklist-sync check``: proves the host,
        the credentials and the channel answer. Returns the rows it got (0 or 1)."""
        return len(self._request(channel, 0, {"channel": channel, "limit": 1, "offset": 0}, None))

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    # -- paging ------------------------------------------------------------------------

    def _pages_in_order(self, channel: str,
                        cancel: threading.Event | None) -> Iterator[tuple[int, list[Entry]]]:
        """Pages in offset order; with concurrency > 1, requested ahead and re-planned on a
        short page so that every offset we consume is the one a sequential sweep would use."""
        if self.concurrency == 1:  # the same walk as below with a window of one, minus threads
            offset = 0
            while True:
                entries = self._fetch_page(channel, offset, cancel)
                yield offset, entries
                if not entries:
                    return
                offset += len(entries)
        # The first page goes alone: a host that is down then fails one request, not a window
        # of them retrying side by side; full pages open the window to ``concurrency``.
        stride, window = self.page_size, 1
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="kaleyra")
        ahead: deque[tuple[int, Future[list[Entry]]]] = deque()
        plan = _Plan(cancel)  # set when the pages requested under this plan are abandoned
        next_offset = 0
        try:
            while True:
                while len(ahead) < window:
                    future = pool.submit(self._fetch_page, channel, next_offset, plan)
                    ahead.append((next_offset, future))
                    next_offset += stride
                offset, future = ahead.popleft()
                entries = future.result()
                yield offset, entries
                if not entries:
                    return
                if len(entries) == stride:
                    window = self.concurrency
                    continue
                # Not the number of rows planned: the pages requested ahead start at the
                # wrong offsets. Drop them and probe one page at the real offset: usually the
                # list has ended; if not, the server caps pages at this size.
                plan.set()
                plan = _Plan(cancel)
                ahead.clear()
                stride, window, next_offset = len(entries), 1, offset + len(entries)
        finally:
            plan.set()  # requests still retrying give up before their next attempt
            pool.shutdown(wait=False, cancel_futures=True)

    def _fetch_page(self, channel: str, offset: int, abandoned: _Stoppable | None) -> list[Entry]:
        params = {"channel": channel, "limit": self.page_size, "offset": offset}
        return self._request(channel, offset, params, abandoned)

    # -- one request, retried ----------------------------------------------------------

    def _request(self, channel: str, offset: int | None, params: dict[str, Any],
                 abandoned: _Stoppable | None) -> list[Entry]:
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
                        raise Cancelled("stopped before finishing; nothing was applied",
                                        channel=channel, offset=offset)
                    try:
                        return self._request_once(channel, offset, params)
                    except RetryableAPIError as exc:  # for the retry hook's "attempt k of n"
                        exc.attempt, exc.attempts = attempt.num, policy.attempts
                        raise
        except RetryableAPIError as exc:
            log.error("gave up after %d attempt(s) in %.1fs: %s", exc.attempt or 1,
                      time.monotonic() - started, exc.reason,
                      extra={"channel": channel, "offset": offset, "attempt": exc.attempt,
                             "attempts": exc.attempts})
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
        self, channel: str, offset: int | None, params: dict[str, Any]
    ) -> list[Entry]:
        self._pacer.wait()
        try:
            response = self._session().get(
                self._url, params=params, timeout=(self.connect_timeout, self.read_timeout),
                allow_redirects=False,  # the key must not follow a redirect to another host
            )
        except requests.RequestException as exc:
            raise transport_error(exc, host=self._host, connect_timeout=self.connect_timeout,
                                  read_timeout=self.read_timeout, channel=channel,
                                  offset=offset) from None
        return _parse_listing(response, channel, offset)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = _ApiKeyAuth(self.api_key)
            session.headers.update(
                {"accept": "application/json", "user-agent": f"kaleyra-blocklist-sync/{__version__}"}
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


def _parse_listing(response: requests.Response, channel: str, offset: int | None) -> list[Entry]:
    """Validate one response and return its rows, or raise the error it stands for."""
    status = response.status_code
    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
    try:
        body = response.json()
    except ValueError:
        body = None
    code = message = None
    if isinstance(body, dict):
        code = body.get("code") if isinstance(body.get("code"), str) else None
        message = body.get("message") if isinstance(body.get("message"), str) else None
    error = error_for_response(
        status, code, message, channel=channel, offset=offset, retry_after=retry_after
    )
    if error is not None:
        raise error
    if body is None:
        kind = response.headers.get("content-type", "unknown content type")
        raise ProtocolError(
            f"HTTP {status} body is not JSON ({kind})", channel=channel, offset=offset, status=status
        )
    if status != 200 or code != SUCCESS_CODE:
        raise ProtocolError(
            f"expected HTTP 200 {SUCCESS_CODE} with a listing, got HTTP {status} {code or 'no code'}"
            + (f" {message!r}" if message else ""),
            channel=channel,
            offset=offset,
            status=status,
            code=code,
        )
    data = body.get("data")
    if not isinstance(data, list):
        raise ProtocolError(
            f"'data' is {type(data).__name__}, not a list", channel=channel, offset=offset
        )
    entries = []
    for i, row in enumerate(data):
        mobile = row.get("mobile") if isinstance(row, dict) else None
        if not isinstance(mobile, str) or not mobile.strip():
            raise ProtocolError(
                f"row {i} has no string 'mobile': {str(row)[:80]}", channel=channel, offset=offset
            )
        kind = row.get("channel_type")
        entries.append(Entry(mobile, None if kind is None else str(kind)))
    return entries


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


class _Stoppable(Protocol):
    def is_set(self) -> bool: ...


class _Plan:
    """The pages requested under one look-ahead plan: abandoned when the plan changes, the
    sweep ends, or the caller's ``cancel`` is set."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self._abandoned = threading.Event()
        self._cancel = cancel

    def set(self) -> None:
        self._abandoned.set()

    def is_set(self) -> bool:
        return self._abandoned.is_set() or (self._cancel is not None and self._cancel.is_set())


class _Pacer:
    """Spaces request starts to at most ``max_rps`` per second across all threads."""

    def __init__(self, max_rps: float | None) -> None:
        if max_rps is not None and max_rps <= 0:
            raise ValueError("max_rps must be positive")
        self._interval = 1.0 / max_rps if max_rps else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)

