"""A run: the sweeps of every (account, channel) this process owns, one after another, each on
its own (:func:`~sync.sweep.sweep_channel`).

``blocklist-sync run`` sweeps once (:func:`run_once`); each scheduler tick sweeps one account;
the demo sweeps its made-up account. All of them go through :func:`sweep_accounts`, so they
agree on what a run is: which pairs a shard owns, that one failing channel does not stop the
others, that an account-wide error skips the account's other channels, and that a stop leaves
every channel not yet started ``cancelled``. Every channel gets a result, so the operator sees
a line for each.

:func:`run_once` is the whole of ``run`` below its flags: the review bound to the pairs swept
(:meth:`~sync.review.Review.for_run`), the metrics published as it starts, as each sweep
starts and ends and at the end, a dry run's changes and plan, each result's line, the exit
code. Its lines are :mod:`sync.output`'s; the CLI only says where they go.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from sync import output
from sync.guard import GuardLimits
from sync.kaleyra import KaleyraClient, RetryPolicy
from sync.plan import write_plan
from sync.review import Review
from sync.settings import Account, Pushgateway, Shard, Tuning, duration_text
from sync.stopping import StopRequest, stop_on_signals, stop_reason
from sync.store import Store
from sync.sweep import (
    ChangeCallback,
    PageCallback,
    RunDeadlinePassed,
    StartCallback,
    SweepOptions,
    SweepResult,
    finished,
    sweep_channel,
)
from sync.telemetry import Progress, Publisher
from sync.vocabulary import SEVERITY, Outcome, Trigger

__all__ = [
    "SHARD_SKIP_IF_SWEPT_WITHIN",
    "PlanNotWritten",
    "Prepared",
    "RunReport",
    "RunRequest",
    "Scope",
    "client_for",
    "exit_code",
    "pairs_to_sweep",
    "run_once",
    "summary_document",
    "sweep_accounts",
    "worst_exit_code",
]

# Shards may overlap (a rollout, two Jobs at once): unless told otherwise, a shard skips a pair
# whose last sweep started this recently, by any process, so no pair is swept twice.
SHARD_SKIP_IF_SWEPT_WITHIN = 30 * 60.0


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


def shard_options(options: SweepOptions) -> SweepOptions:
    """``options`` for one shard of several: a pair another shard is sweeping right now is that
    shard's (skipped, not ``locked``), and one swept moments ago is skipped
    (:data:`SHARD_SKIP_IF_SWEPT_WITHIN`, unless ``options`` says how long)."""
    within = options.skip_if_swept_within
    return replace(
        options,
        skip_if_swept_within=SHARD_SKIP_IF_SWEPT_WITHIN if within is None else within,
        lock_held_is_skip=True,
    )


def sweep_accounts(
    accounts: list[Account],
    store: Store,
    options: SweepOptions,
    make_client: Callable[[Account], KaleyraClient],
    *,
    channels: tuple[str, ...] | None = None,
    shard: Shard | None = None,
    stop: threading.Event | None = None,
    run_timeout: float | None = None,
    on_page: PageCallback | None = None,
    on_change: ChangeCallback | None = None,
    on_start: StartCallback | None = None,
    on_result: Callable[[SweepResult], None] | None = None,
) -> list[SweepResult]:
    """Sweep each account's channels (:func:`pairs_to_sweep`) independently: one failing does
    not stop the others. An account-wide error (credentials, access, balance, an unreachable
    host) skips the account's remaining channels rather than failing each the same way, and
    a stop skips everything not yet started; either way every channel gets a result, so the
    operator sees a line for each. A ``shard`` sweeps with :func:`shard_options`. ``on_start``
    is called once a sweep's ``running`` row is committed, ``on_result`` once it ended.

    ``run_timeout`` bounds the whole run: each sweep gets at most what is left of it (and
    stops with nothing applied when that passes), and a channel reached after it fails
    without a run row, saying so. A supervisor's kill set just above it (systemd's
    ``TimeoutStartSec=``, a Job's ``activeDeadlineSeconds``) then never has to fire."""
    stop = stop or threading.Event()
    ends = time.monotonic() + run_timeout if run_timeout is not None else None
    if shard is not None:
        options = shard_options(options)
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
                left = None if ends is None else ends - time.monotonic()
                result = _not_started(account.sid, channel, stop, broken, left, run_timeout) or sweep_channel(
                    client,
                    store,
                    channel,
                    options if left is None else replace(options, timeout=min(options.timeout, left)),
                    stop=stop,
                    on_page=on_page,
                    on_change=on_change,
                    on_start=on_start,
                )
                record(result)
                if result.account_wide:
                    broken = result
        finally:
            client.close()
    return results


def _not_started(
    account_sid: str,
    channel: str,
    stop: threading.Event,
    broken: SweepResult | None,
    left: float | None = None,
    run_timeout: float | None = None,
) -> SweepResult | None:
    """The result of a channel the run does not try, because a stop came first, another
    channel of its account (``broken``) failed for the whole account, or the run's deadline
    has passed (``left`` seconds of ``run_timeout`` remain); None to sweep it."""
    if stop.is_set():
        return SweepResult(
            account_sid=account_sid,
            channel=channel,
            outcome=Outcome.CANCELLED,
            message=f"not started: {stop_reason(stop)}",
        )
    if left is not None and left <= 0:
        late = SweepResult(
            account_sid=account_sid,
            channel=channel,
            outcome=Outcome.FAILED,
            message=f"not started: the run passed its run timeout of {duration_text(run_timeout or 0)}; "
            "nothing was applied",
            error_type=RunDeadlinePassed,  # the CLI's advice names the setting to raise
        )
        return finished(late, time.monotonic())
    if broken is not None:
        skipped = SweepResult(
            account_sid=account_sid,
            channel=channel,
            outcome=Outcome.SKIPPED,
            message=f"not tried, because {broken.channel} failed with an error for the whole account (above)",
        )
        return finished(skipped, time.monotonic())
    return None


def worst_exit_code(results: list[SweepResult]) -> int:
    """The exit code of the worst outcome (:data:`~sync.vocabulary.SEVERITY`); 0 for none."""
    if not results:
        return 0
    return min(results, key=lambda r: SEVERITY.index(r.outcome)).exit_code


def exit_code(results: list[SweepResult], stop: StopRequest) -> int:
    """The process's exit code for a run: its worst outcome's, or the shell's convention,
    128 + the signal's number, when a signal stopped something. A signal that landed while the
    last sweep was committing stopped nothing: the outcomes say."""
    if stop.signum is not None and any(r.outcome is Outcome.CANCELLED for r in results):
        return 128 + stop.signum
    return worst_exit_code(results)


class Echo(Protocol):
    """Where a run's lines go (``click.echo``): stdout, or stderr with ``err``."""

    def __call__(self, message: str, *, err: bool = False) -> object: ...


@dataclass(frozen=True)
class Prepared:
    """What ``run`` and ``schedule`` start from: every setting checked, the store open at the
    schema's head."""

    configured: list[Account]  # every configured account: the metrics judge them all
    accounts: list[Account]  # those to sweep (``--account``)
    store: Store
    metrics_file: str | None = None
    pushgateway: Pushgateway | None = None


@dataclass(frozen=True, kw_only=True)
class Scope:
    """Which pairs a run sweeps, and how its run rows say it was started."""

    channels: tuple[str, ...] | None = None  # None: every configured channel
    shard: Shard | None = None
    skip_if_swept_within: float | None = None
    trigger: Trigger = Trigger.MANUAL


@dataclass(frozen=True)
class RunRequest:
    """What ``run`` was asked to do, its flags checked: which pairs, what the operator
    approved, how hard and how long a sweep may press, and what the guard holds."""

    scope: Scope = field(default_factory=Scope)
    review: Review = field(default_factory=Review)
    tuning: Tuning = field(default_factory=Tuning)
    guard: GuardLimits = field(default_factory=GuardLimits)


@dataclass(frozen=True)
class RunReport:
    """What a run did: each pair's result, when it started (the database's clock) and the
    process's exit code (:func:`exit_code`)."""

    results: list[SweepResult]
    started_at: dt.datetime
    exit_code: int


class PlanNotWritten(Exception):
    """A dry run's plan could not be saved at ``path`` (``strerror`` says why); the sweeps'
    result lines were printed."""

    def __init__(self, path: str, strerror: str | None) -> None:
        super().__init__(f"cannot write the plan to {path} ({strerror})")
        self.path = path
        self.strerror = strerror


def run_once(
    ready: Prepared, request: RunRequest, echo: Echo, *, results_to_stderr: bool = False
) -> RunReport:
    """Sweep every pair ``request``'s scope names once: ``blocklist-sync run`` below its flags.

    The review is bound to the pairs first, by the database's clock (a stale plan, counts for
    several channels: refused before anything is swept). Result lines, a dry run's changes and
    its plan go to stdout, or to stderr with ``results_to_stderr`` (stdout then carries the
    run summary alone); warnings to stderr. A second Ctrl-C raises ``KeyboardInterrupt`` with
    the run row of the channel in progress already marked cancelled."""
    store, scope = ready.store, request.scope
    started_at = store.now()
    pairs = pairs_to_sweep(ready.accounts, scope.channels, scope.shard)
    review = request.review.for_run([(a.sid, c) for a, channels in pairs for c in channels], started_at)
    options = SweepOptions(
        trigger=scope.trigger,
        review=review,
        guard=request.guard,
        timeout=request.tuning.sweep_timeout,
        skip_if_swept_within=scope.skip_if_swept_within,
    )
    if review.approves_blind:
        echo(output.BLIND_FORCE_WARNING, err=True)
    stop = StopRequest()
    stop_on_signals(stop)
    # Published at start, as each sweep starts and as it ends: a sweep in progress shows.
    publisher = (
        Publisher(store, ready.configured, ready.metrics_file, pushgateway=ready.pushgateway)
        if ready.metrics_file or ready.pushgateway
        else None
    )
    if publisher:
        publisher.publish()

    def print_change(account_sid: str, channel: str, change: str, mobile: str) -> None:
        echo(output.change_line(account_sid, channel, change, mobile), err=results_to_stderr)

    progress = Progress()
    try:
        results = sweep_accounts(
            ready.accounts,
            store,
            options,
            functools.partial(client_for, tuning=request.tuning),
            channels=scope.channels,
            shard=scope.shard,
            stop=stop,
            run_timeout=request.tuning.run_timeout,
            on_page=progress.update,
            on_change=print_change if review.dry_run else None,
            on_start=publisher.sweep_started if publisher else None,
            on_result=publisher.sweep_ended if publisher else None,
        )
    finally:
        progress.close()
    if scope.shard and not results:
        echo(output.no_pairs_line(scope.shard), err=results_to_stderr)
    for result in results:
        echo(output.summary_line(result), err=results_to_stderr)
    if review.plan_out:
        _save_plan(review.plan_out, results, started_at, echo, results_to_stderr)
    if publisher:
        publisher.publish()
    return RunReport(results, started_at, exit_code(results, stop))


def _save_plan(
    path: str, results: list[SweepResult], made_at: dt.datetime, echo: Echo, to_stderr: bool
) -> None:
    """Save the dry run's plan; say what it covers and what it left out (a channel whose dry
    run failed, held by a lock, or skipped is in no plan, so ``--force --plan`` refuses it)."""
    plans = [r.plan for r in results if r.plan is not None]
    try:
        write_plan(path, plans, made_at)
    except OSError as exc:
        raise PlanNotWritten(path, exc.strerror) from None
    for plan in plans:
        echo(output.plan_line(plan), err=to_stderr)
    left_out = [f"{r.account_sid} {r.channel}" for r in results if r.plan is None]
    echo(output.plan_saved_line(path, len(plans), left_out), err=to_stderr)


def summary_document(store: Store, report: RunReport, *, dry_run: bool, forced: bool) -> str:
    """``run --summary-json`` of a run that swept: each result with its run's window, read
    from the store, and the exit code."""
    windows = {r.run_id: store.run_window(r.run_id) for r in report.results if r.run_id is not None}
    return output.run_summary(
        report.results,
        windows,
        report.exit_code,
        started_at=report.started_at,
        finished_at=store.now(),
        dry_run=dry_run,
        forced=forced,
    )
