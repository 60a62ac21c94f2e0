"""The Kaleyra accounts to sweep: the ``KALEYRA_*`` environment with single-account flags
laid over it, or a TOML file listing several (``--config``), optionally narrowed to some.

Each key is registered for redaction the moment it is read, and checked before it can reach
an HTTP header; a message names what the operator actually set (the flag, the variable, the
file and its account), never a key.
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
from urllib.parse import urlsplit

from sync.redaction import register_secret
from sync.settings.reading import (
    MAX_CONFIG_FILE_BYTES,
    MAX_KEY_FILE_BYTES,
    ConfigError,
    as_typed,
    quoted,
    read_regular_file,
)
from sync.vocabulary import REGIONS, Channel

__all__ = [
    "CHANNELS",
    "CONFIG_VARIABLE",
    "DEFAULT_BASE_URL",
    "Account",
    "AccountSource",
    "load_accounts",
    "parse_channels",
    "register_configured_secrets",
    "select_accounts",
    "with_overrides",
]

CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)
CONFIG_VARIABLE = "BLOCKLIST_SYNC_CONFIG"  # the config file's variable (``--config``'s)
# The variable each single-account field of an AccountSource lays its value over.
_OVERRIDES = {
    "sid": "KALEYRA_SID",
    "api_key_file": "KALEYRA_API_KEY_FILE",
    "base_url": "KALEYRA_BASE_URL",
    "region": "KALEYRA_REGION",
}
DEFAULT_BASE_URL = "https://api.kaleyra.io/v1"
_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Printable ASCII, no space: anything else is a second line of a key file, a pasted quote or
# a control character, and would reach an HTTP header (or the HTTP library's error) as is.
_API_KEY = re.compile(r"[!-~]{1,512}")


@dataclass(frozen=True)
class Account:
    """One Kaleyra account to sweep. The key is kept out of ``repr`` and every message."""

    sid: str
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    channels: tuple[str, ...] = CHANNELS


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
    # How messages name each field's setting (``sid``: ``--sid``), by the flag or the variable
    # the operator set, as the CLI knows it; a field not in it is named by its variable.
    names: Mapping[str, str] = field(default_factory=dict)

    def _named(self, name: str) -> str:
        variables = {**_OVERRIDES, "config_file": CONFIG_VARIABLE}
        return self.names.get(name) or variables.get(name, name)

    def is_configured(self, env: Mapping[str, str]) -> bool:
        """Whether any account is configured at all (a config file or ``KALEYRA_SID``)."""
        return bool(self.config_file or self.sid or env.get("KALEYRA_SID"))

    def load(self, env: Mapping[str, str], *, need_keys: bool = True) -> list[Account]:
        """Every configured account (each key registered for redaction as it is read)."""
        if self.config_file and any((self.sid, self.api_key_file, self.base_url, self.region)):
            *others, last = (self._named(name) for name in _OVERRIDES)
            raise ConfigError(
                f"{', '.join(others)} and {last} configure a single "
                "account; with a config file, set them in the file instead"
            )
        merged = with_overrides(
            env, sid=self.sid, api_key_file=self.api_key_file, base_url=self.base_url, region=self.region
        )
        # A value a flag gave is named by the flag, one from the environment by its variable.
        names = {variable: self._named(name) for name, variable in _OVERRIDES.items() if getattr(self, name)}
        return load_accounts(
            self.config_file,
            merged,
            need_keys=need_keys,
            names=names,
            config_setting=self._named("config_file"),
        )

    def selected(self, accounts: list[Account]) -> list[Account]:
        return select_accounts(accounts, self.only, self.names.get("only", "account"))


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
    path: Path, env: Mapping[str, str], *, need_keys: bool = True, setting: str = CONFIG_VARIABLE
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
    config_setting: str = CONFIG_VARIABLE,
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
            found = _read_toml(Path(config), CONFIG_VARIABLE).get("accounts")
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


def select_accounts(accounts: list[Account], sids: Sequence[str], setting: str) -> list[Account]:
    """``accounts`` narrowed to ``sids`` (``--account``, repeatable), in configuration order.
    Naming an account that is not configured is an error, not an empty run: one naming
    ``setting``, the flag that asked for it."""
    if not sids:
        return accounts
    known = {a.sid for a in accounts}
    unknown = [sid for sid in dict.fromkeys(sids) if sid not in known]
    if unknown:
        raise ConfigError(
            f"{setting} {as_typed(unknown[0])} is not configured; configured: {', '.join(sorted(known))}"
        )
    return [a for a in accounts if a.sid in set(sids)]
