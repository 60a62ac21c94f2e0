"""Is this number blocklisted, where, since when: the support desk's question, from the tables.

Each argument is read on its own as the number a sweep would store (:mod:`sync.readings`), and
:func:`look_up` matches it exactly, through the indexes on ``mobile``. A reading that is not a
valid number where it was read (``9876543210`` without a country is ``+98 76543210``, Iran) is
answered with a warning and a hint: the readings that are valid, those the tables hold first.
A silent "never seen" would be a wrong "not blocklisted" to a compliance question; such an
answer exits 2, not 1.

For every account and channel the sync has swept, the answer says whether the number is
blocklisted now (as of that channel's last succeeded sweep) and every stretch of
``blocklist_periods`` with its honest window: added after ``not_before``, no later than
``detected_at``. The number is shown as it is stored, not as ``phonenumbers`` would format it,
so an analyst can paste it into SQL. Asked about an instant (``at``), it says whether the
number was listed then — yes, no or uncertain inside the channel's coverage, unknown outside
it — and which runs prove it. On PostgreSQL the answer is the database's ``blocklist_as_of``;
on SQLite, which has no functions, :func:`state_at` applies the same rules (a test holds the
two together). Database only, no HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, bindparam, text

from sync.as_of import AsOf, Interval, State, not_listed, state_at, uncertain, unknown
from sync.readings import Alternative, Reading, UnreadableNumber
from sync.store import Coverage, as_utc, coverage, imports_among, last_successes
from sync.timetext import utc_text
from sync.vocabulary import ExitCode

__all__ = [
    "AsOf",
    "Channel",
    "Interval",
    "NumberReport",
    "State",
    "as_record",
    "describe",
    "exit_code",
    "look_up",
    "state_at",
]

_HINTS_SHOWN = 3  # readings named in a warning's hint, so it stays one line


def _as_of_in_sql(
    connection: Connection, at: dt.datetime, spellings: list[str]
) -> dict[tuple[str, str], tuple[State, int | None]]:
    """``blocklist_as_of(at)`` for these spellings, and its unknown rows: per account and
    channel, the state and the run that opened the stretch saying so. A channel it has no row
    for is covered at ``at`` and the number was not listed then."""
    found: dict[tuple[str, str], tuple[State, int | None]] = {}
    for sid, channel, state, added_run_id in connection.execute(
        text(  # the analysts' guide's pattern: the number's index, and the unknown rows
            "SELECT account_sid, channel, state, added_run_id FROM blocklist_as_of(:at) "
            "WHERE mobile IN :spellings OR state = 'unknown'"
        ).bindparams(bindparam("spellings", expanding=True)),
        {"at": at, "spellings": spellings},
    ):
        if found.get((sid, channel), (None,))[0] is not State.YES:  # two spellings: yes wins
            found[sid, channel] = (State(state), None if added_run_id is None else int(added_run_id))
    return found


def _as_of_from(answer: tuple[State, int | None] | None, channel: Channel, at: dt.datetime) -> AsOf:
    """The database's answer, with the stretch it names and the words lookup says it in."""
    if answer is None:
        return not_listed(channel.intervals, at) if channel.coverage else unknown(at, None)
    state, added_run_id = answer
    if state is State.UNKNOWN:
        return unknown(at, channel.coverage)
    stretch = next(s for s in channel.intervals if s.added_run_id == added_run_id)
    return AsOf(at, State.YES, stretch, "listed") if state is State.YES else uncertain(at, stretch)


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
    stored_as: str | None = None  # the spelling this channel's rows hold (None: never seen here)
    coverage: Coverage | None = None  # what the channel's succeeded runs observed (None: nothing)
    as_of: AsOf | None = None  # the answer at the instant asked about, if one was
    # ``last_success_at`` is an import's (an export's time): the channel has had no sweep yet.
    as_of_import: bool = False

    @property
    def blocklisted_now(self) -> bool:
        return bool(self.intervals) and self.intervals[-1].removed_by is None


@dataclass
class NumberReport:
    raw: str
    mobile: str | None  # as stored (as a sweep would store it when never seen); None: unreadable
    region: str | None
    calling_code: int | None
    channels: list[Channel]
    warning: str | None = None  # the reading is doubtful: what, and what may have been meant
    error: str | None = None  # the argument cannot be a phone number: how to write it

    @property
    def found(self) -> bool:
        return any(c.intervals for c in self.channels)


def look_up(
    engine: Engine,
    readings: Sequence[Reading | UnreadableNumber],
    *,
    at: dt.datetime | None = None,
    country_setting: str | None = None,
) -> list[NumberReport]:
    """The history of each reading on every channel ever swept, in the order given, and with
    ``at``, whether it was listed at that instant; an :class:`UnreadableNumber` in the list is
    answered with its error and no history. Errors and warnings say how a country would help
    in the words of ``country_setting``, the name the CLI gives the country setting (none:
    they name no setting)."""
    reports = []
    with engine.connect() as connection:
        swept = last_successes(connection)  # what each channel is answered as of: the run ledger's
        covered = {(c.account_sid, c.channel): c for c in coverage(connection)}
        in_sql = connection.dialect.name == "postgresql"  # blocklist_as_of answers; else state_at
        for reading in readings:
            if isinstance(reading, UnreadableNumber):
                reports.append(
                    NumberReport(reading.raw, None, None, None, [], error=reading.said(country_setting))
                )
                continue
            # The sync stores any number of E.164's shape as given (canonical()), which
            # phonenumbers may format differently (+44 07911… as +447911…): match both.
            matching = {"spellings": list(reading.spellings)}
            channels = {
                (sid, channel): Channel(
                    sid,
                    channel,
                    as_utc(last),
                    None if complete is None else bool(complete),
                    coverage=covered.get((sid, channel)),
                    as_of_import=bool(imported),
                )
                for sid, channel, last, complete, _, imported in swept
            }
            unproven = connection.execute(
                text(
                    "SELECT account_sid, channel, proven_present_at FROM blocklist_entries "
                    "WHERE mobile IN :spellings AND proven_present_at IS NOT NULL"
                ).bindparams(bindparam("spellings", expanding=True)),
                matching,
            ).all()
            stored: list[str] = []
            periods = connection.execute(
                text(
                    "SELECT account_sid, channel, mobile, added_not_before, added_at, "
                    "removed_not_before, removed_at, initial_load, added_run_id, removed_run_id, "
                    "proven_present_at FROM blocklist_periods WHERE mobile IN :spellings "
                    "ORDER BY account_sid, channel, added_at, added_run_id"
                ).bindparams(bindparam("spellings", expanding=True)),
                matching,
            ).all()
            # Which stretches an import began is the run ledger's to say, as it tells imports from sweeps.
            by_import = imports_among(connection, (int(row.added_run_id) for row in periods))
            for row in periods:
                key = (row.account_sid, row.channel)
                channel = channels.setdefault(key, Channel(*key, None))
                channel.stored_as = row.mobile
                stored += [] if row.mobile in stored else [row.mobile]
                channel.intervals.append(
                    Interval(
                        as_utc(row.added_not_before),
                        as_utc(row.added_at),
                        as_utc(row.removed_not_before),
                        as_utc(row.removed_at),
                        bool(row.initial_load),
                        int(row.added_run_id),
                        None if row.removed_run_id is None else int(row.removed_run_id),
                        as_utc(row.proven_present_at),
                        imported=int(row.added_run_id) in by_import,
                    )
                )
            for sid, channel_name, since in unproven:
                if (sid, channel_name) in channels:
                    channels[sid, channel_name].unproven_since = as_utc(since)
            if at is not None:
                answers = _as_of_in_sql(connection, at, matching["spellings"]) if in_sql else {}
                for key, channel in channels.items():
                    channel.as_of = (
                        _as_of_from(answers.get(key), channel, at)
                        if in_sql
                        else state_at(channel.intervals, at, channel.coverage)
                    )
            reports.append(
                NumberReport(
                    reading.raw,
                    stored[0] if stored else reading.mobile,
                    reading.region,
                    reading.calling_code,
                    [channels[k] for k in sorted(channels)],
                    warning=_warning(connection, reading, country_setting),
                )
            )
    return reports


def _warning(connection: Connection, reading: Reading, setting: str | None) -> str | None:
    """The doubt about a reading and its hint: the valid readings the tables have seen; else
    the valid readings, those in a calling code the tables hold first (the account's own
    countries); else how to write the number."""
    if reading.doubt is None:
        return None
    if not reading.alternatives:
        return f"{reading.doubt}; check the digits, and write it with + and its country code"
    seen = set(
        connection.execute(
            text("SELECT DISTINCT mobile FROM blocklist_periods WHERE mobile IN :numbers").bindparams(
                bindparam("numbers", expanding=True)
            ),
            {"numbers": [a.mobile for a in reading.alternatives]},
        ).scalars()
    )
    named = [_named(a, setting) for a in reading.alternatives if a.mobile in seen]
    if named:
        return f"{reading.doubt}; did you mean {' or '.join(named[:_HINTS_SHOWN])}? the sync has seen it"
    codes = {a.calling_code for a in reading.alternatives}
    held = {code for code in codes if _holds_calling_code(connection, code)}
    ranked = sorted(reading.alternatives, key=lambda a: a.calling_code not in held)  # stable: by country
    named = [_named(a, setting) for a in ranked]
    more = f" and {len(named) - _HINTS_SHOWN} more" if len(named) > _HINTS_SHOWN else ""
    return (
        f"{reading.doubt}; valid readings, none seen by the sync: "
        f"{', '.join(named[:_HINTS_SHOWN])}{more}: write it with + and its country code"
        + (f", or give {setting}" if setting else "")
    )


def _named(alternative: Alternative, setting: str | None) -> str:
    """``+919876543219 (India, --country IN)``: a reading, and how to ask for it where it is
    national (a variable as ``NAME=IN``, a flag as ``--flag IN``)."""
    if alternative.region is None or setting is None:
        return f"{alternative.mobile} ({alternative.country})"
    asked = (
        f"{setting} {alternative.region}" if setting.startswith("-") else f"{setting}={alternative.region}"
    )
    return f"{alternative.mobile} ({alternative.country}, {asked})"


def _holds_calling_code(connection: Connection, calling_code: int) -> bool:
    """Whether any number blocklisted now starts with ``+calling_code``: one probe of the
    ``mobile`` index (the key columns sort as bytes, "C" collation, so the range is a prefix)."""
    prefix = f"+{calling_code}"
    return (
        connection.execute(
            text("SELECT 1 FROM blocklist_entries WHERE mobile >= :low AND mobile < :high LIMIT 1"),
            {"low": prefix, "high": prefix[:-1] + chr(ord(prefix[-1]) + 1)},
        ).first()
        is not None
    )


def exit_code(report: NumberReport) -> ExitCode:
    """0 found on some channel; 1 never seen; 2 unreadable, or never seen as read where that
    reading is not a valid number (the answer may be about another number than meant)."""
    if report.error is not None or (report.warning is not None and not report.found):
        return ExitCode.USAGE
    return ExitCode.OK if report.found else ExitCode.FAILED


def describe(report: NumberReport) -> list[str]:
    """The answer as lines for a person: the number, any warning, then one block per account
    and channel. (An unreadable argument has no lines: its error goes to stderr.)"""
    if report.error is not None:
        return []
    where = f"{report.region or 'no region'}, +{report.calling_code}" if report.calling_code else "no region"
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
    if report.warning:
        lines.append(f"  warning: {report.warning}")
    for channel in report.channels:
        state = "blocklisted" if channel.blocklisted_now else "not blocklisted"
        caveat = ""
        if channel.unproven_since is not None:
            caveat = (
                f"; kept: the last sweep could not confirm it, last shown {utc_text(channel.unproven_since)}"
            )
        elif not channel.blocklisted_now and channel.listing_complete is False:
            caveat = "; that sweep's listing was incomplete: it may have missed this number"
        spelled = f" as {channel.stored_as}" if channel.stored_as not in (None, report.mobile) else ""
        source = "the last import (no sweep yet), an export of" if channel.as_of_import else "the last sweep,"
        lines.append(
            f"  {channel.account_sid} {channel.channel}: {state}{spelled} "
            f"(as of {source} {utc_text(channel.last_success_at)}{caveat})"
        )
        for stretch in channel.intervals:
            added = (
                f"already blocklisted when the sync began (first seen {utc_text(stretch.added_by)})"
                if stretch.initial_load
                else f"added between {utc_text(stretch.added_not_before)} and {utc_text(stretch.added_by)}"
            )
            if stretch.imported:
                added += " (from an imported export)"
            removed = (
                "still blocklisted"
                if stretch.removed_by is None
                else (
                    f"removed between {utc_text(stretch.removed_not_before)} "
                    f"and {utc_text(stretch.removed_by)}"
                )
            )
            lines.append(f"    {added}; {removed}")
        if channel.as_of is not None:
            lines.append(f"    at {utc_text(channel.as_of.at)}: {_said(channel.as_of)}")
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
    if answer.state is State.UNKNOWN:
        return f"unknown: {answer.why}"
    if stretch is not None:
        return (
            f"no, not blocklisted (removed by run {stretch.removed_run_id}, {utc_text(stretch.removed_by)})"
        )
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
        "warning": report.warning,
        "error": report.error,
        "exit_code": int(exit_code(report)),
        "channels": [
            {
                "account_sid": c.account_sid,
                "channel": c.channel,
                "mobile": c.stored_as,
                "blocklisted_now": c.blocklisted_now,
                "as_of": iso(c.last_success_at),
                "as_of_import": c.as_of_import,
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
                        "imported": i.imported,
                        "removed_run_id": i.removed_run_id,
                    }
                    for i in c.intervals
                ],
                **({} if c.as_of is None else {"at": _as_of_record(c.as_of, iso)}),
            }
            for c in report.channels
        ],
    }
