"""What a listing as a whole proves: its rows' codes, a listing held before any request is spent
confirming it, its completeness, and an export in the API's envelope (sections 1, 2, 3 and 5
of :mod:`sync.proof`)."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeGuard

from sync.kaleyra import MAX_LIMIT, SUCCESS_CODE, Cancelled, KaleyraClient, KaleyraError
from sync.vendor_text import vendor_text
from sync.vocabulary import Channel

# Named for the module this code first lived in (sync/job.py): operators' log queries and
# alerts match on the logger name, so it stays.
log = logging.getLogger("sync.job")

# A listing carries one channel_type code, or a few; past this many distinct ones the rest are
# counted under one name that no channel carries, so a hostile listing cannot grow the count.
MAX_CODES = 20
OTHER_CODES = "(other codes)"
# What a channel_type code looks like: the sample's "3", or any short token. Anything else a
# row carries there is garbage, stored (cleaned) but never read as a channel's code.
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,16}")


class Halt(Protocol):
    """What stops a check early (the sweep's stop and deadline): polled by the client, and
    checked between requests."""

    def is_set(self) -> bool: ...

    def check(self, during: str) -> None: ...


# -- 1. What the rows say ----------------------------------------------------------------


def is_code(channel_type: str | None) -> TypeGuard[str]:
    """Whether a row's ``channel_type`` can be a channel's code (see :func:`channel_type_hold`)."""
    return channel_type is not None and _CODE.fullmatch(channel_type) is not None


@dataclass
class ListingTally:
    """A listing's rows, and how many carry each ``channel_type`` code (at most
    :data:`MAX_CODES` by name, the rest as :data:`OTHER_CODES`). A row whose ``channel_type``
    is no code at all (:func:`is_code`) is counted as a row, not as a code."""

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


# -- 2. A whole listing --------------------------------------------------------------------


def listing_hold(
    channel: str,
    listed: int,
    held: int,
    codes: Mapping[str, int],
    learned: Mapping[str, set[str]],
    elsewhere: Callable[[], Mapping[str, set[str]]] | None = None,
) -> str | None:
    """Why a sweep's whole listing (``listed`` rows, carrying ``codes``) is held before any
    request is spent confirming its removals, or None: it is empty over ``held`` numbers, or
    its rows say they are another channel's. ``elsewhere`` is asked only when the listing
    carries a code the channel has not carried before (:func:`codes_elsewhere`)."""
    empty = empty_listing_hold(listed, held)
    if empty is not None:
        return empty
    if set(codes) <= learned.get(channel, set()):
        return None  # codes the channel has carried before need no more evidence
    return channel_type_hold(channel, codes, learned, elsewhere() if elsewhere else None)


def empty_listing_hold(listed: int, held: int) -> str | None:
    """Why an empty listing is held, or None."""
    if listed == 0 and held > 0:
        return (
            f"the listing returned no numbers while {held} are held; an outage looks the "
            "same as an emptied blocklist"
        )
    return None


def channel_type_hold(
    channel: str,
    listed: Mapping[str, int],
    learned: Mapping[str, set[str]],
    elsewhere: Mapping[str, set[str]] | None = None,
) -> str | None:
    """Why a listing whose rows carry the ``channel_type`` codes ``listed`` (code -> rows) is
    held, or None: a code another channel of the account carries, or a mix of codes this
    channel has not shown before (its first sweep included).

    A server that ignores ``channel`` answers every channel with the same rows, and would fill
    each with the others' numbers. The codes are not documented (shared/api/NOTES.md), so
    nothing maps them: each channel's are learned from the listings applied
    (``blocklist_channel_types``), and ``--force`` accepts new ones. One code per channel,
    whatever it is, is never held; a row without a code is accepted, and so is a row whose
    ``channel_type`` is no code at all (control characters, markup, a JSON object, 17
    characters or more: :func:`is_code`): one odd row is not another channel's listing, and
    must not block its own. ``learned``: the codes each channel of the account has carried;
    ``elsewhere``: those each other channel's listing carries now. A code this channel has
    carried itself is never another's (two channels may share one, once accepted)."""
    own = learned.get(channel, set())
    others: dict[str, set[str]] = {}
    for source in (learned, elsewhere or {}):
        for other, codes in source.items():
            if other != channel:
                others.setdefault(other, set()).update(codes)
    foreign = {
        code: sorted(other for other, codes in others.items() if code in codes)
        for code in listed
        if code not in own
    }
    foreign = {code: channels for code, channels in foreign.items() if channels}
    if foreign:
        said = "; ".join(
            f"{listed[code]} row(s) carry channel_type {code!r}, which the account's "
            f"{' and '.join(channels)} {'channels carry' if len(channels) > 1 else 'channel carries'}"
            for code, channels in sorted(foreign.items())
        )
        return f"{said}: is the server ignoring the channel asked for?"
    if len(listed) > 1 and not set(listed) <= own:
        counts = ", ".join(f"{code!r} ({rows})" for code, rows in sorted(listed.items()))
        shown = ", ".join(repr(code) for code in sorted(own)) or "none yet"
        return (
            f"the listing mixes channel_type codes {counts}, which this channel has not shown "
            f"before (it has carried: {shown}); is the server ignoring the channel asked for?"
        )
    return None


def codes_elsewhere(client: KaleyraClient, channel: str, halt: Halt) -> dict[str, set[str]]:
    """The codes on the first page of each other channel's listing now, for
    :func:`channel_type_hold`: a server ignoring ``channel`` is caught even before any other
    channel was swept. One request per other channel, asked only when a code is new."""
    return {str(other): _codes_on_first_page(client, other, halt) for other in Channel if other != channel}


def _codes_on_first_page(client: KaleyraClient, channel: str, halt: Halt) -> set[str]:
    """The codes on the first page of ``channel``'s listing; none when it cannot be read (a
    channel this account may not use, a failing page): then there is nothing to compare."""
    try:
        # Only the first page: the generator is dropped (and closed) at once, asking no more.
        page = next(client.pages(channel, cancel=halt), None)
    except Cancelled:
        raise
    except KaleyraError as exc:
        log.info("could not read the %s listing to compare channel_type codes: %s", channel, exc.reason)
        return set()
    return {e.channel_type for e in page.entries if is_code(e.channel_type)} if page else set()


# -- 3. A listing's completeness ------------------------------------------------------------


def listing_completeness(
    *, repeated: int, listed_twice: int, respelled: int, rescued: int, unconfirmed: int
) -> tuple[bool, int]:
    """Whether a listing was shown complete once its removals were checked, and how many
    numbers it showed twice because they moved while it was paged. A number listed twice,
    beyond the spellings the server varies, moved: another may have slid under the offset
    unseen. So may one the listing skipped (``rescued``), or a repeated page's rows; and an
    unconfirmed removal is a number it could not prove absent."""
    moved = max(listed_twice - respelled, 0)
    return not (repeated or moved or rescued or unconfirmed), moved


def log_what_was_not_proven(
    *, rescued: int, unconfirmed: int, repeated: int, moved: int, context: dict[str, object]
) -> None:
    """Say what the listing could not prove: an operator reads why a count looks off."""
    if moved:
        log.warning(
            "the listing showed %d number(s) twice: its order changed while it was paged, so "
            "it may have skipped others; it proves no number absent, and the next additions' "
            "windows start at the last complete listing",
            moved,
            extra=context,
        )
    if rescued or repeated:
        log.warning(
            "the listing skipped rows while it was paged (%d held number(s) it did not show are "
            "still blocklisted; %d repeated row(s) dropped); it proves no number absent, so the "
            "next additions' windows start at the last complete listing",
            rescued,
            repeated,
            extra=context,
        )
    if unconfirmed:
        log.warning(
            "%d held number(s) the listing did not show could not be proven removed (the "
            "mobile filter's answers were cut short, missed a control or could not be read); "
            "they are kept as blocklisted and checked again next sweep",
            unconfirmed,
            extra=context,
        )


# -- 5. An export in the API's envelope -------------------------------------------------------


def envelope_refusal(*, code: object, error: bool, data: bool, rows: int) -> str | None:
    """Why an export in the API's envelope (``{"code": …, "data": [...], "error": {}}``), read
    whole, is no channel's listing, or None: an error body (a code other than the success
    code, an ``error`` that is not empty) whatever rows it carries, no ``data`` array, or one
    page of Get Blocklist (at most :data:`~sync.kaleyra.MAX_LIMIT` rows), which may be the
    first of many. ``rows``: the items of its ``data`` array."""
    said = f" (code {vendor_text(str(code), 40)!r})" if code is not None else ""
    if (code is not None and code != SUCCESS_CODE) or error:
        why = "its 'error' is not empty" if error else "its code is not the success code"
        return (
            f"an error answer of the API{said}, not a listing: {why}; whatever rows "
            "it carries show no whole listing"
        )
    if not data:
        return f"JSON without a 'data' array of rows{said}; it is not a listing"
    if rows <= MAX_LIMIT:
        return (
            f"{rows} row(s) in the API's envelope: one page of Get Blocklist "
            f"(at most {MAX_LIMIT} rows), which may be the first of many, not a channel's listing; an "
            "export is every row of one listing: a CSV with a mobile column, one number per line, a "
            "JSON array of rows, or the envelope holding every page's rows"
        )
    return None
