"""One sweep of one (account, channel): the only place the Kaleyra client meets the store.

The order of a sweep, and why each step is where it is:

1. Lock the (account, channel), or report ``locked`` and write nothing: two runs never race.
   The report names the session holding the lock; one holding it longer than a sweep may run
   is stuck or dead, and that is a failure, not someone else's sweep.
2. Mark runs a dead process left ``running`` as failed (we hold the lock: their process is
   gone), and only then decide whether the channel was swept moments ago; then commit our
   own ``running`` row, so a crash still leaves a trace.
3. Stream every page into a staging table, numbers in canonical form; rows that cannot be a
   phone number are counted and logged, never staged. A failed page (after bounded retries), a
   protocol error, SIGTERM, the sweep's deadline or a crash abandons the sweep with nothing
   applied.
4. Diff in SQL. An empty listing over a full table, or rows that say they belong to another
   channel (:func:`sync.proof.listing_hold`), are held before any request is spent confirming them.
5. Confirm every removal candidate with the ``mobile`` filter (:func:`sync.proof.confirm_removals`):
   offset paging over a list that changes underneath can make a present number look absent.
   A removal is recorded only where an answer was shown complete; the rest are kept and
   counted as unconfirmed, never a reason to fail the channel.
6. The safety guard on the share removed (:mod:`sync.guard`); then apply additions, removals and
   the run row in one transaction.

When in doubt, apply nothing and say why: every path that does not reach step 6 leaves
``blocklist_entries`` and ``blocklist_events`` exactly as they were. What a vendor answer cannot
prove is kept as it was, not guessed; what it can prove is :mod:`sync.proof`'s to judge, and
this module is the order in which those checks are asked.

The sweep owns the transactions, the store commits nothing on its own
(:meth:`~sync.store.LockedChannel.transaction`): each step below that touches the database is
one transaction (``@_one_transaction`` in :mod:`~sync.sweep.steps`, or a ``with`` block where a
step holds several), and none is left open while Kaleyra is asked about removal candidates.

The package, a module per job:

- :mod:`~sync.sweep.steps`: :func:`sweep_channel` and the steps above, a method each, in order.
- :mod:`~sync.sweep.result`: what a sweep is asked (:class:`SweepOptions`) and what it reports
  (:class:`SweepResult`), a locked channel's result among them, and every sweep's last log line.
- :mod:`~sync.sweep.progress`: what a sweep counts as its pages stream past, and the callbacks
  that hear how far it has come.
- :mod:`~sync.sweep.halt`: what stops a sweep before it applies (a signal, its deadline), and
  how a sweep that stopped or raised says why.
- :mod:`~sync.sweep.candidates`: the comparison as the removal checks ask it, one transaction
  per read or verdict.

This module is the API the rest of ``sync`` imports; everything else in the package is its own.
"""

from sync.sweep.halt import DeadlinePassed, PlanApplied, RunDeadlinePassed, Stopped
from sync.sweep.progress import ChangeCallback, PageCallback, PageProgress, StartCallback
from sync.sweep.result import SweepOptions, SweepResult, finished
from sync.sweep.steps import sweep_channel
from sync.vocabulary import Outcome

__all__ = [
    "ChangeCallback",
    "DeadlinePassed",
    "Outcome",
    "PageCallback",
    "PageProgress",
    "PlanApplied",
    "RunDeadlinePassed",
    "StartCallback",
    "Stopped",
    "SweepOptions",
    "SweepResult",
    "finished",
    "sweep_channel",
]
