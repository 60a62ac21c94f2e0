"""Kaleyra API failures, grouped by what the caller must do about them.

Every Kaleyra response code from the vendor's Get Blocklist page, and every plain HTTP failure,
is mapped to a class in one table (``_BY_CODE`` / ``_by_status``), so the job decides from the
class — retry, give up on this channel, stop everything — and never from message strings.

- :class:`FatalAPIError`: retrying cannot help (wrong credentials, not allowed, bad request,
  low balance). The operator has to act. ``account_wide`` says for whom: the whole account
  (credentials, balance, an unreachable host: its other channels are skipped) or only this
  channel (a WhatsApp-only refusal, a bad request for one channel: the others are swept).
- :class:`RetryableAPIError`: the same request may succeed later (429, 5xx, WA500, CNT195,
  connection errors, timeouts). The client retries one page request, boundedly.
- :class:`ProtocolError`: the answer is not a listing we can trust (not JSON, wrong shape, an
  unexpected code, the same page twice). Never retried, never read as data.

No message built here contains the API key: messages are made from the response code, the
vendor's message, the channel and the offset only, and the code and message are vendor text
(:mod:`sync.vendor_text`): redacted before they are cut, so a server that echoes the key never
leaves a piece of it behind, escaped and bounded. Nor does any message name a flag or a
variable: what the operator should change is the CLI's to say, from the class.

The classes are the package's public API (re-exported by :mod:`sync.kaleyra`); the mappers
below them (:func:`error_for_response`, :func:`transport_error`, :func:`unexpected_answer`) are
what the parser and the transport call, and nothing outside the package needs them.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import requests

from sync.vendor_text import vendor_text


class KaleyraError(Exception):
    """Root of every error raised by the Kaleyra client."""

    # Every channel of the account would fail the same way: skip the account's other channels.
    account_wide = False
    # Set by the client on retryable errors: which attempt failed, out of how many allowed.
    attempt: int | None = None
    attempts: int | None = None

    def __init__(
        self,
        reason: str,
        *,
        channel: str | None = None,
        offset: int | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        self.reason = reason
        self.channel = channel
        self.offset = offset
        self.status = status
        self.code = code
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.channel is not None:
            where.append(f"channel {self.channel}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        place = f" ({', '.join(where)})" if where else ""
        return f"{self.reason}{place}"


class FatalAPIError(KaleyraError):
    """Retrying cannot help; an operator must change something first. Only for this channel,
    unless the subclass says the whole account is unusable (``account_wide``)."""


class AuthenticationError(FatalAPIError):
    """Wrong SID or key: every channel of the account fails the same way."""

    account_wide = True


class NotAllowedError(FatalAPIError):
    """Refused for this channel (a WhatsApp-only refusal, WA401 / WA-401): the account's other
    channels may well work, so they are still swept."""


class BadRequestError(FatalAPIError, ValueError):  # a ValueError too: a bad argument, as Python sees it
    """The request for this channel was rejected as malformed."""


class LowBalanceError(FatalAPIError):
    """The account's balance is too low: every channel of the account fails the same way."""

    account_wide = True


class RetryableAPIError(KaleyraError):
    """The same request may succeed later; retried with backoff, boundedly."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        channel: str | None = None,
        offset: int | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(reason, channel=channel, offset=offset, status=status, code=code)


class RateLimitedError(RetryableAPIError):
    pass


class ServerError(RetryableAPIError):
    pass


class TransportError(RetryableAPIError):
    pass


class UnreachableError(TransportError):
    """No connection to the host at all (refused, name not resolved, TLS, connect timeout):
    the account's other channels use the same host, so they are skipped, not tried."""

    account_wide = True


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps: requests wraps urllib3, which wraps the socket error."""
    found: list[BaseException] = []
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or any(item is f for f in found) or len(found) > 20:
            continue
        found.append(item)
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return found


def transport_error(
    exc: requests.RequestException,
    *,
    host: str,
    connect_timeout: float,
    read_timeout: float,
    channel: str | None,
    offset: int | None,
) -> TransportError:
    """The error a failed request stands for, naming the host and the cause an operator can
    act on: connection refused, name not resolved, TLS, a timeout or a dropped connection."""
    causes = _causes(exc)

    def caused_by(*types: type[BaseException]) -> BaseException | None:
        return next((c for c in causes if isinstance(c, types)), None)

    where: dict[str, Any] = {"channel": channel, "offset": offset}
    if isinstance(exc, requests.ConnectTimeout):
        return UnreachableError(
            f"cannot connect to {host}: no answer within {connect_timeout:g}s (connect timeout)", **where
        )
    if isinstance(exc, requests.Timeout):
        return TransportError(f"{host} did not answer within {read_timeout:g}s (read timeout)", **where)
    if (found := caused_by(socket.gaierror)) is not None or any(
        type(c).__name__ == "NameResolutionError" for c in causes
    ):
        detail = f" ({found.strerror})" if isinstance(found, OSError) and found.strerror else ""
        return UnreachableError(f"cannot resolve {host}: name not resolved{detail} (DNS)", **where)
    tls = caused_by(ssl.SSLError)
    if isinstance(exc, requests.exceptions.SSLError) or tls is not None:
        detail = getattr(tls, "reason", None) or "handshake failed"
        return UnreachableError(f"TLS with {host} failed ({detail})", **where)
    if caused_by(ConnectionRefusedError) is not None:
        return UnreachableError(f"cannot connect to {host}: connection refused", **where)
    if any(type(c).__name__ == "NewConnectionError" for c in causes):  # no route, unreachable
        found = caused_by(OSError)
        reason = getattr(found, "strerror", None) or "no connection"
        return UnreachableError(f"cannot connect to {host}: {reason}", **where)
    if isinstance(exc, requests.ConnectionError):
        return TransportError(
            f"the connection to {host} was dropped before an answer "
            f"({type(caused_by(OSError) or exc).__name__})",
            **where,
        )
    return TransportError(f"the request to {host} failed ({type(exc).__name__})", **where)


class ProtocolError(KaleyraError):
    """The response is not a listing we can trust; nothing from the sweep is applied."""


class Cancelled(KaleyraError):
    """The caller asked the client to stop (SIGTERM); the request was not made."""


class PagingError(ProtocolError):
    """The server's paging cannot be trusted for a full sweep (offset ignored, no end)."""


# The vendor's codes (its Get Blocklist page and our API notes) -> the class that says what to do.
_BY_CODE: dict[str, type[KaleyraError]] = {
    "RBC001": AuthenticationError,  # Incorrect SID or API key
    "WA401": NotAllowedError,  # phone number not present / not of this account
    "WA-401": NotAllowedError,  # API not available for customer, or wrong WA API version
    "WA400": BadRequestError,  # incorrect payload
    "E110": LowBalanceError,  # low balance
    "WA500": ServerError,  # internal error: vendor advises retrying with growing waits
    "CNT195": ServerError,  # unable to fetch the blocklisted number
}


# A code is a few characters (RBC001, WA-401); a message a sentence. Anything longer is cut.
_CODE_CHARS = 40
_MESSAGE_CHARS = 200


def _by_status(status: int) -> type[KaleyraError] | None:
    if status == 429:
        return RateLimitedError
    if status >= 500 or status == 408:  # 408: the server gave up waiting for us; try again
        return ServerError
    if status == 401:
        return AuthenticationError
    if status == 403:
        return NotAllowedError
    if 400 <= status < 500:
        return BadRequestError
    return None


def error_for_response(
    status: int,
    code: str | None,
    message: str | None,
    *,
    channel: str | None,
    offset: int | None,
    retry_after: float | None = None,
) -> KaleyraError | None:
    """The error a response stands for, or None when status and code say nothing is wrong.

    A known Kaleyra code wins over the HTTP status (a WA500 body is retryable whatever the
    status line says); an unknown code on a failing status falls back to the status.
    """
    cls = _BY_CODE.get(code or "") or _by_status(status)
    if cls is None:
        return None
    shown_code, said = _answered(status, code, message)
    where: dict[str, Any] = {"channel": channel, "offset": offset, "status": status, "code": shown_code}
    if issubclass(cls, RetryableAPIError):
        return cls(f"Kaleyra answered {said}", retry_after=retry_after, **where)
    return cls(f"Kaleyra answered {said}", **where)


def unexpected_answer(
    status: int, code: str | None, message: str | None, *, expected: str, channel: str, offset: int | None
) -> ProtocolError:
    """A response that is no error and no listing either (say, a 202 WA202, or a 200 with an
    unknown code): never read as data."""
    shown_code, said = _answered(status, code or "no code", message)
    return ProtocolError(
        f"expected {expected}, got {said}",
        channel=channel,
        offset=offset,
        status=status,
        code=shown_code if code else None,
    )


def _answered(status: int, code: str | None, message: str | None) -> tuple[str | None, str]:
    """The vendor's code as it may be shown, and ``HTTP <status> <code> '<message>'``: the one
    place where the code and message of a response enter our text, as vendor text."""
    shown_code = vendor_text(code, _CODE_CHARS) if code else None
    said = f"HTTP {status}"
    if shown_code:
        said += f" {shown_code}"
    if message:
        said += f" '{vendor_text(message, _MESSAGE_CHARS)}'"
    return shown_code, said
