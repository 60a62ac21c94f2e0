"""A reader's login cannot borrow the job's rights, nor hold its sweeps back (issue 27, item 1-2).

On a database where PUBLIC may create objects in ``public`` (PostgreSQL 14 and older make it
so, and upgrades keep it), a ``grant-read`` login plants functions whose argument types fit the
calls the job and the views made better than the built-ins did, so PostgreSQL would have run
them with the caller's rights. Each planted function records who ran it in a table of the
reader's: it must stay empty however the job and another reader use the install. And a
read-only login could take the sweeps' advisory lock; the lock is now a row it may not lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from sqlalchemy import Engine

from sync import database
from sync.simulator import Simulator
from sync.store import Store
from sync.store.dialect import LockLost
from sync.vocabulary import Trigger
from tests.conftest import PG_SERVER, cli_env, entries, invoke, numbers, rows, wait_for

# Each returns what the built-in would, after writing down who ran it.
PLANTS = [
    """CREATE FUNCTION public.hashtextextended(text, integer) RETURNS bigint LANGUAGE sql AS $$
        INSERT INTO public.kbs_ran VALUES ('hashtextextended', current_user);
        SELECT pg_catalog.hashtextextended($1, $2::bigint) $$""",
    """CREATE FUNCTION public.generate_series(date, date, interval) RETURNS SETOF timestamp
        LANGUAGE sql AS $$
        INSERT INTO public.kbs_ran VALUES ('generate_series', current_user);
        SELECT pg_catalog.generate_series($1::timestamp, $2::timestamp, $3) $$""",
    # The job's parameters arrive as varchar: an exact fit for an operator of the reader's.
    """CREATE FUNCTION public.kbs_eq(varchar, varchar) RETURNS boolean LANGUAGE sql AS $$
        INSERT INTO public.kbs_ran VALUES ('=', current_user);
        SELECT $1::text = $2::text $$""",
    "CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.kbs_eq)",
]


@pytest.fixture
def planted(make_migrated_database: Callable[[], str]) -> Iterator[tuple[str, str]]:
    """A migrated database where PUBLIC may create in ``public``, a ``grant-read`` reader, and
    the reader's functions planted there; the role (cluster-wide) is dropped at the end."""
    url = database.resolve_database_url(make_migrated_database())
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    role = f"kbs_reader_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        with psycopg.connect(plain, autocommit=True) as owner:
            owner.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # as PostgreSQL 14 made it
        granted = invoke("grant-read", role, env=cli_env(None, url))
        assert granted.returncode == 0, granted.stderr
        assert "PUBLIC may still create objects in schema public" in granted.stderr
        with psycopg.connect(plain, user=role, autocommit=True) as reader:
            reader.execute("CREATE TABLE public.kbs_ran (what text, who text)")
            reader.execute("GRANT INSERT, SELECT ON public.kbs_ran TO PUBLIC")
            for statement in PLANTS:
                reader.execute(statement)
        yield url, role
    finally:
        with psycopg.connect(plain, autocommit=True) as owner:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_functions_a_reader_plants_never_run_for_the_job_or_another_reader(
    planted: tuple[str, str], sim: Simulator
) -> None:
    url, _ = planted
    engine = database.make_engine(url)
    sim.add("sms", numbers(30))
    env = cli_env(sim, url)
    first = invoke("run", "--channel", "sms", env=env)
    sim.remove("sms", numbers(5))
    second = invoke("run", "--channel", "sms", env=env)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert "+30 -0" in first.stdout and "+0 -5" in second.stdout
    looked_up = invoke("lookup", "+919000000010", env=env)
    assert looked_up.returncode == 0, looked_up.stderr
    # Another reader's dashboard, with public on its path as every default session has.
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as analyst:
        assert analyst.execute("SHOW search_path").fetchone() == ('"$user", public',)
        analyst.execute("SELECT * FROM blocklist_daily_changes").fetchall()
        analyst.execute("SELECT * FROM blocklist_daily_size").fetchall()
        analyst.execute("SELECT * FROM blocklist_daily_changes_in('Asia/Kolkata')").fetchall()
        # As of the last sweep's commit (the end of the coverage): the 25 numbers; after it
        # (now), nothing has looked: the channel's one unknown row.
        counted = analyst.execute(
            "SELECT COUNT(*) FROM blocklist_as_of((SELECT covered_to FROM blocklist_coverage))"
        ).fetchone()
        assert counted == (25,)
        unknown = analyst.execute("SELECT mobile, state FROM blocklist_as_of(now())").fetchall()
        assert unknown == [(None, "unknown")]
    assert rows(engine, "SELECT what, who FROM public.kbs_ran") == []
    # Nothing the planted code would have rewritten: both runs, in order, succeeded.
    runs = rows(
        engine, "SELECT status, added, removed FROM sync_runs WHERE account_sid = :a ORDER BY id", a=sim.sid
    )
    assert runs == [("succeeded", 30, 0), ("succeeded", 0, 5)]


def test_check_warns_when_public_may_create_where_the_install_resolves_names(
    planted: tuple[str, str], sim: Simulator
) -> None:
    url, _ = planted
    result = invoke("check", env=cli_env(sim, url))
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not a failure
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
    assert warnings == [
        "WARN  schema rights: PUBLIC may create objects in schema public, where this install's names "
        "resolve: any login could plant a table, view or function there; as the schema's owner run "
        'REVOKE CREATE ON SCHEMA "public" FROM PUBLIC (PostgreSQL 15 and later do), or give the '
        "install a schema of its own (BLOCKLIST_SYNC_SCHEMA)"
    ]


def test_a_reader_cannot_create_in_the_install_schema_nor_hold_a_channels_lock(
    planted: tuple[str, str], sim: Simulator
) -> None:
    url, role = planted
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as owner:
        owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # what check advises
    sim.add("sms", numbers(10))
    env = cli_env(sim, url)
    assert invoke("run", "--channel", "sms", env=env).returncode == 0  # the channel's lock row exists
    with psycopg.connect(plain, user=role) as reader:
        # What held every sweep back before: the old advisory lock, held for the whole sweep.
        key = f"kaleyra-blocklist-sync:{sim.sid}:sms"
        taken = reader.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [key]).fetchone()
        assert taken == (True,)
        sim.add("sms", numbers(2, start=100))
        swept = invoke("run", "--channel", "sms", env=env)
        assert swept.returncode == 0, swept.stdout + swept.stderr
        assert f"{sim.sid} sms: succeeded, 12 blocklisted, +2 -0" in swept.stdout
        reader.rollback()
        with pytest.raises(pg_errors.InsufficientPrivilege):
            reader.execute("SELECT 1 FROM sync_channel_locks FOR UPDATE")
        reader.rollback()
        with pytest.raises(pg_errors.InsufficientPrivilege):
            reader.execute("CREATE FUNCTION public.kbs_mine() RETURNS int LANGUAGE sql AS 'SELECT 1'")


def test_a_sweep_whose_lock_session_was_ended_applies_nothing(
    store: Store, engine: Engine, sim: Simulator
) -> None:
    """The lock is held by a second session of the sweep; if a DBA (or a server timeout) ends
    that session, another sweep may take the channel, so this one must not apply."""
    with store.lock_channel(sim.sid, "sms") as session:
        with session.transaction():
            run_id = session.start_run(Trigger.MANUAL)
            comparison = session.stage([("+919000000001", None), ("+919000000002", None)]).diff()
        [(holder,)] = rows(
            engine,
            "SELECT a.pid FROM pg_stat_activity a JOIN sync_channel_locks k ON a.backend_xid = k.xmax "
            "WHERE k.account_sid = :a AND k.channel = 'sms'",
            a=sim.sid,
        )
        assert rows(engine, "SELECT pg_terminate_backend(:pid)", pid=holder) == [(True,)]
        wait_for(lambda: not rows(engine, "SELECT 1 FROM pg_stat_activity WHERE pid = :pid", pid=holder))
        with pytest.raises(LockLost, match="nothing was applied"), session.transaction():
            comparison.apply(run_id, pages=1, diff=comparison.counts())
    assert entries(engine, sim) == set()
