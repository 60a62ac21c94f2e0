"""What a vendor answer may prove: every check of a listing or an answer, in one place.

An answer proves only what it shows. A listing that pages over a list changing underneath, a
``mobile`` filter that answers from a stale cache or cuts its answers short, a server that
ignores the channel asked for, an outage that answers an empty list, an export that is one
page or an error body: each looks like data, and would be recorded as history if believed.
What an answer cannot prove is kept as it was, not guessed. :mod:`sync.sweep` and
:mod:`sync.backfill` call these checks in their order and act on what they say; nothing here
touches the database (a comparison is reached through :class:`Candidates`) and nothing here
decides policy (how large a removal a human must see is :mod:`sync.guard`'s).

The checks, by what they judge; the next one goes beside those of its kind:

1. What the rows say, counted as they stream past (:class:`ListingTally`), the same for a
   sweep and an import.
2. A whole listing, before any request is spent confirming it (:func:`listing_hold`): empty
   over a channel with numbers (:func:`empty_listing_hold`), or rows that say they are another
   channel's (:func:`channel_type_hold`, with what the account's other channels carry now:
   :func:`codes_elsewhere`).
3. A listing's completeness once its removals were checked (:func:`listing_completeness`):
   rows repeated or moved while it was paged, numbers it skipped.
4. Each removal, confirmed by the ``mobile`` filter (:func:`confirm_removals`): an answer
   proves an absence only when it is shown complete by the controls asked beside the
   candidates (:class:`_Controls`).
5. An export in the API's envelope (:func:`envelope_refusal`): an error body or a single page
   is no channel's listing.
"""

from sync.proof.listing import (
    OTHER_CODES,
    Halt,
    ListingTally,
    channel_type_hold,
    codes_elsewhere,
    empty_listing_hold,
    envelope_refusal,
    is_code,
    listing_completeness,
    listing_hold,
    log_what_was_not_proven,
)
from sync.proof.removals import CONTROLS_PER_CHECK, Candidates, confirm_removals

__all__ = [
    "CONTROLS_PER_CHECK",
    "OTHER_CODES",
    "Candidates",
    "Halt",
    "ListingTally",
    "channel_type_hold",
    "codes_elsewhere",
    "confirm_removals",
    "empty_listing_hold",
    "envelope_refusal",
    "is_code",
    "listing_completeness",
    "listing_hold",
    "log_what_was_not_proven",
]
