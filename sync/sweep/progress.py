"""What a sweep counts as its listing streams past (:class:`PageTally`: pages, rows and their
``channel_type`` codes, rejected, repeated and respelled rows, seconds per step), and what it
tells its caller as it goes: how far it has come (:class:`PageProgress`, to a
:data:`PageCallback`), each change (:data:`ChangeCallback`), its run row (:data:`StartCallback`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sync.counters import COUNTS
from sync.kaleyra import Page
from sync.numbers import describe_rejected
from sync.proof import ListingTally

__all__ = ["ChangeCallback", "PageCallback", "PageProgress", "PageTally", "StartCallback"]

_REJECTED_EXAMPLES = 3  # rejected rows a sweep's warning quotes


@dataclass
class PageTally:
    """One sweep's listing, counted page by page."""

    pages: int = 0
    listing: ListingTally = field(default_factory=ListingTally)  # rows, and their channel_type codes
    rejected: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    repeated: int = 0  # rows dropped as a repeated page: the list shifted while it was paged
    respelled: int = 0  # rows the server spelled otherwise than canonically
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for logs and the benchmark

    def count(self, page: Page) -> None:
        """Count one page's rows, repeats, channel_type codes and rejected rows (a few as examples)."""
        self.pages += 1
        self.repeated += page.repeated
        self.respelled += page.respelled
        for entry in page.entries:
            self.listing.count(entry.channel_type)
        if page.rejected:
            COUNTS.add("rejected_rows", len(page.rejected))
            self.rejected += len(page.rejected)
            room = _REJECTED_EXAMPLES - len(self.rejected_examples)
            self.rejected_examples += [describe_rejected(r) for r in page.rejected[:room]]

    def waited(self, pages: Iterable[Page]) -> Iterator[Page]:
        """``pages``, the seconds spent waiting for each added up as ``fetch_wait``: the rest
        of the fetch is this thread's own work on the rows (counting, staging)."""
        waited, pages = 0.0, iter(pages)
        try:
            while True:
                started = time.perf_counter()
                page = next(pages, None)
                waited += time.perf_counter() - started
                if page is None:
                    return
                yield page
        finally:
            self.phases["fetch_wait"] = round(waited, 3)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[phase] = round(time.monotonic() - started, 3)


@dataclass(frozen=True)
class PageProgress:
    """How far a sweep's listing has come, handed to a :data:`PageCallback` when paging starts
    (no page yet), after each page, and once paging is over (``done``)."""

    account_sid: str
    channel: str
    run_id: int | None
    pages: int
    rows: int
    # Numbers the last succeeded sweep of the channel found: what this listing is measured
    # against (its share, the time left). None before the first sweep.
    expected_rows: int | None
    done: bool = False


PageCallback = Callable[[PageProgress], None]
ChangeCallback = Callable[[str, str, str, str], None]  # (account, channel, 'added'|'removed', mobile)
# (account, channel, run id): the run row is committed as ``running``; metrics publish it, so a
# sweep in progress is visible (and a stuck one can alert) while it runs.
StartCallback = Callable[[str, str, int], None]
