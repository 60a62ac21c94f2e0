"""Kaleyra's Get Blocklist API, over HTTP only: this package knows nothing of the database.

Files named for their roles, as dlt's ``rest_client`` keeps them:

- :mod:`~sync.kaleyra.client`: :class:`KaleyraClient`, which pages a channel's blocklist and
  checks numbers, planning the requests and judging the pages as a sequence;
- :mod:`~sync.kaleyra.transport`: one request, bounded in time and size, retried on its own
  within a :class:`RetryPolicy`, on daemon threads a stop is seen from at once;
- :mod:`~sync.kaleyra.pacing`: when a request may start, one pace shared by a client's threads
  (slowed by a 429, held by a Retry-After);
- :mod:`~sync.kaleyra.parsing`: what one response means, rows or an error;
- :mod:`~sync.kaleyra.errors`: every failure as a class that says what the caller must do.

What is listed in ``__all__`` is the API the rest of ``sync`` (and the tests) import, always
from here, never from the modules; the rest is private to the package.
"""

from sync.kaleyra.client import MAX_LIMIT, KaleyraClient, Page
from sync.kaleyra.errors import (
    AuthenticationError,
    BadRequestError,
    Cancelled,
    FatalAPIError,
    KaleyraError,
    LowBalanceError,
    NotAllowedError,
    PagingError,
    ProtocolError,
    RateLimitedError,
    RetryableAPIError,
    ServerError,
    TransportError,
    UnreachableError,
)
from sync.kaleyra.parsing import SUCCESS_CODE, Entry
from sync.kaleyra.transport import RetryPolicy, Stoppable

__all__ = [
    "MAX_LIMIT",
    "SUCCESS_CODE",
    "AuthenticationError",
    "BadRequestError",
    "Cancelled",
    "Entry",
    "FatalAPIError",
    "KaleyraClient",
    "KaleyraError",
    "LowBalanceError",
    "NotAllowedError",
    "Page",
    "PagingError",
    "ProtocolError",
    "RateLimitedError",
    "RetryPolicy",
    "RetryableAPIError",
    "ServerError",
    "Stoppable",
    "TransportError",
    "UnreachableError",
]
