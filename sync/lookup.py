"""Is this number blocklisted, where, since when: the support desk's question, from the tables.

People write numbers many ways (``+91 98765 43210``, ``0091 98765 43210``, ``919876543210``, a
national ``98765 43210`` with a region); the tables hold E.164 exactly as ``phonenumbers``
formats it. So :func:`normalise` turns each input into that form first (or refuses it: input
that cannot be a phone number must not quietly answer "never seen"), and :func:`look_up`
matches exactly, through the indexes on ``mobile``.

For every account and channel the sync has swept, the answer says whether the number is
blocklisted now (as of that channel's last succeeded sweep) and every stretch of
``blocklist_periods`` with its honest window: added after ``not_before``, no later than
``detected_at``. Asked about an instant (``at``), it says whether the number was listed then —
yes, no or uncertain, by the same rules as the database's ``blocklist_as_of`` (:func:`state_at`)
— and which runs prove it. Database only, no HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import phonenumbers
from sqlalchemy import Engine, text

from sync.numbers import canonical
from sync.regions import region_of
from sync.vocabulary import RunStatus

__all__ = [
    "AsOf",
    "Channel",
    "Interval",
    "NumberReport",
    "State",
    "UnreadableNumber",
    "as_record",
    "describe",
    "look_up",
    "normalise",
    "parse_instant",
    "state_at",
]


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
    """Listed at an instant: the three honest answers."""

    YES = "yes"
    NO = "no"
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class AsOf:
    """Whether a number was listed at an instant on one channel, and the stretch that says so
    (``None``: no stretch touches the instant)."""

    at: dt.datetime
    state: State
    stretch: Interval | None
    why: str


def state_at(intervals: list[Interval], at: dt.datetime, first_sweep: dt.datetime | None) -> AsOf:
    """Listed at ``at``: yes inside a stretch (from its detection until the removal's window
    opens), uncertain inside a window, no otherwise — unless ``at`` comes before the channel's
    first sweep (``first_sweep``), when nothing the sync saw can say no. The rules of the
    database's ``blocklist_as_of`` (migration 0009), stretch by stretch: yes wins, else the
    latest uncertain stretch."""
    for stretch in intervals:
        if stretch.listed_for_certain_at(at):
            return AsOf(at, State.YES, stretch, "listed")
    for stretch in reversed(intervals):
        if stretch.maybe_listed_at(at):
            why = (
                "inside the window of its addition"
                if at < stretch.added_by
                else "inside the window of its removal"
            )
            return AsOf(at, State.UNCERTAIN, stretch, why)
    if first_sweep is None or at < first_sweep:
        return AsOf(at, State.UNCERTAIN, None, "before this channel's first sweep")
    ended = [s for s in intervals if s.removed_by is not None and s.removed_by <= at]
    return AsOf(at, State.NO, ended[-1] if ended else None, "removed before" if ended else "never listed")


@dataclass
class Channel:
    account_sid: str
    channel: str
    last_success_at: dt.datetime | None  # the answer is true as of this moment
    # Whether that sweep's listing was complete: if not, a number it did not show may still be
    # blocklisted (None: not judged, a sweep before migration 0008).
    listing_complete: bool | None = None
    # Held, but the last sweep could not prove it still listed: proven as of this moment.
    unproven_since: dt.datetime | None = None
    intervals: list[Interval] = field(default_factory=list)
    first_sweep: dt.datetime | None = None  # start of the channel's first succeeded sweep
    as_of: AsOf | None = None  # the answer at the instant asked about, if one was

    @property
    def blocklisted_now(self) -> bool:
        return bool(self.intervals) and self.intervals[-1].removed_by is None


@dataclass
class NumberReport:
    raw: str
    mobile: str  # E.164
    region: str | None
    calling_code: int
    channels: list[Channel]

    @property
    def found(self) -> bool:
        return any(c.intervals for c in self.channels)


class UnreadableNumber(ValueError):
    """A number that cannot be a phone number, or a region to read it in that does not exist.
    The message says how to write it instead."""


def normalise(raw: str, region: str | None = None) -> phonenumbers.PhoneNumber:
    """Parse a number as people write it; :class:`UnreadableNumber` if it cannot be one.

    ``+`` or ``00`` starts an international number; digits alone are international too
    (``919876543210``) unless ``region`` says how to read a national number.
    """
    text_ = raw.strip()
    if region is not None and region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise UnreadableNumber(f"--region {region!r} is not an ISO 3166 region code; use e.g. IN, US, GB")
    if text_.startswith("00") and region is None:
        text_ = "+" + text_[2:]
    elif not text_.startswith("+") and region is None:
        text_ = "+" + text_
    try:
        number = phonenumbers.parse(text_, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_possible_number(number):
        hint = "" if region else ", or give --region for a national number"
        shown = raw if len(raw) <= 40 else raw[:40] + "..."  # a hostile argument stays one line
        raise UnreadableNumber(f"{shown!r} cannot be a phone number; write it as +919876543210{hint}")
    return number


def parse_instant(value: str) -> dt.datetime:
    """An instant as ISO 8601 with its zone (``2026-12-03T09:00+05:30``, ``...Z``): a time
    without one would be read in whatever zone this host is in, and a compliance answer must
    not depend on that. :class:`UnreadableNumber` (a usage error) otherwise."""
    shown = value if len(value) <= 40 else value[:40] + "..."
    try:
        instant = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise UnreadableNumber(
            f"--at {shown!r} is not an ISO 8601 time with a zone; write e.g. 2026-12-03T09:00+05:30 "
            "or 2026-12-03T03:30Z"
        )
    return instant


def _utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """A timestamp from either database: SQLite hands views' and aggregates' values back as
    naive text; they were written in UTC."""
    if value is None:
        return None
    stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def look_up(
    engine: Engine, numbers: list[tuple[str, phonenumbers.PhoneNumber]], *, at: dt.datetime | None = None
) -> list[NumberReport]:
    """The history of each ``(raw input, parsed number)`` on every channel ever swept, and
    with ``at``, whether it was listed at that instant."""
    reports = []
    with engine.connect() as connection:
        swept = connection.execute(
            text(
                "SELECT r.account_sid, r.channel, r.finished_at, r.listing_complete, "
                "(SELECT MIN(f.started_at) FROM sync_runs f WHERE f.account_sid = r.account_sid "
                "AND f.channel = r.channel AND f.status = :status) AS first_sweep FROM sync_runs r "
                "WHERE r.id = (SELECT MAX(x.id) FROM sync_runs x WHERE x.account_sid = r.account_sid "
                "AND x.channel = r.channel AND x.status = :status) "
                "ORDER BY r.account_sid, r.channel"
            ),
            {"status": RunStatus.SUCCEEDED},
        ).all()
        for raw, number in numbers:
            mobile = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            matching = {"mobile": mobile, "as_given": canonical(raw) or mobile}
            channels = {
                (sid, channel): Channel(
                    sid,
                    channel,
                    _utc(last),
                    None if complete is None else bool(complete),
                    first_sweep=_utc(first),
                )
                for sid, channel, last, complete, first in swept
            }
            unproven = connection.execute(
                text(
                    "SELECT account_sid, channel, proven_present_at FROM blocklist_entries "
                    "WHERE mobile IN (:mobile, :as_given) AND proven_present_at IS NOT NULL"
                ),
                matching,
            ).all()
            for row in connection.execute(
                text(
                    "SELECT account_sid, channel, added_not_before, added_at, removed_not_before, "
                    "removed_at, initial_load, added_run_id, removed_run_id, proven_present_at "
                    "FROM blocklist_periods WHERE mobile IN (:mobile, :as_given) "
                    "ORDER BY account_sid, channel, added_at"
                ),
                # The sync stores any number of E.164's shape as given (canonical()), which
                # phonenumbers may format differently (+44 07911… as +447911…): match both.
                matching,
            ):
                key = (row.account_sid, row.channel)
                channel = channels.setdefault(key, Channel(*key, None))
                channel.intervals.append(
                    Interval(
                        _utc(row.added_not_before),
                        _utc(row.added_at),  # type: ignore[arg-type]
                        _utc(row.removed_not_before),
                        _utc(row.removed_at),
                        bool(row.initial_load),
                        int(row.added_run_id),
                        None if row.removed_run_id is None else int(row.removed_run_id),
                        _utc(row.proven_present_at),
                    )
                )
            for sid, channel_name, since in unproven:
                if (sid, channel_name) in channels:
                    channels[sid, channel_name].unproven_since = _utc(since)
            if at is not None:
                for channel in channels.values():
                    channel.as_of = state_at(channel.intervals, at, channel.first_sweep)
            reports.append(
                NumberReport(
                    raw,
                    mobile,
                    region_of(number),
                    number.country_code or 0,
                    [channels[k] for k in sorted(channels)],
                )
            )
    return reports


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "?"


def describe(report: NumberReport) -> list[str]:
    """The answer as lines for a person: the number, then one block per account and channel."""
    where = f"{report.region or 'no region'}, +{report.calling_code}"
    lines = [
        f"{report.mobile} ({where}): "
        + (
            "blocklisted now"
            if any(c.blocklisted_now for c in report.channels)
            else "seen before, not blocklisted now"
            if report.found
            else "never seen on any channel swept"
        )
    ]
    for channel in report.channels:
        state = "blocklisted" if channel.blocklisted_now else "not blocklisted"
        caveat = ""
        if channel.unproven_since is not None:
            caveat = (
                f"; kept: the last sweep could not confirm it, last shown {_when(channel.unproven_since)}"
            )
        elif not channel.blocklisted_now and channel.listing_complete is False:
            caveat = "; that sweep's listing was incomplete: it may have missed this number"
        lines.append(
            f"  {channel.account_sid} {channel.channel}: {state} "
            f"(as of the last sweep, {_when(channel.last_success_at)}{caveat})"
        )
        for stretch in channel.intervals:
            added = (
                f"already blocklisted when the sync began (first seen {_when(stretch.added_by)})"
                if stretch.initial_load
                else f"added between {_when(stretch.added_not_before)} and {_when(stretch.added_by)}"
            )
            removed = (
                "still blocklisted"
                if stretch.removed_by is None
                else f"removed between {_when(stretch.removed_not_before)} and {_when(stretch.removed_by)}"
            )
            lines.append(f"    {added}; {removed}")
        if channel.as_of is not None:
            lines.append(f"    at {_when(channel.as_of.at)}: {_said(channel.as_of)}")
    return lines


def _said(answer: AsOf) -> str:
    """An as-of answer with the runs that prove it."""
    stretch = answer.stretch
    if answer.state is State.YES and stretch is not None:
        until = (
            "still listed"
            if stretch.removed_run_id is None
            else f"shown until run {stretch.removed_run_id}'s window"
        )
        return f"yes, blocklisted (added by run {stretch.added_run_id}; {until})"
    if answer.state is State.UNCERTAIN:
        runs = (
            "" if stretch is None else f" (runs {stretch.added_run_id}, {stretch.removed_run_id or 'open'})"
        )
        return f"uncertain: {answer.why}{runs}"
    if stretch is not None:
        return f"no, not blocklisted (removed by run {stretch.removed_run_id}, {_when(stretch.removed_by)})"
    return "no, not blocklisted (never listed on this channel)"


def _as_of_record(answer: AsOf, iso: Callable[[dt.datetime | None], str | None]) -> dict[str, object]:
    stretch = answer.stretch
    return {
        "instant": iso(answer.at),
        "state": str(answer.state),
        "why": answer.why,
        "added_run_id": None if stretch is None else stretch.added_run_id,
        "removed_run_id": None if stretch is None else stretch.removed_run_id,
    }


def as_record(report: NumberReport) -> dict[str, object]:
    """The answer for scripts (``--json``): timestamps in ISO 8601, UTC."""

    def iso(value: dt.datetime | None) -> str | None:
        return value.astimezone(dt.UTC).isoformat() if value else None

    return {
        "input": report.raw,
        "mobile": report.mobile,
        "region": report.region,
        "calling_code": report.calling_code,
        "found": report.found,
        "blocklisted_now": any(c.blocklisted_now for c in report.channels),
        "channels": [
            {
                "account_sid": c.account_sid,
                "channel": c.channel,
                "blocklisted_now": c.blocklisted_now,
                "as_of": iso(c.last_success_at),
                "listing_complete": c.listing_complete,
                "unproven_since": iso(c.unproven_since),
                "intervals": [
                    {
                        "added_not_before": iso(i.added_not_before),
                        "added_by": iso(i.added_by),
                        "removed_not_before": iso(i.removed_not_before),
                        "removed_by": iso(i.removed_by),
                        "initial_load": i.initial_load,
                        "added_run_id": i.added_run_id,
                        "removed_run_id": i.removed_run_id,
                    }
                    for i in c.intervals
                ],
                **({} if c.as_of is None else {"at": _as_of_record(c.as_of, iso)}),
            }
            for c in report.channels
        ],
    }
