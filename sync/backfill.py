"""Backfill from dated exports: history from before the first sweep, the one place files meet the store.

Kaleyra offers no dated view of a blocklist, so the only evidence of a channel's past is what
teams kept: exports, each a full listing of one channel at a known time T. ``blocklist-sync
import`` turns them into history exactly as sweeps at those times would have written it, by
the store's own machinery (staging, the diff in SQL, one apply), with T standing for the
database's clock — the one exception to "every stored time is the database's", which each
run row says (trigger ``backfill``; the file's name, size and SHA-256).

Where a snapshot may go, and why:

- **An empty channel**, or **after the last import** while no sweep has run: a sweep at T
  (:meth:`~sync.store.Staged.diff`, then :meth:`~sync.store.Comparison.apply` at T). The
  windows between snapshots are the sweeps' windows; the first is the initial load.
- **Before the channel's earliest run** (the usual case: the tool was installed last week, the
  exports go back a year): :meth:`~sync.store.Staged.before` rewrites only what the snapshot
  proves against that run's listing (:class:`~sync.store.Rebase`). Several such snapshots are
  placed newest first, each before the one after it.
- **Anywhere else** — in the future, newer than the channel's first sweep, between two runs —
  is refused: a snapshot there would contradict what sweeps recorded, and rewriting the middle
  of a proven history is not something an export can justify.

An export is a listing that cannot move while it is read, so every absence it shows is proven:
no removal check, and its listing is complete. A sweep's listing is not: offset paging can skip
a row unseen, so a number an older export lists and the earliest sweep did not show is kept
open, unconfirmed since the export, for the next sweep's removal check to prove gone
(:class:`~sync.store.RebaseCounts`). The guard holds what it holds for a sweep (an
empty export over a channel with numbers, a share removed over the limit, another channel's
``channel_type`` codes), judged on the change the snapshot makes; ``--force`` applies it.

All snapshots of one import are one transaction: a bad file among them (unreadable, not a
listing) applies none, and ``--dry-run`` applies every one in order, to count exactly what each
changes after the ones before it, then rolls back.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from sync.exports import ExportError, ExportFile, ListingOfOtherChannels, Reading, source_of
from sync.guard import GuardLimits, removal_hold
from sync.proof import channel_type_hold, empty_listing_hold
from sync.review import Review
from sync.store import (
    Comparison,
    FirstRun,
    LockedChannel,
    LockHeld,
    RebaseCounts,
    Source,
    Staged,
    Store,
)
from sync.timetext import instant_text
from sync.vendor_text import vendor_text
from sync.vocabulary import ExitCode

__all__ = [
    "EARLIEST_EXPORT",
    "Held",
    "ImportOptions",
    "ImportResult",
    "NotThisChannel",
    "Refused",
    "Snapshot",
    "TooEarly",
    "import_snapshots",
]

log = logging.getLogger("sync.backfill")

# The earliest time an export may be said to show (``import --earliest``): no Kaleyra blocklist
# is older, and a typo (0026 for 2026) would otherwise write two thousand years of history.
EARLIEST_EXPORT = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class Refused(Exception):
    """Bad input (a file, a time): one line, exit 2, nothing applied."""

    exit_code = ExitCode.USAGE


class TooEarly(Refused):
    """A snapshot said to show the channel at ``at``, before ``earliest``, the earliest time an
    export may show: a mistyped year, most likely. The CLI names the setting of ``earliest``."""

    def __init__(self, name: str, at: dt.datetime, earliest: dt.datetime) -> None:
        said = (
            f"{name}: {instant_text(at)} is before {instant_text(earliest)}, "
            "the earliest time an export may show"
        )
        super().__init__(said)
        self.name, self.at, self.earliest = name, at, earliest


class NotThisChannel(Refused):
    """A file whose channel column gives every row to other channels (``found``): no listing of
    the channel imported. The CLI names the channel to import it as, as the operator gives it."""

    def __init__(self, found: ListingOfOtherChannels) -> None:
        super().__init__(f"{found}; nothing was applied")
        self.found = found


class Held(Exception):
    """The guard holds the snapshot of ``file`` for ``reason``: exit 3, nothing applied; a
    forced import applies it (the CLI says how)."""

    exit_code = ExitCode.HELD

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: held by the safety guard: {reason}. Nothing was applied")
        self.file, self.reason = file, reason


class Locked(Exception):
    """Another session holds the channel's lock: exit 75, nothing applied."""

    exit_code = ExitCode.LOCKED


@dataclass(frozen=True)
class Snapshot:
    """One file and the time it shows the channel at (UTC)."""

    path: str
    at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class ImportOptions:
    account_sid: str
    channel: str
    # What the operator approved (sync.review): a dry run, and --force to apply what the guard
    # would hold, as for a sweep. An import has no plan: nothing, blind, or a dry run.
    review: Review = field(default_factory=Review)
    guard: GuardLimits = field(default_factory=GuardLimits)
    earliest: dt.datetime = EARLIEST_EXPORT  # a snapshot before it is refused
    sample: int = 5  # numbers of each kind of change a dry run shows

    @property
    def dry_run(self) -> bool:
        """Every snapshot applied in order, counted, then rolled back."""
        return self.review.dry_run


@dataclass(frozen=True)
class ImportResult:
    """What one file did (or would do): the line the CLI prints, and the figures behind it."""

    snapshot: Snapshot
    line: str
    run_id: int | None = None
    added: int = 0
    removed: int = 0
    rewritten: int = 0


def import_snapshots(store: Store, snapshots: list[Snapshot], options: ImportOptions) -> list[ImportResult]:
    """Import ``snapshots`` into one account and channel, all or nothing; raises
    :class:`Refused`, :class:`Held` or :class:`Locked` with one line saying why, having applied
    nothing."""
    if len({s.at for s in snapshots}) != len(snapshots):
        raise Refused("two files are given the same time; each export is the listing at its own time")
    _check_times(snapshots, options.earliest, store.now())  # before any file is read
    files = {s: _source(s.path) for s in snapshots}  # every file readable before the lock is taken
    try:
        with store.lock_channel(options.account_sid, options.channel) as session:
            return _Import(session, options).run(snapshots, files)
    except LockHeld:
        raise Locked(
            f"another session holds the lock of {options.account_sid} {options.channel} (a sweep or "
            "an import); nothing was applied: run the import again when it is done"
        ) from None


def _check_times(snapshots: list[Snapshot], earliest: dt.datetime, now: dt.datetime) -> None:
    """Each snapshot's time lies between ``earliest`` and ``now`` (the database's clock)."""
    for snapshot in snapshots:
        name = vendor_text(os.path.basename(snapshot.path), 80)
        if snapshot.at < earliest:
            raise TooEarly(name, snapshot.at, earliest)
        if snapshot.at > now:
            raise Refused(
                f"{name}: {instant_text(snapshot.at)} is in the future "
                f"(the database's clock says {instant_text(now)}); "
                "give the time the export was taken"
            )


def _source(path: str) -> ExportFile:
    try:
        return source_of(path)
    except ExportError as exc:
        raise Refused(f"{exc}; nothing was applied") from None


class _Import:
    """One import into a locked (account, channel)."""

    def __init__(self, session: LockedChannel, options: ImportOptions) -> None:
        self.session = session
        self.options = options
        self.learned: dict[str, set[str]] = {}

    def run(self, snapshots: list[Snapshot], files: dict[Snapshot, ExportFile]) -> list[ImportResult]:
        """Where each snapshot goes, read first; then every snapshot placed in one transaction,
        committed at its end (rolled back for ``--dry-run``, and whatever raised)."""
        session = self.session
        results: list[ImportResult] = []
        todo = []
        with session.transaction():
            for snapshot in sorted(snapshots, key=lambda s: s.at):
                done = session.imported_run(files[snapshot].sha256, snapshot.at)
                if done is None:
                    todo.append(snapshot)
                else:
                    results.append(
                        ImportResult(
                            snapshot,
                            f"{files[snapshot].name}: already imported as run {done} (same SHA-256, "
                            "account, channel and time); nothing to do",
                            run_id=done,
                        )
                    )
            before, after = self._places(todo, files)
            self.learned = session.channel_types()
        with session.transaction(keep=not self.options.dry_run):
            for snapshot in sorted(before, key=lambda s: s.at, reverse=True):
                results.append(self._before(snapshot, files[snapshot]))
            for snapshot in sorted(after, key=lambda s: s.at):
                results.append(self._after(snapshot, files[snapshot]))
        return sorted(results, key=lambda r: r.snapshot.at)

    def _places(
        self, snapshots: list[Snapshot], files: dict[Snapshot, ExportFile]
    ) -> tuple[list[Snapshot], list[Snapshot]]:
        """Which snapshots go before the channel's earliest run, which after its last import;
        :class:`Refused` for any that can go neither."""
        runs = self.session.succeeded_runs()
        if not runs:
            return [], snapshots
        earliest, latest = runs[0], runs[-1]
        sweeps = [r for r in runs if not r[2]]
        before, after = [], []
        for snapshot in snapshots:
            name = files[snapshot].name
            if snapshot.at < earliest[1]:
                before.append(snapshot)
            elif sweeps:
                first_sweep = sweeps[0]
                raise Refused(
                    f"{name}: {instant_text(snapshot.at)} is not before the channel's first sweep (run "
                    f"{first_sweep[0]}, {instant_text(first_sweep[1])}); an export can only be placed before "
                    "the history sweeps recorded, never between or after sweeps"
                )
            elif snapshot.at > latest[1]:
                after.append(snapshot)
            else:
                later = next(r for r in runs if r[1] >= snapshot.at)
                raise Refused(
                    f"{name}: {instant_text(snapshot.at)} is not before the earliest import "
                    f"(run {earliest[0]}, {instant_text(earliest[1])}) nor after the latest "
                    f"(run {latest[0]}, {instant_text(latest[1])}), "
                    f"it is at or before run {later[0]} ({instant_text(later[1])}); import older exports "
                    "before newer ones, or into an empty channel all at once"
                )
        first = self.session.first_run()
        if before and first is not None and first.listing_complete is False:
            raise Refused(
                f"the channel's earliest run ({first.run_id}, {instant_text(first.started_at)}) "
                "could not show "
                "a complete listing, so it cannot prove which numbers of an older export were gone by "
                "then; nothing was applied"
            )
        return before, after

    def _read(self, file: ExportFile) -> tuple[Reading, Iterator[tuple[str, str | None]]]:
        reading = Reading(file, self.options.channel)
        return reading, reading.rows_of()

    def _stage(self, file: ExportFile) -> tuple[Reading, Staged]:
        reading, rows = self._read(file)
        try:
            staged = self.session.stage(rows)
        except ListingOfOtherChannels as exc:
            raise NotThisChannel(exc) from None
        except ExportError as exc:
            raise Refused(f"{exc}; nothing was applied") from None
        return reading, staged

    def _hold(self, reading: Reading, *reasons: str | None) -> None:
        held = next((r for r in reasons if r), None)
        if held is None:
            return
        if self.options.review.applies_held:
            log.warning("%s: forced: applying what the guard would hold: %s", reading.shown, held)
            return
        raise Held(reading.shown, held)

    def _codes(self, reading: Reading) -> str | None:
        return channel_type_hold(self.options.channel, reading.listing.codes, self.learned)

    def _learn(self, reading: Reading) -> list[str]:
        learned = reading.listing.learned()
        self.learned.setdefault(self.options.channel, set()).update(learned)
        return learned

    def _after(self, snapshot: Snapshot, file: ExportFile) -> ImportResult:
        """A sweep at the snapshot's time: the diff against the channel's entries, applied at T."""
        reading, staged = self._stage(file)
        comparison = staged.diff()
        diff = comparison.counts()
        self._hold(
            reading,
            empty_listing_hold(staged.rows, diff.current),
            removal_hold(diff.current, diff.removed, self.options.guard),
            self._codes(reading),
        )
        sample = self._sample(comparison) if self.options.dry_run else ""
        run_id = self.session.start_import(_provenance(file), snapshot.at)
        diff = replace(diff, listing_complete=True)
        comparison.apply(run_id, pages=0, diff=diff, channel_types=self._learn(reading), at=snapshot.at)
        verb = "would import" if self.options.dry_run else "imported"
        line = (
            f"{verb} {reading.shown} as run {run_id}: {self.options.account_sid} {self.options.channel} at "
            f"{instant_text(snapshot.at)}: {diff.seen} numbers, +{diff.added} -{diff.removed}"
            f"{_skipped(reading)}{sample}"
        )
        return ImportResult(snapshot, line, run_id, added=diff.added, removed=diff.removed)

    def _sample(self, comparison: Comparison) -> str:
        size = self.options.sample
        shown: dict[str, list[str]] = {"added": [], "removed": []}
        for change, mobile in comparison.changes():
            if len(shown[change]) < size:
                shown[change].append(mobile)
        return "".join(
            f"\n  e.g. {change}: {', '.join(numbers)}" for change, numbers in shown.items() if numbers
        )

    def _before(self, snapshot: Snapshot, file: ExportFile) -> ImportResult:
        """The snapshot placed before the channel's earliest run, rewriting only what it proves."""
        first = self.session.first_run()
        assert first is not None  # _places put it here because a run exists
        reading, staged = self._stage(file)
        rebase = staged.before(first)
        counts = rebase.counts()
        self._hold(
            reading,
            empty_listing_hold(counts.first_listed, counts.numbers),
            removal_hold(counts.numbers, counts.gone, self.options.guard),
            self._codes(reading),
            _relisted_hold(counts, first),
        )
        sample = ""
        if self.options.dry_run:
            kinds = {
                "continuing": "earlier start",
                "arrived": "added after the export",
                "gone": "gone before the earliest run",
                "kept": "not shown by the earliest run, kept as unconfirmed",
            }
            sample = "".join(
                f"\n  e.g. {kinds[kind]}: {', '.join(numbers)}"
                for kind, numbers in rebase.sample(self.options.sample).items()
                if numbers
            )
        run_id = self.session.start_import(_provenance(file), snapshot.at)
        rebase.apply(run_id, at=snapshot.at, counts=counts, channel_types=self._learn(reading))
        verb = "would import" if self.options.dry_run else "imported"
        line = (
            f"{verb} {reading.shown} as run {run_id}: {self.options.account_sid} {self.options.channel} at "
            f"{instant_text(snapshot.at)}, before the channel's earliest run {first.run_id} "
            f"({instant_text(first.started_at)}): {counts.numbers} numbers; {_rewrites(counts, first)}"
            f"{_skipped(reading)}{sample}"
        )
        return ImportResult(
            snapshot,
            line,
            run_id,
            added=counts.numbers,
            removed=counts.gone,
            rewritten=counts.rewritten,
        )


def _rewrites(counts: RebaseCounts, first: FirstRun) -> str:
    kept = (
        f"; {counts.kept} number(s) run {first.run_id} did not show are kept as unconfirmed "
        "until a sweep's removal check proves them gone"
        if counts.kept
        else ""
    )
    return (
        f"rewritten {counts.rewritten} stretch(es) of run {first.run_id}: {counts.continuing} start "
        f"at this export instead, {counts.arrived} were added after it (no longer initial load); "
        f"{counts.gone} number(s) were gone by run {first.run_id}{kept}"
    )


def _relisted_hold(counts: RebaseCounts, first: FirstRun) -> str | None:
    """Why numbers the export lists, which the earliest run (a sweep) did not show and a later
    sweep listed again, hold the import: only closing their stretch at that run fits the
    history, and that records a removal no sweep proved (its listing may have skipped them)."""
    if not counts.relisted:
        return None
    return (
        f"{counts.relisted} number(s) the export lists were not shown by run {first.run_id}, a sweep "
        "whose listing may have skipped them, and were listed again later, so importing would record "
        "a removal no sweep proved; check them (a dry run shows them), then force the import to "
        "record it"
    )


def _skipped(reading: Reading) -> str:
    """What the file's channel column gave to other channels, and so was no part of this listing."""
    if not reading.other_channels:
        return ""
    by_channel = ", ".join(f"{c} {n}" for c, n in sorted(reading.other_channels.items()))
    return f"; {reading.other_channels.total()} row(s) of other channels skipped ({by_channel})"


def _provenance(file: ExportFile) -> Source:
    return Source(name=file.name, size=file.size, sha256=file.sha256)
