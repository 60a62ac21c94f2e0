"""What a vendor answer may prove: the checks of a listing or an answer, in one place.

An answer proves only what it shows, and what it cannot prove is kept as it was, not guessed.
A sweep's listing, an export read from a file and the ``mobile`` filter's answers are all
judged here; :mod:`sync.sweep` and :mod:`sync.backfill` only call these checks in their order.

The tally (:class:`ListingTally`): what a listing's rows said, counted as they stream past,
the same way for a sweep and an import.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sync.guard import is_code

__all__ = ["OTHER_CODES", "ListingTally"]

# A listing carries one channel_type code, or a few; past this many distinct ones the rest are
# counted under one name that no channel carries, so a hostile listing cannot grow the count.
MAX_CODES = 20
OTHER_CODES = "(other codes)"


@dataclass
class ListingTally:
    """A listing's rows, and how many carry each ``channel_type`` code (at most
    :data:`MAX_CODES` by name, the rest as :data:`OTHER_CODES`). A row whose ``channel_type``
    is no code at all (:func:`~sync.guard.is_code`) is counted as a row, not as a code."""

    rows: int = 0
    codes: Counter[str] = field(default_factory=Counter)

    def count(self, channel_type: str | None) -> None:
        """Count one row of the listing."""
        self.rows += 1
        if is_code(channel_type):
            known = channel_type in self.codes or len(self.codes) < MAX_CODES
            self.codes[channel_type if known else OTHER_CODES] += 1

    def learned(self) -> list[str]:
        """The codes to learn for the channel once the listing is applied: every one counted by
        name (:data:`OTHER_CODES` is a count, not a code)."""
        return [code for code in self.codes if code != OTHER_CODES]
