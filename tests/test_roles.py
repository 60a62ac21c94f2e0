"""Three roles end to end: the owner migrates, the job sweeps with only its rights, a reader
reads. Every refusal is one line naming the right and the role (issues 27 item 14, 29 item 3)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from sqlalchemy.engine import make_url

from sync import database
from sync.roles import JOB_WRITES
from sync.simulator import Simulator
from tests.conftest import PG_SERVER, cli_env, invoke, numbers


def as_role(url: str, role: str) -> str:
    return make_url(url).set(username=role).render_as_string(hide_password=False)


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def roles(make_database: Callable[[], str]) -> Iterator[tuple[str, str, str]]:
    """An empty database and two new login roles (cluster-wide, dropped at the end)."""
    url = database.resolve_database_url(make_database())
    job, reader = (f"kbs_{kind}_{uuid.uuid4().hex[:10]}" for kind in ("job", "reader"))
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        for role in (job, reader):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield url, job, reader
    finally:
        with psycopg.connect(libpq(url), autocommit=True) as owner:
            for role in (job, reader):
                owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            for role in (job, reader):
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def one_error(result: object, code: int = 2) -> str:
    stdout, stderr, returncode = (getattr(result, name) for name in ("stdout", "stderr", "returncode"))
    assert returncode == code, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("blocklist-sync: error: "), stderr
    return str(lines[0])


def test_owner_job_and_reader_each_have_exactly_their_rights(
    roles: tuple[str, str, str], sim: Simulator
) -> None:
    url, job, reader = roles
    # A new install as the job's role: it may not create in the database's public schema.
    with psycopg.connect(libpq(url), autocommit=True) as owner:
        owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    refused = one_error(invoke("migrate", env=cli_env(None, as_role(url, job))))
    assert refused.startswith(
        f"blocklist-sync: error: role {job} lacks CREATE (permission denied for schema public)"
    )
    assert "run it as the role that owns the tables" in refused

    assert invoke("migrate", env=cli_env(None, url)).returncode == 0  # the owner
    sim.add("sms", numbers(40))
    job_env, reader_env = cli_env(sim, as_role(url, job)), cli_env(sim, as_role(url, reader))

    # Before any grant: check names each missing right; run and status are one line each.
    checked = invoke("check", env=job_env)
    assert checked.returncode == 1
    failing = [line for line in checked.stdout.splitlines() if line.startswith("FAIL")]
    wanted = [f"{right} on {table}" for table, rights in JOB_WRITES.items() for right in rights]
    for right in [
        *wanted,
        "SELECT on sync_runs",
        "USAGE on sequence sync_runs_id_seq",
    ]:
        assert any(f"role {job} lacks {right}" in line for line in failing), right
    assert all(line.endswith(f"run `blocklist-sync grant-job {job}`") for line in failing)
    for command in (("run", "--channel", "sms"), ("status",)):
        error = one_error(invoke(*command, env=job_env))
        assert f"role {job} lacks SELECT (permission denied for table alembic_version)" in error
        assert f"`blocklist-sync grant-job {job}`" in error

    granted = invoke("grant-job", job, env=cli_env(None, url))
    assert granted.returncode == 0, granted.stderr
    assert invoke("grant-read", reader, env=cli_env(None, url)).returncode == 0
    checked = invoke("check", env=job_env)
    assert checked.returncode == 0, checked.stdout
    assert f"ok    rights: role {job} may run sweeps and imports" in checked.stdout

    # The job sweeps, twice, and reads what it wrote.
    first = invoke("run", "--channel", "sms", env=job_env)
    sim.remove("sms", numbers(4))
    second = invoke("run", "--channel", "sms", env=job_env)
    assert "+40 -0" in first.stdout and "+0 -4" in second.stdout, first.stderr + second.stderr
    assert invoke("status", env=job_env).returncode == 0
    assert invoke("lookup", numbers(1)[0], env=job_env).returncode == 0

    # ... but cannot change the schema or erase history.
    with psycopg.connect(libpq(as_role(url, job)), autocommit=True) as c:
        for statement in (
            "DELETE FROM blocklist_periods",
            "TRUNCATE sync_runs",
            "DROP TABLE blocklist_periods",
            "DROP VIEW blocklist_events",
            "ALTER TABLE sync_runs ADD COLUMN x int",
            "CREATE TABLE public.kbs_mine (n int)",
        ):
            with pytest.raises(pg_errors.InsufficientPrivilege):
                c.execute(statement)

    # A reader may check, and reads; a sweep as a reader is one line naming the right.
    error = one_error(invoke("run", "--channel", "sms", env=reader_env))
    assert f"role {reader} lacks INSERT (permission denied for table " in error
    checked = invoke("check", env=reader_env)
    assert checked.returncode == 1
    assert f"FAIL  rights: role {reader} lacks INSERT on sync_runs" in checked.stdout
    assert invoke("status", env=reader_env).returncode == 0
