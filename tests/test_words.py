"""Words that match the code (issue 29, item 8): the docs name every metric the program
publishes, every section a help text, a comment or a link points to exists, the API key file
has one name, the deprecated metrics say the release that drops them, and ``simulate`` on a
port in use says so in one line.

The docs are read as an operator reads them; the metrics come from a real run.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import click
from packaging.version import Version

from sync import __version__
from sync.cli import cli
from sync.simulator import Simulator
from sync.telemetry import Metrics
from tests.conftest import REPO, cli_env, documentation, invoke, numbers

PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
# Files whose comments and strings point operators to a page: the deployment files, the
# Dockerfile and the program (its help texts are checked as click shows them, too).
POINTING = [
    *sorted((REPO / "cron").iterdir()),
    REPO / "Dockerfile",
    *sorted((REPO / "sync").rglob("*.py")),
]
# ``docs/operators.md#configuration``, ``README.md#quick-start``, ``docs/analysts.md``.
REFERENCE = re.compile(r"\b((?:README|CHANGELOG|docs/[a-z-]+)\.md)(#[a-z0-9_-]+)?")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # no headings in code
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def help_texts() -> Iterator[tuple[str, str]]:
    """(where, text) for every help text click shows: each command's and each option's."""
    for name, command in cli.commands.items():
        yield f"{name} --help", command.help or ""
        for param in command.params:
            if isinstance(param, click.Option):
                yield f"{name} {param.opts[-1]}", param.help or ""


def points_to(page: str, anchor: str | None) -> str | None:
    """Why a reference to ``page`` (from the checkout's root) and ``anchor`` leads nowhere."""
    target = REPO / page
    if not target.is_file():
        return f"no file {page}"
    if anchor and anchor.lstrip("#") not in anchors(target):
        return f"no section {anchor} in {page}"
    return None


def test_every_section_a_help_text_a_comment_or_a_link_points_to_exists() -> None:
    broken = []
    for path in POINTING:
        text = path.read_text()
        # The old form (README, "Deploying") cannot be checked, and the sections moved: refused.
        broken += [
            f"{path.name}: {m.group(0)}" for m in re.finditer(r'README, "[^"]*"|see (the )?README\b', text)
        ]
        for m in REFERENCE.finditer(text):
            why = points_to(m.group(1), m.group(2))
            broken += [f"{path.name}: {m.group(0)}: {why}"] if why else []
    for where, text in help_texts():
        broken += [f"{where}: {text}"] if re.search(r"\bREADME\b(?!\.md#)", text) else []
        for m in REFERENCE.finditer(text):
            why = points_to(m.group(1), m.group(2))
            broken += [f"{where}: {m.group(0)}: {why}"] if why else []
    for page in PAGES:
        for m in re.finditer(r"\]\(([^)\s]+)\)", page.read_text()):
            target = m.group(1)
            if re.match(r"[a-z]+:", target):  # https:, mailto:: not ours to check
                continue
            file, _, anchor = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            why = points_to(str(resolved.relative_to(REPO)), anchor or None)
            broken += [f"{page.name}: ({target}): {why}"] if why else []
    assert broken == []


def test_a_help_text_that_points_to_a_page_names_one_that_exists() -> None:
    """Not vacuous: the --config help points to the configuration section."""
    config = next(text for where, text in help_texts() if where == "run --config")
    assert "docs/operators.md#configuration" in config
    assert (
        points_to("docs/operators.md", "#no-such-section")
        == "no section #no-such-section in docs/operators.md"
    )


def test_the_api_key_file_has_one_name_everywhere() -> None:
    """The key file an operator creates, the credential systemd loads and the Secret's key
    are all ``kaleyra-api-key``: a copied command must find the file another one made."""
    texts = [page.read_text() for page in PAGES] + [p.read_text() for p in (REPO / "cron").iterdir()]
    names: set[str] = set()
    for text in texts:
        names |= {Path(m).name for m in re.findall(r"KALEYRA_API_KEY_FILE=(\S+)", text)}
        names |= set(re.findall(r"/etc/blocklist-sync/([\w.-]*key[\w.-]*)", text))
        names |= set(re.findall(r"LoadCredential=([\w.-]+):", text))
        names |= set(re.findall(r"--from-file=([\w.-]*key[\w.-]*)=", text))
    names.discard("NAME")  # the docs' placeholder for one key per account
    assert names == {"kaleyra-api-key"}


def test_every_published_metric_is_in_the_docs(sim: Simulator, pg_url: str, tmp_path: Path) -> None:
    """Every series a real run publishes is documented: those per account and channel in the
    metrics table (``blocklist_sync_x`` or its shorthand ``_x`` beside a full name), the others
    in the same section."""
    sim.add("sms", numbers(3))
    metrics = tmp_path / "m.prom"
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    assert invoke("run", "--metrics-file", str(metrics), env=env).returncode == 0
    published = metrics.read_text()
    docs = documentation()
    section = docs[docs.index("### Logs and metrics") : docs.index("### APScheduler's log lines")]
    table = section[section.index("| Metric | Meaning |") : section.index("Besides those")]
    missing = []
    for name, kind in re.findall(r"^# TYPE (blocklist_sync_\w+) (\w+)$", published, re.MULTILINE):
        per_channel = re.search(rf"^{name}\{{account=", published, re.MULTILINE) is not None
        deprecated = name.removeprefix("blocklist_sync_") in Metrics.DEPRECATED
        where = table if per_channel and not deprecated else section
        spelled = (name, name + "_total") if kind == "counter" else (name,)
        short = [f"`{n.removeprefix('blocklist_sync')}`" for n in spelled]  # `_last_run_removed`
        if not any(f"`{n}`" in where or f"`{n}{{" in where for n in spelled) and not any(
            s in where for s in short
        ):
            missing.append(name)
    assert missing == [], missing


def test_the_deprecated_metrics_say_the_release_that_drops_them(tmp_path: Path) -> None:
    assert Version(Metrics.REMOVED_IN) > Version(__version__)
    metrics = Metrics()
    path = tmp_path / "m.prom"
    metrics.write_textfile(str(path))
    helps = re.findall(
        r"^# HELP blocklist_sync_(\w+) Deprecated \(removed in ([\d.]+)\)", path.read_text(), re.M
    )
    assert sorted(helps) == sorted((old, Metrics.REMOVED_IN) for old in Metrics.DEPRECATED)
    assert f"go in {Metrics.REMOVED_IN}" in documentation()
    assert f"they go in {Metrics.REMOVED_IN}" in (REPO / "CHANGELOG.md").read_text()


def test_simulate_on_a_port_in_use_is_one_line() -> None:
    host = "127.0.0.1"
    with socket.socket() as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("simulate", "--host", host, "--port", str(port), env=cli_env(None, None))
    assert result.returncode == 2
    assert result.stdout == ""  # no settings printed for a simulator that never listened
    assert result.stderr.splitlines() == [
        f"blocklist-sync: error: simulate: cannot listen on {host} port {port} (Address already in use); "
        "pick a free port with --port, or another --host"
    ]
