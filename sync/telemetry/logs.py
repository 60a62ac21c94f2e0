"""Log lines: one per event; human-readable text, or JSON (``--log-format json``) for journald
and log shippers. The JSON keys are a documented, flat, stable set (:data:`JSON_FIELDS`;
docs/operators.md#logs-and-metrics lists them): a field that is not in it is not emitted, so a
library's extras (dotted ``stamina.*`` keys, say) never leak into the format. Timestamps are
UTC with milliseconds. A filter blanks every registered secret (``sync.redaction``) from every
record, whatever code produced it. Lines are written through ``tqdm.write`` (what tqdm's own
logging redirect does), so a line never lands in the middle of a progress bar; our handler does
it itself because tqdm's redirect swaps handlers and would drop the secret filter with them."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from dataclasses import dataclass

from pythonjsonlogger.json import JsonFormatter
from tqdm import tqdm

from sync.redaction import redact

__all__ = ["JSON_FIELDS", "LOG_LEVELS", "LogSettings", "configure_logging", "resolve_log_level"]

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
