"""SQL written as text: how a Python string becomes a SQL string literal, in one place.

Statements take their values as bound parameters. Only what cannot be bound is written into
SQL text, and only through here: a CHECK constraint's list of allowed words and the comments on
the BI views (``COMMENT ON`` takes no parameter). Both are our own words, but an apostrophe in
one must not end the literal.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["sql_in", "sql_literal"]


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal: in single quotes, each quote doubled."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, words: Iterable[str]) -> str:
    """``column IN ('a', 'b')`` for a CHECK constraint: ``words`` (an enum's values), in order."""
    return f"{column} IN ({', '.join(sql_literal(str(w)) for w in words)})"
