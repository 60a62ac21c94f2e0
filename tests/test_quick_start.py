"""The README's "Try it on the simulator" (issue 29, item 7), run line by line as written: the
simulator, a sweep into PostgreSQL, a change through Change Blocklist Status over HTTP, a second
sweep, ``status``, ``lookup`` and one SQL query. Only the port (a free one, so parallel runs do
not collide) and the database (an empty one of the test's) are swapped; the background job the
block starts with ``&`` and ends with ``kill %1`` is started and stopped around the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, beside_simulate, free_port, require_tool

README_DATABASE = "postgresql://postgres@127.0.0.1:5432/kbs_try"


def quick_start() -> list[str]:
    """The block's lines, as written (a backslash continues a command on the next)."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- example: quick-start-simulator -->")
    body = readme.index("```sh\n", start) + len("```sh\n")
    return readme[body : readme.index("```", body)].splitlines()


@pytest.mark.slow
def test_the_readme_quick_start_on_the_simulator_runs_as_written(
    make_database: Callable[..., str], tmp_path: Path
) -> None:
    require_tool("psql", install="Debian/Ubuntu: apt-get install postgresql-client")
    require_tool("curl", install="Debian/Ubuntu: apt-get install curl")
    lines = quick_start()
    assert lines[0].startswith("blocklist-sync simulate ") and " & " in lines[0]
    assert lines[-1].startswith("kill %1")
    port = str(free_port())
    database = make_database()  # empty, as the reader's
    script = "\n".join(lines[1:-1]).replace("8099", port).replace(README_DATABASE, database)
    assert "\n".join(lines).count(README_DATABASE) == 1 and database in script
    simulate = lines[0].split("&")[0].replace("8099", port).split()
    result, printed = beside_simulate(simulate, script, port=port, cwd=tmp_path, timeout=180)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # The settings the block exports are the ones the simulator printed.
    for setting in re.findall(r"(KALEYRA_\w+=\S+)", lines[1]):
        assert setting.replace("8099", port) in printed
    assert "HXSIM000000001IN sms: succeeded, 500 blocklisted, +500 -0" in out
    assert "HXSIM000000001IN sms: succeeded, 500 blocklisted, +1 -1" in out
    # status: one channel, swept successfully, what its last sweep applied
    [row] = [r for r in out.splitlines() if r.startswith("HXSIM000000001IN  sms")]
    assert row.split()[4:9] == ["succeeded", "1", "1", "0", "500"]
    assert '{"code": "CNT200", "message": "Blocklist status updated"' in out  # the change, accepted
    assert "+919000000001 (IN, +91): blocklisted now" in out
    assert "+917472659626 (IN, +91): seen before, not blocklisted now" in out
    assert re.search(r"^ added +\| \+919000000001 +\|", out, re.MULTILINE)
    assert re.search(r"^ removed +\| \+917472659626 +\|", out, re.MULTILINE)
    assert "(2 rows)" in out
