"""Where the removal checks (:func:`sync.proof.confirm_removals`) meet the store: the sweep's
comparison, read and narrowed one transaction at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sync.store import Comparison, LockedChannel

__all__ = ["InTransactions"]


class InTransactions:
    """The comparison as the removal checks ask it (:class:`sync.proof.Candidates`), each
    read and each verdict a transaction of its own, so that none is open while Kaleyra is
    asked about what was read."""

    def __init__(self, session: LockedChannel, comparison: Comparison) -> None:
        self._session, self._comparison = session, comparison

    def removal_candidates(self, batch: int) -> Iterator[list[str]]:
        pages = self._comparison.removal_candidates(batch)
        while True:
            with self._session.transaction():
                page = next(pages, None)
            if page is None:
                return
            yield page

    def listed_sample(self, size: int) -> list[str]:
        with self._session.transaction():
            return self._comparison.listed_sample(size)

    def newest_listed(self, size: int) -> list[str]:
        with self._session.transaction():
            return self._comparison.newest_listed(size)

    def keep(self, present: Iterable[str]) -> None:
        with self._session.transaction():
            self._comparison.keep(present)

    def unconfirm(self, unproven: Iterable[str]) -> None:
        with self._session.transaction():
            self._comparison.unconfirm(unproven)
