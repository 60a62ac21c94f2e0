"""One simulated Kaleyra account: its lists, the faults injected into it, and its answers to
Get Blocklist and Change Blocklist Status, served over HTTP by :mod:`sync.simulator.handler`."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sync.simulator.faults import OTHER_FAULTS, Fault, Trickle, fault_response
from sync.simulator.handler import Handler, Server
from sync.simulator.vendor import (
    CHANNEL_TYPES,
    CHANNELS,
    MAX_LIMIT,
    VENDOR_ERRORS,
    Response,
    generate_numbers,
    json_response,
)

__all__ = ["Simulator", "parse_latency"]

# How often the serving loop looks for a stop: socketserver's default of 0.5 s made every
# test that stops a simulator wait up to half a second for nothing.
_POLL = 0.01


class _Blocklist:
    """One channel's list: insertion-ordered, O(1) membership, O(1) page slices."""

    def __init__(self, numbers: Iterable[str], channel_type: str) -> None:
        self.channel_type = channel_type
        self._order: list[str] = list(dict.fromkeys(numbers))
        self._members = set(self._order)

    def page(self, offset: int, limit: int) -> list[str]:
        return self._order[offset : offset + limit]

    def add(self, numbers: Iterable[str]) -> None:
        for n in numbers:
            if n not in self._members:
                self._members.add(n)
                self._order.append(n)

    def move_to_end(self, mobile: str) -> None:
        """Re-sort one listed number to the end, as a list ordered by last change does."""
        if mobile in self._members:
            self._order.remove(mobile)
            self._order.append(mobile)

    def remove(self, numbers: Iterable[str]) -> None:
        gone = self._members.intersection(numbers)
        if gone:
            self._members -= gone
            self._order = [n for n in self._order if n not in gone]

    def __contains__(self, mobile: str) -> bool:
        return mobile in self._members

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))


class Simulator:
    """State and fault model of one Kaleyra account, served by :class:`~sync.simulator.handler.Handler`."""

    def __init__(
        self,
        *,
        numbers: int = 0,
        seed: int = 42,
        sid: str = "HXSIM000000001IN",
        api_key: str = "sim-key-0000000000000000000000000",
        channels: Iterable[str] = CHANNELS,
        latency: float = 0.0,
        rate_limit: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sid = sid
        self.api_key = api_key
        self.lists = {
            ch: _Blocklist(
                generate_numbers(numbers, seed=seed, channel=ch) if numbers else [], CHANNEL_TYPES[ch]
            )
            for ch in channels
        }
        self.rows_per_page: int | None = None  # a server that returns fewer rows than asked
        self.ignore_offset = False  # a server that always serves the first page
        self.ignore_mobile_filter = False  # a server that answers a check with a listing page
        self.lying_filter = False  # a server that answers every mobile check with no rows
        # A mobile filter that answers at most this many rows whatever was asked, keeping the
        # first it finds in the order asked: a truncating filter. None: no such cap.
        self.filter_cap: int | None = None
        # A mobile filter answering from a cache: the lists as they were when
        # freeze_filter() was called, whatever changed since. None: the live lists.
        self.filter_cache: dict[str, set[str]] | None = None
        # Numbers the listing pages leave out, as offset drift can, while the mobile filter
        # still finds them.
        self.listing_skips: set[str] = set()
        # A server that refuses an offset past the end of the list with this status (and a
        # WA400 body) instead of an empty page. None: an empty page.
        self.past_end_status: int | None = None
        # A server that ignores ``channel``: every channel is answered with all channels' rows,
        # each carrying its own channel's channel_type.
        self.ignore_channel = False
        # How this server writes a number in its answers, listing and check alike (a TAB, other
        # digits, a fullwidth plus...); the lists keep the number as added, so a check for it
        # still finds it. And a row's channel_type by number, instead of the channel's.
        self.spellings: dict[str, str] = {}
        self.row_channel_types: dict[str, object] = {}
        self.requests = 0  # GET requests served so far (the number faults are keyed on)
        # Seconds every GET waits before it is answered, as a distant API does (the real one:
        # 100-300 ms); requests wait side by side, so only concurrency hides it.
        self.latency = latency
        # GETs answered per second (a one-second burst allowed); the others get a bare 429
        # without Retry-After, as the vendor documents none. None: no limit.
        self.rate_limit = rate_limit
        self.rate_limited = 0  # GETs answered 429 by the rate limit so far
        # The time the rate limit refills by and the request log is stamped with: a test that
        # runs the client on a clock of its own gives the server the same one.
        self._clock = clock
        self._tokens = 0.0
        self._refilled = clock()
        self._request_log: deque[tuple[float, str, dict[str, str]]] = deque(maxlen=100_000)
        self._on_request: list[Callable[[int, str, dict[str, str]], None]] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- running -------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def start(cls, *, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> Iterator[Simulator]:
        """Serve a new simulator in a background thread for the duration of the block."""
        sim = cls(**kwargs)
        sim.serve_in_thread(host=host, port=port)
        try:
            yield sim
        finally:
            sim.stop()

    def serve_in_thread(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = Server((host, port), Handler)
        self._server.simulator = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL},
            name="kaleyra-sim",
            daemon=True,
        )
        self._thread.start()

    def serve_forever(
        self, *, host: str = "127.0.0.1", port: int = 8099, listening: Callable[[], None] | None = None
    ) -> None:
        """Serve in this thread until interrupted. Binding comes first and raises ``OSError``
        (a port in use, an address not of this host) before ``listening`` is called, so a
        caller says where to connect only once something answers there."""
        self._server = Server((host, port), Handler)
        self._server.simulator = self
        if listening:
            listening()
        self._server.serve_forever()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not serving")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    # -- state ---------------------------------------------------------------------------

    def add(self, channel: str, numbers: Iterable[str]) -> None:
        with self._lock:
            self.lists[channel].add(numbers)

    def remove(self, channel: str, numbers: Iterable[str]) -> None:
        with self._lock:
            self.lists[channel].remove(numbers)

    def move_to_end(self, channel: str, mobile: str) -> None:
        """Re-sort a listed number to the end of its list (a list whose order changes)."""
        with self._lock:
            self.lists[channel].move_to_end(mobile)

    def freeze_filter(self) -> None:
        """From now on the mobile filter answers from the lists as they are now (a stale cache)."""
        with self._lock:
            self.filter_cache = {channel: set(blocklist) for channel, blocklist in self.lists.items()}

    @property
    def request_log(self) -> list[tuple[float, str, dict[str, str]]]:
        """(time on the clock, channel, query) of the GET requests served so far, oldest first."""
        with self._lock:
            return list(self._request_log)

    def numbers(self, channel: str) -> list[str]:
        with self._lock:
            return list(self.lists[channel])

    # -- faults --------------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        *,
        at: int | None = None,
        times: int = 1,
        channel: str | None = None,
        seconds: float = 0.0,
        size: int = 0,
        body: bytes = b"",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer ``times`` GET requests with fault ``kind``, starting at request number ``at``
        (1-based; None: the next request), optionally only requests for one channel.

        ``kind``: a key of :data:`VENDOR_ERRORS`, or ``html500`` (an HTML error page),
        ``malformed`` (a 200 whose JSON is cut off), ``slow`` (sleep ``seconds`` first, then
        answer normally), ``429`` (``Retry-After: seconds``), ``503``, ``drop`` (close the
        connection without answering), ``redirect`` (a 302 to another host), ``trickle`` (a
        valid page sent one byte every ``seconds``), ``gzip_bomb`` (a gzip body inflating to
        ``size`` bytes), ``oversize`` (one row more than ``limit``), ``echo_key`` (a 401 whose
        message quotes the ``api-key`` header it was sent), ``raw`` (HTTP 200 with ``body``),
        ``answer`` (HTTP ``status`` with ``headers`` and ``body``, exactly: a code or message
        holding escapes, NUL or a lone surrogate, a Content-Type or Content-Encoding of its own).
        """
        if kind not in VENDOR_ERRORS and kind not in OTHER_FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._faults.append(Fault(kind, at, times, channel, seconds, size, body, status, headers))

    def clear_faults(self) -> None:
        """Forget every fault not yet served: the API is healthy again."""
        with self._lock:
            self._faults.clear()

    def on_request(self, hook: Callable[[int, str, dict[str, str]], None]) -> None:
        """Call ``hook(request_number, channel, params)`` before each GET is answered: the way
        to change the list while a sweep is paging through it."""
        self._on_request.append(hook)

    def _within_rate_limit(self) -> bool:
        """A token bucket: ``rate_limit`` tokens a second, holding at most a second's worth."""
        if self.rate_limit is None:
            return True
        with self._lock:
            now = self._clock()
            self._tokens = min(
                max(self.rate_limit, 1.0), self._tokens + (now - self._refilled) * self.rate_limit
            )
            self._refilled = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            self.rate_limited += 1
            return False

    def _take_fault(self, number: int, channel: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times <= 0 or (fault.channel and fault.channel != channel):
                    continue
                if fault.at is None or number >= fault.at:
                    fault.times -= 1
                    return fault
        return None

    # -- the API -------------------------------------------------------------------------

    def get_blocklist(self, sid: str, api_key: str | None, query: dict[str, str]) -> Response:
        """Answer a Get Blocklist request: (status, headers, body bytes)."""
        channel = query.get("channel", "sms")
        with self._lock:
            self.requests += 1
            number = self.requests
            self._request_log.append((self._clock(), channel, dict(query)))
        for hook in self._on_request:
            hook(number, channel, query)
        if self.latency:
            time.sleep(self.latency)
        if not self._within_rate_limit():
            return 429, {"Content-Type": "application/json"}, b'{"message": "Too Many Requests"}'
        fault = self._take_fault(number, channel)
        if fault is not None:
            if fault.kind == "slow":
                time.sleep(fault.seconds)
            elif fault.kind in ("trickle", "oversize"):
                pass  # a real page, delivered badly: below
            else:
                return fault_response(fault, api_key)
        if sid != self.sid or api_key != self.api_key:
            return json_response(*VENDOR_ERRORS["RBC001"])
        try:
            limit = min(int(query.get("limit", MAX_LIMIT)), MAX_LIMIT)
            offset = int(query.get("offset", 0))
        except ValueError:
            return json_response(*VENDOR_ERRORS["WA400"])
        if limit < 0 or offset < 0 or channel not in self.lists:
            return json_response(*VENDOR_ERRORS["WA400"])
        kind = self.lists[channel].channel_type
        with self._lock:
            blocklist = self.lists[channel]
            if "mobile" in query and not self.ignore_mobile_filter:
                asked = [m.strip() for m in query["mobile"].split(",") if m.strip()]
                if len(asked) > MAX_LIMIT:
                    return json_response(*VENDOR_ERRORS["WA400"])
                known = blocklist if self.filter_cache is None else self.filter_cache[channel]
                rows = [m for m in dict.fromkeys(asked) if m in known]
                if self.rows_per_page is not None:  # the cap holds for every response; this
                    rows = rows[-self.rows_per_page :]  # server keeps the last rows it found
                if self.filter_cap is not None:
                    rows = rows[: self.filter_cap]
                kinds = [kind] * len(rows)
            else:
                if self.rows_per_page is not None:
                    limit = min(limit, self.rows_per_page)
                if fault is not None and fault.kind == "oversize":
                    limit += 1
                start = 0 if self.ignore_offset else offset
                if self.past_end_status is not None and start >= len(blocklist) and not self.ignore_channel:
                    return json_response(self.past_end_status, VENDOR_ERRORS["WA400"][1])
                if self.ignore_channel:
                    merged = [(m, b.channel_type) for b in self.lists.values() for m in b]
                    rows, kinds = (
                        [m for m, _ in merged[start : start + limit]],
                        [k for _, k in merged[start : start + limit]],
                    )
                elif self.listing_skips:
                    shown = [m for m in blocklist if m not in self.listing_skips]
                    rows = shown[start : start + limit]
                    kinds = [kind] * len(rows)
                else:
                    rows = blocklist.page(start, limit)
                    kinds = [kind] * len(rows)
            if "mobile" in query and self.lying_filter:
                rows = []
        data = [
            {"mobile": self.spellings.get(m, m), "channel_type": self.row_channel_types.get(m, k)}
            for m, k in zip(rows, kinds, strict=False)
        ]
        body = json.dumps(
            {
                "code": "CNT196",
                "message": "Successfully fetched blocklisted number(s)",
                "data": data,
                "error": {},
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if fault is not None and fault.kind == "trickle":
            return 200, headers, Trickle(body, fault.seconds)
        return 200, headers, body

    def change_blocklist(self, sid: str, api_key: str | None, body: object) -> Response:
        """Change Blocklist Status (POST). Its response body is not documented; this one is
        shaped like the others, with code CNT200 (our invention)."""
        if sid != self.sid or api_key != self.api_key:
            return json_response(*VENDOR_ERRORS["RBC001"])
        try:
            channel = body["channel"]  # type: ignore[index]  # any JSON: a miss is WA400
            contacts = body["contacts"]  # type: ignore[index]
            changes = [(int(c["blocklist_status"]), list(c["numbers"])) for c in contacts]
        except (KeyError, TypeError, ValueError):
            return json_response(*VENDOR_ERRORS["WA400"])
        if (
            channel not in self.lists
            or any(s not in (0, 1) for s, _ in changes)
            or sum(len(n) for _, n in changes) > MAX_LIMIT
        ):
            return json_response(*VENDOR_ERRORS["WA400"])
        for status, numbers in changes:
            (self.add if status == 1 else self.remove)(channel, numbers)
        return json_response(
            200, {"code": "CNT200", "message": "Blocklist status updated", "data": [], "error": {}}
        )


def parse_latency(value: str) -> float:
    """``100ms``, ``0.25s`` or ``0`` as seconds, for ``simulate --latency``."""
    text = value.strip().lower()
    number, scale = (
        (text[:-2], 0.001) if text.endswith("ms") else (text[:-1], 1.0) if text.endswith("s") else (text, 1.0)
    )
    try:
        seconds = float(number) * scale
    except ValueError:
        raise ValueError(f"{value!r} is not a latency; write it like 100ms or 0.25s") from None
    if not 0 <= seconds <= 60:
        raise ValueError(f"{value!r} is not a latency between 0 and 60s")
    return seconds
