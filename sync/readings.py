"""A number as people write it: one argument read as the number a sweep would store.

People write numbers many ways (``+91 98765 43210``, ``0091 98765 43210``, ``919876543210``, a
national ``98765 43210`` in their own country). :func:`normalise` reads each argument on its
own, in this order:

1. Written internationally (``+`` or ``00``, or digits alone when no country is given), a
   number is first put in the sync's own canonical form (:func:`sync.numbers.canonical`),
   exactly what a sweep stores for it, *before* ``phonenumbers`` is asked. So every number the
   sync can store is found as stored, even one ``phonenumbers`` calls impossible (``+1234567``,
   ``+8001234``, ``+999123456789``: Kaleyra lists them, so they are blocklisted). Where
   ``phonenumbers`` writes the same number otherwise (``+4407911…`` as ``+447911…``), both
   spellings are matched.
2. National digits with a country (``--country IN``, or ``BLOCKLIST_SYNC_DEFAULT_COUNTRY``, for
   a support desk that writes ``9876543210``) are read by ``phonenumbers`` in that country.
3. What neither can read is refused: that argument alone, with how to write it; the others are
   answered all the same.

A reading that is not a valid number where it was read (``9876543210`` without a country is
``+98 76543210``, Iran) carries its doubt and the readings that are valid
(:attr:`Reading.alternatives`), for :mod:`sync.lookup` to weigh against the tables.
"""

from __future__ import annotations

import dataclasses
import functools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import phonenumbers

from sync.numbers import MAX_RAW_LENGTH, canonical
from sync.regions import region_of
from sync.settings import ConfigError

__all__ = [
    "Alternative",
    "Reading",
    "UnreadableNumber",
    "country_code",
    "country_name",
    "normalise",
    "normalise_each",
]


class Alternative(NamedTuple):
    """Another reading of the digits that is a valid number: what it is, and how to ask for it."""

    mobile: str  # E.164
    country: str  # the name of its country
    region: str | None  # the country to read the digits in (a national reading); None: international
    calling_code: int


@dataclass(frozen=True)
class Reading:
    """How one argument was read: what to look for, and what is doubtful about it."""

    raw: str
    mobile: str  # E.164 as a sweep would store this input
    spellings: tuple[str, ...]  # every stored spelling that is this number, ``mobile`` first
    region: str | None
    calling_code: int | None  # None: no calling code in use (+999…)
    # Why this reading may not be the number meant (not valid where it was read); None: valid.
    doubt: str | None = None
    # Other readings of the digits that are valid numbers: offered when ``doubt`` is set.
    alternatives: tuple[Alternative, ...] = ()


class UnreadableNumber(ValueError):
    """An argument that cannot be a phone number: ``raw``, read in ``country`` (None: read as
    international, ``explicit`` when written with + or 00). The message says how to write it;
    :meth:`said` adds how to give a country, in the words of the setting the CLI names."""

    def __init__(self, raw: str, *, country: str | None = None, explicit: bool = False) -> None:
        where = f" in {country}" if country else ""
        super().__init__(f"{_shown(raw)} cannot be a phone number{where}; write it as +919876543210")
        self.raw, self.country, self.explicit = raw, country, explicit

    def said(self, setting: str | None) -> str:
        """The message, with how a country would help, naming ``setting`` (how the CLI names
        the country setting); without a setting, the message alone."""
        if setting is None or (self.country is None and self.explicit):
            return str(self)
        if self.country is not None:
            return f"{self}, or with the right {setting}"
        return f"{self}, or give {setting} for a national number"


def country_code(value: str, setting: str) -> str:
    """``value`` as an ISO 3166 code ``phonenumbers`` knows (``in`` is ``IN``), or a one-line
    :class:`ConfigError`: a country that does not exist is the whole command's mistake."""
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        shown = value if len(value) <= 10 else value[:10] + "..."
        raise ConfigError(f"{setting}: {shown!r} is not an ISO 3166 country code; use e.g. IN, US, GB")
    return code


def _shown(raw: str) -> str:
    """An argument as a message may quote it: one line, and short (a hostile one too)."""
    return repr(raw) if len(raw) <= MAX_RAW_LENGTH else repr(raw[:MAX_RAW_LENGTH]) + "..."


def _as_typed(raw: str) -> str:
    """An argument as typed where it is short and printable, else :func:`_shown`."""
    return raw if raw.isprintable() and len(raw) <= MAX_RAW_LENGTH else _shown(raw)


def _parse(number: str, country: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(number, country)
    except phonenumbers.NumberParseException:
        return None


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise(raw: str, country: str | None = None) -> Reading:
    """Read one argument (see the module's docstring); :class:`UnreadableNumber` if it cannot
    be a phone number. ``country`` (an ISO code, :func:`country_code`) reads digits written
    without ``+`` or ``00`` as a national number there; without it they are international."""
    # Zero-width and bidi marks pasted with a number must not hide its "+".
    written = "".join(
        ch for ch in unicodedata.normalize("NFKC", raw) if unicodedata.category(ch) != "Cf"
    ).strip()
    explicit = written.startswith(("+", "00"))
    if explicit or country is None:
        international = "+" + (written[2:] if written.startswith("00") else written.removeprefix("+"))
        parsed = _parse(international, None)
        stored = canonical(international)  # what a sweep stores: found as stored, first
        if stored is None:
            if parsed is None or not phonenumbers.is_possible_number(parsed):
                raise UnreadableNumber(raw, explicit=explicit)
            stored = _e164(parsed)
    else:
        parsed = _parse(written, country)
        if parsed is None or not phonenumbers.is_possible_number(parsed):
            raise UnreadableNumber(raw, country=country)
        stored = _e164(parsed)
    spellings = (stored,) if parsed is None or _e164(parsed) == stored else (stored, _e164(parsed))
    region = region_of(parsed) if parsed is not None else None
    reading = Reading(raw, stored, spellings, region, parsed.country_code if parsed else None)
    if parsed is not None and phonenumbers.is_valid_number(parsed):
        return reading
    as_written = stored if explicit else f"{_as_typed(raw)} read as {stored}"
    return dataclasses.replace(
        reading,
        doubt=f"{as_written} ({country_name(region)}) is not a valid number there",
        # Written with + or 00, the country code was the writer's choice: only the digits are
        # in doubt, and reading them as another country's would be a guess.
        alternatives=() if explicit else _valid_readings(written, stored),
    )


def normalise_each(numbers: Sequence[str], country: str | None = None) -> list[Reading | UnreadableNumber]:
    """Each argument read on its own: one that cannot be a phone number is kept as its error,
    so it is answered in its place and does not stop the others from being looked up."""
    readings: list[Reading | UnreadableNumber] = []
    for raw in numbers:
        try:
            readings.append(normalise(raw, country))
        except UnreadableNumber as exc:
            readings.append(exc)
    return readings


def _valid_readings(written: str, stored: str) -> tuple[Alternative, ...]:
    """Other readings of digits written without + or 00 that are valid numbers: international
    (when they were read as national), and national in every country where they are valid."""
    found: dict[str, Alternative] = {}
    international = _parse("+" + written, None)
    if international is not None and phonenumbers.is_valid_number(international):
        mobile = _e164(international)
        found[mobile] = Alternative(
            mobile, country_name(region_of(international)), None, international.country_code or 0
        )
    for country in sorted(phonenumbers.SUPPORTED_REGIONS):
        national = _parse(written, country)
        if national is not None and phonenumbers.is_valid_number_for_region(national, country):
            # Named by the country the number belongs to: +7 987… read in KZ is Russia's.
            owner = region_of(national) or country
            mobile = _e164(national)
            found.setdefault(
                mobile, Alternative(mobile, country_name(owner), owner, national.country_code or 0)
            )
    found.pop(stored, None)
    return tuple(found.values())


@functools.cache
def _country_names() -> dict[str, str]:
    """English country names by ISO code, from ``phonenumbers``' own data (loaded only when a
    warning needs one: it takes half a second)."""
    from phonenumbers.geodata.locale import LOCALE_DATA

    names = {}
    for code, by_language in LOCALE_DATA.items():
        name = by_language.get("en", "")
        names[code] = by_language.get(name[1:], "") if name.startswith("*") else name
    return names


def country_name(region: str | None) -> str:
    if region is None:
        return "no country"
    return _country_names().get(region) or region
