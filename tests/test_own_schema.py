"""``BLOCKLIST_SYNC_SCHEMA``: an install in a schema of its own, on a real PostgreSQL.

What an operator relies on: every table, view, sequence and function, and Alembic's version
table, land in the named schema and nothing in ``public``; every command reads from it; two
schemas of one database are two installs that share nothing (rows, revision, channel locks);
``grant-read`` lets a BI role read that schema and do nothing else; a name that is not a plain
schema name, or a schema on SQLite, is refused in one line before anything is written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from psycopg import errors as pg_errors
from psycopg import sql
from sqlalchemy import Engine

from sync import database
from sync.simulator import Simulator
from sync.store import Store
from sync.store.schema import metadata
from sync.sweep import Outcome
from tests.conftest import PG_SERVER, cli_env, invoke, numbers, rows, sweep

SCHEMA = "kaleyra"

# Every object of ours, of every kind, in ``schema``: relations (tables, views, sequences,
# indexes), functions and types (a domain; each relation's row type), by kind and name.
OBJECTS = """
    SELECT c.relkind::text, c.relname::text FROM pg_class c
    WHERE c.relnamespace = to_regnamespace(:schema)
    UNION ALL
    SELECT 'function', p.proname::text FROM pg_proc p WHERE p.pronamespace = to_regnamespace(:schema)
    UNION ALL
    SELECT 'type', t.typname::text FROM pg_type t WHERE t.typnamespace = to_regnamespace(:schema)
    ORDER BY 1, 2"""


def objects(engine: Engine, schema: str) -> list[tuple[str, str]]:
    return [(kind, name) for kind, name in rows(engine, OBJECTS, schema=schema)]


def engine_in(url: str, schema: str | None) -> Engine:
    return database.make_engine(database.resolve_database_url(url), schema)


def in_schema(env: dict[str, str], schema: str = SCHEMA) -> dict[str, str]:
    return {**env, "BLOCKLIST_SYNC_SCHEMA": schema}


def test_an_install_in_its_own_schema_puts_nothing_in_public(
    make_database: Callable[[], str], sim: Simulator
) -> None:
    """The demo's story through the CLI: migrate, sweep, the list changes, sweep again; then
    status and lookup answer from the schema, and a session without the setting sees nothing."""
    url = make_database()
    env = in_schema(cli_env(sim, url))
    plain = engine_in(url, None)
    public_before = objects(plain, "public")

    migrated = invoke("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert f"(schema {SCHEMA})" in migrated.stdout
    sim.add("sms", numbers(30))
    first = invoke("run", env=env)
    assert first.returncode == 0, first.stderr
    sim.remove("sms", numbers(5))
    sim.add("whatsapp", numbers(3, start=100))
    second = invoke("run", env=env)
    assert second.returncode == 0, second.stderr

    assert objects(plain, "public") == public_before  # nothing at all, not even a sequence
    ours = objects(plain, SCHEMA)
    tables = {name for kind, name in ours if kind == "r"}
    assert tables == set(metadata.tables) | {"alembic_version"}
    views = {name for kind, name in ours if kind == "v"}
    assert "blocklist_sync_health" in views and "blocklist_intervals" in views
    assert {kind for kind, _ in ours} <= {"r", "v", "i", "S", "function", "type"}
    assert ("function", "blocklist_as_of") in ours and ("type", "blocklist_key") in ours
    kaleyra = engine_in(url, SCHEMA)
    held = "SELECT COUNT(*) FROM blocklist_entries WHERE account_sid = :a"
    assert rows(kaleyra, held, a=sim.sid) == [(28,)]
    assert rows(plain, f"SELECT COUNT(*) FROM {SCHEMA}.blocklist_events WHERE change = 'removed'") == [(5,)]

    status = invoke("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    entries = {c["channel"]: c["entries"] for c in json.loads(status.stdout)["channels"]}
    assert entries == {"sms": 25, "whatsapp": 3, "voice": 0}
    looked_up = invoke("lookup", numbers(1, start=7)[0], numbers(1)[0], "--json", env=env)
    assert looked_up.returncode == 0, looked_up.stderr
    listed, removed = json.loads(looked_up.stdout)["numbers"]
    assert listed["blocklisted_now"] and not removed["blocklisted_now"]
    assert [c["channel"] for c in removed["channels"] if c["intervals"]] == ["sms"]  # the ended stretch

    # Without the setting, the same database holds no install: refused, one line, exit 2.
    unset = invoke("status", env=cli_env(sim, url))
    assert unset.returncode == 2 and "migrate" in unset.stderr, unset.stderr


def test_two_schemas_of_one_database_are_two_installs(
    make_database: Callable[[], str], sim: Simulator
) -> None:
    """One install in public (the setting unset, as before it existed), one in kaleyra,
    sweeping the same account: their rows, revisions and channel locks are their own."""
    url = make_database()
    public, kaleyra = engine_in(url, None), engine_in(url, SCHEMA)
    database.upgrade(public)
    database.upgrade(kaleyra)
    public_store, kaleyra_store = Store(public), Store(kaleyra)

    sim.add("sms", numbers(10))
    assert sweep(sim, kaleyra_store).outcome is Outcome.SUCCEEDED
    sim.add("sms", numbers(4, start=50))
    # While a sweep of the kaleyra install holds its lock on this channel, the public install
    # sweeps the same channel: a different install, so a different lock.
    with kaleyra_store.lock_channel(sim.sid, "sms"):
        assert sweep(sim, kaleyra_store).outcome is Outcome.LOCKED  # its own lock still holds
        assert sweep(sim, public_store).outcome is Outcome.SUCCEEDED

    count = "SELECT COUNT(*) FROM blocklist_entries WHERE account_sid = :a"
    runs = "SELECT status FROM sync_runs WHERE account_sid = :a ORDER BY id"
    assert rows(kaleyra, count, a=sim.sid) == [(10,)]
    assert rows(public, count, a=sim.sid) == [(14,)]
    assert rows(kaleyra, runs, a=sim.sid) == [("succeeded",)]  # a locked sweep writes no run row
    assert rows(public, runs, a=sim.sid) == [("succeeded",)]
    assert rows(public, "SELECT COUNT(*) FROM blocklist_events WHERE NOT initial_load") == [(0,)]

    # Taking one install down to nothing leaves the other as it was.
    command.downgrade(database.alembic_config(kaleyra), "base")
    assert database.current_revision(kaleyra) is None
    left = [(kind, name) for kind, name in objects(kaleyra, SCHEMA) if kind not in ("i", "type")]
    assert left == [("r", "alembic_version")]
    database.require_current_schema(public)
    assert rows(public, count, a=sim.sid) == [(14,)]


@pytest.fixture
def reader(make_database: Callable[[], str]) -> Iterator[tuple[str, str]]:
    """A database with an install in ``kaleyra`` and a new login role that may read nothing
    yet; the role (cluster-wide) is dropped at the end, with what it holds in the database."""
    url = make_database()
    engine = engine_in(url, SCHEMA)
    database.upgrade(engine)  # a real migration: the functions name the schema they were made in
    engine.dispose()
    role = f"kbs_reader_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield url, role
    finally:
        with psycopg.connect(url, autocommit=True) as owner:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_grant_read_covers_the_schema_and_only_reading(reader: tuple[str, str], sim: Simulator) -> None:
    url, role = reader
    kaleyra = engine_in(url, SCHEMA)
    sim.add("sms", numbers(3))
    assert sweep(sim, Store(kaleyra)).outcome is Outcome.SUCCEEDED
    # A function of the install, which a DBA made private as PostgreSQL lets one do.
    with psycopg.connect(url, autocommit=True) as owner:
        owner.execute(
            f"CREATE FUNCTION {SCHEMA}.blocklist_kbs_probe(at timestamptz) RETURNS int "
            f"LANGUAGE sql AS 'SELECT COUNT(*)::int FROM {SCHEMA}.blocklist_entries'"
        )
        owner.execute(f"REVOKE EXECUTE ON FUNCTION {SCHEMA}.blocklist_kbs_probe(timestamptz) FROM PUBLIC")
    reader_url = psycopg.conninfo.make_conninfo(url, user=role)
    with psycopg.connect(reader_url, autocommit=True) as c, pytest.raises(pg_errors.InsufficientPrivilege):
        c.execute(f"SELECT COUNT(*) FROM {SCHEMA}.sync_runs")  # nothing before the grant

    done = invoke("grant-read", role, env=in_schema(cli_env(None, url)))
    assert done.returncode == 0, done.stderr
    assert f"(schema {SCHEMA})" in done.stdout

    # The role searches the schema, as the README tells a BI login to (see the next test).
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER ROLE {} SET search_path = {}").format(*map(sql.Identifier, (role, SCHEMA)))
        )
    relations = [name for kind, name in objects(kaleyra, SCHEMA) if kind in ("r", "v")]
    with psycopg.connect(reader_url, autocommit=True) as c:
        for relation in relations:
            c.execute(f"SELECT * FROM {SCHEMA}.{relation} LIMIT 1")  # raises if not readable
        assert c.execute(f"SELECT {SCHEMA}.blocklist_kbs_probe(now())").fetchone() == (3,)
        # At the last sweep's commit (the end of its coverage), and after it (now: unknown).
        as_of = c.execute(
            "SELECT state, COUNT(*) FROM blocklist_as_of((SELECT covered_to FROM blocklist_coverage)) "
            "GROUP BY state"
        ).fetchall()
        assert as_of == [("yes", 3)]
        as_of = c.execute("SELECT state, COUNT(*) FROM blocklist_as_of(now()) GROUP BY state").fetchall()
        assert as_of == [("unknown", 1)]
        for write in (
            f"INSERT INTO {SCHEMA}.sync_runs DEFAULT VALUES",
            f"DELETE FROM {SCHEMA}.blocklist_entries",
            f"CREATE VIEW {SCHEMA}.kbs_mine AS SELECT 1",
            f"SELECT nextval('{SCHEMA}.sync_runs_id_seq')",
        ):
            with pytest.raises(pg_errors.InsufficientPrivilege):
                c.execute(write)
    # What a later migration adds to the schema is readable at once.
    with psycopg.connect(url, autocommit=True) as owner:
        owner.execute(f"CREATE VIEW {SCHEMA}.blocklist_kbs_later AS SELECT 8 AS n")
    with psycopg.connect(reader_url, autocommit=True) as c:
        assert c.execute(f"SELECT n FROM {SCHEMA}.blocklist_kbs_later").fetchone() == (8,)


def test_a_reader_without_the_schema_on_its_path_reads_the_daily_views(
    reader: tuple[str, str], sim: Simulator
) -> None:
    url, role = reader
    sim.add("sms", numbers(3))
    assert sweep(sim, Store(engine_in(url, SCHEMA))).outcome is Outcome.SUCCEEDED
    assert invoke("grant-read", role, env=in_schema(cli_env(None, url))).returncode == 0
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, user=role), autocommit=True) as c:
        # The daily views and the as-of function name their install's tables, not the path's.
        c.execute(f"SELECT * FROM {SCHEMA}.blocklist_daily_changes")
        [(_day, entries)] = c.execute(f"SELECT day, entries FROM {SCHEMA}.blocklist_daily_size").fetchall()
        assert entries == 3
        end = f"(SELECT covered_to FROM {SCHEMA}.blocklist_coverage)"  # of the coverage
        found = c.execute(f"SELECT COUNT(*) FROM {SCHEMA}.blocklist_as_of({end})").fetchone()
        assert found == (3,)


NOT_A_SCHEMA = [
    ("Kaleyra", "not a plain schema name"),  # PostgreSQL would fold it, psql users would not
    ("kaleyra;drop", "not a plain schema name"),
    ("two words", "not a plain schema name"),
    ("9lives", "not a plain schema name"),
    ("k" * 64, "not a plain schema name"),  # PostgreSQL would cut it to 63, silently
    ("kaléyra", "not a plain schema name"),
    ("pg_catalog", "reserved"),
    ("information_schema", "reserved"),
]


@pytest.mark.parametrize(("value", "says"), NOT_A_SCHEMA)
def test_a_schema_name_that_is_not_plain_is_refused_in_one_line(
    value: str, says: str, make_database: Callable[[], str]
) -> None:
    url = make_database()
    result = invoke("migrate", env=in_schema(cli_env(None, url), value))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == "", result.stderr
    assert result.stderr.startswith("blocklist-sync: error: BLOCKLIST_SYNC_SCHEMA: ")
    assert says in result.stderr
    schemas = rows(engine_in(url, None), "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_'")
    assert sorted(schemas) == [("information_schema",), ("public",)]  # nothing created


def test_a_schema_on_sqlite_is_refused_and_public_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "blocklist-sync.db"
    env = cli_env(None, f"sqlite:///{path}")
    refused = invoke("migrate", env=in_schema(env))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "needs PostgreSQL" in refused.stderr, refused.stderr
    assert not path.exists()  # nothing half-written
    assert invoke("migrate", env=in_schema(env, "public")).returncode == 0


def test_a_schema_not_migrated_yet_names_the_setting(make_migrated_database: Callable[[], str]) -> None:
    """A misspelt schema looks like a new install: the error says which, and what to check."""
    result = invoke("status", "--all", env=in_schema(cli_env(None, make_migrated_database()), "kaleyar"))
    assert result.returncode == 2
    assert "schema kaleyar of the database has no tables yet" in result.stderr
    assert "BLOCKLIST_SYNC_SCHEMA" in result.stderr
