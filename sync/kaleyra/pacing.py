"""When a request may start: the pace every thread of one client shares.

Its own module because pacing is a decision about time, not about HTTP: it reads a clock and
sleeps, and nothing else. Both are parameters (``clock``, ``sleep``; by default
``time.monotonic`` and ``time.sleep``), so the rule can be run against any notion of time —
a test drives it through minutes of 429s and recovery without waiting for them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("sync.kaleyra")


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

    Every time it handles is a reading of ``clock`` (seconds, only ever compared and
    subtracted), and every wait a call of ``sleep``.
    """

    floor = 0.2  # requests/s: one every five seconds, however often Kaleyra says 429
    increase = 2.0  # requests/s gained per second of success

    def __init__(
        self,
        max_rps: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_rps is not None and max_rps <= 0:
            raise ValueError("max_rps must be positive")
        self._clock = clock
        self._sleep = sleep
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
        """Block until a request may start; returns its start time (a reading of ``clock``)."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            if self._rate is not None:
                self._next = start + 1.0 / self._rate
            self._starts.append(start)
        if start > now:
            self._sleep(start - now)
        return start

    def slow_down(self, started: float, retry_after: float | None = None) -> None:
        """A request started at ``started`` was answered 429."""
        with self._lock:
            now = self._clock()
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
