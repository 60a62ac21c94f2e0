"""A reviewed ``--force``: what a dry run would change, saved, and held against the sweep that
applies it (as ``terraform plan -out`` and ``terraform apply PLAN``).

A held sweep waits for a human. Before this module, ``--force`` applied whatever the *next*
sweep found, which need not be what the human reviewed with ``--dry-run`` minutes earlier (more
numbers gone since, a different outage). Now ``--force`` can say what it approves:

- counts, ``--expect-removed N`` (and ``--expect-added N``), for one account and channel; or
- a plan file written by ``run --dry-run --plan-out FILE``: per account and channel, the counts
  and a SHA-256 of the sorted numbers to be added and of those to be removed.

A forced sweep whose changes differ from what was approved applies nothing and is recorded
``held`` (exit 3, as for any hold), saying how it differs. A plan is a few hundred bytes per
channel whatever its size: a million removals are one digest, not a million numbers, and the
file holds no number, key or password. It names the account and channel it is for and when it
was made (by the database's clock, as every stored time); a plan for another channel, older
than ``--plan-max-age`` or made after now (which would never grow old), is refused before
anything is swept.

Nothing here touches the database or HTTP: the sweep hands over its changes, the CLI the file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sync import __version__
from sync.files import write_atomically
from sync.settings import ConfigError, parse_instant, read_regular_file
from sync.timetext import instant_text
from sync.vocabulary import Change

__all__ = [
    "PLAN_FORMAT",
    "PLAN_MAX_AGE",
    "Approval",
    "ChannelPlan",
    "NotAPlan",
    "Pair",
    "Plan",
    "PlanFromTheFuture",
    "PlanMissesPair",
    "PlanRefused",
    "PlanTooOld",
    "digest_changes",
    "read_plan",
    "write_plan",
]

PLAN_FORMAT = "blocklist-sync-plan/1"
PLAN_MAX_AGE = 3600.0  # default --plan-max-age: an older plan (by the database's clock) is refused
# A plan is about 400 bytes per channel; a file past this is not one.
MAX_PLAN_FILE_BYTES = 4 * 1024 * 1024
Pair = tuple[str, str]  # (account SID, channel)


class PlanRefused(Exception):
    """A plan file that cannot approve this run, refused before anything is swept: each kind
    carries what was found, and the CLI says it in the words of the flags the operator gave."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path


class NotAPlan(PlanRefused):
    """The file is not a plan ``run --dry-run --plan-out`` wrote (or was edited into none)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "not a plan")


class PlanFromTheFuture(PlanRefused):
    """The plan says it was made after ``now`` (the database's clock): it would never grow old."""

    def __init__(self, path: str, made_at: dt.datetime, now: dt.datetime) -> None:
        super().__init__(path, "made after now")
        self.made_at, self.now = made_at, now


class PlanTooOld(PlanRefused):
    """The plan was made ``age`` seconds ago, more than the ``max_age`` allowed."""

    def __init__(self, path: str, age: float, max_age: float) -> None:
        super().__init__(path, "too old")
        self.age, self.max_age = age, max_age


class PlanMissesPair(PlanRefused):
    """The run sweeps ``pair``, for which the plan (made for ``planned``) has no entry."""

    def __init__(self, path: str, pair: Pair, planned: list[Pair]) -> None:
        super().__init__(path, "no entry for a pair swept")
        self.pair, self.planned = pair, planned


@dataclass(frozen=True, kw_only=True)
class ChannelPlan:
    """What a sweep of one account and channel would change: the counts, a digest of each set
    of numbers, and the guard's reason to hold it (None if it would not)."""

    account_sid: str
    channel: str
    added: int
    removed: int
    unconfirmed: int = 0
    held: str | None = None
    added_sha256: str
    removed_sha256: str
    run_id: int | None = None  # the dry run's sync_runs.id

    @property
    def pair(self) -> Pair:
        return (self.account_sid, self.channel)


def digest_changes(changes: Iterable[tuple[str, str]]) -> dict[str, tuple[int, str]]:
    """For ``changes`` ((``added`` | ``removed``, number), sorted by change, then number, as
    the store streams them): each change's count and the SHA-256 of its numbers, one per line.

    The same numbers give the same digest however the listing was paged; one number more,
    fewer or other changes it. Streams: memory stays flat for a million numbers."""
    hashes = {str(change): hashlib.sha256() for change in Change}
    counts = dict.fromkeys(hashes, 0)
    for change, mobile in changes:
        hashes[change].update(mobile.encode() + b"\n")
        counts[change] += 1
    return {change: (counts[change], hashes[change].hexdigest()) for change in hashes}


@dataclass(frozen=True, kw_only=True)
class Approval:
    """What an operator approved ``--force`` to apply for one account and channel: counts, and
    (from a plan) the digests of the very numbers. ``source`` says where it came from."""

    source: str
    added: int | None = None
    removed: int | None = None
    added_sha256: str | None = None
    removed_sha256: str | None = None
    # A plan's: the dry run that made it. A run after it that applied exactly these changes
    # applied the plan, and a plan applies once (:meth:`applied_by`).
    plan_run_id: int | None = None

    @property
    def needs_digests(self) -> bool:
        return self.added_sha256 is not None or self.removed_sha256 is not None

    def applied_by(self, runs: Iterable[tuple[int, Iterable[tuple[str, str]]]]) -> int | None:
        """The first of ``runs`` (a run id and the changes it applied, sorted as
        :func:`digest_changes` reads them) that applied exactly what this plan approves; None
        if none did, or if this approval is no plan.

        Applying a plan twice must not turn a healthy channel into a held one: the second
        sweep finds nothing left to change, which differs from what was approved."""
        if self.plan_run_id is None or not self.needs_digests:
            return None
        for run_id, changes in runs:
            digests = digest_changes(changes)
            found = ChannelPlan(
                account_sid="",
                channel="",
                added=digests["added"][0],
                removed=digests["removed"][0],
                added_sha256=digests["added"][1],
                removed_sha256=digests["removed"][1],
            )
            if self.differences(found) is None:
                return run_id
        return None

    def differences(self, found: ChannelPlan) -> str | None:
        """How the sweep's changes (``found``) differ from what was approved; None if they do
        not."""
        said: list[str] = []
        for change, verb in ((Change.ADDED, "add"), (Change.REMOVED, "remove")):
            approved_count = getattr(self, str(change))
            count = getattr(found, str(change))
            digest = getattr(self, f"{change}_sha256")
            if approved_count is not None and count != approved_count:
                said.append(f"it would {verb} {count} number(s), {approved_count} were approved")
            elif digest is not None and getattr(found, f"{change}_sha256") != digest:
                said.append(f"it would {verb} {count} number(s), but not the same ones as approved")
        if not said:
            return None
        return f"this sweep differs from what {self.source} approved: {'; '.join(said)}"


@dataclass(frozen=True)
class Plan:
    """A saved plan: when it was made and what it approves, per account and channel."""

    made_at: dt.datetime
    channels: Mapping[Pair, ChannelPlan]
    path: str

    def approvals(self, pairs: Iterable[Pair], now: dt.datetime, max_age: float) -> dict[Pair, Approval]:
        """What the plan approves for each of ``pairs`` (those this run sweeps); refused
        (:class:`PlanRefused`) if it was made after ``now``, is older than ``max_age`` seconds
        at ``now``, or does not cover every pair."""
        age = (now - self.made_at).total_seconds()
        if age < 0:
            raise PlanFromTheFuture(self.path, self.made_at, now)
        if age > max_age:
            raise PlanTooOld(self.path, age, max_age)
        missing = [pair for pair in pairs if pair not in self.channels]
        if missing:
            raise PlanMissesPair(self.path, missing[0], sorted(self.channels))
        return {pair: _approval(self.channels[pair], self) for pair in pairs}


def _approval(planned: ChannelPlan, plan: Plan) -> Approval:
    return Approval(
        source=f"the plan {plan.path} (made {instant_text(plan.made_at)})",
        added=planned.added,
        removed=planned.removed,
        added_sha256=planned.added_sha256,
        removed_sha256=planned.removed_sha256,
        plan_run_id=planned.run_id,
    )


def write_plan(path: str, plans: Iterable[ChannelPlan], made_at: dt.datetime) -> None:
    """Save ``plans`` to ``path`` as JSON, atomically. Raises ``OSError``."""
    document = {
        "format": PLAN_FORMAT,
        "made_at": made_at.astimezone(dt.UTC).isoformat(),
        "made_by": f"blocklist-sync {__version__}",
        "channels": [asdict(p) for p in sorted(plans, key=lambda p: p.pair)],
    }
    write_atomically(path, json.dumps(document, indent=2) + "\n")


def read_plan(path: str, setting: str) -> Plan:
    """The plan saved at ``path``; anything that is not one is refused (:class:`NotAPlan`; a
    file that cannot be read, a :class:`~sync.settings.ConfigError` naming ``setting``)."""
    data = read_regular_file(path, setting, MAX_PLAN_FILE_BYTES, "a plan that a dry run saved")
    unreadable = NotAPlan(path)
    try:
        document = json.loads(data)
        if document.get("format") != PLAN_FORMAT:
            raise unreadable
        made_at = parse_instant(document["made_at"], "made_at")
        channels = [ChannelPlan(**_plan_fields(item)) for item in document["channels"]]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, ConfigError, NotAPlan):
        raise unreadable from None
    return Plan(made_at=made_at, channels={p.pair: p for p in channels}, path=path)


_TYPES: dict[str, tuple[type, ...]] = {
    "account_sid": (str,),
    "channel": (str,),
    "added": (int,),
    "removed": (int,),
    "unconfirmed": (int,),
    "held": (str, type(None)),
    "added_sha256": (str,),
    "removed_sha256": (str,),
    "run_id": (int, type(None)),
}


def _plan_fields(item: object) -> dict[str, Any]:
    """One channel's entry, every field of the type it must have (a hand-edited plan that
    says ``"removed": "50"`` is no plan)."""
    if not isinstance(item, dict) or set(item) != set(_TYPES):
        raise ValueError("not a channel plan")
    for key, types in _TYPES.items():
        if not isinstance(item[key], types) or isinstance(item[key], bool):
            raise ValueError(f"{key} has the wrong type")
    return item
