"""Drops the test databases named on its standard input, in a process of its own.

``tests/conftest.py`` starts one per pytest worker and writes it the name of each database a
test made, as that test ends, so the drops (each waits for a checkpoint) overlap the next tests.
A process, not a thread: ``invoke`` runs the CLI in the worker's process and rewrites
``os.environ`` around it, and libpq reads the environment (``getenv``) while it connects, so a
connection opened by a thread of that process at that moment could crash it (it did: a worker
died mid-test, once in three runs).

Before each drop it reads every install's ``sync_runs.error`` in the database, and prints the
name of a database where one matches the test secrets. Input: the server URL, then the secrets'
pattern, then one database name per line until the end of input.
"""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql


def holds_a_secret(server: str, name: str, secrets: re.Pattern[str]) -> bool:
    try:
        with psycopg.connect(f"{server}/{name}") as conn:
            # Every install in the database: the one in public, and any a test put in a schema
            # of its own (BLOCKLIST_SYNC_SCHEMA); none in a database without tables.
            installs = conn.execute(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = 'sync_runs' AND c.relkind = 'r'"
            ).fetchall()
            query = sql.SQL("SELECT error FROM {}.sync_runs WHERE error IS NOT NULL")
            errors = [
                r[0] for (schema,) in installs for r in conn.execute(query.format(sql.Identifier(schema)))
            ]
    except psycopg.Error:  # a database a test left unreadable
        return False
    return any(secrets.search(error) for error in errors)


def check_and_drop(server: str, name: str, secrets: re.Pattern[str]) -> str | None:
    leaked = holds_a_secret(server, name, secrets)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return name if leaked else None


def main() -> None:
    server = sys.stdin.readline().strip()
    secrets = re.compile(sys.stdin.readline().rstrip("\n"))
    # Each as it comes (a line is read as soon as it is written); drops at once share checkpoints.
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = [
            pool.submit(check_and_drop, server, line.strip(), secrets) for line in sys.stdin if line.strip()
        ]
        leaks = [name for name in (f.result() for f in found) if name]
    print("\n".join(leaks))


if __name__ == "__main__":
    main()
