"""Benchmark: a blocklist of N entries swept end to end, printed as one JSON object.

    .venv/bin/python tests/bench/bench_sync.py --entries 1000000

Not part of the test suite (pytest does not collect it). It starts the simulator in its own
process (so the sweeping process is measured alone), creates a PostgreSQL database
``kbs_bench_<random>`` on the local server (dropped at the end), and runs each sweep as
``blocklist-sync run`` in a child process, the way cron would, reading its peak RSS as the
child itself reads it at exit (``tests/peak_memory.py``: the kernel's ``wait4`` figure would
include this process's own peak) and its step timings from its JSON log line. Figures:

Each sweep's figures carry its profile: ``statements``, the seconds of each of the store's
statements (the log line's ``statement_seconds``: the load's end, the comparison, each apply
step, the commit, the run row, ``ANALYZE``), and ``fetch_wait_seconds``, the part of the fetch
the sweep spent waiting for pages (the rest is its own work on the rows: counting, staging).

1. initial sweep: seconds, pages per second, peak RSS of the sweeping process;
2. after 1% churn (0.5% added, 0.5% removed): seconds, and seconds verifying removals;
3. no-change sweep: seconds, and rows written to blocklist_periods and blocklist_events;
4. diff-and-apply seconds beside a plain COPY of the same N rows into an empty unlogged
   table (the floor for any diff), and their ratio;
5. fetch seconds beside the simulator's own serving rate, measured by a bare client loop at
   the same concurrency, and their ratio; the whole first sweep beside that bare fetch of its
   pages; the client's parsing of every page on one thread;
6. latency-bound: a no-change sweep of ``--latency-entries`` (100k) against a simulator that
   answers every request after ``--latency`` (100 ms), at ``--latency-concurrency`` (8), beside
   its ideal (requests x latency / concurrency) — what the real API's round trips allow;
7. the questions people ask (README queries, ``lookup`` of one number, the views filtered to
   the last 90 days) on a year of synthetic history for another 1M-entry channel in the same
   database (``history.py``; ``--no-history`` skips it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from multiprocessing.process import BaseProcess
from pathlib import Path

import psycopg
import requests

from sync.exports import Reading, source_of
from sync.kaleyra.parsing import _parse_listing
from sync.simulator import Simulator
from tests.bench import history

REPO = Path(__file__).resolve().parents[2]
SID, KEY = "HXBENCH0000001", "bench-key-000000000000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(port: int, entries: int, latency: float = 0.0) -> None:
    Simulator(numbers=entries, sid=SID, api_key=KEY, channels=("sms",), latency=latency).serve_forever(
        port=port
    )


def start_simulator(entries: int, latency: float = 0.0) -> tuple[BaseProcess, str]:
    port = free_port()
    process = multiprocessing.get_context("fork").Process(
        target=serve, args=(port, entries, latency), daemon=True
    )
    process.start()
    return process, f"http://127.0.0.1:{port}/v1"


def wait_until_up(base_url: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            requests.get(
                f"{base_url}/{SID}/contacts/blocklisted",
                headers={"api-key": KEY},
                params={"channel": "sms", "limit": "1"},
                timeout=2,
            )
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit("the simulator did not start")


def sweep(env: dict[str, str], concurrency: int) -> dict[str, float]:
    """One ``blocklist-sync run`` as a child process: wall seconds, peak RSS, its log fields
    (all numbers: seconds, MiB, counts)."""
    started = time.monotonic()
    peak_file = Path(f"/tmp/kbs-bench-peak-{uuid.uuid4().hex}")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "peak_memory.py"),
            str(peak_file),
            "run",
            "--channel",
            "sms",
            "--log-format",
            "json",
            "--concurrency",
            str(concurrency),
            "--force",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr_lines: list[str] = []
    reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr or []))
    reader.start()
    proc.wait()
    seconds = time.monotonic() - started
    reader.join()
    peak_kib = int(peak_file.read_text())
    peak_file.unlink()
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({proc.returncode}):\n{''.join(stderr_lines)[-2000:]}")
    done = next(
        json.loads(line) for line in stderr_lines if line.startswith("{") and '"sweep succeeded' in line
    )
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_kib / 1024, 1),
        "sweep_seconds": done["seconds"],
        **{
            k: done[k]
            for k in (
                "pages",
                "entries",
                "added",
                "removed",
                "fetch_seconds",
                "fetch_wait_seconds",
                "diff_seconds",
                "verify_seconds",
                "apply_seconds",
            )
            if k in done
        },
        # Each of the store's statements, by name (sync/store/timings.py), largest first.
        "statements": statements(done.get("statement_seconds", "")),
    }


def statements(field: str) -> dict[str, float]:
    """A log line's ``statement_seconds`` (``name=seconds ...``), largest first."""
    pairs = (pair.split("=") for pair in field.split())
    return dict(sorted(((name, float(seconds)) for name, seconds in pairs), key=lambda kv: -kv[1]))


def churn(base_url: str, entries: int) -> None:
    """0.5% of the list removed and 0.5% added, through the Change Blocklist API."""
    count = max(entries // 200, 1)
    session = requests.Session()
    session.headers["api-key"] = KEY
    url = f"{base_url}/{SID}/contacts/blocklisted"
    pages = -(-count // 100)
    removed: list[str] = []
    for i in range(pages):  # whole pages spread over the list
        offset = i * (entries // pages)
        page = session.get(
            url, params={"channel": "sms", "limit": "100", "offset": str(offset)}, timeout=10
        ).json()["data"]
        removed += [row["mobile"] for row in page]
    removed = removed[:count]
    added = [f"+1555{i:07d}" for i in range(count)]
    for status, numbers in ((0, removed), (1, added)):
        for start in range(0, len(numbers), 100):
            body = {
                "channel": "sms",
                "contacts": [{"blocklist_status": status, "numbers": numbers[start : start + 100]}],
            }
            session.post(url, json=body, timeout=30).raise_for_status()


def import_seconds(dsn: str, entries: int, directory: Path) -> dict[str, float]:
    """A ``blocklist-sync import`` of one 1M-row CSV export into an empty channel (another
    account in the same database), as a child process; and the same file only read and
    canonicalised, without a database, to set apart what the database did."""
    path = directory / "blocklist-sms-2026-01-01T0000Z.csv"
    with path.open("w") as out:
        out.write("mobile\n")
        out.writelines(f"+91{6000000000 + i}\n" for i in range(entries))
    started = time.monotonic()
    rows = sum(1 for _ in Reading(source_of(str(path)), "sms").rows_of())
    reading = time.monotonic() - started
    env = {**os.environ, "DATABASE_URL": dsn}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sync", "import", "--account", "HXIMPORT0001", "--channel", "sms", str(path)],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"import failed ({done.returncode}): {done.stderr[-2000:]}")
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "reading_seconds": round(reading, 2),
        "database_seconds": round(seconds - reading, 2),
    }


def written_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        found = conn.execute("""
            SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables
            WHERE relname IN ('blocklist_periods', 'blocklist_events')""").fetchone()
    assert found is not None and isinstance(found[0], int)
    return found[0]


def bare_copy_seconds(dsn: str, entries: int) -> float:
    """The floor: COPY the same number of rows into an empty unlogged table."""
    rows = [(f"+91{6_000_000_000 + i}", "1") for i in range(entries)]
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE UNLOGGED TABLE bench_copy (mobile text, channel_type text)")
        started = time.monotonic()
        with conn.cursor().copy("COPY bench_copy (mobile, channel_type) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        seconds = time.monotonic() - started
        conn.execute("DROP TABLE bench_copy")
    return seconds


def bare_serving_rate(base_url: str, pages: int, concurrency: int) -> float:
    """Pages per second the simulator serves to a bare loop: GET and read, nothing else."""
    url = f"{base_url}/{SID}/contacts/blocklisted"
    offsets = iter(range(0, pages * 100, 100))
    lock = threading.Lock()

    def worker() -> None:
        session = requests.Session()
        session.headers["api-key"] = KEY
        while True:
            with lock:
                offset = next(offsets, None)
            if offset is None:
                return
            session.get(
                url, params={"channel": "sms", "limit": "100", "offset": str(offset)}, timeout=30
            ).raise_for_status()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return pages / (time.monotonic() - started)


def parse_seconds(base_url: str, pages: int, sample: int = 200) -> float:
    """The client's own work on a whole listing of ``pages`` pages, on one thread: ``sample``
    pages fetched, then each read as a sweep reads it (JSON, canonical numbers, vendor text;
    ``sync.kaleyra.parsing``), timed and scaled to ``pages``."""
    url = f"{base_url}/{SID}/contacts/blocklisted"
    session = requests.Session()
    session.headers["api-key"] = KEY
    stride = max(pages // sample, 1) * 100
    answers = [
        session.get(url, params={"channel": "sms", "limit": "100", "offset": str(i * stride)}, timeout=30)
        for i in range(min(sample, pages))
    ]
    started = time.perf_counter()
    for answer in answers:
        _parse_listing(answer, answer.content, "sms", 0)
    return (time.perf_counter() - started) * pages / len(answers)


def latency_bound(pg: str, entries: int, latency: float, concurrency: int) -> dict[str, object]:
    """A first and a no-change sweep against a simulator ``latency`` seconds away, in a
    database of their own; the no-change sweep's time beside its ideal, every request
    waiting ``latency`` and ``concurrency`` of them in flight."""
    simulator, base_url = start_simulator(entries, latency)
    name = f"kbs_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(f"{pg}/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        wait_until_up(base_url)
        env = sweep_env(base_url, f"{pg}/{name}")
        first = sweep(env, concurrency)
        no_change = sweep(env, concurrency)
    finally:
        simulator.terminate()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    requests_made = -(-entries // 100)
    ideal = requests_made * latency / concurrency
    return {
        "entries": entries,
        "latency_seconds": latency,
        "concurrency": concurrency,
        "ideal_seconds": round(ideal, 2),
        "first_sweep_seconds": first["sweep_seconds"],
        "no_change_sweep": no_change,
        # The sweep's own time (lock to commit), as it logs it; the process's wall time adds
        # the interpreter's start-up, which no concurrency hides.
        "ratio_to_ideal": round(ideal / float(no_change["sweep_seconds"]), 2),
        "ratio_to_ideal_process": round(ideal / float(no_change["seconds"]), 2),
    }


def sweep_env(base_url: str, dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KALEYRA_", "BLOCKLIST_"))}
    env.update(KALEYRA_SID=SID, KALEYRA_API_KEY=KEY, KALEYRA_BASE_URL=base_url, DATABASE_URL=dsn)
    subprocess.run(
        [sys.executable, "-m", "sync", "migrate"], env=env, cwd=REPO, check=True, capture_output=True
    )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--no-history", action="store_true", help="skip the year of synthetic history and its query timings"
    )
    parser.add_argument(
        "--initial-only",
        action="store_true",
        help="only the first sweep (its time and peak RSS), for 10M entries",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.1,
        help="seconds per request in the latency-bound sweep (0 skips it)",
    )
    parser.add_argument("--latency-entries", type=int, default=100_000)
    parser.add_argument("--latency-concurrency", type=int, default=8)
    parser.add_argument("--pg", default=os.environ.get("KBS_TEST_PG", "postgresql://postgres@127.0.0.1:5432"))
    args = parser.parse_args()

    # First, while this process is small: Linux carries a process's peak RSS across exec, so
    # a sweep started after the history below was built would report this process's peak.
    latency = (
        None
        if not args.latency or args.initial_only
        else latency_bound(args.pg, args.latency_entries, args.latency, args.latency_concurrency)
    )
    simulator, base_url = start_simulator(args.entries)
    name = f"kbs_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(f"{args.pg}/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"{args.pg}/{name}"
    try:
        wait_until_up(base_url)
        env = sweep_env(base_url, dsn)
        initial = sweep(env, args.concurrency)
        initial["pages_per_second"] = round(int(initial["pages"]) / float(initial["seconds"]), 1)
        if args.initial_only:
            print(json.dumps({"entries": args.entries, "initial_sweep": initial}, indent=2))
            return
        churn(base_url, args.entries)
        after_churn = sweep(env, args.concurrency)
        time.sleep(1.5)  # let the statistics collector catch up before counting writes
        before = written_rows(dsn)
        no_change = sweep(env, args.concurrency)
        time.sleep(1.5)
        no_change["rows_written"] = written_rows(dsn) - before
        copy_seconds = bare_copy_seconds(dsn, args.entries)
        with tempfile.TemporaryDirectory() as directory:
            imported = import_seconds(dsn, args.entries, Path(directory))
        bare_rate = bare_serving_rate(base_url, int(initial["pages"]), args.concurrency)
        parsing = parse_seconds(base_url, int(initial["pages"]))
    finally:
        simulator.terminate()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    questions = None if args.no_history else history.measure(args.pg)

    def diff_apply(s: dict[str, float]) -> float:
        """The database work of a sweep: diff, verify (the removal checks' requests are few
        and instant here) and apply."""
        return sum(float(s.get(f"{k}_seconds", 0)) for k in ("diff", "verify", "apply"))

    fetch_rate = int(initial["pages"]) / float(initial["fetch_seconds"])
    print(
        json.dumps(
            {
                "entries": args.entries,
                "concurrency": args.concurrency,
                "machine": (
                    f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
                ),
                "initial_sweep": initial,
                "churn_sweep": after_churn,
                "no_change_sweep": no_change,
                "database_work": {  # diff + verify + apply
                    "bare_copy_seconds": round(copy_seconds, 2),
                    "initial_seconds": round(diff_apply(initial), 2),
                    "initial_ratio_to_copy": round(diff_apply(initial) / copy_seconds, 2),
                    "churn_seconds": round(diff_apply(after_churn), 2),
                    "churn_ratio_to_copy": round(diff_apply(after_churn) / copy_seconds, 2),
                    "no_change_seconds": round(diff_apply(no_change), 2),
                    "no_change_ratio_to_copy": round(diff_apply(no_change) / copy_seconds, 2),
                },
                # Target: the import's database work within 1.5x of the first load's (issue 20);
                # its seconds include starting the interpreter (about half a second).
                "import_of_an_export": {
                    **imported,
                    "ratio_to_initial_database_work": round(
                        imported["database_seconds"] / diff_apply(initial), 2
                    ),
                },
                "fetch": {
                    "sweep_pages_per_second": round(fetch_rate, 1),
                    "bare_client_pages_per_second": round(bare_rate, 1),
                    "ratio": round(fetch_rate / bare_rate, 2),
                    # Target: the whole first sweep within 1.3x a bare fetch of its pages.
                    "bare_fetch_seconds": round(int(initial["pages"]) / bare_rate, 2),
                    "first_sweep_ratio_to_bare_fetch": round(
                        float(initial["sweep_seconds"]) * bare_rate / int(initial["pages"]), 2
                    ),
                    # The client's own work, one thread: parsing every page, and (the floor's
                    # COPY above) staging every row.
                    "parse_seconds_one_thread": round(parsing, 2),
                },
                "latency_bound": latency,
                "questions_on_a_year_of_history": questions,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
