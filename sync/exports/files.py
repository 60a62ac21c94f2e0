"""An export as a file: opened only if it is a regular file, its provenance (name, size,
SHA-256), the time its name carries, and its bytes inflated and bounded, so that what a hostile
file can make the import read is bounded by the file's own size (:class:`Bounded`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import io
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sync.settings import parse_instant
from sync.vendor_text import vendor_text

__all__ = [
    "MAX_BYTES",
    "MAX_RATIO",
    "ExportError",
    "ExportFile",
    "NoTimeInName",
    "inflated",
    "open_file",
    "source_of",
    "time_in_name",
]

MAX_BYTES = 4 * 1024**3  # inflated: 20M numbers as CSV take about 320 MB
MAX_RATIO = 200  # a gzip export may inflate to this many times the bytes read of it ...
_RATIO_FLOOR = 256 * 1024  # ... once past its first 256 KiB
_SIP = 16 * 1024  # the most gzip takes of a compressed file at once
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1024 * 1024
# A time in a file name: blocklist-sms-2026-11-01T0900Z.csv, export_2026-11-01T09:00:00+05:30.json.gz
_NAME_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:?\d{2}(?::?\d{2})?(?:Z|[+-]\d{2}:?\d{2})")


class ExportError(Exception):
    """A file that cannot be imported: its one-line message names the file and what to do."""


class NoTimeInName(ExportError):
    """A file whose name carries no time with a zone, or more than one (``found``): the time
    it shows must come from elsewhere, and only the CLI knows how the operator gives it."""

    def __init__(self, name: str, found: int) -> None:
        super().__init__(
            f"{name}: its name carries {'no' if not found else 'more than one'} time "
            "with a zone (like blocklist-sms-2026-11-01T0900Z.csv)"
        )
        self.name, self.found = name, found


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
    8601 time with a zone, in its base name; :class:`NoTimeInName` if it has none, or several."""
    name = os.path.basename(path)
    found = _NAME_TIME.findall(name)
    if len(found) != 1:
        raise NoTimeInName(vendor_text(name, 80), len(found))
    return parse_instant(found[0], f"the time in {vendor_text(name, 80)!r},")


def open_file(path: Path) -> IO[bytes]:
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
        with open_file(Path(path)) as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise ExportError(f"cannot read {vendor_text(path, 120)} ({exc.strerror}); check the file") from None
    return ExportFile(Path(path), size, digest.hexdigest())


class Bounded(io.RawIOBase):
    """A stream that refuses to yield more than :data:`MAX_BYTES`: what a gzip bomb or an
    endless file runs into; and, inflating ``compressed``, more than :data:`MAX_RATIO` times
    the bytes read of it so far (past :data:`_RATIO_FLOOR`).

    The cap on size bounds memory and disk, not time: 4 GiB of empty lines gzip to 4 MiB and
    took a quarter of an hour to read, one empty line at a time. The work an export makes is
    in proportion to what it inflates to, so bounding that by the file's own size bounds the
    time by the file's size. Honest exports compress at most about 50 times (numbers in order,
    pretty-printed JSON), a bomb a thousand: the ratio is measured as the file is read, so a
    bomb stops at its first MiB inflated, before a line of it is read."""

    def __init__(self, inner: IO[bytes] | io.BufferedIOBase, name: str, compressed: Sips | None) -> None:
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


class Sips:
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


@contextlib.contextmanager
def inflated(path: Path, shown: str) -> Iterator[io.BufferedReader[Bounded]]:
    """The file's bytes, inflated when it is gzip (told by its magic bytes, not by its name),
    read through :class:`Bounded`; ``shown`` names the file in its errors."""
    with open_file(path) as raw:
        head = raw.read(2)
        raw.seek(0)
        stream: IO[bytes] | io.BufferedIOBase = raw
        compressed = None
        if head == _GZIP_MAGIC:
            compressed = Sips(raw)
            stream = gzip.GzipFile(fileobj=compressed, mode="rb")
        yield io.BufferedReader(Bounded(stream, shown, compressed), _CHUNK)
