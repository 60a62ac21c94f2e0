"""kaleyra-blocklist-sync: Kaleyra blocklists swept into PostgreSQL with a truthful history.

The data's path shows in the module names: ``kaleyra`` fetches (HTTP only), ``store`` saves
(database only), ``job`` joins them for one sweep, ``cli`` parses arguments and calls ``job``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
