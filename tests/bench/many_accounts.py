"""Benchmark: one database serving many accounts; each sweep's database work beside the same
sweep into an empty database, printed as one JSON object.

    .venv/bin/python tests/bench/many_accounts.py                 # 300 pairs of 10k numbers
    .venv/bin/python tests/bench/many_accounts.py --pairs 30      # a quick look

Issue 28's target: with 300 (account, channel) pairs of 10,000 numbers each in one database,
each sweep's database work, p50 and p99, within 1.5x of the same sweep into an empty database.
Not part of the test suite. It drives the store as a sweep does (``stage``, ``diff``,
``apply``, the statistics refresh; each in its own transaction), without HTTP: the figures are
the database's work alone, from the end of the load to the commit (the load itself streams
while a sweep pages, and is the fetch's). Each pair lists 10,000 numbers drawn at random from
one shared range, so accounts share some numbers and interleave in every index, as real ones
would. Two databases ``kbs_bench_<random>``, dropped at the end:

1. near-empty: ``--samples`` pairs, each swept three times (first load, 1% churn, no change)
   into a database holding only the pairs before it (at most ``samples`` x 10k numbers);
2. full: ``--pairs`` pairs first loaded (each load timed, so the cost can be read against what
   the database already holds), then ``--samples`` more pairs swept the same three times.

For each kind of sweep: p50 and p99 (the largest, with 20 samples) in both databases and
their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
import uuid
from collections.abc import Iterator

import psycopg

from sync.database import make_engine, upgrade
from sync.store import Store
from sync.vocabulary import Trigger

KINDS = ("first load", "churn", "no change")


def listing(seed: int, numbers: int) -> list[str]:
    """``numbers`` distinct numbers of one pair, from a range all pairs share."""
    draw = random.Random(seed)
    found: set[str] = set()
    while len(found) < numbers:
        found.add(f"+91{draw.randrange(6_000_000_000, 6_100_000_000)}")
    return sorted(found, key=lambda _: draw.random())  # the API's order is not the numbers'


def churned(numbers: list[str], seed: int) -> list[str]:
    """0.5% removed and 0.5% added."""
    k = max(len(numbers) // 200, 1)
    return numbers[k:] + [f"+1555{seed:03d}{i:04d}" for i in range(k)]


def sweep(store: Store, account: str, rows: list[str]) -> float:
    """One sweep of ``account``'s sms channel listing ``rows``: its database work, seconds."""
    with store.lock_channel(account, "sms") as session:
        with session.transaction():
            run_id = session.start_run(Trigger.MANUAL)
        with session.transaction():
            staged = session.stage((mobile, "1") for mobile in rows)
        started = time.perf_counter()
        with session.transaction():
            comparison = staged.diff()
            diff = comparison.counts()
        with session.transaction():
            comparison.apply(run_id, pages=-(-len(rows) // 100), diff=diff, channel_types=["1"])
        with session.upkeep("ANALYZE failed"):
            comparison.refresh_statistics(diff)
        return time.perf_counter() - started


def three_sweeps(store: Store, account: str, seed: int, numbers: int) -> Iterator[tuple[str, float]]:
    first = listing(seed, numbers)
    later = churned(first, seed)
    yield "first load", sweep(store, account, first)
    yield "churn", sweep(store, account, later)
    yield "no change", sweep(store, account, later)


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 4), "p99": round(p99, 4), "n": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--numbers", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--pg", default=os.environ.get("KBS_TEST_PG", "postgresql://postgres@127.0.0.1:5432"))
    args = parser.parse_args()

    admin = psycopg.connect(f"{args.pg}/postgres", autocommit=True)
    results: dict[str, dict[str, list[float]]] = {}
    loads: list[float] = []
    load_seconds = 0.0
    for label in ("near_empty", "full"):
        name = f"kbs_bench_{uuid.uuid4().hex[:10]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        engine = make_engine(f"{args.pg}/{name}")
        try:
            upgrade(engine)
            store = Store(engine)
            if label == "full":
                started = time.monotonic()
                for i in range(args.pairs):
                    loads.append(sweep(store, f"HXFULL{i:06d}", listing(1000 + i, args.numbers)))
                load_seconds = time.monotonic() - started
            timings: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for i in range(args.samples):
                for kind, seconds in three_sweeps(store, f"HXSAMPLE{i:04d}", 5000 + i, args.numbers):
                    timings[kind].append(seconds)
            results[label] = timings
        finally:
            engine.dispose()
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()

    tenth = max(len(loads) // 10, 1)
    report: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": os.getloadavg(),
        "pairs": args.pairs,
        "numbers_per_pair": args.numbers,
        "samples": args.samples,
        "filling_the_full_database_seconds": round(load_seconds, 1),
        # The first loads that filled it: the first tenth (a nearly empty database) and the last.
        "first_loads_while_filling": {
            "first_tenth": percentiles(loads[:tenth]),
            "last_tenth": percentiles(loads[-tenth:]),
        },
    }
    for kind in KINDS:
        empty, full = percentiles(results["near_empty"][kind]), percentiles(results["full"][kind])
        report[kind] = {
            "near_empty": empty,
            "full": full,
            "p50_ratio": round(full["p50"] / empty["p50"], 2),
            "p99_ratio": round(full["p99"] / empty["p99"], 2),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
