"""Secrets never leave the process: one redaction, applied at every exit.

The API keys and database passwords are registered here the moment they are read. From then on
:func:`redact` blanks them, in every form they could be written in — as given, escaped the way
``repr``, JSON or a URL would write them, and line by line for a value that spans lines — from:

- stdout and stderr, by :func:`install` wrapping both streams (click's output, log lines, the
  progress bar, warnings, and tracebacks through a redacting ``sys.excepthook``);
- the run row's ``error`` column, which the job passes through :func:`redact` before storing
  (BI roles can read that table);
- log records, by the logging filter in ``telemetry`` (for handlers that are not our stream).

Redaction is a last line of defence, not the design: messages are built from codes and counts,
never from requests or headers.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from types import TracebackType
from typing import TextIO
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "install", "redact", "register_secret"]

MASK = "***"
_MIN_LENGTH = 4  # shorter strings occur everywhere by chance; no real key or password is this short
_forms: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(secret: str | None) -> None:
    """Blank ``secret`` from everything this process writes from now on."""
    global _pattern
    if not secret or len(secret.strip()) < _MIN_LENGTH:
        return
    forms = {
        secret,
        secret.strip(),
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
    }
    forms.update(line.strip() for line in secret.splitlines())
    new = {f for f in forms if len(f) >= _MIN_LENGTH} - _forms
    if new:
        _forms.update(new)
        # Longest first, so a form that contains another is blanked whole.
        _pattern = re.compile("|".join(re.escape(f) for f in sorted(_forms, key=len, reverse=True)))


def redact(text: str) -> str:
    return _pattern.sub(MASK, text) if _pattern is not None and text else text


class _RedactingStream:
    """A text stream that redacts what is written to it; everything else is the stream's own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    # Formatted whole, then redacted: a secret that spans lines is still one match.
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


def install() -> None:
    """Redact stdout, stderr and uncaught tracebacks for the rest of the process."""
    if not isinstance(sys.stdout, _RedactingStream):
        sys.stdout = _RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, _RedactingStream):
        sys.stderr = _RedactingStream(sys.stderr)
    sys.excepthook = _excepthook
