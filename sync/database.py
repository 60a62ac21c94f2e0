"""Which database, and is its schema current. Engines, URLs and Alembic; no HTTP.

``DATABASE_URL`` is a SQLAlchemy URL; ``postgresql://`` means psycopg 3. Unset, the same code
runs on an embedded SQLite file so the demo and a trial need no server; production should use
PostgreSQL (COPY staging, row locks, concurrent readers). Who may do what: :mod:`sync.roles`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote, unquote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import pq, sql
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from sync import __version__
from sync.redaction import MASK, redact, register_secret
from sync.settings import SCHEMA_SETTING, ConfigError

__all__ = [
    "APPLICATION_NAME",
    "SQLITE_DEFAULT",
    "SchemaNotCurrent",
    "alembic_config",
    "describe_url",
    "engine_schema",
    "make_engine",
    "missing_database_file",
    "require_current_schema",
    "require_database_file",
    "resolve_database_url",
    "upgrade",
]

SQLITE_DEFAULT = "sqlite:///blocklist-sync.db"
# How our sessions are named in pg_stat_activity, in a held lock's message and in the server's
# log, unless DATABASE_URL (?application_name=) or PGAPPNAME names them otherwise.
APPLICATION_NAME = f"blocklist-sync/{__version__}"


class SchemaNotCurrent(ConfigError):
    """The database is not at the newest migration; ``run`` refuses to write to it."""


# Query options that carry a secret themselves (libpq's names); shown masked, registered.
_SECRET_OPTIONS = ("password", "sslpassword", "oauth_client_secret")


def resolve_database_url(url: str | None = None) -> str:
    """The SQLAlchemy URL to use: the argument, ``DATABASE_URL``, or the SQLite default.

    Every password it carries (userinfo, ``?password=``, a ``passfile``, ``PGPASSWORD``) is
    registered for redaction before anything can fail and print it; a URL that libpq would
    reject (a bad port, an unknown option) is a one-line :class:`ConfigError` here rather than a
    traceback at the first connection.
    """
    # Secrets mounted as files often end in a newline; it is never part of a URL.
    raw = (url or os.environ.get("DATABASE_URL") or SQLITE_DEFAULT).strip()
    _register_url_secrets(raw)
    try:
        parsed = make_url(raw)
        port = parsed.port
    except (ArgumentError, ValueError):
        raise ConfigError(
            "DATABASE_URL is not a database URL (is the port a number?); use "
            "postgresql://user@host:5432/dbname"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername not in ("postgresql+psycopg", "sqlite", "sqlite+pysqlite"):
        raise ConfigError(
            f"DATABASE_URL: driver {parsed.drivername!r} is not supported; "
            "use postgresql:// (psycopg 3) or sqlite:///path"
        )
    if parsed.drivername == "postgresql+psycopg":
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"DATABASE_URL: port {port} is out of range; use 1-65535 (usually 5432)")
        unknown = sorted(set(parsed.query) - _libpq_options())
        if unknown:
            raise ConfigError(
                f"DATABASE_URL: unknown connection option {', '.join(unknown)}; use libpq's "
                "names (sslmode, connect_timeout, application_name, ...)"
            )
        for option in _SECRET_OPTIONS:
            value = parsed.query.get(option)
            register_secret(value if isinstance(value, str) else None)
        passfile = parsed.query.get("passfile") or os.environ.get("PGPASSFILE") or "~/.pgpass"
        if isinstance(passfile, str):
            _register_passfile(passfile)
    register_secret(parsed.password if isinstance(parsed.password, str) else None)
    register_secret(os.environ.get("PGPASSWORD"))
    return parsed.render_as_string(hide_password=False)


def _libpq_options() -> set[str]:
    return {option.keyword.decode() for option in pq.Conninfo.get_defaults()}


def _register_url_secrets(raw: str) -> None:
    """Register the userinfo password of ``raw`` before it is parsed: a URL too broken to
    parse can still be quoted by an error."""
    match = re.match(r"^[^:/]+://[^:/@]*:([^@]*)@", raw)
    if match:
        register_secret(match.group(1))
        register_secret(unquote(match.group(1)))


def _register_passfile(path: str) -> None:
    """The passwords in a libpq password file (``host:port:db:user:password`` lines)."""
    try:
        lines = Path(path).expanduser().read_text(errors="replace").splitlines()
    except OSError:
        return  # libpq will say it cannot read it; nothing of it can leak
    for line in lines:
        fields = re.split(r"(?<!\\):", line, maxsplit=4)
        if len(fields) == 5 and not line.startswith("#"):
            register_secret(fields[4].replace("\\:", ":").replace("\\\\", "\\"))


def missing_database_file(url: str) -> str | None:
    """What to do, when ``url`` names an SQLite file that does not exist (None otherwise).

    SQLite creates a missing file on connecting: a command that only reads (``status``,
    ``lookup``, ``report``, ``check``), typed where no ``DATABASE_URL`` is set, would leave an
    empty ``blocklist-sync.db`` in whatever directory it was typed in, and then report an empty
    schema instead of the real problem.
    """
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:" or "uri" in parsed.query:
        return None
    if Path(path).exists():
        return None
    unset = "" if os.environ.get("DATABASE_URL") else " (DATABASE_URL is not set, so that is the default)"
    return (
        f"{path} does not exist{unset}; set DATABASE_URL to your PostgreSQL database, "
        "or run `blocklist-sync migrate` to create it"
    )


def require_database_file(url: str) -> None:
    """:func:`missing_database_file` as a one-line :class:`ConfigError` (exit 2)."""
    missing = missing_database_file(url)
    if missing:
        raise ConfigError(missing)


def describe_url(url: str) -> str:
    """The URL as it may be shown: every password masked, in the userinfo or the query, and in
    the form ``psql`` and libpq accept (``postgresql://``, not SQLAlchemy's
    ``postgresql+psycopg://``), so a reader can paste it, a password added."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql")
    secret = {k: MASK for k in _SECRET_OPTIONS if k in parsed.query}
    if secret:
        parsed = parsed.update_query_dict(secret)
    shown = parsed.render_as_string(hide_password=True).replace(quote(MASK, safe=""), MASK)
    return redact(shown)


def make_engine(url: str, schema: str | None = None) -> Engine:
    """An engine without a pool whose PostgreSQL sessions say who they are, and work in
    ``schema`` when one is given (``BLOCKLIST_SYNC_SCHEMA``, checked by
    :func:`~sync.settings.parse_schema`).

    No pool: a batch job opens few connections, and a closed connection must really close,
    releasing its advisory lock and temporary tables with it. Each session is named
    :data:`APPLICATION_NAME` so a DBA, and a sweep finding a channel locked, can tell ours from
    others; it is libpq's *fallback* name, so one the operator set in the URL or ``PGAPPNAME``
    wins.

    On PostgreSQL the session's ``search_path`` is set the moment it connects, ahead of
    everything else (SQLAlchemy's own recipe), to the install's schema and nothing else: the
    one given, or, without one, the schema the server's path resolves to first (``public``
    unless a DBA set another). Every unqualified name in the code, the migrations and the views
    then means the install's relation, whatever they create lands in it, and temporary tables
    stay in ``pg_temp``. No other schema follows it, because PostgreSQL picks the function or
    operator whose argument types fit best from *every* schema on the path (``pg_catalog``
    included): a reader who may create objects in ``public`` could otherwise plant, say,
    ``public.hashtextextended(text, integer)`` and have the job run it with the job's rights
    (``check`` warns when PUBLIC may create in the install's own schema). ``migrate`` creates a
    named schema before anything else. On SQLite (one schema per file) any schema but
    ``public`` is a :class:`ConfigError`.
    """
    backend = make_url(url).get_backend_name()
    if schema not in (None, "public") and backend != "postgresql":
        raise ConfigError(
            f"{SCHEMA_SETTING}={schema} needs PostgreSQL (a SQLite file has one schema); unset "
            "it, or set DATABASE_URL to postgresql://..."
        )
    postgresql = backend == "postgresql"
    connect_args = {"fallback_application_name": APPLICATION_NAME} if postgresql else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")  # readers are not blocked by a sweep
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.close()

    elif postgresql:
        search_path: sql.Composable
        if schema is not None:
            search_path = sql.SQL("SET SESSION search_path TO {}").format(sql.Identifier(schema))
        else:  # the schema the server's path resolves to first, alone (asked with every
            # function named in pg_catalog: this runs while the server's path is still in force)
            search_path = sql.SQL(
                "SELECT pg_catalog.set_config('search_path', pg_catalog.quote_ident(s::text), false) "
                "FROM pg_catalog.current_schema() AS s WHERE s IS NOT NULL"
            )

        @event.listens_for(engine, "connect", insert=True)  # before the dialect's first queries
        def _search_path(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True  # outside any transaction: it lasts the session
            dbapi_connection.execute(search_path)
            dbapi_connection.autocommit = autocommit

        if schema is not None:
            engine = engine.execution_options(**{_SCHEMA_OPTION: schema})
    return engine


# The execution option that carries an engine's schema to the migrations (see engine_schema).
_SCHEMA_OPTION = "blocklist_sync_schema"


def engine_schema(engine: Engine) -> str | None:
    """The schema :func:`make_engine` was given for ``engine`` (None: the server's search_path
    decides, as before the setting existed)."""
    schema = engine.get_execution_options().get(_SCHEMA_OPTION)
    return schema if isinstance(schema, str) else None


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
    """The revision recorded in the engine's schema (its own ``alembic_version``: two schemas
    of one database are two installs, each at its own revision)."""
    opts = {"version_table_schema": engine_schema(engine)}
    with engine.connect() as connection:
        return MigrationContext.configure(connection, opts=opts).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the schema to ``revision``; returns (revision before, revision after).

    The migrations run in one transaction; then each one applied that defines
    ``after_commit(connection)`` gets it, oldest first, in autocommit: upkeep that is useless
    inside the migrations' transaction, such as rewriting a table whose every row a migration
    updated (there the rewrite would keep every old row version, as that same transaction
    might still need them). The schema is whole before any of it runs, so a process stopped
    during it leaves a correct install, only a larger one."""
    before = current_revision(engine)
    config = alembic_config(engine)
    command.upgrade(config, revision)
    after = current_revision(engine)
    if after != before:
        applied = ScriptDirectory.from_config(config).iterate_revisions(after, before)
        for script in reversed(list(applied)):
            if upkeep := getattr(script.module, "after_commit", None):
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    upkeep(connection)
    return before, after


def require_current_schema(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        schema = engine_schema(engine)
        if schema is not None and current is None:  # a new install, or a misspelt name
            raise SchemaNotCurrent(
                f"schema {schema} of the database has no tables yet; run "
                f"`blocklist-sync migrate` first, or check {SCHEMA_SETTING}"
            )
        state = "has no schema yet" if current is None else f"is at revision {current}"
        where = "the database" if schema is None else f"schema {schema} of the database"
        raise SchemaNotCurrent(f"{where} {state}, not {head}; run `blocklist-sync migrate` first")
