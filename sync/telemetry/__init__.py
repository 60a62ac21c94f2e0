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

A module per job: :mod:`~sync.telemetry.logs` (the handler, its formats and the secret filter),
:mod:`~sync.telemetry.progress` (bars and progress lines), :mod:`~sync.telemetry.metrics` (the
series, the textfile and the port) and :mod:`~sync.telemetry.publishing` (when they are
rebuilt, and the Pushgateway). This module is the API the rest of ``sync`` imports.
"""

from sync.telemetry.logs import JSON_FIELDS, LOG_LEVELS, LogSettings, configure_logging
from sync.telemetry.metrics import CannotListen, Metrics
from sync.telemetry.progress import Progress
from sync.telemetry.publishing import PUSH_RETRY, Publisher

__all__ = [
    "JSON_FIELDS",
    "LOG_LEVELS",
    "PUSH_RETRY",
    "CannotListen",
    "LogSettings",
    "Metrics",
    "Progress",
    "Publisher",
    "configure_logging",
]
