"""One number, one identity: the canonical E.164 form every number is stored and compared in.

Kaleyra's samples give numbers as ``+<country code><number>``, but a vendor, a proxy or a
hand-edited list can send the same number as ``" +919800000001"`` or ``"+91 98000-00001"``.
Stored as given, those would be three entries and three "added" events for one number, and a
held number listed once with a leading space would be "removed" and "re-added". So every number
is reduced to one form before it is staged, compared, checked or stored:

- the usual separators (``-``, ``.``, ``(``, ``)``), any Unicode whitespace (a TAB, a no-break
  space, an ideographic space) and any format character (zero-width space or joiner, a byte
  order mark, bidi marks) go, wherever they are;
- the spelling is NFKC-normalised (a fullwidth ``＋`` or ``１`` is ``+`` or ``1``) and every
  decimal digit is replaced by its value (Arabic-Indic ``٩``, Devanagari ``९``, Bengali, Thai...
  are ``9``): a held number the vendor spells in other digits is the same number, and would
  otherwise be "removed", or fail the removal check as a number it was not asked about;
- what remains must have E.164's shape: ``+``, then 7 to 15 digits, the first not 0
  (7 because some real numbers, Niue's for one, are that short).

Nothing else is guessed: a number without ``+`` (national or international-prefix form) is not
given a country. A number of the right shape that ``phonenumbers`` would call invalid is still a
number Kaleyra blocklists, so it is kept. A row that cannot be a phone number (letters, control
characters other than whitespace, such as NUL or ESC, too long) gets ``None``: the caller counts
it and never stores it.

This sits on the fetch path of every row, so the common case — a number already canonical —
is one compiled ``fullmatch``; a spelling longer than :data:`MAX_RAW_LENGTH` is refused before
any normalisation is spent on it.
"""

from __future__ import annotations

import re
import unicodedata

from sync.vendor_text import vendor_text

__all__ = ["MAX_RAW_LENGTH", "cannot_be_longer", "canonical", "describe_rejected"]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SEPARATORS = frozenset(" -.()")
# Python's isspace() also counts these four ASCII controls (file, group, record and unit
# separators); Unicode does not call them whitespace, so they stay, and reject their row.
_NOT_WHITESPACE = frozenset("\x1c\x1d\x1e\x1f")
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
    cleaned = "".join(_plain(ch) for ch in unicodedata.normalize("NFKC", raw))
    return cleaned if _E164.fullmatch(cleaned) else None


def _plain(ch: str) -> str:
    """``ch`` as it counts in a number: "" for a separator, its value for a decimal digit."""
    if ch in _SEPARATORS or (ch.isspace() and ch not in _NOT_WHITESPACE) or unicodedata.category(ch) == "Cf":
        return ""
    digit = unicodedata.decimal(ch, None)
    return ch if digit is None else str(digit)


def describe_rejected(raw: object, width: int = 32) -> str:
    """A rejected value as it may be logged: vendor text (:mod:`sync.vendor_text`), so a key
    inside it is blanked before it is cut, nothing in it reaches a terminal or a log shipper
    unescaped, and a 1 MB value is not printed. A string is quoted, anything else (a row that is
    an object, a number) is shown as Python writes it."""
    if isinstance(raw, str):
        return f"'{vendor_text(raw, width - 2)}'"
    return vendor_text(repr(raw), width)


def cannot_be_longer(mobile: str) -> bool:
    """Whether ``mobile`` (canonical) is a valid number that no digit more could continue: as
    long as any number of its kind (mobile, fixed line...) in its country can be, by
    ``phonenumbers``' data. What a line cut short cannot be: ``+9190000`` is the shape of a
    number, but no valid one, and a valid German fixed line (``+4930123456``) may be the start
    of a longer one, while a valid Indian mobile has all the digits an Indian mobile has.

    Not on the path of every row (``phonenumbers`` is slow to load and to ask): only for what
    must prove it is whole, such as an export's last line without its line break."""
    import phonenumbers
    from phonenumbers import PhoneMetadata, PhoneNumberType

    try:
        number = phonenumbers.parse(mobile)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(number):
        return False
    region = phonenumbers.region_code_for_number(number)
    if number.country_code is None or region is None:
        return False
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(number.country_code, region)
    if metadata is None:
        return False
    kind = phonenumbers.number_type(number)
    descriptions = {
        PhoneNumberType.FIXED_LINE_OR_MOBILE: (metadata.fixed_line, metadata.mobile),
        PhoneNumberType.MOBILE: (metadata.mobile,),
        PhoneNumberType.FIXED_LINE: (metadata.fixed_line,),
        PhoneNumberType.TOLL_FREE: (metadata.toll_free,),
        PhoneNumberType.PREMIUM_RATE: (metadata.premium_rate,),
        PhoneNumberType.SHARED_COST: (metadata.shared_cost,),
        PhoneNumberType.VOIP: (metadata.voip,),
        PhoneNumberType.PERSONAL_NUMBER: (metadata.personal_number,),
        PhoneNumberType.PAGER: (metadata.pager,),
        PhoneNumberType.UAN: (metadata.uan,),
        PhoneNumberType.VOICEMAIL: (metadata.voicemail,),
    }.get(kind, ())
    lengths = {n for d in descriptions if d is not None for n in d.possible_length if n > 0}
    if not lengths and metadata.general_desc is not None:
        lengths = {n for n in metadata.general_desc.possible_length if n > 0}
    return bool(lengths) and len(phonenumbers.national_significant_number(number)) >= max(lengths)
