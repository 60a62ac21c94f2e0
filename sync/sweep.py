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
   channel (:mod:`sync.guard`), are held before any request is spent confirming them.
5. Confirm every removal candidate with the ``mobile`` filter (:func:`_confirm_removals`):
   offset paging over a list that changes underneath can make a present number look absent.
   A removal is recorded only where an answer was shown complete; the rest are kept and
   counted as unconfirmed, never a reason to fail the channel.
6. The safety guard on the share removed; then apply additions, removals, their events and
   the run row in one transaction.

When in doubt, apply nothing and say why: every path that does not reach step 6 leaves
``blocklist_entries`` and ``blocklist_events`` exactly as they were. What a vendor answer cannot
prove is kept as it was, not guessed.

The sweep owns the transactions, the store commits nothing on its own
(:meth:`~sync.store.LockedChannel.transaction`): each step below that touches the database is
one transaction (:func:`_one_transaction`, or a ``with`` block where a step holds several), and
none is left open while Kaleyra is asked about removal candidates.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar

from sync.counters import COUNTS
from sync.guard import GuardLimits, channel_type_hold, empty_listing_hold, is_code, removal_hold
from sync.kaleyra import MAX_LIMIT, Cancelled, Entry, KaleyraClient, KaleyraError, Page, ProtocolError
from sync.numbers import describe_rejected
from sync.plan import Approval, ChannelPlan, digest_changes
from sync.redaction import redact
from sync.settings import Tuning
from sync.stopping import stop_name, stop_reason
from sync.store import Comparison, Diff, LockedChannel, LockHeld, LockHolder, Staged, Store
from sync.vendor_text import vendor_text
from sync.vocabulary import Channel, Outcome, RunStatus, Trigger

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


# Each removal check asks about this many numbers the listing just showed (controls), beside
# the removal candidates (see _Controls: where each is placed, and why).
CONTROLS_PER_CHECK = 5
_CONTROL_SAMPLE = MAX_LIMIT  # one full request of controls measures what the filter honours
_NEWEST_CONTROLS = 10  # the newest listed numbers, asked in turn: a stale cache lacks them
# A control and a candidate: the fewest rows a filter must be known to hold for its answers to
# prove an absence (asked twice, the control first and then last).
_MIN_HONOURED = 2
_REJECTED_EXAMPLES = 3
# A listing carries one channel_type code, or a few; past this many distinct ones the rest are
# counted under one name that no channel carries, so a hostile listing cannot grow the count.
_MAX_CODES = 20
_OTHER_CODES = "(other codes)"


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
    dry_run: bool = False
    force: bool = False
    guard: GuardLimits = field(default_factory=GuardLimits)
    # Scheduler replicas and shards: skip a channel whose last sweep started less than this
    # many seconds ago (by any process), so overlapping processes sweep it once.
    skip_if_swept_within: float | None = None
    timeout: float = Tuning.sweep_timeout  # the whole sweep, paging to apply, in seconds
    # Shards: a channel another process is sweeping right now is that process's, not an error.
    lock_held_is_skip: bool = False
    # A dry run that will be saved as a plan (``--plan-out``): each result carries its
    # ChannelPlan, and removals are checked as ``--force`` would check them, so the plan shows
    # what ``--force --plan`` is to apply.
    make_plan: bool = False
    # What ``--force`` was approved to apply, per (account, channel): a forced sweep whose
    # changes differ applies nothing and is held. None: a plain ``--force``, approving blind.
    approvals: Mapping[tuple[str, str], Approval] | None = None


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
    plan: ChannelPlan | None = None  # a dry run's, with SweepOptions.make_plan

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code


@dataclass
class _Progress:
    pages: int = 0
    rows: int = 0
    rejected: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    repeated: int = 0  # rows dropped as a repeated page: the list shifted while it was paged
    respelled: int = 0  # rows the server spelled otherwise than canonically
    codes: Counter[str] = field(default_factory=Counter)  # listed rows by channel_type code
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for logs and the benchmark

    def count(self, page: Page) -> None:
        """Count one page's rows, repeats, channel_type codes and rejected rows (a few as examples)."""
        self.pages += 1
        self.rows += len(page.entries)
        self.repeated += page.repeated
        self.respelled += page.respelled
        for entry in page.entries:
            code = entry.channel_type
            if is_code(code):
                self.codes[code if code in self.codes or len(self.codes) < _MAX_CODES else _OTHER_CODES] += 1
        if page.rejected:
            COUNTS.add("rejected_rows", len(page.rejected))
            self.rejected += len(page.rejected)
            room = _REJECTED_EXAMPLES - len(self.rejected_examples)
            self.rejected_examples += [describe_rejected(r) for r in page.rejected[:room]]

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
        approval = (self.options.approvals or {}).get((self.client.sid, self.channel))
        if not self.options.force or self.options.dry_run or approval is None or approval.plan_run_id is None:
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
        held = self._held_unconfirmed(staged, diff)
        if held is None or self.options.force or self.options.dry_run:
            diff = self._confirm(comparison)
            held = held or removal_hold(diff.current, diff.removed, self.options.guard)
        if self.options.dry_run:
            return self._review(comparison, run_id, diff, held)
        if held and not self.options.force:
            return self._hold(run_id, diff, f"held by the safety guard: {held}. Nothing was applied")
        refused = self._unapproved(comparison, diff, held)
        if refused:
            return self._hold(run_id, diff, f"{refused}. Nothing was applied; review it again with --dry-run")
        return self._apply(comparison, run_id, diff)

    @_one_transaction
    def _stage(self) -> Staged:
        """Step 3: stream every page into the staging table, in one transaction (a failed page
        leaves nothing staged)."""
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
            for page in self.client.pages(self.channel, cancel=self.halt):
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
                    rows=self.progress.rows,
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
        over a full table, or rows that say they are another channel's."""
        return empty_listing_hold(staged.rows, diff.current) or _channel_type_hold(
            self.client, self.session, self.channel, self.progress.codes, self.halt
        )

    def _confirm(self, comparison: Comparison) -> Diff:
        """Step 5: confirm the removal candidates; the diff as they left it."""
        progress = self.progress
        with progress.timed("verify"):
            _confirm_removals(
                self.client, self.session, comparison, self.channel, self.halt, forced=self.options.force
            )
            with self.session.transaction():
                diff = replace(comparison.counts(), rejected=progress.rejected)
            # A number listed twice, beyond the spellings the server varies, moved while the
            # listing was paged: another may have slid under the offset unseen.
            moved = max(comparison.listed_twice - progress.respelled, 0)
            complete = not (progress.repeated or moved or diff.rescued or diff.unconfirmed)
            diff = replace(diff, listing_complete=complete)
        _log_proof(diff, progress.repeated, moved, self.pair)
        return diff

    @_one_transaction
    def _review(self, comparison: Comparison, run_id: int, diff: Diff, held: str | None) -> SweepResult:
        """``--dry-run``: report each change and what the guard would do, and with
        ``make_plan`` the plan that approves exactly these changes; apply nothing."""
        plan = self._plan(comparison, diff, held, run_id) if self.options.make_plan else None
        if self.on_change and plan is None:
            for change, mobile in comparison.changes():
                self.on_change(self.client.sid, self.channel, change, mobile)
        # A plan is made to be forced: it says what the guard would hold all the same.
        told = not self.options.force or self.options.make_plan
        note = f"would be held: {held}" if held and told else None
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
        if not self.options.force:
            return None
        if self.options.approvals is None:
            if held:
                log.warning("--force applies what the guard would hold: %s", held, extra=self.context)
            return None
        approval = self.options.approvals.get((self.client.sid, self.channel))
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
            learned = [code for code in self.progress.codes if code != _OTHER_CODES]  # a count, not a code
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
            phases=self.progress.phases,
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


def _channel_type_hold(
    client: KaleyraClient, session: LockedChannel, channel: str, codes: Counter[str], halt: _Halt
) -> str | None:
    """Why this listing's ``channel_type`` codes are held (:func:`sync.guard.channel_type_hold`).

    Codes the channel has carried before need no more evidence. A code it has not (its first
    sweep, or a change) is compared with what the account's other channels carry: the codes
    they were learned with, and those on the first page each lists now, so that a server
    ignoring ``channel`` is caught even before any other channel was swept. That costs one
    request per other channel, only when a code is new.
    """
    with session.transaction():  # read before any request: none waits on Kaleyra
        learned = session.channel_types()
    if set(codes) <= learned.get(channel, set()):
        return None
    listed_now = {
        str(other): _codes_on_first_page(client, other, halt) for other in Channel if other != channel
    }
    return channel_type_hold(channel, codes, learned, listed_now)


def _codes_on_first_page(client: KaleyraClient, channel: str, halt: _Halt) -> set[str]:
    """The codes on the first page of ``channel``'s listing; none when it cannot be read (a
    channel this account may not use, a failing page): then there is nothing to compare."""
    try:
        # Only the first page: the generator is dropped (and closed) at once, asking no more.
        page = next(client.pages(channel, cancel=halt), None)
    except Cancelled:
        raise
    except KaleyraError as exc:
        log.info("could not read the %s listing to compare channel_type codes: %s", channel, exc.reason)
        return set()
    return {e.channel_type for e in page.entries if is_code(e.channel_type)} if page else set()


def _log_proof(diff: Diff, repeated: int, moved: int, context: dict[str, object]) -> None:
    """Say what the listing could not prove: an operator reads why a count looks off."""
    if moved:
        log.warning(
            "the listing showed %d number(s) twice: its order changed while it was paged, so "
            "it may have skipped others; it proves no number absent, and the next additions' "
            "windows start at the last complete listing",
            moved,
            extra=context,
        )
    if diff.rescued or repeated:
        log.warning(
            "the listing skipped rows while it was paged (%d held number(s) it did not show are "
            "still blocklisted; %d repeated row(s) dropped); it proves no number absent, so the "
            "next additions' windows start at the last complete listing",
            diff.rescued,
            repeated,
            extra=context,
        )
    if diff.unconfirmed:
        log.warning(
            "%d held number(s) the listing did not show could not be proven removed (the "
            "mobile filter's answers were cut short, missed a control or could not be read); "
            "they are kept as blocklisted and checked again next sweep",
            diff.unconfirmed,
            extra=context,
        )


def _confirm_removals(
    client: KaleyraClient,
    session: LockedChannel,
    comparison: Comparison,
    channel: str,
    halt: _Halt,
    *,
    forced: bool = False,
) -> None:
    """Ask Kaleyra about every removal candidate directly; record a removal only where the
    answer is shown complete.

    An answer proves only what it shows. A filter may answer ``[]`` to everything, or cut its
    answers at a few rows whatever was asked, and either would make present numbers look
    absent. So:

    - First, one request of up to 100 numbers this listing just showed (controls) measures how
      many rows the filter is known to honour in one answer. Every later request asks about no
      more numbers than that, so a filter that caps its answers cannot cut one short.
    - Every request carries controls where a cut or a stale cache would show (:class:`_Controls`).
      An answer that omits a control proves nothing about any candidate, not even that those it
      shows are listed now (a control can also be unblocked honestly meanwhile: the same, it
      proves nothing).
    - A filter known to honour fewer than two rows, an answer that cannot be read (numbers not
      asked about, rows that are no number), or a listing with no number to use as a control,
      proves nothing either.

    Candidates a complete answer showed are kept (rescued: the listing skipped them); those it
    left out are removed; the rest are kept and counted as unconfirmed, to be checked
    again by the next sweep. None of this fails the channel.

    One exception, for an operator who reviewed the sweep (``--dry-run``) and applies it with
    ``--force``: where the listing offers no control, or the filter is known to hold fewer than
    two rows (an emptied or shrunken channel), that review is the only proof there can be, and
    the filter's plain answers decide (:func:`_confirm_as_forced`).

    Each read of the database and each batch's verdict is a transaction of its own: none is
    open while Kaleyra is asked.
    """
    candidates = _read_each(session, comparison.removal_candidates(MAX_LIMIT))
    first = next(candidates, None)
    if first is None:
        return  # nothing to confirm: not one request spent
    with session.transaction():
        newest = comparison.newest_listed(_NEWEST_CONTROLS)
        sample = list(dict.fromkeys([*newest, *comparison.listed_sample(_CONTROL_SAMPLE)]))[:_CONTROL_SAMPLE]
    honoured = _honoured_rows(client, channel, sample, halt)
    if honoured < _MIN_HONOURED and forced:
        batches = itertools.chain([first], candidates)
        found = _confirm_as_forced(client, session, comparison, channel, halt, batches)
        if not found:
            return
        # An answer named numbers: they are blocklisted, so they can serve as controls, and
        # the rest is proven as always (an answer may have been cut short).
        sample = newest = found[:MAX_LIMIT]
        candidates = _read_each(session, comparison.removal_candidates(MAX_LIMIT))
        first = next(candidates, None)
        if first is None:
            return
        honoured = _honoured_rows(client, channel, sample, halt)
    # Two controls at least (first and last), but a filter known to hold only two rows takes
    # one control and one candidate, asked twice, in both orders (see _Controls.around).
    per_check = min(CONTROLS_PER_CHECK, max(2, honoured // 2)) if honoured > 2 else 1
    room = honoured - per_check
    controls = _Controls(sample, newest)
    for batch in _rebatch(first, candidates, max(room, 1)):
        halt.check("confirming removals")
        if honoured < _MIN_HONOURED:
            with session.transaction():
                comparison.unconfirm(batch)
            continue
        questions = controls.around(batch, per_check)
        complete = bool(questions)
        found_now: set[str] = set()
        for question, asked in questions:
            answer = _ask(client, channel, question, halt)
            # Unreadable, or missing a control (cut short, or stale): it proves nothing, not
            # even that the numbers it shows are listed now.
            if answer is None or not set(asked) <= answer:
                complete = False
                break
            found_now |= answer
        with session.transaction():
            if not complete:
                comparison.unconfirm(batch)  # all kept, unconfirmed
                continue
            # Complete answers: the candidates they show were skipped by the listing (kept);
            # the others stay removal candidates.
            comparison.keep(found_now.intersection(batch))


def _confirm_as_forced(
    client: KaleyraClient,
    session: LockedChannel,
    comparison: Comparison,
    channel: str,
    halt: _Halt,
    batches: Iterator[list[str]],
) -> list[str]:
    """Under ``--force``, with no control to prove an answer: ask about the candidates plainly.
    An answer of no rows cannot have been cut short (a cap keeps at least one row), so its
    numbers stay removal candidates, on the operator's word. The numbers an answer names are
    kept, and returned: being blocklisted, they can prove the remaining answers."""
    found: list[str] = []
    for batch in batches:
        halt.check("confirming removals")
        answer = _ask(client, channel, batch, halt)
        with session.transaction():
            if answer is None:
                comparison.unconfirm(batch)
                continue
            present = sorted(answer.intersection(batch))
            comparison.keep(present)
        found += present
    return found


def _read_each(session: LockedChannel, pages: Iterator[list[str]]) -> Iterator[list[str]]:
    """``pages``, each read in a transaction of its own, so that none is open while the
    caller asks Kaleyra about what it read."""
    while True:
        with session.transaction():
            page = next(pages, None)
        if page is None:
            return
        yield page


def _ask(client: KaleyraClient, channel: str, question: list[str], halt: _Halt) -> set[str] | None:
    """The numbers of ``question`` the filter says are blocklisted; None when its answer
    cannot be read (numbers not asked about, rows that are no number): that proves nothing."""
    try:
        return client.check(channel, question, cancel=halt)
    except ProtocolError as exc:
        log.warning("a removal check could not be read: %s", exc.reason, extra={"channel": channel})
        return None


def _honoured_rows(client: KaleyraClient, channel: str, sample: list[str], halt: _Halt) -> int:
    """How many rows one answer of the ``mobile`` filter is known to hold: how many of up to
    100 numbers this listing showed it confirmed at once. 0 when it cannot be told."""
    if not sample:
        return 0
    halt.check("confirming removals")
    found = _ask(client, channel, sample[:MAX_LIMIT], halt)
    return 0 if found is None else len(found)


class _Controls:
    """Numbers this listing showed, asked beside the removal candidates: a working filter must
    confirm every one, so an answer missing one proves nothing about the candidates it left out.

    Each answer is judged by its own controls, placed where a cut would fall: the newest listed
    numbers in turn (a filter answering from a cache older than the last sweeps does not know
    them); a listed number just below the candidates and one just above them (a cap that keeps
    the first or last rows in the numbers' order cuts one); and a control first and another
    last in the question (a cap that keeps the first or last rows in the order asked cuts
    one). So a cap that shrinks after the first answer measured it cuts a control, and that
    answer proves nothing; the others are drawn in turn from a random sample of the listing."""

    def __init__(self, sample: list[str], newest: list[str]) -> None:
        self._sorted = sorted(set(sample))
        self._newest = newest or sample
        self._sample = sample
        self._next_newest = self._next_other = 0

    def around(self, batch: list[str], count: int) -> list[tuple[list[str], list[str]]]:
        """The questions to ask about ``batch`` with ``count`` controls, each in the order to
        ask it, with the controls it carries. One question, a control first and another last;
        with one control (a filter known to hold two rows), two questions, the control first
        in one and last in the other, both to be answered complete. None without a control."""
        if not self._sorted:
            return []
        low = bisect.bisect_left(self._sorted, min(batch))
        high = bisect.bisect_right(self._sorted, max(batch))
        wanted = [
            self._newest[self._next_newest % len(self._newest)],
            self._sorted[high] if high < len(self._sorted) else self._sorted[-1],
            self._sorted[low - 1] if low > 0 else self._sorted[0],
        ]
        self._next_newest += 1
        chosen = list(dict.fromkeys(wanted))[:count]
        for _ in range(len(self._sample)):  # at most one round of the sample
            if len(chosen) >= count:
                break
            other = self._sample[self._next_other % len(self._sample)]
            self._next_other += 1
            if other not in chosen:
                chosen.append(other)
        if len(chosen) == 1:
            return [([chosen[0], *batch], chosen), ([*batch, chosen[0]], chosen)]
        middle = batch + chosen[2:]
        random.shuffle(middle)
        return [([chosen[0], *middle, chosen[1]], chosen)]


def _rebatch(first: list[str], rest: Iterator[list[str]], size: int) -> Iterator[list[str]]:
    """The candidates in batches of ``size``, however they were read."""
    pending: list[str] = []
    for batch in itertools.chain([first], rest):
        pending += batch
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


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
    fields.update({f"{phase}_seconds": seconds for phase, seconds in result.phases.items()})
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
