"""What the commands print: each sweep's result line with advice, a dry run's changes, and
``status`` as a table or as JSON.

Text only, built from results and statuses; the CLI decides where it goes and what the exit
code is. Output is part of the contract: scripts parse ``run --dry-run`` and
``status --json``, and operators grep the result lines.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sync import health
from sync.kaleyra import (
    AuthenticationError,
    BadRequestError,
    LowBalanceError,
    NotAllowedError,
    PagingError,
    ProtocolError,
    RateLimitedError,
    RetryableAPIError,
    TransportError,
    UnreachableError,
)
from sync.plan import ChannelPlan
from sync.redaction import redact
from sync.settings import Shard
from sync.store import ChannelStatus, Diff
from sync.sweep import DeadlinePassed, PlanApplied, RunDeadlinePassed, SweepResult
from sync.timetext import age_text
from sync.vocabulary import Outcome, RunStatus

__all__ = [
    "ADVICE",
    "BLIND_FORCE_WARNING",
    "advice_for",
    "change_line",
    "no_pairs_line",
    "plan_line",
    "plan_saved_line",
    "run_summary",
    "status_json",
    "status_record",
    "status_table",
    "summary_line",
]

# What to do about a failure, by the error's class (most specific first): the HTTP layer says
# what happened, only the command line knows which flag or variable the operator should change.
ADVICE: tuple[tuple[type[BaseException], str], ...] = (
    (
        AuthenticationError,
        "check KALEYRA_SID and the API key (KALEYRA_API_KEY or "
        "KALEYRA_API_KEY_FILE, or the account's entry in --config)",
    ),
    (LowBalanceError, "top up the Kaleyra account balance, then run again"),
    (
        NotAllowedError,
        "the account may not use this API or channel; ask Kaleyra support to "
        "enable it, or remove the channel from KALEYRA_CHANNELS",
    ),
    (
        BadRequestError,
        "the request was rejected as malformed; check the channel and KALEYRA_BASE_URL / KALEYRA_REGION",
    ),
    (UnreachableError, "check KALEYRA_BASE_URL or KALEYRA_REGION, DNS, the firewall and proxies"),
    (RateLimitedError, "Kaleyra rate-limited the sweep; lower --concurrency or --max-rps"),
    (TransportError, "check network access to the Kaleyra base URL; it was retried and gave up"),
    (RetryableAPIError, "Kaleyra failed; it was retried and will be tried again next run"),
    (PagingError, "the server's paging cannot be trusted for a full sweep; report it to Kaleyra"),
    (
        DeadlinePassed,
        "if the list is that long, raise --sweep-timeout (BLOCKLIST_SYNC_SWEEP_TIMEOUT); "
        "if the server is that slow, check the Kaleyra service status",
    ),
    (
        RunDeadlinePassed,
        "raise --run-timeout (BLOCKLIST_SYNC_RUN_TIMEOUT), and the scheduler's kill above it, "
        "or shard the run",
    ),
    (ProtocolError, "if this persists, check KALEYRA_BASE_URL and report it"),
    (PlanApplied, "to review changes since, make a new plan with --dry-run --plan-out"),
)


def advice_for(error_type: type[BaseException] | None) -> str | None:
    return next((text for cls, text in ADVICE if error_type and issubclass(error_type, cls)), None)


def summary_line(result: SweepResult) -> str:
    if (
        result.run_id is None and result.message and result.outcome in (Outcome.SKIPPED, Outcome.CANCELLED)
    ):  # never started: one line says why, and what to do where there is something to do
        advice = advice_for(result.error_type)
        said = f"{result.message}. {advice[0].upper()}{advice[1:]}" if advice else result.message
        return f"{result.account_sid} {result.channel}: {result.outcome.label}: {said}"
    parts = [f"{result.account_sid} {result.channel}: {result.outcome.label}"]
    if result.diff is not None:
        parts.append(_counts_said(result.outcome, result.diff))
        if result.diff.unconfirmed:
            parts.append(f"{result.diff.unconfirmed} unconfirmed (kept)")
    if result.pages:
        parts.append(f"{result.pages} pages")
    parts.append(f"{result.seconds:.1f}s")
    if result.run_id is not None:
        parts.append(f"run {result.run_id}")
    line = ", ".join(parts)
    if result.outcome is Outcome.HELD:
        where = f"--account {result.account_sid} --channel {result.channel}"
        return (
            f"{line}\n  {result.message}\n  review it with `blocklist-sync run --dry-run "
            f"{where} --plan-out plan.json`, apply what you reviewed with "
            f"`blocklist-sync run --force {where} --plan plan.json`"
        )
    advice = advice_for(result.error_type)
    if advice:
        return f"{line}\n  {result.message}\n  {advice}"
    return f"{line}\n  {result.message}" if result.message else line


def _counts_said(outcome: Outcome, diff: Diff) -> str:
    """What a sweep's counts mean: what is blocklisted now and what changed, once applied
    (``500 blocklisted, +2 -0``); for a dry run or a held sweep, which applied nothing, what is
    still stored and what it *would* change (``600 blocklisted, unchanged: would add 0 and
    remove 130``), so no number reads as stored state that was never written."""
    if outcome is Outcome.SUCCEEDED:
        return f"{diff.seen} blocklisted, +{diff.added} -{diff.removed}"
    return f"{diff.current} blocklisted, unchanged: {_would_change(diff.added, diff.removed)}"


def _would_change(added: int, removed: int) -> str:
    """``would add 2 and remove 130``: changes not applied, in the conditional."""
    return f"would add {added} and remove {removed}"


def change_line(account_sid: str, channel: str, change: str, mobile: str) -> str:
    """One change a dry run would make, tab-separated for scripts."""
    return f"would-be-{change}\t{account_sid}\t{channel}\t{mobile}"


BLIND_FORCE_WARNING = (
    "warning: --force alone approves blind: it applies whatever this sweep finds, which "
    "may differ from what --dry-run showed; approve what you reviewed with "
    "--dry-run --plan-out FILE, then --force --plan FILE (or --expect-removed N)"
)


def plan_saved_line(path: str, channels: int, left_out: list[str]) -> str:
    """Where a dry run's plan went, what it left out, and how to apply it."""
    note = f"; not in it (no dry run finished): {', '.join(left_out)}" if left_out else ""
    return (
        f"plan saved to {path}: {channels} channel(s){note}; apply it with "
        f"`blocklist-sync run --force --plan {path}` (same --account/--channel)"
    )


def plan_line(plan: ChannelPlan) -> str:
    """A dry run's plan for one channel, for the human who reviews it."""
    line = (
        f"plan {plan.account_sid} {plan.channel}: {_would_change(plan.added, plan.removed)}, "
        f"{plan.unconfirmed} unconfirmed (kept)"
    )
    return f"{line}, would be held: {plan.held}" if plan.held else line


Window = tuple[dt.datetime | None, dt.datetime | None]  # (not_before, detected_at)


def run_summary(
    results: list[SweepResult],
    windows: dict[int, Window],
    exit_code: int,
    *,
    started_at: dt.datetime,
    finished_at: dt.datetime,
    dry_run: bool,
    forced: bool,
) -> str:
    """``run --summary-json``: one object per account and channel and the run's exit code, for
    orchestrators (as dbt's ``run_results.json``). Field names are stable: new ones may be
    added, none renamed or removed (docs/operators.md#a-run-summary-for-orchestrators)."""

    def iso(t: dt.datetime | None) -> str | None:
        return t.isoformat() if t else None

    def record(result: SweepResult) -> dict[str, Any]:
        diff = result.diff
        not_before, detected_at = windows.get(result.run_id, (None, None)) if result.run_id else (None, None)
        return {
            "account_sid": result.account_sid,
            "channel": result.channel,
            "status": result.outcome.label,
            "exit_code": int(result.exit_code),
            "run_id": result.run_id,
            "counts": {
                "entries": diff.seen if diff else None,
                "listed": diff.listed if diff else None,
                "added": diff.added if diff else None,
                "removed": diff.removed if diff else None,
                "unconfirmed": diff.unconfirmed if diff else None,
                "rejected": diff.rejected if diff else None,
                "pages": result.pages,
            },
            "window": {"not_before": iso(not_before), "detected_at": iso(detected_at)},
            "reason": result.message,
            "seconds": round(result.seconds, 3),
        }

    return json.dumps(
        {
            "format": SUMMARY_FORMAT,
            "command": "run",
            "dry_run": dry_run,
            "forced": forced,
            "started_at": iso(started_at),
            "finished_at": iso(finished_at),
            "exit_code": exit_code,
            "results": [record(r) for r in results],
        },
        separators=(",", ":"),  # one line: the last line of stdout is the summary (Airflow's XCom)
    )


def stopped_summary(error: str, exit_code: int, *, dry_run: bool, forced: bool) -> str:
    """``run --summary-json`` of a run stopped before any sweep (a bad setting, a stale plan,
    no database): no results, the exit code, and ``error``, the line it printed. Times are
    null: the database's clock may be what could not be read."""
    return json.dumps(
        {
            "format": SUMMARY_FORMAT,
            "command": "run",
            "dry_run": dry_run,
            "forced": forced,
            "started_at": None,
            "finished_at": None,
            "exit_code": exit_code,
            "results": [],
            "error": redact(error),  # written to a file, past the streams' redaction
        },
        separators=(",", ":"),
    )


SUMMARY_FORMAT = "blocklist-sync-run-summary/1"


def no_pairs_line(shard: Shard) -> str:
    """Why a shard's run printed no result line."""
    return f"shard {shard}: no (account, channel) pair falls to this shard"


def status_json(
    scoped: health.Scoped, now: dt.datetime, where: str, problems: dict[tuple[str, str], str | None]
) -> str:
    """``status --json``: every judged channel, then those listed but not configured."""
    return json.dumps(
        {
            "database": where,
            "channels": [
                status_record(s, now, problems[s.account_sid, s.channel], configured=True)
                for s in scoped.judged
            ]
            + [status_record(s, now, None, configured=False) for s in scoped.not_configured],
        },
        indent=2,
    )


def status_record(
    s: ChannelStatus, now: dt.datetime, problem: str | None, *, configured: bool
) -> dict[str, Any]:
    def iso(t: dt.datetime | None) -> str | None:
        return t.isoformat() if t else None

    return {
        "account_sid": s.account_sid,
        "channel": s.channel,
        "entries": s.entries,
        "last_run": {
            "id": s.last_run_id,
            "status": s.last_status,
            "started_at": iso(s.last_started_at),
            "finished_at": iso(s.last_finished_at),
            "pages": s.last_pages,
            "added": s.last_added,
            "removed": s.last_removed,
            "rejected": s.last_rejected,
            "unconfirmed": s.last_unconfirmed,
            "error": s.last_error,
            # Whether added and removed were applied (a succeeded sweep), or are what a held
            # sweep would have done.
            "applied": _applied(s) if s.last_status else None,
        },
        "last_success_at": iso(s.last_success_at),
        "last_success_age_seconds": (now - s.last_success_at).total_seconds() if s.last_success_at else None,
        "configured": configured,
        "ok": problem is None,
        "problem": problem,
    }


def _applied(s: ChannelStatus) -> bool:
    """Whether the last sweep's counts were applied: only a succeeded sweep's were."""
    return s.last_status == RunStatus.SUCCEEDED


def _table(statuses: list[ChannelStatus], now: dt.datetime) -> list[str]:
    header = (
        "ACCOUNT",
        "CHANNEL",
        "LAST RUN",
        "STATUS",
        "ADDED",
        "REMOVED",
        "REJECTED",
        "ENTRIES",
        "LAST SUCCESS",
    )
    rows = [header] + [
        (
            s.account_sid,
            s.channel,
            age_text(now, s.last_finished_at or s.last_started_at),
            s.last_status or "never swept",
            # What the last sweep applied; a sweep that applied nothing shows none (a held
            # one's intentions get a line of their own, below the table).
            str(s.last_added or 0) if _applied(s) else "-",
            str(s.last_removed or 0) if _applied(s) else "-",
            str(s.last_rejected or 0),
            str(s.entries),
            age_text(now, s.last_success_at),
        )
        for s in statuses
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def status_table(
    scoped: health.Scoped, now: dt.datetime, where: str, problems: dict[tuple[str, str], str | None]
) -> str:
    if not scoped.judged and not scoped.not_configured:
        return f"{where}: no sweeps yet; run `blocklist-sync run`"
    lines = [where, *(_table(scoped.judged, now) if scoped.judged else [])]
    for s in scoped.judged:
        problem = problems[s.account_sid, s.channel]
        if problem:
            error = f": {s.last_error}" if health.failed_or_held(s) and s.last_error else ""
            lines.append(f"PROBLEM {s.account_sid} {s.channel}: {problem}{error}")
        if s.last_status == RunStatus.HELD:
            lines.append(
                f"{s.account_sid} {s.channel}: the held sweep (run {s.last_run_id}) "
                f"{_would_change(s.last_added or 0, s.last_removed or 0)}; nothing was applied, "
                f"so the {s.entries} entries stand"
            )
        if s.last_rejected:
            lines.append(
                f"{s.account_sid} {s.channel}: the last sweep rejected {s.last_rejected} "
                "listed row(s) that cannot be a phone number (examples in its log)"
            )
        if s.last_unconfirmed:
            lines.append(
                f"{s.account_sid} {s.channel}: the last sweep could not prove {s.last_unconfirmed} "
                "removal(s) and kept those numbers; the next sweep checks them again"
            )
    if scoped.not_configured:
        lines.append("not configured (listed, not judged; --all judges them):")
        lines.extend("  " + line for line in _table(scoped.not_configured, now))
    return "\n".join(lines)
