"""How a setting is refused, and how a file a setting names is read.

:class:`ConfigError` is every setting's refusal, whatever set it (a flag, a variable, a line of
a file): one line that names the setting and says how to fix it. A file a setting names (a key
file, the config file, an env file, a plan) is read by :func:`read_regular_file`, bounded.
"""

from __future__ import annotations

import os

from sync.files import file_kind

__all__ = [
    "MAX_CONFIG_FILE_BYTES",
    "MAX_KEY_FILE_BYTES",
    "ConfigError",
    "as_typed",
    "quoted",
    "read_regular_file",
]

# A key is a line of at most 512 characters; a config file lists accounts. Anything larger is
# the wrong file (a log, a disk image, /dev/zero), refused before it is read into memory.
MAX_KEY_FILE_BYTES = 4 * 1024
MAX_CONFIG_FILE_BYTES = 1024 * 1024


class ConfigError(Exception):
    """A setting is missing or invalid. The message is one line that says how to fix it."""


def quoted(value: str, limit: int = 40) -> str:
    """``value`` for a one-line message: quoted, escaped (a line break stays on the line) and
    cut to ``limit`` characters, so a 400-digit or binary value cannot flood the terminal."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"


def as_typed(value: str) -> str:
    """``value`` as typed when it is short and printable, else :func:`quoted`: how a message
    shows a value the operator gave (a host, a channel, a SID)."""
    return value if value.isprintable() and len(value) <= 40 else quoted(value)


def read_regular_file(path: str, setting: str, limit: int, holding: str) -> bytes:
    """The bytes of ``path``, refused unless it is a regular file of at most ``limit`` bytes.

    Opened without blocking and judged by ``fstat`` of what was opened (a symlink, as systemd
    credentials and Kubernetes Secrets are, is judged by its target): a FIFO would otherwise
    block the read forever, and ``/dev/zero`` would be read until memory runs out. ``holding``
    names what the file should hold, for the message.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror}); check the path") from None
    except ValueError:  # a NUL byte, possible in a TOML string
        raise ConfigError(f"{setting}: {quoted(path)} is no file name; check the path") from None
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind:
            raise ConfigError(
                f"{setting}: {path} is {kind}, not a regular file; point it at a file holding {holding}"
            )
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror}); check the path") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ConfigError(
            f"{setting}: {path} is larger than {limit // 1024} KiB, too large to hold {holding}; "
            "check the path"
        )
    return data


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0 and (chunk := os.read(fd, size)):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
