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
:data:`~sync.exports.listing._MAX_DEPTH` deep. :mod:`~sync.exports.files` opens a file, bounds
its bytes and says where it came from; :mod:`~sync.exports.listing` reads them as a listing.
"""

from sync.exports.files import (
    MAX_BYTES,
    MAX_RATIO,
    ExportError,
    ExportFile,
    NoTimeInName,
    source_of,
    time_in_name,
)
from sync.exports.listing import MAX_LINE, ListingOfOtherChannels, Reading

__all__ = [
    "MAX_BYTES",
    "MAX_LINE",
    "MAX_RATIO",
    "ExportError",
    "ExportFile",
    "ListingOfOtherChannels",
    "NoTimeInName",
    "Reading",
    "source_of",
    "time_in_name",
]
