"""The database side of a sweep: a package of small modules, one per job. Knows nothing of HTTP.

- :mod:`~sync.store.session`: :class:`Store` and the :class:`LockedChannel` of one sweep: the
  channel's lock, the held connection, and the one transaction boundary, which only the
  caller opens and ends (:meth:`LockedChannel.transaction`); no method here commits.
- :mod:`~sync.store.ledger`: the run ledger, the one owner of which run was a channel's last
  sweep, last success and last complete listing, and of how imports order against sweeps;
  :mod:`~sync.store.channels` asks its rules of every channel at once.
- :mod:`~sync.store.staging`: the listing loaded into temporary tables (:class:`Staged`).
- :mod:`~sync.store.comparison`: the listing against the channel's entries
  (:class:`Comparison`, :class:`Diff`), narrowed by the removal checks.
- :mod:`~sync.store.apply`: the comparison written, as an ordered list of row-counted steps.
- :mod:`~sync.store.rebase`: an older snapshot placed before a channel's earliest run
  (:class:`Rebase`).
- :mod:`~sync.store.channel_types`: the ``channel_type`` codes each channel has carried.
- :mod:`~sync.store.read_model`: what ``status``, the metrics and the run summary read
  (:class:`ChannelStatus`).
- :mod:`~sync.store.dialect`: what PostgreSQL and SQLite do differently (and :func:`as_utc`,
  a time as either hands it back, in UTC); :mod:`~sync.store.schema`:
  the tables, as the migrations make them.

Every time the store stores (a run's start and end, a change's ``detected_at`` and
``not_before``) and every age it judges comes from the database's clock
(:meth:`~sync.store.dialect.Dialect.now`), never the host's: sweeps from hosts whose clocks
disagree still write one consistent history. The one exception is an import of a dated export
(``blocklist-sync import``, :mod:`sync.backfill`): its run and its changes carry the time the
export was taken, and its run row says so (trigger ``backfill``, the file's name, size and
SHA-256).

The diff is a handful of statements over temporary tables, so memory in Python stays flat
however long the blocklist. The SQL here is portable: it runs as written on PostgreSQL and
SQLite. What differs — the lock, the staging tables' schema and key type, the bulk load, the
comparison itself, the random sample and the room to sort — is one member each of the
connection's :class:`~sync.store.dialect.Dialect`.

This module is the API the rest of ``sync`` imports; everything else in the package is its own.
"""

from sync.store.apply import ApplyMismatch
from sync.store.channels import Coverage, coverage, imports_among, last_successes
from sync.store.comparison import Comparison, Diff
from sync.store.dialect import LockHolder, LockLost, as_utc
from sync.store.ledger import FirstRun, Source
from sync.store.read_model import ChannelStatus
from sync.store.rebase import Rebase, RebaseCounts
from sync.store.session import LockedChannel, LockHeld, Store, TransactionError
from sync.store.staging import Staged

__all__ = [
    "ApplyMismatch",
    "ChannelStatus",
    "Comparison",
    "Coverage",
    "Diff",
    "FirstRun",
    "LockHeld",
    "LockHolder",
    "LockLost",
    "LockedChannel",
    "Rebase",
    "RebaseCounts",
    "Source",
    "Staged",
    "Store",
    "TransactionError",
    "as_utc",
    "coverage",
    "imports_among",
    "last_successes",
]
