"""A run: the sweeps of every (account, channel) this process owns, one after another, each on
its own (:func:`~sync.sweep.sweep_channel`).

``blocklist-sync run`` sweeps once; each scheduler tick sweeps one account; the demo sweeps its
made-up account. All of them go through :func:`sweep_accounts`, so they agree on what a run
is: which pairs a shard owns, that one failing channel does not stop the others, that an
account-wide error skips the account's other channels, and that a stop leaves every channel not
yet started ``cancelled``. Every channel gets a result, so the operator sees a line for each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from sync.kaleyra import KaleyraClient, RetryPolicy
from sync.settings import Account, Shard, Tuning, duration_text
from sync.stopping import StopRequest, stop_reason
from sync.store import Store
from sync.sweep import (
    ChangeCallback,
    PageCallback,
    StartCallback,
    SweepOptions,
    SweepResult,
    finished,
    sweep_channel,
)
from sync.vocabulary import SEVERITY, Outcome

__all__ = [
    "SHARD_SKIP_IF_SWEPT_WITHIN",
    "client_for",
    "exit_code",
    "pairs_to_sweep",
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
            message=f"not started: the run passed its --run-timeout of {duration_text(run_timeout or 0)}; "
            "nothing was applied. Raise --run-timeout (and the scheduler's kill above it), or shard the run",
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
