"""Real parts only: a real PostgreSQL and the simulator over real HTTP.

The PostgreSQL server at 127.0.0.1:5432 (user postgres, trust auth; override the server with
KBS_TEST_PG) gets databases named ``kbs_test_<random>``, made by these fixtures and dropped at
the end; no other database is touched. Each test gets its own simulator with its own account
SID, so tests sharing the session database never see each other's rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypedDict, Unpack

import pluggy
import psycopg
import pytest
import stamina
from click.testing import CliRunner
from sqlalchemy import Engine, text

from sync import cli as blocklist_sync
from sync import database, redaction
from sync.counters import COUNTS
from sync.guard import GuardLimits
from sync.kaleyra import KaleyraClient, RetryPolicy
from sync.review import Review
from sync.settings import Account
from sync.simulator import Simulator
from sync.store import Store
from sync.sweep import SweepOptions, SweepResult, sweep_channel
from sync.vocabulary import Trigger

PG_SERVER = os.environ.get("KBS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
# Every test database's name begins so (a test of the cleanup runs a session with its own).
DB_PREFIX = os.environ.get("KBS_TEST_DB_PREFIX", "kbs_test_")
REPO = Path(__file__).resolve().parent.parent
# The password tests put into DATABASE_URLs (trust auth ignores it), and every API key tests
# use: each must never appear in any output.
TEST_PASSWORD = "pw-Zq8!secret:42"
SECRETS = re.compile(
    "|".join(
        [
            r"key-[0-9a-f]{32}",
            "sim-key-0{25}",
            "good-key-1234",
            "bad-key-5678",
            "wrong-key-123",
            re.escape(TEST_PASSWORD),
        ]
    )
)


def documentation() -> str:
    """The README and every page of docs/, as one text: what a test that checks the docs say
    something reads, wherever the page that says it is."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(page.read_text() for page in pages)


def leaked_secret(text: str) -> str | None:
    match = SECRETS.search(text or "")
    return match.group(0) if match else None


START_POSTGRESQL = (
    "docker run -d --name kbs-test-pg -p 127.0.0.1:5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16"
)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, in one line saying how to start one, when no PostgreSQL answers: every
    test but a few needs it, and 500 psycopg tracebacks say nothing a newcomer can act on. The
    developers' fast layer (``-m "not database"``) needs none, and is not stopped."""
    if "not database" in (session.config.option.markexpr or ""):
        return
    try:
        psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=5).close()
    except psycopg.Error as exc:
        cause = " ".join(str(exc).split())[:160]
        pytest.exit(
            f"no PostgreSQL for the tests at {redaction.redact(PG_SERVER)} ({cause}); start one with "
            f"`{START_POSTGRESQL}` (README, first lines), or set KBS_TEST_PG to a server where "
            "user postgres may create databases",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def require_tool(*names: str, install: str) -> str:
    """The path of the first of ``names`` installed. Missing: the test is skipped with the
    reason and how to install it, except where ``CI`` is set, where it fails: CI installs every
    tool (``.ci/run``), so a skip there would hide a test that never ran."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    reason = f"{names[0]} is not installed; {install}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing tool fails, never skips)")
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` first (otherwise in their order). pytest-xdist hands each
    worker its next test as it finishes one (``--maxschedchunk 1``), so the long ones start at
    once, side by side, and the short ones fill in around them, instead of one long test
    starting last and keeping the whole run waiting. ``-m "not slow"`` leaves them out of a
    quick local run; CI runs everything.

    Every test that makes a database (through :func:`make_database`, which every database
    fixture uses) is marked ``database``: ``-m "not database"`` is the developers' fast layer,
    the rules, the client over HTTP, the files and the docs, with no PostgreSQL."""
    for item in items:
        if "make_database" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.database)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    """Fail any test whose captured stdout, stderr or log shows a test secret."""
    outcome = yield
    report = outcome.get_result()
    for section, captured in report.sections:
        secret = leaked_secret(captured)
        if secret and report.passed:
            report.outcome = "failed"
            report.longrepr = f"a test secret leaked into {section}: {secret[:6]}…"


# Fast but real backoff: retries still happen and still wait, just briefly.
FAST_RETRY = RetryPolicy(attempts=3, timeout=10.0, wait_initial=0.01, wait_max=0.05, wait_jitter=0.01)


class FakeClock:
    """Virtual seconds, for a test of waits that should not wait: hand it to the client as
    ``clock=clock, sleep=clock.sleep`` and to the simulator as ``clock=clock``.

    ``sleep`` returns at once, having moved the clock to the moment its caller asked for: that
    many seconds after the caller's own last reading (the pacer reads the clock, picks a start,
    then sleeps until it), or not at all if another thread already moved it past. Threads that
    sleep side by side so overlap, as they do in real time, instead of adding up. ``slept``
    records every sleep asked for.
    """

    def __init__(self) -> None:
        self._now = 0.0
        self._lock = threading.Lock()
        self._read = threading.local()  # the calling thread's last reading
        self.slept: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            self._read.at = self._now
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self._now = max(self._now, getattr(self._read, "at", self._now) + seconds)


def _admin() -> psycopg.Connection:
    return psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True)


# The databases the running test made, dropped when it ends (see make_database).
_MADE_BY_THE_TEST: list[str] = []
_DROPPER: list[Callable[[list[str]], None]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """Once a test's fixtures are torn down, hand the databases it made to the dropper, which
    drops them while the next tests run."""
    yield
    if _DROPPER and _MADE_BY_THE_TEST:
        _DROPPER[0](list(_MADE_BY_THE_TEST))
    _MADE_BY_THE_TEST.clear()


@pytest.fixture(scope="session")
def make_database() -> Iterator[Callable[..., str]]:
    """Create empty, uniquely named databases (or copies of ``template``). Under pytest-xdist
    each worker has a session, so its own databases.

    A database a test made is dropped as soon as that test ends, by a process of the worker's
    own (``tests/dropper.py``), while the next tests run: each DROP DATABASE waits for a
    checkpoint (~0.6 s on a quiet server, tens of seconds beside another database's heavy
    writes), and left to the session's end those waits were the last minute of the run. One made
    for the whole session (``session=True``: the migrated template, the shared database) is
    dropped when the session ends. Before any is dropped, its ``sync_runs.error`` is checked for
    a test secret."""
    session_made: list[str] = []
    dropper = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("dropper.py"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert dropper.stdin is not None
    dropper.stdin.write(f"{PG_SERVER}\n{SECRETS.pattern}\n")  # not argv: a password stays off ps

    def make(template: str | None = None, *, session: bool = False) -> str:
        name = f"{DB_PREFIX}{uuid.uuid4().hex[:12]}"
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
            # A test database need not survive a power cut: commits return without waiting for
            # the disk, which is most of a small sweep's time. Nothing the tests assert changes.
            # (Set on each: a copy does not inherit its template's settings.)
            conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        (session_made if session else _MADE_BY_THE_TEST).append(name)
        return f"{PG_SERVER}/{name}"

    def drop_later(names: list[str]) -> None:
        assert dropper.stdin is not None
        dropper.stdin.write("".join(f"{name}\n" for name in names))
        dropper.stdin.flush()

    _DROPPER.append(drop_later)
    try:
        yield make
    finally:
        _DROPPER.remove(drop_later)
        # The session ends inside the last test's teardown, before the hook above hands that
        # test's databases over: they go with the session's own.
        drop_later(session_made + _MADE_BY_THE_TEST)
        _MADE_BY_THE_TEST.clear()
        out, _ = dropper.communicate(timeout=600)
    assert dropper.returncode == 0, "tests/dropper.py failed: some test databases may be left"
    leaks = out.split()
    assert not leaks, f"a test secret was stored in sync_runs.error in {sorted(set(leaks))}"


@pytest.fixture(scope="session")
def make_migrated_database(make_database: Callable[..., str]) -> Callable[..., str]:
    """Databases at the head revision, each a test's own: copies of one migrated template.

    Copying (``CREATE DATABASE … TEMPLATE``, ~0.06 s) gives what running every migration gives
    (~0.8 s). The template is made on first use and never connected to again, as copying
    requires; tests that are about migrating use :func:`make_database` and migrate themselves.
    ``session=True``: one kept until the session ends (a module's own, the shared one).
    """
    template: list[str] = []

    def make(*, session: bool = False) -> str:
        if not template:
            url = make_database(session=True)
            database.upgrade(database.make_engine(database.resolve_database_url(url)))
            template.append(url.rsplit("/", 1)[1])
        return make_database(template=template[0], session=session)

    return make


@pytest.fixture(scope="session")
def pg_url(make_migrated_database: Callable[..., str]) -> str:
    """One migrated database shared by the session (tests keep apart by account SID)."""
    return database.resolve_database_url(make_migrated_database(session=True))


@pytest.fixture(scope="module")
def module_pg_url(make_migrated_database: Callable[..., str]) -> str:
    """A migrated database of one test module's own (per worker), for a module whose questions
    read every account's rows, such as ``blocklist_as_of(at)`` filtered afterwards: in the
    shared database each answer also reads every other test's history, and the module's tests
    took up to four times as long there as on their own. A module takes it as its ``pg_url``
    (so ``engine`` and ``store`` too) by overriding that fixture."""
    return database.resolve_database_url(make_migrated_database(session=True))


@pytest.fixture
def engine(pg_url: str) -> Engine:
    return database.make_engine(pg_url)


@pytest.fixture
def store(engine: Engine) -> Store:
    return Store(engine)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    engine = database.make_engine(f"sqlite:///{tmp_path / 'blocklist-sync.db'}")
    database.upgrade(engine)
    return Store(engine)


def serve_simulator(**kwargs: Any) -> AbstractContextManager[Simulator]:
    """A fresh simulator serving an account of its own (a SID no other test uses)."""
    sid = f"HXTEST{uuid.uuid4().hex[:10].upper()}"
    return Simulator.start(numbers=0, sid=sid, api_key=f"key-{uuid.uuid4().hex}", **kwargs)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with serve_simulator() as simulator:
        yield simulator


@pytest.fixture
def clock() -> FakeClock:
    """Virtual time for a test of pacing or Retry-After: the waits it walks through pass at once."""
    return FakeClock()


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """stamina's own waits between attempts turned off with its testing switch (attempts stay
    the policy's; its timeout, in real seconds, is dropped), for a test whose waits are on
    ``clock``. Restored when the test ends."""
    with stamina.set_testing(True, attempts=1_000, cap=True):
        yield


@pytest.fixture
def sim_on_clock(clock: FakeClock) -> Iterator[Simulator]:
    """A simulator keeping time on ``clock``: its rate limit refills, and its request log is
    stamped, in virtual seconds."""
    with serve_simulator(clock=clock) as simulator:
        yield simulator


@pytest.fixture
def client(sim: Simulator) -> KaleyraClient:
    return make_client(sim)


class ClientOptions(TypedDict, total=False):
    """What a test may set on :class:`KaleyraClient` besides the account: named and typed here
    so that mypy checks each keyword a test passes against the client's own field."""

    page_size: int
    max_pages: int
    concurrency: int
    max_rps: float | None
    connect_timeout: float
    read_timeout: float
    response_timeout: float
    max_body_bytes: int
    retry: RetryPolicy
    clock: Callable[[], float]
    sleep: Callable[[float], None]


class SweepOptionFields(TypedDict, total=False):
    """The keywords of :class:`SweepOptions`, for the tests' ``sweep(..., **options)`` helpers:
    mypy then checks each one a test passes against the dataclass's field."""

    trigger: Trigger
    review: Review
    guard: GuardLimits
    skip_if_swept_within: float | None
    timeout: float
    lock_held_is_skip: bool


def sweep(
    sim: Simulator, store: Store, channel: str = "sms", **options: Unpack[SweepOptionFields]
) -> SweepResult:
    """One sweep of ``sim``'s account on ``channel``, in this process, as the job runs it."""
    return sweep_channel(make_client(sim), store, channel, SweepOptions(**options))


def make_client(sim: Simulator, **options: Unpack[ClientOptions]) -> KaleyraClient:
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("read_timeout", 5.0)
    return KaleyraClient(sid=sim.sid, api_key=sim.api_key, base_url=sim.base_url, **options)


def account_of(sim: Simulator, channels: tuple[str, ...] = ("sms", "whatsapp", "voice")) -> Account:
    return Account(sid=sim.sid, api_key=sim.api_key, base_url=sim.base_url, channels=channels)


def numbers(count: int, start: int = 0, prefix: str = "+9190000") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(start, start + count)]


def entries(engine: Engine, sim: Simulator, channel: str = "sms") -> set[str]:
    """The numbers ``sim``'s account holds on ``channel`` in the database now."""
    return {
        r[0]
        for r in rows(
            engine,
            "SELECT mobile FROM blocklist_entries WHERE account_sid = :a AND channel = :c",
            a=sim.sid,
            c=channel,
        )
    }


def column_comments(engine: Engine, relation: str) -> list[tuple[Any, ...]]:
    """(column, its comment, the relation's comment) for every column of ``relation``."""
    return rows(
        engine,
        """
        SELECT a.attname, col_description(c.oid, a.attnum), obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE c.oid = CAST(:view AS regclass) AND a.attnum > 0 AND NOT a.attisdropped""",
        view=relation,
    )


def run_on_a_terminal(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``command`` under script(1): stdout and stderr are a terminal, as for an operator."""
    script = require_tool("script", install="Debian/Ubuntu: apt-get install bsdutils")
    return subprocess.run(
        [script, "-qec", command, "/dev/null"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for(condition: Callable[[], object], timeout: float = 30) -> None:
    """Poll ``condition`` until it holds: a test waits for what it needs, never a fixed time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def rows(engine: Engine, sql: str, **params: object) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def cli_env(sim: Simulator | None, db_url: str | None, **extra: str) -> dict[str, str]:
    """The environment an operator would set, for running the CLI as a subprocess."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KALEYRA_", "BLOCKLIST_SYNC_", "DATABASE_URL"))
    }
    if sim is not None:
        env.update(KALEYRA_SID=sim.sid, KALEYRA_API_KEY=sim.api_key, KALEYRA_BASE_URL=sim.base_url)
    if db_url is not None:
        env["DATABASE_URL"] = db_url
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``blocklist-sync ARGS`` as a real process, the way cron or systemd would run it. Its
    output is checked for test secrets (``simulate`` prints its own key by design).

    For tests where the process is the point: signals, memory, what happens at interpreter
    start (imports, ``PYTHONPATH``), the installed entry point. A test that checks only output,
    exit code and rows uses :func:`invoke`, which skips the ~0.6 s of interpreter start."""
    result = subprocess.run(
        [sys.executable, "-m", "sync", *args],
        env=env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        errors="backslashreplace",
    )
    if "simulate" not in args:
        _assert_no_secret(args, result)
    return result


def _assert_no_secret(args: tuple[str, ...], result: subprocess.CompletedProcess[str]) -> None:
    secret = leaked_secret(result.stdout + result.stderr)
    assert secret is None, f"blocklist-sync {' '.join(args)} printed a secret: {secret[:6]}…"


# Loggers whose level ``telemetry.configure_logging`` sets, besides the root logger's.
_LOGGERS_THE_CLI_TUNES = ("urllib3", "alembic", "apscheduler")


@contextlib.contextmanager
def _as_a_fresh_process() -> Iterator[None]:
    """Give the CLI the process-global state a new interpreter has, and put the test's back.

    ``main()`` wraps ``sys.stdout``/``sys.stderr`` and sets ``sys.excepthook``
    (``redaction.install``), every key and password it reads is added to the process's
    redaction registry, ``configure_logging`` replaces the root logger's handlers and level,
    ``--env-file`` sets variables, and ``run`` installs SIGTERM/SIGINT handlers. Left behind,
    each would change what later tests see: a registry holding earlier tests' secrets would
    blank a secret this run failed to register, and pytest's own log capture would be gone. So
    the registry starts empty, as in a new process, and all of it is restored afterwards.
    """
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    tuned = {name: logging.getLogger(name).level for name in _LOGGERS_THE_CLI_TUNES}
    forms, pattern = set(redaction._forms), redaction._pattern
    counts = COUNTS.snapshot()  # the process's _total counters start at 0 in a new process
    COUNTS.reset()
    excepthook, argv = sys.excepthook, sys.argv
    environ = dict(os.environ)  # `--env-file` adds variables, as in a process of its own
    on_signal = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    redaction._forms.clear()
    redaction._pattern = None
    try:
        yield
    finally:
        redaction._forms.clear()
        redaction._forms.update(forms)
        redaction._pattern = pattern
        for name, value in counts.items():
            setattr(COUNTS, name, value)
        sys.excepthook, sys.argv = excepthook, argv
        os.environ.clear()
        os.environ.update(environ)
        root.handlers[:] = root_handlers
        root.setLevel(root_level)
        for name, level in tuned.items():
            logging.getLogger(name).setLevel(level)
        for sig, handler in on_signal.items():
            if handler is not None:  # None: not set from Python, so not changed from Python either
                signal.signal(sig, handler)


def invoke(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``blocklist-sync ARGS`` in this process: what :func:`run_cli` gives, without starting
    an interpreter (~0.6 s each, most of what a CLI test took).

    It runs the console script's own ``main()`` (redacting streams included) with ``os.environ``
    exactly ``env``, the working directory ``cwd`` (default: the checkout, as ``run_cli``),
    stdout and stderr captured apart, and the exit code ``sys.exit`` was given; an uncaught
    exception is printed through ``sys.excepthook`` and exits 1, as in a process. The same
    secret check as ``run_cli`` applies. Process-global state is reset around the call
    (:func:`_as_a_fresh_process`). Python warnings are not printed to stderr as in a process:
    pytest records them and shows them in its summary.
    """
    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overrides.update(env)
    with (
        _as_a_fresh_process(),
        contextlib.chdir(cwd or REPO),
        CliRunner().isolation(env=overrides) as (stdout, stderr, _),
    ):
        sys.argv = ["blocklist-sync", *args]
        try:
            blocklist_sync.main()
            code = 0
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:  # sys.exit("message"): printed, exit 1
                print(exit_.code, file=sys.stderr)
                code = 1
        except Exception as exc:  # uncaught: the interpreter prints it through the hook, exits 1
            sys.excepthook(type(exc), exc, exc.__traceback__)
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        result = subprocess.CompletedProcess(
            ["blocklist-sync", *args],
            code,
            stdout.getvalue().decode(errors="backslashreplace"),
            stderr.getvalue().decode(errors="backslashreplace"),
        )
    _assert_no_secret(args, result)
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def beside_simulate(
    simulate: list[str], script: str, *, port: str, cwd: Path, timeout: float
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``script`` in bash while the ``simulate`` command (a README's first line, its port
    swapped for ``port``) serves, as a reader runs such a block; then stop the simulator
    (the block's ``kill %1``). Returns the script's result and what the simulator printed."""
    env = {**cli_env(None, None), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    server = subprocess.Popen(
        simulate, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(port))) == 0:
                    break
            time.sleep(0.1)
        result = subprocess.run(
            ["bash", "-ec", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    finally:
        server.terminate()
        printed, _ = server.communicate(timeout=30)
    return result, printed
