"""One sweep of a locked (account, channel), a method per step, in the order the package's
docstring gives (:mod:`sync.sweep`); each step that touches the database is one transaction
(:func:`_one_transaction`, or a ``with`` block where a step holds several)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar

from sync.guard import removal_hold
from sync.kaleyra import Cancelled, Entry, KaleyraClient
from sync.plan import ChannelPlan, digest_changes
from sync.proof import (
    codes_elsewhere,
    confirm_removals,
    listing_completeness,
    listing_hold,
    log_what_was_not_proven,
)
from sync.stopping import stop_reason
from sync.store import Comparison, Diff, LockedChannel, LockHeld, Staged, Store
from sync.sweep.candidates import InTransactions
from sync.sweep.halt import DeadlinePassed, Halt, PlanApplied, Stopped, finished_despite_stop, why_abandoned
from sync.sweep.progress import ChangeCallback, PageCallback, PageProgress, PageTally, StartCallback
from sync.sweep.result import SweepOptions, SweepResult, finished, lock_held, log
from sync.vocabulary import Outcome, RunStatus

__all__ = ["sweep_channel"]


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
    halt = Halt(stop or threading.Event(), options.timeout)
    started = time.monotonic()
    try:
        with store.lock_channel(client.sid, channel, timeout=options.timeout) as session:
            result = _Sweep(
                client, session, options, halt, on_page=on_page, on_change=on_change, on_start=on_start
            ).run()
    except LockHeld as held:
        result = lock_held(held, client.sid, channel, options)
    return finished(result, started)


class _Sweep:
    """One sweep of a locked (account, channel): one method per step of the module's order."""

    def __init__(
        self,
        client: KaleyraClient,
        session: LockedChannel,
        options: SweepOptions,
        halt: Halt,
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
        self.progress = PageTally()
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
            result = replace(
                result, message=finished_despite_stop(result.outcome, result.message, self.halt.stop)
            )
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
            message=f"{approval.source} was already applied by run {run_id}; nothing was swept or written",
            error_type=PlanApplied,  # the CLI's advice says how to review changes since
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
            # The held result's line says how to review it again (output.summary_line).
            return self._hold(run_id, diff, f"{refused}. Nothing was applied")
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
            candidates = InTransactions(self.session, comparison)
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
                log.warning("forced: applying what the guard would hold: %s", held, extra=self.context)
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
        reason = stop_reason(stop) if cancelled else why_abandoned(exc, self.halt)
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
