"""How long each of a sweep's database statements took, by name: the profile that the sweep's
JSON log line carries (``db_<name>_seconds``) and the benchmark prints (``tests/bench/``), so
that a change to the SQL says what it bought.

One hook, not timers sprinkled through the store: the staging's load, the comparison, each
:class:`~sync.store.apply.Step` of an apply (:func:`~sync.store.apply.run_steps`) and every
commit of :meth:`~sync.store.session.LockedChannel.transaction` are timed here under their
names. A name timed more than once in a sweep (a commit, a removal check's batch) adds up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Timings"]


class Timings:
    """Seconds by statement name, for one sweep (or one import)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time the block under ``name``, added to what ``name`` took before."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def fields(self) -> dict[str, float]:
        """The timings as a log line's fields: ``db_<name>`` (the sweep adds ``_seconds``),
        in milliseconds' precision."""
        return {f"db_{name.replace(' ', '_')}": round(seconds, 3) for name, seconds in self.seconds.items()}
