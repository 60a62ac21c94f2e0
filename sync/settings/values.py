"""The settings that are one value each, read and checked: how hard and how long a sweep may
press (:class:`Tuning`), durations, instants, a shard, a file to write, the Pushgateway, an env
file, the PostgreSQL schema.

Each parser takes ``setting``, how the caller names what it reads (the CLI passes the flag or
the variable the operator set), and refuses a value in one :class:`ConfigError` line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sync.files import what_is_at
from sync.redaction import register_secret
from sync.settings.reading import MAX_CONFIG_FILE_BYTES, ConfigError, quoted, read_regular_file

__all__ = [
    "MAX_DURATION_SECONDS",
    "SCHEMA_SETTING",
    "Pushgateway",
    "Shard",
    "Tuning",
    "check_output_file",
    "duration_text",
    "parse_duration",
    "parse_instant",
    "parse_pushgateway",
    "parse_schema",
    "parse_shard",
    "read_env_file",
]


@dataclass(frozen=True)
class Tuning:
    """How hard a sweep may press on Kaleyra, and how long it may take."""

    concurrency: int = 4  # listing requests in flight at once
    max_rps: float | None = None  # a ceiling on requests per second
    max_pages: int = 200_000  # a sweep past this many pages is an error, not data
    sweep_timeout: float = 2 * 3600.0  # seconds; a longer sweep stops and applies nothing
    # seconds for all of a run's sweeps; the one in progress then stops and applies nothing,
    # those not started fail. Below a supervisor's kill (systemd, Kubernetes), so a slow run
    # ends `failed` with its reason, not killed and `cancelled`. None: no limit but the sweeps'.
    run_timeout: float | None = None


@dataclass(frozen=True)
class Shard:
    """This process's share of the (account, channel) pairs: index ``index`` of ``count``.

    Pairs are sorted by (SID, channel) and dealt out round-robin, so N shards of one
    configuration are disjoint, cover every pair exactly once and differ in size by one at
    most. A pair belongs to the same shard as long as the configuration is the same.
    """

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, position: int) -> bool:
        return position % self.count == self.index


# ASCII digits only, in every number read from a setting: ``str.isdigit`` accepts "²" (which
# ``int`` then refuses) and ``\d`` accepts "٣" (which ``int`` reads as 3). Six digits are more
# shards than Kubernetes lets an Indexed Job have.
_SHARD = re.compile(r"\s*(?:([0-9]{1,6})\s*/\s*)?([0-9]{1,6})\s*", re.ASCII)
_INDEX = re.compile(r"\s*([0-9]{1,6})\s*", re.ASCII)


def parse_shard(value: str, env: Mapping[str, str], setting: str) -> Shard:
    """``K/N`` (0-based K, as Kubernetes numbers an Indexed Job's pods), or ``N`` alone with K
    taken from ``JOB_COMPLETION_INDEX``, which an Indexed Job sets in every pod."""
    match = _SHARD.fullmatch(value)
    if not match:
        raise ConfigError(
            f"{setting}: {quoted(value)} is not a shard; write K/N (K from 0 to N-1, in digits 0-9), "
            "or N inside an Indexed Job"
        )
    index_text, count = match.group(1), int(match.group(2))
    if index_text is None:
        index_text = _job_completion_index(env, f"{setting} {value.strip()}")
    index = int(index_text)
    if count < 1 or index >= count:
        raise ConfigError(
            f"{setting}: shard {index}/{count} does not exist; K runs from 0 to N-1 and N is at least 1"
        )
    return Shard(index, count)


def _job_completion_index(env: Mapping[str, str], setting: str) -> str:
    raw = env.get("JOB_COMPLETION_INDEX", "")
    if not raw.strip():
        raise ConfigError(
            f"{setting}: JOB_COMPLETION_INDEX is not set (not an Indexed Job pod); write K/N instead"
        )
    match = _INDEX.fullmatch(raw)
    if not match:
        raise ConfigError(
            f"{setting}: JOB_COMPLETION_INDEX is {quoted(raw)}, not a pod index in digits 0-9; "
            "unset it, or write K/N instead"
        )
    return match.group(1)


_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd])\s*", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ZERO = re.compile(r"\s*0+(?:\.0+)?\s*[smhd]?\s*", re.ASCII)
# Longer than any sensible timeout, interval or age, and short enough for every consumer:
# APScheduler's interval and datetime arithmetic overflow long before a 400-digit number.
MAX_DURATION_SECONDS = 366 * 86400


def parse_duration(value: str, setting: str, *, zero_is_off: bool = False) -> float:
    """``90s``, ``30m``, ``2h``, ``1d`` as seconds: more than zero, at most 366 days.

    With ``zero_is_off`` (a setting whose zero means "off", such as a skip window), ``0`` or
    ``0s`` is accepted and returned as 0: the only way to turn off a default that is on."""
    if zero_is_off and _ZERO.fullmatch(value):
        return 0.0
    match = _DURATION.fullmatch(value)
    if not match:
        off = "; 0 turns it off" if zero_is_off else ""
        raise ConfigError(
            f"{setting}: {quoted(value)} is not a duration; write it like 90s, 30m, 2h or 1d{off}"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]  # inf for 400 digits, never an error
    if not 0 < seconds <= MAX_DURATION_SECONDS:
        raise ConfigError(
            f"{setting}: {quoted(value)} is {'zero' if seconds == 0 else 'longer than 366d'}; "
            "write a duration over 0s and at most 366d, like 90s, 30m, 2h or 1d"
        )
    return seconds


def parse_instant(value: str, setting: str) -> dt.datetime:
    """An instant written as ISO 8601 with its zone (``2026-11-01T09:00+05:30``,
    ``2026-11-01T0900Z``), in UTC: the one reading of a time an operator or a file gives
    (``lookup --at``, ``import --as-of``, the time in an export's name, a plan's ``made_at``).

    A time without a zone would be read in whatever zone this host is in, and an answer must
    not depend on that; one whose UTC falls outside the years 1 to 9999
    (``0001-01-01T00:00+05:30``, ``9999-12-31T23:59-05:00``) is one no clock could show and no
    date arithmetic can hold. Either is a one-line :class:`ConfigError` naming ``setting``."""
    text = value.strip()
    try:
        instant = dt.datetime.fromisoformat(text) if text.isascii() else None
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise ConfigError(
            f"{setting} {quoted(value)} is not an ISO 8601 time with a zone; write e.g. "
            "2026-11-01T09:00Z or 2026-11-01T14:30+05:30"
        )
    try:
        return instant.astimezone(dt.UTC)
    except OverflowError:
        raise ConfigError(
            f"{setting} {quoted(value)} is out of range: in UTC it falls outside the years 1 to 9999; "
            "check the date"
        ) from None


def duration_text(seconds: float) -> str:
    """``seconds`` as :func:`parse_duration` reads it back, in the largest unit that divides it
    (``2h``, ``90m``, ``45s``): how a duration setting is shown (a default in a help text, a limit
    in a message). How long something took or how long ago, in words, is :mod:`sync.timetext`'s."""
    for unit, size in sorted(_UNIT_SECONDS.items(), key=lambda item: -item[1]):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


def check_output_file(path: str, setting: str) -> None:
    """Refuse, at start, a file that could not be written at the end: what is at the path
    must be a regular file or nothing (:mod:`sync.files` replaces nothing else: not a symbolic
    link, a FIFO or a device), and its directory must exist and be writable (the file is
    written there as a temporary one, then renamed).

    Checked before any sweep, because a run whose sweeps were applied must not end in a
    traceback and exit 1, which says nothing was applied.
    """
    target = Path(path)
    folder = target.parent
    kind = what_is_at(target)
    if kind == "a directory":
        raise ConfigError(
            f"{setting}: {path} is a directory; name a file in it, like {target / 'blocklist_sync.prom'}"
        )
    if kind is not None:
        raise ConfigError(
            f"{setting}: {path} is {kind}, not a regular file, and only a regular file is replaced; "
            "name a regular file or a path where none exists"
        )
    if not folder.is_dir():
        raise ConfigError(
            f"{setting}: the directory {folder} does not exist or is not a directory; "
            "create it or choose another path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{setting}: this user cannot write in {folder}; let it write there or choose another path"
        )


@dataclass(frozen=True)
class Pushgateway:
    """Where ``--pushgateway`` pushes the metrics: the URL without its credentials (what every
    message shows), and those credentials apart, for HTTP basic auth."""

    url: str  # scheme://host[:port][/path], no user or password
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0  # seconds a push may take; a run never waits longer on one


def parse_pushgateway(value: str, setting: str) -> Pushgateway:
    """``http(s)://[user:password@]host[:port][/path]``: the Pushgateway's address, as
    Prometheus' own clients take it. A password is registered as a secret at once and never
    shown again (messages name the URL without it)."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a bad port
        (parts.hostname or "").encode("idna")  # raises on an empty or overlong label
    except ValueError:  # UnicodeError included
        parts = None
    if parts is not None and parts.password:
        register_secret(parts.password)
        register_secret(unquote(parts.password))  # as it is sent
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl() if parts else ""
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or any(ch.isspace() for ch in text)
    ):
        raise ConfigError(
            f"{setting}: {quoted(shown or '(not a URL)', 100)} is not a Pushgateway URL; write it like "
            "http://pushgateway.monitoring:9091 (a user and password before the host, if it needs them)"
        )
    return Pushgateway(
        url=shown.rstrip("/"),
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def read_env_file(path: str, setting: str) -> dict[str, str]:
    """The settings in an env file, read as systemd's ``EnvironmentFile=`` reads it (the file
    the systemd units and the crontab read, ``/etc/blocklist-sync/env``): ``KEY=value`` lines;
    a line starting with ``#`` or ``;`` is a comment; a value wholly in single or double quotes
    loses them; anything else after the ``=`` is the value.

    So a command run by hand (``status``, a review) reads the job's own settings rather than a
    second copy of them. A line that is not ``KEY=value`` is refused by its number, never
    printed: it may hold a password.
    """
    data = read_regular_file(path, setting, MAX_CONFIG_FILE_BYTES, "KEY=value lines")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{setting}: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, equals, value = line.partition("=")
        if not equals or not _ENV_NAME.fullmatch(name.strip()):
            raise ConfigError(
                f"{setting}: line {number} of {path} is not KEY=value (a name of letters, digits "
                "and _, then =); fix it, or start it with # to make it a comment"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        settings[name.strip()] = value
    return settings


SCHEMA_SETTING = "BLOCKLIST_SYNC_SCHEMA"
# A name PostgreSQL takes unquoted and keeps as written: lower-case ASCII letters, digits and _,
# not starting with a digit, at most 63 bytes (NAMEDATALEN - 1; PostgreSQL would cut a longer
# name, silently, and two settings would name one schema). A BI tool, a psql session and dbt
# can then all write it as it is.
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}", re.ASCII)


def parse_schema(value: str | None, setting: str = SCHEMA_SETTING) -> str | None:
    """The PostgreSQL schema the tables, views, functions and Alembic's version table live in,
    or None (unset or empty) for wherever the server's ``search_path`` puts them, as before this
    setting existed: ``public`` unless a DBA changed the role's search_path.

    ``pg_…`` names are reserved for the server's own schemas and ``information_schema`` is the
    standard's: both are refused here rather than by ``CREATE SCHEMA`` at the first migration.
    """
    if value is None or not value.strip():
        return None
    name = value.strip()
    if not _SCHEMA.fullmatch(name):
        raise ConfigError(
            f"{setting}: {quoted(name)} is not a plain schema name; use lower-case letters a-z, "
            "digits 0-9 and _, starting with a letter or _, at most 63 characters, like kaleyra"
        )
    if name.startswith("pg_") or name == "information_schema":
        raise ConfigError(
            f"{setting}: {name} is reserved for PostgreSQL's own schemas; choose another name, like kaleyra"
        )
    return name
