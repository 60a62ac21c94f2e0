"""The read model: what ``status``, the metrics and the run summary read, on connections of their own.

:mod:`sync.health`, :mod:`sync.telemetry` and :mod:`sync.output` read the store through this
alone, and never lock a channel: each read opens a connection, reads and lets go. Which run was
a channel's last sweep or last success is the ledger's to say (:mod:`sync.store.ledger`); a
channel's health is the ``blocklist_sync_health`` view's, which dashboards query too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from sync.store import channels
from sync.store.dialect import as_utc, dialect_for
from sync.store.schema import UtcTime

__all__ = ["ChannelStatus", "ReadModel"]


@dataclass(frozen=True)
class ChannelStatus:
    account_sid: str
    channel: str
    entries: int
    last_run_id: int | None
    last_status: str | None
    last_started_at: dt.datetime | None
    last_finished_at: dt.datetime | None
    last_pages: int | None
    last_added: int | None
    last_removed: int | None
    last_rejected: int | None
    last_unconfirmed: int | None
    last_error: str | None
    last_success_at: dt.datetime | None  # finished_at of the last succeeded sweep


class ReadModel:
    """Reads of the whole install, each on a connection of its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = dialect_for(engine)

    def now(self) -> dt.datetime:
        """The database's time: what every stored time was taken from, so the only clock
        an age (``status --max-age``, the shards' skip) may be measured against."""
        with self.engine.connect() as connection:
            return self.dialect.now(connection)

    def install_name(self) -> str:
        """Which install this is, in words safe to publish (no user, no password):
        ``host:port/database``, with ``/schema`` for an install outside ``public``, as the
        channels' locks tell installs apart; a SQLite file's path. It names the Pushgateway
        group every process of the install pushes into, whatever pod or shard it runs in."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite":
            return str(Path(url.database or "").resolve())
        with self.engine.connect() as connection:
            schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        host = url.host or str(url.query.get("host") or "localhost")
        where = f"{host}:{url.port or 5432}/{url.database or ''}"
        return where if schema in (None, "public") else f"{where}/{schema}"

    def channel_statuses(self) -> list[ChannelStatus]:
        """The last sweep, last success and entry count of every (account, channel) swept.

        Read from the ``blocklist_sync_health`` view alone, the one definition of a channel's
        health: ``status``, the metrics and the dashboards that query the view cannot disagree.
        (Dry runs are reviews, not sweeps: the view never counts one as the last sweep, so a dry
        run of a held sweep cannot make its channel look healthy.)
        """
        query = text("""
            SELECT account_sid, channel, entries, last_run_id, last_run_status AS last_status,
                   last_run_started_at AS last_started_at, last_run_finished_at AS last_finished_at,
                   last_run_pages AS last_pages, last_run_added AS last_added,
                   last_run_removed AS last_removed, last_run_rejected AS last_rejected,
                   last_run_unconfirmed AS last_unconfirmed,
                   last_run_error AS last_error, last_success_at
            FROM blocklist_sync_health
            ORDER BY account_sid, channel""").columns(
            last_started_at=UtcTime, last_finished_at=UtcTime, last_success_at=UtcTime
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        times = ("last_started_at", "last_finished_at", "last_success_at")
        return [ChannelStatus(**{str(k): as_utc(v) if k in times else v for k, v in r.items()}) for r in rows]

    def run_window(self, run_id: int) -> tuple[dt.datetime | None, dt.datetime | None]:
        """(``not_before``, ``detected_at``) of a run, for the run summary
        (:func:`~sync.store.channels.run_window`)."""
        with self.engine.connect() as connection:
            return channels.run_window(connection, run_id)

    def failed_in_a_row(self) -> dict[tuple[str, str], int]:
        """How many sweeps of each (account, channel) failed since its last sweep that ended
        otherwise, for the alert on failures (:func:`~sync.store.channels.failed_in_a_row`)."""
        with self.engine.connect() as connection:
            return channels.failed_in_a_row(connection)
