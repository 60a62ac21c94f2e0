"""Configuration: environment first, a TOML file for several accounts, flags override both.

Everything is read and checked once, at start, so a missing or invalid setting stops the
program before any work with one line naming the setting and how to fix it
(:class:`ConfigError`, exit code 2). Nothing here reads the network or the database.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sync.redaction import register_secret
from sync.vocabulary import REGIONS, Channel

__all__ = [
    "CHANNELS",
    "REGIONS",
    "Account",
    "AccountSource",
    "ConfigError",
    "Shard",
    "Tuning",
    "load_accounts",
    "parse_channels",
    "parse_duration",
    "parse_shard",
    "select_accounts",
    "with_overrides",
]

CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)
DEFAULT_BASE_URL = "https://api.kaleyra.io/v1"
_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Printable ASCII, no space: anything else is a second line of a key file, a pasted quote or
# a control character, and would reach an HTTP header (or the HTTP library's error) as is.
_API_KEY = re.compile(r"[!-~]{1,512}")


class ConfigError(Exception):
    """A setting is missing or invalid. The message is one line that says how to fix it."""


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
        return load_accounts(self.config_file, merged, need_keys=need_keys)

    def selected(self, accounts: list[Account]) -> list[Account]:
        return select_accounts(accounts, self.only)


def parse_channels(value: str | Sequence[str], setting: str = "KALEYRA_CHANNELS") -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    channels = tuple(dict.fromkeys(c.strip().lower() for c in items if c.strip()))
    bad = [c for c in channels if c not in CHANNELS]
    if bad or not channels:
        raise ConfigError(
            f"{setting}: {', '.join(bad) or 'empty'} is not a channel; use a comma-separated "
            f"list of {', '.join(CHANNELS)}"
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
    try:
        valid = bool(re.match(r"^https?://[^/\s]+(/\S*)?$", url)) and (
            urlsplit(url).port is not None or True
        )  # .port raises on a bad port or IPv6 host
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(
            f"{setting}: {url!r} is not an http(s) URL (check the host and port); set it like "
            f"{DEFAULT_BASE_URL}"
        )
    return url


def _read_key_file(path: str, setting: str) -> str:
    try:
        key = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror}); check the path") from None
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


def account_from_env(env: Mapping[str, str], *, need_key: bool = True) -> Account:
    """The single account configured by ``KALEYRA_*`` environment variables; without
    ``need_key`` (``status`` reads only the database) the key is neither read nor required."""
    sid = _check_sid(env.get("KALEYRA_SID"), "KALEYRA_SID")
    channels = parse_channels(env.get("KALEYRA_CHANNELS") or ",".join(CHANNELS))
    if not need_key:
        return Account(sid=sid, api_key="", channels=channels)
    key = env.get("KALEYRA_API_KEY")
    key_file = env.get("KALEYRA_API_KEY_FILE")
    if key and key_file:
        raise ConfigError("set KALEYRA_API_KEY or KALEYRA_API_KEY_FILE, not both")
    if key_file:
        key = _read_key_file(key_file, "KALEYRA_API_KEY_FILE")
    if not key:
        raise ConfigError(
            "KALEYRA_API_KEY is not set; set it, or KALEYRA_API_KEY_FILE to a file holding the key"
        )
    key = _check_key(key, "KALEYRA_API_KEY_FILE" if key_file else "KALEYRA_API_KEY")
    base_url = resolve_base_url(
        env.get("KALEYRA_BASE_URL"), env.get("KALEYRA_REGION"), "KALEYRA_BASE_URL/KALEYRA_REGION"
    )
    return Account(sid=sid, api_key=key, base_url=base_url, channels=channels)


def accounts_from_toml(path: Path, env: Mapping[str, str], *, need_keys: bool = True) -> list[Account]:
    """Accounts from a config file::

    [[accounts]]
    sid = "HXXXXXXX071US"
    api_key_file = "/run/credentials/blocklist-sync.service/kaleyra"  # or api_key, api_key_env
    region = "in"                      # or base_url = "https://api.in.kaleyra.io/v1"
    channels = ["sms", "whatsapp"]     # default: all three
    """
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}; check --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    tables = doc.get("accounts")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"config file {path} has no [[accounts]] table; add one per account")
    accounts: list[Account] = []
    for i, table in enumerate(tables, start=1):
        where = f"{path} account {i}"
        unknown = set(table) - {
            "sid",
            "api_key",
            "api_key_file",
            "api_key_env",
            "base_url",
            "region",
            "channels",
        }
        if unknown:
            raise ConfigError(f"{where}: unknown key {', '.join(sorted(unknown))}; check spelling")
        sid = _check_sid(table.get("sid"), f"{where}: sid")
        sources = [k for k in ("api_key", "api_key_file", "api_key_env") if table.get(k)]
        if len(sources) != 1:
            raise ConfigError(f"{where}: set exactly one of api_key, api_key_file, api_key_env")
        if not need_keys:
            key = ""
        elif sources == ["api_key_file"]:
            key = _read_key_file(table["api_key_file"], f"{where}: api_key_file")
        elif sources == ["api_key_env"]:
            key = env.get(table["api_key_env"], "")
            if not key:
                raise ConfigError(f"{where}: environment variable {table['api_key_env']} is empty")
        else:
            key = table["api_key"]
        accounts.append(
            Account(
                sid=sid,
                api_key=_check_key(key, f"{where}: api key") if need_keys else "",
                base_url=resolve_base_url(table.get("base_url"), table.get("region"), where),
                channels=parse_channels(table.get("channels", list(CHANNELS)), f"{where}: channels"),
            )
        )
    sids = [a.sid for a in accounts]
    if len(set(sids)) != len(sids):
        raise ConfigError(f"config file {path} lists an account twice; give each SID once")
    return accounts


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
    config: str | None, env: Mapping[str, str] | None = None, *, need_keys: bool = True
) -> list[Account]:
    """The accounts to sweep: from the ``config`` file when given (the CLI reads
    ``BLOCKLIST_SYNC_CONFIG`` into it, in that one place), otherwise the one account in the
    ``KALEYRA_*`` environment variables."""
    env = os.environ if env is None else env
    if config:
        return accounts_from_toml(Path(config), env, need_keys=need_keys)
    return [account_from_env(env, need_key=need_keys)]


def select_accounts(accounts: list[Account], sids: Sequence[str]) -> list[Account]:
    """``accounts`` narrowed to ``sids`` (``--account``, repeatable), in configuration order.
    Naming an account that is not configured is an error, not an empty run."""
    if not sids:
        return accounts
    known = {a.sid for a in accounts}
    unknown = [sid for sid in dict.fromkeys(sids) if sid not in known]
    if unknown:
        raise ConfigError(f"--account {unknown[0]} is not configured; configured: {', '.join(sorted(known))}")
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


_SHARD = re.compile(r"^\s*(?:(\d+)\s*/\s*)?(\d+)\s*$")


def parse_shard(value: str, env: Mapping[str, str], setting: str = "--shard") -> Shard:
    """``K/N`` (0-based K, as Kubernetes numbers an Indexed Job's pods), or ``N`` alone with K
    taken from ``JOB_COMPLETION_INDEX``, which an Indexed Job sets in every pod."""
    match = _SHARD.match(value)
    if not match:
        raise ConfigError(
            f"{setting}: {value!r} is not a shard; write K/N (K from 0 to N-1), or N inside an Indexed Job"
        )
    index_text, count = match.group(1), int(match.group(2))
    if index_text is None:
        index_text = env.get("JOB_COMPLETION_INDEX", "").strip()
        if not index_text.isdigit():
            raise ConfigError(
                f"{setting} {value}: JOB_COMPLETION_INDEX is not set (not an "
                "Indexed Job pod); write K/N instead"
            )
    index = int(index_text)
    if count < 1 or index >= count:
        raise ConfigError(
            f"{setting}: shard {index}/{count} does not exist; K runs from 0 to N-1 and N is at least 1"
        )
    return Shard(index, count)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str, setting: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d`` as seconds."""
    match = _DURATION.match(value)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{setting}: {value!r} is not a duration; write it like 90s, 30m, 2h or 1d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
