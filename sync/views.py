"""BI views as replaceable objects: how a migration creates, drops and replaces a view.

This is Alembic's cookbook recipe "Replaceable Objects". A view is created and dropped whole,
so each version of a view is one :class:`View` constant in the migration that introduced it,
and a migration that changes a view states only its new version and names the one it
replaces::

    SYNC_HEALTH = View("blocklist_sync_health", "SELECT ...", comment="...", columns={...})

    def upgrade() -> None:
        op.replace_view(SYNC_HEALTH, replaces="0004.SYNC_HEALTH")

    def downgrade() -> None:
        op.replace_view(SYNC_HEALTH, replace_with="0004.SYNC_HEALTH")

Downgrading finds the old version in its own migration file, so no SQL is copied from one
migration into another, and the DROP, CREATE and COMMENT ON statements are written once, here.

The views are public contract for dashboards, and their comments are part of them: on
PostgreSQL every CREATE is followed by COMMENT ON for the view and each of its columns (SQLite
has no comments), and a view whose columns are not exactly the documented ones is refused, so
no column reaches a BI tool undocumented. Expressions that differ by dialect are
``{placeholders}`` in the SELECT, filled from :attr:`View.expressions`.

A migration that alters a table the views read wraps the change in :func:`views_set_aside`:
PostgreSQL refuses to change the type of a column a view uses, and on SQLite Alembic's batch
mode (copy, drop, rename) fails the rename while a view names the table.

PostgreSQL functions are replaceable objects too: a :class:`Function` (its arguments, what it
returns, one SELECT and its comment), made by ``op.create_function``, changed by
``op.replace_function`` (in place: views may call it, so a version keeps its name, arguments
and result columns) and dropped by ``op.drop_function``. Its body is SQL-standard (``BEGIN
ATOMIC``, PostgreSQL 14 and later): PostgreSQL resolves every name in it when it is created,
as it does a view's, and stores what each meant, so no caller's ``search_path`` can change
what it reads or runs. SQLite has none.

Importing this module registers these operations and ``op.create_view``, ``op.drop_view`` and
``op.replace_view``; ``migrations/env.py`` imports it. Alembic's type stub for ``op`` cannot
know operations registered at run time, so a migration takes ``op`` from here (``from
sync.views import op``): the same object, typed with Alembic's operations and these.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from alembic import op as _alembic_op
from alembic.operations import MigrateOperation, Operations
from sqlalchemy import text

from sync.sql import sql_literal

__all__ = ["CreateViewOp", "DropViewOp", "Function", "View", "migration", "op", "views_set_aside"]


PREFIX = "blocklist_"


@dataclass(frozen=True)
class View:
    """One version of a view: its SELECT and its documentation, for every dialect. Every view
    the project makes is named ``blocklist_…``: that is how :func:`views_set_aside` tells them
    from views that are not ours."""

    name: str
    select: str
    comment: str
    columns: Mapping[str, str]  # every column, in order, with its comment
    # Per dialect name, the values of the SELECT's {placeholders}.
    expressions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.startswith(PREFIX):
            raise ValueError(f"view {self.name}: the project's views are named {PREFIX}…")

    def statements(self, dialect: str) -> list[str]:
        """CREATE VIEW, then (on PostgreSQL) its comments."""
        select = self.select
        if self.expressions:
            if dialect not in self.expressions:
                raise ValueError(f"view {self.name} has no expressions for the {dialect} dialect")
            select = select.format(**self.expressions[dialect])
        statements = [f"CREATE VIEW {self.name} AS\n{select.strip()}"]
        if dialect == "postgresql":
            statements.append(f"COMMENT ON VIEW {self.name} IS {sql_literal(self.comment)}")
            statements += [
                f"COMMENT ON COLUMN {self.name}.{column} IS {sql_literal(comment)}"
                for column, comment in self.columns.items()
            ]
        return statements


@dataclass(frozen=True)
class Function:
    """One version of a PostgreSQL function: a single SELECT, with its arguments (name and
    type, in order), its result (``TABLE (...)``) and its comment.

    ``LANGUAGE sql STABLE PARALLEL SAFE`` with a SQL-standard body: bound when created (tables,
    types, functions and operators alike), so a caller whose path reaches a schema others may
    write runs the built-ins all the same, and a caller whose path lacks the install's schema
    still reads that install; and still inlined by the planner, so a filter on the result
    reaches the indexes of the tables it reads."""

    name: str
    arguments: Mapping[str, str]
    returns: str
    select: str
    comment: str
    # False: a query of its own, planned and run apart from its caller's, not inlined into it
    # (declared STRICT, which the planner does not inline; with no arguments it changes nothing
    # else, and unlike a SET clause it leaves the function safe in a parallel plan).
    inlined: bool = True

    def __post_init__(self) -> None:
        if not self.name.startswith(PREFIX):
            raise ValueError(f"function {self.name}: the project's functions are named {PREFIX}…")

    @property
    def signature(self) -> str:
        """Name and argument types, as ``COMMENT ON`` and ``DROP`` name the function."""
        return f"{self.name}({', '.join(self.arguments.values())})"

    def statements(self, *, replace: bool = False) -> list[str]:
        """CREATE (OR REPLACE) FUNCTION, then its comment."""
        arguments = ", ".join(f"{name} {type_}" for name, type_ in self.arguments.items())
        create = "CREATE OR REPLACE FUNCTION" if replace else "CREATE FUNCTION"
        strict = "" if self.inlined else " STRICT"
        return [
            f"{create} {self.name}({arguments})\nRETURNS {self.returns}\n"
            f"LANGUAGE sql STABLE{strict} PARALLEL SAFE\nBEGIN ATOMIC\n{self.select.strip()};\nEND",
            f"COMMENT ON FUNCTION {self.signature} IS {sql_literal(self.comment)}",
        ]


class _FunctionOp(MigrateOperation):
    """An operation on one version of a function (PostgreSQL only; nothing on SQLite)."""

    def __init__(self, function: Function, *, replace: bool = False) -> None:
        self.function = function
        self.replace = replace

    @classmethod
    def invoke_for_target(cls, operations: Operations, function: Function) -> Any:
        return operations.invoke(cls(function))


@Operations.register_operation("create_function", "invoke_for_target")
class CreateFunctionOp(_FunctionOp):
    def reverse(self) -> DropFunctionOp:
        return DropFunctionOp(self.function)


@Operations.register_operation("replace_function", "invoke_for_target")
class ReplaceFunctionOp(_FunctionOp):
    """CREATE OR REPLACE: views that call the function stay, and PostgreSQL refuses a version
    whose arguments or result columns differ (drop and create that one instead)."""

    def __init__(self, function: Function) -> None:
        super().__init__(function, replace=True)


@Operations.register_operation("drop_function", "invoke_for_target")
class DropFunctionOp(_FunctionOp):
    def reverse(self) -> CreateFunctionOp:
        return CreateFunctionOp(self.function)


@Operations.implementation_for(CreateFunctionOp)
@Operations.implementation_for(ReplaceFunctionOp)
def _create_function(operations: Operations, operation: _FunctionOp) -> None:
    if operations.get_bind().dialect.name == "postgresql":
        for statement in operation.function.statements(replace=operation.replace):
            operations.execute(statement)


@Operations.implementation_for(DropFunctionOp)
def _drop_function(operations: Operations, operation: DropFunctionOp) -> None:
    if operations.get_bind().dialect.name == "postgresql":
        operations.execute(f"DROP FUNCTION {operation.function.signature}")


class _ViewOp(MigrateOperation):
    """An operation on one version of a view, which knows its reverse (the cookbook's
    ``ReversibleOp``)."""

    def __init__(self, view: View) -> None:
        self.view = view

    @classmethod
    def invoke_for_target(cls, operations: Operations, view: View) -> Any:
        return operations.invoke(cls(view))

    def reverse(self) -> _ViewOp:
        raise NotImplementedError


@Operations.register_operation("create_view", "invoke_for_target")
@Operations.register_operation("replace_view", "replace")
class CreateViewOp(_ViewOp):
    def reverse(self) -> DropViewOp:
        return DropViewOp(self.view)

    @classmethod
    def replace(
        cls,
        operations: Operations,
        view: View,
        *,
        replaces: str | None = None,
        replace_with: str | None = None,
    ) -> None:
        """Drop one version of a view and create another. ``replaces="0004.SYNC_HEALTH"``
        (in an upgrade) names the version ``view`` takes over from; ``replace_with`` (in a
        downgrade) names the version that takes over from ``view``."""
        if (replaces is None) == (replace_with is None):
            raise TypeError("replace_view takes exactly one of replaces= or replace_with=")
        if replaces is not None:
            old, new = _version(operations, replaces), view
        else:
            assert replace_with is not None
            old, new = view, _version(operations, replace_with)
        if old.name != new.name:
            raise ValueError(f"{old.name} cannot be replaced by {new.name}: a view keeps its name")
        operations.invoke(DropViewOp(old))
        operations.invoke(cls(new))


@Operations.register_operation("drop_view", "invoke_for_target")
class DropViewOp(_ViewOp):
    def reverse(self) -> CreateViewOp:
        return CreateViewOp(self.view)


@Operations.implementation_for(CreateViewOp)
def _create_view(operations: Operations, operation: CreateViewOp) -> None:
    view = operation.view
    bind = operations.get_bind()
    for statement in view.statements(bind.dialect.name):
        operations.execute(statement)
    if bind.dialect.name == "postgresql":
        query = (
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:name) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
    else:
        query = "SELECT name FROM pragma_table_info(:name) ORDER BY cid"
    actual = list(bind.execute(text(query), {"name": view.name}).scalars())
    if actual != list(view.columns):
        # SQLite does not roll DDL back with the migration: leave no half-made view behind.
        operations.execute(f"DROP VIEW {view.name}")
        raise ValueError(
            f"view {view.name} has the columns {actual}, but its documented columns are "
            f"{list(view.columns)}: document every column, in order"
        )


@Operations.implementation_for(DropViewOp)
def _drop_view(operations: Operations, operation: DropViewOp) -> None:
    operations.execute(f"DROP VIEW {operation.view.name}")


def migration(revision: str, operations: Operations | None = None) -> ModuleType:
    """The module of migration ``revision``, whose objects (views, functions, rules) a later
    migration reuses or a downgrade restores, so none is copied from one migration to another."""
    script = (operations or _alembic_op).get_context().script
    if script is None:
        raise RuntimeError(f"cannot look up migration {revision}: no migration scripts in this context")
    module = script.get_revision(revision).module
    assert isinstance(module, ModuleType)
    return module


def _version(operations: Operations, reference: str) -> View:
    """The view a migration defines, by ``"revision.NAME"``."""
    revision, _, name = reference.partition(".")
    view = getattr(migration(revision, operations), name, None)
    if not isinstance(view, View):
        raise LookupError(f"migration {revision} defines no view named {name}")
    return view


if TYPE_CHECKING:

    class ViewOperations(Operations):
        """Alembic's operations and those registered above, as a migration calls them."""

        def create_view(self, view: View) -> None: ...

        def drop_view(self, view: View) -> None: ...

        def replace_view(
            self, view: View, *, replaces: str | None = None, replace_with: str | None = None
        ) -> None: ...

        def create_function(self, function: Function) -> None: ...

        def drop_function(self, function: Function) -> None: ...

        def replace_function(self, function: Function) -> None: ...


# Alembic's ``op`` (a proxy for the running migration's Operations), typed with the view operations.
op = cast("ViewOperations", _alembic_op)


@contextmanager
def views_set_aside(operations: Operations) -> Iterator[None]:
    """Drop the project's views for the block, then recreate each as it was, comments included.

    The definitions are read from the database itself, so whatever version of each view is
    current comes back, without the migration naming them. Only our views (named
    ``blocklist_…``) are touched: not an extension's, nor one an analyst made beside them; a
    view of theirs that reads one of ours makes the DROP fail, loudly, before anything changed.
    They are dropped newest first and recreated oldest first; no view of ours reads another
    today, and a migration that makes one do so must check that this order still serves."""
    bind = operations.get_bind()
    statements: list[str] = []
    if bind.dialect.name == "postgresql":
        views = bind.execute(
            text(
                "SELECT c.oid, c.relname, pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class') "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'v' AND n.nspname = current_schema() "
                "AND starts_with(c.relname, :prefix) ORDER BY c.oid"
            ),
            {"prefix": PREFIX},
        ).all()
        for oid, name, definition, comment in views:
            statements.append(f"CREATE VIEW {name} AS {definition}")
            if comment is not None:
                statements.append(f"COMMENT ON VIEW {name} IS {sql_literal(comment)}")
            columns = bind.execute(
                text(
                    "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute "
                    "WHERE attrelid = :oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
                ),
                {"oid": oid},
            ).all()
            statements += [
                f"COMMENT ON COLUMN {name}.{column} IS {sql_literal(note)}"
                for column, note in columns
                if note is not None
            ]
        names = [name for _, name, _, _ in views]
    else:
        query = (
            "SELECT name, sql FROM sqlite_master WHERE type = 'view' "
            "AND substr(name, 1, length(:prefix)) = :prefix ORDER BY rowid"
        )
        rows = bind.execute(text(query), {"prefix": PREFIX}).all()
        statements = [sql for _, sql in rows]
        names = [name for name, _ in rows]
    for name in reversed(names):
        operations.execute(f"DROP VIEW {name}")
    yield
    for statement in statements:
        operations.execute(statement)
