"""Which database, and is its schema current. Engines, URLs and Alembic; no HTTP.

``DATABASE_URL`` is a SQLAlchemy URL; ``postgresql://`` means psycopg 3. Unset, the same code
runs on an embedded SQLite file so the demo and a trial need no server; production should use
PostgreSQL (COPY staging, advisory locks, concurrent readers).
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from sync.settings import ConfigError

__all__ = [
    "SQLITE_DEFAULT",
    "SchemaNotCurrent",
    "alembic_config",
    "describe_url",
    "make_engine",
    "require_current_schema",
    "resolve_database_url",
    "upgrade",
]

SQLITE_DEFAULT = "sqlite:///blocklist-sync.db"


class SchemaNotCurrent(ConfigError):
    """The database is not at the newest migration; ``run`` refuses to write to it."""


def resolve_database_url(url: str | None = None) -> str:
    """The SQLAlchemy URL to use: the argument, ``DATABASE_URL``, or the SQLite default."""
    raw = url or os.environ.get("DATABASE_URL") or SQLITE_DEFAULT
    try:
        parsed = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            "DATABASE_URL is not a database URL; use postgresql://user@host:5432/dbname"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername not in ("postgresql+psycopg", "sqlite", "sqlite+pysqlite"):
        raise ConfigError(
            f"DATABASE_URL: driver {parsed.drivername!r} is not supported; "
            "use postgresql:// (psycopg 3) or sqlite:///path"
        )
    return parsed.render_as_string(hide_password=False)


def describe_url(url: str) -> str:
    """The URL as it may be shown: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    # No pool: a batch job opens few connections, and a closed connection must really close,
    # releasing its advisory lock and temporary tables with it.
    engine = create_engine(url, poolclass=NullPool)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")  # readers are not blocked by a sweep
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.close()

    return engine


def _migrations_dir() -> Path:
    """``migrations/`` in a checkout, or the copy packaged into the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise RuntimeError("the migrations directory is missing from this installation")


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic config that migrates through ``engine``'s connection (cookbook recipe)."""
    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Upgrade the schema to head; returns (revision before, revision after)."""
    before = current_revision(engine)
    command.upgrade(alembic_config(engine), "head")
    return before, current_revision(engine)


def require_current_schema(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        state = "has no schema yet" if current is None else f"is at revision {current}"
        raise SchemaNotCurrent(
            f"the database {state}, not {head}; run `blocklist-sync migrate` first"
        )
