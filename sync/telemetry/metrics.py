"""The Prometheus metrics (:class:`Metrics`): the ``blocklist_sync_*`` gauges per account and
channel, built from the database, the process's ``_total`` counters (:mod:`sync.counters`) and a
``build_info`` gauge; written as a node_exporter textfile or served over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import ClassVar

from prometheus_client import CollectorRegistry, Gauge, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from sync import __version__
from sync.counters import COUNTS
from sync.files import write_atomically
from sync.store import ChannelStatus
from sync.vocabulary import RunStatus

__all__ = ["CannotListen", "Metrics"]


class _Counts(Collector):
    """:data:`sync.counters.COUNTS` as Prometheus counters, read at each collection."""

    HELP: ClassVar[dict[str, str]] = {
        "http_requests": "HTTP requests sent to Kaleyra by this process (retries and checks included).",
        "http_retries": "Kaleyra requests this process sent again after a retryable error.",
        "rate_limited": "Kaleyra answers 429 (rate limited) this process received; each slows its pace.",
        "rejected_rows": "Listed rows this process rejected as no phone number (left out).",
    }

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, value in COUNTS.snapshot().items():
            yield CounterMetricFamily(f"blocklist_sync_{name}", self.HELP[name], value=value)


class Metrics:
    """The ``blocklist_sync_*`` gauges, per account and channel, from the database.

    The ``last_run_*`` gauges describe the last sweep (dry runs left out). A ``cancelled``
    sweep is neither a success nor a failure: ``last_run_success`` is not exported for it, and
    staleness shows through ``last_success_timestamp_seconds``. ``blocklist_sync_added``,
    ``_removed``, ``_pages`` and ``_duration_seconds`` are the old names of four ``last_run_*``
    gauges, renamed in 0.2 and still published so dashboards can move; they go in
    :attr:`REMOVED_IN` (the help text, the operators' guide and the changelog all say so).
    """

    # Every status but dry_run: a review is never a channel's last sweep.
    STATUSES = tuple(str(s) for s in RunStatus if s is not RunStatus.DRY_RUN)
    REMOVED_IN: ClassVar[str] = "0.4"  # the release that drops the DEPRECATED names
    DEPRECATED: ClassVar[dict[str, str]] = {
        "added": "last_run_added",
        "removed": "last_run_removed",
        "pages": "last_run_pages",
        "duration_seconds": "last_run_duration_seconds",
    }

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("account", "channel")

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"blocklist_sync_{name}", doc, labels + extra, registry=self.registry)

        self.last_success = gauge(
            "last_success_timestamp_seconds", "Unix time the last succeeded sweep finished."
        )
        self.last_run = gauge("last_run_timestamp_seconds", "Unix time the last sweep finished.")
        self.last_run_started = gauge(
            "last_run_started_timestamp_seconds", "Unix time the last sweep started (also while it runs)."
        )
        self.last_run_success = gauge(
            "last_run_success",
            "1 if the last sweep succeeded, 0 if it failed or was held; not "
            "exported after a cancelled sweep (dry runs do not count).",
        )
        self.last_run_status = gauge(
            "last_run_status",
            f"1 for the status of the last sweep ({', '.join(self.STATUSES)}), 0 for the others.",
            ("status",),
        )
        self.last_run_duration = gauge("last_run_duration_seconds", "Duration of the last sweep.")
        self.last_run_added = gauge("last_run_added", "Numbers the last sweep added.")
        self.last_run_removed = gauge("last_run_removed", "Numbers the last sweep removed.")
        self.last_run_pages = gauge("last_run_pages", "Listing pages the last sweep fetched.")
        self.entries = gauge("entries", "Numbers currently blocklisted.")
        self.deprecated = {
            old: gauge(old, f"Deprecated (removed in {self.REMOVED_IN}): use blocklist_sync_{new}.")
            for old, new in self.DEPRECATED.items()
        }
        self.last_run_rejected = gauge(
            "last_run_rejected", "Listed rows the last sweep rejected as no phone number."
        )
        self.last_run_unconfirmed = gauge(
            "last_run_unconfirmed",
            "Held numbers the last sweep did not list and could not prove removed (kept).",
        )
        self.configured = gauge(
            "configured",
            "1 for every account and channel the configuration says to sweep, swept yet or not.",
        )
        self.failed_in_a_row = gauge(
            "failed_sweeps_in_a_row",
            "Sweeps that failed since the last one that ended otherwise (0 when the last did not fail).",
        )
        Gauge(
            "blocklist_sync_build_info",
            "Always 1; the version of blocklist-sync publishing these metrics.",
            ("version",),
            registry=self.registry,
        ).labels(__version__).set(1)
        self.registry.register(_Counts())

    def update(
        self, statuses: Iterable[ChannelStatus], failed_in_a_row: Mapping[tuple[str, str], int] | None = None
    ) -> None:
        for s in statuses:
            labels = (s.account_sid, s.channel)
            self.configured.labels(*labels).set(1)
            if failed_in_a_row is not None:
                self.failed_in_a_row.labels(*labels).set(failed_in_a_row.get(labels, 0))
            self.entries.labels(*labels).set(s.entries)
            if s.last_success_at is not None:
                self.last_success.labels(*labels).set(s.last_success_at.timestamp())
            if s.last_status is None:  # configured, never swept
                continue
            for status in self.STATUSES:
                self.last_run_status.labels(*labels, status).set(int(s.last_status == status))
            if s.last_started_at is not None:
                self.last_run_started.labels(*labels).set(s.last_started_at.timestamp())
            if s.last_finished_at is None:  # the last run is still going
                continue
            self.last_run.labels(*labels).set(s.last_finished_at.timestamp())
            if s.last_status == RunStatus.CANCELLED:  # neither: drop a value an earlier update set
                with contextlib.suppress(KeyError):
                    self.last_run_success.remove(*labels)
            else:
                self.last_run_success.labels(*labels).set(1 if s.last_status == RunStatus.SUCCEEDED else 0)
            applied = s.last_status == RunStatus.SUCCEEDED  # a held run's counts were not applied
            values = {
                "duration_seconds": (s.last_finished_at - s.last_started_at).total_seconds()
                if s.last_started_at is not None
                else 0.0,
                "added": s.last_added or 0 if applied else 0,
                "removed": s.last_removed or 0 if applied else 0,
                "pages": s.last_pages or 0,
            }
            for name, value in values.items():
                getattr(
                    self, f"last_run_{name}" if name != "duration_seconds" else "last_run_duration"
                ).labels(*labels).set(value)
                self.deprecated[name].labels(*labels).set(value)
            self.last_run_rejected.labels(*labels).set(s.last_rejected or 0)
            self.last_run_unconfirmed.labels(*labels).set(s.last_unconfirmed or 0)

    def write_textfile(self, path: str) -> None:
        """Written whole, and over a regular file only (:func:`sync.files.write_atomically`;
        prometheus_client's own ``write_to_textfile`` renames over whatever is at the path)."""
        write_atomically(path, generate_latest(self.registry).decode())

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve the metrics over HTTP; :class:`CannotListen` where that cannot be."""
        try:
            start_http_server(port, addr=addr, registry=self.registry)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a host name label over 63 characters
            why = exc.strerror if isinstance(exc, OSError) else "not a host name"
            raise CannotListen(addr, port, str(why)) from None


class CannotListen(Exception):
    """The metrics port cannot be served at ``address`` (``why``: the system's reason)."""

    def __init__(self, address: str, port: int, why: str) -> None:
        super().__init__(f"cannot listen on {address} port {port} ({why})")
        self.address, self.port, self.why = address, port, why
