"""Who may do what in the install's schema: the owner (``migrate``), the job, the readers.

Three roles, as the operators' guide shows end to end: the role that runs ``migrate`` owns the
tables and may change them; the job's role (``grant-job``) reads everything and writes exactly
what a sweep or an import writes, with no DDL; a reader (``grant-read``, for BI tools) reads
and writes nothing. Neither of the last two may create objects in the schema, and ``check``
says when PUBLIC may (a login could plant a name the job or a reader resolves).

The job's rights are stated once, in :data:`JOB_WRITES` and :func:`_job_statements`:
``grant-job`` grants them, ``check`` verifies them (:func:`missing_job_rights`), and
:func:`permission_words` turns a refusal into the one line that names the right and the role.
PostgreSQL only: SQLite has no roles.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass

from psycopg import errors as pg_errors
from psycopg import sql
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from sync.database import require_current_schema
from sync.settings import ConfigError

__all__ = [
    "JOB_WRITES",
    "grant_job",
    "grant_read",
    "missing_job_rights",
    "permission_words",
    "schemas_anyone_may_create_in",
]

# What a sweep or an import writes, table by table; every relation is also read.
JOB_WRITES: Mapping[str, tuple[str, ...]] = {
    "sync_runs": ("INSERT", "UPDATE"),
    "blocklist_periods": ("INSERT", "UPDATE"),
    "blocklist_channel_types": ("INSERT",),
    "sync_channel_locks": ("INSERT", "UPDATE"),  # a channel's row, then its lock (FOR UPDATE)
}

PERMISSION_DENIED = "42501"  # PostgreSQL's insufficient_privilege


@dataclass(frozen=True)
class _Install:
    """The schema the tables are in, the role that owns them, and what it owns there."""

    schema: str
    owner: str
    relations: list[str]
    functions: list[tuple[str, str]]  # name, identity arguments
    sequences: list[str]


def _install(connection: Connection) -> _Install | None:
    """None when this login cannot see the tables (no USAGE on their schema)."""
    found = connection.execute(
        text(
            "SELECT n.nspname, pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass('sync_runs')"
        )
    ).first()
    if found is None:
        return None
    schema, owner = found

    def owned(kinds: str) -> list[str]:
        return list(
            connection.execute(
                text(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :schema AND pg_get_userbyid(c.relowner) = :owner "
                    f"AND c.relkind IN ({kinds}) ORDER BY c.relname"
                ),
                {"schema": schema, "owner": owner},
            ).scalars()
        )

    # Each function by name and argument types, as PostgreSQL itself writes them.
    functions = connection.execute(
        text(
            "SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = :schema AND pg_get_userbyid(p.proowner) = :owner "
            "AND p.prokind = 'f' ORDER BY p.proname, p.oid"
        ),
        {"schema": schema, "owner": owner},
    ).all()
    return _Install(schema, owner, owned("'r', 'p', 'v', 'm'"), [(n, a) for n, a in functions], owned("'S'"))


def _reader_statements(install: _Install, role: str) -> list[sql.Composable]:
    """USAGE on the schema, SELECT on every relation and EXECUTE on every function the owner
    has there, now and made later (default privileges), and no CREATE on the schema."""
    schema, owner, grantee = (
        sql.Identifier(install.schema),
        sql.Identifier(install.owner),
        sql.Identifier(role),
    )
    return [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, grantee),
        sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(schema, grantee),
        sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(
            sql.SQL(", ").join(sql.Identifier(install.schema, name) for name in install.relations), grantee
        ),
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
            owner, schema, grantee
        ),
        *(
            sql.SQL("GRANT EXECUTE ON FUNCTION {}({}) TO {}").format(
                sql.Identifier(install.schema, name), sql.SQL(arguments), grantee
            )
            for name, arguments in install.functions
        ),
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT EXECUTE ON FUNCTIONS TO {}").format(
            owner, schema, grantee
        ),
    ]


def _job_statements(install: _Install, role: str, database: str) -> list[sql.Composable]:
    """A reader's rights, and what a sweep writes: temporary tables for its staging, the
    writes of :data:`JOB_WRITES`, the sequence that numbers runs. No DDL."""
    grantee = sql.Identifier(role)
    return [
        *_reader_statements(install, role),
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(database), grantee),
        *(
            sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(right) for right in rights),
                sql.Identifier(install.schema, table),
                grantee,
            )
            for table, rights in JOB_WRITES.items()
        ),
        *(
            sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(install.schema, name), grantee)
            for name in install.sequences
        ),
    ]


def _grant(engine: Engine, role: str, command: str, job: bool) -> None:
    if engine.dialect.name != "postgresql":
        raise ConfigError(
            f"{command} needs PostgreSQL (SQLite has no roles); set DATABASE_URL to postgresql://..."
        )
    require_current_schema(engine)
    with engine.begin() as connection:
        if (
            connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).first()
            is None
        ):
            raise ConfigError(
                f"role {role!r} does not exist; create it first (CREATE ROLE ... LOGIN), "
                "and mind that role names are case-sensitive"
            )
        install = _install(connection)
        assert install is not None  # require_current_schema found the tables
        database = connection.execute(text("SELECT current_database()")).scalar_one()
        statements = _job_statements(install, role, database) if job else _reader_statements(install, role)
        # The driver's own cursor runs the composed statements: psycopg quotes the identifiers,
        # so no role name is ever formatted into SQL text by hand.
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            for statement in statements:
                cursor.execute(statement)
        except pg_errors.InsufficientPrivilege as exc:
            raise ConfigError(
                f"cannot grant: {str(exc).splitlines()[0]}; run {command} as the role that runs "
                f"migrate ({install.owner}) or a superuser"
            ) from None
        # A GRANT on a table this login does not own only warns; make sure it took effect.
        right = "INSERT" if job else "SELECT"
        if not connection.execute(
            text("SELECT has_table_privilege(:role, to_regclass('sync_runs'), :right)"),
            {"role": role, "right": right},
        ).scalar_one():
            raise ConfigError(
                f"the grant to {role!r} did not take effect; run {command} as the role that "
                f"runs migrate ({install.owner}) or a superuser"
            )


def grant_read(engine: Engine, role: str) -> None:
    """Let the existing ``role`` read the tables and views, and those later migrations add.

    For BI tools, which should never hold the sync's own credentials: USAGE on the schema,
    SELECT on every table and view the migrating role owns there, EXECUTE on every function it
    owns there (PostgreSQL lets PUBLIC execute a new function, unless a DBA revoked that), and
    default privileges so a relation or function a later migration creates is usable the moment
    it exists. The schema is the one the tables are in (``BLOCKLIST_SYNC_SCHEMA``, or where
    the search_path put them). Nothing else: no sequence, no write, no CONNECT (PostgreSQL
    grants that to PUBLIC unless an admin revoked it), and CREATE on the schema is revoked from
    the role, so a reader cannot plant an object where the job and other readers resolve names
    (whether PUBLIC may create there is :func:`schemas_anyone_may_create_in`'s to say). Run it
    as the role that runs ``migrate``; running it again changes nothing.

    Raises :class:`ConfigError` (one line) on SQLite, for a role that does not exist, for a
    schema behind head, or when this login may not grant.
    """
    _grant(engine, role, "grant-read", job=False)


def grant_job(engine: Engine, role: str) -> None:
    """Let the existing ``role`` run the sweeps and imports, and nothing more: a reader's
    rights, CONNECT and TEMPORARY on the database (the staging tables are temporary), the
    writes of :data:`JOB_WRITES` and USAGE on the sequences. No DDL, no DELETE, no CREATE in
    the schema, so the hourly job's credentials cannot change the schema or erase history. A
    later migration that adds a table the job writes says so; run this again after it (``check``
    lists what is missing). Same errors as :func:`grant_read`."""
    _grant(engine, role, "grant-job", job=True)


def missing_job_rights(engine: Engine) -> tuple[str, list[str]]:
    """The role this engine logs in as, and each right a sweep needs that it lacks (``INSERT
    on sync_runs``), asked of PostgreSQL's own privilege functions; none on SQLite."""
    if engine.dialect.name != "postgresql":
        return "", []
    with engine.connect() as connection:
        role = connection.execute(text("SELECT current_user")).scalar_one()
        install = _install(connection)
        if install is None:
            return role, ["USAGE on the schema the tables are in"]
        needed = [(name, "SELECT") for name in install.relations]
        needed += [(table, right) for table, rights in JOB_WRITES.items() for right in rights]
        missing = [
            f"{right} on {name}"
            for name, right in needed
            if not connection.execute(
                text("SELECT has_table_privilege(to_regclass(:name), :right)"), {"name": name, "right": right}
            ).scalar_one()
        ]
        missing += [
            f"USAGE on sequence {name}"
            for name in install.sequences
            if not connection.execute(
                text("SELECT has_sequence_privilege(to_regclass(:name), 'USAGE')"), {"name": name}
            ).scalar_one()
        ]
        if not connection.execute(
            text("SELECT has_database_privilege(current_database(), 'TEMPORARY')")
        ).scalar_one():
            missing.append("TEMPORARY on the database (the sweep stages its listing in temporary tables)")
        return role, missing


def schemas_anyone_may_create_in(engine: Engine) -> list[str]:
    """The schemas this install's sessions resolve names in where PUBLIC may create objects
    (``public`` on a database PostgreSQL 14 or older made): there any login could plant a
    table, view or function under a name the job or a reader uses. The job's own calls are
    bound to the built-ins and its functions were bound when made, but an unqualified name a
    reader types, and any new object, still resolve through such a schema."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT s FROM unnest(current_schemas(false)) AS s "
                    "WHERE has_schema_privilege('public', s, 'CREATE')"
                )
            ).scalars()
        )


def permission_words(exc: DBAPIError, url: str | None, *, migrating: bool = False) -> str | None:
    """The one line for a statement PostgreSQL refused for want of a right, naming the right
    (from the statement's verb), the object (PostgreSQL's own words) and the role (the URL's
    user, else libpq's default), and what to do: ``migrating``, run it as the owner; else
    grant the job's rights. None for any other error."""
    if getattr(exc.orig, "sqlstate", None) != PERMISSION_DENIED:
        return None
    refused = str(exc.orig).strip().splitlines()[0]  # "permission denied for table sync_runs"
    words = (exc.statement or "").split()
    verb = words[0].upper() if words else "?"
    if verb == "SELECT" and "FOR UPDATE" in " ".join(words).upper():
        verb = "UPDATE"
    role = (make_url(url).username if url else None) or os.environ.get("PGUSER") or getpass.getuser()
    if migrating or verb in ("CREATE", "ALTER", "DROP", "COMMENT"):
        return (
            f"role {role} lacks {verb} ({refused}); migrate changes the schema: run it as the role "
            "that owns the tables (or, for a new install, one a DBA let create in the schema)"
        )
    return (
        f"role {role} lacks {verb} ({refused}); as the role that runs migrate, run "
        f"`blocklist-sync grant-job {role}` (or grant-read, for a reader), then `blocklist-sync check`"
    )
