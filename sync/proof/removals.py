"""Each removal, confirmed by the ``mobile`` filter (section 4 of :mod:`sync.proof`): an answer
proves an absence only when the controls asked beside the candidates show it complete."""

from __future__ import annotations

import bisect
import itertools
import logging
import random
from collections.abc import Iterable, Iterator
from typing import Protocol

from sync.kaleyra import MAX_LIMIT, KaleyraClient, ProtocolError
from sync.proof.listing import Halt

# Named for the module this code first lived in (sync/job.py): operators' log queries and
# alerts match on the logger name, so it stays.
log = logging.getLogger("sync.job")

# Each removal check asks about this many numbers the listing just showed (controls), beside
# the removal candidates (see _Controls: where each is placed, and why).
CONTROLS_PER_CHECK = 5
_CONTROL_SAMPLE = MAX_LIMIT  # one full request of controls measures what the filter honours
_NEWEST_CONTROLS = 10  # the newest listed numbers, asked in turn: a stale cache lacks them
# A control and a candidate: the fewest rows a filter must be known to hold for its answers to
# prove an absence (asked twice, the control first and then last).
_MIN_HONOURED = 2


class Candidates(Protocol):
    """A listing compared with the stored channel, as the removal checks need it: the
    candidates to prove, numbers the listing showed (controls), and the verdicts."""

    def removal_candidates(self, batch: int) -> Iterator[list[str]]: ...

    def listed_sample(self, size: int) -> list[str]: ...

    def newest_listed(self, size: int) -> list[str]: ...

    def keep(self, present: Iterable[str]) -> None: ...

    def unconfirm(self, unproven: Iterable[str]) -> None: ...


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
