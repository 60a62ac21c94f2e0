"""Dated blocklist exports read from files: the rows of one full listing, and where it came from.

The files side of ``blocklist-sync import`` (:mod:`sync.backfill` joins it to the store), as
:mod:`sync.kaleyra` is the HTTP side of a sweep: it knows nothing of the database. The evidence
of a channel's past is what teams kept — CSV dumps of an earlier script, console exports,
every page of a listing a cron job saved — so it reads each of those, and refuses what is
none:

- CSV whose header names a ``mobile`` column (a ``channel_type`` column is kept, a ``channel``
  column honoured: rows of other channels are skipped and counted; any other columns are
  ignored), or one number per line with no header; UTF-8, a byte order mark allowed;
- JSON: a bare array of rows (``[{"mobile": …, "channel_type": …}, …]``, any number of them),
  or the Get Blocklist API's envelope (``{"code": "CNT196", "data": [...], "error": {}}``)
  holding more rows than one page: one page is refused, as is an error body
  (:func:`sync.proof.envelope_refusal`);
- either of them gzip-compressed, told by its magic bytes, not by its name.

Every number goes through :func:`sync.numbers.canonical` as a sweep's do; a row that cannot be
read as one refuses the file (:meth:`Reading._count` says why). A file is streamed, never
held: rows go straight on to the staging table, JSON event by event (ijson's ``basic_parse``), and
what a hostile file can make this read is bounded as the client bounds a body: at most
:data:`MAX_BYTES` once inflated, and at most :data:`MAX_RATIO` times the compressed bytes read
(a gzip bomb stops at its first MiB inflated: the time is bounded by the file's size, not only
the memory), a CSV line at most :data:`MAX_LINE` characters, JSON nested at most
:data:`_MAX_DEPTH` deep.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import hashlib
import io
import os
import re
import stat
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ijson

from sync.numbers import cannot_be_longer, canonical, describe_rejected
from sync.proof import ListingTally, envelope_refusal
from sync.settings import parse_instant
from sync.vendor_text import vendor_text
from sync.vocabulary import Channel

__all__ = [
    "MAX_BYTES",
    "MAX_LINE",
    "MAX_RATIO",
    "ExportError",
    "ExportFile",
    "Reading",
    "source_of",
    "time_in_name",
]

MAX_BYTES = 4 * 1024**3  # inflated: 20M numbers as CSV take about 320 MB
MAX_LINE = 4096  # characters of one CSV line
MAX_RATIO = 200  # a gzip export may inflate to this many times the bytes read of it ...
_RATIO_FLOOR = 256 * 1024  # ... once past its first 256 KiB
_SIP = 16 * 1024  # the most gzip takes of a compressed file at once
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1024 * 1024
_CHANNEL_TYPE_CHARS = 64  # as a sweep stores a row's channel_type
_CHANNELS = tuple(c.value for c in Channel)
_MAX_DEPTH = 16  # JSON nesting: an envelope, its data, a row and its values are 4
_OPENING = frozenset({"start_map", "start_array"})
_ENDED = ("end", None)  # what the parser's events give once exhausted (yajl raises first)
# A time in a file name: blocklist-sms-2026-11-01T0900Z.csv, export_2026-11-01T09:00:00+05:30.json.gz
_NAME_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:?\d{2}(?::?\d{2})?(?:Z|[+-]\d{2}:?\d{2})")


class ExportError(Exception):
    """A file that cannot be imported: its one-line message names the file and what to do."""


@dataclass(frozen=True)
class ExportFile:
    """A file as it was read: its name without directory, size and SHA-256 (provenance)."""

    path: Path
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


def time_in_name(path: str) -> dt.datetime:
    """The time a file's name carries (``blocklist-sms-2026-11-01T0900Z.csv``): exactly one ISO
    8601 time with a zone, in its base name."""
    name = os.path.basename(path)
    found = _NAME_TIME.findall(name)
    if len(found) != 1:
        raise ExportError(
            f"{vendor_text(name, 80)}: its name carries {'no' if not found else 'more than one'} time "
            "with a zone (like blocklist-sms-2026-11-01T0900Z.csv); give --as-of TIME for each file"
        )
    return parse_instant(found[0], f"the time in {vendor_text(name, 80)!r},")


def _open(path: Path) -> IO[bytes]:
    """The file, opened without blocking and only if it is a regular file (a FIFO would hang,
    a device never end)."""
    shown = vendor_text(str(path), 120)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ExportError(f"cannot read {shown} ({exc.strerror}); check the path") from None
    except ValueError:
        raise ExportError(f"{shown!r} is no file name; check the path") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ExportError(f"{shown} is not a regular file; give the export file itself")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def source_of(path: str) -> ExportFile:
    """Read the whole file once for its size and SHA-256 (before anything is written: a file
    that cannot be read stops the import with nothing applied)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with _open(Path(path)) as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise ExportError(f"cannot read {vendor_text(path, 120)} ({exc.strerror}); check the file") from None
    return ExportFile(Path(path), size, digest.hexdigest())


class _Bounded(io.RawIOBase):
    """A stream that refuses to yield more than :data:`MAX_BYTES`: what a gzip bomb or an
    endless file runs into; and, inflating ``compressed``, more than :data:`MAX_RATIO` times
    the bytes read of it so far (past :data:`_RATIO_FLOOR`).

    The cap on size bounds memory and disk, not time: 4 GiB of empty lines gzip to 4 MiB and
    took a quarter of an hour to read, one empty line at a time. The work an export makes is
    in proportion to what it inflates to, so bounding that by the file's own size bounds the
    time by the file's size. Honest exports compress at most about 50 times (numbers in order,
    pretty-printed JSON), a bomb a thousand: the ratio is measured as the file is read, so a
    bomb stops at its first MiB inflated, before a line of it is read."""

    def __init__(self, inner: IO[bytes] | io.BufferedIOBase, name: str, compressed: _Sips | None) -> None:
        self._inner = inner
        self._name = name
        self._compressed = compressed
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        self._read += len(data)
        if self._read > MAX_BYTES:
            raise ExportError(
                f"{self._name}: more than {MAX_BYTES // 1024**3} GiB once inflated; no blocklist export "
                "is that large: is it the right file?"
            )
        if (
            self._compressed is not None
            and self._read > _RATIO_FLOOR
            and self._read > MAX_RATIO * self._compressed.taken
        ):
            inflated, read = self._read // 1024**2, self._compressed.taken // 1024
            raise ExportError(
                f"{self._name}: inflates to more than {MAX_RATIO} times its size ({inflated} MiB from "
                f"{read} KiB so far); no export of distinct numbers "
                "compresses so well: is it the right file? (an export with long repeated columns: gunzip "
                "it and import the file itself)"
            )
        buffer[: len(data)] = data
        return len(data)


class _Sips:
    """A compressed file as gzip reads it: at most :data:`_SIP` bytes a read, counted, so
    that what it has taken is known to within a sip (Python 3.12's gzip asks for 128 KiB at a
    time, which would let a bomb inflate 25 MiB more before its ratio showed)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.taken = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(_SIP if size < 0 else min(size, _SIP))
        self.taken += len(data)
        return data

    def seek(self, offset: int, /) -> int:  # gzip rewinds with it; nothing here does
        self.taken = self._raw.seek(offset)
        return self.taken


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
            with _open(self.source.path) as raw:
                head = raw.read(2)
                raw.seek(0)
                stream: IO[bytes] | io.BufferedIOBase = raw
                compressed = None
                if head == _GZIP_MAGIC:
                    compressed = _Sips(raw)
                    stream = gzip.GzipFile(fileobj=compressed, mode="rb")
                bounded = io.BufferedReader(_Bounded(stream, self.shown, compressed), _CHUNK)
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

    def _first_byte(self, stream: io.BufferedReader[_Bounded]) -> bytes:
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
            others = ", ".join(f"{c} {n}" for c, n in sorted(self.other_channels.items()))
            first = min(self.other_channels)
            raise ExportError(
                f"{self.shown}: no row of {self.channel}: its channel column gives every row to other "
                f"channels ({others}), so it is no listing of {self.channel}; import it with "
                f"--channel {first}"
            )

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

    def _text(self, stream: io.BufferedReader[_Bounded]) -> Iterator[tuple[str, str | None]]:
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

    def _json(self, stream: io.BufferedReader[_Bounded]) -> Iterator[tuple[str, str | None]]:
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
