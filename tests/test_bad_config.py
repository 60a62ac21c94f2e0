"""Bad configuration: one line naming the setting, exit 2, nothing applied; never a traceback,
a hang or a run of memory.

Key and config files that are no regular file (a FIFO, ``/dev/zero``), TOML of the wrong
shape, durations and shard numbers no one meant, numbers in digits ``int()`` reads but no
operator types, and a ``--metrics-file`` that could not be written after the sweeps applied.
Click's ``CliRunner`` runs the CLI in-process where only the output and the exit code matter;
a real process where a hang or the memory is the point.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from sync.cli import cli
from sync.settings import load_accounts
from sync.simulator import Simulator
from sync.store import Store
from sync.telemetry import Publisher
from tests.conftest import REPO, cli_env, leaked_secret, numbers, rows, run_cli

NOT_OURS = ("KALEYRA_", "BLOCKLIST_SYNC_", "DATABASE_URL", "JOB_COMPLETION_INDEX")
FOUR_HUNDRED_DIGITS = "9" * 400


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI installs its own log handler on the root logger (on the runner's stderr, closed
    once the test ends): put back what was there."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(*args: str, env: Mapping[str, str]) -> Result:
    """``blocklist-sync ARGS`` in-process with exactly ``env`` as the operator's settings."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith(NOT_OURS)}
    return CliRunner().invoke(cli, list(args), env={**unset, **env}, prog_name="blocklist-sync")


def assert_one_line(result: Result, *names: str) -> str:
    """Exit 2, and the error output is one line naming every one of ``names``."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("blocklist-sync: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for name in names:
        assert name in result.stderr
    assert leaked_secret(result.output) is None
    return result.stderr


def run_bounded(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``blocklist-sync ARGS`` as a real process in 512 MiB of address space and 30 s: reading a
    FIFO hangs, reading ``/dev/zero`` runs out of memory, and either fails the test, not the
    machine."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))

    result = subprocess.run(
        [sys.executable, "-m", "sync", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=limit_memory,
    )
    assert leaked_secret(result.stdout + result.stderr) is None
    return result


def sweeps(engine: Engine, sim: Simulator) -> list[tuple[Any, ...]]:
    return rows(engine, "SELECT id FROM sync_runs WHERE account_sid = :a", a=sim.sid)


def nothing_applied(engine: Engine, sim: Simulator) -> bool:
    entries = rows(engine, "SELECT mobile FROM blocklist_entries WHERE account_sid = :a", a=sim.sid)
    return sweeps(engine, sim) == [] and entries == []


@pytest.fixture
def listed(sim: Simulator) -> Simulator:
    """A simulator with numbers to apply, so that a run which went ahead would show."""
    sim.add("sms", numbers(3))
    return sim


# -- key and config files that are no regular file ----------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> str:
    path = tmp_path / "key-fifo"
    os.mkfifo(path)
    return str(path)


def _key_file_setup(
    how: str, path: str, sim: Simulator, pg_url: str, tmp_path: Path
) -> tuple[list[str], dict[str, str], str]:
    """The arguments, environment and setting name that point ``how`` at the key file ``path``."""
    env = cli_env(None, pg_url, KALEYRA_SID=sim.sid, KALEYRA_BASE_URL=sim.base_url, KALEYRA_CHANNELS="sms")
    if how == "KALEYRA_API_KEY_FILE":
        return ["run"], {**env, "KALEYRA_API_KEY_FILE": path}, "KALEYRA_API_KEY_FILE"
    if how == "--api-key-file":
        return ["run", "--api-key-file", path], env, "--api-key-file"
    config = tmp_path / "accounts.toml"
    config.write_text(
        f'[[accounts]]\nsid = "{sim.sid}"\napi_key_file = "{path}"\nbase_url = "{sim.base_url}"\n'
    )
    return ["run", "--config", str(config)], cli_env(None, pg_url), "account 1: api_key_file"


KEY_SOURCES = ["KALEYRA_API_KEY_FILE", "--api-key-file", "api_key_file in --config"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", KEY_SOURCES)
@pytest.mark.parametrize(("special", "kind"), [("fifo", "a FIFO"), ("/dev/zero", "a character device")])
def test_a_key_file_that_is_a_fifo_or_dev_zero_is_refused_at_once(
    how: str,
    special: str,
    kind: str,
    listed: Simulator,
    pg_url: str,
    engine: Engine,
    tmp_path: Path,
    fifo: str,
) -> None:
    path = fifo if special == "fifo" else special
    args, env, setting = _key_file_setup(how, path, listed, pg_url, tmp_path)
    result = run_bounded(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert setting in result.stderr and kind in result.stderr and "not a regular file" in result.stderr
    assert nothing_applied(engine, listed)


@pytest.mark.parametrize("how", KEY_SOURCES)
@pytest.mark.parametrize(("what", "says"), [("directory", "is a directory"), ("5 KiB", "larger than 4 KiB")])
def test_a_key_file_that_is_a_directory_or_too_large_is_refused(
    how: str, what: str, says: str, listed: Simulator, pg_url: str, engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "key"
    if what == "directory":
        path.mkdir()
    else:
        path.write_text(listed.api_key + "\n" + "x" * 5000)
    args, env, setting = _key_file_setup(how, str(path), listed, pg_url, tmp_path)
    line = assert_one_line(invoke(*args, env=env), setting, says)
    assert listed.api_key not in line
    assert nothing_applied(engine, listed)


def test_a_key_file_of_4_kib_or_less_is_read(sim: Simulator, tmp_path: Path) -> None:
    """The limit refuses the wrong file, not a key with some trailing whitespace."""
    key_file = tmp_path / "key"
    key_file.write_text(sim.api_key + " " * (4096 - len(sim.api_key) - 1) + "\n")
    env = {"KALEYRA_SID": sim.sid, "KALEYRA_API_KEY_FILE": str(key_file)}
    assert [a.api_key for a in load_accounts(None, env)] == [sim.api_key]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("special", "kind"), [("fifo", "a FIFO"), ("/dev/zero", "a character device")])
@pytest.mark.parametrize("how", ["--config", "BLOCKLIST_SYNC_CONFIG"])
def test_a_config_file_that_is_a_fifo_or_dev_zero_is_refused_at_once(
    special: str, kind: str, how: str, pg_url: str, fifo: str
) -> None:
    path = fifo if special == "fifo" else special
    env = cli_env(None, pg_url)
    args = ["check", "--config", path] if how == "--config" else ["check"]
    if how == "BLOCKLIST_SYNC_CONFIG":
        env["BLOCKLIST_SYNC_CONFIG"] = path
    result = run_bounded(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert how in result.stderr and kind in result.stderr


# -- TOML of the wrong shape ---------------------------------------------------------------


def _account(sim: Simulator, **replace: str) -> str:
    """One [[accounts]] table for ``sim``, with ``replace`` as raw TOML lines for its keys."""
    lines = {"sid": f'"{sim.sid}"', "api_key": f'"{sim.api_key}"', "base_url": f'"{sim.base_url}"'}
    lines.update(replace)
    return "[[accounts]]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items() if v)


WRONG_TYPES = [
    ({"sid": "5"}, "sid must be a string", "a number"),
    ({"sid": '["HX1"]'}, "sid must be a string", "an array"),
    ({"api_key": "12345"}, "api_key must be a string", "a number"),
    ({"api_key": "", "api_key_file": "7"}, "api_key_file must be a string", "a number"),
    ({"api_key": "", "api_key_env": "true"}, "api_key_env must be a string", "a boolean"),
    ({"base_url": "[]"}, "base_url must be a string", "an array"),
    ({"base_url": "", "region": "1979-05-27"}, "region must be a string", "a date or time"),
    ({"channels": "5"}, "channels must be an array", "a number"),
    ({"channels": "[1]"}, "channels must be an array", "an array holding a number"),
    ({"channels": "{sms = true}"}, "channels must be an array", "a table"),
    ({"channels": '"sms,fax"'}, "channels: fax is not a channel", ""),
]


@pytest.mark.parametrize(("replace", "says", "found"), WRONG_TYPES)
def test_a_toml_value_of_the_wrong_type_is_one_line_naming_the_file_and_key(
    replace: dict[str, str],
    says: str,
    found: str,
    listed: Simulator,
    pg_url: str,
    engine: Engine,
    tmp_path: Path,
) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text(_account(listed, **replace))
    result = invoke("run", "--config", str(config), env={"DATABASE_URL": pg_url})
    line = assert_one_line(result, str(config), "account 1", says, found)
    assert listed.api_key not in line
    assert nothing_applied(engine, listed)


BROKEN_FILES = [
    ("accounts = 5\n", "accounts is a number, not a list of tables"),
    ('accounts = "HX1"\n', "accounts is a string, not a list of tables"),
    ('[accounts]\nsid = "HX1"\n', "accounts is a table, not a list of tables"),
    ('accounts = ["HX1"]\n', "account 1 is a string, not a table"),
    ("[[accounts]]\nsid = \n", "is not valid TOML"),
    (f"[[accounts]]\nsid = {'9' * 5000}\n", "is not valid TOML: a number in it is too long"),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
]


@pytest.mark.parametrize(("toml", "says"), BROKEN_FILES)
def test_a_config_file_of_the_wrong_shape_is_one_line_naming_the_file(
    toml: str, says: str, pg_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text(toml)
    assert_one_line(invoke("run", "--config", str(config), env={"DATABASE_URL": pg_url}), str(config), says)


def test_a_config_file_that_is_not_utf8_is_one_line(listed: Simulator, pg_url: str, tmp_path: Path) -> None:
    config = tmp_path / "accounts.toml"
    config.write_bytes(_account(listed).encode() + b'region = "\xff"\n')
    result = invoke("run", "--config", str(config), env={"DATABASE_URL": pg_url})
    assert_one_line(result, str(config), "not UTF-8", "save it as UTF-8")


def test_channels_as_one_comma_separated_string_is_still_read(sim: Simulator, tmp_path: Path) -> None:
    """What the loader accepted before stays accepted: ``channels = "sms,voice"``."""
    config = tmp_path / "accounts.toml"
    config.write_text(_account(sim, channels='"sms,voice"'))
    assert [a.channels for a in load_accounts(str(config), {})] == [("sms", "voice")]


# -- durations -----------------------------------------------------------------------------

DURATIONS = [
    (("status", "--max-age"), "--max-age"),
    (("schedule", "--every"), "--every"),
    (("run", "--sweep-timeout"), "--sweep-timeout"),
    (("run", "--skip-if-swept-within"), "--skip-if-swept-within"),
]
BAD_DURATIONS = [
    (FOUR_HUNDRED_DIGITS + "s", "longer than 366d"),
    (FOUR_HUNDRED_DIGITS, "not a duration"),
    ("1e999s", "not a duration"),
    ("inf", "not a duration"),
    ("nan", "not a duration"),
    ("-5m", "not a duration"),
    ("0s", "is zero"),
    ("367d", "longer than 366d"),
    ("٣m", "not a duration"),  # Arabic-Indic three: float() reads it, an operator never types it
]


@pytest.mark.timeout(60)  # a schedule that accepted its --every would never return
@pytest.mark.parametrize(("command", "setting"), DURATIONS)
@pytest.mark.parametrize(("value", "says"), BAD_DURATIONS)
def test_a_duration_out_of_range_is_one_line_naming_the_option(
    command: tuple[str, str],
    setting: str,
    value: str,
    says: str,
    listed: Simulator,
    pg_url: str,
    engine: Engine,
) -> None:
    env = cli_env(listed, pg_url)
    if value == "0s" and setting == "--skip-if-swept-within":
        value = "0.5x"  # 0 turns the skip off (tests/test_review.py); another bad value here
        says = "0 turns it off"
    line = assert_one_line(invoke(*command, value, env=env), setting, says)
    assert len(line) < 300  # 400 digits are shortened, not echoed
    assert nothing_applied(engine, listed)


@pytest.mark.parametrize(
    ("variable", "args"),
    [
        ("BLOCKLIST_SYNC_SWEEP_TIMEOUT", ["run"]),
        ("BLOCKLIST_SYNC_SKIP_IF_SWEPT_WITHIN", ["run"]),
    ],
)
def test_a_duration_from_the_environment_names_its_variable(
    variable: str, args: list[str], listed: Simulator, pg_url: str, engine: Engine
) -> None:
    env = cli_env(listed, pg_url, **{variable: FOUR_HUNDRED_DIGITS + "m"})
    line = assert_one_line(invoke(*args, env=env), variable, "longer than 366d")
    assert "--" not in line.split(":")[1]  # the variable alone, not the flag it stands for
    assert nothing_applied(engine, listed)


# -- shards --------------------------------------------------------------------------------


@pytest.mark.parametrize("index", ["²", "٣", "-1", "1.0", "x", "1/4", FOUR_HUNDRED_DIGITS])
def test_job_completion_index_must_be_ascii_digits(
    index: str, listed: Simulator, pg_url: str, engine: Engine
) -> None:
    env = cli_env(listed, pg_url, JOB_COMPLETION_INDEX=index)
    assert_one_line(invoke("run", "--shard", "4", env=env), "--shard 4", "JOB_COMPLETION_INDEX", "digits 0-9")
    assert nothing_applied(engine, listed)


@pytest.mark.parametrize("shard", ["٣/٤", "1/²", "²", "0/" + FOUR_HUNDRED_DIGITS, "1_0/20"])
def test_a_shard_must_be_ascii_digits(shard: str, listed: Simulator, pg_url: str, engine: Engine) -> None:
    env = cli_env(listed, pg_url, JOB_COMPLETION_INDEX="0")
    assert_one_line(invoke("run", "--shard", shard, env=env), "--shard", "is not a shard")
    env["BLOCKLIST_SYNC_SHARD"] = shard
    line = assert_one_line(invoke("run", env=env), "BLOCKLIST_SYNC_SHARD", "is not a shard")
    assert "--shard" not in line  # named as the operator set it
    assert nothing_applied(engine, listed)


# -- the metrics file ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["--metrics-file", "BLOCKLIST_SYNC_METRICS_FILE"])
@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("missing/blocklist_sync.prom", "does not exist"),
        ("", "is a directory"),
        ("file/x.prom", "not a directory"),
    ],
)
def test_a_metrics_file_that_cannot_be_written_stops_the_run_before_any_sweep(
    how: str, where: str, says: str, listed: Simulator, pg_url: str, engine: Engine, tmp_path: Path
) -> None:
    """Before, the sweeps applied and then the write failed: exit 1, which says nothing was."""
    (tmp_path / "file").write_text("")
    path = str(tmp_path / where)
    env = cli_env(listed, pg_url)
    args = ["run"]
    if how == "--metrics-file":
        args += ["--metrics-file", path]
    else:
        env[how] = path
    line = assert_one_line(invoke(*args, env=env), how, says)
    other = "BLOCKLIST_SYNC_METRICS_FILE" if how == "--metrics-file" else "--metrics-file"
    assert other not in line  # named as the operator set it
    assert nothing_applied(engine, listed)


@pytest.mark.timeout(60)  # a schedule that went ahead would never return
def test_schedule_checks_the_metrics_file_before_it_starts(
    listed: Simulator, pg_url: str, engine: Engine, tmp_path: Path
) -> None:
    path = str(tmp_path / "missing" / "blocklist_sync.prom")
    result = invoke(
        "schedule", "--run-now", "--every", "1h", "--metrics-file", path, env=cli_env(listed, pg_url)
    )
    assert_one_line(result, "--metrics-file", "does not exist")
    assert nothing_applied(engine, listed)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any directory")
def test_a_metrics_directory_this_user_cannot_write_in_is_refused(
    listed: Simulator, pg_url: str, engine: Engine, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = invoke("run", "--metrics-file", str(locked / "m.prom"), env=cli_env(listed, pg_url))
    assert_one_line(result, "--metrics-file", "cannot write in")
    assert nothing_applied(engine, listed)


def test_a_metrics_file_that_fails_later_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, store: Store
) -> None:
    """Should the directory go between the check and the write, the sweeps' exit code stands."""
    Publisher(store, [], str(tmp_path / "gone" / "blocklist_sync.prom")).publish()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "cannot write the metrics file" in caplog.text


# -- numbers in options and their variables ------------------------------------------------

BAD_NUMBERS = [
    (["run"], "BLOCKLIST_SYNC_CONCURRENCY", "²", "not a whole number"),
    (["run"], "BLOCKLIST_SYNC_CONCURRENCY", "٣", "not a whole number"),
    (["run"], "BLOCKLIST_SYNC_CONCURRENCY", "9" * 5000, "far too large"),
    (["run"], "BLOCKLIST_SYNC_MAX_PAGES", "1_000", "not a whole number"),
    (["run"], "BLOCKLIST_SYNC_GUARD_MIN_ENTRIES", "-1", "not a whole number"),
    (["run"], "BLOCKLIST_SYNC_MAX_RPS", "nan", "not a number like 0.5"),
    (["run"], "BLOCKLIST_SYNC_MAX_RPS", "inf", "not a number like 0.5"),
    (["run"], "BLOCKLIST_SYNC_MAX_RPS", "1e999", "not a number like 0.5"),
    (["run"], "BLOCKLIST_SYNC_MAX_REMOVAL_FRACTION", "nan", "not a number like 0.5"),
    (["schedule", "--every", "1h"], "BLOCKLIST_SYNC_METRICS_PORT", "٨٠٨٠", "not a whole number"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "variable", "value", "says"), BAD_NUMBERS)
def test_a_number_no_one_would_type_is_one_line_naming_option_or_variable(
    args: list[str], variable: str, value: str, says: str, listed: Simulator, pg_url: str, engine: Engine
) -> None:
    """Named as the operator set it: the flag alone, or the variable alone."""
    option = "--" + variable.removeprefix("BLOCKLIST_SYNC_").lower().replace("_", "-")
    flag = invoke(*args, option, value, env=cli_env(listed, pg_url))
    assert variable not in assert_one_line(flag, option, says)
    from_env = invoke(*args, env=cli_env(listed, pg_url, **{variable: value}))
    line = assert_one_line(from_env, variable, says)
    assert option not in line and len(line) < 300
    assert nothing_applied(engine, listed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["schedule", "--every", "1h", "--jitter", "99999999999999"], "--jitter"),
        (["schedule", "--cron", "٣ * * * *"], "--cron"),
        (["schedule", "--cron", FOUR_HUNDRED_DIGITS + " * * * *"], "--cron"),
        (["run", "--no-such-option"], "--no-such-option"),
        (["run", "--concurrency"], "--concurrency"),
    ],
)
def test_other_usage_errors_are_one_line_too(
    args: list[str], says: str, listed: Simulator, pg_url: str, engine: Engine
) -> None:
    line = assert_one_line(invoke(*args, env=cli_env(listed, pg_url)), says)
    assert "Usage:" not in line and len(line) < 300
    assert nothing_applied(engine, listed)


LONG_LABEL = "a" * 64


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "extra", "says"),
    [
        (["run"], {"KALEYRA_BASE_URL": f"http://{LONG_LABEL}.example/v1"}, "KALEYRA_BASE_URL"),
        (["run"], {"KALEYRA_BASE_URL": "http://api..kaleyra.io/v1"}, "KALEYRA_BASE_URL"),
        (["run"], {"KALEYRA_CHANNELS": "sms,fo\no"}, "KALEYRA_CHANNELS: 'fo\\no'"),
        (["run", "--account", "HX\nNOPE"], {}, "--account 'HX\\nNOPE'"),
        (
            ["schedule", "--every", "1h", "--metrics-port", "1", "--metrics-address", LONG_LABEL * 2],
            {},
            "--metrics-address",
        ),
    ],
)
def test_a_setting_that_would_fail_later_or_print_two_lines_is_one_line_now(
    args: list[str], extra: dict[str, str], says: str, listed: Simulator, pg_url: str, engine: Engine
) -> None:
    """A host name DNS cannot look up failed every request, retried, as a network error
    (exit 1); a line break in a value echoed back split the error over two lines."""
    assert_one_line(invoke(*args, env=cli_env(listed, pg_url, **extra)), says)
    assert nothing_applied(engine, listed)


def test_a_good_configuration_still_sweeps(
    listed: Simulator, pg_url: str, engine: Engine, tmp_path: Path
) -> None:
    """The same settings, written as meant, run: the checks refuse only what is wrong."""
    key_file = tmp_path / "key"
    key_file.write_text(listed.api_key + "\n")
    metrics = tmp_path / "blocklist_sync.prom"
    env = cli_env(
        None,
        pg_url,
        KALEYRA_SID=listed.sid,
        KALEYRA_API_KEY_FILE=str(key_file),
        KALEYRA_BASE_URL=listed.base_url,
        KALEYRA_CHANNELS="sms",
        BLOCKLIST_SYNC_CONCURRENCY=" 2 ",
        BLOCKLIST_SYNC_MAX_RPS="50.5",
        BLOCKLIST_SYNC_SWEEP_TIMEOUT="366d",
        JOB_COMPLETION_INDEX="0",
    )
    result = run_cli("run", "--shard", "1", "--metrics-file", str(metrics), env=env)
    assert result.returncode == 0, result.stderr
    assert len(sweeps(engine, listed)) == 1 and metrics.exists()
