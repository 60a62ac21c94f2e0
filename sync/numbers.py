"""One number, one identity: the canonical E.164 form every number is stored and compared in.

Kaleyra's samples give numbers as ``+<country code><number>``, but a vendor, a proxy or a
hand-edited list can send the same number as ``" +919800000001"`` or ``"+91 98000-00001"``.
Stored as given, those would be three entries and three "added" events for one number, and a
held number listed once with a leading space would be "removed" and "re-added". So every number
is reduced to one form before it is staged, compared, checked or stored:

- surrounding whitespace and the usual separators (space, ``-``, ``.``, ``(``, ``)``, no-break
  space) go;
- what remains must have E.164's shape: ``+``, then 7 to 15 ASCII digits, the first not 0
  (7 because some real numbers, Niue's for one, are that short).

Nothing else is guessed: a number without ``+`` (national or international-prefix form) is not
given a country. A number of the right shape that ``phonenumbers`` would call invalid is still a
number Kaleyra blocklists, so it is kept. A row that cannot be a phone number (letters, control
characters, too long) gets ``None``: the caller counts it and never stores it.

This sits on the fetch path of every row, so the common case — a number already canonical —
is one compiled ``fullmatch``.
"""

from __future__ import annotations

import re

from sync.vendor_text import vendor_text

__all__ = ["MAX_RAW_LENGTH", "canonical", "describe_rejected"]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SEPARATORS = re.compile(r"[ \-.()\u00a0]")
# Longer than any way of writing a 15-digit number with separators: rejected unread.
MAX_RAW_LENGTH = 40


def canonical(raw: object) -> str | None:
    """The canonical E.164 form of ``raw``, or None when it cannot be a phone number."""
    if not isinstance(raw, str):
        return None
    if _E164.fullmatch(raw):
        return raw
    if len(raw) > MAX_RAW_LENGTH:
        return None
    cleaned = _SEPARATORS.sub("", raw.strip())
    return cleaned if _E164.fullmatch(cleaned) else None


def describe_rejected(raw: object, width: int = 32) -> str:
    """A rejected value as it may be logged: vendor text (:mod:`sync.vendor_text`), so a key
    inside it is blanked before it is cut, nothing in it reaches a terminal or a log shipper
    unescaped, and a 1 MB value is not printed. A string is quoted, anything else (a row that is
    an object, a number) is shown as Python writes it."""
    if isinstance(raw, str):
        return f"'{vendor_text(raw, width - 2)}'"
    return vendor_text(repr(raw), width)
