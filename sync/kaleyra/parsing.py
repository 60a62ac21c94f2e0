"""One Kaleyra response read: the rows it lists, or the error it stands for.

Kept apart from the transport because what an answer *means* is a different question from how
it arrives: the transport hands over a body already bounded in time and size, and this module
alone decides whether it is a listing. Every number is reduced to its canonical E.164 form
(:mod:`sync.numbers`) as it is parsed; a row that cannot be a phone number is handed back as
rejected, never as an entry. Every other string the server chose that is kept or shown (a code,
a message, Content-Type, a row's ``channel_type``) is vendor text (:mod:`sync.vendor_text`):
redacted, escaped and bounded here, where it enters.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
from typing import NamedTuple

import requests

from sync.kaleyra.errors import ProtocolError, ServerError, error_for_response, unexpected_answer
from sync.numbers import canonical
from sync.vendor_text import vendor_text

SUCCESS_CODE = "CNT196"
# How much of a header the server chose (Content-Type, Content-Encoding) an error may quote.
_HEADER_CHARS = 100
# A row's channel_type is opaque ("3" in the sample); stored, so bounded short.
_CHANNEL_TYPE_CHARS = 64
# How much of an error object beside a success code a message may quote.
_ERROR_CHARS = 200


class Entry(NamedTuple):
    """One blocklisted number, canonical E.164 (:mod:`sync.numbers`); ``channel_type`` is opaque."""

    mobile: str
    channel_type: str | None


class _Listing(NamedTuple):
    """One parsed response: the rows that are numbers, and those that are not."""

    entries: list[Entry]
    rejected: list[object]
    # Entries the server spelled otherwise than their canonical form (a space, other digits):
    # a listing may hold one number in two spellings, which is no sign that it moved.
    respelled: int = 0


def _parse_listing(response: requests.Response, raw: bytes, channel: str, offset: int | None) -> _Listing:
    """Validate one response and return its rows, or raise the error it stands for."""
    status = response.status_code
    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
    try:
        # Bytes that are not UTF-8 become U+FFFD: the row holding them is rejected as no
        # number, instead of the whole page failing or a mis-decoded string being stored.
        body = json.loads(raw.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python goes
        body = None
    code = message = None
    if isinstance(body, dict):
        code = body.get("code") if isinstance(body.get("code"), str) else None
        message = body.get("message") if isinstance(body.get("message"), str) else None
    error = error_for_response(status, code, message, channel=channel, offset=offset, retry_after=retry_after)
    if error is not None:
        raise error
    if body is None:
        kind = vendor_text(response.headers.get("content-type", "unknown content type"), _HEADER_CHARS)
        raise ProtocolError(
            f"HTTP {status} body is not JSON ({kind})", channel=channel, offset=offset, status=status
        )
    if status != 200 or code != SUCCESS_CODE:
        raise unexpected_answer(
            status,
            code,
            message,
            expected=f"HTTP 200 {SUCCESS_CODE} with a listing",
            channel=channel,
            offset=offset,
        )
    trouble = body.get("error")
    if trouble not in (None, {}, [], ""):
        # A success code beside an error ("Unable to fetch the blocklisted number"): its rows,
        # or its empty page, may be cut short, so it is no listing. Asked again, boundedly.
        said = vendor_text(json.dumps(trouble, ensure_ascii=False), _ERROR_CHARS)
        raise ServerError(
            f"Kaleyra answered HTTP {status} {code} with an error object {said}; its rows are not a listing",
            channel=channel,
            offset=offset,
            status=status,
            code=code,
        )
    data = body.get("data")
    if not isinstance(data, list):
        raise ProtocolError(f"'data' is {type(data).__name__}, not a list", channel=channel, offset=offset)
    entries: list[Entry] = []
    rejected: list[object] = []
    respelled = 0
    for row in data:
        spelled: object = row.get("mobile") if isinstance(row, dict) else None
        mobile = canonical(spelled)
        if mobile is None:
            rejected.append(row.get("mobile", row) if isinstance(row, dict) else row)
            continue
        respelled += mobile != spelled
        kind = row.get("channel_type")
        entries.append(Entry(mobile, None if kind is None else vendor_text(str(kind), _CHANNEL_TYPE_CHARS)))
    return _Listing(entries, rejected, respelled)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": an HTTP date is GMT by definition (RFC 9110), unlike SQLite
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)
