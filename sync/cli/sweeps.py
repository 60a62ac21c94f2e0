"""The job's commands: ``migrate``, ``run``, ``schedule``, and ``status`` and ``check`` that
say how it is doing. Each parses its options into settings (:mod:`sync.cli.options`), calls
one function and maps what it returns to words and an exit code."""

from __future__ import annotations

import functools
import logging
import os
import sys

import click

from sync import database, health, output, preflight
from sync import run as runs
from sync.cli.common import open_engine, open_store, prepare
from sync.cli.errors import UsageError, config_errors_exit, setting_name
from sync.cli.options import (
    Summary,
    WholeNumber,
    account_options,
    database_option,
    guard_options,
    logging_options,
    pushgateway_option,
    review_options,
    scope_options,
    summary_option,
    tuning_options,
)
from sync.guard import GuardLimits
from sync.kaleyra import RetryPolicy
from sync.review import Review
from sync.settings import AccountSource, Tuning, parse_duration
from sync.telemetry import LogSettings
from sync.vocabulary import ExitCode

__all__ = ["check", "migrate", "run", "schedule", "status"]

DEFAULT_CRON = "15 * * * *"  # schedule's ticks when neither --cron nor --every is given


@click.command()
@database_option
@config_errors_exit
def migrate(database_url: str | None) -> None:
    """Create or upgrade the schema to the newest revision."""
    store, where = open_store(database_url, at_head=False)
    before, after = database.upgrade(store.engine)
    if before == after:
        click.echo(f"{where}: schema already at {after}")
    else:
        click.echo(f"{where}: schema upgraded from {before or 'empty'} to {after}")


@click.command()
@config_errors_exit
@account_options
@database_option
@tuning_options
@guard_options
@logging_options
@click.option(
    "--metrics-file",
    envvar="BLOCKLIST_SYNC_METRICS_FILE",
    show_envvar=True,
    help="Write Prometheus metrics here (node_exporter textfile format).",
)
@pushgateway_option
@summary_option
@scope_options
@review_options
def run(
    source: AccountSource,
    database_url: str | None,
    tuning: Tuning,
    guard: GuardLimits,
    log: LogSettings,
    metrics_file: str | None,
    pushgateway: str | None,
    summary: Summary,
    scope: runs.Scope,
    review: Review,
) -> None:
    """Sweep every configured account and channel once and record what changed."""
    ready = prepare(source, database_url, log, metrics_file, pushgateway)
    request = runs.RunRequest(scope, review, tuning, guard)
    try:
        report = runs.run_once(ready, request, click.echo, results_to_stderr=summary.path == "-")
    except KeyboardInterrupt:  # a second Ctrl-C: the run row is already marked cancelled
        click.echo("interrupted; nothing was applied for the channel in progress", err=True)
        sys.exit(ExitCode.SIGINT)
    if summary.path:
        document = runs.summary_document(ready.store, report, dry_run=summary.dry_run, forced=summary.forced)
        summary.write(document)
    sys.exit(report.exit_code)


@click.command()
@config_errors_exit
@account_options
@database_option
@click.option("--cron", "cron_expr", help=f'Crontab expression, UTC (default "{DEFAULT_CRON}").')
@click.option("--every", help="Fixed interval instead of --cron, e.g. 30m, 2h.")
@click.option(
    "--jitter",
    type=WholeNumber(0, 86400),
    default=0,
    show_default=True,
    help="Delay each tick by up to this many seconds (at most a day).",
)
@click.option("--run-now", is_flag=True, help="Also sweep once right away.")
@tuning_options
@guard_options
@logging_options
@click.option(
    "--metrics-port",
    type=WholeNumber(1, 65535),
    envvar="BLOCKLIST_SYNC_METRICS_PORT",
    show_envvar=True,
    help="Serve Prometheus metrics over HTTP on this port.",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    envvar="BLOCKLIST_SYNC_METRICS_ADDRESS",
    show_envvar=True,
    help="Address the metrics port listens on; 0.0.0.0 for every interface.",
)
@click.option(
    "--metrics-file",
    envvar="BLOCKLIST_SYNC_METRICS_FILE",
    show_envvar=True,
    help="Write Prometheus metrics here after every tick.",
)
@pushgateway_option
def schedule(
    source: AccountSource,
    database_url: str | None,
    cron_expr: str | None,
    every: str | None,
    jitter: int,
    run_now: bool,
    tuning: Tuning,
    guard: GuardLimits,
    log: LogSettings,
    metrics_port: int | None,
    metrics_address: str,
    metrics_file: str | None,
    pushgateway: str | None,
) -> None:
    """Run in the foreground and sweep on a schedule until SIGTERM (then exit 0)."""
    from sync import scheduler

    if cron_expr and every:
        raise UsageError("give --cron or --every, not both")
    trigger = (
        scheduler.every_trigger(every, jitter or None, setting=setting_name("every"))
        if every
        else scheduler.crontab_trigger(
            cron_expr or DEFAULT_CRON, jitter or None, setting=setting_name("cron_expr")
        )
    )
    ready = prepare(source, database_url, log, metrics_file, pushgateway)
    scheduler.serve(
        ready,
        trigger,
        tuning,
        guard,
        run_now=run_now,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
    )


@click.command()
@config_errors_exit
@database_option
@account_options
@click.option(
    "--all", "show_all", is_flag=True, help="Judge every account and channel ever swept, configured or not."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts and health checks.")
@click.option("--max-age", help="Exit 1 when any channel's last success is older (e.g. 2h).")
def status(
    database_url: str | None, source: AccountSource, show_all: bool, as_json: bool, max_age: str | None
) -> None:
    """The last sweep of each configured channel and the current entry counts.

    Exits 1 when the last sweep of any configured channel failed or was held by the safety
    guard, or (with --max-age) when any configured channel's last success is older than that.
    Channels swept in the past but not configured now are listed and never change the exit
    code (--all judges them too). Reads the account SIDs and channels from the same settings
    as `run` (KALEYRA_SID, KALEYRA_CHANNELS or --config), never the API key.
    """
    limit = parse_duration(max_age, setting_name("max_age")) if max_age else None
    accounts = None
    if source.is_configured(os.environ) and not show_all:
        accounts = source.selected(source.load(os.environ, need_keys=False))
    store, where = open_store(database_url, only_reads=True)
    if accounts is None and not show_all:
        click.echo(
            "note: no account configured (KALEYRA_SID or --config): judging every "
            "account and channel in the database",
            err=True,
        )
    scoped = health.scope(store.channel_statuses(), accounts, source.only)
    now = store.now()  # the clock every stored time was read from, not this host's
    named = setting_name("max_age")
    problems = {
        (s.account_sid, s.channel): health.problem(s, now, limit, max_age_setting=named)
        for s in scoped.judged
    }
    click.echo((output.status_json if as_json else output.status_table)(scoped, now, where, problems))
    sys.exit(ExitCode.FAILED if any(problems.values()) else ExitCode.OK)


@click.command()
@config_errors_exit
@account_options
@database_option
@logging_options
def check(source: AccountSource, database_url: str | None, log: LogSettings) -> None:
    """Check the configuration, the database and Kaleyra without sweeping or writing.

    One line per check; exit 0 when all pass, 1 when any fails, 2 for a configuration error.
    Makes one limit=1 request per account and channel, without retries.
    """
    # The check lines say it all; -v (or a --log-level) shows the requests' log lines too.
    log.configure(default=logging.CRITICAL)
    accounts = source.selected(source.load(os.environ))
    pairs = sum(len(a.channels) for a in accounts)
    checks = [
        preflight.Check("configuration", True, f"{len(accounts)} account(s), {pairs} channel(s) to sweep")
    ]
    checks += preflight.check_database(*open_engine(database_url))
    retries = functools.partial(runs.client_for, retry=RetryPolicy(attempts=1))
    checks += preflight.check_accounts(accounts, retries)
    for item in checks:
        click.echo(item.line())
    sys.exit(ExitCode.OK if all(item.ok for item in checks) else ExitCode.FAILED)
