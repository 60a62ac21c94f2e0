"""How far each sweep's listing has come, where the operator looks (:class:`Progress`): a bar
per channel on a terminal (rows against the last sweep's size, rate, time left); elsewhere a log
line at each tenth of that size and at least every 30 s."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from tqdm import tqdm

from sync.timetext import elapsed_text

__all__ = ["Progress"]


class _Paged(Protocol):
    """What :class:`Progress` reads of a sweep's progress (``sync.sweep.PageProgress``; not
    imported, so telemetry does not import the client through the sweep)."""

    @property
    def account_sid(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def run_id(self) -> int | None: ...
    @property
    def pages(self) -> int: ...
    @property
    def rows(self) -> int: ...
    @property
    def expected_rows(self) -> int | None: ...
    @property
    def done(self) -> bool: ...


@dataclass
class _Paging:
    """One channel's listing as :class:`Progress` follows it."""

    seen: _Paged
    started: float
    last_page_at: float
    last_line_at: float
    tenth: int = 0  # tenths of the expected size reached, as last said in a line


class Progress:
    """How far each sweep's listing has come, where the operator looks.

    On a terminal: a tqdm bar per channel (rows against the last succeeded sweep's size, with
    tqdm's rate and time left). Elsewhere (journald, ``kubectl logs``, a cron log), where a bar
    is never seen: a log line (``sync.progress``) at each tenth of that size and at least every
    ``interval`` seconds while paging, saying pages, rows, rate, the share of the last size and
    the time left, also as JSON fields. Lines come from the pages as they arrive and, for a
    listing that stalls, from a thread that wakes every second: a channel never goes
    ``interval`` seconds without one. ``clock`` and ``interval`` are for tests.
    """

    def __init__(
        self,
        terminal: bool | None = None,
        *,
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.interval = interval
        self.clock = clock
        self._bars: dict[tuple[str, str], tqdm[NoReturn]] = {}
        self._paging: dict[tuple[str, str], _Paging] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def update(self, progress: _Paged) -> None:
        """A :data:`~sync.sweep.PageCallback`."""
        if self.terminal:
            self._draw(progress)
            return
        with self._lock:
            now = self.clock()
            key = (progress.account_sid, progress.channel)
            if progress.done:
                self._paging.pop(key, None)
                return
            paging = self._paging.get(key)
            if paging is None:  # paging starts: the clock for its rate starts now
                self._paging[key] = _Paging(progress, now, now, now)
                self._start_heartbeat()
                return
            paging.seen, paging.last_page_at = progress, now
            tenth = _tenths(progress)
            if tenth > paging.tenth or now - paging.last_line_at >= self.interval:
                self._say(paging, now, tenth)

    def tick(self) -> None:
        """A line for each listing that has gone ``interval`` seconds without one (no page
        arrived): called every second by the heartbeat thread."""
        with self._lock:
            now = self.clock()
            for paging in self._paging.values():
                if now - paging.last_line_at >= self.interval:
                    self._say(paging, now, _tenths(paging.seen))

    def close(self) -> None:
        self._stopped.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def _say(self, paging: _Paging, now: float, tenth: int) -> None:
        seen = paging.seen
        paging.last_line_at, paging.tenth = now, max(tenth, paging.tenth)
        elapsed = max(now - paging.started, 1e-9)
        rate = seen.rows / elapsed
        fields: dict[str, object] = {
            "account": seen.account_sid,
            "channel": seen.channel,
            "pages": seen.pages,
            "rows": seen.rows,
            "rows_per_second": round(rate, 1),
        }
        if seen.run_id is not None:
            fields["run_id"] = seen.run_id
        pages = f"{seen.pages:,} page{'' if seen.pages == 1 else 's'}"
        said = f"{seen.channel}: {pages}, {seen.rows:,} rows at {rate:,.0f} rows/s"
        expected = seen.expected_rows
        if expected:
            share = seen.rows / expected
            fields.update(expected_rows=expected, share=round(share, 3))
            said += f", {share:.0%} of the last sweep's {expected:,}"
            if seen.rows < expected and rate > 0:
                left = (expected - seen.rows) / rate
                fields["eta_seconds"] = round(left)
                said += f", about {elapsed_text(left)} left"
            elif seen.rows >= expected:
                said += ", as many as last time" if seen.rows == expected else ", more than last time"
        else:
            said += " (no earlier sweep to measure against)"
        waiting = now - paging.last_page_at
        if waiting >= self.interval:
            said += f"; no page for {elapsed_text(waiting)}"
        logging.getLogger("sync.progress").info("%s", said, extra=fields)

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stopped.wait(1.0):
            self.tick()

    def _draw(self, progress: _Paged) -> None:
        key = (progress.account_sid, progress.channel)
        bar = self._bars.get(key)
        if bar is None:  # one bar per channel, made when its paging starts
            bar = tqdm(
                desc=progress.channel,
                total=progress.expected_rows or None,  # the last sweep's size: a share and time left
                unit=" rows",
                unit_scale=True,
                leave=False,
                file=sys.stderr,
            )
            self._bars[key] = bar
        bar.update(progress.rows - bar.n)
        bar.set_postfix(pages=progress.pages, refresh=False)


def _tenths(progress: _Paged) -> int:
    """How many tenths of the expected size the listing has reached (0 without one)."""
    expected = progress.expected_rows
    return progress.rows * 10 // expected if expected else 0
