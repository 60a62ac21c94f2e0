"""How the simulated Kaleyra misbehaves: the faults a test injects, and the answer each gives.

Faults are part of the simulator's model of a misbehaving Kaleyra, not switches inside the
sync code: the sync code cannot tell this server from the real one.
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass

from sync.simulator.vendor import VENDOR_ERRORS, Response, json_response, vendor_body

__all__ = ["OTHER_FAULTS", "Fault", "Trickle", "fault_response"]

# Faults that are not vendor bodies: what proxies and broken servers send.
OTHER_FAULTS = (
    "html500",
    "malformed",
    "slow",
    "429",
    "503",
    "drop",
    "redirect",
    # hostile: what an attacker, a broken proxy or a broken vendor could send
    "trickle",
    "gzip_bomb",
    "oversize",
    "echo_key",
    "raw",
    "answer",
)


@dataclass
class Fault:
    kind: str
    at: int | None  # first request number it may hit (1-based, counted over GETs)
    times: int
    channel: str | None
    seconds: float
    size: int = 0
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] | None = None


@dataclass
class Trickle:
    """A body sent one byte at a time, ``pace`` seconds apart."""

    data: bytes
    pace: float


def fault_response(fault: Fault, api_key: str | None) -> Response:
    """The answer fault ``fault`` gives in place of a page (``api_key``: the one the request sent)."""
    if fault.kind in VENDOR_ERRORS:
        return json_response(*VENDOR_ERRORS[fault.kind])
    if fault.kind == "echo_key":  # a proxy that "helpfully" quotes the request back
        return json_response(
            *vendor_body(
                401,
                "RBC001",
                f"Incorrect SID or API key: {api_key!r}",
                [],
                {"error": f"api-key {api_key} was refused"},
            )
        )
    if fault.kind == "raw":
        return 200, {"Content-Type": "application/json"}, fault.body
    if fault.kind == "answer":
        return fault.status, dict(fault.headers or {"Content-Type": "application/json"}), fault.body
    if fault.kind == "gzip_bomb":
        return (
            200,
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            _gzip_of_zeros(fault.size),
        )
    if fault.kind == "html500":
        page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
        return 502, {"Content-Type": "text/html"}, page
    if fault.kind == "malformed":
        return 200, {"Content-Type": "application/json"}, b'{"code": "CNT196", "data": [{"mo'
    if fault.kind == "429":
        return (
            429,
            {"Content-Type": "application/json", "Retry-After": f"{fault.seconds:g}"},
            b'{"message": "Too Many Requests"}',
        )
    if fault.kind == "redirect":  # a proxy or a moved API sending us elsewhere
        return 302, {"Location": "http://127.0.0.2:9/elsewhere"}, b""
    if fault.kind == "503":
        return 503, {"Content-Type": "text/plain"}, b"Service Unavailable"
    return None, {}, b""  # drop


@functools.lru_cache(maxsize=4)
def _gzip_of_zeros(size: int) -> bytes:
    """A gzip body that inflates to ``size`` zero bytes, about a thousandth of that on the wire.

    Deflating a GiB takes seconds. After a full flush the compressor starts each 16 MiB segment
    of zeros from the same state, so every segment after the first comes out as the same bytes
    and is deflated once; the header and trailer (CRC-32, length) are written around them.
    """
    segment = bytes(16 << 20)  # large enough that the flushes add under 0.1% to the body
    segments, rest = divmod(size, len(segment))
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate
    parts = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"]  # gzip, no name or time, best, Unix
    if segments:
        parts.append(packer.compress(segment) + packer.flush(zlib.Z_FULL_FLUSH))
    if segments > 1:
        parts.append((packer.compress(segment) + packer.flush(zlib.Z_FULL_FLUSH)) * (segments - 1))
    crc = 0
    for _ in range(segments):
        crc = zlib.crc32(segment, crc)
    parts.append(packer.compress(bytes(rest)) + packer.flush())
    parts.append(struct.pack("<II", zlib.crc32(bytes(rest), crc), size & 0xFFFFFFFF))
    return b"".join(parts)
