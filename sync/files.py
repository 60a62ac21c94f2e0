"""Files the program writes for other programs to read: written whole or not at all.

A plan (``run --plan-out``) or a run summary (``run --summary-json``) is read by a human's next
command or by an orchestrator the moment the run exits; a half-written one would be read as a
truncated JSON document, or as the previous run's. So each is written to a temporary file in
the same directory and renamed over the target (a rename within one file system is atomic):
a reader sees the old file or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in its directory and a rename.
    Raises ``OSError`` with nothing left behind (the temporary file is removed)."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from an orchestrator's other user
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
