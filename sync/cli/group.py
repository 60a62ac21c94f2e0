"""The ``blocklist-sync`` command group: its commands, ``--env-file``, and ``main()``."""

from __future__ import annotations

import os

import click

from sync import __version__, redaction
from sync.cli.errors import OneLineErrorsGroup, fail, setting_name
from sync.cli.history import import_exports, lookup, report
from sync.cli.sweeps import check, migrate, run, schedule, status
from sync.cli.tools import demo, grant_job, grant_read, simulate
from sync.settings import ConfigError, read_env_file, register_configured_secrets
from sync.vocabulary import Channel

__all__ = ["cli", "main"]


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
            settings = read_env_file(env_file, setting_name("env_file"))
        except ConfigError as exc:
            fail(str(exc))
        for name, value in settings.items():
            os.environ.setdefault(name, value)


for command in (migrate, run, schedule, status, check, import_exports, lookup, report, grant_read, grant_job):
    cli.add_command(command)
cli.add_command(simulate)
cli.add_command(demo)


def main() -> None:
    redaction.install()  # before anything is read: no secret reaches stdout or stderr
    register_configured_secrets(os.environ)  # whatever file a command then reads and quotes
    cli(prog_name="blocklist-sync")
