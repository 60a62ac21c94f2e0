"""One export file read as a listing: CSV with a ``mobile`` column, one number per line, or
JSON (rows, or the API's envelope), each row's number canonical and counted as a sweep's are
(:class:`~sync.proof.ListingTally`); a row that cannot be read refuses the file."""

from __future__ import annotations

import codecs
import csv
import io
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ijson

from sync.exports.files import Bounded, ExportError, ExportFile, inflated
from sync.numbers import cannot_be_longer, canonical, describe_rejected
from sync.proof import ListingTally, envelope_refusal
from sync.vendor_text import vendor_text
from sync.vocabulary import Channel

__all__ = ["MAX_LINE", "ListingOfOtherChannels", "Reading"]

MAX_LINE = 4096  # characters of one CSV line
_CHANNEL_TYPE_CHARS = 64  # as a sweep stores a row's channel_type
_CHANNELS = tuple(c.value for c in Channel)
_MAX_DEPTH = 16  # JSON nesting: an envelope, its data, a row and its values are 4
_OPENING = frozenset({"start_map", "start_array"})
_ENDED = ("end", None)  # what the parser's events give once exhausted (yajl raises first)


class ListingOfOtherChannels(ExportError):
    """A file whose channel column gives every row to other channels (``others``: rows of
    each), so it is no listing of ``channel``; ``likeliest`` is the channel the CLI suggests
    importing it as."""

    def __init__(self, shown: str, channel: str, others: dict[str, int]) -> None:
        counted = ", ".join(f"{c} {n}" for c, n in sorted(others.items()))
        super().__init__(
            f"{shown}: no row of {channel}: its channel column gives every row to other "
            f"channels ({counted}), so it is no listing of {channel}"
        )
        self.shown, self.channel, self.others = shown, channel, others

    @property
    def likeliest(self) -> str:
        return min(self.others)


@dataclass
class Reading:
    """One file read as a listing: rows yielded by :meth:`rows`, and what was counted on the way."""

    source: ExportFile
    channel: str  # the channel the file is a listing of; a row its channel column gives to another is skipped
    listing: ListingTally = field(default_factory=ListingTally)  # the rows of the listing the file holds
    other_channels: Counter[str] = field(default_factory=Counter)  # rows skipped, by channel
    format: str = ""  # csv, lines or json, for the result line
    _line: str = ""  # the text line last read (CSV and lines), and its number
    _line_number: int = 0
    _json_items: int = 0  # the items of the JSON array of rows, of every channel

    @property
    def shown(self) -> str:
        return vendor_text(self.source.name, 80)

    def rows_of(self) -> Iterator[tuple[str, str | None]]:
        """``(mobile, channel_type)`` of each number the file lists, canonical, streamed."""
        try:
            with inflated(self.source.path, self.shown) as bounded:
                first = self._first_byte(bounded)
                if first in (b"{", b"["):
                    self.format = "json"
                    yield from self._json(bounded)
                else:
                    yield from self._text(bounded)
                self._some_row_of_the_channel()
        except (OSError, EOFError, zlib.error) as exc:
            raise ExportError(
                f"{self.shown}: cannot be read ({vendor_text(str(exc), 80)}); is it a complete file?"
            ) from None

    def _first_byte(self, stream: io.BufferedReader[Bounded]) -> bytes:
        """The first byte that is not a byte order mark or white space, left unread."""
        peeked = stream.peek(64)
        text = peeked.removeprefix(codecs.BOM_UTF8)
        stripped = text.lstrip()
        return stripped[:1]

    def _of_the_channel(self, named: object, *, where: str, shown: object) -> bool:
        """Whether a row whose channel column says ``named`` is a row of this listing's
        channel; a row of another is counted in :attr:`other_channels` and skipped.

        The channel column is honoured, not ignored: a console export of every channel holds
        each channel's listing, and its other rows are no part of this one. A row naming no
        channel (a typo, a code) could be this channel's, so it refuses the file, as a number
        that cannot be read does."""
        name = named.strip().lower() if isinstance(named, str) else None
        if name not in _CHANNELS:
            raise ExportError(
                f"{self.shown}: {where} ({describe_rejected(shown)}) names no channel "
                f"({describe_rejected(named)} is none of {', '.join(_CHANNELS)}), so it could be a row "
                f"of {self.channel}; correct or delete that row and import the file again"
            )
        if name != self.channel:
            self.other_channels[name] += 1
            return False
        return True

    def _some_row_of_the_channel(self) -> None:
        """A file whose channel column gives every row to other channels is no listing of
        this one (an empty listing would say every number was gone)."""
        if self.listing.rows == 0 and self.other_channels:
            raise ListingOfOtherChannels(self.shown, self.channel, dict(self.other_channels))

    def _count(
        self, raw: object, channel_type: object = None, *, where: str, shown: object = None
    ) -> tuple[str, str | None]:
        """The row as ``(mobile, channel_type)``; :class:`ExportError` for a row that cannot be
        read as a number, at ``where`` (``line 12``). ``shown``: what that row is shown as,
        when not ``raw`` itself (a CSV row is shown as its whole line: :meth:`_line_as_read`).

        A sweep counts such a row and goes on: the removal checks prove every absence it
        records. An export's absences are proven by the export alone, and a row it cannot read
        could be any number (a spreadsheet dropped its +, wrote it as 9.198E+11 or as
        ########), so it proves no number absent, and the file is refused whole."""
        mobile = canonical(raw)
        if mobile is None:
            raise ExportError(
                f"{self.shown}: {where} ({describe_rejected(raw if shown is None else shown)}) cannot "
                "be read as a phone number (+ and 7 to 15 digits; a spreadsheet may have dropped the + "
                "or written 9.198E+11), and a row that could be any number leaves no number proven "
                "absent; correct or delete that row and import the file again"
            )
        kind = None if channel_type is None else vendor_text(str(channel_type), _CHANNEL_TYPE_CHARS)
        self.listing.count(kind)
        return mobile, kind

    # -- CSV and one number per line ---------------------------------------------------

    def _text(self, stream: io.BufferedReader[Bounded]) -> Iterator[tuple[str, str | None]]:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="")
        lines = self._bounded_lines(text)
        try:
            reader = csv.reader(lines)
            header = next(reader, None)
            if header is None:
                raise ExportError(
                    f"{self.shown} is empty; an export of an empty blocklist needs a `mobile` header line"
                )
            names = [cell.strip().lower() for cell in header]
            if "mobile" in names:
                self.format = "csv"
                column = names.index("mobile")
                kind_column = names.index("channel_type") if "channel_type" in names else None
                channel_column = names.index("channel") if "channel" in names else None
                for cells in reader:
                    if not cells or cells == [""]:
                        continue
                    if channel_column is not None:
                        named = cells[channel_column] if channel_column < len(cells) else None
                        if not self._of_the_channel(named, where=self._where(), shown=self._line_as_read()):
                            continue
                    raw = cells[column] if column < len(cells) else None
                    has_kind = kind_column is not None and kind_column < len(cells)
                    kind = cells[kind_column] if has_kind else None  # type: ignore[index]
                    row = self._count(raw, kind or None, where=self._where(), shown=self._line_as_read())
                    yield self._whole(row, len(cells) == len(header) and cells[-1] != "")
            elif len(header) == 1 and canonical(header[0]) is not None:
                self.format = "lines"
                yield self._whole(self._count(header[0], where=self._where()))
                for cells in reader:
                    if not cells or cells == [""]:
                        continue
                    line = self._line_as_read()
                    row = self._count(cells[0] if len(cells) == 1 else line, where=self._where(), shown=line)
                    yield self._whole(row)
            else:
                raise ExportError(
                    f"{self.shown}: no `mobile` column (its first line is "
                    f"'{vendor_text(self._line_as_read(), 60)}'); give a CSV whose header names a "
                    "mobile column, one number per line, or the API's JSON"
                )
        except UnicodeDecodeError:
            raise ExportError(
                f"{self.shown} is not UTF-8 text, CSV or JSON; is it a blocklist export?"
            ) from None
        except csv.Error as exc:
            raise ExportError(f"{self.shown}: not readable as CSV ({vendor_text(str(exc), 80)})") from None

    def _bounded_lines(self, text: io.TextIOWrapper) -> Iterator[str]:
        for number, line in enumerate(iter(lambda: text.readline(MAX_LINE + 1), ""), start=1):
            if len(line) > MAX_LINE:
                raise ExportError(
                    f"{self.shown}: line {number} is longer than {MAX_LINE} characters; no listing's "
                    "line is: is it a blocklist export?"
                )
            self._line, self._line_number = line, number
            yield line

    def _where(self) -> str:
        return f"line {self._line_number}"

    def _whole(self, row: tuple[str, str | None], every_column: bool = True) -> tuple[str, str | None]:
        """``row``, unless it was read from a last line without its line break that does not
        read as a whole row: a file cut mid-line ends so, and the fragment (``+9190000``) can
        have the shape of a number. A file may lack its final line break, so such a line is
        trusted when it holds every column (the last not empty: a cut may fall just after a
        comma) and a number that cannot be longer
        (:func:`~sync.numbers.cannot_be_longer`); otherwise the file is refused as cut short."""
        if self._line.endswith(("\n", "\r")) or (every_column and cannot_be_longer(row[0])):
            return row
        raise ExportError(
            f"{self.shown}: {self._where()} ({describe_rejected(self._line_as_read())}), its last, has no "
            "line break and does not read as a whole row with a number that could not be longer: the "
            "file looks cut short; export it again, or if it is whole, end it with a line break"
        )

    def _line_as_read(self) -> str:
        """The line the CSV reader took its last row from, whole.

        What a message shows of a CSV file is a line, never a cell: the reader cuts a line at
        its commas and quotes, and a secret cut so (a key with a comma in it, in a key file
        handed over as an export) would be shown in pieces that redaction, which blanks the
        secret whole, cannot recognise. A whole line passes through :func:`vendor_text`, which
        redacts it before it cuts it."""
        return self._line.rstrip("\r\n")

    # -- JSON ----------------------------------------------------------------------------

    def _json(self, stream: io.BufferedReader[Bounded]) -> Iterator[tuple[str, str | None]]:
        """The rows of a JSON export: a bare array of rows, or the API's envelope
        (``{"code": "CNT196", "data": [...], "error": {}}``) holding more than one page.

        Read event by event (ijson's ``basic_parse``, which keeps no path of where it is:
        ``ijson.items`` builds one per event, in time that grows with the square of the depth),
        and built here, never deeper than :data:`_MAX_DEPTH`: JSON nested 100,000 deep is
        refused at its 17th bracket, in a millisecond, instead of a minute's work or
        ``RecursionError``. The envelope is judged when it has been read whole, whatever the
        order of its keys: an error body (a code other than the success code, an ``error``
        that is not empty) is refused however many rows it carries, and so is one page."""
        if stream.peek(3)[:3] == codecs.BOM_UTF8:
            stream.read(3)
        events = iter(ijson.basic_parse(stream, use_float=True))
        try:
            event, _ = next(events, _ENDED)
            if event == "start_array":
                yield from self._json_rows(events)
            elif event == "start_map":
                yield from self._envelope(events)
            else:
                raise ExportError(
                    f"{self.shown}: JSON that is neither rows nor the API's answer; it is not a listing"
                )
            for _ in events:  # yajl raises at most of what may follow the document
                raise ExportError(f"{self.shown}: more than one JSON document; it is not a listing")
        except ijson.JSONError as exc:
            # Only the parser's first line: the next ones quote 30 bytes of the file around the
            # error, cut where the parser chose, so a secret there would show in part.
            said = str(exc).strip().split("\n", 1)[0]
            raise ExportError(
                f"{self.shown}: not valid JSON ({vendor_text(said, 80)}); is it a complete export?"
            ) from None

    def _json_rows(
        self, events: Iterator[tuple[str, Any]], depth: int = 1
    ) -> Iterator[tuple[str, str | None]]:
        """Each row of an array whose ``start_array`` was read, at ``depth``."""
        found = 0
        for event, value in events:
            if event == "end_array":
                self._json_items = found
                return
            found += 1
            item = (
                self._row(events, depth + 1)
                if event == "start_map"
                else self._value(events, event, value, depth + 1)
            )
            where = f"row {found} of its rows"
            if isinstance(item, dict):
                if not self._of_the_channel(item.get("channel", self.channel), where=where, shown=item):
                    continue
                yield self._count(item.get("mobile", item), item.get("channel_type"), where=where)
            else:
                yield self._count(item, where=where)
        raise self._cut_short()

    def _row(self, events: Iterator[tuple[str, Any]], depth: int) -> dict[str, Any]:
        """A row object whose ``start_map`` was read, at ``depth``: :meth:`_value`'s work, with
        the scalar values (every one of an honest row) read in place, as the row's one call."""
        row: dict[str, Any] = {}
        for event, key in events:
            if event == "end_map":
                return row
            event, value = next(events, _ENDED)
            row[key] = self._value(events, event, value, depth + 1) if event in _OPENING else value
        raise self._cut_short()

    def _envelope(self, events: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, str | None]]:
        """The rows of the API's envelope whose ``start_map`` was read; then the envelope judged."""
        code: object = None
        error = data = False  # an `error` that is not empty; a `data` array read
        for event, key in events:
            if event == "end_map":
                break
            event, value = next(events, _ENDED)
            if key == "data" and data:
                raise ExportError(f"{self.shown}: two 'data' arrays; it is not a listing")
            if key == "data" and event == "start_array":
                yield from self._json_rows(events, depth=2)
                data = True
            elif key == "code":
                code = self._value(events, event, value, 2)
            elif key == "error":
                error = self._holds_something(events, event, value, 2)
            else:
                self._holds_something(events, event, value, 2)
        else:
            raise self._cut_short()
        refused = envelope_refusal(code=code, error=error, data=data, rows=self._json_items)
        if refused is not None:
            raise ExportError(f"{self.shown}: {refused}")

    def _value(self, events: Iterator[tuple[str, Any]], event: str, value: Any, depth: int) -> Any:
        """The JSON value that starts with ``(event, value)``, built, at ``depth``."""
        if event not in _OPENING:
            return value
        if depth > _MAX_DEPTH:
            raise self._too_deep()
        if event == "start_map":
            mapping: dict[str, Any] = {}
            for event, key in events:
                if event == "end_map":
                    return mapping
                event, value = next(events, _ENDED)
                mapping[key] = self._value(events, event, value, depth + 1)
        else:
            items: list[Any] = []
            for event, value in events:
                if event == "end_array":
                    return items
                items.append(self._value(events, event, value, depth + 1))
        raise self._cut_short()

    def _holds_something(self, events: Iterator[tuple[str, Any]], event: str, value: Any, depth: int) -> bool:
        """Read past the value that starts with ``(event, value)``, at ``depth``, building
        nothing (an `error` may carry a million rows); whether it holds anything (not null,
        ``""``, ``{}`` or ``[]``)."""
        if event not in _OPENING:
            return value not in (None, "")
        if depth > _MAX_DEPTH:
            raise self._too_deep()
        closing = "end_map" if event == "start_map" else "end_array"
        held = False
        for event, value in events:
            if event == closing:
                return held
            held = True
            if event in _OPENING:
                self._holds_something(events, event, value, depth + 1)
        raise self._cut_short()

    def _cut_short(self) -> ExportError:
        return ExportError(f"{self.shown}: JSON cut short; is it a complete export?")

    def _too_deep(self) -> ExportError:
        return ExportError(
            f"{self.shown}: JSON nested deeper than {_MAX_DEPTH} levels; no listing is (its rows are "
            "objects of strings): is it a blocklist export?"
        )
