"""Is this number blocklisted, where, since when: the support desk's question, from the tables.

People write numbers many ways (``+91 98765 43210``, ``0091 98765 43210``, ``919876543210``, a
national ``98765 43210`` with a region); the tables hold E.164 exactly as ``phonenumbers``
formats it. So :func:`normalise` turns each input into that form first (or refuses it: input
that cannot be a phone number must not quietly answer "never seen"), and :func:`look_up`
matches exactly, through the indexes on ``mobile``.

For every account and channel the sync has swept, the answer says whether the number is
blocklisted now (as of that channel's last succeeded sweep) and every stretch of
``blocklist_intervals`` with its honest window: added after ``not_before``, no later than
``detected_at``. Database only, no HTTP.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import phonenumbers
from sqlalchemy import Engine, text

from sync.numbers import canonical
from sync.regions import region_of
from sync.vocabulary import RunStatus

__all__ = [
    "Channel",
    "Interval",
    "NumberReport",
    "UnreadableNumber",
    "as_record",
    "describe",
    "look_up",
    "normalise",
]


@dataclass(frozen=True)
class Interval:
    """One stretch on the blocklist; each end known to a window (None: unknown or open)."""

    added_not_before: dt.datetime | None  # None: initial load, blocklisted before the sync began
    added_by: dt.datetime
    removed_not_before: dt.datetime | None
    removed_by: dt.datetime | None  # None: still blocklisted
    initial_load: bool


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


def _utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """A timestamp from either database: SQLite hands views' and aggregates' values back as
    naive text; they were written in UTC."""
    if value is None:
        return None
    stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def look_up(engine: Engine, numbers: list[tuple[str, phonenumbers.PhoneNumber]]) -> list[NumberReport]:
    """The history of each ``(raw input, parsed number)`` on every channel ever swept."""
    reports = []
    with engine.connect() as connection:
        swept = connection.execute(
            text(
                "SELECT r.account_sid, r.channel, r.finished_at, r.listing_complete FROM sync_runs r "
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
                (sid, channel): Channel(sid, channel, _utc(at), None if complete is None else bool(complete))
                for sid, channel, at, complete in swept
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
                    "SELECT account_sid, channel, blocked_from_not_before, blocked_from, "
                    "unblocked_not_before, unblocked_at, initial_load FROM blocklist_intervals "
                    "WHERE mobile IN (:mobile, :as_given) "
                    "ORDER BY account_sid, channel, blocked_from"
                ),
                # The sync stores any number of E.164's shape as given (canonical()), which
                # phonenumbers may format differently (+44 07911… as +447911…): match both.
                matching,
            ):
                key = (row.account_sid, row.channel)
                channel = channels.setdefault(key, Channel(*key, None))
                channel.intervals.append(
                    Interval(
                        _utc(row.blocked_from_not_before),
                        _utc(row.blocked_from),  # type: ignore[arg-type]
                        _utc(row.unblocked_not_before),
                        _utc(row.unblocked_at),
                        bool(row.initial_load),
                    )
                )
            for sid, channel_name, since in unproven:
                if (sid, channel_name) in channels:
                    channels[sid, channel_name].unproven_since = _utc(since)
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
    return lines


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
                    }
                    for i in c.intervals
                ],
            }
            for c in report.channels
        ],
    }
