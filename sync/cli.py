"""``blocklist-sync``: parses arguments and settings, calls ``job`` and friends, sets exit codes.

No sync logic lives here. Exit codes (README, "Exit codes"): 0 success, 1 failed, 2 usage or
configuration error (including a schema behind head), 3 held by the safety guard, 75 another
run holds the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from sync import __version__, database, job
from sync.settings import (
    CHANNELS,
    Account,
    ConfigError,
    GuardLimits,
    load_accounts,
    parse_duration,
    with_overrides,
)
from sync.store import ChannelStatus, Store
from sync.telemetry import Metrics, ProgressBars, configure_logging, redact, register_secret

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_HELD, EXIT_LOCKED = 0, 1, 2, 3, 75


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"blocklist-sync: error: {message}", err=True)
    sys.exit(code)


def config_errors_exit(command: Callable[..., Any]) -> Callable[..., Any]:
    """A :class:`ConfigError` becomes its one line on stderr and exit code 2; an unreachable
    database one line and exit code 1, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc))
        except OperationalError as exc:
            cause = str(exc.orig or exc).strip().splitlines()[0]
            fail(redact(f"cannot use the database ({cause}); check DATABASE_URL and that the "
                        "server is up"), EXIT_FAILED)

    return wrapper


def open_store(database_url: str | None) -> tuple[Store, str]:
    url = database.resolve_database_url(database_url)
    register_secret(make_url(url).password)
    engine = database.make_engine(url)
    if engine.dialect.name == "sqlite":
        click.echo(f"note: using the embedded SQLite file {make_url(url).database}; "
                   "production should set DATABASE_URL to PostgreSQL", err=True)
    return Store(engine), database.describe_url(url)


database_option = click.option(
    "--database-url", envvar="DATABASE_URL", show_envvar=True,
    help="SQLAlchemy URL; postgresql:// uses psycopg 3. Default: sqlite:///blocklist-sync.db.")
log_format_option = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text",
    envvar="BLOCKLIST_SYNC_LOG_FORMAT", show_envvar=True, help="Log line format on stderr.")


def account_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Flags that override the KALEYRA_* environment for a single account."""
    for option in reversed([
        click.option("--config", "config_file", envvar="BLOCKLIST_SYNC_CONFIG", show_envvar=True,
                     type=click.Path(dir_okay=False),
                     help="TOML file listing several accounts (see README)."),
        click.option("--sid", help="Account SID (overrides KALEYRA_SID)."),
        click.option("--api-key-file", help="File holding the API key (overrides "
                     "KALEYRA_API_KEY_FILE). There is no flag for the key itself: command "
                     "lines are visible to every user of the machine."),
        click.option("--base-url", help="API base URL with version (overrides KALEYRA_BASE_URL)."),
        click.option("--region", type=click.Choice(["in", "sg", "eu", "na"]),
                     help="Region shortcut for the base URL (overrides KALEYRA_REGION)."),
    ]):
        command = option(command)
    return command


def resolve_accounts(config_file: str | None, sid: str | None, api_key_file: str | None,
                     base_url: str | None, region: str | None) -> list[Account]:
    if (config_file or os.environ.get("BLOCKLIST_SYNC_CONFIG")) and any(
            (sid, api_key_file, base_url, region)):
        raise ConfigError("--sid, --api-key-file, --base-url and --region configure a single "
                          "account; with a config file, set them in the file instead")
    env = with_overrides(os.environ, sid=sid, api_key_file=api_key_file, base_url=base_url,
                         region=region)
    accounts = load_accounts(config_file, env)
    for account in accounts:
        register_secret(account.api_key)
    return accounts


def tuning_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--concurrency", type=click.IntRange(1, 32), default=4, show_default=True,
                     envvar="BLOCKLIST_SYNC_CONCURRENCY", show_envvar=True,
                     help="Listing requests in flight at once."),
        click.option("--max-rps", type=click.FloatRange(min=0.1), envvar="BLOCKLIST_SYNC_MAX_RPS",
                     show_envvar=True, help="Cap on requests per second (default: no cap)."),
        click.option("--max-pages", type=click.IntRange(1), default=200_000, show_default=True,
                     envvar="BLOCKLIST_SYNC_MAX_PAGES", show_envvar=True,
                     help="A sweep past this many pages is an error, not data."),
        click.option("--max-removal-fraction", type=click.FloatRange(0, 1), default=0.2,
                     show_default=True, envvar="BLOCKLIST_SYNC_MAX_REMOVAL_FRACTION",
                     show_envvar=True, help="Safety guard: hold a sweep removing more than "
                     "this share of a channel's entries ..."),
        click.option("--guard-min-entries", type=click.IntRange(0), default=100,
                     show_default=True, envvar="BLOCKLIST_SYNC_GUARD_MIN_ENTRIES",
                     show_envvar=True, help="... when the channel holds more than this many."),
    ]):
        command = option(command)
    return command


def make_sweep_settings(trigger: str, dry_run: bool, force: bool, concurrency: int,
                        max_rps: float | None, max_pages: int, max_removal_fraction: float,
                        guard_min_entries: int) -> tuple[job.SweepOptions, Callable[[Account], Any]]:
    options = job.SweepOptions(
        trigger=trigger, dry_run=dry_run, force=force,
        guard=GuardLimits(max_removal_fraction=max_removal_fraction, min_entries=guard_min_entries))
    make_client = functools.partial(job.client_for, concurrency=concurrency, max_rps=max_rps,
                                    max_pages=max_pages)
    return options, make_client


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="blocklist-sync")
def cli() -> None:
    """Sync Kaleyra blocklists (sms, whatsapp, voice) into PostgreSQL, with history."""


@cli.command()
@database_option
@config_errors_exit
def migrate(database_url: str | None) -> None:
    """Create or upgrade the schema to the newest revision."""
    store, where = open_store(database_url)
    before, after = database.upgrade(store.engine)
    if before == after:
        click.echo(f"{where}: schema already at {after}")
    else:
        click.echo(f"{where}: schema upgraded from {before or 'empty'} to {after}")


@cli.command()
@account_options
@database_option
@click.option("--channel", "channels", multiple=True, type=click.Choice(CHANNELS),
              help="Sweep only this channel (repeatable). Default: every configured channel.")
@click.option("--dry-run", is_flag=True,
              help="Print the additions and removals it would make; apply nothing.")
@click.option("--force", is_flag=True, help="Apply even what the safety guard would hold.")
@click.option("--trigger", type=click.Choice(["manual", "scheduled", "backfill"]),
              default="manual", show_default=True, help="Recorded on the run row.")
@tuning_options
@log_format_option
@click.option("--metrics-file", envvar="BLOCKLIST_SYNC_METRICS_FILE", show_envvar=True,
              help="Write Prometheus metrics here (node_exporter textfile format).")
@config_errors_exit
def run(config_file: str | None, sid: str | None, api_key_file: str | None,
        base_url: str | None, region: str | None, database_url: str | None,
        channels: tuple[str, ...], dry_run: bool, force: bool, trigger: str, concurrency: int,
        max_rps: float | None, max_pages: int, max_removal_fraction: float,
        guard_min_entries: int, log_format: str, metrics_file: str | None) -> None:
    """Sweep every configured account and channel once and record what changed."""
    configure_logging(log_format)
    accounts = resolve_accounts(config_file, sid, api_key_file, base_url, region)
    store, _ = open_store(database_url)
    database.require_current_schema(store.engine)
    options, make_client = make_sweep_settings(trigger, dry_run, force, concurrency, max_rps,
                                               max_pages, max_removal_fraction, guard_min_entries)
    stop = threading.Event()
    job.stop_on_signals(stop)
    bars = ProgressBars()

    def print_change(account_sid: str, channel: str, change: str, mobile: str) -> None:
        click.echo(f"would-be-{change}\t{account_sid}\t{channel}\t{mobile}")

    try:
        results = job.sweep_accounts(accounts, store, options, make_client,
                                     channels=channels or None, stop=stop, on_page=bars.update,
                                     on_change=print_change if dry_run else None)
    finally:
        bars.close()
    for result in results:
        click.echo(summary_line(result))
    if metrics_file:
        metrics = Metrics()
        metrics.update(store.channel_statuses())
        metrics.write_textfile(metrics_file)
    code = job.worst_exit_code(results)
    if stop.is_set() and code == EXIT_OK:
        code = EXIT_FAILED
    sys.exit(code)


def summary_line(result: job.SweepResult) -> str:
    parts = [f"{result.account_sid} {result.channel}: {result.outcome.label}"]
    if result.diff is not None:
        parts.append(f"{result.diff.seen} blocklisted, +{result.diff.added} -{result.diff.removed}")
    if result.pages:
        parts.append(f"{result.pages} pages")
    parts.append(f"{result.seconds:.1f}s")
    if result.run_id is not None:
        parts.append(f"run {result.run_id}")
    line = ", ".join(parts)
    return f"{line}\n  {result.message}" if result.message else line


@cli.command()
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts and health checks.")
@click.option("--max-age", help="Exit 1 when any channel's last success is older (e.g. 2h).")
@config_errors_exit
def status(database_url: str | None, as_json: bool, max_age: str | None) -> None:
    """The last sweep of each channel and the current entry counts.

    Exits 1 when the last sweep of any channel failed or was held by the safety guard, or
    (with --max-age) when any channel's last success is older than that.
    """
    limit = parse_duration(max_age, "--max-age") if max_age else None
    store, where = open_store(database_url)
    database.require_current_schema(store.engine)
    statuses = store.channel_statuses()
    now = dt.datetime.now(dt.UTC)
    problems = {(s.account_sid, s.channel): s.problem(now, limit) for s in statuses}
    if as_json:
        click.echo(json.dumps({"database": where, "channels": [
            status_record(s, now, problems[s.account_sid, s.channel]) for s in statuses]},
            indent=2))
    else:
        click.echo(status_table(statuses, now, where))
    sys.exit(EXIT_FAILED if any(problems.values()) else EXIT_OK)


def status_record(s: ChannelStatus, now: dt.datetime, problem: str | None) -> dict[str, Any]:
    def iso(t: dt.datetime | None) -> str | None:
        return t.isoformat() if t else None

    return {
        "account_sid": s.account_sid, "channel": s.channel, "entries": s.entries,
        "last_run": {"id": s.last_run_id, "status": s.last_status,
                     "started_at": iso(s.last_started_at), "finished_at": iso(s.last_finished_at),
                     "pages": s.last_pages, "added": s.last_added, "removed": s.last_removed,
                     "error": s.last_error},
        "last_success_at": iso(s.last_success_at),
        "last_success_age_seconds": (now - s.last_success_at).total_seconds()
        if s.last_success_at else None,
        "ok": problem is None,
        "problem": problem,
    }


def _age(now: dt.datetime, then: dt.datetime | None) -> str:
    if then is None:
        return "never"
    seconds = int((now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def status_table(statuses: list[ChannelStatus], now: dt.datetime, where: str) -> str:
    if not statuses:
        return f"{where}: no sweeps yet; run `blocklist-sync run`"
    header = ("ACCOUNT", "CHANNEL", "LAST RUN", "STATUS", "ADDED", "REMOVED", "ENTRIES",
              "LAST SUCCESS")
    rows = [header] + [
        (s.account_sid, s.channel, _age(now, s.last_finished_at or s.last_started_at),
         s.last_status or "-", str(s.last_added or 0), str(s.last_removed or 0), str(s.entries),
         _age(now, s.last_success_at))
        for s in statuses
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    for s in statuses:
        if s.last_status in ("failed", "held") and s.last_error:
            lines.append(f"{s.account_sid} {s.channel} {s.last_status}: {s.last_error}")
    return "\n".join([f"{where}", *lines])


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8099, show_default=True)
@click.option("--numbers", type=click.IntRange(0), default=5000, show_default=True,
              help="Blocklisted numbers generated per channel.")
@click.option("--seed", type=int, default=42, show_default=True)
def simulate(host: str, port: int, numbers: int, seed: int) -> None:
    """Serve a Kaleyra Get/Change Blocklist simulator until interrupted."""
    from sync.simulator import Simulator

    sim = Simulator(numbers=numbers, seed=seed)
    click.echo(f"Kaleyra simulator: {numbers} numbers per channel, seed {seed}\n"
               f"  KALEYRA_BASE_URL=http://{host}:{port}/v1\n"
               f"  KALEYRA_SID={sim.sid}\n"
               f"  KALEYRA_API_KEY={sim.api_key}\n"
               "Ctrl-C stops it.")
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever(host=host, port=port)


@cli.command()
@database_option
@config_errors_exit
def demo(database_url: str | None) -> None:
    """Simulator, migrate, sweep, change the list, sweep again: the whole job on defaults."""
    from sync.demo import run_demo

    configure_logging("text", level=logging.WARNING)  # the demo tells its own story
    store, where = open_store(database_url)
    sys.exit(run_demo(store, where, echo=click.echo))


@cli.command("grant-read")
@database_option
@click.argument("role")
@config_errors_exit
def grant_read(database_url: str | None, role: str) -> None:
    """Let an existing database ROLE read the tables and views (PostgreSQL only).

    For BI dashboards: USAGE on the schema and SELECT on the tables and views, including those
    later migrations add; no write, no sequence. Create the role first (CREATE ROLE bi LOGIN)
    and run this as the role that runs `migrate`.
    """
    store, where = open_store(database_url)
    database.grant_read(store.engine, role)  # checks PostgreSQL and the schema revision first
    click.echo(f"{where}: role {role} can read the tables and views, and those later migrations "
               "add; it cannot write")


@cli.command()
@account_options
@database_option
@click.option("--cron", "cron_expr", help='Crontab expression, UTC (default "15 * * * *").')
@click.option("--every", help="Fixed interval instead of --cron, e.g. 30m, 2h.")
@click.option("--jitter", type=click.IntRange(0), default=0, show_default=True,
              help="Delay each tick by up to this many seconds.")
@click.option("--run-now", is_flag=True, help="Also sweep once right away.")
@tuning_options
@log_format_option
@click.option("--metrics-port", type=click.IntRange(1, 65535), envvar="BLOCKLIST_SYNC_METRICS_PORT",
              show_envvar=True, help="Serve Prometheus metrics over HTTP on this port.")
@click.option("--metrics-file", envvar="BLOCKLIST_SYNC_METRICS_FILE", show_envvar=True,
              help="Write Prometheus metrics here after every tick.")
@config_errors_exit
def schedule(config_file: str | None, sid: str | None, api_key_file: str | None,
             base_url: str | None, region: str | None, database_url: str | None,
             cron_expr: str | None, every: str | None, jitter: int, run_now: bool,
             concurrency: int, max_rps: float | None, max_pages: int,
             max_removal_fraction: float, guard_min_entries: int, log_format: str,
             metrics_port: int | None, metrics_file: str | None) -> None:
    """Run in the foreground and sweep on a schedule until SIGTERM (then exit 0)."""
    from sync import scheduler

    if cron_expr and every:
        raise ConfigError("give --cron or --every, not both")
    trigger = (scheduler.every_trigger(every, jitter or None) if every
               else scheduler.crontab_trigger(cron_expr or "15 * * * *", jitter or None))
    configure_logging(log_format)
    accounts = resolve_accounts(config_file, sid, api_key_file, base_url, region)
    store, _ = open_store(database_url)
    database.require_current_schema(store.engine)
    options, make_client = make_sweep_settings("scheduled", False, False, concurrency, max_rps,
                                               max_pages, max_removal_fraction, guard_min_entries)
    metrics = Metrics()

    def publish() -> None:
        metrics.update(store.channel_statuses())
        if metrics_file:
            metrics.write_textfile(metrics_file)

    if metrics_port:
        publish()
        metrics.serve(metrics_port)
    scheduler.run_scheduler(accounts, store, options, make_client, trigger, run_now=run_now,
                            after_tick=publish if (metrics_port or metrics_file) else None)


@cli.command()
@database_option
@click.argument("numbers", nargs=-1, required=True)
@click.option("--region", "default_region", metavar="CC",
              help="ISO 3166 region for national numbers (e.g. IN for 98765 43210).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@config_errors_exit
def lookup(database_url: str | None, numbers: tuple[str, ...], default_region: str | None,
           as_json: bool) -> None:
    """Is each NUMBER blocklisted, on which account and channel, and since when.

    Numbers as people write them: +91 98765 43210, 0091..., 919876543210, or a national
    number with --region. Exits 0 when every number was found on some channel, 1 when one was
    never seen, 2 when one cannot be a phone number.
    """
    from sync import lookup as lookups

    parsed = [(raw, lookups.normalise(raw, default_region)) for raw in numbers]
    store, _ = open_store(database_url)
    database.require_current_schema(store.engine)
    reports = lookups.look_up(store.engine, parsed)
    if as_json:
        click.echo(json.dumps({"numbers": [lookups.as_record(r) for r in reports]}, indent=2))
    else:
        for report in reports:
            click.echo("\n".join(lookups.describe(report)))
    sys.exit(EXIT_OK if all(r.found for r in reports) else EXIT_FAILED)


@cli.command()
@database_option
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default="report.html",
              show_default=True, help="HTML file to write.")
@click.option("--days", type=click.IntRange(1, 3660), default=90, show_default=True,
              help="UTC days covered, ending today.")
@config_errors_exit
def report(database_url: str | None, out: str, days: int) -> None:
    """Write one self-contained HTML file: size and daily changes per channel, sync health."""
    from sync import report as reports

    reports.require_charting()
    store, where = open_store(database_url)
    database.require_current_schema(store.engine)
    document = reports.render(reports.gather(store.engine, days, where))
    try:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(document)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}; choose another --out") from None
    click.echo(f"{out}: report of {days} days written")


def main() -> None:
    cli(prog_name="blocklist-sync")
