"""One sweep of one (account, channel): the only place the Kaleyra client meets the store.

The order of a sweep, and why each step is where it is:

1. Lock the (account, channel), or report ``locked`` and write nothing: two runs never race.
2. Mark runs a dead process left ``running`` as failed, then commit our own ``running`` row,
   so a crash still leaves a trace.
3. Stream every page into a staging table, numbers in canonical form; rows that cannot be a
   phone number are counted and logged, never staged. A failed page (after bounded retries), a
   protocol error, SIGTERM, the sweep's deadline or a crash abandons the sweep with nothing
   applied.
4. Diff in SQL. Confirm every removal candidate with the ``mobile`` filter: offset paging over
   a list that changes underneath can make a present number look absent. Each check also asks
   about a few numbers the listing just showed; if the filter denies any of them, it is not
   working (a filter that answers nothing would "confirm" every removal) and nothing is applied.
5. The safety guard: an empty listing over a non-empty table, or removing more than the allowed
   share, is held for a human (``--dry-run`` to review, ``--force`` to apply).
6. Apply additions, removals, their events and the run row in one transaction.

When in doubt, apply nothing and say why: every path that does not reach step 6 leaves
``blocklist_entries`` and ``blocklist_events`` exactly as they were.
"""

from __future__ import annotations

import functools
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from sync.guard import GuardLimits, empty_listing_hold, removal_hold
from sync.kaleyra import Entry, KaleyraClient, RetryPolicy
from sync.kaleyra_errors import Cancelled, KaleyraError
from sync.numbers import describe_rejected
from sync.redaction import redact
from sync.settings import Account, Shard, Tuning
from sync.store import Diff, LockedChannel, LockHeld, Store
from sync.vendor_text import vendor_text
from sync.vocabulary import SEVERITY, Outcome, RunStatus, Trigger

__all__ = [
    "DeadlinePassed",
    "Outcome",
    "StopRequest",
    "Stopped",
    "SweepOptions",
    "SweepResult",
    "client_for",
    "pairs_to_sweep",
    "stop_on_signals",
    "sweep_accounts",
    "sweep_channel",
    "worst_exit_code",
]

# Named for the module this code first lived in (sync/job.py): operators' log queries and
# alerts match on the logger name, so it stays.
log = logging.getLogger("sync.job")


class Stopped(Exception):
    """A stop was requested (SIGTERM, SIGINT), or the sweep's deadline passed, before the sweep
    could apply anything."""


class DeadlinePassed(Stopped):
    """The sweep ran longer than its timeout: a list that long, or a server that slow."""


class UntrustedCheck(Exception):
    """The ``mobile`` filter denied numbers the listing had just shown: its answers cannot
    confirm a removal."""


# Each removal check asks about this many numbers the listing just showed, drawn in turn from
# a random sample of the listing; the rest of the request's 100 are removal candidates.
CONTROLS_PER_CHECK = 5
_CONTROL_SAMPLE = 50
_REJECTED_EXAMPLES = 3
DEFAULT_SWEEP_TIMEOUT = 2 * 3600.0


class _Halt:
    """What stops a sweep early: the process's stop event, or the sweep's own deadline. The
    client polls :meth:`is_set` between reads, so either ends a sweep within a second."""

    def __init__(self, stop: threading.Event, seconds: float) -> None:
        self._stop = stop
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def is_set(self) -> bool:
        return self._stop.is_set() or self.deadline_passed()

    def deadline_passed(self) -> bool:
        return time.monotonic() > self._deadline

    def check(self, during: str) -> None:
        if self._stop.is_set():
            raise Stopped(f"stopped by a signal while {during}; nothing was applied")
        if time.monotonic() > self._deadline:
            raise DeadlinePassed(
                f"the sweep passed its deadline of {self._seconds:.0f}s while {during}; nothing was applied"
            )


class StopRequest(threading.Event):
    """A stop request that remembers the signal that asked for it: an interrupted run is
    recorded as ``cancelled`` and exits 128 + that signal's number, the shell's convention."""

    signum: int | None = None

    def request(self, signum: int) -> None:
        self.signum = signum
        self.set()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a stop request"


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    trigger: Trigger = Trigger.MANUAL
    dry_run: bool = False
    force: bool = False
    guard: GuardLimits = field(default_factory=GuardLimits)
    # Scheduler replicas and shards: skip a channel whose last sweep started less than this
    # many seconds ago (by any process), so overlapping processes sweep it once.
    skip_if_swept_within: float | None = None
    timeout: float = DEFAULT_SWEEP_TIMEOUT  # the whole sweep, paging to apply, in seconds
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

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code


def worst_exit_code(results: list[SweepResult]) -> int:
    if not results:
        return 0
    return min(results, key=lambda r: SEVERITY.index(r.outcome)).exit_code


@dataclass
class _Progress:
    pages: int = 0
    rows: int = 0
    rejected: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for logs and the benchmark

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[phase] = round(time.monotonic() - started, 3)


PageCallback = Callable[[str, int, int], None]  # (channel, pages so far, rows so far)
ChangeCallback = Callable[[str, str, str, str], None]  # (account, channel, 'added'|'removed', mobile)


def sweep_channel(
    client: KaleyraClient,
    store: Store,
    channel: str,
    options: SweepOptions,
    *,
    stop: threading.Event | None = None,
    on_page: PageCallback | None = None,
    on_change: ChangeCallback | None = None,
) -> SweepResult:
    """Sweep one channel of ``client``'s account into ``store``; never raises for a failed
    sweep (the result says what happened), only for a stop of the whole process."""
    stop = stop or threading.Event()
    halt = _Halt(stop, options.timeout)
    started = time.monotonic()
    context: dict[str, object] = {"account": client.sid, "channel": channel}
    try:
        with store.lock_channel(client.sid, channel) as session:
            if options.skip_if_swept_within is not None:
                # Shards retry a failed or stopped pair (their Job's retry, a pod restarted
                # after SIGTERM): only a sweep that did not fail counts as done moments ago.
                age = session.seconds_since_last_start(count_failures=not options.lock_held_is_skip)
                if age is not None and age < options.skip_if_swept_within:
                    return _finish(
                        SweepResult(
                            account_sid=client.sid,
                            channel=channel,
                            outcome=Outcome.SKIPPED,
                            message=f"swept {age:.0f}s ago, by this or another process; skipping this tick",
                        ),
                        started,
                        context,
                    )
            abandoned = session.fail_abandoned_runs()
            if abandoned:
                log.warning("marked %d abandoned run(s) as failed", abandoned, extra=context)
            run_id = session.start_run(options.trigger)
            context["run_id"] = run_id
            log.info("sweep started (%s)", options.trigger, extra=context)
            progress = _Progress()
            try:
                result = _sweep_locked(
                    client, session, run_id, channel, options, halt, progress, on_page, on_change
                )
            except (Exception, KeyboardInterrupt, SystemExit) as exc:
                # A stop the operator asked for is not a failure of Kaleyra or the database.
                cancelled = stop.is_set() and isinstance(
                    exc, Stopped | Cancelled | KeyboardInterrupt | SystemExit
                )
                reason = _stop_reason(stop) if cancelled else _reason(exc, halt)
                status = Outcome.CANCELLED if cancelled else Outcome.FAILED
                try:
                    session.finish_run(run_id, status.label, pages=progress.pages, error=reason)
                except Exception:  # the database itself may be what failed
                    log.exception(
                        "could not mark run %s %s; the next run will mark it failed",
                        run_id,
                        status.label,
                        extra=context,
                    )
                if not isinstance(exc, Exception):
                    raise
                result = SweepResult(
                    account_sid=client.sid,
                    channel=channel,
                    outcome=status,
                    run_id=run_id,
                    pages=progress.pages,
                    message=reason,
                    # The client only learns that it must stop; the halt knows it was the deadline.
                    error_type=(
                        DeadlinePassed
                        if not cancelled and isinstance(exc, Cancelled) and halt.deadline_passed()
                        else type(exc)
                    ),
                    account_wide=getattr(exc, "account_wide", False),
                )
    except LockHeld:
        result = SweepResult(
            account_sid=client.sid,
            channel=channel,
            outcome=Outcome.SKIPPED if options.lock_held_is_skip else Outcome.LOCKED,
            message="another blocklist-sync process is sweeping this channel; nothing was written",
        )
    return _finish(result, started, context)


def _sweep_locked(
    client: KaleyraClient,
    session: LockedChannel,
    run_id: int,
    channel: str,
    options: SweepOptions,
    halt: _Halt,
    progress: _Progress,
    on_page: PageCallback | None,
    on_change: ChangeCallback | None,
) -> SweepResult:
    def rows() -> Iterator[Entry]:
        for page in client.pages(channel, cancel=halt):
            halt.check("paging")
            progress.pages += 1
            progress.rows += len(page.entries)
            if page.rejected:
                progress.rejected += len(page.rejected)
                room = _REJECTED_EXAMPLES - len(progress.rejected_examples)
                progress.rejected_examples += [describe_rejected(r) for r in page.rejected[:room]]
            log.debug(
                "page %d at offset %d: %d new rows",
                progress.pages,
                page.offset,
                len(page.entries),
                extra={
                    "account": client.sid,
                    "channel": channel,
                    "pages": progress.pages,
                    "offset": page.offset,
                },
            )
            if on_page:
                on_page(channel, progress.pages, progress.rows)
            yield from page.entries

    with progress.timed("fetch"):
        listed = session.stage(rows())
    if progress.rejected:
        log.warning(
            "%d listed row(s) cannot be a phone number and were not stored, e.g. %s",
            progress.rejected,
            ", ".join(progress.rejected_examples),
            extra={"account": client.sid, "channel": channel},
        )
    with progress.timed("diff"):
        diff = replace(session.diff(listed), rejected=progress.rejected)
    # An empty listing over a full table is held before spending requests on confirming it.
    held = empty_listing_hold(listed, diff.current)
    if held is None or options.force or options.dry_run:
        with progress.timed("verify"):
            _confirm_removals(client, session, channel, halt)
            diff = replace(session.counts(listed), rejected=progress.rejected)
        held = held or removal_hold(diff.current, diff.removed, options.guard)
    result = functools.partial(
        SweepResult,
        account_sid=client.sid,
        channel=channel,
        run_id=run_id,
        pages=progress.pages,
        diff=diff,
        phases=progress.phases,
    )
    if options.dry_run:
        if on_change:
            for change, mobile in session.changes():
                on_change(client.sid, channel, change, mobile)
        note = f"would be held: {held}" if held and not options.force else None
        session.finish_run(run_id, RunStatus.DRY_RUN, pages=progress.pages, diff=diff, error=note)
        return result(outcome=Outcome.DRY_RUN, message=note)
    if held and not options.force:
        message = f"held by the safety guard: {held}. Nothing was applied"
        session.finish_run(run_id, RunStatus.HELD, pages=progress.pages, diff=diff, error=message)
        return result(outcome=Outcome.HELD, message=message)
    halt.check("about to apply")
    with progress.timed("apply"):
        session.apply(run_id, pages=progress.pages, diff=diff)
    return result(outcome=Outcome.SUCCEEDED)


def _confirm_removals(client: KaleyraClient, session: LockedChannel, channel: str, halt: _Halt) -> None:
    """Ask Kaleyra about every removal candidate directly and keep those it still lists.

    Each request also names a few numbers this listing showed (controls). A working filter
    confirms them; a filter that answers ``[]`` to everything would otherwise confirm every
    removal. A control can be denied honestly (someone unblocked it since it was listed), so one
    denial proves nothing; a request whose every control is denied, or a sweep in which more
    than half of all controls were denied, proves the filter broken: the sweep fails and applies
    nothing. With no controls (an empty listing, only checked under --force or --dry-run) the
    answers cannot be proven, which is one more reason the guard holds such a sweep.
    """
    sample = session.listed_sample(_CONTROL_SAMPLE)
    controls = itertools.cycle(sample) if sample else None
    size = client.check_size  # never more than one response of this server can hold
    per_check = min(CONTROLS_PER_CHECK, len(sample), size // 2)
    asked_total = denied_total = 0
    for batch in session.removal_candidates(size - per_check):
        halt.check("confirming removals")
        asked = [next(controls) for _ in range(per_check)] if controls else []
        found = client.check(channel, batch + asked, cancel=halt)
        denied = [m for m in asked if m not in found]
        asked_total += len(asked)
        denied_total += len(denied)
        if (asked and len(denied) == len(asked)) or denied_total * 2 > max(asked_total, 10):
            raise UntrustedCheck(
                f"the mobile filter denied {denied_total} of {asked_total} number(s) the listing "
                "had just shown as blocklisted, so it cannot confirm removals; nothing was "
                "applied. If this repeats, the API's mobile filter is broken: report it"
            )
        session.keep(found.intersection(batch))


def pairs_to_sweep(
    accounts: list[Account], channels: tuple[str, ...] | None = None, shard: Shard | None = None
) -> list[tuple[Account, tuple[str, ...]]]:
    """Each account with the channels this process sweeps: every configured channel (or
    exactly ``channels``: a backfill of a channel not yet configured must not silently do
    nothing), narrowed to ``shard``'s share of the sorted (SID, channel) pairs."""
    wanted = [(account, channels or account.channels) for account in accounts]
    if shard is None:
        return wanted
    pairs = sorted((account.sid, channel) for account, chans in wanted for channel in chans)
    mine = {pair for position, pair in enumerate(pairs) if shard.owns(position)}
    narrowed = [(account, tuple(c for c in chans if (account.sid, c) in mine)) for account, chans in wanted]
    return [(account, chans) for account, chans in narrowed if chans]


def sweep_accounts(
    accounts: list[Account],
    store: Store,
    options: SweepOptions,
    make_client: Callable[[Account], KaleyraClient],
    *,
    channels: tuple[str, ...] | None = None,
    shard: Shard | None = None,
    stop: threading.Event | None = None,
    on_page: PageCallback | None = None,
    on_change: ChangeCallback | None = None,
    on_result: Callable[[SweepResult], None] | None = None,
) -> list[SweepResult]:
    """Sweep each account's channels (:func:`pairs_to_sweep`) independently: one failing does
    not stop the others. An account-wide error (credentials, access, balance, an unreachable
    host) skips the account's remaining channels rather than failing each the same way, and
    a stop skips everything not yet started; either way every channel gets a result, so the
    operator sees a line for each."""
    stop = stop or threading.Event()
    results: list[SweepResult] = []

    def record(result: SweepResult) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    for account, account_channels in pairs_to_sweep(accounts, channels, shard):
        client = make_client(account)
        broken: SweepResult | None = None
        try:
            for channel in account_channels:
                if stop.is_set():
                    record(
                        SweepResult(
                            account_sid=account.sid,
                            channel=channel,
                            outcome=Outcome.CANCELLED,
                            message=f"not started: {_stop_reason(stop)}",
                        )
                    )
                elif broken is not None:
                    record(
                        _finish(
                            SweepResult(
                                account_sid=account.sid,
                                channel=channel,
                                outcome=Outcome.SKIPPED,
                                message=f"not tried, because {broken.channel} failed with an error "
                                "for the whole account (above)",
                            ),
                            time.monotonic(),
                            {"account": account.sid, "channel": channel},
                        )
                    )
                else:
                    result = sweep_channel(
                        client, store, channel, options, stop=stop, on_page=on_page, on_change=on_change
                    )
                    record(result)
                    if result.account_wide:
                        broken = result
        finally:
            client.close()
    return results


def client_for(
    account: Account, tuning: Tuning | None = None, retry: RetryPolicy | None = None
) -> KaleyraClient:
    """The Kaleyra client for ``account``, as hard and as fast as ``tuning`` allows."""
    tuning = tuning or Tuning()
    return KaleyraClient(
        sid=account.sid,
        api_key=account.api_key,
        base_url=account.base_url,
        concurrency=tuning.concurrency,
        max_rps=tuning.max_rps,
        max_pages=tuning.max_pages,
        retry=retry or RetryPolicy(),
    )


def stop_on_signals(stop: StopRequest) -> None:
    """SIGTERM and SIGINT ask the sweep to stop at the next page, applying nothing; a second
    SIGINT interrupts at once (the run row is still marked cancelled)."""

    def handler(signum: int, _frame: object) -> None:
        log.warning("%s received: stopping; a sweep in progress applies nothing", signal.Signals(signum).name)
        if not stop.is_set():
            stop.request(signum)
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _stop_reason(stop: threading.Event) -> str:
    name = stop.name if isinstance(stop, StopRequest) else "a stop request"
    return f"cancelled by {name}; nothing was applied"


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
    if isinstance(exc, Stopped | UntrustedCheck):
        return redact(str(exc))
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "interrupted before finishing; nothing was applied"
    # An exception's text can quote what it failed on (a row, a driver's message): vendor
    # text, so redacted before it is cut.
    first_line = vendor_text(str(exc).splitlines()[0], 300) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}; nothing was applied"


def _finish(result: SweepResult, started: float, context: dict[str, object]) -> SweepResult:
    result = replace(result, seconds=time.monotonic() - started)
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
