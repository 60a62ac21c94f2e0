"""The safety guard: when a sweep looks too destructive to apply without a human.

Both rules and their limits live here, so changing what is held is one file. A held sweep is
recorded ``held`` with nothing applied; the operator reviews it with ``--dry-run`` and applies
it with ``--force``.

1. An empty listing over a non-empty channel: an outage, a wrong account or a vendor bug looks
   exactly like an emptied blocklist, so it is held before any request is spent confirming it.
2. A listing whose rows say they belong to another channel: a ``channel_type`` code another
   channel of the account carries, or a mix of codes this channel has not shown before (its
   first sweep included). A server that ignores ``channel`` answers every channel with the
   same rows, and would fill each with the others' numbers. The codes are not documented
   (shared/api/NOTES.md), so nothing maps them: each channel's are learned from the listings
   applied (``blocklist_channel_types``), and ``--force`` accepts new ones. One code per
   channel, whatever it is, is never held; a row without a code is accepted, and so is a row
   whose ``channel_type`` is no code at all (control characters, markup, a JSON object, 17
   characters or more: :func:`is_code`): one odd row is not another channel's listing, and
   must not block its own.
3. A sweep that would remove more than ``max_removal_fraction`` of a channel holding more than
   ``min_entries`` numbers (after every removal was confirmed one by one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard

__all__ = ["GuardLimits", "channel_type_hold", "empty_listing_hold", "is_code", "removal_hold"]

# What a channel_type code looks like: the sample's "3", or any short token. Anything else a
# row carries there is garbage, stored (cleaned) but never read as a channel's code.
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,16}")


def is_code(channel_type: str | None) -> TypeGuard[str]:
    """Whether a row's ``channel_type`` can be a channel's code (see :func:`channel_type_hold`)."""
    return channel_type is not None and _CODE.fullmatch(channel_type) is not None


@dataclass(frozen=True)
class GuardLimits:
    max_removal_fraction: float = 0.20  # hold if it would remove more than this share ...
    min_entries: int = 100  # ... of a channel that holds more than this many entries


def empty_listing_hold(listed: int, held: int) -> str | None:
    """Why an empty listing is held, or None."""
    if listed == 0 and held > 0:
        return (
            f"the listing returned no numbers while {held} are held; an outage looks the "
            "same as an emptied blocklist"
        )
    return None


def removal_hold(held: int, removed: int, limits: GuardLimits) -> str | None:
    """Why removing ``removed`` of ``held`` entries is held, or None."""
    if held > limits.min_entries and removed > limits.max_removal_fraction * held:
        return (
            f"it would remove {removed} of {held} entries ({removed / held:.0%}, over the "
            f"{limits.max_removal_fraction:.0%} limit)"
        )
    return None


def channel_type_hold(
    channel: str,
    listed: Mapping[str, int],
    learned: Mapping[str, set[str]],
    elsewhere: Mapping[str, set[str]] | None = None,
) -> str | None:
    """Why a listing whose rows carry the ``channel_type`` codes ``listed`` (code -> rows) is
    held, or None. ``learned``: the codes each channel of the account has carried;
    ``elsewhere``: those each other channel's listing carries now. A code this channel has
    carried itself is never another's (two channels may share one, once accepted)."""
    own = learned.get(channel, set())
    others: dict[str, set[str]] = {}
    for source in (learned, elsewhere or {}):
        for other, codes in source.items():
            if other != channel:
                others.setdefault(other, set()).update(codes)
    foreign = {
        code: sorted(other for other, codes in others.items() if code in codes)
        for code in listed
        if code not in own
    }
    foreign = {code: channels for code, channels in foreign.items() if channels}
    if foreign:
        said = "; ".join(
            f"{listed[code]} row(s) carry channel_type {code!r}, which the account's "
            f"{' and '.join(channels)} {'channels carry' if len(channels) > 1 else 'channel carries'}"
            for code, channels in sorted(foreign.items())
        )
        return f"{said}: is the server ignoring the channel asked for?"
    if len(listed) > 1 and not set(listed) <= own:
        counts = ", ".join(f"{code!r} ({rows})" for code, rows in sorted(listed.items()))
        shown = ", ".join(repr(code) for code in sorted(own)) or "none yet"
        return (
            f"the listing mixes channel_type codes {counts}, which this channel has not shown "
            f"before (it has carried: {shown}); is the server ignoring the channel asked for?"
        )
    return None
