"""Files the program writes for other programs to read: regular files, written whole or not at all.

A plan (``run --plan-out``), a run summary (``run --summary-json``) or the metrics textfile
(``--metrics-file``) is read by a human's next command, an orchestrator or node_exporter the
moment it is written; a half-written one would be read as a truncated document, or as the
previous run's. So each is written to a temporary file in the same directory and renamed over
the target (a rename within one file system is atomic): a reader sees the old file or the new
one, never a part, and nothing is removed before the new one is complete.

Only a regular file is ever replaced. A rename replaces whatever has the name: a symbolic link
(``/dev/stdout`` is one), a FIFO another program reads, a device node (as root, ``/dev/null``
would become a regular file for every process on the host). So what is at the path is judged
by ``lstat`` (a link itself, not its target): the commands refuse anything but a regular file
or nothing at start (:func:`what_is_at`, through ``settings.check_output_file``), and
:func:`write_atomically` looks again just before it renames, for what appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["file_kind", "what_is_at", "write_atomically"]


def file_kind(mode: int) -> str | None:
    """What a file that is not a regular file is, in words (``a FIFO (named pipe)``); None for
    a regular file."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    if stat.S_ISREG(mode):
        return None
    return next((name for is_kind, name in kinds if is_kind(mode)), "not a regular file")


def what_is_at(path: str | Path) -> str | None:
    """What is at ``path`` if it is something a write must not replace (a symbolic link, a
    FIFO, a device, a directory, a socket), in words; None for a regular file or nothing."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return file_kind(mode)


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in its directory and a rename.
    Raises ``OSError`` with nothing left behind (the temporary file is removed), and with
    what was at ``path`` untouched: also when that is no regular file (its ``strerror`` says
    what it is)."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from an orchestrator's other user
        kind = what_is_at(target)
        if kind is not None:
            raise OSError(errno.EEXIST, f"it is {kind}, not a regular file; nothing was replaced")
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
