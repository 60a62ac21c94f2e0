"""What a sweep is asked to do (:class:`SweepOptions`) and what it reports
(:class:`SweepResult`), including a sweep that found its channel locked; and every sweep's last
log line (:func:`finished`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from sync.guard import GuardLimits
from sync.plan import ChannelPlan
from sync.redaction import redact
from sync.review import Review
from sync.settings import Tuning
from sync.store import Diff, LockHeld, LockHolder
from sync.timetext import elapsed_text, instant_text
from sync.vocabulary import Outcome, Trigger

__all__ = ["SweepOptions", "SweepResult", "finished", "lock_held", "log"]

# Named for the module this code first lived in (sync/job.py): operators' log queries and
# alerts match on the logger name, so it stays. The sweep's steps log to it too.
log = logging.getLogger("sync.job")


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


def lock_held(held: LockHeld, account_sid: str, channel: str, options: SweepOptions) -> SweepResult:
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
            f"this channel's lock has been held for {elapsed_text(holder.held_for)}, longer than a "
            f"sweep may run ({elapsed_text(options.timeout)}), by {_holder_text(holder)}"
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
        parts.append(f"connected {instant_text(holder.since)}, {elapsed_text(holder.held_for)} ago")
    else:
        parts.append("connected at a time this role may not see (grant it pg_read_all_stats)")
    return ", ".join(parts)


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
