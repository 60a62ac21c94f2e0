"""``blocklist-sync``: parses arguments and settings, calls ``run_once`` and friends, sets exit codes.

No sync logic lives here: each command parses its options into typed settings, calls one
function and maps what it returns to words and an exit code. Exit codes
(docs/operators.md#exit-codes): 0 success, 1 failed, 2 usage or configuration error (including
a schema behind head), 3 held by the safety guard, 75 another run holds the lock, 130 / 143
stopped by SIGINT / SIGTERM (128 + the signal's number) when the stop cancelled a sweep or left
a channel unstarted.

- :mod:`~sync.cli.group`: the command group, ``--env-file`` and ``main()``;
- :mod:`~sync.cli.sweeps`: the job (``migrate``, ``run``, ``schedule``, ``status``, ``check``);
- :mod:`~sync.cli.history`: ``import``, ``lookup``, ``report``;
- :mod:`~sync.cli.tools`: ``grant-read``, ``grant-job``, ``simulate``, ``demo``;
- :mod:`~sync.cli.options`: click's parameter types, and options gathered into typed settings;
- :mod:`~sync.cli.common`: the store, opened and at the schema's head, and what a run starts from;
- :mod:`~sync.cli.errors`: one-line errors, worded in the flags and variables the operator set.
"""

from sync.cli.group import cli, main

__all__ = ["cli", "main"]
