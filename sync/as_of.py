"""Was a number listed at an instant, on one channel: the as-of rule over its stretches.

The database states this rule in ``blocklist_as_of`` (migrations 0009, 0013, 0014), and
``lookup --at`` reads that on PostgreSQL; :func:`state_at` is its copy for SQLite, which has no
functions. ``tests/test_as_of_rule.py`` holds the two together: a change to one is a change to
both. No database here: the stretches and the channel's coverage come in as values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from sync.store import Coverage
from sync.timetext import utc_text

__all__ = ["AsOf", "Interval", "State", "not_listed", "state_at", "uncertain", "unknown"]


@dataclass(frozen=True)
class Interval:
    """One stretch on the blocklist; each end known to a window (None: unknown or open)."""

    added_not_before: dt.datetime | None  # None: initial load, blocklisted before the sync began
    added_by: dt.datetime
    removed_not_before: dt.datetime | None
    removed_by: dt.datetime | None  # None: still blocklisted
    initial_load: bool
    added_run_id: int = 0
    removed_run_id: int | None = None
    # Open stretches only: the last sweep could not prove the number, last shown at this time.
    proven_until: dt.datetime | None = None
    imported: bool = False  # opened by an import of a dated export, not a sweep

    def listed_for_certain_at(self, at: dt.datetime) -> bool:
        """From the addition's detection to the last moment a sweep showed the number."""
        if self.removed_by is None:
            return self.added_by <= at and (self.proven_until is None or at < self.proven_until)
        return self.added_by <= at < (self.removed_not_before or self.added_by)

    def maybe_listed_at(self, at: dt.datetime) -> bool:
        """Inside the stretch or either of its windows (an initial load's start is unknown)."""
        after_start = self.added_not_before is None or self.added_not_before <= at
        return after_start and (self.removed_by is None or at < self.removed_by)


class State(StrEnum):
    """Listed at an instant: the honest answers (``blocklist_as_of``'s ``state``, where ``no`` is
    a number not returned)."""

    YES = "yes"
    NO = "no"
    UNCERTAIN = "uncertain"  # inside a window the sweeps could not narrow
    UNKNOWN = "unknown"  # outside the channel's coverage: nothing was observed then


@dataclass(frozen=True)
class AsOf:
    """Whether a number was listed at an instant on one channel, and the stretch that says so
    (``None``: no stretch touches the instant)."""

    at: dt.datetime
    state: State
    stretch: Interval | None
    why: str


def state_at(intervals: list[Interval], at: dt.datetime, covered: Coverage | None) -> AsOf:
    """Listed at ``at``, by the rules of the database's ``blocklist_as_of`` (migrations 0013, 0014), for
    SQLite: unknown outside the channel's coverage (``covered``; None: no run succeeded);
    inside it yes inside a stretch (from its detection until the removal's window opens),
    uncertain inside a window, no otherwise. Stretch by stretch: yes wins, else the latest
    uncertain stretch."""
    if covered is None or not covered.contains(at):
        return unknown(at, covered)
    for stretch in intervals:
        if stretch.listed_for_certain_at(at):
            return AsOf(at, State.YES, stretch, "listed")
    for stretch in reversed(intervals):
        if stretch.maybe_listed_at(at):
            return uncertain(at, stretch)
    return not_listed(intervals, at)


def unknown(at: dt.datetime, covered: Coverage | None) -> AsOf:
    if covered is None:
        why = "no run of this channel has succeeded: nothing was observed"
    elif at < covered.covered_from:
        why = (
            f"before this channel's coverage, which begins at its first observation "
            f"({utc_text(covered.covered_from)}, run {covered.covered_from_run_id})"
        )
    else:
        why = (
            f"after this channel's coverage, which ends at its last succeeded run "
            f"({utc_text(covered.covered_to)}, run {covered.covered_to_run_id}): nothing has looked since"
        )
    return AsOf(at, State.UNKNOWN, None, why)


def uncertain(at: dt.datetime, stretch: Interval) -> AsOf:
    why = "inside the window of its addition" if at < stretch.added_by else "inside the window of its removal"
    return AsOf(at, State.UNCERTAIN, stretch, why)


def not_listed(intervals: list[Interval], at: dt.datetime) -> AsOf:
    ended = [s for s in intervals if s.removed_by is not None and s.removed_by <= at]
    return AsOf(at, State.NO, ended[-1] if ended else None, "removed before" if ended else "never listed")
