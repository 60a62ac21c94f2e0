"""The ``channel_type`` codes each channel has carried (``blocklist_channel_types``).

The sweep reads them before it applies (:meth:`~sync.store.LockedChannel.channel_types`): a
listing that carries codes its channel never did, and another channel of the account does,
is held by the guard (:func:`sync.guard.channel_type_hold`). Every apply learns the codes of
the listing it applied (:func:`learn`), within the apply's transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select

from sync.store.schema import blocklist_channel_types

if TYPE_CHECKING:
    from sync.store.session import LockedChannel

__all__ = ["carried", "learn"]

_codes = blocklist_channel_types.c


def carried(session: LockedChannel) -> dict[str, set[str]]:
    """The channel_type codes each channel of this account has carried, by channel."""
    learned: dict[str, set[str]] = {}
    for channel, code in session.connection.execute(
        select(_codes.channel, _codes.channel_type).where(_codes.account_sid == session.account_sid)
    ):
        learned.setdefault(channel, set()).add(code)
    return learned


def learn(session: LockedChannel, channel_types: Iterable[str], *, run_id: int, at: dt.datetime) -> None:
    """Within an apply: the codes this channel's applied listing carried."""
    known = set(
        session.connection.execute(
            select(_codes.channel_type).where(
                _codes.account_sid == session.account_sid, _codes.channel == session.channel
            )
        ).scalars()
    )
    new = sorted(set(channel_types) - known)
    if new:
        session.connection.execute(
            blocklist_channel_types.insert(),
            [
                {**session.where, "channel_type": code, "first_run_id": run_id, "first_seen_at": at}
                for code in new
            ],
        )
