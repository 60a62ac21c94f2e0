"""The commands around the job: who may use the database (``grant-read``, ``grant-job``), and
trying it all without a Kaleyra account (``simulate``, ``demo``)."""

from __future__ import annotations

import contextlib
import logging
import sys

import click
from sqlalchemy import Engine

from sync import roles
from sync.cli.common import open_store
from sync.cli.errors import config_errors_exit, fail
from sync.cli.options import WholeNumber, database_option
from sync.settings import as_typed
from sync.telemetry import configure_logging

__all__ = ["demo", "grant_job", "grant_read", "simulate"]

DEMO_DATABASE = "sqlite:///blocklist-sync-demo.db"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=WholeNumber(0, 65535), default=8099, show_default=True)
@click.option(
    "--numbers",
    type=WholeNumber(0, 10_000_000),
    default=5000,
    show_default=True,
    help="Blocklisted numbers generated per channel.",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--latency",
    default="0ms",
    show_default=True,
    help="How long every listing request waits before it is answered (100ms), as the real API does.",
)
def simulate(host: str, port: int, numbers: int, seed: int, latency: str) -> None:
    """Serve a Kaleyra Get/Change Blocklist simulator until interrupted."""
    from sync.simulator import Simulator, parse_latency

    try:
        seconds = parse_latency(latency)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--latency") from None
    sim = Simulator(numbers=numbers, seed=seed, latency=seconds)

    def listening() -> None:
        click.echo(
            f"Kaleyra simulator: {numbers} numbers per channel, seed {seed}, "
            f"{seconds * 1000:g} ms per request\n"
            f"  KALEYRA_BASE_URL=http://{host}:{port}/v1\n"
            f"  KALEYRA_SID={sim.sid}\n"
            f"  KALEYRA_API_KEY={sim.api_key}\n"
            "Ctrl-C stops it."
        )

    try:
        with contextlib.suppress(KeyboardInterrupt):
            sim.serve_forever(host=host, port=port, listening=listening)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a host name label over 63 characters
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not an address of this host"
        fail(
            f"simulate: cannot listen on {as_typed(host)} port {port} ({why}); "
            "pick a free port with --port, or another --host"
        )


@click.command()
@click.option(
    "--database-url",
    default=DEMO_DATABASE,
    show_default=True,
    help="Where the demo writes. Deliberately not read from DATABASE_URL: the demo "
    "never writes its made-up account into your real database by accident.",
)
@config_errors_exit
def demo(database_url: str) -> None:
    """Simulator, migrate, sweep, change the list, sweep again: the whole job on defaults."""
    from sync.demo import run_demo

    configure_logging("text", level=logging.WARNING)  # the demo tells its own story
    store, where = open_store(database_url, at_head=False, own_schema=False)
    sys.exit(run_demo(store, where, echo=click.echo))


@click.command("grant-read")
@database_option
@click.argument("role")
@config_errors_exit
def grant_read(database_url: str | None, role: str) -> None:
    """Let an existing database ROLE read the tables and views (PostgreSQL only).

    For BI dashboards: USAGE on the schema and SELECT on the tables and views, including those
    later migrations add; no write, no sequence. Create the role first (CREATE ROLE bi LOGIN)
    and run this as the role that runs `migrate`.
    """
    store, where = open_store(database_url, at_head=False)
    roles.grant_read(store.engine, role)  # checks PostgreSQL and the schema revision first
    click.echo(
        f"{where}: role {role} can read the tables and views, and those later migrations add; "
        "it cannot write, nor create objects in the schema"
    )
    warn_if_anyone_may_create(store.engine, role)


@click.command("grant-job")
@database_option
@click.argument("role")
@config_errors_exit
def grant_job(database_url: str | None, role: str) -> None:
    """Let an existing database ROLE run the sweeps and imports, and nothing more (PostgreSQL).

    For the hourly job's own login: what a reader may, plus the writes a sweep makes,
    temporary tables and the sequences; no DDL, no DELETE. Create the role first (CREATE ROLE
    sync_job LOGIN) and run this as the role that runs `migrate`, again after a migration that
    says so; `check` as the job's role lists anything missing.
    """
    store, where = open_store(database_url, at_head=False)
    roles.grant_job(store.engine, role)
    click.echo(f"{where}: role {role} can run sweeps and imports; it cannot change the schema nor delete")
    warn_if_anyone_may_create(store.engine, role)


def warn_if_anyone_may_create(engine: Engine, role: str) -> None:
    for schema in roles.schemas_anyone_may_create_in(engine):
        click.echo(
            f"warning: PUBLIC may still create objects in schema {schema}, so {role} can too; "
            f'as its owner run REVOKE CREATE ON SCHEMA "{schema}" FROM PUBLIC, or see `blocklist-sync check`',
            err=True,
        )
