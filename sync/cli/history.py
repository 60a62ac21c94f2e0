"""The history's commands: ``import`` fills it from dated exports, ``lookup`` answers for a
number from it, ``report`` draws it. Each parses its options, calls one function and maps what
it returns to words and an exit code; the modules they call are imported when the command runs
(``phonenumbers``' data, ``ijson``, ``pygal``), not when any command starts."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from sync.cli.common import open_store
from sync.cli.errors import UsageError, config_errors_exit, fail, setting_name
from sync.cli.options import WholeNumber, database_option, guard_options, logging_options
from sync.guard import GuardLimits
from sync.review import Review
from sync.settings import ConfigError, parse_instant
from sync.telemetry import LogSettings
from sync.vocabulary import Channel, ExitCode

if TYPE_CHECKING:
    from sync.backfill import Snapshot

__all__ = ["import_exports", "lookup", "report"]

# How lookup's messages name the country setting, and the deprecated flag it had before.
COUNTRY_SETTING = "--country (BLOCKLIST_SYNC_DEFAULT_COUNTRY)"


@click.command("import")
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
    from sync import backfill

    log.configure()
    if not account_sid.isprintable() or any(ch.isspace() for ch in account_sid) or len(account_sid) > 64:
        raise UsageError(
            "--account: not an account SID (no spaces or control characters, at most 64 characters)"
        )
    snapshots = _snapshots(files, times)
    oldest = (
        backfill.EARLIEST_EXPORT if earliest is None else parse_instant(earliest, setting_name("earliest"))
    )
    store, _ = open_store(database_url)
    review = Review.dry(forced=force) if dry_run else Review.blind() if force else Review()
    options = backfill.ImportOptions(
        account_sid=account_sid, channel=channel, review=review, guard=guard, earliest=oldest
    )
    try:
        results = backfill.import_snapshots(store, snapshots, options)
    except (backfill.Refused, backfill.Held, backfill.Locked) as exc:
        fail(_import_stopped(exc), exc.exit_code)
    for result in results:
        click.echo(result.line)
    if dry_run:
        click.echo("dry run: nothing was applied", err=True)
    sys.exit(ExitCode.OK)


def _import_stopped(exc: Exception) -> str:
    """Why an import applied nothing, in the words of the flags: what a refusal or a hold
    found, and the setting or flag that changes it."""
    from sync import backfill

    if isinstance(exc, backfill.TooEarly):
        earliest = setting_name("earliest")
        return f"{exc} ({earliest}); check the year, or set {earliest} if the export really is older"
    if isinstance(exc, backfill.Held):
        return f"{exc}; review it with --dry-run, apply it with --force"
    if isinstance(exc, backfill.NotThisChannel):
        channel = f"{setting_name('channel')} {exc.found.likeliest}"
        return f"{exc.found}; import it with {channel}; nothing was applied"
    return str(exc)


def _snapshots(files: tuple[str, ...], times: tuple[str, ...]) -> list[Snapshot]:
    """Each FILE with the time it shows: ``--as-of``, once per file in order, or the time in
    each file's name."""
    from sync import backfill, exports

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
    except exports.NoTimeInName as exc:
        raise UsageError(f"{exc}; give --as-of TIME for each file") from None
    except exports.ExportError as exc:
        raise UsageError(str(exc)) from None
    return [backfill.Snapshot(path, at) for path, at in zip(files, ats, strict=True)]


@click.command()
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
    "e.g. 2026-12-03T09:00+05:30): yes, no or uncertain, with the runs that prove it; unknown "
    "outside the channel's coverage.",
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
    from sync import readings

    setting = COUNTRY_SETTING
    if old_country is not None:
        if ctx.get_parameter_source("country") is click.core.ParameterSource.COMMANDLINE:
            raise UsageError("give --country, not --region too (--region is its old name)")
        click.echo(
            "blocklist-sync: warning: lookup --region is deprecated, use --country: "
            "--region means the Kaleyra API region on every other command",
            err=True,
        )
        country, setting = old_country, "--region"
    read = readings.normalise_each(numbers, readings.country_code(country, setting) if country else None)
    at = None if instant is None else parse_instant(instant, "--at")
    store, _ = open_store(database_url, only_reads=True)
    # Hints name the country setting as the operator set it: the variable, else the flag.
    reports = lookups.look_up(store.engine, read, at=at, country_setting=setting_name("country"))
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


@click.command()
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
    data = reports.gather(store.engine, days, where)
    try:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(reports.render(data))
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}; choose another --out") from None
    click.echo(f"{out}: report of {data.period} written")
