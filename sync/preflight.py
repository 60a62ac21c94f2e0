"""``blocklist-sync check``: is this configuration ready to sweep? Answered without sweeping.

Like ``dbt debug`` or an Airbyte connector's ``check``: the configuration was already loaded
(a bad one never gets here: exit 2), then the database is reached, its schema compared with
the code's head, and one ``limit=1`` listing request made per account and channel, without
retries, so an unreachable host answers in seconds. Each check is one line: ok, or what is
wrong and what to do. Nothing is written: no run row, no lock, no SQLite file created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from sync import database, roles
from sync.kaleyra import KaleyraClient, KaleyraError
from sync.settings import Account

__all__ = ["Check", "check_accounts", "check_database"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # ok, yet worth an operator's attention: WARN, and the exit stays 0

    def line(self) -> str:
        word = "FAIL" if not self.ok else "WARN" if self.warning else "ok"
        return f"{word:<4}  {self.name}: {self.detail}"


def check_database(engine: Engine, where: str) -> list[Check]:
    """The database answers, its schema is at the code's head, this login has every right a
    sweep needs (one FAIL line per missing right), and no other login may create where the
    install's names resolve."""
    missing = database.missing_database_file(engine.url.render_as_string(hide_password=False))
    if missing:
        return [Check("database", False, missing)]
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return [
            Check(
                "database",
                False,
                f"cannot connect to {where} ({cause}); check DATABASE_URL and that the server is up",
            )
        ]
    checks = [Check("database", True, f"connected to {where}")]
    try:
        current, head = database.current_revision(engine), database.head_revision()
    except DBAPIError as exc:  # no right to read alembic_version: the rights below say which
        if roles.permission_words(exc, None) is None:
            raise
        current, head = None, ""
    if current == head:
        checks.append(Check("schema", True, f"at {head}, the code's newest revision"))
    elif head:
        state = "empty" if current is None else f"at {current}"
        checks.append(Check("schema", False, f"{state}, not {head}; run `blocklist-sync migrate`"))
    if current == head or not head:
        role, lacking = roles.missing_job_rights(engine)
        checks += [
            Check(
                "rights",
                False,
                f"role {role} lacks {right}; as the role that runs migrate, "
                f"run `blocklist-sync grant-job {role}`",
            )
            for right in lacking
        ]
        if role and not lacking:
            checks.append(Check("rights", True, f"role {role} may run sweeps and imports"))
    for schema in roles.schemas_anyone_may_create_in(engine):
        checks.append(
            Check(
                "schema rights",
                True,
                f"PUBLIC may create objects in schema {schema}, where this install's names resolve: "
                "any login could plant a table, view or function there; as the schema's owner run "
                f'REVOKE CREATE ON SCHEMA "{schema}" FROM PUBLIC (PostgreSQL 15 and later do), '
                "or give the install a schema of its own (BLOCKLIST_SYNC_SCHEMA)",
                warning=True,
            )
        )
    return checks


def check_accounts(accounts: list[Account], make_client: Callable[[Account], KaleyraClient]) -> list[Check]:
    """One ``limit=1`` request per account and channel. An account-wide failure (wrong key,
    host unreachable) is reported once; its other channels say they were skipped."""
    checks: list[Check] = []
    for account in accounts:
        client = make_client(account)
        broken: str | None = None
        try:
            for channel in account.channels:
                name = f"kaleyra {account.sid} {channel}"
                if broken:
                    checks.append(Check(name, False, f"skipped: {broken} failed account-wide"))
                    continue
                try:
                    rows = client.probe(channel)
                except KaleyraError as exc:
                    checks.append(Check(name, False, str(exc)))
                    if exc.account_wide:
                        broken = channel
                    continue
                checks.append(
                    Check(
                        name,
                        True,
                        f"{client.base_url} answered the listing "
                        f"({'at least one' if rows else 'no'} number blocklisted)",
                    )
                )
        finally:
            client.close()
    return checks
