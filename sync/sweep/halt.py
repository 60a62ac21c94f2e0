"""What stops a sweep before it applies anything: a stop the process was asked for (SIGTERM,
SIGINT), or the sweep's own deadline; and how a sweep that stopped or raised says why."""

from __future__ import annotations

import threading
import time

from sync.kaleyra import Cancelled, KaleyraError
from sync.redaction import redact
from sync.stopping import stop_name
from sync.vendor_text import vendor_text
from sync.vocabulary import Outcome

__all__ = [
    "DeadlinePassed",
    "Halt",
    "PlanApplied",
    "RunDeadlinePassed",
    "Stopped",
    "finished_despite_stop",
    "why_abandoned",
]


class Stopped(Exception):
    """A stop was requested (SIGTERM, SIGINT), or the sweep's deadline passed, before the sweep
    could apply anything."""


class DeadlinePassed(Stopped):
    """The sweep ran longer than its timeout: a list that long, or a server that slow."""


class PlanApplied(Exception):
    """A channel a plan approves, skipped because a sweep since its dry run applied that plan
    exactly. Never raised: a result's ``error_type``, for the CLI's advice on what to do next."""


class RunDeadlinePassed(Stopped):
    """The run's deadline (its run timeout) passed before this channel's sweep could start.
    Never raised: a result's ``error_type``, for the CLI's advice, which names the setting."""


class Halt:
    """What stops a sweep early: the process's stop event, or the sweep's own deadline. The
    client polls :meth:`is_set` between reads, so either ends a sweep within a second."""

    def __init__(self, stop: threading.Event, seconds: float) -> None:
        self.stop = stop
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def is_set(self) -> bool:
        return self.stop.is_set() or self.deadline_passed()

    def deadline_passed(self) -> bool:
        return time.monotonic() > self._deadline

    def check(self, during: str) -> None:
        if self.stop.is_set():
            raise Stopped(f"stopped by a signal while {during}; nothing was applied")
        if time.monotonic() > self._deadline:
            raise DeadlinePassed(
                f"the sweep passed its deadline of {self._seconds:.0f}s while {during}; nothing was applied"
            )


def why_abandoned(exc: BaseException, halt: Halt) -> str:
    """Why a sweep that raised ``exc`` applied nothing: a readable, secret-free reason for the
    run row (which BI roles read) and the log."""
    if isinstance(exc, Cancelled):
        try:
            halt.check("sweeping")
        except Stopped as stopped:
            return str(stopped)
        return "stopped while sweeping; nothing was applied"
    if isinstance(exc, KaleyraError):
        return redact(f"{exc}; nothing was applied")
    if isinstance(exc, Stopped):
        return redact(str(exc))
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "interrupted before finishing; nothing was applied"
    # An exception's text can quote what it failed on (a row, a driver's message): vendor
    # text, so redacted before it is cut.
    first_line = vendor_text(str(exc).splitlines()[0], 300) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}; nothing was applied"


def finished_despite_stop(outcome: Outcome, message: str | None, stop: threading.Event) -> str:
    """The message of a sweep that ended ``outcome`` (saying ``message``) although a stop
    arrived after the last check (while applying, committing or just after): the sweep
    finished, and its run row says how."""
    name = stop_name(stop)
    if outcome is Outcome.SUCCEEDED:
        note = f"{name} arrived while the changes were being applied; they were committed"
    else:
        note = f"{name} arrived as the sweep finished; it finished"
    return f"{message}; {note}" if message else note
