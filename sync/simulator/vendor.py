"""What the simulated Kaleyra serves as the vendor documents it: its channels, the success
and failure bodies verbatim, and the numbers it lists."""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sync.simulator.faults import Trickle

__all__ = [
    "CHANNELS",
    "CHANNEL_TYPES",
    "MAX_LIMIT",
    "VENDOR_ERRORS",
    "Response",
    "generate_numbers",
    "json_response",
    "vendor_body",
]

CHANNELS = ("sms", "whatsapp", "voice")
MAX_LIMIT = 100
# The sample shows "3" for a whatsapp row; the other values are a guess, and opaque anyway.
CHANNEL_TYPES = {"sms": "1", "voice": "2", "whatsapp": "3"}


# (status, headers, body): None as the status hangs up without answering (the "drop" fault).
Response = tuple[int | None, dict[str, str], "bytes | Trickle"]


def vendor_body(
    status: int, code: str, message: str, data: object, error: dict[str, str]
) -> tuple[int, dict[str, object]]:
    return status, {"code": code, "message": message, "data": data, "error": error}


# Every failure body on the vendor's page, verbatim, by a short name.
VENDOR_ERRORS: dict[str, tuple[int, dict[str, object]]] = {
    "RBC001": vendor_body(
        401, "RBC001", "Incorrect SID or API key.", [], {"error": "Incorrect SID or API key."}
    ),
    "WA401": vendor_body(
        401,
        "WA401",
        "Phone number is not present or does not belong to the account.",
        {},
        {"phone_number": "Phone number is not present or does not belong to the account."},
    ),
    "WA400": vendor_body(
        400, "WA400", "Refer to correct payload format", {}, {"payload": "Incorrect payload format"}
    ),
    "WA500": vendor_body(500, "WA500", "Please try again later", {}, {"error": "Internal server error"}),
    "E110": vendor_body(
        400,
        "E110",
        "Please check your balance, You have a low balance!",
        {},
        {"balance": "Please check your balance, You have a low balance!"},
    ),
    "WA-401": vendor_body(
        401,
        "WA-401",
        "API is not available for given customer.Please contact support for more info",
        {},
        {"account": "API is not available for given customer.Please contact support for more info"},
    ),
    "WA-401-version": vendor_body(
        401,
        "WA-401",
        "The phone number you're using is associated with "
        "different Version of our WA API. Please use the appropriate "
        "endpoint.",
        {},
        {
            "phone_number": "The phone number you're using "
            "is associated with different Version of our WA API. Please use "
            "the appropriate endpoint."
        },
    ),
    "CNT195": vendor_body(
        200,
        "CNT195",
        "Unable to fetch the blocklisted number",
        [],
        {"description": "Unable to fetch the blocklisted number"},
    ),
    "WA202": vendor_body(202, "WA202", "Request Accepted", {"message_id": "AXXXXXXXXXXXXXXXXXXX"}, {}),
}


def generate_numbers(count: int, *, seed: int, channel: str) -> list[str]:
    """``count`` unique, valid E.164 Indian mobile numbers, reproducible from ``seed``.

    Every channel draws from one pool 1.5 times the size, so the channels overlap the way real
    blocklists do (a number opted out of every channel).
    """
    pool = random.Random(seed).sample(range(6_000_000_000, 10_000_000_000), count * 3 // 2 + 1)
    picked = random.Random(f"{seed}:{channel}").sample(pool, count)
    return [f"+91{n}" for n in picked]


def json_response(status: int, body: object) -> Response:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()
