"""What stops a command, in one line, in the words of the flags and variables the operator set.

The modules below the CLI raise what went wrong in their own terms: a
:class:`~sync.settings.ConfigError` for a setting that is missing or invalid, whatever set it,
and errors that carry what they found (a plan too old, counts approved for several channels, a
metrics port taken). Only this layer knows how the operator spoke: :func:`said` words each of
those, and :func:`setting_name` names a parameter by its environment variable when that is
where its value came from. Exit codes (docs/operators.md#exit-codes): 2 for a usage or
configuration error, 1 for an unreachable database.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click
from sqlalchemy.exc import DBAPIError, OperationalError

from sync import roles
from sync.plan import NotAPlan, PlanFromTheFuture, PlanMissesPair, PlanRefused, PlanTooOld
from sync.review import CountsCoverOnePair
from sync.run import PlanNotWritten
from sync.settings import ConfigError, duration_text, quoted
from sync.telemetry import CannotListen
from sync.timetext import elapsed_text, instant_text
from sync.vocabulary import ExitCode

__all__ = [
    "STOPS",
    "OneLineErrorsGroup",
    "UsageError",
    "config_errors_exit",
    "fail",
    "said",
    "setting_name",
    "stopped_by",
]


def fail(message: str, code: int = ExitCode.USAGE) -> NoReturn:
    click.echo(f"blocklist-sync: error: {message}", err=True)
    sys.exit(code)


class UsageError(Exception):
    """A command line that cannot mean anything: flags that exclude each other, an argument
    that is not what it names. The CLI's own: only this layer knows the words a command line
    is written in."""


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


# What stops a command with one line: a setting, a refusal carrying its fields, the database.
STOPS = (UsageError, ConfigError, PlanRefused, CountsCoverOnePair, PlanNotWritten, CannotListen, DBAPIError)
Stop = (
    UsageError | ConfigError | PlanRefused | CountsCoverOnePair | PlanNotWritten | CannotListen | DBAPIError
)


def said(exc: Exception) -> str:
    """The one line for an error raised below the CLI with what it found, in the words of the
    flags the operator gave; any other error's own message."""
    if isinstance(exc, NotAPlan):
        return (
            f"--plan: {exc.path} is not a plan written by `blocklist-sync run --dry-run --plan-out`; make one"
        )
    if isinstance(exc, PlanFromTheFuture):
        return (
            f"--plan {exc.path}: the plan says it was made at {instant_text(exc.made_at)}, after now "
            f"({instant_text(exc.now)} by the database's clock); no review comes from the future: review "
            "again with --dry-run --plan-out and apply that plan"
        )
    if isinstance(exc, PlanTooOld):
        return (
            f"--plan {exc.path}: the plan was made {elapsed_text(exc.age)} ago, longer than --plan-max-age "
            f"({duration_text(exc.max_age)}) allows; review again with --dry-run --plan-out "
            "and apply that plan"
        )
    if isinstance(exc, PlanMissesPair):
        planned = ", ".join(f"{sid} {channel}" for sid, channel in exc.planned) or "nothing"
        sid, channel = exc.pair
        return (
            f"--plan {exc.path}: the plan has no entry for {sid} {channel} (it was made for "
            f"{planned}); name its channels with --account and --channel, or make a plan for this one"
        )
    if isinstance(exc, CountsCoverOnePair):
        names = ", ".join(f"{sid} {channel}" for sid, channel in exc.swept[:4]) or "none"
        return (
            f"{exc.approval.source} approves the sweep of one account and channel, and this run sweeps "
            f"{len(exc.swept)} ({names}); name one with --account SID --channel C"
        )
    if isinstance(exc, PlanNotWritten):
        return f"--plan-out: cannot write {exc.path} ({exc.strerror}); choose another path"
    if isinstance(exc, CannotListen):
        return (
            f"{setting_name('metrics_address')} {quoted(exc.address)} {setting_name('metrics_port')} "
            f"{exc.port}: cannot listen ({exc.why}); pick a free port or an address of this host"
        )
    return str(exc)


def stopped_by(exc: Stop, options: dict[str, Any], *, migrating: bool = False) -> tuple[str, int]:
    """The one line and the exit code of a command stopped by ``exc``: a setting, a refusal,
    an unreachable database, or a right the database refused (naming the right and the role).
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
    return said(exc), ExitCode.USAGE


def config_errors_exit(command: Callable[..., None]) -> Callable[..., None]:
    """Whatever stops a command (:data:`STOPS`) becomes its one line on stderr and its exit
    code (:func:`stopped_by`), instead of a traceback. Goes right under ``@cli.command()``, so
    it also covers the option decorators that build settings."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except STOPS as exc:
            fail(*stopped_by(exc, kwargs, migrating=command.__name__ == "migrate"))

    return wrapper
