"""The command line's options: click's parameter types, and the options each command shares,
gathered into the typed settings the modules below take.

A group of options is one decorator (:func:`_gathered`) that adds the options and hands the
command one object built from their values (an :class:`~sync.settings.AccountSource`, a
:class:`~sync.settings.Tuning`, a :class:`~sync.review.Review`): no ``**kwargs: object`` is
handed down, and a value that cannot be what it names stops the command before it touches
anything. Options used by one command alone are declared on it, in ``commands.py``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from sync import database, output
from sync.cli.errors import STOPS, UsageError, setting_name, stopped_by
from sync.files import write_atomically
from sync.guard import GuardLimits
from sync.plan import PLAN_MAX_AGE, Approval, read_plan
from sync.review import Review
from sync.run import SHARD_SKIP_IF_SWEPT_WITHIN, Scope
from sync.settings import (
    CONFIG_VARIABLE,
    SCHEMA_SETTING,
    AccountSource,
    Tuning,
    check_output_file,
    duration_text,
    parse_duration,
    parse_shard,
    quoted,
)
from sync.telemetry import LOG_LEVELS, LogSettings
from sync.vocabulary import REGIONS, Channel, Trigger

__all__ = [
    "Decimal",
    "Summary",
    "WholeNumber",
    "account_options",
    "database_option",
    "guard_options",
    "logging_options",
    "pushgateway_option",
    "review_options",
    "scope_options",
    "summary_option",
    "tuning_options",
]

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
        only=tuple(only),
        names={
            name: setting_name(name)
            for name in ("config_file", "sid", "api_key_file", "base_url", "region", "only")
        },
        **flags,
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
    plan = read_plan(plan_file, "--plan") if plan_file else None  # no plan: stopped before the database
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


review_options = _gathered(
    [
        click.option(
            "--dry-run", is_flag=True, help="Print the additions and removals it would make; apply nothing."
        ),
        click.option(
            "--force",
            is_flag=True,
            help="Apply even what the safety guard would hold: what --expect-removed/--expect-added "
            "or --plan approve, or (alone) whatever this sweep finds.",
        ),
        click.option(
            "--plan-out",
            metavar="FILE",
            help="With --dry-run: save the plan (per account and channel: counts and a digest of the "
            "numbers, no secret) for `run --force --plan FILE`.",
        ),
        click.option(
            "--plan",
            "plan_file",
            metavar="FILE",
            help="With --force: apply only what this plan (from --dry-run --plan-out) shows; a sweep "
            "that differs is held (exit 3).",
        ),
        click.option(
            "--plan-max-age",
            default=duration_text(PLAN_MAX_AGE),
            show_default=True,
            metavar="DURATION",
            help="An older --plan is refused.",
        ),
        click.option(
            "--expect-removed",
            type=WholeNumber(0),
            metavar="N",
            help="With --force, for one account and channel: apply only a sweep removing exactly N numbers.",
        ),
        click.option(
            "--expect-added",
            type=WholeNumber(0),
            metavar="N",
            help="With --force, for one account and channel: apply only a sweep adding exactly N numbers.",
        ),
    ],
    _review,
    "review",
    ("dry_run", "force", "plan_out", "plan_file", "plan_max_age", "expect_removed", "expect_added"),
)


def _scope(
    channels: tuple[str, ...], trigger: str, shard: str | None, skip_if_swept_within: str | None
) -> Scope:
    # Every setting is checked before the database is touched: a bad one applies nothing.
    return Scope(
        channels=channels or None,
        shard=parse_shard(shard, os.environ, setting_name("shard")) if shard else None,
        skip_if_swept_within=(
            parse_duration(skip_if_swept_within, setting_name("skip_if_swept_within"), zero_is_off=True)
            if skip_if_swept_within
            else None
        ),
        trigger=Trigger(trigger),
    )


scope_options = _gathered(
    [
        click.option(
            "--channel",
            "channels",
            multiple=True,
            type=click.Choice([c.value for c in Channel]),
            help="Sweep only this channel (repeatable). Default: every configured channel.",
        ),
        click.option(
            "--trigger",
            type=click.Choice([t.value for t in Trigger]),
            default=Trigger.MANUAL.value,
            show_default=True,
            help="Recorded on the run row.",
        ),
        click.option(
            "--shard",
            envvar="BLOCKLIST_SYNC_SHARD",
            show_envvar=True,
            metavar="K/N",
            help="Sweep only shard K (0 to N-1) of N of the (account, channel) pairs; N alone "
            "takes K from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).",
        ),
        click.option(
            "--skip-if-swept-within",
            envvar="BLOCKLIST_SYNC_SKIP_IF_SWEPT_WITHIN",
            show_envvar=True,
            metavar="DURATION",
            help="Skip a channel whose last sweep, by any process, started less than this "
            f"long ago (e.g. 30m); 0 turns it off. Default: never; with --shard, "
            f"{duration_text(SHARD_SKIP_IF_SWEPT_WITHIN)}.",
        ),
    ],
    _scope,
    "scope",
    ("channels", "trigger", "shard", "skip_if_swept_within"),
)


@dataclass(frozen=True)
class Summary:
    """Where ``run --summary-json`` goes (``-``: stdout; None: nowhere), and the flags it
    reports the run was given."""

    path: str | None
    dry_run: bool
    forced: bool

    def write(self, document: str) -> None:
        """To stdout, or atomically to the file (checked writable at start; a failure now is
        one line on stderr, and the sweeps' exit code stands)."""
        if self.path == "-":
            click.echo(document)
        elif self.path:
            try:
                write_atomically(self.path, document + "\n")
            except OSError as exc:
                click.echo(f"warning: --summary-json: cannot write {self.path} ({exc.strerror})", err=True)


def summary_option(command: Callable[..., None]) -> Callable[..., None]:
    """``run --summary-json``: its path checked first, and a run stopped after that (a bad
    setting, a stale plan, no database) still writes a summary, of no results, its exit code
    and the line saying why. So the file present after a run is that run's, and an earlier
    one is replaced whole, never deleted before the new one is complete. Goes above the
    options whose values it reports (``--dry-run``, ``--force``) and those it covers, under
    ``config_errors_exit``, which then prints the line and exits."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        summary = Summary(kwargs.pop("summary_json"), dry_run=kwargs["dry_run"], forced=kwargs["force"])
        if summary.path and summary.path != "-":
            check_output_file(summary.path, "--summary-json")
        try:
            command(*args, summary=summary, **kwargs)
        except STOPS as exc:
            if summary.path:
                line, code = stopped_by(exc, kwargs)
                summary.write(
                    output.stopped_summary(line, code, dry_run=summary.dry_run, forced=summary.forced)
                )
            raise

    return click.option(
        "--summary-json",
        metavar="FILE",
        help="Write the run's results as JSON (one object per account and channel, and the exit "
        "code) to FILE, atomically; - for stdout (the result lines then go to stderr).",
    )(wrapper)
