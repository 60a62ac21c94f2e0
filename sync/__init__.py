"""kaleyra-blocklist-sync: Kaleyra blocklists swept into PostgreSQL with a truthful history.

The data's path shows in the module names: ``kaleyra`` pages (HTTP only), ``store`` stages,
diffs and applies (database only, with ``dialect`` for what PostgreSQL and SQLite do
differently), ``sweep`` joins them, ``cli`` parses arguments and calls ``sweep``.
"""

__version__ = "0.3.0"
__all__ = ["__version__"]
