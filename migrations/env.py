"""Alembic environment: migrates the engine the application hands over, or DATABASE_URL.

Deliberately no ``logging.config.fileConfig``: called in-process it would silence the
application's loggers (alembic issues 714, 795).

With a schema (``BLOCKLIST_SYNC_SCHEMA``; the engine's session already searches it first, see
:func:`sync.database.make_engine`) the schema is created when missing, before anything else,
and Alembic's version table is kept in it: each schema of a database is an install of its own,
at its own revision.
"""

import os

from alembic import context
from sqlalchemy import Connection, text

from sync import views  # noqa: F401 - registers op.create_view, op.drop_view, op.replace_view
from sync.database import engine_schema, make_engine, resolve_database_url
from sync.settings import SCHEMA_SETTING, parse_schema
from sync.store.schema import metadata

config = context.config


def create_schema(connection: Connection, schema: str) -> None:
    """``CREATE SCHEMA`` unless it exists. Looked up first, because PostgreSQL checks the
    privilege to create schemas before ``IF NOT EXISTS``: a schema a DBA made for this role must
    not need that privilege too."""
    exists = connection.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema})
    if exists.first() is None:
        quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
        connection.execute(text(f"CREATE SCHEMA {quoted}"))
    connection.commit()


def run_migrations() -> None:
    engine = config.attributes.get("engine") or make_engine(
        resolve_database_url(config.get_main_option("sqlalchemy.url") or None),
        parse_schema(os.environ.get(SCHEMA_SETTING)),
    )
    schema = engine_schema(engine)
    with engine.connect() as connection:
        if schema is not None:  # PostgreSQL only: make_engine refuses one on SQLite
            create_schema(connection, schema)
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            version_table_schema=schema,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations()
