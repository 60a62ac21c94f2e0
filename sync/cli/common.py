"""What the commands start from: the store, opened in the operator's schema and at the
schema's head, and (for ``run`` and ``schedule``) the accounts and where the metrics go.

"Open the store and require the schema" is :func:`open_store`, once for every command.
"""

from __future__ import annotations

import os

import click
from sqlalchemy import Engine

from sync import database
from sync.cli.errors import setting_name
from sync.run import Prepared
from sync.settings import (
    SCHEMA_SETTING,
    AccountSource,
    check_output_file,
    parse_pushgateway,
    parse_schema,
)
from sync.store import Store
from sync.telemetry import LogSettings

__all__ = ["open_engine", "open_store", "prepare"]


def open_engine(
    database_url: str | None, *, own_schema: bool = True, only_reads: bool = False
) -> tuple[Engine, str]:
    """The engine for ``database_url`` (or ``DATABASE_URL``) in the schema
    ``BLOCKLIST_SYNC_SCHEMA`` names, unless ``own_schema`` is false (the demo reads neither
    setting), and how to name it to the operator: the URL, passwords masked, and the schema.
    ``only_reads``: a command that only reads refuses an SQLite file that does not exist,
    rather than leave an empty one behind."""
    url = database.resolve_database_url(database_url)  # registers its passwords for redaction
    if only_reads:
        database.require_database_file(url)
    schema = parse_schema(os.environ.get(SCHEMA_SETTING)) if own_schema else None
    engine = database.make_engine(url, schema)
    where = database.describe_url(url)
    return engine, where if schema is None else f"{where} (schema {schema})"


def open_store(
    database_url: str | None, *, at_head: bool = True, own_schema: bool = True, only_reads: bool = False
) -> tuple[Store, str]:
    """The store (:func:`open_engine`) and how to name it; ``at_head``: refused unless its
    schema is at the newest revision (every command but ``migrate``, the grants, which check
    it themselves, and the demo, which migrates its own file)."""
    engine, where = open_engine(database_url, own_schema=own_schema, only_reads=only_reads)
    if engine.dialect.name == "sqlite":
        click.echo(
            f"note: using the embedded SQLite file {engine.url.database}; "
            "production should set DATABASE_URL to PostgreSQL",
            err=True,
        )
    if at_head:
        database.require_current_schema(engine)
    return Store(engine), where


def prepare(
    source: AccountSource,
    database_url: str | None,
    log: LogSettings,
    metrics_file: str | None,
    pushgateway: str | None = None,
) -> Prepared:
    """Logging, accounts, where the metrics go, database and schema: everything a sweep needs
    before it starts, in that order (the database last: a setting that is wrong stops the run
    before it touches anything)."""
    log.configure()
    configured = source.load(os.environ)  # registers every key for redaction as it reads it
    accounts = source.selected(configured)
    if metrics_file:
        check_output_file(metrics_file, setting_name("metrics_file"))
    push = parse_pushgateway(pushgateway, setting_name("pushgateway")) if pushgateway else None
    store, _ = open_store(database_url)
    return Prepared(configured, accounts, store, metrics_file, push)
