"""What operators see: log lines, progress bars, Prometheus metrics. No sync logic here.

- Logs: one line per event; human-readable text, or JSON (``--log-format json``) for journald
  and log shippers. The JSON keys are a documented, flat, stable set (:data:`JSON_FIELDS`;
  docs/operators.md#logs-and-metrics lists them): a field that is not in it is not emitted, so
  a library's extras (dotted ``stamina.*`` keys, say) never leak into the format. Timestamps
  are UTC with milliseconds. A filter blanks every registered secret (``sync.redaction``) from
  every record, whatever code produced it.
- Progress: a bar per channel on a terminal (rows against the last sweep's size, rate, time
  left); elsewhere a log line at each tenth of that size and at least every 30 s (:class:`Progress`).
  Log lines are written through ``tqdm.write`` (what tqdm's own logging redirect does), so a
  line never lands in the middle of a bar; our handler does it itself because tqdm's redirect
  swaps handlers and would drop the secret filter with them.
- Metrics: built from the database (so ``last_success`` survives failed runs and process
  restarts) into a node_exporter textfile written atomically, or served over HTTP. Published
  (:class:`Publisher`) when a sweep's ``running`` row is committed and again when it ends, not
  only after a whole run: a sweep in progress is visible, so a stuck one can alert. The same
  series can be pushed to a Pushgateway (``--pushgateway``), where a CronJob has no file and
  no port to scrape. Besides the
  gauges per account and channel, ``_total`` counters of what this process did
  (:mod:`sync.counters`) and a ``build_info`` gauge.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, NoReturn, Protocol
from urllib.error import HTTPError

from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.registry import Collector
from pythonjsonlogger.json import JsonFormatter
from tqdm import tqdm

from sync import __version__, health
from sync.counters import COUNTS
from sync.files import write_atomically
from sync.redaction import redact
from sync.settings import Account, Pushgateway
from sync.store import ChannelStatus, Store
from sync.vocabulary import RunStatus

__all__ = [
    "JSON_FIELDS",
    "LOG_LEVELS",
    "CannotListen",
    "LogSettings",
    "Metrics",
    "Progress",
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
    "fetch_wait_seconds",
    "diff_seconds",
    "verify_seconds",
    "apply_seconds",
    "statement_seconds",
    "rows",
    "rows_per_second",
    "expected_rows",
    "share",
    "eta_seconds",
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


class _Paged(Protocol):
    """What :class:`Progress` reads of a sweep's progress (``sync.sweep.PageProgress``; not
    imported, so telemetry does not import the client through the sweep)."""

    @property
    def account_sid(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def run_id(self) -> int | None: ...
    @property
    def pages(self) -> int: ...
    @property
    def rows(self) -> int: ...
    @property
    def expected_rows(self) -> int | None: ...
    @property
    def done(self) -> bool: ...


@dataclass
class _Paging:
    """One channel's listing as :class:`Progress` follows it."""

    seen: _Paged
    started: float
    last_page_at: float
    last_line_at: float
    tenth: int = 0  # tenths of the expected size reached, as last said in a line


class Progress:
    """How far each sweep's listing has come, where the operator looks.

    On a terminal: a tqdm bar per channel (rows against the last succeeded sweep's size, with
    tqdm's rate and time left). Elsewhere (journald, ``kubectl logs``, a cron log), where a bar
    is never seen: a log line (``sync.progress``) at each tenth of that size and at least every
    ``interval`` seconds while paging, saying pages, rows, rate, the share of the last size and
    the time left, also as JSON fields. Lines come from the pages as they arrive and, for a
    listing that stalls, from a thread that wakes every second: a channel never goes
    ``interval`` seconds without one. ``clock`` and ``interval`` are for tests.
    """

    def __init__(
        self,
        terminal: bool | None = None,
        *,
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.interval = interval
        self.clock = clock
        self._bars: dict[tuple[str, str], tqdm[NoReturn]] = {}
        self._paging: dict[tuple[str, str], _Paging] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def update(self, progress: _Paged) -> None:
        """A :data:`~sync.sweep.PageCallback`."""
        if self.terminal:
            self._draw(progress)
            return
        with self._lock:
            now = self.clock()
            key = (progress.account_sid, progress.channel)
            if progress.done:
                self._paging.pop(key, None)
                return
            paging = self._paging.get(key)
            if paging is None:  # paging starts: the clock for its rate starts now
                self._paging[key] = _Paging(progress, now, now, now)
                self._start_heartbeat()
                return
            paging.seen, paging.last_page_at = progress, now
            tenth = _tenths(progress)
            if tenth > paging.tenth or now - paging.last_line_at >= self.interval:
                self._say(paging, now, tenth)

    def tick(self) -> None:
        """A line for each listing that has gone ``interval`` seconds without one (no page
        arrived): called every second by the heartbeat thread."""
        with self._lock:
            now = self.clock()
            for paging in self._paging.values():
                if now - paging.last_line_at >= self.interval:
                    self._say(paging, now, _tenths(paging.seen))

    def close(self) -> None:
        self._stopped.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def _say(self, paging: _Paging, now: float, tenth: int) -> None:
        seen = paging.seen
        paging.last_line_at, paging.tenth = now, max(tenth, paging.tenth)
        elapsed = max(now - paging.started, 1e-9)
        rate = seen.rows / elapsed
        fields: dict[str, object] = {
            "account": seen.account_sid,
            "channel": seen.channel,
            "pages": seen.pages,
            "rows": seen.rows,
            "rows_per_second": round(rate, 1),
        }
        if seen.run_id is not None:
            fields["run_id"] = seen.run_id
        pages = f"{seen.pages:,} page{'' if seen.pages == 1 else 's'}"
        said = f"{seen.channel}: {pages}, {seen.rows:,} rows at {rate:,.0f} rows/s"
        expected = seen.expected_rows
        if expected:
            share = seen.rows / expected
            fields.update(expected_rows=expected, share=round(share, 3))
            said += f", {share:.0%} of the last sweep's {expected:,}"
            if seen.rows < expected and rate > 0:
                left = (expected - seen.rows) / rate
                fields["eta_seconds"] = round(left)
                said += f", about {_duration(left)} left"
            elif seen.rows >= expected:
                said += ", as many as last time" if seen.rows == expected else ", more than last time"
        else:
            said += " (no earlier sweep to measure against)"
        waiting = now - paging.last_page_at
        if waiting >= self.interval:
            said += f"; no page for {_duration(waiting)}"
        logging.getLogger("sync.progress").info("%s", said, extra=fields)

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stopped.wait(1.0):
            self.tick()

    def _draw(self, progress: _Paged) -> None:
        key = (progress.account_sid, progress.channel)
        bar = self._bars.get(key)
        if bar is None:  # one bar per channel, made when its paging starts
            bar = tqdm(
                desc=progress.channel,
                total=progress.expected_rows or None,  # the last sweep's size: a share and time left
                unit=" rows",
                unit_scale=True,
                leave=False,
                file=sys.stderr,
            )
            self._bars[key] = bar
        bar.update(progress.rows - bar.n)
        bar.set_postfix(pages=progress.pages, refresh=False)


def _tenths(progress: _Paged) -> int:
    """How many tenths of the expected size the listing has reached (0 without one)."""
    expected = progress.expected_rows
    return progress.rows * 10 // expected if expected else 0


def _duration(seconds: float) -> str:
    """``3m05s``, ``1h02m``, ``45s``: a time left, as a person reads it in a log line."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    hours, minutes = divmod(whole // 60, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{whole % 60:02d}s"


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
        pushgateway: Pushgateway | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.textfile = textfile
        self.metrics = metrics or Metrics()
        self.pushgateway = pushgateway
        self.clock = clock
        self._lock = threading.Lock()
        self._instance: str | None = None
        self._push_failed_at: float | None = None  # while pushes fail: when the last one did

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
            if self.pushgateway:
                self._push(self.pushgateway)

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

    def _push(self, gateway: Pushgateway) -> None:
        """Push the same series as the textfile to the Pushgateway, replacing the group
        ``{job="blocklist-sync", instance=<the install>}`` (:meth:`Store.install_name`): every
        pod, shard and host of one install pushes into one group, so the last push holds the
        newest state and no run leaves a group behind. Failing is one warning line, never the
        run's exit code; while pushes fail, one is tried at most every :data:`PUSH_RETRY`
        seconds, so a gateway that does not answer costs a run one ``timeout``, not one per
        sweep."""
        now = self.clock()
        if self._push_failed_at is not None and now - self._push_failed_at < PUSH_RETRY:
            return
        log = logging.getLogger("sync.telemetry")
        try:
            if self._instance is None:
                self._instance = self.store.install_name()
            push_to_gateway(
                gateway.url,
                job=PUSH_JOB,
                registry=self.metrics.registry,
                grouping_key={"instance": self._instance},
                timeout=gateway.timeout,
                handler=functools.partial(_basic_auth, gateway=gateway),
            )
        except Exception as exc:  # the gateway, the network, the database: none fails a sweep
            if self._push_failed_at is None:
                log.warning(
                    "cannot push the metrics to %s (%s); the sweeps' outcomes stand, and pushing is "
                    "tried again in %ds",
                    gateway.url,
                    redact(_why(exc)),
                    PUSH_RETRY,
                )
            self._push_failed_at = now
            return
        if self._push_failed_at is not None:
            log.info("pushing the metrics to %s works again", gateway.url)
        self._push_failed_at = None

    def sweep_started(self, account_sid: str, channel: str, run_id: int) -> None:
        """A :data:`~sync.sweep.StartCallback`: the ``running`` row is committed."""
        self.publish()

    def sweep_ended(self, result: _Ended) -> None:
        """An ``on_result`` callback: publishes when the sweep wrote a run row (a skipped or
        not started channel changed nothing the metrics read)."""
        if result.run_id is not None:
            self.publish()


PUSH_JOB = "blocklist-sync"  # the Pushgateway's job label, as the textfile is blocklist-sync.prom
PUSH_RETRY = 60  # seconds between tries while pushes fail


def _basic_auth(
    url: str,
    method: str,
    timeout: float | None,
    headers: list[tuple[str, str]],
    data: bytes,
    *,
    gateway: Pushgateway,
) -> Callable[[], None]:
    """prometheus_client's handler, with HTTP basic auth when the URL carried a user."""
    if gateway.username is None:
        return default_handler(url, method, timeout, headers, data)
    return basic_auth_handler(url, method, timeout, headers, data, gateway.username, gateway.password)


def _why(exc: BaseException) -> str:
    """Why a push failed, in a few words: urllib's reason (``Connection refused``, ``timed
    out``), an HTTP status, or the first line of anything else."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if reason is not None:
        return str(getattr(reason, "strerror", None) or reason)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
