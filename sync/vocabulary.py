"""The domain's words, each written once: channels, run statuses, triggers, changes, outcomes
and their exit codes, regions.

The schema's CHECK constraints, click's choices, settings validation, defaults and the docs all
derive from these enums, so adding a channel is one line here (plus a migration that widens the
constraint, which a test proves matches). They are ``StrEnum``s: a member *is* its string, so it
is stored, compared and printed as the plain word analysts see in the tables.

The simulator keeps its own list of channels on purpose: it is an independent statement of what
the vendor serves, not of what we sync.
"""

from __future__ import annotations

import enum

__all__ = [
    "REGIONS",
    "Change",
    "Channel",
    "ExitCode",
    "Outcome",
    "RunStatus",
    "Trigger",
    "in_words",
]


class Channel(enum.StrEnum):
    SMS = "sms"
    WHATSAPP = "whatsapp"
    VOICE = "voice"


class RunStatus(enum.StrEnum):
    """``sync_runs.status``: how one sweep of one account and channel ended (or that it has not)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"  # changes applied
    FAILED = "failed"  # nothing applied, see error
    HELD = "held"  # the safety guard held it, nothing applied
    DRY_RUN = "dry_run"  # a review, nothing applied; never counts as a channel's last sweep
    CANCELLED = "cancelled"  # stopped by an operator or a signal, nothing applied


class Trigger(enum.StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    BACKFILL = "backfill"


class Change(enum.StrEnum):
    ADDED = "added"
    REMOVED = "removed"


class ExitCode(enum.IntEnum):
    """The process's exit codes (docs/operators.md#exit-codes)."""

    OK = 0
    FAILED = 1
    USAGE = 2  # a usage or configuration error, including a schema behind head
    HELD = 3
    LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; try later
    SIGINT = 130  # 128 + the signal's number: a stop, not a failure
    SIGTERM = 143


class Outcome(enum.Enum):
    """How a sweep ended, with the exit code it contributes (worst first in :data:`SEVERITY`).

    An outcome that wrote a run row is labelled with that row's :class:`RunStatus`; ``skipped``
    and ``locked`` wrote none."""

    SUCCEEDED = (RunStatus.SUCCEEDED, ExitCode.OK)
    SKIPPED = ("skipped", ExitCode.OK)  # swept moments ago by another process, or its account failed
    DRY_RUN = (RunStatus.DRY_RUN, ExitCode.OK)
    LOCKED = ("locked", ExitCode.LOCKED)
    HELD = (RunStatus.HELD, ExitCode.HELD)
    CANCELLED = (RunStatus.CANCELLED, ExitCode.SIGINT)  # the CLI exits 128 + the signal's number
    FAILED = (RunStatus.FAILED, ExitCode.FAILED)

    def __init__(self, label: str, exit_code: ExitCode) -> None:
        self.label = label
        self.exit_code = exit_code

    @property
    def run_status(self) -> RunStatus:
        """The status its run row records; only outcomes that wrote one have it."""
        return RunStatus(self.label)


# Worst first: a failure outranks a stop, a hold, and "someone else is on it".
SEVERITY = (
    Outcome.FAILED,
    Outcome.CANCELLED,
    Outcome.HELD,
    Outcome.LOCKED,
    Outcome.DRY_RUN,
    Outcome.SKIPPED,
    Outcome.SUCCEEDED,
)

# The vendor's regional hosts (each key's "API Domain" in the console). The API version lives
# in the base URL, never in code.
REGIONS: dict[str, str] = {
    "in": "https://api.in.kaleyra.io/v1",
    "sg": "https://api.kaleyra.io/v1",
    "eu": "https://api.eu.kaleyra.io/v1",
    "na": "https://api.na.kaleyra.ai/v1",
}


def in_words(words: type[enum.StrEnum], last: str = "or") -> str:
    """An enum's values as a sentence lists them, in its order: ``sms, whatsapp or voice``.
    Help texts and column comments that name every channel (or trigger) say it so, and so
    stay true when a member is added."""
    values = [str(w) for w in words]
    return f"{', '.join(values[:-1])} {last} {values[-1]}" if len(values) > 1 else "".join(values)
