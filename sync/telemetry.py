"""What operators see: log lines, progress bars, Prometheus metrics. No sync logic here.

- Logs: one line per event; human-readable text, or JSON (``--log-format json``) with the run
  id, account, channel and counts as fields, for journald and log shippers. A filter blanks
  every registered secret (``sync.redaction``) from every record, whatever code produced it.
- Progress: a bar per channel on a terminal (pages, rows, rate); nothing when not a terminal.
- Metrics: built from the database (so ``last_success`` survives failed runs and process
  restarts) into a node_exporter textfile written atomically, or served over HTTP.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge, start_http_server, write_to_textfile
from pythonjsonlogger.json import JsonFormatter
from tqdm import tqdm

from sync.redaction import redact
from sync.store import ChannelStatus

__all__ = ["Metrics", "ProgressBars", "configure_logging"]

_FIELDS = ("run_id", "account", "channel", "outcome", "pages", "entries", "added", "removed",
           "seconds", "fetch_seconds", "diff_seconds", "verify_seconds", "apply_seconds")


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class _TextFormatter(logging.Formatter):
    """``2026-11-27T17:00:00Z INFO sync.job: sweep succeeded [account=… channel=sms …]``"""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s",
                         datefmt="%Y-%m-%dT%H:%M:%SZ")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={getattr(record, k)}" for k in _FIELDS if hasattr(record, k)]
        return f"{line} [{' '.join(fields)}]" if fields else line


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(
            "{asctime}{levelname}{name}{message}", style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%SZ"))
        handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
    else:
        handler.setFormatter(_TextFormatter())
    handler.addFilter(_RedactSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "alembic", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class ProgressBars:
    """A tqdm bar per channel while pages are fetched; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bars: dict[str, tqdm] = {}

    def update(self, channel: str, pages: int, rows: int) -> None:
        if not self.enabled:
            return
        bar = self._bars.get(channel)
        if bar is None:
            bar = self._bars[channel] = tqdm(desc=channel, unit=" rows", unit_scale=True,
                                             leave=False, file=sys.stderr)
        bar.update(rows - bar.n)
        bar.set_postfix(pages=pages, refresh=False)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


class Metrics:
    """The ``blocklist_sync_*`` gauges, per account and channel, from the database."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("account", "channel")

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"blocklist_sync_{name}", doc, labels, registry=self.registry)

        self.last_success = gauge("last_success_timestamp_seconds",
                                  "Unix time the last succeeded sweep finished.")
        self.last_run = gauge("last_run_timestamp_seconds", "Unix time the last sweep finished.")
        self.last_run_success = gauge("last_run_success",
                                      "1 if the last sweep succeeded, else 0 (dry runs do not count).")
        self.duration = gauge("duration_seconds", "Duration of the last sweep.")
        self.entries = gauge("entries", "Numbers currently blocklisted.")
        self.added = gauge("added", "Numbers the last sweep added.")
        self.removed = gauge("removed", "Numbers the last sweep removed.")
        self.pages = gauge("pages", "Listing pages the last sweep fetched.")
        self.last_run_rejected = gauge("last_run_rejected",
                                       "Listed rows the last sweep rejected as no phone number.")

    def update(self, statuses: Iterable[ChannelStatus]) -> None:
        for s in statuses:
            labels = (s.account_sid, s.channel)
            self.entries.labels(*labels).set(s.entries)
            if s.last_success_at is not None:
                self.last_success.labels(*labels).set(s.last_success_at.timestamp())
            if s.last_finished_at is None:  # the last run is still going
                continue
            self.last_run.labels(*labels).set(s.last_finished_at.timestamp())
            self.last_run_success.labels(*labels).set(
                1 if s.last_status == "succeeded" else 0)
            if s.last_started_at is not None:
                self.duration.labels(*labels).set(
                    (s.last_finished_at - s.last_started_at).total_seconds())
            applied = s.last_status == "succeeded"  # a held run's counts were not applied
            self.added.labels(*labels).set(s.last_added or 0 if applied else 0)
            self.removed.labels(*labels).set(s.last_removed or 0 if applied else 0)
            self.pages.labels(*labels).set(s.last_pages or 0)
            self.last_run_rejected.labels(*labels).set(s.last_rejected or 0)

    def write_textfile(self, path: str) -> None:
        """Atomic: prometheus_client writes a temporary file and renames it over ``path``."""
        write_to_textfile(path, self.registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
