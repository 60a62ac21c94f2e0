"""The vocabulary is the schema's: CHECK constraints allow exactly the enums' values; errors
decide their own scope."""

from __future__ import annotations

import enum
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Unpack, cast

import psycopg
import pytest
from alembic import command
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

from sync import database
from sync.run import sweep_accounts
from sync.simulator import Simulator
from sync.store import Store
from sync.sweep import Outcome, SweepOptions
from sync.views import View
from sync.vocabulary import Channel, RunStatus, Trigger
from tests.conftest import PG_SERVER, REPO, account_of, column_comments, make_client, numbers

if TYPE_CHECKING:
    from sync.views import ViewOperations

CHECKED = [
    ("sync_runs", "channel", Channel),
    ("sync_runs", "trigger", Trigger),
    ("sync_runs", "status", RunStatus),
]


@pytest.mark.parametrize(("table", "column", "words"), CHECKED)
def test_each_check_constraint_allows_exactly_the_enum(
    engine: Engine, table: str, column: str, words: type[enum.StrEnum]
) -> None:
    with engine.connect() as c:
        definition = c.execute(
            text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :name"),
            {"name": f"ck_{table}_{column}"},
        ).scalar_one()
    assert set(re.findall(r"'([^']+)'::text", definition)) == {w.value for w in words}
    # And the database really enforces it: every value goes in, anything else does not.
    with engine.connect() as c:
        c.execute(
            text(
                "INSERT INTO sync_runs (id, account_sid, channel, trigger, status, "
                "started_at) VALUES (-1, 'HXCHECK', 'sms', 'manual', 'running', now())"
            )
        )
        for value in [*(w.value for w in words), "not-a-word"]:
            row = {
                "account_sid": "HXCHECK",
                "channel": "sms",
                "trigger": "manual",
                "status": "failed",
                column: value,
            }
            statement = (
                "INSERT INTO sync_runs (account_sid, channel, trigger, status, started_at) "
                "VALUES (:account_sid, :channel, :trigger, :status, now())"
            )
            c.execute(text("SAVEPOINT one"))
            try:
                c.execute(text(statement), row)
                accepted = True
            except Exception as exc:
                assert isinstance(getattr(exc, "orig", None), psycopg.errors.CheckViolation)
                accepted = False
            c.execute(text("ROLLBACK TO SAVEPOINT one"))
            assert accepted is (value != "not-a-word"), value
        c.rollback()


# Where the channels may be written out as a list: the docs, the deployment files, the package
# metadata and the code. The migrations keep the words of their day (they are history), and the
# simulator keeps its own list on purpose (it states what the vendor serves).
CHANNEL_TEXTS = ["README.md", "docs/*.md", "pyproject.toml", "Dockerfile", "cron/*", "sync/**/*.py"]
NOT_CHANNEL_TEXTS = {"sync/simulator/vendor.py"}


def test_every_list_of_the_channels_names_exactly_the_enums() -> None:
    """A run of three or more channel names is a list of every channel (help texts, comments,
    examples of KALEYRA_CHANNELS): each must name exactly :class:`Channel`'s members, so adding
    a channel fails here at every text that still lists the old ones. Texts in ``sync/`` are
    generated from the enum where they can be (``vocabulary.in_words``)."""
    name = "|".join(re.escape(c.value) for c in Channel)
    a_list = re.compile(rf"\b(?:{name})\b(?:(?:,\s*|\s+or\s+|\s+and\s+)(?:{name})\b){{2,}}")
    files = sorted({path for pattern in CHANNEL_TEXTS for path in REPO.glob(pattern) if path.is_file()})
    found = []
    for path in files:
        relative = path.relative_to(REPO).as_posix()
        if relative in NOT_CHANNEL_TEXTS:
            continue
        for match in a_list.finditer(path.read_text()):
            named = re.findall(rf"\b(?:{name})\b", match.group())
            found.append((relative, match.group()))
            assert sorted(named) == sorted(c.value for c in Channel), (relative, match.group())
    assert len(found) >= 4, found  # README (three), the Kubernetes example, pyproject: the test sees them


def test_a_whatsapp_only_refusal_does_not_skip_the_other_channels(sim: Simulator, store: Store) -> None:
    for channel in ("sms", "voice", "whatsapp"):
        sim.add(channel, numbers(5))
    sim.inject("WA401", channel="whatsapp", times=10)
    account = account_of(sim, ("whatsapp", "sms", "voice"))
    results = sweep_accounts([account], store, SweepOptions(), lambda _: make_client(sim))
    assert [(r.channel, r.outcome) for r in results] == [
        ("whatsapp", Outcome.FAILED),
        ("sms", Outcome.SUCCEEDED),
        ("voice", Outcome.SUCCEEDED),
    ]


def test_a_low_balance_skips_the_rest_of_the_account(sim: Simulator, store: Store) -> None:
    sim.add("sms", numbers(5))
    sim.inject("E110", times=10)
    account = account_of(sim, ("sms", "whatsapp", "voice"))
    results = sweep_accounts([account], store, SweepOptions(), lambda _: make_client(sim))
    assert [(r.channel, r.outcome) for r in results] == [
        ("sms", Outcome.FAILED),
        ("whatsapp", Outcome.SKIPPED),
        ("voice", Outcome.SKIPPED),
    ]


def test_status_metrics_and_the_health_view_agree_through_every_outcome(
    sim: Simulator, store: Store, engine: Engine, pg_url: str
) -> None:
    """One definition of health: after each step, ``status --json`` says what the
    ``blocklist_sync_health`` view says, row by row."""
    import json

    from sync.guard import GuardLimits
    from sync.review import Review
    from sync.sweep import sweep_channel
    from tests.conftest import SweepOptionFields, cli_env, invoke

    def sweep(**options: Unpack[SweepOptionFields]) -> Outcome:
        return sweep_channel(make_client(sim), store, "sms", SweepOptions(**options)).outcome

    def agree(expected_status: str | None) -> None:
        shown = json.loads(invoke("status", "--all", "--json", env=cli_env(None, pg_url)).stdout)["channels"]
        mine = [c for c in shown if c["account_sid"] == sim.sid]
        with engine.connect() as c:
            view = c.execute(
                text(
                    "SELECT channel, last_run_id, last_run_status, last_success_at, entries, "
                    "last_run_pages, last_run_added, last_run_removed, last_run_rejected "
                    "FROM blocklist_sync_health WHERE account_sid = :a ORDER BY channel"
                ),
                {"a": sim.sid},
            ).all()
        counts = ("pages", "added", "removed", "rejected")
        assert [
            (
                c["channel"],
                c["last_run"]["id"],
                c["last_run"]["status"],
                c["last_success_at"],
                c["entries"],
                *(c["last_run"][k] for k in counts),
            )
            for c in mine
        ] == [(ch, run, status, at.isoformat() if at else None, *rest) for ch, run, status, at, *rest in view]
        assert (view[0][2] if view else None) == expected_status

    sim.add("sms", numbers(200))
    assert sweep() is Outcome.SUCCEEDED
    agree("succeeded")
    sim.inject("E110", times=1)  # fatal: not retried
    assert sweep() is Outcome.FAILED
    agree("failed")
    sim.remove("sms", numbers(100))
    assert sweep() is Outcome.HELD
    agree("held")
    assert sweep(review=Review.dry()) is Outcome.DRY_RUN
    agree("held")  # a review does not make a held channel look healthy
    with store.lock_channel(sim.sid, "sms"):
        assert sweep() is Outcome.LOCKED
    agree("held")  # a locked run writes nothing
    assert sweep(review=Review.blind(), guard=GuardLimits(max_removal_fraction=1.0)) is Outcome.SUCCEEDED
    agree("succeeded")


# -- views are replaceable objects -----------------------------------------------------------


def _views_as_stored(engine: Engine) -> dict[str, object]:
    """Every view's definition and comments, as the database holds them."""
    with engine.connect() as c:
        if engine.dialect.name == "sqlite":
            return dict(c.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'view'")).all())
        return {
            name: (definition, comment, column_comments(engine, name))
            for name, definition, comment in c.execute(
                text(
                    "SELECT c.relname, pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class') "
                    "FROM pg_class c WHERE c.relkind = 'v' AND pg_table_is_visible(c.oid)"
                )
            ).all()
        }


def test_replacing_a_view_by_name_downgrades_to_its_exact_previous_version(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    """0007 names the health view it replaces; downgrading restores that version as it was,
    definition and comments, on both dialects, and leaves every other view alone."""
    for url in (database.resolve_database_url(make_database()), f"sqlite:///{tmp_path / 'v.db'}"):
        engine = database.make_engine(url)
        config = database.alembic_config(engine)
        command.upgrade(config, "0006")
        before = _views_as_stored(engine)
        command.upgrade(config, "0007")  # not head: a later migration may add views
        after = _views_as_stored(engine)
        assert {name for name in after if after[name] != before[name]} == {"blocklist_sync_health"}
        with engine.connect() as c:
            columns = c.execute(text("SELECT * FROM blocklist_sync_health")).keys()
        counts = ["last_run_pages", "last_run_added", "last_run_removed", "last_run_rejected"]
        assert list(columns)[-4:] == counts
        command.downgrade(config, "0006")
        assert _views_as_stored(engine) == before
        engine.dispose()


def test_a_view_with_an_undocumented_column_is_refused(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    """Every column a BI tool sees is documented: a view whose columns differ from its
    documented ones fails its migration, on both dialects, instead of shipping."""
    select = "SELECT 1 AS documented, 2 AS forgotten"
    undocumented = View("blocklist_example", select, "An example.", {"documented": "x"})
    documented = replace(undocumented, columns={"documented": "x", "forgotten": "y"})
    for url in (database.resolve_database_url(make_database()), f"sqlite:///{tmp_path / 'v.db'}"):
        engine = database.make_engine(url)
        with engine.connect() as c:
            op = cast("ViewOperations", Operations(MigrationContext.configure(c)))
            with pytest.raises(ValueError, match="document every column"):
                op.create_view(undocumented)
            c.rollback()
            op.create_view(documented)
            assert c.execute(text("SELECT forgotten FROM blocklist_example")).scalar_one() == 2
        engine.dispose()


def test_a_migration_that_sets_the_views_aside_leaves_other_views_alone(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    """0006 alters tables our views read, so it drops and recreates them; a view an analyst
    made beside them is neither dropped nor recreated (it keeps its identity and its grants)."""
    for url in (database.resolve_database_url(make_database()), f"sqlite:///{tmp_path / 'v.db'}"):
        engine = database.make_engine(url)
        config = database.alembic_config(engine)
        command.upgrade(config, "0005")
        identity = (
            "SELECT to_regclass('my_dashboard')::oid"
            if engine.dialect.name == "postgresql"
            else "SELECT rowid FROM sqlite_master WHERE name = 'my_dashboard'"
        )
        with engine.begin() as c:
            c.execute(text("CREATE VIEW my_dashboard AS SELECT 1 AS one"))
            made = c.execute(text(identity)).scalar_one()
        command.upgrade(config, "head")
        with engine.connect() as c:
            assert c.execute(text(identity)).scalar_one() == made
        command.downgrade(config, "0005")
        with engine.connect() as c:
            assert c.execute(text(identity)).scalar_one() == made
        engine.dispose()


def test_the_code_map_lists_every_module() -> None:
    """docs/developers.md's code map names each module of sync/ and of its packages (by its
    path, or by its name in its package's row), so the next engineer finds it."""
    text = (REPO / "docs" / "developers.md").read_text()
    code_map = text[text.index("### Code map") :]
    modules = [p.relative_to(REPO) for p in sorted((REPO / "sync").rglob("*.py")) if p.name != "__init__.py"]

    def listed(module: Path) -> bool:
        if f"`{module.as_posix()}`" in code_map:
            return True
        in_package = len(module.parts) > 2 and f"`{module.parent.as_posix()}/`" in code_map
        return in_package and f"`{module.name}`" in code_map

    missing = [m.as_posix() for m in modules if not listed(m)]
    assert not missing, f"not in the code map of docs/developers.md: {missing}"


def test_a_test_session_leaves_no_database_behind() -> None:
    """Each test's databases are dropped as it ends, and the session's (and the last test's,
    whose teardown ends the session) when it ends: a session of its own, with a prefix of its
    own, leaves none on the server."""
    prefix = f"kbs_test_leak{uuid.uuid4().hex[:6]}_"
    test = "tests/test_one_history.py::test_migrate_compacts_the_stretches_once_its_transaction_has_committed"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", test],
        env={**os.environ, "KBS_TEST_DB_PREFIX": prefix},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    with psycopg.connect(f"{PG_SERVER}/postgres") as conn:
        query = "SELECT datname FROM pg_database WHERE datname LIKE %s"
        left = conn.execute(query, [f"{prefix}%"]).fetchall()
    assert left == []
