"""Which channels ``status``, the metrics and ``--max-age`` judge, and what makes one a problem.

One rule, read by every consumer: a channel is judged when its (account, channel) pair is in
the configuration. Pairs the database knows but the configuration does not (an account
removed from the config, the demo's ``HXDEMO…`` account) are listed as not configured and
never change an exit code or an alert. A configured pair that was never swept is judged too:
it appears as "never swept", and ``--max-age`` fails on it. With nothing configured at all
(only ``DATABASE_URL`` set, say on a laptop), or with ``--all``, every pair is judged, as
before. :func:`problem` says, in the status line's words, why a judged channel needs an operator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sync.settings import Account, duration_text
from sync.store import ChannelStatus
from sync.timetext import age_text
from sync.vocabulary import RunStatus

__all__ = ["Scoped", "failed_or_held", "problem", "scope"]


@dataclass(frozen=True)
class Scoped:
    judged: list[ChannelStatus]
    not_configured: list[ChannelStatus]


def _never_swept(account_sid: str, channel: str) -> ChannelStatus:
    return ChannelStatus(
        account_sid=account_sid,
        channel=channel,
        entries=0,
        last_run_id=None,
        last_status=None,
        last_started_at=None,
        last_finished_at=None,
        last_pages=None,
        last_added=None,
        last_removed=None,
        last_rejected=None,
        last_unconfirmed=None,
        last_error=None,
        last_success_at=None,
    )


def scope(statuses: list[ChannelStatus], accounts: list[Account] | None, only: Sequence[str] = ()) -> Scoped:
    """Split ``statuses`` into the configured pairs (``accounts``; None judges all) and the
    rest, both narrowed to the SIDs in ``only`` when given."""

    def wanted(sid: str) -> bool:
        return not only or sid in only

    statuses = [s for s in statuses if wanted(s.account_sid)]
    if accounts is None:
        return Scoped(statuses, [])
    configured = {(a.sid, c) for a in accounts if wanted(a.sid) for c in a.channels}
    known = {(s.account_sid, s.channel): s for s in statuses}
    judged = [known.get(pair) or _never_swept(*pair) for pair in sorted(configured)]
    return Scoped(judged, [s for s in statuses if (s.account_sid, s.channel) not in configured])


def problem(
    status: ChannelStatus,
    now: dt.datetime,
    max_age_seconds: float | None = None,
    *,
    max_age_setting: str = "the maximum age",
) -> str | None:
    """Why a judged channel needs an operator, if it does, in words for the status line: its
    last sweep failed or was held, or (given ``--max-age``) its last success is older than
    that, named ``max_age_setting`` (as the CLI names the setting the operator gave). A
    cancelled sweep is neither a success nor a failure: only its age can make it a problem."""
    if failed_or_held(status):
        return f"last sweep {status.last_status} (run {status.last_run_id})"
    if max_age_seconds is not None:
        limit = duration_text(max_age_seconds)  # the setting, as it is written
        if status.last_success_at is None:
            never = "never swept" if status.last_status is None else "never succeeded"
            return f"{never}, and {max_age_setting} is {limit}"
        if (now - status.last_success_at).total_seconds() > max_age_seconds:
            age = age_text(now, status.last_success_at)
            return f"last success {age}, older than {max_age_setting} {limit}"
    return None


def failed_or_held(status: ChannelStatus) -> bool:
    """The rule's first half: the channel's last sweep failed or was held, so nothing was
    applied and nothing will be until someone looks. (``status`` shows that sweep's error for
    the same reason.)"""
    return status.last_status in (RunStatus.FAILED, RunStatus.HELD)
