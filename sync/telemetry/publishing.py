"""When and where the metrics go (:class:`Publisher`): rebuilt from the database when a
sweep's ``running`` row is committed and again when it ends, not only after a whole run (a
sweep in progress is visible, so a stuck one can alert), into the textfile and to a Pushgateway
(``--pushgateway``), where a CronJob has no file and no port to scrape."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol
from urllib.error import HTTPError

from prometheus_client import push_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler

from sync import health
from sync.redaction import redact
from sync.settings import Account, Pushgateway
from sync.store import Store
from sync.telemetry.metrics import Metrics

__all__ = ["PUSH_JOB", "PUSH_RETRY", "Publisher"]


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
