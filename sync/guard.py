"""The safety guard: when a sweep looks too destructive to apply without a human.

Both rules and their limits live here, so changing what is held is one file. A held sweep is
recorded ``held`` with nothing applied; the operator reviews it with ``--dry-run`` and applies
it with ``--force``.

1. An empty listing over a non-empty channel: an outage, a wrong account or a vendor bug looks
   exactly like an emptied blocklist, so it is held before any request is spent confirming it.
2. A sweep that would remove more than ``max_removal_fraction`` of a channel holding more than
   ``min_entries`` numbers (after every removal was confirmed one by one).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GuardLimits", "empty_listing_hold", "removal_hold"]


@dataclass(frozen=True)
class GuardLimits:
    max_removal_fraction: float = 0.20  # hold if it would remove more than this share ...
    min_entries: int = 100  # ... of a channel that holds more than this many entries


def empty_listing_hold(listed: int, held: int) -> str | None:
    """Why an empty listing is held, or None."""
    if listed == 0 and held > 0:
        return (
            f"the listing returned no numbers while {held} are held; an outage looks the "
            "same as an emptied blocklist"
        )
    return None


def removal_hold(held: int, removed: int, limits: GuardLimits) -> str | None:
    """Why removing ``removed`` of ``held`` entries is held, or None."""
    if held > limits.min_entries and removed > limits.max_removal_fraction * held:
        return (
            f"it would remove {removed} of {held} entries ({removed / held:.0%}, over the "
            f"{limits.max_removal_fraction:.0%} limit)"
        )
    return None
