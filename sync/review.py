"""What an operator approved a sweep (or an import) to apply: one decision, made once.

A sweep the safety guard would hold waits for a human. The command line says what that human
decided with several flags (``--dry-run``, ``--force``, ``--plan-out``, ``--plan``,
``--expect-removed``/``--expect-added``), and their combinations used to be decoded again
wherever a sweep needed to know (``force or bool(plan_out)``: is a plan's dry run forced?).
Now the CLI turns them into one :class:`Review` of one :class:`Kind`, and a sweep only asks it
questions: may it apply what the guard holds, does it check removals as ``--force`` would,
does it write a plan, what was approved for this channel.

The kinds (what each flag combination means is written once, in :data:`_ANSWERS`):

- ``NOTHING`` (no flag): the guard holds what it holds.
- ``BLIND`` (``--force`` alone): whatever this sweep finds, which may differ from what a dry
  run showed; it applies with a warning.
- ``PLAN`` (``--force --plan FILE``): exactly the changes a dry run saved (:mod:`sync.plan`).
- ``COUNTS`` (``--force --expect-removed N``/``--expect-added N``): for one account and
  channel, a sweep changing exactly that many numbers.
- ``DRY_RUN`` (``--dry-run``): apply nothing; say what the guard would hold.
- ``DRY_RUN_AS_FORCED`` (``--dry-run --force``): apply nothing; show what a plain ``--force``
  would apply.
- ``DRY_RUN_PLAN`` (``--dry-run --plan-out FILE``): apply nothing, save the plan that approves
  exactly these changes; a plan is made to be forced, so its removals are checked as
  ``--force`` would check them, and it says what the guard would hold all the same.

Nothing here touches the database or HTTP, and nothing here is worded for a command line:
an approval that cannot cover the run raises an error carrying what it found, and the CLI says
it in the flags the operator typed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from sync.plan import PLAN_MAX_AGE, Approval, Pair, Plan

__all__ = ["CountsCoverOnePair", "Kind", "Review"]


class Kind(Enum):
    NOTHING = "approve nothing"
    BLIND = "approve blind"
    PLAN = "approve a plan"
    COUNTS = "approve counts"
    DRY_RUN = "dry run"
    DRY_RUN_AS_FORCED = "dry run as forced"
    DRY_RUN_PLAN = "dry run writing a plan"


@dataclass(frozen=True)
class _Answers:
    """What one kind of review answers to each question a sweep asks."""

    dry_run: bool  # applies nothing
    forced: bool  # applies (or, in a dry run, shows) what the guard would hold
    checks_as_forced: bool  # where no control can prove the filter, its plain answers count
    says_held: bool  # a dry run says what the guard would hold


_ANSWERS: Mapping[Kind, _Answers] = {
    Kind.NOTHING: _Answers(dry_run=False, forced=False, checks_as_forced=False, says_held=False),
    Kind.BLIND: _Answers(dry_run=False, forced=True, checks_as_forced=True, says_held=False),
    Kind.PLAN: _Answers(dry_run=False, forced=True, checks_as_forced=True, says_held=False),
    Kind.COUNTS: _Answers(dry_run=False, forced=True, checks_as_forced=True, says_held=False),
    Kind.DRY_RUN: _Answers(dry_run=True, forced=False, checks_as_forced=False, says_held=True),
    Kind.DRY_RUN_AS_FORCED: _Answers(dry_run=True, forced=True, checks_as_forced=True, says_held=False),
    Kind.DRY_RUN_PLAN: _Answers(dry_run=True, forced=False, checks_as_forced=True, says_held=True),
}


class CountsCoverOnePair(Exception):
    """Counts were approved (``--expect-removed``/``--expect-added``) for a run that sweeps
    other than one account and channel: they cannot say which one they are for."""

    def __init__(self, approval: Approval, swept: Sequence[Pair]) -> None:
        super().__init__(f"{approval.source} approves one account and channel; the run sweeps {len(swept)}")
        self.approval = approval
        self.swept = list(swept)


@dataclass(frozen=True)
class Review:
    """What the operator approved: one :class:`Kind`, and what it needs (the plan read, the
    counts, where a dry run's plan goes). Made by the CLI from its flags, before anything is
    touched; :meth:`for_run` then binds a plan or counts to the pairs the run sweeps."""

    kind: Kind = Kind.NOTHING
    plan: Plan | None = None  # PLAN: the plan file, read
    plan_max_age: float = PLAN_MAX_AGE  # PLAN: an older plan is refused
    counts: Approval | None = None  # COUNTS: the counts approved, for the one pair swept
    plan_out: str | None = None  # DRY_RUN_PLAN: where the plan is saved
    # PLAN and COUNTS, once bound by for_run: what each pair may apply.
    approvals: Mapping[Pair, Approval] | None = None

    @classmethod
    def blind(cls) -> Review:
        return cls(Kind.BLIND)

    @classmethod
    def of_plan(cls, plan: Plan, max_age: float = PLAN_MAX_AGE) -> Review:
        return cls(Kind.PLAN, plan=plan, plan_max_age=max_age)

    @classmethod
    def of_counts(cls, counts: Approval) -> Review:
        return cls(Kind.COUNTS, counts=counts)

    @classmethod
    def dry(cls, *, forced: bool = False, plan_out: str | None = None) -> Review:
        """A dry run: writing a plan to ``plan_out`` (forced or not: a plan is made to be
        forced), or showing what a plain ``--force`` would apply, or what the guard holds."""
        if plan_out is not None:
            return cls(Kind.DRY_RUN_PLAN, plan_out=plan_out)
        return cls(Kind.DRY_RUN_AS_FORCED if forced else Kind.DRY_RUN)

    def for_run(self, swept: Sequence[Pair], now: dt.datetime) -> Review:
        """This review bound to the (account, channel) pairs a run sweeps, at ``now`` (the
        database's clock): what each may apply. Refused when the approval cannot cover the
        run: a plan that is stale, from the future or for other channels
        (:class:`~sync.plan.PlanRefused`), counts for other than one pair
        (:class:`CountsCoverOnePair`)."""
        if self.kind is Kind.PLAN and self.plan is not None:
            return replace(self, approvals=self.plan.approvals(swept, now, self.plan_max_age))
        if self.kind is Kind.COUNTS and self.counts is not None:
            if len(swept) != 1:
                raise CountsCoverOnePair(self.counts, swept)
            return replace(self, approvals={swept[0]: self.counts})
        return self

    # -- the questions a sweep asks -----------------------------------------------------------

    @property
    def dry_run(self) -> bool:
        """Whether nothing is applied (the run rows say ``dry_run``)."""
        return _ANSWERS[self.kind].dry_run

    @property
    def applies_held(self) -> bool:
        """Whether what the guard would hold is applied (or, in a dry run, shown as applied)
        rather than held: any ``--force``."""
        return _ANSWERS[self.kind].forced

    @property
    def confirms_held(self) -> bool:
        """Whether removals are confirmed even where the listing is held before they are: a
        dry run shows them, a forced sweep applies them; only an unreviewed sweep saves the
        requests."""
        return self.kind is not Kind.NOTHING

    @property
    def checks_removals_as_forced(self) -> bool:
        """Whether, where no control can prove the ``mobile`` filter's answers, its plain
        answers count (:func:`sync.proof.confirm_removals`): the operator's review is the only
        proof there can be. Any ``--force``, and a plan's dry run, which is made to be forced."""
        return _ANSWERS[self.kind].checks_as_forced

    @property
    def says_held(self) -> bool:
        """Whether a dry run says what the guard would hold (a forced one shows what ``--force``
        would apply instead; a plan's says it all the same)."""
        return _ANSWERS[self.kind].says_held

    @property
    def writes_plan(self) -> bool:
        return self.kind is Kind.DRY_RUN_PLAN

    @property
    def approves_blind(self) -> bool:
        """A plain ``--force``: it applies whatever the sweep finds, which the CLI warns of."""
        return self.kind is Kind.BLIND

    def approval(self, pair: Pair) -> Approval | None:
        """What ``--force --plan`` or the counts approved for ``pair``; None for any other
        review, or for a pair the approval does not name."""
        if self.kind not in (Kind.PLAN, Kind.COUNTS):
            return None
        return (self.approvals or {}).get(pair)
