"""The safety guard: when a sweep looks too destructive to apply without a human.

A held sweep is recorded ``held`` with nothing applied; the operator reviews it with ``--dry-run``
and applies it with ``--force``. Two kinds of hold:

1. A listing that proves nothing about the channel: empty over a channel with numbers, or rows
   that say they belong to another channel. What a vendor answer may prove is judged in
   :mod:`sync.proof` (:func:`~sync.proof.listing_hold`), before any request is spent
   confirming removals.
2. A sweep that would remove more than ``max_removal_fraction`` of a channel holding more than
   ``min_entries`` numbers (after every removal was confirmed one by one): a policy, not a
   proof, so its rule and its limits live here, and changing how much is held is this file.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GuardLimits", "removal_hold"]


@dataclass(frozen=True)
class GuardLimits:
    max_removal_fraction: float = 0.20  # hold if it would remove more than this share ...
    min_entries: int = 100  # ... of a channel that holds more than this many entries


def removal_hold(held: int, removed: int, limits: GuardLimits) -> str | None:
    """Why removing ``removed`` of ``held`` entries is held, or None."""
    if held > limits.min_entries and removed > limits.max_removal_fraction * held:
        return (
            f"it would remove {removed} of {held} entries ({removed / held:.0%}, over the "
            f"{limits.max_removal_fraction:.0%} limit)"
        )
    return None
