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

from __future__ import annotations

import bisect
import itertools
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeGuard

from sync.kaleyra import MAX_LIMIT, SUCCESS_CODE, Cancelled, KaleyraClient, KaleyraError, ProtocolError
from sync.vendor_text import vendor_text
from sync.vocabulary import Channel

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

# Each removal check asks about this many numbers the listing just showed (controls), beside
# the removal candidates (see _Controls: where each is placed, and why).
CONTROLS_PER_CHECK = 5
_CONTROL_SAMPLE = MAX_LIMIT  # one full request of controls measures what the filter honours
_NEWEST_CONTROLS = 10  # the newest listed numbers, asked in turn: a stale cache lacks them
# A control and a candidate: the fewest rows a filter must be known to hold for its answers to
# prove an absence (asked twice, the control first and then last).
_MIN_HONOURED = 2


class Halt(Protocol):
    """What stops a check early (the sweep's stop and deadline): polled by the client, and
    checked between requests."""

    def is_set(self) -> bool: ...

    def check(self, during: str) -> None: ...


class Candidates(Protocol):
    """A listing compared with the stored channel, as the removal checks need it: the
    candidates to prove, numbers the listing showed (controls), and the verdicts."""

    def removal_candidates(self, batch: int) -> Iterator[list[str]]: ...

    def listed_sample(self, size: int) -> list[str]: ...

    def newest_listed(self, size: int) -> list[str]: ...

    def keep(self, present: Iterable[str]) -> None: ...

    def unconfirm(self, unproven: Iterable[str]) -> None: ...


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


# -- 4. Each removal ------------------------------------------------------------------------


def confirm_removals(
    client: KaleyraClient, comparison: Candidates, channel: str, halt: Halt, *, forced: bool = False
) -> None:
    """Ask Kaleyra about every removal candidate directly; record a removal only where the
    answer is shown complete.

    An answer proves only what it shows. A filter may answer ``[]`` to everything, or cut its
    answers at a few rows whatever was asked, and either would make present numbers look
    absent. So:

    - First, one request of up to 100 numbers this listing just showed (controls) measures how
      many rows the filter is known to honour in one answer. Every later request asks about no
      more numbers than that, so a filter that caps its answers cannot cut one short.
    - Every request carries controls where a cut or a stale cache would show (:class:`_Controls`).
      An answer that omits a control proves nothing about any candidate, not even that those it
      shows are listed now (a control can also be unblocked honestly meanwhile: the same, it
      proves nothing).
    - A filter known to honour fewer than two rows, an answer that cannot be read (numbers not
      asked about, rows that are no number), or a listing with no number to use as a control,
      proves nothing either.

    Candidates a complete answer showed are kept (rescued: the listing skipped them); those it
    left out are removed; the rest are kept and counted as unconfirmed, to be checked
    again by the next sweep. None of this fails the channel.

    One exception, for an operator who reviewed the sweep (``--dry-run``) and applies it with
    ``--force``: where the listing offers no control, or the filter is known to hold fewer than
    two rows (an emptied or shrunken channel), that review is the only proof there can be, and
    the filter's plain answers decide (:func:`_confirm_as_forced`).
    """
    candidates = comparison.removal_candidates(MAX_LIMIT)
    first = next(candidates, None)
    if first is None:
        return  # nothing to confirm: not one request spent
    newest = comparison.newest_listed(_NEWEST_CONTROLS)
    sample = list(dict.fromkeys([*newest, *comparison.listed_sample(_CONTROL_SAMPLE)]))[:_CONTROL_SAMPLE]
    honoured = _honoured_rows(client, channel, sample, halt)
    if honoured < _MIN_HONOURED and forced:
        found = _confirm_as_forced(client, comparison, channel, halt, itertools.chain([first], candidates))
        if not found:
            return
        # An answer named numbers: they are blocklisted, so they can serve as controls, and
        # the rest is proven as always (an answer may have been cut short).
        sample = newest = found[:MAX_LIMIT]
        candidates = comparison.removal_candidates(MAX_LIMIT)
        first = next(candidates, None)
        if first is None:
            return
        honoured = _honoured_rows(client, channel, sample, halt)
    # Two controls at least (first and last), but a filter known to hold only two rows takes
    # one control and one candidate, asked twice, in both orders (see _Controls.around).
    per_check = min(CONTROLS_PER_CHECK, max(2, honoured // 2)) if honoured > 2 else 1
    room = honoured - per_check
    controls = _Controls(sample, newest)
    for batch in _rebatch(first, candidates, max(room, 1)):
        halt.check("confirming removals")
        if honoured < _MIN_HONOURED:
            comparison.unconfirm(batch)
            continue
        found_now = _ask_around(client, channel, batch, controls, per_check, halt)
        if found_now is None:
            comparison.unconfirm(batch)  # all kept, unconfirmed
            continue
        # Complete answers: the candidates they show were skipped by the listing (kept); the
        # others stay removal candidates.
        comparison.keep(found_now.intersection(batch))


def _ask_around(
    client: KaleyraClient, channel: str, batch: list[str], controls: _Controls, count: int, halt: Halt
) -> set[str] | None:
    """What complete answers about ``batch`` show listed, or None when none could be had.

    An answer that is unreadable, or misses a control (cut short, or stale), proves nothing,
    not even that the numbers it shows are listed now. A control a number of the listing that
    was unblocked since is missed honestly, so the controls an answer missed are not asked
    again, and the batch is asked once more with others: one number unblocked meanwhile does
    not leave a whole region of the candidates unproven."""
    for _ in range(2):
        questions = controls.around(batch, count)
        if not questions:
            return None
        found: set[str] = set()
        for question, asked in questions:
            answer = _ask(client, channel, question, halt)
            if answer is None:
                return None
            missed = set(asked) - answer
            if missed:
                controls.deny(missed)
                break
            found |= answer
        else:
            return found
    return None


def _confirm_as_forced(
    client: KaleyraClient, comparison: Candidates, channel: str, halt: Halt, batches: Iterator[list[str]]
) -> list[str]:
    """Under ``--force``, with no control to prove an answer: ask about the candidates plainly.
    An answer of no rows cannot have been cut short (a cap keeps at least one row), so its
    numbers stay removal candidates, on the operator's word. The numbers an answer names are
    kept, and returned: being blocklisted, they can prove the remaining answers."""
    found: list[str] = []
    for batch in batches:
        halt.check("confirming removals")
        answer = _ask(client, channel, batch, halt)
        if answer is None:
            comparison.unconfirm(batch)
            continue
        present = sorted(answer.intersection(batch))
        comparison.keep(present)
        found += present
    return found


def _ask(client: KaleyraClient, channel: str, question: list[str], halt: Halt) -> set[str] | None:
    """The numbers of ``question`` the filter says are blocklisted; None when its answer
    cannot be read (numbers not asked about, rows that are no number): that proves nothing."""
    try:
        return client.check(channel, question, cancel=halt)
    except ProtocolError as exc:
        log.warning("a removal check could not be read: %s", exc.reason, extra={"channel": channel})
        return None


def _honoured_rows(client: KaleyraClient, channel: str, sample: list[str], halt: Halt) -> int:
    """How many rows one answer of the ``mobile`` filter is known to hold: how many of up to
    100 numbers this listing showed it confirmed at once. 0 when it cannot be told."""
    if not sample:
        return 0
    halt.check("confirming removals")
    found = _ask(client, channel, sample[:MAX_LIMIT], halt)
    return 0 if found is None else len(found)


class _Controls:
    """Numbers this listing showed, asked beside the removal candidates: a working filter must
    confirm every one, so an answer missing one proves nothing about the candidates it left out.

    Each answer is judged by its own controls, placed where a cut would fall: the newest listed
    numbers in turn (a filter answering from a cache older than the last sweeps does not know
    them); a listed number just below the candidates and one just above them (a cap that keeps
    the first or last rows in the numbers' order cuts one); and a control first and another
    last in the question (a cap that keeps the first or last rows in the order asked cuts
    one). So a cap that shrinks after the first answer measured it cuts a control, and that
    answer proves nothing; the others are drawn in turn from a random sample of the listing."""

    def __init__(self, sample: list[str], newest: list[str]) -> None:
        self._sorted = sorted(set(sample))
        self._newest = newest or sample
        self._sample = sample
        self._next_newest = self._next_other = 0
        self._denied: set[str] = set()

    def deny(self, missed: set[str]) -> None:
        """Controls an answer did not show: never asked again in this sweep."""
        self._denied |= missed

    def around(self, batch: list[str], count: int) -> list[tuple[list[str], list[str]]]:
        """The questions to ask about ``batch`` with ``count`` controls, each in the order to
        ask it, with the controls it carries. One question, a control first and another last;
        with one control (a filter known to hold two rows), two questions, the control first
        in one and last in the other, both to be answered complete. None without a control:
        every newest number denied (a stale cache must not be let off with older ones), or
        none left at all."""
        newest = [m for m in self._newest if m not in self._denied]
        usable = [m for m in self._sorted if m not in self._denied]
        if not newest or not usable:
            return []
        low = bisect.bisect_left(usable, min(batch))
        high = bisect.bisect_right(usable, max(batch))
        wanted = [
            newest[self._next_newest % len(newest)],
            usable[high] if high < len(usable) else usable[-1],
            usable[low - 1] if low > 0 else usable[0],
        ]
        self._next_newest += 1
        chosen = list(dict.fromkeys(wanted))[:count]
        for _ in range(len(self._sample)):  # at most one round of the sample
            if len(chosen) >= count:
                break
            other = self._sample[self._next_other % len(self._sample)]
            self._next_other += 1
            if other not in chosen and other not in self._denied:
                chosen.append(other)
        if len(chosen) == 1:
            return [([chosen[0], *batch], chosen), ([*batch, chosen[0]], chosen)]
        middle = batch + chosen[2:]
        random.shuffle(middle)
        return [([chosen[0], *middle, chosen[1]], chosen)]


def _rebatch(first: list[str], rest: Iterator[list[str]], size: int) -> Iterator[list[str]]:
    """The candidates in batches of ``size``, however they were read."""
    pending: list[str] = []
    for batch in itertools.chain([first], rest):
        pending += batch
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


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
