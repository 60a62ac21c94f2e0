"""Configuration: environment first, a TOML file for several accounts, flags override both.

Everything is read and checked once, at start, so a missing or invalid setting stops the
program before any work with one line naming the setting and how to fix it
(:class:`ConfigError`, exit code 2). Nothing here reads the network or the database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sync.files import file_kind, what_is_at
from sync.redaction import register_secret
from sync.vocabulary import REGIONS, Channel

__all__ = [
    "CHANNELS",
    "CONFIG_VARIABLE",
    "REGIONS",
    "SCHEMA_SETTING",
    "Account",
    "AccountSource",
    "ConfigError",
    "Pushgateway",
    "Shard",
    "Tuning",
    "as_typed",
    "check_output_file",
    "duration_text",
    "load_accounts",
    "parse_channels",
    "parse_duration",
    "parse_instant",
    "parse_pushgateway",
    "parse_schema",
    "parse_shard",
    "quoted",
    "read_env_file",
    "read_regular_file",
    "register_configured_secrets",
    "select_accounts",
    "with_overrides",
]

CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)
CONFIG_VARIABLE = "BLOCKLIST_SYNC_CONFIG"  # the config file's variable (``--config``'s)
_CONFIG_SETTING = f"--config / {CONFIG_VARIABLE}"
DEFAULT_BASE_URL = "https://api.kaleyra.io/v1"
_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Printable ASCII, no space: anything else is a second line of a key file, a pasted quote or
# a control character, and would reach an HTTP header (or the HTTP library's error) as is.
_API_KEY = re.compile(r"[!-~]{1,512}")
# A key is a line of at most 512 characters; a config file lists accounts. Anything larger is
# the wrong file (a log, a disk image, /dev/zero), refused before it is read into memory.
MAX_KEY_FILE_BYTES = 4 * 1024
MAX_CONFIG_FILE_BYTES = 1024 * 1024


class ConfigError(Exception):
    """A setting is missing or invalid. The message is one line that says how to fix it."""


def quoted(value: str, limit: int = 40) -> str:
    """``value`` for a one-line message: quoted, escaped (a line break stays on the line) and
    cut to ``limit`` characters, so a 400-digit or binary value cannot flood the terminal."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"


def as_typed(value: str) -> str:
    """``value`` as typed when it is short and printable, else :func:`quoted`: how a message
    shows a value the operator gave (a host, a channel, a SID)."""
    return value if value.isprintable() and len(value) <= 40 else quoted(value)


def read_regular_file(path: str, setting: str, limit: int, holding: str) -> bytes:
    """The bytes of ``path``, refused unless it is a regular file of at most ``limit`` bytes.

    Opened without blocking and judged by ``fstat`` of what was opened (a symlink, as systemd
    credentials and Kubernetes Secrets are, is judged by its target): a FIFO would otherwise
    block the read forever, and ``/dev/zero`` would be read until memory runs out. ``holding``
    names what the file should hold, for the message.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror}); check the path") from None
    except ValueError:  # a NUL byte, possible in a TOML string
        raise ConfigError(f"{setting}: {quoted(path)} is no file name; check the path") from None
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind:
            raise ConfigError(
                f"{setting}: {path} is {kind}, not a regular file; point it at a file holding {holding}"
            )
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror}); check the path") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ConfigError(
            f"{setting}: {path} is larger than {limit // 1024} KiB, too large to hold {holding}; "
            "check the path"
        )
    return data


@dataclass(frozen=True)
class Account:
    """One Kaleyra account to sweep. The key is kept out of ``repr`` and every message."""

    sid: str
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    channels: tuple[str, ...] = CHANNELS


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
class AccountSource:
    """Where the accounts come from: a TOML file (``--config``), or the ``KALEYRA_*``
    environment with single-account flags laid over it; optionally narrowed to ``only``."""

    config_file: str | None = None
    sid: str | None = None
    api_key_file: str | None = None
    base_url: str | None = None
    region: str | None = None
    only: tuple[str, ...] = ()
    # How messages name the config file's setting: by the flag or the variable that set it.
    config_setting: str = "--config / BLOCKLIST_SYNC_CONFIG"

    def is_configured(self, env: Mapping[str, str]) -> bool:
        """Whether any account is configured at all (a config file or ``KALEYRA_SID``)."""
        return bool(self.config_file or self.sid or env.get("KALEYRA_SID"))

    def load(self, env: Mapping[str, str], *, need_keys: bool = True) -> list[Account]:
        """Every configured account (each key registered for redaction as it is read)."""
        if self.config_file and any((self.sid, self.api_key_file, self.base_url, self.region)):
            raise ConfigError(
                "--sid, --api-key-file, --base-url and --region configure a single "
                "account; with a config file, set them in the file instead"
            )
        merged = with_overrides(
            env, sid=self.sid, api_key_file=self.api_key_file, base_url=self.base_url, region=self.region
        )
        # A value a flag gave is named by the flag, one from the environment by its variable.
        flags = {
            "KALEYRA_SID": (self.sid, "--sid"),
            "KALEYRA_API_KEY_FILE": (self.api_key_file, "--api-key-file"),
            "KALEYRA_BASE_URL": (self.base_url, "--base-url"),
            "KALEYRA_REGION": (self.region, "--region"),
        }
        names = {variable: flag for variable, (given, flag) in flags.items() if given}
        return load_accounts(
            self.config_file, merged, need_keys=need_keys, names=names, config_setting=self.config_setting
        )

    def selected(self, accounts: list[Account]) -> list[Account]:
        return select_accounts(accounts, self.only)


def parse_channels(value: str | Sequence[str], setting: str = "KALEYRA_CHANNELS") -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    channels = tuple(dict.fromkeys(c.strip().lower() for c in items if c.strip()))
    bad = [c for c in channels if c not in CHANNELS]
    if bad or not channels:
        raise ConfigError(
            f"{setting}: {', '.join(as_typed(c) for c in bad) or 'empty'} is not a channel; "
            f"use a comma-separated list of {', '.join(CHANNELS)}"
        )
    return channels


def resolve_base_url(base_url: str | None, region: str | None, setting: str) -> str:
    if base_url and region:
        raise ConfigError(f"{setting}: set either a base URL or a region, not both")
    if region:
        try:
            return REGIONS[region.strip().lower()]
        except KeyError:
            raise ConfigError(
                f"{setting}: unknown region {region!r}; use one of {', '.join(REGIONS)} or set the base URL"
            ) from None
    url = (base_url or DEFAULT_BASE_URL).strip().rstrip("/")
    if not _is_http_url(url):
        raise ConfigError(
            f"{setting}: {quoted(url, 100)} is not an http(s) URL (check the host and port); set it like "
            f"{DEFAULT_BASE_URL}"
        )
    return url


def _is_http_url(url: str) -> bool:
    """http(s), a valid port, and a host name DNS could look up: a label longer than 63
    characters would otherwise pass here and fail every request, retried, as a network error."""
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port or IPv6 host
        (parts.hostname or "").encode("idna")  # raises on an empty or overlong label
    except ValueError:  # UnicodeError included
        return False
    return bool(parts.hostname)


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0 and (chunk := os.read(fd, size)):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_key_file(path: str, setting: str) -> str:
    data = read_regular_file(path, setting, MAX_KEY_FILE_BYTES, "the Kaleyra API key alone")
    key = data.decode(errors="replace")  # what is not UTF-8 fails the key's own check, unprinted
    register_secret(key)
    if not key.strip():
        raise ConfigError(f"{setting}: {path} is empty; put the Kaleyra API key in it")
    return key


def _check_sid(sid: str | None, setting: str) -> str:
    if not sid:
        raise ConfigError(f"{setting} is not set; set it to the account SID from the Kaleyra console")
    if not isinstance(sid, str) or not _SID.fullmatch(sid):
        # Not echoed: a SID with a newline or a control character is no SID, and could be a key
        # pasted into the wrong place.
        raise ConfigError(
            f"{setting} is not a Kaleyra SID (letters, digits, - and _ only, no "
            "spaces or line breaks); copy it from the console"
        )
    return sid


def _check_key(key: object, setting: str) -> str:
    """The key with surrounding whitespace (a key file's final newline) removed, refused when
    what remains has whitespace or control characters inside. Never echoed."""
    text = str(key)
    register_secret(text)  # before anything can fail and print it
    text = text.strip()
    if not _API_KEY.fullmatch(text):
        raise ConfigError(
            f"{setting}: the API key has spaces, line breaks or control characters "
            "inside (a key file must hold the key alone on one line); copy it again "
            "from the Kaleyra console"
        )
    register_secret(text)
    return text


def account_from_env(
    env: Mapping[str, str], *, need_key: bool = True, names: Mapping[str, str] | None = None
) -> Account:
    """The single account configured by ``KALEYRA_*`` environment variables; without
    ``need_key`` (``status`` reads only the database) the key is neither read nor required.
    ``names``: the flag that set a variable's value (``--sid`` for ``KALEYRA_SID``), so that a
    message names what the operator actually typed; a variable not in it is named as itself."""

    def named(variable: str) -> str:
        return (names or {}).get(variable, variable)

    sid = _check_sid(env.get("KALEYRA_SID"), named("KALEYRA_SID"))
    channels = parse_channels(env.get("KALEYRA_CHANNELS") or ",".join(CHANNELS))
    if not need_key:
        return Account(sid=sid, api_key="", channels=channels)
    key = env.get("KALEYRA_API_KEY")
    key_file = env.get("KALEYRA_API_KEY_FILE")
    if key and key_file:
        raise ConfigError("set KALEYRA_API_KEY or KALEYRA_API_KEY_FILE, not both")
    if key_file:
        key = _read_key_file(key_file, named("KALEYRA_API_KEY_FILE"))
    if not key:
        raise ConfigError(
            "KALEYRA_API_KEY is not set; set it, or KALEYRA_API_KEY_FILE to a file holding the key"
        )
    key = _check_key(key, named("KALEYRA_API_KEY_FILE") if key_file else "KALEYRA_API_KEY")
    base_url, region = env.get("KALEYRA_BASE_URL"), env.get("KALEYRA_REGION")
    where = [named(v) for v, value in (("KALEYRA_BASE_URL", base_url), ("KALEYRA_REGION", region)) if value]
    base_url = resolve_base_url(base_url, region, "/".join(where) or "KALEYRA_BASE_URL")
    return Account(sid=sid, api_key=key, base_url=base_url, channels=channels)


def accounts_from_toml(
    path: Path, env: Mapping[str, str], *, need_keys: bool = True, setting: str = _CONFIG_SETTING
) -> list[Account]:
    """Accounts from a config file::

    [[accounts]]
    sid = "HXXXXXXX071US"
    api_key_file = "/run/credentials/blocklist-sync.service/kaleyra"  # or api_key, api_key_env
    region = "in"                      # or base_url = "https://api.in.kaleyra.io/v1"
    channels = ["sms", "whatsapp"]     # default: every channel
    """
    accounts = [
        _account_from_table(table, f"{path} account {i}", env, need_keys=need_keys)
        for i, table in enumerate(_account_tables(_read_toml(path, setting), path), start=1)
    ]
    sids = [a.sid for a in accounts]
    if len(set(sids)) != len(sids):
        raise ConfigError(f"config file {path} lists an account twice; give each SID once")
    return accounts


_ACCOUNT_KEYS = ("sid", "api_key", "api_key_file", "api_key_env", "base_url", "region", "channels")


def _read_toml(path: Path, setting: str) -> dict[str, object]:
    """The parsed config file; whatever is wrong with it, one line naming the file.

    tomllib raises more than its own error: ``RecursionError`` for brackets nested a few
    thousand deep, ``ValueError`` for an integer longer than Python converts.
    """
    data = read_regular_file(str(path), setting, MAX_CONFIG_FILE_BYTES, "[[accounts]] tables")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except ValueError:
        raise ConfigError(f"config file {path} is not valid TOML: a number in it is too long") from None
    except RecursionError:
        raise ConfigError(
            f"config file {path} is nested too deeply to read; an account is one [[accounts]] table of keys"
        ) from None


def _account_tables(doc: Mapping[str, object], path: Path) -> list[Mapping[str, object]]:
    tables = doc.get("accounts")
    if tables is None or tables == []:
        raise ConfigError(f"config file {path} has no [[accounts]] table; add one per account")
    if not isinstance(tables, list):
        raise ConfigError(
            f"config file {path}: accounts is {_toml_kind(tables)}, not a list of tables; "
            "write one [[accounts]] table per account"
        )
    for i, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path} account {i} is {_toml_kind(table)}, not a table; "
                "write one [[accounts]] table per account"
            )
    return tables


def _account_from_table(
    table: Mapping[str, object], where: str, env: Mapping[str, str], *, need_keys: bool
) -> Account:
    unknown = set(table) - set(_ACCOUNT_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(sorted(unknown))}; check spelling")
    text = {key: _toml_string(table, key, where) for key in _ACCOUNT_KEYS if key != "channels"}
    sid = _check_sid(text["sid"], f"{where}: sid")
    sources = [k for k in ("api_key", "api_key_file", "api_key_env") if text[k]]
    if len(sources) != 1:
        raise ConfigError(f"{where}: set exactly one of api_key, api_key_file, api_key_env")
    return Account(
        sid=sid,
        api_key=_table_key(text, where, env) if need_keys else "",
        base_url=resolve_base_url(text["base_url"], text["region"], where),
        channels=parse_channels(_toml_channels(table, where), f"{where}: channels"),
    )


def _table_key(text: Mapping[str, str | None], where: str, env: Mapping[str, str]) -> str:
    """The key from whichever of ``api_key_file``, ``api_key_env`` or ``api_key`` is set."""
    if text["api_key_file"]:
        key = _read_key_file(text["api_key_file"], f"{where}: api_key_file")
    elif text["api_key_env"]:
        key = env.get(text["api_key_env"], "")
        if not key:
            raise ConfigError(f"{where}: environment variable {quoted(text['api_key_env'])} is empty")
    else:
        key = text["api_key"] or ""
    return _check_key(key, f"{where}: api key")


def _toml_kind(value: object) -> str:
    """A TOML value's type, in the words of the TOML spec a user would look up."""
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "a boolean"),
        ((int, float), "a number"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
        ((dt.date, dt.time), "a date or time"),
    )
    return next((name for types, name in kinds if isinstance(value, types)), type(value).__name__)


def _toml_string(table: Mapping[str, object], key: str, where: str) -> str | None:
    """``table[key]`` when it is a string, None when absent; anything else is refused rather
    than guessed at (``base_url = []`` would otherwise quietly mean the default URL)."""
    value = table.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(
        f'{where}: {key} must be a string in quotes, not {_toml_kind(value)}; write {key} = "…"'
    )


def _toml_channels(table: Mapping[str, object], where: str) -> str | list[str]:
    """``channels``: an array of channel names (``"sms,voice"``, as in KALEYRA_CHANNELS, is
    accepted too)."""
    value = table.get("channels", list(CHANNELS))
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        odd = next((item for item in value if not isinstance(item, str)), None)
        if odd is None:
            return value
        found = f"an array holding {_toml_kind(odd)}"
    else:
        found = _toml_kind(value)
    raise ConfigError(f'{where}: channels must be an array of names like ["sms", "whatsapp"], not {found}')


def with_overrides(
    env: Mapping[str, str],
    *,
    sid: str | None = None,
    api_key_file: str | None = None,
    base_url: str | None = None,
    region: str | None = None,
) -> dict[str, str]:
    """``env`` with command-line flags laid over it: a flag wins over its variable, and over
    the variable it excludes (a key file over a key, a base URL over a region and back)."""
    merged = dict(env)
    if sid:
        merged["KALEYRA_SID"] = sid
    if api_key_file:
        merged["KALEYRA_API_KEY_FILE"] = api_key_file
        merged.pop("KALEYRA_API_KEY", None)
    if base_url:
        merged["KALEYRA_BASE_URL"] = base_url
        merged.pop("KALEYRA_REGION", None)
    if region:
        merged["KALEYRA_REGION"] = region
        merged.pop("KALEYRA_BASE_URL", None)
    return merged


def load_accounts(
    config: str | None,
    env: Mapping[str, str] | None = None,
    *,
    need_keys: bool = True,
    names: Mapping[str, str] | None = None,
    config_setting: str = _CONFIG_SETTING,
) -> list[Account]:
    """The accounts to sweep: from the ``config`` file when given (the CLI reads
    ``BLOCKLIST_SYNC_CONFIG`` into it, in that one place), otherwise the one account in the
    ``KALEYRA_*`` environment variables."""
    env = os.environ if env is None else env
    if config:
        return accounts_from_toml(Path(config), env, need_keys=need_keys, setting=config_setting)
    return [account_from_env(env, need_key=need_keys, names=names)]


def register_configured_secrets(env: Mapping[str, str]) -> None:
    """Blank from all output every API key the environment configures (``KALEYRA_API_KEY``,
    the file ``KALEYRA_API_KEY_FILE`` names, each account's key in the file
    ``BLOCKLIST_SYNC_CONFIG`` names), before any command reads anything.

    A command that uses no key (``import``, ``lookup``, ``status``) may still be handed a file
    holding one, by a glob over the credentials directory, and what it says about that file
    must show no piece of it: redaction blanks only what it was told. Each key is read as the
    command that uses it reads it (the same readers, registering as they read); nothing is
    checked here and nothing fails: a key that cannot be read is that command's error to say.
    """
    register_secret(env.get("KALEYRA_API_KEY"))
    key_files = [env.get("KALEYRA_API_KEY_FILE")]
    config = env.get(CONFIG_VARIABLE)
    tables: list[object] = []
    if config:
        with contextlib.suppress(ConfigError):
            found = _read_toml(Path(config), _CONFIG_SETTING).get("accounts")
            tables = found if isinstance(found, list) else []
    for table in tables:
        if not isinstance(table, dict):
            continue
        for name in ("api_key", "api_key_env", "api_key_file"):
            if not isinstance(table.get(name), str):
                continue
            if name == "api_key":
                register_secret(table[name])
            elif name == "api_key_env":
                register_secret(env.get(table[name]))
            else:
                key_files.append(table[name])
    for path in key_files:
        if path:
            with contextlib.suppress(ConfigError):
                _read_key_file(path, "the API key file")


def select_accounts(accounts: list[Account], sids: Sequence[str]) -> list[Account]:
    """``accounts`` narrowed to ``sids`` (``--account``, repeatable), in configuration order.
    Naming an account that is not configured is an error, not an empty run."""
    if not sids:
        return accounts
    known = {a.sid for a in accounts}
    unknown = [sid for sid in dict.fromkeys(sids) if sid not in known]
    if unknown:
        raise ConfigError(
            f"--account {as_typed(unknown[0])} is not configured; configured: {', '.join(sorted(known))}"
        )
    return [a for a in accounts if a.sid in set(sids)]


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


def parse_shard(value: str, env: Mapping[str, str], setting: str = "--shard") -> Shard:
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
    (``2h``, ``90m``, ``45s``): how a default duration is shown in help texts."""
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


def parse_pushgateway(value: str, setting: str = "--pushgateway") -> Pushgateway:
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


def read_env_file(path: str, setting: str = "--env-file") -> dict[str, str]:
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
