"""The deployment files: systemd units, crontab, Kubernetes manifests, the Dockerfile.

Each file is checked by the tool that will read it in production where one exists here:
``systemd-analyze verify`` and ``systemd-analyze calendar`` for the units, APScheduler's
crontab parser for the cron expressions, PyYAML for the manifest, ``/bin/sh`` for the
crontab's command line, and the real ``blocklist-sync`` console script for every command
line the files would run. ``systemd-analyze`` is a hard requirement (CI installs it): a host
without it fails these tests instead of skipping them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from apscheduler.triggers.cron import CronTrigger

from sync import database
from sync.simulator import Simulator
from tests.conftest import REPO, documentation, numbers, require_tool, rows

CRON = REPO / "cron"
SERVICE = CRON / "blocklist-sync.service"
TIMER = CRON / "blocklist-sync.timer"
SCHEDULER = CRON / "blocklist-sync-scheduler.service"
UNITS = (SERVICE, TIMER, SCHEDULER)
CRONTAB = CRON / "crontab"
MANIFEST = CRON / "kubernetes-cronjob.yaml"
REVIEW_POD = CRON / "kubernetes-review-pod.yaml"

INSTALLED_BINARY = "/opt/blocklist-sync/bin/blocklist-sync"
CONFIG_DIR = "/etc/blocklist-sync/"
# The console script of the interpreter running the tests: what the units run once installed.
CONSOLE_SCRIPT = Path(sys.executable).parent / "blocklist-sync"
SCHEDULE = "15 * * * *"

UnitFile = dict[str, dict[str, list[str]]]


# --- helpers ---------------------------------------------------------------------------------


def systemd_analyze() -> str:
    return require_tool("systemd-analyze", install="Debian/Ubuntu: apt-get install systemd")


def console_script() -> Path:
    if not CONSOLE_SCRIPT.is_file():
        pytest.fail(
            f"{CONSOLE_SCRIPT} does not exist; install the project into this interpreter's "
            "environment (pip install -e .) so the blocklist-sync console script exists"
        )
    return CONSOLE_SCRIPT


def parse_unit(path: Path) -> UnitFile:
    """A unit file as ``{section: {key: [values in order]}}`` (keys may repeat)."""
    unit: UnitFile = {}
    section: dict[str, list[str]] | None = None
    text = re.sub(r"\\\n", " ", path.read_text())  # line continuations
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None and "=" in line, f"{path.name}:{number}: not a unit file line: {raw}"
        key, value = (part.strip() for part in line.split("=", 1))
        section.setdefault(key, []).append(value)
    return unit


def one(unit: UnitFile, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"expected exactly one {key}= in [{section}], found {values}"
    return values[0]


def exec_argv(value: str) -> list[str]:
    """An Exec*= line as argv. Our lines use no specifiers and only plain double quotes, where
    systemd's and the shell's word splitting agree."""
    assert "%" not in value and "$" not in value, f"unexpected specifier or variable in {value!r}"
    return shlex.split(value.lstrip("-@:+!"))


def cron_lines() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The crontab's environment assignments and its (schedule, command) entries."""
    env: dict[str, str] = {}
    entries: list[tuple[str, str]] = []
    for number, raw in enumerate(CRONTAB.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assignment = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
        if assignment:
            env[assignment.group(1)] = assignment.group(2).strip().strip("\"'")
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"crontab:{number}: want 5 schedule fields and a command: {raw}"
        entries.append((" ".join(fields[:5]), fields[5]))
    return env, entries


def manifest_documents() -> list[dict[str, Any]]:
    with MANIFEST.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def cronjob() -> dict[str, Any]:
    docs = manifest_documents()
    assert [d.get("kind") for d in docs] == ["CronJob"], "the manifest should hold one CronJob only"
    return docs[0]


def backfill_job() -> dict[str, Any]:
    """The Job kept as a comment at the end of the manifest, uncommented as the comment says."""
    text = MANIFEST.read_text()
    start = text.index("# apiVersion: batch/v1")
    lines = [re.sub(r"^# ?", "", line) for line in text[start:].splitlines()]
    job = yaml.safe_load("\n".join(lines))
    assert isinstance(job, dict)
    return job


def pod_spec(job_spec: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job_spec["template"]["spec"]
    return spec


def container(spec: dict[str, Any]) -> dict[str, Any]:
    containers = spec["containers"]
    assert len(containers) == 1
    only: dict[str, Any] = containers[0]
    return only


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in c.get("env", [])}


def bare_env(**extra: str) -> dict[str, str]:
    """This process's environment without any of the job's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KALEYRA_", "BLOCKLIST_SYNC_", "DATABASE_URL"))
    }
    env.update(extra)
    return env


def assert_cli_accepts(argv: list[str], where: str) -> None:
    """``argv`` gets past argument parsing: with no settings at all, the job stops at its first
    setting (exit 2, "KALEYRA_SID is not set"), not at an unknown option or a bad choice."""
    assert Path(argv[0]).name == "blocklist-sync", f"{where}: runs {argv[0]}, not blocklist-sync"
    result = subprocess.run(
        [str(console_script()), *argv[1:]],
        env=bare_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr.strip()) == (
        2,
        "blocklist-sync: error: KALEYRA_SID is not set; set it to the account SID from the Kaleyra console",
    ), f"{where}: {argv[1:]} -> {result.returncode}: {result.stderr}"


def fire_times(expression: str, first: dt.datetime, count: int) -> list[dt.datetime]:
    trigger = CronTrigger.from_crontab(expression, timezone=dt.UTC)
    times: list[dt.datetime] = []
    now = first
    for _ in range(count):
        fire = trigger.get_next_fire_time(None, now)
        assert fire is not None
        times.append(fire)
        now = fire + dt.timedelta(seconds=1)
    return times


def calendar_elapses(expression: str, count: int) -> list[dt.datetime]:
    """When systemd would elapse ``OnCalendar=expression`` next, in UTC."""
    result = subprocess.run(
        [systemd_analyze(), "calendar", f"--iterations={count}", expression],
        env={**os.environ, "TZ": "UTC"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"systemd-analyze calendar rejects {expression!r}: {result.stderr}"
    found = re.findall(
        r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", result.stdout
    )
    assert len(found) == count, result.stdout
    return [dt.datetime.fromisoformat(f).replace(tzinfo=dt.UTC) for f in found]


# --- (a) systemd-analyze verify -------------------------------------------------------------


def installable_copies(tmp_path: Path, units: tuple[Path, ...] = UNITS) -> list[Path]:
    """The units as they would be installed: the binary and the files they name exist.

    ``systemd-analyze verify`` checks that every Exec*= binary exists and is executable, so the
    copies run this environment's console script instead of /opt/blocklist-sync/bin/. The
    env and key files get stand-ins too, for systemd versions that look for them.
    """
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "env").write_text("KALEYRA_SID=HXTEST0000000IN\n")
    (etc / "kaleyra-api-key").write_text("not-a-real-key\n")
    units_dir = tmp_path / "units"
    units_dir.mkdir()
    copies = []
    for unit in units:
        text = unit.read_text()
        if unit.suffix == ".service":
            assert INSTALLED_BINARY in text and CONFIG_DIR in text, unit.name
        text = text.replace(INSTALLED_BINARY, str(console_script()))
        text = text.replace(CONFIG_DIR, f"{etc}/")
        copy = units_dir / unit.name
        copy.write_text(text)
        copies.append(copy)
    return copies


def verify(paths: list[Path]) -> tuple[int, list[str]]:
    """Run ``systemd-analyze verify``; return its exit code and the lines about our units.

    It may also complain about the host's own units (it loads their dependencies); those
    lines are not ours to fix and are left out.
    """
    result = subprocess.run(
        [systemd_analyze(), "verify", *map(str, paths)],
        cwd=paths[0].parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
    )
    names = {p.name for p in paths}
    ours = [
        line for line in (result.stdout + result.stderr).splitlines() if any(name in line for name in names)
    ]
    return result.returncode, ours


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    returncode, complaints = verify(installable_copies(tmp_path))
    assert complaints == []
    assert returncode == 0


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        pytest.param(
            ("Type=oneshot\n", "Type=oneshot\nProtectSytem=strict\n"), "Unknown key 'ProtectSytem'", id="typo"
        ),
        pytest.param(
            ("TimeoutStartSec=50min", "TimeoutStartSec=50 fortnights"),
            "Failed to parse TimeoutStartSec=",
            id="bad-value",
        ),
        pytest.param(("", ""), "is not executable", id="binary-not-installed"),
    ],
)
def test_systemd_analyze_verify_would_catch_a_broken_unit(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    """The check above is not vacuous: verify reports such mistakes on lines we look at."""
    (copy,) = installable_copies(tmp_path, (SERVICE,))
    old, new = change
    if old:
        assert old in copy.read_text()
        copy.write_text(copy.read_text().replace(old, new))
    else:  # point ExecStart at a binary that is not there
        missing = tmp_path / "not-installed" / "blocklist-sync"
        copy.write_text(copy.read_text().replace(str(CONSOLE_SCRIPT), str(missing)))
    _, complaints = verify([copy])
    assert any(complaint in line for line in complaints), complaints


def test_the_service_runs_a_command_line_the_cli_accepts() -> None:
    unit = parse_unit(SERVICE)
    argv = exec_argv(one(unit, "Service", "ExecStart"))
    assert argv[0] == INSTALLED_BINARY
    assert argv[1:4] == ["run", "--trigger", "scheduled"]
    assert_cli_accepts(argv, SERVICE.name)


def test_the_scheduler_runs_a_command_line_the_cli_accepts() -> None:
    argv = exec_argv(one(parse_unit(SCHEDULER), "Service", "ExecStart"))
    assert argv[0] == INSTALLED_BINARY and argv[1] == "schedule"
    assert argv[argv.index("--cron") + 1] == SCHEDULE
    assert argv[argv.index("--metrics-port") + 1] == "9464"
    assert_cli_accepts(argv, SCHEDULER.name)


# --- (b) the crontab -------------------------------------------------------------------------


def test_crontab_entries_are_valid_cron_running_blocklist_sync() -> None:
    env, entries = cron_lines()
    assert entries, "the crontab has no entry"
    for schedule, command in entries:
        CronTrigger.from_crontab(schedule)  # raises on an invalid expression
        # APScheduler numbers weekdays from Monday=0, cron from Sunday=0: a numeric weekday
        # would validate here and still mean another day in cron.
        assert not re.search(r"\d", schedule.split()[4]), f"use names or * for the weekday: {schedule}"
        assert re.search(r"(^|[\s/])blocklist-sync run(\s|$)", command), command
        assert "--trigger scheduled" in command
        # cron turns an unescaped % into a newline and cuts the command there.
        assert not re.search(r"(?<!\\)%", command), command
    assert [s for s, _ in entries] == [SCHEDULE]
    assert env["KALEYRA_API_KEY_FILE"].startswith("/")
    assert not re.search(r"^\s*KALEYRA_API_KEY\s*=", CRONTAB.read_text(), re.MULTILINE)


@pytest.fixture
def seeded_sim() -> Iterator[Simulator]:
    sid = f"HXCRON{os.urandom(5).hex().upper()}"
    with Simulator.start(numbers=0, sid=sid, api_key=f"key-{os.urandom(16).hex()}") as sim:
        for channel in ("sms", "whatsapp", "voice"):
            sim.add(channel, numbers(120, prefix=f"+91{len(channel)}000"))
        yield sim


def test_crontab_command_syncs_under_crons_bare_environment(
    tmp_path: Path, seeded_sim: Simulator, pg_url: str
) -> None:
    """The crontab line, run by /bin/sh with only what cron provides, sweeps for real: it
    exports the env file (including a quoted DATABASE_URL holding `&`), reads the key from
    KALEYRA_API_KEY_FILE and appends its output to the log file."""
    etc, log_dir = tmp_path / "etc", tmp_path / "log"
    etc.mkdir()
    log_dir.mkdir()
    key_file = etc / "kaleyra-api-key"
    key_file.write_text(seeded_sim.api_key + "\n")
    key_file.chmod(0o400)
    (etc / "env").write_text(
        "# /etc/blocklist-sync/env\n"
        f"KALEYRA_SID={seeded_sim.sid}\n"
        f"KALEYRA_BASE_URL={seeded_sim.base_url}\n"
        "KALEYRA_CHANNELS=sms,whatsapp,voice\n"
        f"DATABASE_URL='{pg_url}?application_name=blocklist-sync&connect_timeout=10'\n"
    )

    def installed(text: str) -> str:
        return (
            text.replace(INSTALLED_BINARY, str(console_script()))
            .replace(CONFIG_DIR, f"{etc}/")
            .replace("/var/log/blocklist-sync/", f"{log_dir}/")
        )

    cron_env, entries = cron_lines()
    env = {name: installed(value) for name, value in cron_env.items()}
    env.update(HOME=str(tmp_path), LOGNAME="blocklist-sync")
    ((_, command),) = entries
    log_file = log_dir / "blocklist-sync.log"
    for _ in range(2):  # the second run finds nothing new
        result = subprocess.run(
            [env.get("SHELL", "/bin/sh"), "-c", installed(command)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
        log = log_file.read_text() if log_file.exists() else "(no log file)"
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), log

    for channel in ("sms", "whatsapp", "voice"):
        assert f"{seeded_sim.sid} {channel}: succeeded, 120 blocklisted, +120 -0" in log
        assert f"{seeded_sim.sid} {channel}: succeeded, 120 blocklisted, +0 -0" in log
    assert seeded_sim.api_key not in log
    counted = rows(
        database.make_engine(pg_url),
        "SELECT channel, count(*) FROM blocklist_entries WHERE account_sid = :sid "
        "GROUP BY channel ORDER BY channel",
        sid=seeded_sim.sid,
    )
    assert counted == [("sms", 120), ("voice", 120), ("whatsapp", 120)]


# --- (c) the Kubernetes manifest -------------------------------------------------------------


def test_kubernetes_cronjob_is_hourly_forbids_overlap_and_bounds_retries() -> None:
    job = cronjob()
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["schedule"] == SCHEDULE
    CronTrigger.from_crontab(spec["schedule"])
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["startingDeadlineSeconds"], int) and spec["startingDeadlineSeconds"] > 0
    job_spec = spec["jobTemplate"]["spec"]
    assert isinstance(job_spec["backoffLimit"], int) and 0 <= job_spec["backoffLimit"] <= 2
    # Ends before the next hourly run would start.
    assert 0 < job_spec["activeDeadlineSeconds"] < 3600
    assert pod_spec(job_spec)["restartPolicy"] == "Never"
    rules = job_spec.get("podFailurePolicy", {}).get("rules", [])
    no_retry = {
        code
        for rule in rules
        if rule["action"] == "FailJob"
        for code in rule.get("onExitCodes", {}).get("values", [])
    }
    assert {2, 3} <= no_retry  # configuration errors and held sweeps are not retried
    assert "75" in MANIFEST.read_text() and "another run" in MANIFEST.read_text()


def test_kubernetes_cronjob_runs_the_scheduled_sweep_as_non_root() -> None:
    spec = pod_spec(cronjob()["spec"]["jobTemplate"]["spec"])
    c = container(spec)
    assert c["image"] == "registry.example.com/kaleyra-blocklist-sync:0.3.0"
    assert c["command"][:4] == ["blocklist-sync", "run", "--trigger", "scheduled"]
    assert c["command"][-2:] == ["--log-format", "json"]
    assert_cli_accepts(c["command"], "CronJob")
    security = c["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def review_pod() -> dict[str, Any]:
    pod = one_yaml(REVIEW_POD)
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    return pod


@pytest.mark.parametrize("which", ["cronjob", "backfill", "review"])
def test_kubernetes_key_comes_from_a_mounted_secret(which: str) -> None:
    if which == "cronjob":
        spec = pod_spec(cronjob()["spec"]["jobTemplate"]["spec"])
    elif which == "review":
        spec = review_pod()["spec"]
    else:
        job = backfill_job()
        assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
        spec = pod_spec(job["spec"])
        command = container(spec)["command"]
        assert command[:4] == ["blocklist-sync", "run", "--trigger", "backfill"]
        assert_cli_accepts(command, "backfill Job")
    c = container(spec)
    env = env_of(c)

    key_file = env["KALEYRA_API_KEY_FILE"]["value"]
    secret_volumes = {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}
    mounts = [
        m
        for m in c["volumeMounts"]
        if m["name"] in secret_volumes and key_file.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert len(mounts) == 1, f"KALEYRA_API_KEY_FILE={key_file} is not inside a mounted Secret"
    mount = mounts[0]
    assert mount.get("readOnly") is True
    secret = secret_volumes[mount["name"]]
    file_name = key_file[len(mount["mountPath"].rstrip("/")) + 1 :]
    assert file_name in [item["path"] for item in secret.get("items", [])] or not secret.get("items")

    db = env["DATABASE_URL"]
    assert "value" not in db and db["valueFrom"]["secretKeyRef"]["name"]
    # No secret as a literal: no key variable, nothing key- or password-like given as a value.
    assert "KALEYRA_API_KEY" not in env
    for name, entry in env.items():
        if re.search(r"KEY|SECRET|PASSWORD|TOKEN|DATABASE_URL", name) and not name.endswith("_FILE"):
            assert "value" not in entry, f"{name} is a literal value; take it from a Secret"


def test_kubernetes_manifest_holds_no_secret_material() -> None:
    assert all(d.get("kind") != "Secret" for d in manifest_documents())
    assert backfill_job()["kind"] != "Secret"
    text = MANIFEST.read_text()
    assert not re.search(r"^\s*(stringData|data):", text, re.MULTILINE)
    assert not re.search(r"postgres(ql)?://[^\s'\"]*:[^\s'\"@]+@(?!db\.example\.com)", text), (
        "a database URL with a password outside the example"
    )


# --- (d) the systemd units' settings ---------------------------------------------------------


def test_service_is_a_hardened_oneshot_with_75_as_success() -> None:
    unit = parse_unit(SERVICE)
    service = unit["Service"]
    assert one(unit, "Service", "Type") == "oneshot"
    assert "75" in " ".join(service["SuccessExitStatus"]).split()
    assert one(unit, "Service", "TimeoutStartSec")
    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "StateDirectory": "blocklist-sync",
    }
    assert {key: one(unit, "Service", key) for key in expected} == expected
    assert set(one(unit, "Service", "RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_units_take_the_key_as_a_credential_never_as_a_value() -> None:
    for path in (SERVICE, SCHEDULER):
        unit = parse_unit(path)
        credential = one(unit, "Service", "LoadCredential")
        name, source = credential.split(":", 1)
        assert source == "/etc/blocklist-sync/kaleyra-api-key"
        assert f"KALEYRA_API_KEY_FILE=%d/{name}" in unit["Service"]["Environment"]
        assert one(unit, "Service", "EnvironmentFile") == "/etc/blocklist-sync/env"
        assert not re.search(r"KALEYRA_API_KEY=", path.read_text()), path.name


def test_service_may_write_only_its_metrics_directory() -> None:
    unit = parse_unit(SERVICE)
    argv = exec_argv(one(unit, "Service", "ExecStart"))
    metrics_file = Path(argv[argv.index("--metrics-file") + 1])
    assert metrics_file.is_absolute() and metrics_file.suffix == ".prom"
    # The file is replaced by rename, so its directory must be writable under ProtectSystem=strict.
    assert unit["Service"]["ReadWritePaths"] == [str(metrics_file.parent)]


def test_timer_is_hourly_persistent_and_spread() -> None:
    unit = parse_unit(TIMER)
    assert one(unit, "Timer", "Persistent") == "true"
    assert one(unit, "Timer", "RandomizedDelaySec")
    assert one(unit, "Timer", "Unit") == SERVICE.name
    assert one(unit, "Install", "WantedBy") == "timers.target"
    calendar_elapses(one(unit, "Timer", "OnCalendar"), 1)  # systemd accepts it


def test_all_four_schedules_agree() -> None:
    """The timer, the crontab, the CronJob and the scheduler all fire at the same times."""
    elapses = calendar_elapses(one(parse_unit(TIMER), "Timer", "OnCalendar"), 3)
    assert all(e.minute == 15 and e.second == 0 for e in elapses)
    assert [b - a for a, b in itertools.pairwise(elapses)] == [dt.timedelta(hours=1)] * 2
    scheduler_argv = exec_argv(one(parse_unit(SCHEDULER), "Service", "ExecStart"))
    expressions = {
        "crontab": cron_lines()[1][0][0],
        "CronJob": cronjob()["spec"]["schedule"],
        "scheduler": scheduler_argv[scheduler_argv.index("--cron") + 1],
    }
    for where, expression in expressions.items():
        assert fire_times(expression, elapses[0] - dt.timedelta(seconds=1), 3) == elapses, where


def test_scheduler_is_a_restarting_long_running_hardened_service() -> None:
    unit = parse_unit(SCHEDULER)
    assert one(unit, "Service", "Type") in ("simple", "exec")
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    assert one(unit, "Service", "TimeoutStopSec") == "2min"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    service_hardening = {
        key: values
        for key, values in parse_unit(SERVICE)["Service"].items()
        if key.startswith(
            (
                "Protect",
                "Private",
                "Restrict",
                "NoNew",
                "Lock",
                "Memory",
                "SystemCall",
                "Capability",
                "DynamicUser",
            )
        )
    }
    assert {key: unit["Service"].get(key) for key in service_hardening} == service_hardening


# --- (e) the image and the other manifests ------------------------------------------------

DOCKERFILE = REPO / "Dockerfile"
MIGRATE_JOB = CRON / "kubernetes-migrate-job.yaml"
SHARDED = CRON / "kubernetes-cronjob-sharded.yaml"
KUSTOMIZATION = CRON / "kustomization.yaml"


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def one_yaml(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, path.name
    [doc] = docs
    assert isinstance(doc, dict), path.name
    return doc


def version() -> str:
    found = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert found is not None
    return found.group(1)


def dockerfile_args() -> dict[str, str]:
    return dict(args.split("=", 1) for op, args in dockerfile() if op == "ARG" and "=" in args)


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each from its FROM on."""
    found: list[list[tuple[str, str]]] = []
    for op, args in dockerfile():
        if op == "FROM":
            found.append([])
        if found:
            found[-1].append((op, args))
    return found


def test_dockerfile_is_slim_non_root_with_blocklist_sync_as_entrypoint() -> None:
    build, final = stages()
    base = dockerfile_args()["PYTHON_IMAGE"]
    # An exact Python release, not a floating minor version (a digest may follow).
    assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build") and final[0] == ("FROM", "${PYTHON_IMAGE}")
    user = [args for op, args in final if op == "USER"]
    assert user and user[-1].split(":")[0] == "10001"
    assert [args for op, args in final if op == "ENTRYPOINT"] == ['["blocklist-sync"]']
    # The uid the manifests run as is the one the image creates.
    for manifest in (MANIFEST, MIGRATE_JOB, SHARDED):
        text = manifest.read_text()
        assert "runAsUser: 10001" in text and "runAsGroup: 10001" in text, manifest.name


def test_the_image_carries_oci_labels_that_match_the_project() -> None:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', text))
    assert {"title", "description", "version", "licenses", "base.name"} <= {
        k.removeprefix("org.opencontainers.image.") for k in labels
    }
    assert dockerfile_args()["VERSION"] == version()
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    base = dockerfile_args()["PYTHON_IMAGE"].split("@")[0]
    assert labels["org.opencontainers.image.base.name"] == f"docker.io/library/{base}"


def test_the_image_installs_only_locked_hashed_dependencies_and_the_built_wheel() -> None:
    _, final = stages()
    installs = [args for op, args in final if op == "RUN" and "pip install" in args]
    assert installs == [
        "pip install --require-hashes --no-deps -r /tmp/requirements.lock && rm /tmp/requirements.lock",
        "pip install --no-deps --no-index /tmp/wheels/*.whl && rm -rf /tmp/wheels",
    ]
    assert ("COPY", "--from=build /wheels/ /tmp/wheels/") in final


LOCK = REPO / "requirements.lock"
TEST_LOCK = REPO / "requirements-test.lock"


def locked(lock: Path = LOCK) -> dict[str, tuple[str, list[str]]]:
    """A pip-compile lock as {normalised name: (version, hashes)}."""
    from packaging.utils import canonicalize_name

    pins: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\s*\\\n\s*", " ", lock.read_text())
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        found = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?: --hash=sha256:[0-9a-f]{64})*)", line)
        assert found is not None, f"{lock.name}: not an exact, hashed pin: {line}"
        name, pinned, hashes = found.groups()
        pins[canonicalize_name(name)] = (pinned, hashes.split())
    return pins


def assert_lock_covers(lock: Path, specs: list[str]) -> None:
    """Without the network: every requirement in ``specs``, and every dependency of those
    (their extras included, read from the installed packages' metadata), is pinned in ``lock``
    at a version the specifier allows, with hashes; nothing else is."""
    import importlib.metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = locked(lock)
    assert all(hashes for _, hashes in pins.values())
    wanted: set[str] = set()
    todo: list[tuple[Requirement, tuple[str, ...]]] = [(Requirement(spec), ()) for spec in specs]
    # The image's Python, on Linux, whatever runs the tests.
    environment = {str(k): str(v) for k, v in default_environment().items()}
    environment.update(python_version="3.11", python_full_version="3.11.0", sys_platform="linux")
    while todo:
        requirement, extras = todo.pop()
        if requirement.marker and not any(
            requirement.marker.evaluate({**environment, "extra": extra}) for extra in (*extras, "")
        ):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, (
            f"{requirement} is not in {lock.name}: run pip-compile (docs/developers.md, 'The locks')"
        )
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"{lock.name} pins {name}=={pins[name][0]}, outside {requirement}"
        )
        if name in wanted and not requirement.extras:
            continue
        wanted.add(name)
        for spec in importlib.metadata.requires(requirement.name) or []:
            todo.append((Requirement(spec), tuple(requirement.extras)))
    assert set(pins) - wanted == set(), f"{lock.name} pins what nothing requires: run pip-compile"
    header = lock.read_text()
    assert "pip-compile" in header and "--generate-hashes" in header
    # Made for the image's Python.
    minor = re.match(r"python:(3\.\d+)", dockerfile_args()["PYTHON_IMAGE"])
    assert minor is not None and f"with Python {minor.group(1)}" in header


def project() -> dict[str, Any]:
    import tomllib

    table: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return table


def test_the_lock_file_agrees_with_pyproject() -> None:
    """The image's lock: the runtime dependencies and theirs, nothing more."""
    assert_lock_covers(LOCK, project()["dependencies"])


def test_the_test_lock_covers_the_test_install_and_agrees_with_the_image() -> None:
    """The README's test command installs from requirements-test.lock, so a new release of any
    dependency cannot change what CI runs: it pins the runtime and the test dependencies (and
    theirs), and every runtime package at the very version the image installs."""
    assert_lock_covers(TEST_LOCK, [*project()["dependencies"], *project()["optional-dependencies"]["test"]])
    image, tests = locked(LOCK), locked(TEST_LOCK)
    assert {name: tests[name][0] for name in image} == {name: pin for name, (pin, _) in image.items()}, (
        "requirements-test.lock and requirements.lock pin different runtime releases: "
        "regenerate both (docs/developers.md, 'The locks')"
    )
    readme = (REPO / "README.md").read_text()
    assert "pip install -q --require-hashes -r requirements-test.lock" in readme


def test_every_manifest_runs_the_image_the_dockerfile_builds() -> None:
    build = re.search(r"docker build -t (\S+) \.", DOCKERFILE.read_text())
    assert build is not None
    built = build.group(1)
    assert built.endswith(f":{version()}")
    specs = {
        "CronJob": pod_spec(cronjob()["spec"]["jobTemplate"]["spec"]),
        "backfill": pod_spec(backfill_job()["spec"]),
        "migrate": pod_spec(one_yaml(MIGRATE_JOB)["spec"]),
        "sharded": pod_spec(one_yaml(SHARDED)["spec"]["jobTemplate"]["spec"]),
        "review": review_pod()["spec"],
    }
    assert {where: container(spec)["image"] for where, spec in specs.items()} == dict.fromkeys(specs, built)


@pytest.mark.image
def test_the_image_install_and_entrypoint_work_in_a_fresh_venv(tmp_path: Path, make_database: Any) -> None:
    """What `docker build` does, minus Docker: the build stage's COPY steps and wheel, then the
    final stage's installs (the lock with --require-hashes, the wheel with no index), and the
    entrypoint, from a directory outside the checkout (the migrations must travel)."""
    build, _ = stages()
    src = tmp_path / "src"
    src.mkdir()
    for op, args in build:
        if op == "COPY":
            *sources, dest = args.split()
            for source in sources:
                origin = REPO / source
                target = src / (origin.name if dest.endswith("/") or dest == "./" else dest)
                if origin.is_dir():
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(origin, target)
    assert ("RUN", "pip wheel --no-deps --wheel-dir /wheels .") in build
    wheels = tmp_path / "wheels"

    def pip(*args: str, python: str = sys.executable) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "--python", python, *args],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr

    pip("wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), str(src))
    # The image's pip installs into a fresh environment; this one's pip does it here (`--python`),
    # which spares seeding the venv with a pip of its own (ensurepip: ~5 s of CPU).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin/python")
    pip("install", "-q", "--require-hashes", "--no-deps", "-r", str(LOCK), python=python)
    pip("install", "-q", "--no-deps", "--no-index", *map(str, wheels.glob("*.whl")), python=python)
    entrypoint = str(venv / "bin/blocklist-sync")
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [entrypoint, *args], env=bare_env(**env), cwd=work, capture_output=True, text=True, timeout=120
        )

    assert run("--version").stdout.strip() == f"blocklist-sync, version {version()}"
    url = make_database()
    migrated = run("migrate", DATABASE_URL=url)
    assert migrated.returncode == 0 and migrated.stdout.strip().endswith(
        f"schema upgraded from empty to {database.head_revision()}"
    ), migrated.stderr
    assert run("check").returncode == 2  # no settings: a configuration error, as the pod would see


def test_the_migrate_job_is_a_real_manifest_that_migrates(make_database: Any) -> None:
    job = one_yaml(MIGRATE_JOB)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["generateName"]
    spec = pod_spec(job["spec"])
    c = container(spec)
    assert c["command"] == ["blocklist-sync", "migrate"]
    assert env_of(c)["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "blocklist-sync",
        "key": "database-url",
    }
    assert spec["restartPolicy"] == "Never" and spec["securityContext"]["runAsNonRoot"] is True
    url = make_database()
    result = subprocess.run(
        [str(console_script()), *c["command"][1:]],
        env=bare_env(DATABASE_URL=url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "# apiVersion: batch/v1\n# kind: Job\n# metadata:\n#   generateName: blocklist-sync-migrate"
        not in MANIFEST.read_text()
    )


def test_the_sharded_cronjob_is_an_indexed_job_whose_shards_cover_the_pairs() -> None:
    job = kustomized_sharded_cronjob()
    assert job["kind"] == "CronJob" and job["spec"]["schedule"] == SCHEDULE
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    job_spec = job["spec"]["jobTemplate"]["spec"]
    assert job_spec["completionMode"] == "Indexed"
    c = container(pod_spec(job_spec))
    env = env_of(c)
    count = int(env["BLOCKLIST_SYNC_SHARD"]["value"])
    assert job_spec["completions"] == job_spec["parallelism"] == count > 1
    # Every index Kubernetes will give is a shard the CLI accepts.
    from sync.settings import Shard, parse_shard

    assert [parse_shard(str(count), {"JOB_COMPLETION_INDEX": str(k)}, "--shard") for k in range(count)] == [
        Shard(k, count) for k in range(count)
    ]
    assert_cli_accepts(c["command"], "sharded CronJob")
    config = env["BLOCKLIST_SYNC_CONFIG"]["value"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert str(Path(config).parent) in mounts
    rules = job_spec["podFailurePolicy"]["rules"]
    assert not any(75 in r.get("onExitCodes", {}).get("values", []) for r in rules)


def test_a_stop_is_not_a_failure_for_systemd_or_kubernetes() -> None:
    assert "143" in one(parse_unit(SERVICE), "Service", "SuccessExitStatus").split()
    for spec in (cronjob()["spec"]["jobTemplate"]["spec"], one_yaml(SHARDED)["spec"]["jobTemplate"]["spec"]):
        ignored = {
            code
            for rule in spec["podFailurePolicy"]["rules"]
            if rule["action"] == "Ignore"
            for code in rule.get("onExitCodes", {}).get("values", [])
        }
        assert 143 in ignored


def test_the_scheduler_checks_before_it_starts() -> None:
    argv = exec_argv(one(parse_unit(SCHEDULER), "Service", "ExecStartPre"))
    assert argv[:2] == [INSTALLED_BINARY, "check"]
    assert_cli_accepts(argv, "ExecStartPre")


# --- (f) one deadline order ------------------------------------------------------------------

# What a sweep stopped by the program needs to write its run row and exit, and what a pod
# needs to start: the program's deadline must come at least this long before the kill.
DEADLINE_MARGIN = dt.timedelta(minutes=5)


def systemd_timespan(value: str) -> dt.timedelta:
    """A systemd time span (``50min``, ``1h 30min``, ``3000``) as systemd reads it."""
    result = subprocess.run(
        [systemd_analyze(), "timespan", value], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"μs: (\d+)", result.stdout)
    assert found is not None, result.stdout
    return dt.timedelta(microseconds=int(found.group(1)))


def app_deadlines(argv: list[str], where: str) -> tuple[dt.timedelta, dt.timedelta]:
    """The --sweep-timeout and --run-timeout a command line passes, as the program reads them."""
    from sync.settings import parse_duration

    for flag in ("--sweep-timeout", "--run-timeout"):
        assert flag in argv, f"{where} passes no {flag}: the program's own deadline must come first"
    sweep, run = (parse_duration(argv[argv.index(f) + 1], f) for f in ("--sweep-timeout", "--run-timeout"))
    return dt.timedelta(seconds=sweep), dt.timedelta(seconds=run)


def killed_jobs() -> dict[str, tuple[list[str], dt.timedelta]]:
    """Every shipped file that kills a sweep after a time of its own: its command, its kill."""
    unit = parse_unit(SERVICE)
    found = {
        SERVICE.name: (
            exec_argv(one(unit, "Service", "ExecStart")),
            systemd_timespan(one(unit, "Service", "TimeoutStartSec")),
        )
    }
    for path, job in ((MANIFEST, cronjob()), (SHARDED, one_yaml(SHARDED))):
        job_spec = job["spec"]["jobTemplate"]["spec"]
        command = container(pod_spec(job_spec))["command"]
        found[path.name] = (command, dt.timedelta(seconds=job_spec["activeDeadlineSeconds"]))
    return found


@pytest.mark.parametrize("name", [SERVICE.name, MANIFEST.name, SHARDED.name])
def test_the_programs_deadlines_come_before_the_supervisors_kill(name: str) -> None:
    """A slow sweep ends `failed` with the program's reason, not killed and `cancelled`:
    sweep timeout <= run timeout < the kill, with a margin."""
    argv, kill = killed_jobs()[name]
    sweep, run = app_deadlines(argv, name)
    assert sweep <= run, f"{name}: --sweep-timeout {sweep} is longer than --run-timeout {run}"
    assert run + DEADLINE_MARGIN <= kill, (
        f"{name}: --run-timeout {run} is not {DEADLINE_MARGIN} before the kill at {kill}"
    )
    assert_cli_accepts(argv, name)


def test_every_file_that_kills_a_sweep_is_checked_for_the_order() -> None:
    """A kill added to another shipped file must join the check above."""
    killers = {
        path.name
        for path in CRON.iterdir()
        if re.search(r"^\s*(TimeoutStartSec=|activeDeadlineSeconds:)", path.read_text(), re.MULTILINE)
        and "run" in path.read_text()
    }
    # The review pod's deadline ends a pod that only waits (`sleep`) for commands by hand.
    assert container(review_pod()["spec"])["command"][0] == "sleep"
    assert killers - {MIGRATE_JOB.name, REVIEW_POD.name} == set(killed_jobs())


# --- (g) the kustomize base ------------------------------------------------------------------


def field(document: dict[str, Any], path: str) -> tuple[Any, str]:
    """The mapping holding ``path`` (kustomize's field path: ``a.b.[name=x].c``) and its last key."""
    parts = re.findall(r"\[[^\]]+\]|[^.\[\]]+", path)
    node: Any = document
    for part in parts[:-1]:
        if part.startswith("["):
            key, value = part[1:-1].split("=", 1)
            [node] = [item for item in node if item.get(key) == value]
        else:
            node = node[part]
    return node, parts[-1]


def kustomization() -> dict[str, Any]:
    doc = yaml.safe_load(KUSTOMIZATION.read_text())
    assert isinstance(doc, dict)
    return doc


def kustomized_sharded_cronjob() -> dict[str, Any]:
    """What `kubectl kustomize cron/` makes of the sharded CronJob: the manifest with the
    kustomization's replacements applied (the target keeps its type, as kustomize does)."""
    config = kustomization()
    [generator] = config["configMapGenerator"]
    data = dict(literal.split("=", 1) for literal in generator["literals"])
    job = one_yaml(SHARDED)
    for replacement in config["replacements"]:
        source = replacement["source"]
        assert (source["kind"], source["name"]) == ("ConfigMap", generator["name"])
        value = data[source["fieldPath"].removeprefix("data.")]
        for target in replacement["targets"]:
            assert target["select"] == {"kind": job["kind"], "name": job["metadata"]["name"]}
            for path in target["fieldPaths"]:
                node, key = field(job, path)
                node[key] = type(node[key])(value)
    return job


def test_the_shard_count_is_written_once_and_the_rest_derive_from_it() -> None:
    config = kustomization()
    assert config["resources"] == [SHARDED.name]
    [generator] = config["configMapGenerator"]
    assert generator["options"]["annotations"] == {"config.kubernetes.io/local-config": "true"}
    [count] = [literal.split("=", 1)[1] for literal in generator["literals"] if literal.startswith("count=")]
    assert int(count) > 1
    # Every place the Job needs N is a replacement target ...
    [replacement] = config["replacements"]
    assert sorted(replacement["targets"][0]["fieldPaths"]) == sorted(
        [
            "spec.jobTemplate.spec.completions",
            "spec.jobTemplate.spec.parallelism",
            "spec.jobTemplate.spec.template.spec.containers.[name=blocklist-sync].env.[name=BLOCKLIST_SYNC_SHARD].value",
        ]
    )
    # ... so N is written once in the two files: the manifest alone is one consistent shard.
    raw = one_yaml(SHARDED)["spec"]["jobTemplate"]["spec"]
    assert (raw["completions"], raw["parallelism"]) == (1, 1)
    assert env_of(container(pod_spec(raw)))["BLOCKLIST_SYNC_SHARD"]["value"] == "1"
    assert re.findall(rf"\b{count}\b", KUSTOMIZATION.read_text() + SHARDED.read_text()).count(count) == 1
    rendered = kustomized_sharded_cronjob()["spec"]["jobTemplate"]["spec"]
    assert rendered["completions"] == rendered["parallelism"] == int(count)
    assert env_of(container(pod_spec(rendered)))["BLOCKLIST_SYNC_SHARD"]["value"] == count


def test_kubectl_kustomize_renders_what_the_test_above_reads() -> None:
    """Where kubectl is installed, its kustomize agrees with the reading above (kubectl is not
    a prerequisite of the tests: without it this one is skipped)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the YAML checks above still ran")
    result = subprocess.run([kubectl, "kustomize", str(CRON)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    assert [d["kind"] for d in docs] == ["CronJob"]  # the ConfigMap is local: never applied
    assert docs[0] == kustomized_sharded_cronjob()


def test_the_manifests_state_the_kubernetes_version_they_need() -> None:
    readme = documentation()
    assert "### Kubernetes versions" in readme
    for path, version in ((MANIFEST, "1.27"), (SHARDED, "1.29"), (KUSTOMIZATION, "1.29")):
        assert (
            f"Kubernetes {version} or later" in path.read_text()
            or f"Kubernetes {version}+" in path.read_text()
        ), path.name


# --- (h) the env files -----------------------------------------------------------------------

ENV_FILE = CRON / "blocklist-sync.env"


def systemd_environment_file(text: str) -> dict[str, str]:
    """``EnvironmentFile=`` as systemd reads it: ``#`` and ``;`` start a comment only at the
    start of a line, a value wholly in single or double quotes loses them, and anything else
    after the ``=`` (an inline ``# comment`` included) is the value."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def shipped_env_files() -> dict[str, str]:
    """Every env file shipped: the file in cron/ and each README block marked as one."""
    readme = documentation()
    blocks = re.findall(r"<!-- env-file: (\S+) -->\n```sh\n(.*?)```", readme, re.DOTALL)
    assert blocks, "the README's env file example is no longer marked <!-- env-file: ... -->"
    files = {f"README ({name})": text for name, text in blocks}
    files[ENV_FILE.name] = ENV_FILE.read_text()
    return files


@pytest.mark.parametrize("name", sorted(shipped_env_files()))
def test_every_shipped_env_file_loads_as_systemd_and_sh_read_it(name: str, tmp_path: Path) -> None:
    """No value carries a comment systemd would keep; the settings validate as the job reads
    them; /bin/sh (the crontab's `set -a; . file`) reads the same values."""
    from sync.settings import AccountSource

    text = shipped_env_files()[name]
    env = systemd_environment_file(text)
    for key, value in env.items():
        assert not re.search(r"\s[#;]", value), f"{name}: {key}'s value would be {value!r} for systemd"
    assert "KALEYRA_API_KEY" not in env and "KALEYRA_API_KEY_FILE" not in env
    # The key comes from the credential, not this file; with one, every setting is validated.
    [account] = AccountSource().load({**env, "KALEYRA_API_KEY": "k" * 32})  # ConfigError on a bad value
    assert (account.sid, account.channels) == ("HXXXXXXX071US", ("sms", "whatsapp", "voice"))
    assert account.base_url == "https://api.in.kaleyra.io/v1"
    path = tmp_path / "env"
    path.write_text(text)
    sh = subprocess.run(
        ["/bin/sh", "-c", f'set -a && . "{path}" && set +a && env -0'],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sh.returncode == 0, sh.stderr
    from_sh = dict(item.split("=", 1) for item in sh.stdout.split("\0") if "=" in item)
    assert {key: from_sh.get(key) for key in env} == env


def test_the_readme_env_file_is_the_shipped_one() -> None:
    [(name, block)] = [(n, t) for n, t in shipped_env_files().items() if n.startswith("README")]
    lines = [line for line in ENV_FILE.read_text().splitlines() if line and not line.startswith("#")]
    assert name == f"README ({ENV_FILE.relative_to(REPO)})"
    assert [line for line in block.splitlines() if line and not line.startswith("#")] == lines


def test_the_systemd_reading_above_is_not_vacuous() -> None:
    env = systemd_environment_file("KALEYRA_REGION=in   # in, sg, eu or na\n")
    assert env == {"KALEYRA_REGION": "in   # in, sg, eu or na"}
    from sync.settings import AccountSource, ConfigError

    with pytest.raises(ConfigError, match="KALEYRA_REGION"):
        AccountSource().load({"KALEYRA_SID": "HXXXXXXX071US", "KALEYRA_API_KEY": "k" * 32, **env})


# --- (i) commands by hand (issue 29, item 5) ---------------------------------------------------


def test_the_review_pod_has_the_cronjobs_settings_and_sandbox_and_runs_nothing_itself() -> None:
    """The pod the docs and the alerts send a Kubernetes operator to runs `status` and a review
    with exactly the CronJob's settings, mounts and sandbox; it only waits, for at most an
    hour, and keeps the plan file between the dry run and the forced run (/tmp)."""
    pod = review_pod()
    spec = pod["spec"]
    job = pod_spec(cronjob()["spec"]["jobTemplate"]["spec"])
    c, scheduled = container(spec), container(job)
    assert env_of(c) == env_of(scheduled)
    for key in ("image", "volumeMounts", "securityContext", "resources"):
        assert c[key] == scheduled[key], key
    for key in ("securityContext", "volumes", "automountServiceAccountToken"):
        assert spec[key] == job[key], key
    assert c["command"] == ["sleep", "3600"] and spec["activeDeadlineSeconds"] == 3600
    assert "/tmp" in [m["mountPath"] for m in c["volumeMounts"]]
    # Every blocklist-sync command its comment shows gets past argument parsing.
    commands = re.findall(
        r"^#\s+kubectl exec blocklist-sync-review -- (blocklist-sync .+)$", REVIEW_POD.read_text(), re.M
    )
    assert len(commands) == 3
    # `status` reads no account (it would not stop at KALEYRA_SID), and --plan reads its file at
    # once: the dry run is the one that shows its arguments parse.
    assert_cli_accepts(shlex.split(commands[1]), "review pod")


def test_the_env_file_reader_reads_the_shipped_env_file_as_systemd_does(tmp_path: Path) -> None:
    from sync.settings import ConfigError, read_env_file

    for name, text in shipped_env_files().items():
        path = tmp_path / "env"
        path.write_text(text)
        assert read_env_file(str(path), "--env-file") == systemd_environment_file(text), name
    path = tmp_path / "env"
    path.write_text(
        "KALEYRA_REGION=in   # in, sg, eu or na\n; a comment\nDATABASE_URL='postgresql://x@h/d'\n"
    )
    assert read_env_file(str(path), "--env-file") == systemd_environment_file(path.read_text())
    path.write_text("# settings\nexport DATABASE_URL=postgresql://u:pw@h/d\n")
    with pytest.raises(ConfigError, match=r"^--env-file: line 2 of .* is not KEY=value") as refused:
        read_env_file(str(path), "--env-file")
    assert "pw" not in str(refused.value)
