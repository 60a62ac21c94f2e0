"""Vendor text is data, not output: what Kaleyra (or a proxy in front of it) writes is shown
and stored only as :func:`vendor_text` makes it.

A response code, a message, a header such as Content-Type, a row that is no number, a row's
``channel_type``: the server chooses every character of these. Printed raw, an escape sequence
rewrites the operator's terminal, a line break forges a log line, a bidi override reverses
what is read; stored raw, a NUL or a lone surrogate (JSON's ``"\\ud800"``) cannot be written to
PostgreSQL at all, so the run row stays ``running``, and a 900 KB code makes a 900 KB row.

So each such string passes through :func:`vendor_text` once, where it enters (the Kaleyra
client, the error mapping, the rejected-row examples), and leaves it:

- redacted first: a secret the server echoed is blanked before anything is cut, so no cut can
  leave a prefix of a key behind for the exit-side redaction to miss;
- escaped: every character Python does not call printable (C0 and C1 controls, DEL, NUL, lone
  surrogates, format characters such as bidi overrides and zero-width spaces, line and
  paragraph separators, unassigned code points) is written the way ``repr`` would write it —
  ``\\x1b``, ``\\n``, ``\\u202e`` — readable, never dropped silently, never acted on;
- bounded: at most ``limit`` characters, ending in ``…`` when cut, never inside an escape.

The result is valid UTF-8, fits in a PostgreSQL ``text`` column and is one line.
"""

from __future__ import annotations

from sync.redaction import redact

__all__ = ["vendor_text"]

_ELLIPSIS = "…"
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def vendor_text(value: str, limit: int) -> str:
    """``value`` redacted, escaped and cut to at most ``limit`` characters."""
    text = redact(value)
    if len(text) <= limit and text.isascii() and text.isprintable():
        return text  # the common case: a short, plain code or message
    # Escaping at most multiplies the length, so only the first ``limit`` characters can show.
    pieces = [_escaped(ch) for ch in text[: limit + 1]]
    if len(text) <= limit and sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    kept: list[str] = []
    room = limit - len(_ELLIPSIS)
    for piece in pieces:
        if len(piece) > room:
            break
        kept.append(piece)
        room -= len(piece)
    return "".join(kept) + _ELLIPSIS


def _escaped(ch: str) -> str:
    if ch.isprintable():
        return ch
    if ch in _NAMED:
        return _NAMED[ch]
    point = ord(ch)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"
