"""``blocklist-sync``: parses arguments and settings, calls ``sweep`` and friends, sets exit codes.

No sync logic lives here. Exit codes (docs/operators.md#exit-codes): 0 success, 1 failed, 2 usage or
configuration error (including a schema behind head), 3 held by the safety guard, 75 another
run holds the lock, 130 / 143 stopped by SIGINT / SIGTERM (128 + the signal's number) when the
stop cancelled a sweep or left a channel unstarted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import click
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from sync import __version__, database, health, output, preflight, redaction, roles
from sync.files import write_atomically
from sync.guard import GuardLimits
from sync.kaleyra import KaleyraClient, RetryPolicy
from sync.plan import PLAN_MAX_AGE, Approval, read_plan, write_plan
from sync.review import CountsCoverOnePair, Review
from sync.run import SHARD_SKIP_IF_SWEPT_WITHIN, client_for, exit_code, pairs_to_sweep, sweep_accounts
from sync.settings import (
    CONFIG_VARIABLE,
    SCHEMA_SETTING,
    Account,
    AccountSource,
    ConfigError,
    Pushgateway,
    Tuning,
    as_typed,
    check_output_file,
    duration_text,
    parse_duration,
    parse_instant,
    parse_pushgateway,
    parse_schema,
    parse_shard,
    quoted,
    read_env_file,
    register_configured_secrets,
)
from sync.stopping import StopRequest, stop_on_signals
from sync.store import Store
from sync.sweep import SweepOptions, SweepResult
from sync.telemetry import LOG_LEVELS, LogSettings, Metrics, Progress, Publisher, configure_logging
from sync.vocabulary import REGIONS, Channel, ExitCode, Trigger

DEMO_DATABASE = "sqlite:///blocklist-sync-demo.db"
DEFAULT_CRON = "15 * * * *"  # schedule's ticks when neither --cron nor --every is given


def fail(message: str, code: int = ExitCode.USAGE) -> NoReturn:
    click.echo(f"blocklist-sync: error: {message}", err=True)
    sys.exit(code)


class OneLineUsageError(click.ClickException):
    """A usage error shown as one line, as a configuration error is: click's own form adds
    the usage and a hint over three more lines."""

    exit_code = ExitCode.USAGE

    def __init__(self, error: click.UsageError) -> None:
        command = error.ctx.command_path if error.ctx else "blocklist-sync"
        text = " ".join(error.format_message().split()).rstrip(".")
        hint = f"see `{command} --help`"
        super().__init__(f"{text} {hint.capitalize()}" if text.endswith("?") else f"{text}; {hint}")

    def show(self, file: Any = None) -> None:
        click.echo(f"blocklist-sync: error: {self.format_message()}", err=True)


class OneLineErrorsGroup(click.Group):
    """The command group whose usage errors (an unknown option, a value of the wrong type,
    from a flag or from its environment variable) are one line and exit code 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:  # no command at all: the help is the answer
        raise
    except click.UsageError as exc:
        if isinstance(exc, click.BadParameter) and exc.param is not None and exc.ctx is not None:
            # Named as the operator set it: by its variable alone when it came from the
            # environment, by the flag alone otherwise (click names both, the flag first).
            exc.param_hint = setting_name(exc.param.name or "", exc.ctx)
        raise OneLineUsageError(exc) from None


def setting_name(name: str, ctx: click.Context | None = None) -> str:
    """How a message names the setting of the parameter ``name``: by its environment variable
    when the value came from there (the operator set that, not the flag), otherwise by its
    flag. Called inside a command (or given the command's ``ctx``)."""
    ctx = ctx or click.get_current_context()
    param = next((p for p in ctx.command.params if p.name == name), None)
    if param is None:
        return name
    flag = max(param.opts, key=len)
    envvar = param.envvar if isinstance(param, click.Option) else None
    if isinstance(envvar, str) and ctx.get_parameter_source(name) is click.core.ParameterSource.ENVIRONMENT:
        return envvar
    return flag


_WHOLE_NUMBER = re.compile(r"\s*[0-9]+\s*", re.ASCII)
_DECIMAL = re.compile(r"\s*(?:[0-9]{1,9}(?:\.[0-9]*)?|\.[0-9]+)\s*", re.ASCII)


class WholeNumber(click.IntRange):
    """``click.IntRange`` of digits 0-9 only: ``int`` also reads "٣" as 3 and "1_000" as
    1000, and refuses 5,000 digits with advice about Python, not about the setting."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            if not _WHOLE_NUMBER.fullmatch(value):
                self.fail(f"{quoted(value)} is not a whole number in digits 0-9", param, ctx)
            if len(value.strip()) > 18:
                self.fail(f"{quoted(value)} is far too large", param, ctx)
        return super().convert(value, param, ctx)


class Decimal(click.FloatRange):
    """``click.FloatRange`` of plain decimals (``0.5``, ``10``) only: ``float`` also reads
    "nan", which passes every range check (a guard fraction of nan would never hold a sweep),
    "inf" and "1e999"."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not _DECIMAL.fullmatch(value):
            self.fail(f"{quoted(value)} is not a number like 0.5 or 10 (digits 0-9 and a point)", param, ctx)
        return super().convert(value, param, ctx)


class UsageError(Exception):
    """A command line that cannot mean anything: flags that exclude each other, an argument
    that is not what it names. The CLI's own: the modules below it raise what went wrong in
    their terms (a :class:`ConfigError` for a setting that is missing or invalid, whatever set
    it), and only this layer knows the words a command line is written in."""


def config_errors_exit(command: Callable[..., None]) -> Callable[..., None]:
    """A :class:`UsageError` or a :class:`ConfigError` becomes its one line on stderr and exit
    code 2; an unreachable database one line and exit code 1, instead of a traceback. Goes
    right under ``@cli.command()``, so it also covers the option decorators that build
    settings."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (UsageError, ConfigError, DBAPIError) as exc:
            fail(*_stopped_by(exc, kwargs, migrating=command.__name__ == "migrate"))

    return wrapper


def _stopped_by(
    exc: UsageError | ConfigError | DBAPIError, options: dict[str, Any], *, migrating: bool = False
) -> tuple[str, int]:
    """The one line and the exit code of a command stopped by ``exc``: a setting, an
    unreachable database, or a right the database refused (naming the right and the role).
    Any other database error is no stop of this kind, and is raised again."""
    if isinstance(exc, OperationalError):
        cause = str(exc.orig or exc).strip().splitlines()[0]
        return (
            f"cannot use the database ({cause}); check DATABASE_URL and that the server is up",
            ExitCode.FAILED,
        )
    if isinstance(exc, DBAPIError):
        url = options.get("database_url") or os.environ.get("DATABASE_URL")
        words = roles.permission_words(exc, url, migrating=migrating)
        if words is None:
            raise exc
        return words, ExitCode.USAGE
    return str(exc), ExitCode.USAGE


def summary_of_a_stop(command: Callable[..., None]) -> Callable[..., None]:
    """``run --summary-json``: its path checked first, and a run stopped after that (a bad
    setting, a stale plan, no database) still writes a summary, of no results, its exit code
    and the line saying why. So the file present after a run is that run's, and an earlier
    one is replaced whole, never deleted before the new one is complete. Goes right above
    ``def run``, under ``config_errors_exit``, which then prints the line and exits."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        path = kwargs["summary_json"]
        if path and path != "-":
            check_output_file(path, "--summary-json")
        try:
            command(*args, **kwargs)
        except (UsageError, ConfigError, DBAPIError) as exc:
            if path:
                line, code = _stopped_by(exc, kwargs)
                document = output.stopped_summary(
                    line, code, dry_run=kwargs["dry_run"], forced=kwargs["force"]
                )
                _write_summary_document(path, document)
            raise

    return wrapper


def open_engine(
    database_url: str | None, *, own_schema: bool = True, only_reads: bool = False
) -> tuple[Engine, str]:
    """The engine for ``database_url`` (or ``DATABASE_URL``) in the schema
    ``BLOCKLIST_SYNC_SCHEMA`` names, unless ``own_schema`` is false (the demo reads neither
    setting), and how to name it to the operator: the URL, passwords masked, and the schema.
    ``only_reads``: a command that only reads refuses an SQLite file that does not exist,
    rather than leave an empty one behind."""
    url = database.resolve_database_url(database_url)  # registers its passwords for redaction
    if only_reads:
        database.require_database_file(url)
    schema = parse_schema(os.environ.get(SCHEMA_SETTING)) if own_schema else None
    engine = database.make_engine(url, schema)
    where = database.describe_url(url)
    return engine, where if schema is None else f"{where} (schema {schema})"


def open_store(
    database_url: str | None, *, own_schema: bool = True, only_reads: bool = False
) -> tuple[Store, str]:
    engine, where = open_engine(database_url, own_schema=own_schema, only_reads=only_reads)
    if engine.dialect.name == "sqlite":
        click.echo(
            f"note: using the embedded SQLite file {engine.url.database}; "
            "production should set DATABASE_URL to PostgreSQL",
            err=True,
        )
    return Store(engine), where


database_option = click.option(
    "--database-url",
    envvar="DATABASE_URL",
    show_envvar=True,
    help=f"SQLAlchemy URL; postgresql:// uses psycopg 3. Default: {database.SQLITE_DEFAULT}. "
    f"{SCHEMA_SETTING} names the PostgreSQL schema to work in (default public).",
)


def _gathered(
    options: list[Callable[[Any], Any]], build: Callable[..., object], into: str, names: tuple[str, ...]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator adding ``options`` to a command and handing it one typed object, built by
    ``build`` from those options' values, as the parameter ``into``."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            values = {name: kwargs.pop(name) for name in names}
            command(*args, **{into: build(**values)}, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


account_options = _gathered(
    [
        click.option(
            "--config",
            "config_file",
            envvar=CONFIG_VARIABLE,
            show_envvar=True,
            type=click.Path(dir_okay=False),
            help="TOML file listing several accounts (docs/operators.md#configuration).",
        ),
        click.option("--sid", help="Account SID (overrides KALEYRA_SID)."),
        click.option(
            "--api-key-file",
            help="File holding the API key (overrides "
            "KALEYRA_API_KEY_FILE). There is no flag for the key itself: command lines are "
            "visible to every user of the machine.",
        ),
        click.option("--base-url", help="API base URL with version (overrides KALEYRA_BASE_URL)."),
        click.option(
            "--region",
            type=click.Choice(list(REGIONS)),
            help="Region shortcut for the base URL (overrides KALEYRA_REGION).",
        ),
        click.option(
            "--account",
            "only",
            multiple=True,
            metavar="SID",
            help="Only this configured account (repeatable). Default: every one.",
        ),
    ],
    lambda only, **flags: AccountSource(
        only=tuple(only), config_setting=setting_name("config_file"), **flags
    ),
    "source",
    ("config_file", "sid", "api_key_file", "base_url", "region", "only"),
)

tuning_options = _gathered(
    [
        click.option(
            "--concurrency",
            type=WholeNumber(1, 32),
            default=Tuning.concurrency,
            show_default=True,
            envvar="BLOCKLIST_SYNC_CONCURRENCY",
            show_envvar=True,
            help="Listing requests in flight at once.",
        ),
        click.option(
            "--max-rps",
            type=Decimal(min=0.1),
            envvar="BLOCKLIST_SYNC_MAX_RPS",
            show_envvar=True,
            help="Cap on requests per second (default: no cap).",
        ),
        click.option(
            "--max-pages",
            type=WholeNumber(1),
            default=Tuning.max_pages,
            show_default=True,
            envvar="BLOCKLIST_SYNC_MAX_PAGES",
            show_envvar=True,
            help="A sweep past this many pages is an error, not data.",
        ),
        click.option(
            "--sweep-timeout",
            default=duration_text(Tuning.sweep_timeout),
            show_default=True,
            envvar="BLOCKLIST_SYNC_SWEEP_TIMEOUT",
            show_envvar=True,
            help="A sweep still running after this long (e.g. 90m) stops and applies nothing.",
        ),
        click.option(
            "--run-timeout",
            envvar="BLOCKLIST_SYNC_RUN_TIMEOUT",
            show_envvar=True,
            help="All of a run's (or a tick's) sweeps within this long (e.g. 45m): the one in "
            "progress stops, those not started fail. Set it below your scheduler's kill.",
        ),
    ],
    lambda sweep_timeout, run_timeout, **values: Tuning(
        sweep_timeout=parse_duration(sweep_timeout, setting_name("sweep_timeout")),
        run_timeout=parse_duration(run_timeout, setting_name("run_timeout")) if run_timeout else None,
        **values,
    ),
    "tuning",
    ("concurrency", "max_rps", "max_pages", "sweep_timeout", "run_timeout"),
)

guard_options = _gathered(
    [
        click.option(
            "--max-removal-fraction",
            type=Decimal(0, 1),
            default=GuardLimits.max_removal_fraction,
            show_default=True,
            envvar="BLOCKLIST_SYNC_MAX_REMOVAL_FRACTION",
            show_envvar=True,
            help="Safety guard: hold a sweep removing more than this share of a channel's entries ...",
        ),
        click.option(
            "--guard-min-entries",
            type=WholeNumber(0),
            default=GuardLimits.min_entries,
            show_default=True,
            envvar="BLOCKLIST_SYNC_GUARD_MIN_ENTRIES",
            show_envvar=True,
            help="... when the channel holds more than this many.",
        ),
    ],
    lambda max_removal_fraction, guard_min_entries: GuardLimits(
        max_removal_fraction=max_removal_fraction, min_entries=guard_min_entries
    ),
    "guard",
    ("max_removal_fraction", "guard_min_entries"),
)


def _log_settings(log_format: str, log_level: str | None, verbose: int, quiet: int) -> LogSettings:
    if log_level and (verbose or quiet):
        raise UsageError("give --log-level or -v/-q, not both")
    return LogSettings(log_format=log_format, log_level=log_level, verbose=verbose, quiet=quiet)


logging_options = _gathered(
    [
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            default="text",
            envvar="BLOCKLIST_SYNC_LOG_FORMAT",
            show_envvar=True,
            help="Log line format on stderr.",
        ),
        click.option(
            "--log-level",
            type=click.Choice(LOG_LEVELS, case_sensitive=False),
            envvar="BLOCKLIST_SYNC_LOG_LEVEL",
            show_envvar=True,
            help="Least severe log lines shown (default info).",
        ),
        click.option("-v", "--verbose", count=True, help="More log lines (debug)."),
        click.option(
            "-q", "--quiet", count=True, help="Fewer log lines: -q warnings and errors, -qq errors only."
        ),
    ],
    _log_settings,
    "log",
    ("log_format", "log_level", "verbose", "quiet"),
)


pushgateway_option = click.option(
    "--pushgateway",
    metavar="URL",
    envvar="BLOCKLIST_SYNC_PUSHGATEWAY",
    show_envvar=True,
    help="Also push the metrics to this Prometheus Pushgateway (http://host:9091; a user and "
    "password before the host if it needs them) at the start and end of every sweep: for "
    "CronJobs, which leave no file and serve no port. A failed push is a warning.",
)


@dataclass(frozen=True)
class Prepared:
    """What ``run`` and ``schedule`` both start from."""

    configured: list[Account]  # every configured account: the metrics judge them all
    accounts: list[Account]  # those to sweep (``--account``)
    store: Store
    pushgateway: Pushgateway | None = None


def prepare(
    source: AccountSource,
    database_url: str | None,
    log: LogSettings,
    metrics_file: str | None,
    pushgateway: str | None = None,
) -> Prepared:
    """Logging, accounts, where the metrics go, database and schema: everything a sweep needs
    before it starts, in that order (the database last: a setting that is wrong stops the run
    before it touches anything)."""
    log.configure()
    configured = source.load(os.environ)  # registers every key for redaction as it reads it
    accounts = source.selected(configured)
    if metrics_file:
        check_output_file(metrics_file, setting_name("metrics_file"))
    push = parse_pushgateway(pushgateway, setting_name("pushgateway")) if pushgateway else None
    store, _ = open_store(database_url)
    database.require_current_schema(store.engine)
    return Prepared(configured, accounts, store, push)


def client_maker(tuning: Tuning) -> Callable[[Account], KaleyraClient]:
    return functools.partial(client_for, tuning=tuning)


@click.group(
    cls=OneLineErrorsGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help=f"Sync Kaleyra blocklists ({', '.join(Channel)}) into PostgreSQL, with history.",
)
@click.version_option(__version__, prog_name="blocklist-sync")
@click.option(
    "--env-file",
    metavar="FILE",
    help="Read settings from FILE first: KEY=value lines, as systemd's EnvironmentFile= reads "
    "them (the job's /etc/blocklist-sync/env), so a command by hand uses the job's settings. "
    "Variables already set win. Before the command: blocklist-sync --env-file FILE status.",
)
def cli(env_file: str | None) -> None:
    """The command group; its help names the channels from :class:`Channel`. ``--env-file``
    is read here, before any command reads its options' variables."""
    if env_file:
        try:
            settings = read_env_file(env_file)
        except ConfigError as exc:
            fail(str(exc))
        for name, value in settings.items():
            os.environ.setdefault(name, value)


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
@config_errors_exit
@account_options
@database_option
@click.option(
    "--channel",
    "channels",
    multiple=True,
    type=click.Choice([c.value for c in Channel]),
    help="Sweep only this channel (repeatable). Default: every configured channel.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the additions and removals it would make; apply nothing."
)
@click.option(
    "--force",
    is_flag=True,
    help="Apply even what the safety guard would hold: what --expect-removed/--expect-added "
    "or --plan approve, or (alone) whatever this sweep finds.",
)
@click.option(
    "--plan-out",
    metavar="FILE",
    help="With --dry-run: save the plan (per account and channel: counts and a digest of the "
    "numbers, no secret) for `run --force --plan FILE`.",
)
@click.option(
    "--plan",
    "plan_file",
    metavar="FILE",
    help="With --force: apply only what this plan (from --dry-run --plan-out) shows; a sweep "
    "that differs is held (exit 3).",
)
@click.option(
    "--plan-max-age",
    default=duration_text(PLAN_MAX_AGE),
    show_default=True,
    metavar="DURATION",
    help="An older --plan is refused.",
)
@click.option(
    "--expect-removed",
    type=WholeNumber(0),
    metavar="N",
    help="With --force, for one account and channel: apply only a sweep removing exactly N numbers.",
)
@click.option(
    "--expect-added",
    type=WholeNumber(0),
    metavar="N",
    help="With --force, for one account and channel: apply only a sweep adding exactly N numbers.",
)
@click.option(
    "--summary-json",
    metavar="FILE",
    help="Write the run's results as JSON (one object per account and channel, and the exit "
    "code) to FILE, atomically; - for stdout (the result lines then go to stderr).",
)
@click.option(
    "--trigger",
    type=click.Choice([t.value for t in Trigger]),
    default=Trigger.MANUAL.value,
    show_default=True,
    help="Recorded on the run row.",
)
@click.option(
    "--shard",
    envvar="BLOCKLIST_SYNC_SHARD",
    show_envvar=True,
    metavar="K/N",
    help="Sweep only shard K (0 to N-1) of N of the (account, channel) pairs; N alone "
    "takes K from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).",
)
@click.option(
    "--skip-if-swept-within",
    envvar="BLOCKLIST_SYNC_SKIP_IF_SWEPT_WITHIN",
    show_envvar=True,
    metavar="DURATION",
    help="Skip a channel whose last sweep, by any process, started less than this "
    f"long ago (e.g. 30m); 0 turns it off. Default: never; with --shard, "
    f"{duration_text(SHARD_SKIP_IF_SWEPT_WITHIN)}.",
)
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
@summary_of_a_stop
def run(
    source: AccountSource,
    database_url: str | None,
    channels: tuple[str, ...],
    dry_run: bool,
    force: bool,
    plan_out: str | None,
    plan_file: str | None,
    plan_max_age: str,
    expect_removed: int | None,
    expect_added: int | None,
    summary_json: str | None,
    trigger: str,
    shard: str | None,
    skip_if_swept_within: str | None,
    tuning: Tuning,
    guard: GuardLimits,
    log: LogSettings,
    metrics_file: str | None,
    pushgateway: str | None,
) -> None:
    """Sweep every configured account and channel once and record what changed."""
    # Every setting is checked before the database is touched: a bad one applies nothing.
    share = parse_shard(shard, os.environ, setting_name("shard")) if shard else None
    skip_within = (
        parse_duration(skip_if_swept_within, setting_name("skip_if_swept_within"), zero_is_off=True)
        if skip_if_swept_within
        else None
    )
    review = _review(dry_run, force, plan_out, plan_file, plan_max_age, expect_removed, expect_added)
    ready = prepare(source, database_url, log, metrics_file, pushgateway)
    started_at = ready.store.now()
    pairs = pairs_to_sweep(ready.accounts, channels or None, share)
    try:
        review = review.for_run([(a.sid, channel) for a, chans in pairs for channel in chans], started_at)
    except CountsCoverOnePair as exc:
        names = ", ".join(f"{sid} {channel}" for sid, channel in exc.swept[:4]) or "none"
        raise UsageError(
            f"{exc.approval.source} approves the sweep of one account and channel, and this run sweeps "
            f"{len(exc.swept)} ({names}); name one with --account SID --channel C"
        ) from None
    options = SweepOptions(
        trigger=Trigger(trigger),
        review=review,
        guard=guard,
        timeout=tuning.sweep_timeout,
        skip_if_swept_within=skip_within,
    )
    if review.approves_blind:
        click.echo(
            "warning: --force alone approves blind: it applies whatever this sweep finds, which "
            "may differ from what --dry-run showed; approve what you reviewed with "
            "--dry-run --plan-out FILE, then --force --plan FILE (or --expect-removed N)",
            err=True,
        )
    to_stderr = summary_json == "-"  # stdout carries the JSON alone
    stop = StopRequest()
    stop_on_signals(stop)
    progress = Progress()
    # Published at start, as each sweep starts and as it ends: a sweep in progress shows.
    publisher = (
        Publisher(ready.store, ready.configured, metrics_file, pushgateway=ready.pushgateway)
        if metrics_file or ready.pushgateway
        else None
    )
    if publisher:
        publisher.publish()

    def print_change(account_sid: str, channel: str, change: str, mobile: str) -> None:
        click.echo(output.change_line(account_sid, channel, change, mobile), err=to_stderr)

    try:
        results = sweep_accounts(
            ready.accounts,
            ready.store,
            options,
            client_maker(tuning),
            channels=channels or None,
            shard=share,
            stop=stop,
            run_timeout=tuning.run_timeout,
            on_page=progress.update,
            on_change=print_change if review.dry_run else None,
            on_start=publisher.sweep_started if publisher else None,
            on_result=publisher.sweep_ended if publisher else None,
        )
    except KeyboardInterrupt:  # a second Ctrl-C: the run row is already marked cancelled
        progress.close()
        click.echo("interrupted; nothing was applied for the channel in progress", err=True)
        sys.exit(ExitCode.SIGINT)
    finally:
        progress.close()
    if share and not results:
        click.echo(output.no_pairs_line(share), err=to_stderr)
    for result in results:
        click.echo(output.summary_line(result), err=to_stderr)
    if review.plan_out:
        save_plan(review.plan_out, results, started_at, to_stderr)
    if publisher:
        publisher.publish()
    code = exit_code(results, stop)
    if summary_json:
        write_summary(summary_json, ready.store, results, code, started_at, dry_run=dry_run, forced=force)
    sys.exit(code)


def _review(
    dry_run: bool,
    force: bool,
    plan_out: str | None,
    plan_file: str | None,
    plan_max_age: str,
    expect_removed: int | None,
    expect_added: int | None,
) -> Review:
    """The one :class:`Review` the flags of a reviewed force say, checked together before
    anything is touched."""
    expecting = expect_removed is not None or expect_added is not None
    if plan_out and not dry_run:
        raise UsageError("--plan-out saves a dry run's plan; add --dry-run")
    if (plan_file or expecting) and (dry_run or not force):
        raise UsageError(
            "--plan, --expect-removed and --expect-added say what --force may apply; use them "
            "with --force, without --dry-run"
        )
    if plan_file and expecting:
        raise UsageError("give --plan or --expect-removed/--expect-added, not both")
    if plan_out:
        check_output_file(plan_out, "--plan-out")
    plan = read_plan(plan_file) if plan_file else None  # no plan: stopped before the database
    max_age = parse_duration(plan_max_age, "--plan-max-age")
    if dry_run:
        return Review.dry(forced=force, plan_out=plan_out)
    if plan is not None:
        return Review.of_plan(plan, max_age)
    if expecting:
        said = " and ".join(
            f"--expect-{change} {count}"
            for change, count in (("removed", expect_removed), ("added", expect_added))
            if count is not None
        )
        return Review.of_counts(Approval(source=said, added=expect_added, removed=expect_removed))
    return Review.blind() if force else Review()


def save_plan(path: str, results: list[SweepResult], made_at: dt.datetime, to_stderr: bool) -> None:
    """Save the dry run's plan; say what it covers and what it left out (a channel whose dry
    run failed, held by a lock, or skipped is in no plan, so --force --plan refuses it)."""
    plans = [r.plan for r in results if r.plan is not None]
    try:
        write_plan(path, plans, made_at)
    except OSError as exc:
        raise ConfigError(f"--plan-out: cannot write {path} ({exc.strerror}); choose another path") from None
    for plan in plans:
        click.echo(output.plan_line(plan), err=to_stderr)
    left_out = [f"{r.account_sid} {r.channel}" for r in results if r.plan is None]
    note = f"; not in it (no dry run finished): {', '.join(left_out)}" if left_out else ""
    click.echo(
        f"plan saved to {path}: {len(plans)} channel(s){note}; apply it with "
        f"`blocklist-sync run --force --plan {path}` (same --account/--channel)",
        err=to_stderr,
    )


def write_summary(
    path: str,
    store: Store,
    results: list[SweepResult],
    code: int,
    started_at: dt.datetime,
    *,
    dry_run: bool,
    forced: bool,
) -> None:
    """``--summary-json``: to stdout, or atomically to a file (checked writable at start; a
    failure now is one line on stderr, and the sweeps' exit code stands)."""
    windows = {r.run_id: store.run_window(r.run_id) for r in results if r.run_id is not None}
    document = output.run_summary(
        results, windows, code, started_at=started_at, finished_at=store.now(), dry_run=dry_run, forced=forced
    )
    _write_summary_document(path, document)


def _write_summary_document(path: str, document: str) -> None:
    if path == "-":
        click.echo(document)
        return
    try:
        write_atomically(path, document + "\n")
    except OSError as exc:
        click.echo(f"warning: --summary-json: cannot write {path} ({exc.strerror})", err=True)


@cli.command()
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
    limit = parse_duration(max_age, "--max-age") if max_age else None
    accounts = None
    if source.is_configured(os.environ) and not show_all:
        accounts = source.selected(source.load(os.environ, need_keys=False))
    store, where = open_store(database_url, only_reads=True)
    database.require_current_schema(store.engine)
    if accounts is None and not show_all:
        click.echo(
            "note: no account configured (KALEYRA_SID or --config): judging every "
            "account and channel in the database",
            err=True,
        )
    scoped = health.scope(store.channel_statuses(), accounts, source.only)
    now = store.now()  # the clock every stored time was read from, not this host's
    problems = {(s.account_sid, s.channel): health.problem(s, now, limit) for s in scoped.judged}
    click.echo((output.status_json if as_json else output.status_table)(scoped, now, where, problems))
    sys.exit(ExitCode.FAILED if any(problems.values()) else ExitCode.OK)


@cli.command()
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
    checks += preflight.check_accounts(accounts, functools.partial(client_for, retry=RetryPolicy(attempts=1)))
    for item in checks:
        click.echo(item.line())
    sys.exit(ExitCode.OK if all(item.ok for item in checks) else ExitCode.FAILED)


@cli.command()
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


@cli.command()
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
    store, where = open_store(database_url, own_schema=False)
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
    roles.grant_read(store.engine, role)  # checks PostgreSQL and the schema revision first
    click.echo(
        f"{where}: role {role} can read the tables and views, and those later migrations add; "
        "it cannot write, nor create objects in the schema"
    )
    warn_if_anyone_may_create(store.engine, role)


@cli.command("grant-job")
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
    store, where = open_store(database_url)
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


@cli.command()
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
        scheduler.every_trigger(every, jitter or None)
        if every
        else scheduler.crontab_trigger(cron_expr or DEFAULT_CRON, jitter or None)
    )
    ready = prepare(source, database_url, log, metrics_file, pushgateway)
    accounts, store = ready.accounts, ready.store
    options = SweepOptions(trigger=Trigger.SCHEDULED, guard=guard, timeout=tuning.sweep_timeout)
    make_client = client_maker(tuning)
    publisher = Publisher(store, accounts, metrics_file, Metrics(), ready.pushgateway)

    if metrics_port:
        publisher.publish()
        try:
            publisher.metrics.serve(metrics_port, metrics_address)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a host name label over 63 characters
            why = exc.strerror if isinstance(exc, OSError) else "not a host name"
            raise ConfigError(
                f"{setting_name('metrics_address')} {quoted(metrics_address)} "
                f"{setting_name('metrics_port')} {metrics_port}: cannot listen ({why}); pick a free "
                "port or an address of this host"
            ) from None
    progress = Progress()
    try:
        scheduler.run_scheduler(
            accounts,
            store,
            options,
            make_client,
            trigger,
            run_now=run_now,
            run_timeout=tuning.run_timeout,
            publisher=publisher if (metrics_port or metrics_file or ready.pushgateway) else None,
            on_page=progress.update,
        )
    finally:
        progress.close()


@cli.command("import")
@config_errors_exit
@database_option
@click.option(
    "--account", "account_sid", required=True, metavar="SID", help="Account SID the exports are of."
)
@click.option(
    "--channel",
    required=True,
    type=click.Choice([c.value for c in Channel]),
    help="Channel the exports are of.",
)
@click.option(
    "--as-of",
    "times",
    multiple=True,
    metavar="TIME",
    help="When the export was taken (ISO 8601 with a zone: 2026-11-01T09:00Z), once per FILE in "
    "the same order. Default: the time in each file's name (blocklist-sms-2026-11-01T0900Z.csv).",
)
@click.option(
    "--earliest",
    metavar="TIME",
    envvar="BLOCKLIST_SYNC_IMPORT_EARLIEST",
    show_envvar=True,
    help="Refuse an export said to be older than this (ISO 8601 with a zone; default "
    "2000-01-01T00:00Z): a year mistyped in --as-of would write centuries of history.",
)
@click.option(
    "--dry-run", is_flag=True, help="Show what each file would change (counts and examples); apply nothing."
)
@click.option("--force", is_flag=True, help="Apply even what the safety guard would hold.")
@guard_options
@logging_options
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
def import_exports(
    database_url: str | None,
    account_sid: str,
    channel: str,
    times: tuple[str, ...],
    earliest: str | None,
    dry_run: bool,
    force: bool,
    guard: GuardLimits,
    log: LogSettings,
    files: tuple[str, ...],
) -> None:
    """Backfill history from dated blocklist exports: each FILE one full listing of the channel.

    CSV with a mobile column or one number per line, or JSON as the API returns it; gzip
    accepted. Snapshots go into an empty channel as if swept at their times, or before the
    channel's earliest run, rewriting only what they prove. Exits 0 when applied (or nothing to
    do), 2 for a file or time that cannot be imported, 3 when held by the safety guard, 75
    when another run holds the channel; nothing is applied unless every file is.
    """
    from sync import backfill, exports

    log.configure()
    if not account_sid.isprintable() or any(ch.isspace() for ch in account_sid) or len(account_sid) > 64:
        raise UsageError(
            "--account: not an account SID (no spaces or control characters, at most 64 characters)"
        )
    if times and len(times) != len(files):
        raise UsageError(
            f"--as-of is given {len(times)} time(s) for {len(files)} file(s); give it once per file, "
            "in the same order, or leave it out to read each time from the file's name"
        )
    try:
        ats = (
            [parse_instant(t, "--as-of") for t in times]
            if times
            else [exports.time_in_name(f) for f in files]
        )
    except exports.ExportError as exc:
        raise UsageError(str(exc)) from None
    snapshots = [backfill.Snapshot(path, at) for path, at in zip(files, ats, strict=True)]
    oldest = (
        backfill.EARLIEST_EXPORT if earliest is None else parse_instant(earliest, setting_name("earliest"))
    )
    store, _ = open_store(database_url)
    database.require_current_schema(store.engine)
    options = backfill.ImportOptions(
        account_sid=account_sid,
        channel=channel,
        review=Review.dry(forced=force) if dry_run else Review.blind() if force else Review(),
        guard=guard,
        earliest=oldest,
    )
    try:
        results = backfill.import_snapshots(store, snapshots, options)
    except (backfill.Refused, backfill.Held, backfill.Locked) as exc:
        fail(str(exc), exc.exit_code)
    for result in results:
        click.echo(result.line)
    if dry_run:
        click.echo("dry run: nothing was applied", err=True)
    sys.exit(ExitCode.OK)


@cli.command()
@database_option
@click.argument("numbers", nargs=-1, required=True)
@click.option(
    "--country",
    envvar="BLOCKLIST_SYNC_DEFAULT_COUNTRY",
    show_envvar=True,
    metavar="CC",
    help="ISO 3166 country of numbers written without + or 00 (IN reads 98765 43210 as +919876543210).",
)
@click.option(
    "--at",
    "instant",
    metavar="TIME",
    help="Also say whether each number was blocklisted at this instant (ISO 8601 with a zone, "
    "e.g. 2026-12-03T09:00+05:30): yes, no or uncertain, with the runs that prove it.",
)
@click.option("--region", "old_country", metavar="CC", hidden=True, help="Deprecated name of --country.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@config_errors_exit
@click.pass_context
def lookup(
    ctx: click.Context,
    database_url: str | None,
    numbers: tuple[str, ...],
    country: str | None,
    old_country: str | None,
    instant: str | None,
    as_json: bool,
) -> None:
    """Is each NUMBER blocklisted, on which account and channel, and since when.

    Numbers as people write them: +91 98765 43210, 0091..., 919876543210, or a national
    number with --country. Each number gets its own answer. Exits with the worst of them: 0
    found on some channel, 1 never seen, 2 cannot be a phone number, or never seen and not a
    valid number where it was read (a warning says what may have been meant).
    """
    from sync import lookup as lookups

    setting = lookups.COUNTRY_SETTING
    if old_country is not None:
        if ctx.get_parameter_source("country") is click.core.ParameterSource.COMMANDLINE:
            raise UsageError("give --country, not --region too (--region is its old name)")
        click.echo(
            "blocklist-sync: warning: lookup --region is deprecated, use --country: "
            "--region means the Kaleyra API region on every other command",
            err=True,
        )
        country, setting = old_country, "--region"
    readings = lookups.normalise_each(numbers, lookups.country_code(country, setting) if country else None)
    at = None if instant is None else parse_instant(instant, "--at")
    store, _ = open_store(database_url, only_reads=True)
    database.require_current_schema(store.engine)
    reports = lookups.look_up(store.engine, readings, at=at)
    for report in reports:
        if report.error:
            click.echo(f"blocklist-sync: error: {report.error}", err=True)
    if as_json:
        click.echo(json.dumps({"numbers": [lookups.as_record(r) for r in reports]}, indent=2))
    else:
        for report in reports:
            if report.error is None:
                click.echo("\n".join(lookups.describe(report)))
    sys.exit(max(lookups.exit_code(r) for r in reports))


@cli.command()
@database_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    default="report.html",
    show_default=True,
    help="HTML file to write.",
)
@click.option(
    "--days",
    type=WholeNumber(1, 3660),
    default=90,
    show_default=True,
    help="UTC days covered, ending today.",
)
@config_errors_exit
def report(database_url: str | None, out: str, days: int) -> None:
    """Write one self-contained HTML file: size and daily changes per channel, sync health."""
    from sync import report as reports

    reports.require_charting()
    store, where = open_store(database_url, only_reads=True)
    database.require_current_schema(store.engine)
    data = reports.gather(store.engine, days, where)
    try:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(reports.render(data))
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}; choose another --out") from None
    click.echo(f"{out}: report of {data.period} written")


def main() -> None:
    redaction.install()  # before anything is read: no secret reaches stdout or stderr
    register_configured_secrets(os.environ)  # whatever file a command then reads and quotes
    cli(prog_name="blocklist-sync")
