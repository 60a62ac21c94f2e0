"""Alembic environment: migrates the engine the application hands over, or DATABASE_URL.

Deliberately no ``logging.config.fileConfig``: called in-process it would silence the
application's loggers (alembic issues 714, 795).
"""

from alembic import context

from sync import views  # noqa: F401 - registers op.create_view, op.drop_view, op.replace_view
from sync.database import make_engine, resolve_database_url
from sync.schema import metadata

config = context.config


def run_migrations() -> None:
    engine = config.attributes.get("engine") or make_engine(
        resolve_database_url(config.get_main_option("sqlalchemy.url") or None)
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations()
