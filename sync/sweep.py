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
one transaction (:func:`_one_transaction`, or a ``with`` block where a step holds several), and
none is left open while Kaleyra is asked about removal candidates.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar

from sync.counters import COUNTS
from sync.guard import GuardLimits, removal_hold
from sync.kaleyra import Cancelled, Entry, KaleyraClient, KaleyraError, Page
from sync.numbers import describe_rejected
from sync.plan import ChannelPlan, digest_changes
from sync.proof import (
    ListingTally,
    codes_elsewhere,
    confirm_removals,
    listing_completeness,
    listing_hold,
    log_what_was_not_proven,
)
from sync.redaction import redact
from sync.review import Review
from sync.settings import Tuning
from sync.stopping import stop_name, stop_reason
from sync.store import Comparison, Diff, LockedChannel, LockHeld, LockHolder, Staged, Store
from sync.vendor_text import vendor_text
from sync.vocabulary import Outcome, RunStatus, Trigger

__all__ = [
    "ChangeCallback",
    "DeadlinePassed",
    "Outcome",
    "PageCallback",
    "PageProgress",
    "StartCallback",
    "Stopped",
    "SweepOptions",
    "SweepResult",
    "finished",
    "sweep_channel",
]

# Named for the module this code first lived in (sync/job.py): operators' log queries and
# alerts match on the logger name, so it stays.
log = logging.getLogger("sync.job")


class Stopped(Exception):
    """A stop was requested (SIGTERM, SIGINT), or the sweep's deadline passed, before the sweep
    could apply anything."""


class DeadlinePassed(Stopped):
    """The sweep ran longer than its timeout: a list that long, or a server that slow."""


_REJECTED_EXAMPLES = 3


class _Halt:
    """What stops a sweep early: the process's stop event, or the sweep's own deadline. The
    client polls :meth:`is_set` between reads, so either ends a sweep within a second."""

    def __init__(self, stop: threading.Event, seconds: float) -> None:
        self.stop = stop
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def is_set(self) -> bool:
        return self.stop.is_set() or self.deadline_passed()

    def deadline_passed(self) -> bool:
        return time.monotonic() > self._deadline

    def check(self, during: str) -> None:
        if self.stop.is_set():
            raise Stopped(f"stopped by a signal while {during}; nothing was applied")
        if time.monotonic() > self._deadline:
            raise DeadlinePassed(
                f"the sweep passed its deadline of {self._seconds:.0f}s while {during}; nothing was applied"
            )


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    trigger: Trigger = Trigger.MANUAL
    # What the operator approved: nothing (the guard holds what it holds), a dry run, a plain
    # --force, a plan or counts (bound to the pairs by Review.for_run). The sweep asks it.
    review: Review = field(default_factory=Review)
    guard: GuardLimits = field(default_factory=GuardLimits)
    # Scheduler replicas and shards: skip a channel whose last sweep started less than this
    # many seconds ago (by any process), so overlapping processes sweep it once.
    skip_if_swept_within: float | None = None
    timeout: float = Tuning.sweep_timeout  # the whole sweep, paging to apply, in seconds
    # Shards: a channel another process is sweeping right now is that process's, not an error.
    lock_held_is_skip: bool = False


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    account_sid: str
    channel: str
    outcome: Outcome
    run_id: int | None = None
    pages: int = 0
    diff: Diff | None = None
    message: str | None = None  # why it failed, was held or skipped; never a secret
    seconds: float = 0.0
    # The account itself is unusable (credentials, balance, host unreachable): skip its rest.
    account_wide: bool = False
    error_type: type[BaseException] | None = None  # what failed it, for the CLI's advice
    phases: dict[str, float] = field(default_factory=dict)  # fetch, diff, verify, apply seconds
    plan: ChannelPlan | None = None  # a dry run's that writes a plan (Review.writes_plan)

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code


@dataclass
class _Progress:
    pages: int = 0
    listing: ListingTally = field(default_factory=ListingTally)  # rows, and their channel_type codes
    rejected: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    repeated: int = 0  # rows dropped as a repeated page: the list shifted while it was paged
    respelled: int = 0  # rows the server spelled otherwise than canonically
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for logs and the benchmark

    def count(self, page: Page) -> None:
        """Count one page's rows, repeats, channel_type codes and rejected rows (a few as examples)."""
        self.pages += 1
        self.repeated += page.repeated
        self.respelled += page.respelled
        for entry in page.entries:
            self.listing.count(entry.channel_type)
        if page.rejected:
            COUNTS.add("rejected_rows", len(page.rejected))
            self.rejected += len(page.rejected)
            room = _REJECTED_EXAMPLES - len(self.rejected_examples)
            self.rejected_examples += [describe_rejected(r) for r in page.rejected[:room]]

    def waited(self, pages: Iterable[Page]) -> Iterator[Page]:
        """``pages``, the seconds spent waiting for each added up as ``fetch_wait``: the rest
        of the fetch is this thread's own work on the rows (counting, staging)."""
        waited, pages = 0.0, iter(pages)
        try:
            while True:
                started = time.perf_counter()
                page = next(pages, None)
                waited += time.perf_counter() - started
                if page is None:
                    return
                yield page
        finally:
            self.phases["fetch_wait"] = round(waited, 3)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[phase] = round(time.monotonic() - started, 3)


@dataclass(frozen=True)
class PageProgress:
    """How far a sweep's listing has come, handed to a :data:`PageCallback` when paging starts
    (no page yet), after each page, and once paging is over (``done``)."""

    account_sid: str
    channel: str
    run_id: int | None
    pages: int
    rows: int
    # Numbers the last succeeded sweep of the channel found: what this listing is measured
    # against (its share, the time left). None before the first sweep.
    expected_rows: int | None
    done: bool = False


PageCallback = Callable[[PageProgress], None]
ChangeCallback = Callable[[str, str, str, str], None]  # (account, channel, 'added'|'removed', mobile)
# (account, channel, run id): the run row is committed as ``running``; metrics publish it, so a
# sweep in progress is visible (and a stuck one can alert) while it runs.
StartCallback = Callable[[str, str, int], None]


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _one_transaction(step: Callable[Concatenate[_Sweep, _P], _R]) -> Callable[Concatenate[_Sweep, _P], _R]:
    """A step of the sweep that is one transaction of its session: what it wrote is committed
    when it returns, and rolled back if it raises."""

    @wraps(step)
    def in_a_transaction(sweep: _Sweep, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with sweep.session.transaction():
            return step(sweep, *args, **kwargs)

    return in_a_transaction


class _InTransactions:
    """The comparison as the removal checks ask it (:class:`sync.proof.Candidates`), each
    read and each verdict a transaction of its own, so that none is open while Kaleyra is
    asked about what was read."""

    def __init__(self, session: LockedChannel, comparison: Comparison) -> None:
        self._session, self._comparison = session, comparison

    def removal_candidates(self, batch: int) -> Iterator[list[str]]:
        pages = self._comparison.removal_candidates(batch)
        while True:
            with self._session.transaction():
                page = next(pages, None)
            if page is None:
                return
            yield page

    def listed_sample(self, size: int) -> list[str]:
        with self._session.transaction():
            return self._comparison.listed_sample(size)

    def newest_listed(self, size: int) -> list[str]:
        with self._session.transaction():
            return self._comparison.newest_listed(size)

    def keep(self, present: Iterable[str]) -> None:
        with self._session.transaction():
            self._comparison.keep(present)

    def unconfirm(self, unproven: Iterable[str]) -> None:
        with self._session.transaction():
            self._comparison.unconfirm(unproven)


def sweep_channel(
    client: KaleyraClient,
    store: Store,
    channel: str,
    options: SweepOptions,
    *,
    stop: threading.Event | None = None,
    on_page: PageCallback | None = None,
    on_change: ChangeCallback | None = None,
    on_start: StartCallback | None = None,
) -> SweepResult:
    """Sweep one channel of ``client``'s account into ``store``; never raises for a failed
    sweep (the result says what happened), only for a stop of the whole process."""
    halt = _Halt(stop or threading.Event(), options.timeout)
    started = time.monotonic()
    try:
        with store.lock_channel(client.sid, channel, timeout=options.timeout) as session:
            result = _Sweep(
                client, session, options, halt, on_page=on_page, on_change=on_change, on_start=on_start
            ).run()
    except LockHeld as held:
        result = _lock_held(held, client.sid, channel, options)
    return finished(result, started)


class _Sweep:
    """One sweep of a locked (account, channel): one method per step of the module's order."""

    def __init__(
        self,
        client: KaleyraClient,
        session: LockedChannel,
        options: SweepOptions,
        halt: _Halt,
        *,
        on_page: PageCallback | None,
        on_change: ChangeCallback | None,
        on_start: StartCallback | None = None,
    ) -> None:
        self.client = client
        self.session = session
        self.channel = session.channel
        self.options = options
        self.halt = halt
        self.on_page = on_page
        self.on_change = on_change
        self.on_start = on_start
        self.progress = _Progress()
        self.pair: dict[str, object] = {"account": client.sid, "channel": self.channel}  # for log lines
        self.context = dict(self.pair)  # ... and, once there is one, the run's id

    def run(self) -> SweepResult:
        """Step 2, then steps 3 to 6 (:meth:`_sweep`) under a run row that says how they ended."""
        self._close_abandoned_runs()
        skipped = self._applied_already() or self._swept_moments_ago()
        if skipped is not None:
            return skipped
        with self.session.transaction():  # committed before the first page: a crash leaves a trace
            run_id = self.session.start_run(self.options.trigger)
        self.context["run_id"] = run_id
        log.info("sweep started (%s)", self.options.trigger, extra=self.context)
        try:
            if self.on_start:
                self.on_start(self.client.sid, self.channel, run_id)
            result = self._sweep(run_id)
        except (Exception, KeyboardInterrupt, SystemExit) as exc:
            result = self._abandoned(run_id, exc)
            if not isinstance(exc, Exception):
                raise
            return result
        if self.halt.stop.is_set():
            # The stop came too late to stop anything: say what did happen.
            result = replace(result, message=_finished_despite_stop(result, self.halt.stop))
        return result

    @_one_transaction
    def _close_abandoned_runs(self) -> None:
        """Step 2: we hold the lock, so a run still ``running`` is a dead process's (SIGKILL,
        OOM, a lost node). It is closed before :meth:`_swept_moments_ago` judges when the
        channel was last swept, or a shard's retry would take that corpse for a sweep in
        progress and skip the pair."""
        abandoned = self.session.fail_abandoned_runs()
        if abandoned:
            log.warning("marked %d abandoned run(s) as failed", abandoned, extra=self.context)

    @_one_transaction
    def _applied_already(self) -> SweepResult | None:
        """A plan applies once: under ``--force --plan``, the result of a channel whose plan a
        sweep since its dry run applied exactly (the same numbers added and removed), or None
        to sweep it. Run again, the plan would find nothing left to change, which differs from
        what it approves, and hold a healthy channel (exit 3, a held row, the Held alert);
        instead nothing is swept and nothing written, and the line names the run that applied
        it. Changes made since need a review of their own."""
        approval = self.options.review.approval((self.client.sid, self.channel))
        if self.options.review.dry_run or approval is None or approval.plan_run_id is None:
            return None
        run_id = approval.applied_by(self.session.sweeps_applied_since(approval.plan_run_id))
        if run_id is None:
            return None
        return SweepResult(
            account_sid=self.client.sid,
            channel=self.channel,
            outcome=Outcome.SKIPPED,
            message=f"{approval.source} was already applied by run {run_id}; nothing was swept or "
            "written. To review changes since, make a new plan with --dry-run --plan-out",
        )

    @_one_transaction
    def _swept_moments_ago(self) -> SweepResult | None:
        """Step 2's skip (scheduler replicas, shards): the result of a channel swept moments
        ago, by this process or another, or None to sweep it."""
        if self.options.skip_if_swept_within is None:
            return None
        # Shards retry a failed or stopped pair (their Job's retry, a pod restarted after
        # SIGTERM): only a sweep that did not fail counts as done moments ago.
        age = self.session.seconds_since_last_start(count_failures=not self.options.lock_held_is_skip)
        if age is None or age >= self.options.skip_if_swept_within:
            return None
        return SweepResult(
            account_sid=self.client.sid,
            channel=self.channel,
            outcome=Outcome.SKIPPED,
            message=f"swept {age:.0f}s ago, by this or another process; skipping this tick",
        )

    def _sweep(self, run_id: int) -> SweepResult:
        """Steps 3 to 6. Raises, with nothing applied, for a failed page, a stop, the deadline
        or a crash."""
        staged = self._stage()
        comparison, diff = self._diff(staged)
        review = self.options.review
        held = self._held_unconfirmed(staged, diff)
        if held is None or review.confirms_held:
            diff = self._confirm(comparison)
            held = held or removal_hold(diff.current, diff.removed, self.options.guard)
        if review.dry_run:
            return self._review(comparison, run_id, diff, held)
        if held and not review.applies_held:
            return self._hold(run_id, diff, f"held by the safety guard: {held}. Nothing was applied")
        refused = self._unapproved(comparison, diff, held)
        if refused:
            return self._hold(run_id, diff, f"{refused}. Nothing was applied; review it again with --dry-run")
        return self._apply(comparison, run_id, diff)

    @_one_transaction
    def _stage(self) -> Staged:
        """Step 3: stream every page into the staging table."""
        # Read before the load, which holds the session until the last page.
        expected = self.session.last_swept_size() if self.on_page else None
        with self.progress.timed("fetch"):
            staged = self.session.stage(self._rows(expected))
        if self.progress.rejected:
            log.warning(
                "%d listed row(s) cannot be a phone number and were not stored, e.g. %s",
                self.progress.rejected,
                ", ".join(self.progress.rejected_examples),
                extra=self.pair,
            )
        return staged

    def _rows(self, expected: int | None) -> Iterator[Entry]:
        progress = self.progress
        self._report_progress(expected)
        try:
            for page in progress.waited(self.client.pages(self.channel, cancel=self.halt)):
                self.halt.check("paging")
                progress.count(page)
                log.debug(
                    "page %d at offset %d: %d new rows",
                    progress.pages,
                    page.offset,
                    len(page.entries),
                    extra={**self.pair, "pages": progress.pages, "offset": page.offset},
                )
                self._report_progress(expected)
                yield from page.entries
        finally:  # paged to the end, or stopped: either way no more pages come
            self._report_progress(expected, done=True)

    def _report_progress(self, expected: int | None, *, done: bool = False) -> None:
        if self.on_page:
            run_id = self.context.get("run_id")
            self.on_page(
                PageProgress(
                    account_sid=self.client.sid,
                    channel=self.channel,
                    run_id=run_id if isinstance(run_id, int) else None,
                    pages=self.progress.pages,
                    rows=self.progress.listing.rows,
                    expected_rows=expected,
                    done=done,
                )
            )

    @_one_transaction
    def _diff(self, staged: Staged) -> tuple[Comparison, Diff]:
        """Step 4: additions and removal candidates, in SQL."""
        with self.progress.timed("diff"):
            comparison = staged.diff()
            return comparison, replace(comparison.counts(), rejected=self.progress.rejected)

    def _held_unconfirmed(self, staged: Staged, diff: Diff) -> str | None:
        """Step 4's holds, before any request is spent confirming removals: an empty listing
        over a full table, or rows that say they are another channel's (:func:`listing_hold`)."""
        with self.session.transaction():  # read before any request: none waits on Kaleyra
            learned = self.session.channel_types()
        return listing_hold(
            self.channel,
            staged.rows,
            diff.current,
            self.progress.listing.codes,
            learned,
            elsewhere=lambda: codes_elsewhere(self.client, self.channel, self.halt),
        )

    def _confirm(self, comparison: Comparison) -> Diff:
        """Step 5: confirm the removal candidates; the diff as they left it."""
        progress = self.progress
        with progress.timed("verify"):
            forced = self.options.review.checks_removals_as_forced
            candidates = _InTransactions(self.session, comparison)
            confirm_removals(self.client, candidates, self.channel, self.halt, forced=forced)
            with self.session.transaction():
                diff = replace(comparison.counts(), rejected=progress.rejected)
            complete, moved = listing_completeness(
                repeated=progress.repeated,
                listed_twice=comparison.listed_twice,
                respelled=progress.respelled,
                rescued=diff.rescued,
                unconfirmed=diff.unconfirmed,
            )
            diff = replace(diff, listing_complete=complete)
        log_what_was_not_proven(
            rescued=diff.rescued,
            unconfirmed=diff.unconfirmed,
            repeated=progress.repeated,
            moved=moved,
            context=self.pair,
        )
        return diff

    @_one_transaction
    def _review(self, comparison: Comparison, run_id: int, diff: Diff, held: str | None) -> SweepResult:
        """``--dry-run``: report each change and what the guard would do, and, for a review
        that writes a plan, the plan that approves exactly these changes; apply nothing."""
        review = self.options.review
        plan = self._plan(comparison, diff, held, run_id) if review.writes_plan else None
        if self.on_change and plan is None:
            for change, mobile in comparison.changes():
                self.on_change(self.client.sid, self.channel, change, mobile)
        note = f"would be held: {held}" if held and review.says_held else None
        self.session.finish_run(run_id, RunStatus.DRY_RUN, pages=self.progress.pages, diff=diff, error=note)
        return replace(self._result(Outcome.DRY_RUN, run_id, diff, note), plan=plan)

    def _plan(self, comparison: Comparison, diff: Diff, held: str | None, run_id: int | None) -> ChannelPlan:
        """This sweep's changes as a plan: counts and digests, in one pass over the changes
        (each also reported to ``on_change``, so a dry run does not read them twice)."""

        def reported() -> Iterator[tuple[str, str]]:
            for change, mobile in comparison.changes():
                if self.on_change:
                    self.on_change(self.client.sid, self.channel, change, mobile)
                yield change, mobile

        digests = digest_changes(reported())
        return ChannelPlan(
            account_sid=self.client.sid,
            channel=self.channel,
            added=digests["added"][0],
            removed=digests["removed"][0],
            unconfirmed=diff.unconfirmed,
            held=held,
            added_sha256=digests["added"][1],
            removed_sha256=digests["removed"][1],
            run_id=run_id,
        )

    @_one_transaction
    def _unapproved(self, comparison: Comparison, diff: Diff, held: str | None) -> str | None:
        """Under ``--force``: how this sweep's changes differ from what the operator approved
        (``--expect-removed``, ``--plan``), or None to apply them. A plain ``--force`` approves
        whatever it finds (the CLI warned so); say in the log what it let through."""
        review = self.options.review
        if not review.applies_held:
            return None
        if review.approves_blind:
            if held:
                log.warning("--force applies what the guard would hold: %s", held, extra=self.context)
            return None
        approval = review.approval((self.client.sid, self.channel))
        if approval is None:
            return "nothing was approved for this channel"
        if approval.needs_digests:
            found = self._plan(comparison, diff, held, None)
        else:
            found = ChannelPlan(
                account_sid=self.client.sid,
                channel=self.channel,
                added=diff.added,
                removed=diff.removed,
                added_sha256="",
                removed_sha256="",
            )
        return approval.differences(found)

    @_one_transaction
    def _hold(self, run_id: int, diff: Diff, message: str) -> SweepResult:
        """Step 6's guard, or a ``--force`` whose sweep is not what was approved: held,
        nothing applied."""
        self.session.finish_run(run_id, RunStatus.HELD, pages=self.progress.pages, diff=diff, error=message)
        return self._result(Outcome.HELD, run_id, diff, message)

    def _apply(self, comparison: Comparison, run_id: int, diff: Diff) -> SweepResult:
        """Step 6: apply everything, and the run row, in one transaction; then, after a large
        change, fresh statistics in another, whose failure cannot fail the committed run."""
        self.halt.check("about to apply")
        with self.progress.timed("apply"):
            learned = self.progress.listing.learned()
            with self.session.transaction():
                comparison.apply(run_id, pages=self.progress.pages, diff=diff, channel_types=learned)
            with self.session.upkeep("ANALYZE blocklist_periods failed; autovacuum will do it"):
                comparison.refresh_statistics(diff)
        return self._result(Outcome.SUCCEEDED, run_id, diff)

    def _result(self, outcome: Outcome, run_id: int, diff: Diff, message: str | None = None) -> SweepResult:
        return SweepResult(
            account_sid=self.client.sid,
            channel=self.channel,
            outcome=outcome,
            run_id=run_id,
            pages=self.progress.pages,
            diff=diff,
            message=message,
            phases={**self.progress.phases, **self.session.timings.fields()},
        )

    def _abandoned(self, run_id: int, exc: BaseException) -> SweepResult:
        """A sweep that raised applied nothing: its run row says ``cancelled`` when the stop an
        operator asked for ended it (not a failure of Kaleyra or the database), else ``failed``."""
        stop = self.halt.stop
        cancelled = stop.is_set() and isinstance(exc, Stopped | Cancelled | KeyboardInterrupt | SystemExit)
        reason = stop_reason(stop) if cancelled else _reason(exc, self.halt)
        outcome = Outcome.CANCELLED if cancelled else Outcome.FAILED
        try:  # the step that raised rolled its own transaction back
            with self.session.transaction():
                self.session.finish_run(run_id, outcome.run_status, pages=self.progress.pages, error=reason)
        except Exception:  # the database itself may be what failed
            log.exception(
                "could not mark run %s %s; the next run will mark it failed",
                run_id,
                outcome.label,
                extra=self.context,
            )
        # The client only learns that it must stop; the halt knows it was the deadline.
        deadline = not cancelled and isinstance(exc, Cancelled) and self.halt.deadline_passed()
        return SweepResult(
            account_sid=self.client.sid,
            channel=self.channel,
            outcome=outcome,
            run_id=run_id,
            pages=self.progress.pages,
            message=reason,
            error_type=DeadlinePassed if deadline else type(exc),
            account_wide=getattr(exc, "account_wide", False),
        )


def _reason(exc: BaseException, halt: _Halt) -> str:
    """A readable, secret-free reason for the run row (which BI roles read) and the log."""
    if isinstance(exc, Cancelled):
        try:
            halt.check("sweeping")
        except Stopped as stopped:
            return str(stopped)
        return "stopped while sweeping; nothing was applied"
    if isinstance(exc, KaleyraError):
        return redact(f"{exc}; nothing was applied")
    if isinstance(exc, Stopped):
        return redact(str(exc))
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "interrupted before finishing; nothing was applied"
    # An exception's text can quote what it failed on (a row, a driver's message): vendor
    # text, so redacted before it is cut.
    first_line = vendor_text(str(exc).splitlines()[0], 300) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}; nothing was applied"


def _lock_held(held: LockHeld, account_sid: str, channel: str, options: SweepOptions) -> SweepResult:
    """The result of a sweep that found its channel locked, naming the holder.

    A lock held longer than a sweep may run is no sweep in progress: its process hangs, or its
    host is gone and the server has not noticed. Calling that ``locked`` (exit 75, a success to
    systemd) or ``skipped`` would hide it for ever, so it fails, with what to do.
    """
    holder = held.holder
    outcome = Outcome.SKIPPED if options.lock_held_is_skip else Outcome.LOCKED
    if holder is None:  # SQLite's file lock, or a holder that let go a moment ago
        message = "another process holds this channel's lock (the database cannot say which)"
    elif holder.held_for is not None and holder.held_for > options.timeout:
        outcome = Outcome.FAILED
        message = (
            f"this channel's lock has been held for {_duration(holder.held_for)}, longer than a "
            f"sweep may run ({_duration(options.timeout)}), by {_holder_text(holder)}"
        )
    elif (holder.application_name or "").startswith("blocklist-sync"):
        message = f"another blocklist-sync process is sweeping this channel ({_holder_text(holder)})"
    else:
        message = f"another session holds this channel's lock ({_holder_text(holder)})"
    message += "; nothing was written"
    if outcome is Outcome.FAILED and holder is not None:
        message += (
            ". If that session is stuck or its host is gone, end it: "
            f"SELECT pg_terminate_backend({holder.pid})"
        )
    return SweepResult(account_sid=account_sid, channel=channel, outcome=outcome, message=redact(message))


def _holder_text(holder: LockHolder) -> str:
    """``pid 4242, role sync, application 'blocklist-sync/0.3.0', from 10.0.0.7, connected
    2025-06-01 10:00:00Z, 3h00m ago``: escaped and bounded, as another session names itself."""
    parts = [f"pid {holder.pid}"]
    if holder.role:
        parts.append(f"role {ascii(holder.role)[1:-1][:63]}")
    if holder.application_name:
        parts.append(f"application {holder.application_name[:64]!a}")
    if holder.client:
        parts.append(f"from {holder.client}")
    if holder.since is not None and holder.held_for is not None:
        since = holder.since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        parts.append(f"connected {since}, {_duration(holder.held_for)} ago")
    else:
        parts.append("connected at a time this role may not see (grant it pg_read_all_stats)")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    """``2h00m``, ``3h12m``, ``1m30s``, ``45s``, ``0.5s``: precise enough to set a lock's age
    beside a timeout."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    hours, minutes = divmod(whole // 60, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{whole % 60:02d}s"


def _finished_despite_stop(result: SweepResult, stop: threading.Event) -> str:
    """What a stop that arrived after the last check (while applying, committing or just after)
    leaves behind: the sweep finished, and its run row says how."""
    name = stop_name(stop)
    if result.outcome is Outcome.SUCCEEDED:
        note = f"{name} arrived while the changes were being applied; they were committed"
    else:
        note = f"{name} arrived as the sweep finished; it finished"
    return f"{result.message}; {note}" if result.message else note


def finished(result: SweepResult, started: float) -> SweepResult:
    """``result`` with the seconds since ``started``, logged as every sweep's last line is
    (also for a channel a run did not try)."""
    result = replace(result, seconds=time.monotonic() - started)
    context: dict[str, object] = {"account": result.account_sid, "channel": result.channel}
    if result.run_id is not None:
        context["run_id"] = result.run_id
    _log_result(result, context)
    return result


def _log_result(result: SweepResult, context: dict[str, object]) -> None:
    fields = {
        **context,
        "outcome": result.outcome.label,
        "pages": result.pages,
        "seconds": round(result.seconds, 3),
    }
    if result.diff:
        fields.update(entries=result.diff.seen, added=result.diff.added, removed=result.diff.removed)
    phases = {phase: s for phase, s in result.phases.items() if not phase.startswith("db_")}
    fields.update({f"{phase}_seconds": seconds for phase, seconds in phases.items()})
    # Each of the store's statements (sync/store/timings.py), one flat field: name=seconds ...
    statements = [f"{p.removeprefix('db_')}={s}" for p, s in result.phases.items() if p not in phases]
    if statements:
        fields["statement_seconds"] = " ".join(statements)
    quiet = (Outcome.SUCCEEDED, Outcome.DRY_RUN, Outcome.SKIPPED, Outcome.CANCELLED)
    level = logging.INFO if result.outcome in quiet else logging.WARNING
    if result.outcome is Outcome.FAILED:
        level = logging.ERROR
    log.log(
        level,
        "sweep %s%s",
        result.outcome.label,
        f": {result.message}" if result.message else "",
        extra=fields,
    )
