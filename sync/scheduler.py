"""``blocklist-sync schedule``: the long-running variant, on APScheduler 3's BlockingScheduler.

One job per account, in UTC, ``coalesce=True`` and ``max_instances=1`` (a slow sweep never
piles up), a misfire grace of minutes. Replicas may run side by side for failover: their
ticks fall on the same wall-clock times, the advisory lock lets one sweep a channel at a time,
and a channel swept less than half a period ago is skipped, so each channel is swept once per
tick in total. SIGTERM/SIGINT stop the process cleanly: a sweep in progress stops at its next
page with nothing applied (its run row says ``cancelled``), unless it was already applying its
changes, which then commit (``succeeded``); the process exits 0: stopping a service is not a
failure.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from sync.guard import GuardLimits
from sync.kaleyra import KaleyraClient
from sync.run import Prepared, client_for, sweep_accounts
from sync.settings import Account, ConfigError, Tuning, parse_duration, quoted
from sync.stopping import StopRequest, stop_on_signals
from sync.store import Store
from sync.sweep import PageCallback, SweepOptions
from sync.telemetry import Metrics, Progress, Publisher
from sync.vocabulary import Trigger

__all__ = ["crontab_trigger", "every_trigger", "period_seconds", "run_scheduler", "serve"]

log = logging.getLogger("sync.scheduler")

MISFIRE_GRACE_SECONDS = 10 * 60
_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # interval ticks are anchored here, so replicas align
_CRON_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab: 0 and 7 are Sunday


def _weekday_token(token: str, expr: str, setting: str) -> str:
    """One comma-separated item of crontab's weekday field, in APScheduler's terms.

    APScheduler numbers weekdays from Monday = 0, crontab from Sunday = 0: numbers become
    names (ranges are written out, so "0-6" stays Sunday to Saturday). Steps cannot be
    translated faithfully and are rejected rather than silently shifted.
    """
    if "/" in token:
        raise ConfigError(
            f"{setting} {expr!r}: steps in the weekday field are not supported; "
            "list the days, e.g. 1,3,5 or mon,wed,fri"
        )
    if token == "*":
        return token
    try:
        low, _, high = token.lower().partition("-")
        first, last = _weekday_number(low), _weekday_number(high or low)
    except ValueError:
        raise ConfigError(f"{setting} {expr!r}: {token!r} is not a weekday (0-7 or sun-sat)") from None
    if last < first:
        raise ConfigError(
            f"{setting} {expr!r}: the range {token!r} runs backwards; crontab ranges go from low to high"
        )
    return ",".join(dict.fromkeys(_CRON_WEEKDAYS[d % 7] for d in range(first, last + 1)))


def _weekday_number(value: str) -> int:
    if value in _CRON_WEEKDAYS:
        return _CRON_WEEKDAYS.index(value)
    if not (value.isascii() and value.isdigit()):  # int() would read "٣" as 3
        raise ValueError(value)
    number = int(value)
    if not 0 <= number <= 7:
        raise ValueError(value)
    return number


def crontab_trigger(expr: str, jitter: int | None = None, *, setting: str) -> CronTrigger:
    """A five-field crontab expression, meaning what it means in crontab, in UTC; a
    :class:`ConfigError` naming ``setting`` (the flag or variable that gave it) if it cannot be."""
    if not expr.isascii() or len(expr) > 200:  # APScheduler would read "٣" as 3
        raise ConfigError(
            f'{setting} {quoted(expr)}: write it in ASCII digits, names, * , - and /, like "15 * * * *"'
        )
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(
            f'{setting} {expr!r}: give five fields (minute hour day month weekday), e.g. "15 * * * *"'
        )
    minute, hour, day, month, weekday = fields
    if day != "*" and weekday != "*":
        # crontab runs when EITHER matches; APScheduler would require both.
        raise ConfigError(f"{setting} {expr!r}: restrict the day of month or the weekday, not both")
    weekdays = ",".join(_weekday_token(t, expr, setting) for t in weekday.split(","))
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=weekdays,
            timezone=dt.UTC,
            jitter=jitter,
        )
    except ValueError as exc:
        raise ConfigError(f"{setting} {expr!r}: {exc}") from None


def every_trigger(every: str, jitter: int | None = None, *, setting: str) -> IntervalTrigger:
    """Ticks ``every`` apart, anchored so that replicas align; ``setting`` names where it came from."""
    seconds = parse_duration(every, setting)
    return IntervalTrigger(seconds=seconds, start_date=_EPOCH, timezone=dt.UTC, jitter=jitter)


def period_seconds(trigger: BaseTrigger) -> float:
    """The gap between two ticks (the first two from now, for a cron trigger)."""
    if isinstance(trigger, IntervalTrigger):
        return float(trigger.interval.total_seconds())
    now = dt.datetime.now(dt.UTC)
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + dt.timedelta(seconds=1))
    return (second - first).total_seconds() if first and second else 3600.0


def run_scheduler(
    accounts: list[Account],
    store: Store,
    options: SweepOptions,
    make_client: Callable[[Account], KaleyraClient],
    trigger: BaseTrigger,
    *,
    run_now: bool = False,
    publisher: Publisher | None = None,
    run_timeout: float | None = None,
    on_page: PageCallback | None = None,
) -> None:
    """Run until SIGTERM or SIGINT; returns once any sweep in progress has stopped. The
    ``publisher`` publishes the metrics as each sweep starts and ends, and after each tick;
    ``on_page`` hears how far each listing has come (progress in the log)."""
    stop = StopRequest()
    scheduler = BlockingScheduler(timezone=dt.UTC)
    # A replica that sweeps a channel right after another did the same tick would sweep it
    # twice; half a period apart is "the same tick".
    options = replace(options, trigger=Trigger.SCHEDULED, skip_if_swept_within=period_seconds(trigger) / 2)

    running: set[threading.Thread] = set()
    # ``--run-now``: each account's first tick is the operator's request to sweep now. The
    # replicas' skip (half a period) would skip it whenever the channel was swept in the last
    # half period (a `run` by hand, a restart), which is exactly when an operator restarts the
    # service to see a sweep. So that tick sweeps whatever the last sweep's age; a sweep in
    # progress elsewhere still holds the lock, and the result line says so.
    run_now_pending = {account.sid for account in accounts} if run_now else set()

    def tick(account: Account) -> None:
        running.add(threading.current_thread())
        now = account.sid in run_now_pending
        run_now_pending.discard(account.sid)  # one job per account, never two at once
        if now:
            log.info("--run-now: sweeping account %s now, however recently it was swept", account.sid)
        try:
            sweep_accounts(
                [account],
                store,
                replace(options, skip_if_swept_within=None) if now else options,
                make_client,
                stop=stop,
                run_timeout=run_timeout,
                on_page=on_page,
                on_start=publisher.sweep_started if publisher else None,
                on_result=publisher.sweep_ended if publisher else None,
            )
        except Exception:  # the process stays up; the next tick tries again
            log.exception("tick failed for account %s", account.sid, extra={"account": account.sid})
        try:
            if publisher:
                publisher.publish()  # also after a tick that raised, or skipped every channel
        except Exception:
            log.exception("updating metrics failed")
        finally:
            running.discard(threading.current_thread())

    first = dt.datetime.now(dt.UTC) if run_now else None
    for account in accounts:
        scheduler.add_job(
            tick,
            trigger,
            args=[account],
            id=f"sweep-{account.sid}",
            name=f"sweep {account.sid}",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=MISFIRE_GRACE_SECONDS,
            **({"next_run_time": first} if first else {}),
        )

    stop_on_signals(stop, service=lambda: scheduler.shutdown(wait=False))
    log.info("scheduler started: %d account(s), %s", len(accounts), trigger)
    scheduler.start()
    for thread in list(running):  # sweeps stop at their next page, applying nothing
        thread.join()
    log.info("scheduler stopped")


def serve(
    ready: Prepared,
    trigger: BaseTrigger,
    tuning: Tuning,
    guard: GuardLimits,
    *,
    run_now: bool = False,
    metrics_port: int | None = None,
    metrics_address: str = "127.0.0.1",
) -> None:
    """``blocklist-sync schedule`` below its flags: the metrics served on ``metrics_port``
    (published first, so the port never answers empty), then :func:`run_scheduler` until
    SIGTERM, with each listing's progress in the log. :class:`~sync.telemetry.CannotListen`
    if the port cannot be served."""
    accounts, store = ready.accounts, ready.store
    options = SweepOptions(trigger=Trigger.SCHEDULED, guard=guard, timeout=tuning.sweep_timeout)
    publisher = Publisher(store, accounts, ready.metrics_file, Metrics(), ready.pushgateway)
    if metrics_port:
        publisher.publish()
        publisher.metrics.serve(metrics_port, metrics_address)
    progress = Progress()
    try:
        run_scheduler(
            accounts,
            store,
            options,
            functools.partial(client_for, tuning=tuning),
            trigger,
            run_now=run_now,
            run_timeout=tuning.run_timeout,
            publisher=publisher if (metrics_port or ready.metrics_file or ready.pushgateway) else None,
            on_page=progress.update,
        )
    finally:
        progress.close()
