"""The Kaleyra client: which requests a sweep or a check needs, and in what order. Knows
nothing of the database.

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

How one request is made, bounded and retried is :mod:`sync.kaleyra.transport`'s; when it may
start, :mod:`sync.kaleyra.pacing`'s; what its answer means, :mod:`sync.kaleyra.parsing`'s.
This module only plans the requests and judges the pages they return as a sequence (no more
rows than asked, the same page not served at every offset, a page cap).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

from sync.kaleyra.errors import BadRequestError, PagingError, ProtocolError
from sync.kaleyra.pacing import _Pacer
from sync.kaleyra.parsing import Entry, _Listing
from sync.kaleyra.transport import (
    MAX_BODY_BYTES,
    RetryPolicy,
    Stoppable,
    _Transport,
    _wait,
    _Workers,
)

MAX_LIMIT = 100  # the API never returns more than 100 rows, nor takes more than 100 numbers


class Page(NamedTuple):
    offset: int
    entries: list[Entry]
    rejected: list[object]  # rows that cannot be a phone number, as the server sent them
    # Rows dropped as repeats of the previous page: the list shifted under the offset while it
    # was paged, so this listing may have skipped rows elsewhere.
    repeated: int = 0
    # Entries spelled otherwise than canonically (see _Listing.respelled).
    respelled: int = 0


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

    # The time the pacer reads and waits on (pacing and Retry-After holds): the real one,
    # unless a caller runs the client against a clock of its own.
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be between 1 and {MAX_LIMIT}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        parts = urlsplit(self.base_url)
        host = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else self.base_url
        self._transport = _Transport(
            url=f"{self.base_url.rstrip('/')}/{self.sid}/contacts/blocklisted",
            host=host,
            api_key=self.api_key,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            response_timeout=self.response_timeout,
            max_body_bytes=self.max_body_bytes,
            retry=self.retry,
            pacer=_Pacer(self.max_rps, clock=self.clock, sleep=self.sleep),
        )

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
            yield Page(offset, fresh, [] if repeats else listing.rejected, dropped, listing.respelled)
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
                    workers.submit(self._transport.request, channel, None, params, cancel),
                    cancel,
                    channel,
                    self._transport.budget,
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
                    self._transport.request, channel, 0, {"channel": channel, "limit": 1, "offset": 0}, None
                ),
                None,
                channel,
                self._transport.budget,
            )
        finally:
            workers.shutdown()
        return len(listing.entries) + len(listing.rejected)

    def close(self) -> None:
        self._transport.close()

    # -- paging ------------------------------------------------------------------------

    def _pages_in_order(self, channel: str, cancel: Stoppable | None) -> Iterator[tuple[int, _Listing]]:
        """Pages in offset order, up to ``concurrency`` requested ahead and re-planned on a
        short page, so that every offset we consume is the one a sequential sweep would use
        (with ``concurrency`` 1 this is exactly the sequential walk).

        The listing ends only where the end is shown. A short page says the list ends there,
        so the empty page after it ends the listing, and so does a 400 (a server may refuse an
        offset past its end). An empty page after a full one, or as the first page, is asked
        once more before it is believed: a server that answers one page empty by mistake would
        otherwise end the listing there, and a first sweep would miss every number after it."""
        # The first page goes alone: a host that is down then fails one request, not a window
        # of them retrying side by side; full pages open the window to ``concurrency``.
        stride, window = self.page_size, 1
        workers = _Workers(self.concurrency, "kaleyra")
        ahead: deque[tuple[int, Future[_Listing]]] = deque()
        plan = _Plan(cancel)  # set when the pages requested under this plan are abandoned
        next_offset = 0
        after_short = False  # the page before was short: the list may have ended

        def replan(offset: int, rows: int) -> None:
            nonlocal plan, stride, window, next_offset
            plan.set()
            plan = _Plan(cancel)
            ahead.clear()
            stride, window, next_offset = rows, 1, offset + rows

        try:
            while True:
                while len(ahead) < window:
                    future = workers.submit(self._fetch_page, channel, next_offset, plan)
                    ahead.append((next_offset, future))
                    next_offset += stride
                offset, future = ahead.popleft()
                try:
                    listing = _wait(future, cancel, channel, self._transport.budget)
                except BadRequestError:
                    if not after_short:
                        raise
                    return  # an offset past the end, refused: the short page was the last
                rows = len(listing.entries) + len(listing.rejected)
                if not rows and not after_short:
                    replan(offset, stride)  # nothing ahead of an empty page is needed
                    listing = _wait(
                        workers.submit(self._fetch_page, channel, offset, plan),
                        cancel,
                        channel,
                        self._transport.budget,
                    )
                    rows = len(listing.entries) + len(listing.rejected)
                yield offset, listing
                if not rows:
                    return
                after_short = rows < stride
                if rows == stride:
                    window = self.concurrency
                    continue
                # Not the number of rows planned: the pages requested ahead start at the
                # wrong offsets. Drop them and probe one page at the real offset: usually the
                # list has ended; if not, the server caps pages at this size.
                replan(offset, rows)
        finally:
            plan.set()  # requests still retrying give up before their next attempt
            workers.shutdown()

    def _fetch_page(self, channel: str, offset: int, abandoned: Stoppable | None) -> _Listing:
        params = {"channel": channel, "limit": self.page_size, "offset": offset}
        listing = self._transport.request(channel, offset, params, abandoned)
        rows = len(listing.entries) + len(listing.rejected)
        if rows > self.page_size:
            raise ProtocolError(
                f"the page has {rows} rows where {self.page_size} were asked for",
                channel=channel,
                offset=offset,
            )
        return listing


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
