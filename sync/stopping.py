"""Stopping on a signal: SIGTERM or SIGINT sets one :class:`StopRequest`, which every sweep polls.

A stop is a request, never an interruption: a sweep sees it at its next page or check and
stops with nothing applied (``cancelled``); a sweep already applying its changes finishes,
because the apply is one transaction that either commits or leaves nothing. ``run`` and
``schedule`` both install their handlers here (:func:`stop_on_signals`), so the two commands
cannot come to mean different things by a stop.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

__all__ = ["StopRequest", "stop_name", "stop_on_signals", "stop_reason"]

# Each command's own logger name, as before the handlers were shared: operators' log queries
# and alerts match on them ("sync.job" is named for the module the batch first lived in).
_BATCH_LOG = logging.getLogger("sync.job")
_SERVICE_LOG = logging.getLogger("sync.scheduler")


class StopRequest(threading.Event):
    """A stop request that remembers the signal that asked for it: an interrupted run is
    recorded as ``cancelled`` and exits 128 + that signal's number, the shell's convention."""

    signum: int | None = None

    def request(self, signum: int) -> None:
        self.signum = signum
        self.set()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a stop request"


def stop_name(stop: threading.Event) -> str:
    """What asked ``stop`` to stop, in words: ``SIGTERM``, or "a stop request"."""
    return stop.name if isinstance(stop, StopRequest) else "a stop request"


def stop_reason(stop: threading.Event) -> str:
    """Why a sweep that ``stop`` cancelled applied nothing, for its run row and result line."""
    return f"cancelled by {stop_name(stop)}; nothing was applied"


def stop_on_signals(stop: StopRequest, *, service: Callable[[], None] | None = None) -> None:
    """SIGTERM and SIGINT ask every sweep to stop at its next page or check, applying nothing.

    A sweep already applying its changes is not stopped: it finishes, is recorded ``succeeded``
    and says the stop came after the commit; channels not yet started are ``cancelled``. The
    line logged here cannot know which case it is, so it promises neither.

    For a batch (``run``, no ``service``) a stop cancels work someone asked for: it is a
    warning, and a second SIGINT interrupts at once (the sweep runs on the main thread; its run
    row is still marked cancelled). For a long-running ``service`` (``schedule``) stopping is how
    it ends: the first signal is logged as information and calls ``service`` (the scheduler's
    own shutdown) once; the sweeps run on worker threads that the main thread waits for, so
    later signals change nothing. Handlers only flag and return: waiting inside a signal handler
    could deadlock on a lock the interrupted main thread holds.
    """

    def handler(signum: int, _frame: object) -> None:
        if service is not None and stop.is_set():
            return
        (_SERVICE_LOG.info if service is not None else _BATCH_LOG.warning)(
            "%s received: stopping at the next page or check; each sweep's result line says what it applied",
            signal.Signals(signum).name,
        )
        if not stop.is_set():
            stop.request(signum)
            if service is not None:
                service()
        if service is None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
