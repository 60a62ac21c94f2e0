"""Configuration: environment first, a TOML file for several accounts, flags override both.

Everything is read and checked once, at start, so a missing or invalid setting stops the
program before any work with one line naming the setting and how to fix it
(:class:`ConfigError`, exit code 2). Nothing here reads the network or the database.
"""

from sync.settings.accounts import (
    CHANNELS,
    CONFIG_VARIABLE,
    DEFAULT_BASE_URL,
    Account,
    AccountSource,
    load_accounts,
    parse_channels,
    register_configured_secrets,
    select_accounts,
    with_overrides,
)
from sync.settings.reading import ConfigError, as_typed, quoted, read_regular_file
from sync.settings.values import (
    SCHEMA_SETTING,
    Pushgateway,
    Shard,
    Tuning,
    check_output_file,
    duration_text,
    parse_duration,
    parse_instant,
    parse_pushgateway,
    parse_schema,
    parse_shard,
    read_env_file,
)
from sync.vocabulary import REGIONS

__all__ = [
    "CHANNELS",
    "CONFIG_VARIABLE",
    "DEFAULT_BASE_URL",
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
