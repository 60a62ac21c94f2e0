"""One request to Kaleyra, from the pacer's go to a body we may read, retried on its own.

Kept apart from the client because it answers a different question: not which pages a sweep
needs (:mod:`sync.kaleyra.client`) but how one of them is fetched without trusting the server.
Only one request is ever retried, never a sweep (a retried generator would restart), within a
:class:`RetryPolicy` whose attempts and seconds are both finite. Every response is bounded
before it is believed: a deadline for the whole response (not only each read), a cap on its
size before and after decompression. Redirects are refused, so the key never follows one to
another host; the key travels as the session's auth, never in a message.

Requests run on daemon worker threads while the caller waits in short slices, so a stop (the
``cancel`` event) ends a sweep within a fraction of a second even while a server trickles a
response, and a request stuck in a read cannot hold the process open after it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import requests
import stamina
import stamina.instrumentation
import urllib3

from sync import __version__
from sync.counters import COUNTS
from sync.kaleyra.errors import (
    Cancelled,
    KaleyraError,
    ProtocolError,
    RateLimitedError,
    RetryableAPIError,
    TransportError,
    transport_error,
)
from sync.kaleyra.pacing import _Pacer
from sync.kaleyra.parsing import _HEADER_CHARS, _Listing, _parse_listing
from sync.vendor_text import vendor_text

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
    COUNTS.add("http_retries")
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


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Bounds on retrying one request: attempts and total seconds, both always finite."""

    attempts: int = 5
    timeout: float = 120.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0
    max_retry_after: float = 120.0  # a larger Retry-After is capped, never obeyed blindly


class Stoppable(Protocol):
    """What the client polls to stop early: a ``threading.Event``, or anything with ``is_set``."""

    def is_set(self) -> bool: ...


@dataclass(kw_only=True)
class _Transport:
    """How one client's requests are made: its URL, key, timeouts, retries and shared pacer.
    Thread-safe: one ``requests.Session`` per thread."""

    url: str
    host: str  # host[:port], for messages that name where a request went
    api_key: str = field(repr=False)
    connect_timeout: float
    read_timeout: float
    response_timeout: float
    max_body_bytes: int
    retry: RetryPolicy
    pacer: _Pacer
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    @property
    def budget(self) -> float:
        """The longest one request may take, retries included. The response deadline is kept
        while the body is read; this bound, kept by the waiting side (:func:`_wait`), also
        covers a server that trickles its status line and headers (the thread left reading is
        a daemon)."""
        return self.retry.timeout + self.response_timeout + self.connect_timeout + 1.0

    def request(
        self, channel: str, offset: int | None, params: dict[str, Any], abandoned: Stoppable | None
    ) -> _Listing:
        """One listing request, retried within the policy while the error says it may help."""
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

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    def _backoff_for(self, error: BaseException) -> bool | float:
        """stamina hook: retry only retryable errors; a Retry-After overrides the backoff."""
        if not isinstance(error, RetryableAPIError):
            return False
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.retry.max_retry_after)
        return True

    def _request_once(
        self, channel: str, offset: int | None, params: dict[str, Any], abandoned: Stoppable | None
    ) -> _Listing:
        started = self.pacer.wait()
        deadline = time.monotonic() + self.response_timeout
        COUNTS.add("http_requests")
        try:
            response = self._session().get(
                self.url,
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
                host=self.host,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                channel=channel,
                offset=offset,
            ) from None
        except urllib3.exceptions.HTTPError as exc:  # raised while _read_body reads the body
            raise TransportError(
                f"the response from {self.host} broke off ({type(exc).__name__})",
                channel=channel,
                offset=offset,
            ) from None
        try:
            listing = _parse_listing(response, body, channel, offset)
        except RateLimitedError as exc:
            COUNTS.add("rate_limited")
            self.pacer.slow_down(
                started, exc.retry_after and min(exc.retry_after, self.retry.max_retry_after)
            )
            raise
        self.pacer.speed_up()
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
