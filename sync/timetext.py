"""Times in words, in one place: how long (:func:`elapsed_text`), how long ago
(:func:`age_text`) and an instant (:func:`instant_text`), for every line a person reads: a
lock's age beside a timeout, a listing's time left, a plan's age, a channel's last success.

A duration *setting* is another matter: it is written as :func:`sync.settings.parse_duration`
reads it back (``90m``, ``2h``), by :func:`sync.settings.duration_text`.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["age_text", "elapsed_text", "instant_text"]


def elapsed_text(seconds: float) -> str:
    """``0.5s``, ``9s``, ``45s``, ``1m30s``, ``2h05m``, ``3d04h``: two units at most, precise
    enough to set a lock's age beside a timeout (tenths of a second below 10 s)."""
    if seconds < 10:
        return f"{seconds:.1f}".removesuffix(".0") + "s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def age_text(now: dt.datetime, then: dt.datetime | None) -> str:
    """How long before ``now`` the instant ``then`` was (``3h12m ago``), or ``never``."""
    return "never" if then is None else f"{elapsed_text((now - then).total_seconds())} ago"


def instant_text(at: dt.datetime) -> str:
    """``2026-11-01T09:00:00Z``: an instant in UTC, to the second."""
    # isoformat, not strftime: %Y writes year 26 as "26", and a mistyped year must show as typed
    return at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def utc_text(value: dt.datetime | None) -> str:
    """``2026-11-01 09:00:00 UTC``: an instant as lookup and its answers write it, or ``?``."""
    if not value:
        return "?"
    # isoformat, not strftime: %Y writes year 1 as "1"
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", timespec="seconds") + " UTC"
