"""What this process has done so far, counted where it happens: HTTP requests, retries, 429s,
rejected rows. Read by :mod:`sync.telemetry` as Prometheus ``_total`` counters.

Its own module, importing nothing of ours, because the counts are made on both sides of the
client/store line (the Kaleyra client counts requests, the sweep counts rejected rows) and
neither side may import the other, nor telemetry (which reads the store). The counts belong to
the process, as a Prometheus counter does: they start at 0 when it starts and only grow, so
a one-shot ``run`` publishes that run's totals and a ``schedule`` process its lifetime's.
Thread-safe: a client's requests run on several threads, a scheduler's ticks on several more.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from typing import Literal

__all__ = ["COUNTS", "CountName", "Counts"]

CountName = Literal["http_requests", "http_retries", "rate_limited", "rejected_rows"]


@dataclass
class Counts:
    """Running totals since the process started (or since :meth:`reset`)."""

    http_requests: int = 0  # every GET sent to Kaleyra, retries and checks included
    http_retries: int = 0  # requests sent again after a retryable error
    rate_limited: int = 0  # answers 429 (each slows the client's pace)
    rejected_rows: int = 0  # listed rows that cannot be a phone number, left out

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, name: CountName, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self)}

    def reset(self) -> None:
        """Back to 0, as in a new process (the tests' in-process CLI runs do this)."""
        with self._lock:
            for f in fields(self):
                setattr(self, f.name, 0)


COUNTS = Counts()
