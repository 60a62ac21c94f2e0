"""Which country a number belongs to: a prefix table generated from ``phonenumbers``' metadata.

Analysts break the blocklist down by country in SQL, so the knowledge has to live in the
database: the table ``phone_prefixes`` maps E.164 prefixes to a calling code and an ISO 3166
region, and a number belongs to its *longest* matching prefix. A calling code used by one
country is one row (``+91`` -> IN). A shared calling code (``+1`` for the US, Canada and the
Caribbean, ``+7``, ``+44`` with Jersey, Guernsey and Man, ...) gets deeper rows where the
digits after it decide the country: every NANP area code (``+1416`` -> CA, ``+1876`` -> JM),
and elsewhere as deep as needed (``+441534`` -> JE). Where the digits do not decide, the
calling code's main region applies (``phonenumbers`` lists it first: US for +1, GB for +44).
Non-geographic codes (+800, +882, ...) have no region: ``region`` is NULL there.

Why a table and not a column filled at sweep time: classifying in Python costs every added
row a parse, which would slow a million-row initial sweep far past the 10% allowed; a prefix
join at query time costs the sweep nothing. The deeper rows are found by probing
``phonenumbers`` itself (it decides a shared code's region from the whole number), digit by
digit, along every example number's prefix and wherever probes disagree; that takes seconds,
so the result is committed as ``phone_prefixes.csv`` beside this module and loaded by the
migration. Regenerate it after upgrading ``phonenumbers``::

    python -m sync.regions > sync/phone_prefixes.csv
"""

from __future__ import annotations

import csv
import io
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumber
from phonenumbers.phonenumberutil import _region_code_for_number_from_list

__all__ = ["MAX_PREFIX_LENGTH", "PREFIX_FILE", "generate", "load", "region_of"]

PREFIX_FILE = Path(__file__).with_name("phone_prefixes.csv")
# Longest prefix in the table, '+' included; the views compare this many leading characters.
MAX_PREFIX_LENGTH = 10
_MAX_DEPTH = MAX_PREFIX_LENGTH - 4  # national digits after the longest shared code (3 digits)
_NON_GEOGRAPHIC = "001"
_NUMBER_TYPES = range(12)  # every phonenumbers.PhoneNumberType that has example numbers


def region_of(number: PhoneNumber) -> str | None:
    """The ISO region of a parsed number as the table would give it: decided by the number
    where it can be, else its calling code's main region; None for non-geographic codes."""
    region = phonenumbers.region_code_for_number(number)
    if region is None:
        regions = COUNTRY_CODE_TO_REGION_CODE.get(number.country_code or 0, ())
        region = regions[0] if regions else None
    return None if region == _NON_GEOGRAPHIC else region


def _number(calling_code: int, national: str) -> PhoneNumber:
    zeros = len(national) - len(national.lstrip("0"))
    return PhoneNumber(
        country_code=calling_code,
        national_number=int(national),
        italian_leading_zero=zeros > 0 or None,
        number_of_leading_zeros=zeros if zeros > 1 else None,
    )


def _possible_lengths(region: str) -> tuple[int, ...]:
    metadata = PhoneMetadata.metadata_for_region(region)
    general = metadata.general_desc if metadata is not None else None
    return tuple(general.possible_length) if general is not None else ()


def _shared_code_rows(calling_code: int, regions: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(national prefix, region) leaves for a calling code several regions share."""
    lengths = sorted({n for r in regions for n in _possible_lengths(r)})
    rng = random.Random(calling_code)  # deterministic: the same metadata gives the same file
    on_example_path: set[str] = set()
    for region in regions:
        for kind in _NUMBER_TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                digits = phonenumbers.national_significant_number(example)
                on_example_path |= {digits[:i] for i in range(len(digits))}
    nanp = calling_code == 1  # the 3-digit area code decides, by the plan's design

    def probe(prefix: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for length in lengths:
            rest = length - len(prefix)
            if rest <= 0:
                continue
            tails = [str(d) * rest for d in range(10)]
            tails += ["".join(rng.choices("0123456789", k=rest)) for _ in range(5 if nanp else 20)]
            for tail in tails:
                region = _region_code_for_number_from_list(_number(calling_code, prefix + tail), regions)
                if region:
                    found[region] = found.get(region, 0) + 1
        return found

    def walk(prefix: str) -> Iterator[tuple[str, str]]:
        depth = len(prefix)
        must_split = depth < (3 if nanp else 1) or (
            not nanp and prefix in on_example_path and depth < _MAX_DEPTH
        )
        if not must_split:
            found = probe(prefix)
            if len(found) <= 1 or depth >= _MAX_DEPTH or nanp:
                yield prefix, max(found, key=found.__getitem__) if found else regions[0]
                return
        children = [row for digit in "0123456789" for row in walk(prefix + digit)]
        if all(depth + 1 == len(p) for p, _ in children) and len({r for _, r in children}) == 1:
            yield prefix, children[0][1]  # ten leaves that agree are their parent
        else:
            yield from children

    yield from walk("")


def generate() -> list[tuple[str, int, str | None]]:
    """Every (prefix, calling code, region) row, sorted by prefix."""
    rows: list[tuple[str, int, str | None]] = []
    for calling_code, regions in COUNTRY_CODE_TO_REGION_CODE.items():
        main = None if regions[0] == _NON_GEOGRAPHIC else regions[0]
        rows.append((f"+{calling_code}", calling_code, main))
        if len(regions) > 1:
            rows += [
                (f"+{calling_code}{national}", calling_code, region)
                for national, region in _shared_code_rows(calling_code, regions)
                if national and region != main
            ]
    return sorted(rows)


def load() -> list[dict[str, object]]:
    """The committed table, as rows for an INSERT."""
    with PREFIX_FILE.open(newline="") as handle:
        return [
            {"prefix": r["prefix"], "calling_code": int(r["calling_code"]), "region": r["region"] or None}
            for r in csv.DictReader(handle)
        ]


def main() -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prefix", "calling_code", "region"])
    writer.writerows((p, c, r or "") for p, c, r in generate())
    sys.stdout.write(out.getvalue())


if __name__ == "__main__":
    main()
