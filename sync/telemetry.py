"""What operators see: log lines, progress bars, Prometheus metrics. No sync logic here.

- Logs: one line per event; human-readable text, or JSON (``--log-format json``) for journald
  and log shippers. The JSON keys are a documented, flat, stable set (:data:`JSON_FIELDS`, the
  README lists them): a field that is not in it is not emitted, so a library's extras (dotted
  ``stamina.*`` keys, say) never leak into the format. Timestamps are UTC with milliseconds.
  A filter blanks every registered secret (``sync.redaction``) from every record, whatever code produced it.
- Progress: a bar per channel on a terminal (pages, rows, rate); nothing when not a terminal.
  Log lines are written through ``tqdm.write`` (what tqdm's own logging redirect does), so a
  line never lands in the middle of a bar; our handler does it itself because tqdm's redirect
  swaps handlers and would drop the secret filter with them.
- Metrics: built from the database (so ``last_success`` survives failed runs and process
  restarts) into a node_exporter textfile written atomically, or served over HTTP. Published
  (:class:`Publisher`) when a sweep's ``running`` row is committed and again when it ends, not
  only after a whole run: a sweep in progress is visible, so a stuck one can alert. Besides the
  gauges per account and channel, ``_total`` counters of what this process did
  (:mod:`sync.counters`) and a ``build_info`` gauge.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, NoReturn, Protocol

from prometheus_client import CollectorRegistry, Gauge, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from pythonjsonlogger.json import JsonFormatter
from tqdm import tqdm

from sync import __version__, health
from sync.counters import COUNTS
from sync.files import write_atomically
from sync.redaction import redact
from sync.settings import Account
from sync.store import ChannelStatus, Store
from sync.vocabulary import RunStatus

__all__ = [
    "JSON_FIELDS",
    "LOG_LEVELS",
    "LogSettings",
    "Metrics",
    "ProgressBars",
    "Publisher",
    "configure_logging",
]

# Context fields a log call may carry (``extra=``), in the order text lines show them.
_FIELDS = (
    "run_id",
    "account",
    "channel",
    "outcome",
    "pages",
    "entries",
    "added",
    "removed",
    "seconds",
    "fetch_seconds",
    "diff_seconds",
    "verify_seconds",
    "apply_seconds",
    "offset",
    "attempt",
    "attempts",
    "wait_seconds",
)
# Every key a JSON log line can have. Stable across releases: add, never rename or remove.
JSON_FIELDS = ("time", "level", "logger", "message", *_FIELDS, "error")
LOG_LEVELS = ("debug", "info", "warning", "error")


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def _utc_millis(record: logging.LogRecord) -> str:
    """``2026-11-27T17:00:00.123Z``: UTC, milliseconds, the same in text and JSON."""
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: getattr(record, k) for k in _FIELDS if getattr(record, k, None) is not None}


class _TextFormatter(logging.Formatter):
    """``2026-11-27T17:00:00.123Z INFO sync.job: sweep succeeded [account=… channel=sms …]``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_millis(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={v}" for k, v in _fields(record).items()]
        return f"{line} [{' '.join(fields)}]" if fields else line


class _JsonFormatter(JsonFormatter):
    """One JSON object per line with exactly the keys in :data:`JSON_FIELDS` (those set)."""

    def add_fields(
        self, log_record: dict[str, object], record: logging.LogRecord, message_dict: dict[str, object]
    ) -> None:
        log_record.update(
            time=_utc_millis(record),
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
            **_fields(record),
        )
        if record.exc_info or record.exc_text:
            log_record["error"] = record.exc_text or self.formatException(record.exc_info)


class _TqdmSafeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes through ``tqdm.write``, which clears the progress bars, prints the line and
    redraws them: a log line never lands in the middle of a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def resolve_log_level(level: str | None, verbose: int = 0, quiet: int = 0) -> int:
    """The level from ``--log-level`` or ``-v``/``-q`` (each once more lowers or raises it a
    step from INFO). The command line refuses both at once (which one was meant?); here the
    level named wins."""
    if level:
        return logging.getLevelNamesMapping()[level.upper()]
    return min(max(logging.INFO + 10 * (quiet - verbose), logging.DEBUG), logging.ERROR)


@dataclass(frozen=True)
class LogSettings:
    """``--log-format``, ``--log-level`` and its shorthands ``-v`` / ``-q``."""

    log_format: str = "text"
    log_level: str | None = None
    verbose: int = 0
    quiet: int = 0

    def configure(self, default: int = logging.INFO) -> None:
        """Install the handler; ``default`` is the level when no flag asks for another."""
        asked = self.log_level or self.verbose or self.quiet
        level = resolve_log_level(self.log_level, self.verbose, self.quiet) if asked else default
        configure_logging(self.log_format, level)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    handler = _TqdmSafeHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    handler.addFilter(_RedactSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # APScheduler says at INFO what our own lines already say ("Added job", "Running job",
    # "Job executed successfully", every tick): the operator's log gets them only with debug.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)


class ProgressBars:
    """A tqdm bar per channel while pages are fetched; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bars: dict[str, tqdm[NoReturn]] = {}

    def update(self, channel: str, pages: int, rows: int) -> None:
        if not self.enabled:
            return
        bar = self._bars.get(channel)
        if bar is None:  # one bar per channel, made on its first page
            bar = tqdm(desc=channel, unit=" rows", unit_scale=True, leave=False, file=sys.stderr)
            self._bars[channel] = bar
        bar.update(rows - bar.n)
        bar.set_postfix(pages=pages, refresh=False)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


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
    gauges, kept for one release (0.2) so dashboards can move; they go in 0.3.
    """

    # Every status but dry_run: a review is never a channel's last sweep.
    STATUSES = tuple(str(s) for s in RunStatus if s is not RunStatus.DRY_RUN)
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
            old: gauge(old, f"Deprecated (removed in 0.3): use blocklist_sync_{new}.")
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
        start_http_server(port, addr=addr, registry=self.registry)


class _Ended(Protocol):
    """What :meth:`Publisher.sweep_ended` reads of a sweep's result (``sync.sweep.SweepResult``;
    not imported, so telemetry does not import the client through the sweep)."""

    @property
    def run_id(self) -> int | None: ...


class Publisher:
    """Rebuilds :class:`Metrics` from the database and writes the textfile, when told to.

    ``run`` and ``schedule`` publish when they start, when a sweep's ``running`` row is
    committed (:meth:`sweep_started`) and when a sweep that wrote a run row ends
    (:meth:`sweep_ended`): the textfile and the port show a sweep in progress while it runs,
    which is what ``BlocklistSyncStuck`` needs. Only ``accounts``' pairs are published (every
    configured pair, whatever ``--account`` or ``--shard`` swept: the textfile is replaced as a
    whole). Callbacks come from several threads in ``schedule``: one publication at a time.
    Publishing never fails a sweep: a database or file error is one warning line.
    """

    def __init__(
        self,
        store: Store,
        accounts: list[Account],
        textfile: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.textfile = textfile
        self.metrics = metrics or Metrics()
        self._lock = threading.Lock()

    def publish(self) -> None:
        with self._lock:
            try:
                judged = health.scope(self.store.channel_statuses(), self.accounts).judged
                self.metrics.update(judged, self.store.failed_in_a_row())
            except Exception as exc:  # the database may be what is failing; the sweep says so
                logging.getLogger("sync.telemetry").warning(
                    "cannot read the metrics from the database (%s); they are published again "
                    "after the next sweep",
                    redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__),
                )
                return
            if self.textfile:
                self._write(self.textfile)

    def _write(self, path: str) -> None:
        """Write the textfile; failing to is one warning line, never the exit code. Its
        directory was checked at start, and what the sweeps applied stays applied whatever
        happens to it since (exit 1 would say nothing was)."""
        try:
            self.metrics.write_textfile(path)
        except OSError as exc:
            logging.getLogger("sync.cli").warning(
                "cannot write the metrics file %s (%s); the sweeps' outcomes stand", path, exc.strerror
            )

    def sweep_started(self, account_sid: str, channel: str, run_id: int) -> None:
        """A :data:`~sync.sweep.StartCallback`: the ``running`` row is committed."""
        self.publish()

    def sweep_ended(self, result: _Ended) -> None:
        """An ``on_result`` callback: publishes when the sweep wrote a run row (a skipped or
        not started channel changed nothing the metrics read)."""
        if result.run_id is not None:
            self.publish()
