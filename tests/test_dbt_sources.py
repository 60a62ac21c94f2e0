"""``dbt/sources.yml``, the file a dbt project copies: every name in it is real, and its
freshness check means what it says.

A source that names a column the database does not have fails the analyst's first ``dbt
run``; one that leaves a table or view out leaves it undocumented in ``dbt docs``. So each
relation it declares is compared, column by column and in order, with the tables in
``sync/store/schema.py`` and with a migrated database (the views), and every relation of ours in the
database must be declared.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine

from sync import database
from sync.simulator import Simulator
from sync.store import Store
from sync.store.schema import metadata
from sync.vocabulary import Outcome
from tests.conftest import REPO, rows, sweep

SOURCES = REPO / "dbt" / "sources.yml"

# The intervals table of issue 18, with its columns as agreed, until a migration adds it to
# sync/store/schema.py and the database: from then on the table itself is the reference, and a
# column here it does not have (or one it has, missing here) fails the tests below.
PENDING = {
    "blocklist_periods": [
        "account_sid",
        "channel",
        "mobile",
        "channel_type",
        "added_at",
        "added_not_before",
        "removed_at",
        "removed_not_before",
        "initial_load",
        "added_run_id",
        "removed_run_id",
        "proven_present_at",
    ],
}
SCHEMA_TEMPLATE = "{{ env_var('BLOCKLIST_SYNC_SCHEMA', 'public') }}"
_HOURS = {"minute": 1 / 60, "hour": 1, "day": 24}


def source() -> dict[str, Any]:
    document = yaml.safe_load(SOURCES.read_text())
    assert document["version"] == 2
    (only,) = document["sources"]
    assert isinstance(only, dict)
    return only


def declared() -> dict[str, list[str]]:
    """Each relation the file declares, with its columns in the order given."""
    tables = source()["tables"]
    names = [t["name"] for t in tables]
    assert len(names) == len(set(names)), f"a relation is declared twice: {names}"
    return {t["name"]: [c["name"] for c in t["columns"]] for t in tables}


def test_the_source_reads_the_sync_schema_and_documents_every_column() -> None:
    the_source = source()
    assert the_source["schema"] == SCHEMA_TEMPLATE  # where BLOCKLIST_SYNC_SCHEMA put the tables
    for table in the_source["tables"]:
        assert str(table.get("description", "")).strip(), f"{table['name']} has no description"
        for column in table["columns"]:
            assert str(column.get("description", "")).strip(), f"{table['name']}.{column['name']}"
        names = [c["name"] for c in table["columns"]]
        assert len(names) == len(set(names)), f"{table['name']} declares a column twice"


def test_freshness_is_on_the_last_succeeded_sweep() -> None:
    tables = source()["tables"]
    (runs,) = [t for t in tables if t["name"] == "sync_runs"]
    config = runs["config"]
    assert config["loaded_at_field"] == "finished_at"
    freshness = config["freshness"]
    warn, error = (
        freshness[k]["count"] * _HOURS[freshness[k]["period"]] for k in ("warn_after", "error_after")
    )
    assert 1 < warn < error <= 24  # the default schedule is hourly: one missed tick warns
    assert re.fullmatch(r"status\s*=\s*'succeeded'", freshness["filter"])
    # No other relation claims a freshness of its own: the sweeps are what load them all.
    assert all("freshness" not in t.get("config", {}) for t in tables if t is not runs)


def test_every_declared_table_is_a_table_of_the_schema() -> None:
    """Without a database: the tables against sync/store/schema.py, the pending one against the
    agreed list; views are checked against a migrated database below."""
    for name, columns in declared().items():
        if name in metadata.tables:
            assert columns == [c.name for c in metadata.tables[name].columns], name
        elif name in PENDING:
            assert columns == PENDING[name], name
    assert set(metadata.tables) <= set(declared()), "a table of sync/store/schema.py is not declared"


def relation_columns(engine: Engine) -> dict[str, list[str]]:
    """Every table and view of a migrated database but Alembic's, with its columns in order."""
    found: dict[str, list[str]] = {}
    for relation, column in rows(
        engine,
        """
        SELECT c.relname, a.attname FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
          AND c.relname <> 'alembic_version'
        ORDER BY c.relname, a.attnum""",
    ):
        found.setdefault(relation, []).append(column)
    return found


def test_every_relation_and_column_is_in_a_migrated_database(engine: Engine) -> None:
    actual, named = relation_columns(engine), declared()
    assert set(actual) <= set(named), f"declare these in dbt/sources.yml: {sorted(set(actual) - set(named))}"
    for name, columns in named.items():
        if name in actual:
            assert columns == actual[name], f"dbt/sources.yml {name}: columns differ from the database's"
        else:
            assert name in PENDING, f"dbt/sources.yml declares {name}, which no migration creates"


@pytest.mark.parametrize("failing", [False, True])
def test_the_freshness_query_dbt_runs_sees_the_last_success(
    failing: bool, make_migrated_database: Callable[[], str], sim: Simulator
) -> None:
    """dbt's own freshness query (its postgres adapter's ``collect_freshness``), with the
    file's field and filter: a failed sweep after a success does not make the data look fresh."""
    engine = database.make_engine(database.resolve_database_url(make_migrated_database()))
    store = Store(engine)
    sim.add("sms", ["+919000000001"])
    assert sweep(sim, store).outcome is Outcome.SUCCEEDED
    if failing:
        sim.inject("RBC001")
        assert sweep(sim, store).outcome is Outcome.FAILED
    (runs,) = [t for t in source()["tables"] if t["name"] == "sync_runs"]
    config = runs["config"]
    query = (
        f"SELECT max({config['loaded_at_field']}) AS max_loaded_at, now() AS snapshotted_at "
        f"FROM public.sync_runs WHERE {config['freshness']['filter']}"
    )
    ((loaded, _),) = rows(engine, query)
    assert rows(engine, "SELECT finished_at FROM sync_runs WHERE status = 'succeeded'") == [(loaded,)]
    finished = rows(engine, "SELECT max(finished_at) FROM sync_runs")
    assert (finished == [(loaded,)]) is not failing
