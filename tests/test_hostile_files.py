"""What an operator or an attacker hands the CLI besides the vendor's answers (issue 27, items
8 to 14): export files that are no export, times no clock could show, a key file given as an
export, output paths that are no regular file, plans from the future.

Each test drives the real CLI (:func:`~tests.conftest.invoke`) against a real PostgreSQL and,
where a sweep is the point, the simulator over real HTTP; each asserts what the operator sees
(exit code, one line) and what the tables hold.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from pathlib import Path

import pytest

from sync.simulator import Simulator
from sync.store import Store
from sync.vocabulary import Outcome
from tests.conftest import cli_env, invoke, numbers, rows, sweep

N = numbers(40)


def _sid() -> str:
    return f"HXFILES{uuid.uuid4().hex[:10].upper()}"


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``blocklist-sync: error:`` line a refusal prints, and nothing that looks like a
    traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("blocklist-sync: error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def write_csv(path: Path, listing: list[str]) -> Path:
    path.write_text("mobile\n" + "".join(f"{m}\n" for m in listing))
    return path


def _import(url: str, sid: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return invoke("import", "--account", sid, "--channel", "sms", *args, env=cli_env(None, url, **env))


def _count(url: str, table: str, sid: str) -> int:
    from sync import database

    engine = database.make_engine(url)
    return int(rows(engine, f"SELECT COUNT(*) FROM {table} WHERE account_sid = :a", a=sid)[0][0])


# -- 14. times out of range: one line, exit 2, in every command -------------------------------


@pytest.mark.parametrize("instant", ["0001-01-01T00:00+05:30", "9999-12-31T23:59-05:00"])
def test_lookup_at_a_time_utc_cannot_hold_is_one_line(
    instant: str, sim: Simulator, store: Store, pg_url: str
) -> None:
    sim.add("sms", N[:3])
    assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED
    result = invoke("lookup", N[0], "--at", instant, env=cli_env(None, pg_url))
    assert result.returncode == 2
    line = one_error_line(result)
    assert "--at" in line and "out of range" in line


def test_lookup_at_the_first_instant_utc_holds_answers(sim: Simulator, store: Store, pg_url: str) -> None:
    sim.add("sms", N[:3])
    assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED
    result = invoke("lookup", N[0], "--at", "0001-01-01T00:00Z", env=cli_env(None, pg_url))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # Before the channel's first observation: nothing was seen, so unknown (was uncertain).
    assert "at 0001-01-01 00:00:00 UTC: unknown: before this channel's coverage" in result.stdout


@pytest.mark.parametrize("instant", ["9999-12-31T23:59-05:00", "0001-01-01T00:00+05:30"])
def test_import_as_of_a_time_utc_cannot_hold_is_one_line(instant: str, pg_url: str, tmp_path: Path) -> None:
    sid = _sid()
    file = write_csv(tmp_path / "x.csv", N[:3])
    result = _import(pg_url, sid, "--as-of", instant, str(file))
    assert result.returncode == 2
    assert "out of range" in one_error_line(result)
    assert _count(pg_url, "sync_runs", sid) == 0


def test_a_time_in_a_file_name_utc_cannot_hold_is_one_line(pg_url: str, tmp_path: Path) -> None:
    sid = _sid()
    file = write_csv(tmp_path / "blocklist-sms-9999-12-31T2359-0500.csv", N[:3])
    result = _import(pg_url, sid, str(file))
    assert result.returncode == 2
    assert "out of range" in one_error_line(result)


# -- 10. --as-of after a plausible earliest time, and not in the future -----------------------


def test_an_as_of_before_the_earliest_plausible_time_is_one_line(pg_url: str, tmp_path: Path) -> None:
    """A typo (0026 for 2026) would write 2,000 years of history, and the daily views would
    count every day of them."""
    sid = _sid()
    file = write_csv(tmp_path / "x.csv", N[:3])
    result = _import(pg_url, sid, "--as-of", "0026-11-01T09:00Z", str(file))
    assert result.returncode == 2
    line = one_error_line(result)
    assert "0026-11-01T09:00:00Z" in line and "2000-01-01T00:00:00Z" in line and "--earliest" in line
    assert _count(pg_url, "sync_runs", sid) == 0
    named = write_csv(tmp_path / "blocklist-sms-1999-12-31T2359Z.csv", N[:3])
    assert _import(pg_url, sid, str(named)).returncode == 2
    assert _count(pg_url, "blocklist_periods", sid) == 0


def test_the_earliest_plausible_time_is_a_setting(pg_url: str, tmp_path: Path) -> None:
    sid = _sid()
    file = write_csv(tmp_path / "x.csv", N[:3])
    done = _import(
        pg_url,
        sid,
        "--as-of",
        "1998-05-01T00:00Z",
        str(file),
        BLOCKLIST_SYNC_IMPORT_EARLIEST="1990-01-01T00:00Z",
    )
    assert done.returncode == 0, done.stderr
    assert _count(pg_url, "blocklist_periods", sid) == 3
    refused = _import(
        pg_url, _sid(), "--earliest", "1999-01-01T00:00Z", "--as-of", "1998-05-01T00:00Z", str(file)
    )
    assert refused.returncode == 2
    assert "1998-05-01T00:00:00Z is before 1999-01-01T00:00:00Z" in one_error_line(refused)


def test_an_as_of_in_the_future_is_refused_before_any_file_is_read(pg_url: str, tmp_path: Path) -> None:
    """Checked against the database's clock before the files are read (a FIFO given as the
    file would otherwise say something else)."""
    import os

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    result = _import(pg_url, _sid(), "--as-of", "2999-01-01T00:00Z", str(fifo))
    assert result.returncode == 2 and "in the future" in one_error_line(result)


# -- 13. a plan from the future ------------------------------------------------------------


@pytest.mark.parametrize(
    ("made_at", "said"),
    [
        ("tomorrow", "made at"),
        ("2999-01-01T00:00:00+00:00", "made at 2999-01-01T00:00:00Z, after now"),
        ("9999-12-31T23:59:59-05:00", "is not a plan written by"),
    ],
)
def test_a_plan_made_in_the_future_is_refused_in_one_line(
    made_at: str, said: str, sim: Simulator, pg_url: str, tmp_path: Path
) -> None:
    """A plan's age is how it goes stale (--plan-max-age); one made "later than now" never
    would, so it could approve a sweep years after its review."""
    import json

    sim.add("sms", numbers(200))
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    assert invoke("run", env=env).returncode == 0
    sim.remove("sms", numbers(50))
    plan = tmp_path / "plan.json"
    assert invoke("run", "--dry-run", "--plan-out", str(plan), env=env).returncode == 0
    document = json.loads(plan.read_text())
    if made_at == "tomorrow":
        made_at = (dt.datetime.fromisoformat(document["made_at"]) + dt.timedelta(days=1)).isoformat()
    document["made_at"] = made_at
    plan.write_text(json.dumps(document))
    runs = _count(pg_url, "sync_runs", sim.sid)
    forced = invoke("run", "--force", "--plan", str(plan), env=env)
    assert forced.returncode == 2
    line = one_error_line(forced)
    assert said in line and forced.stderr.count("\n") == 1
    assert _count(pg_url, "sync_runs", sim.sid) == runs
    assert _count(pg_url, "blocklist_entries", sim.sid) == 200


# -- 12. outputs: only regular files are created or replaced ---------------------------------


def _not_regular_paths(tmp_path: Path) -> dict[str, Path]:
    """A FIFO another program may be reading, and a symbolic link to a file of someone else's
    (``/dev/stdout`` is a link too; as root ``/dev/null`` is a device: not tried here)."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours\n")
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    return {"a FIFO (named pipe)": fifo, "a symbolic link": link}


@pytest.mark.parametrize("flag", ["--summary-json", "--plan-out", "--metrics-file"])
@pytest.mark.parametrize("kind", ["a FIFO (named pipe)", "a symbolic link"])
def test_an_output_path_that_is_no_regular_file_is_refused_at_start(
    flag: str, kind: str, sim: Simulator, pg_url: str, tmp_path: Path
) -> None:
    import stat

    sim.add("sms", N[:3])
    path = _not_regular_paths(tmp_path)[kind]
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="sms")
    extra = ["--dry-run"] if flag == "--plan-out" else []
    result = invoke("run", *extra, flag, str(path), env=env)
    assert result.returncode == 2
    line = one_error_line(result)
    assert f"{flag}: {path} is {kind}, not a regular file" in line
    assert _count(pg_url, "sync_runs", sim.sid) == 0  # refused before anything was swept
    mode = path.lstat().st_mode
    assert stat.S_ISFIFO(mode) if kind.startswith("a FIFO") else stat.S_ISLNK(mode)
    assert (tmp_path / "victim.txt").read_text() == "not yours\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.json", "victim.txt"]


def test_an_earlier_summary_is_replaced_whole_never_deleted_by_a_run_that_stops(
    sim: Simulator, pg_url: str, tmp_path: Path
) -> None:
    """A run stopped by a setting after the path was checked writes its own summary (no
    results, exit code 2, the line it printed) over the earlier one; it no longer deletes it
    first and leaves nothing."""
    import json

    summary = tmp_path / "summary.json"
    summary.write_text('{"exit_code": 0}\n')
    env = cli_env(sim, pg_url, KALEYRA_CHANNELS="fax")
    result = invoke("run", "--summary-json", str(summary), env=env)
    assert result.returncode == 2
    line = one_error_line(result)
    document = json.loads(summary.read_text())
    assert document["exit_code"] == 2 and document["results"] == []
    assert f"blocklist-sync: error: {document['error']}" == line
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left
    swept = invoke("run", "--summary-json", str(summary), env=cli_env(sim, pg_url, KALEYRA_CHANNELS="sms"))
    assert swept.returncode == 0 and json.loads(summary.read_text())["exit_code"] == 0


def test_a_path_that_became_no_regular_file_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    """The last look before the rename: what appeared at the path since the start stays."""
    import os
    import stat

    from sync.files import write_atomically

    fifo = tmp_path / "summary.json"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="it is a FIFO"):
        write_atomically(str(fifo), "{}\n")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# -- 11. no piece of a configured secret is printed, whatever file is read --------------------


def _pieces(secret: str, size: int = 8) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def _leaked(secret: str, text: str) -> set[str]:
    return {piece for piece in _pieces(secret) if piece in text}


KEY_SHAPES = {
    "plain": "Ak" + uuid.uuid4().hex + uuid.uuid4().hex,
    "a comma inside (CSV cuts it in cells)": "Ak" + uuid.uuid4().hex + "," + uuid.uuid4().hex,
    "starts like JSON (the parser quotes 30 characters of it)": '["Ak' + uuid.uuid4().hex + uuid.uuid4().hex,
    "a quote inside": 'Ak"' + uuid.uuid4().hex + '",' + uuid.uuid4().hex,
}


@pytest.mark.parametrize("shape", list(KEY_SHAPES))
@pytest.mark.parametrize("configured", ["KALEYRA_API_KEY_FILE", "a config file"])
def test_the_api_key_file_given_to_import_shows_no_piece_of_the_key(
    shape: str, configured: str, pg_url: str, tmp_path: Path
) -> None:
    """A glob over the credentials directory hands import the key file: whatever import says
    about it, no 8 characters of the configured key are among them."""
    key = KEY_SHAPES[shape]
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    key_file = credentials / "kaleyra"
    key_file.write_text(key + "\n")
    if configured == "a config file":
        config = tmp_path / "accounts.toml"
        config.write_text(f'[[accounts]]\nsid = "HXCONF01"\napi_key_file = "{key_file}"\n')
        env = {"BLOCKLIST_SYNC_CONFIG": str(config)}
    else:
        env = {"KALEYRA_SID": "HXCONF01", "KALEYRA_API_KEY_FILE": str(key_file)}
    sid = _sid()
    result = _import(pg_url, sid, "--as-of", "2026-01-01T00:00Z", *map(str, credentials.iterdir()), **env)
    assert result.returncode == 2
    one_error_line(result)
    assert not _leaked(key, result.stdout + result.stderr), result.stderr
    assert _count(pg_url, "sync_runs", sid) == 0


# -- 9. an export proves only what it shows ----------------------------------------------------


def periods(url: str, sid: str) -> list[tuple[object, ...]]:
    from sync import database

    return sorted(
        rows(
            database.make_engine(url),
            "SELECT mobile, channel, added_at, added_not_before, removed_at, initial_load, added_run_id "
            "FROM blocklist_periods WHERE account_sid = :a",
            a=sid,
        ),
        key=repr,
    )


@pytest.fixture
def swept(sim: Simulator, store: Store, pg_url: str) -> Simulator:
    """A channel whose first sweep found N[0:30]: the history an older export is placed before."""
    sim.add("sms", N[:30])
    assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED
    return sim


@pytest.mark.parametrize("mangled", ["919000000003", "9.19E+11", "#########"])
def test_an_export_with_a_row_it_cannot_read_is_refused(
    mangled: str, swept: Simulator, pg_url: str, tmp_path: Path
) -> None:
    """A spreadsheet dropped the +, wrote the number in E notation, or showed a column too
    narrow for it (#########): that row could be any number, so the export proves no number
    absent (and so nothing) about the channel."""
    listing = [m for m in N[:30] if m != N[3]]
    file = tmp_path / "blocklist-sms-2025-06-01T0000Z.csv"
    file.write_text(
        "mobile,channel_type\n"
        + "".join(f"{m},1\n" for m in listing[:10])
        + f"{mangled},1\n"
        + "".join(f"{m},1\n" for m in listing[10:])
    )
    before = periods(pg_url, swept.sid)
    result = _import(pg_url, swept.sid, str(file))
    assert result.returncode == 2
    line = one_error_line(result)
    assert "line 12" in line and "cannot be read as a phone number" in line and "absent" in line
    assert periods(pg_url, swept.sid) == before
    assert _count(pg_url, "sync_runs", swept.sid) == 1


def test_a_channel_column_is_honoured_rows_of_other_channels_skipped_and_counted(
    pg_url: str, tmp_path: Path
) -> None:
    sid = _sid()
    mixed = tmp_path / "blocklist-all-2026-02-01T0000Z.csv"
    mixed.write_text(
        "mobile,channel,channel_type\n"
        + "".join(
            f"{m},{'sms' if k % 3 == 0 else 'WhatsApp'},{1 if k % 3 == 0 else 3}\n"
            for k, m in enumerate(N[:30])
        )
    )
    done = _import(pg_url, sid, str(mixed))
    assert done.returncode == 0, done.stderr
    assert (
        "10 numbers, +10 -0" in done.stdout
        and "20 row(s) of other channels skipped (whatsapp 20)" in done.stdout
    )
    from sync import database

    engine = database.make_engine(pg_url)
    held = rows(
        engine, "SELECT mobile FROM blocklist_entries WHERE account_sid = :a AND channel = 'sms'", a=sid
    )
    assert sorted(m for (m,) in held) == N[0:30:3]


def test_an_export_of_other_channels_only_or_of_no_channel_is_refused(pg_url: str, tmp_path: Path) -> None:
    sid = _sid()
    whatsapp = tmp_path / "blocklist-whatsapp-2026-02-01T0000Z.csv"
    whatsapp.write_text("mobile,channel\n" + "".join(f"{m},whatsapp\n" for m in N[:5]))
    only = _import(pg_url, sid, str(whatsapp))
    assert only.returncode == 2
    assert "no row of sms" in one_error_line(only)
    assert one_error_line(only).endswith("; import it with --channel whatsapp; nothing was applied")
    typo = tmp_path / "blocklist-x-2026-02-01T0000Z.csv"
    typo.write_text("mobile,channel\n" + f"{N[0]},sms\n{N[1]},smss\n")
    bad = _import(pg_url, sid, str(typo))
    assert bad.returncode == 2 and "line 3" in one_error_line(bad) and "'smss'" in one_error_line(bad)
    assert _count(pg_url, "sync_runs", sid) == 0


@pytest.mark.parametrize(
    ("ending", "whole"),
    [
        ("+9190000", False),  # cut mid-line: 7 digits, the shape of a number
        ("+91900000000", False),  # one digit short: not a valid Indian number
        ("+4930123456", False),  # valid, but a German fixed line may be longer: it may be cut
        ("+919000000039,1", True),  # whole, only the final line break missing
        ("+919000000039,", False),  # its channel_type cut off
        ("+919000000039", False),  # a row of fewer columns than the header
    ],
)
def test_a_last_line_without_its_line_break_is_trusted_only_if_it_reads_as_a_whole_number(
    ending: str, whole: bool, pg_url: str, tmp_path: Path
) -> None:
    sid = _sid()
    file = tmp_path / "blocklist-sms-2026-03-01T0000Z.csv"
    file.write_text("mobile,channel_type\n" + "".join(f"{m},1\n" for m in N[:5]) + ending)
    result = _import(pg_url, sid, str(file))
    if whole:
        assert result.returncode == 0, result.stderr
        assert _count(pg_url, "blocklist_periods", sid) == 6
    else:
        assert result.returncode == 2
        line = one_error_line(result)
        assert "line 7" in line and "no line break" in line and "cut short" in line
        assert _count(pg_url, "blocklist_periods", sid) == 0


def test_a_file_of_one_number_per_line_may_lack_its_last_line_break(pg_url: str, tmp_path: Path) -> None:
    sid = _sid()
    whole = tmp_path / "blocklist-sms-2026-03-01T0000Z.txt"
    whole.write_text("\n".join(N[:5]))
    assert _import(pg_url, sid, str(whole)).returncode == 0
    cut = tmp_path / "blocklist-sms-2026-03-02T0000Z.txt"
    cut.write_text("\n".join(N[:5]) + "\n+9190000")
    result = _import(pg_url, sid, str(cut))
    assert result.returncode == 2 and "cut short" in one_error_line(result)
    assert _count(pg_url, "sync_runs", sid) == 1


# -- 8. one saved API page is no export ---------------------------------------------------------


def api_body(listing: list[str], **fields: object) -> str:
    import json

    body: dict[str, object] = {"code": "CNT196", "message": "Successfully fetched blocklisted number(s)"}
    body["data"] = [{"mobile": m, "channel_type": "1"} for m in listing]
    body["error"] = {}
    body.update(fields)
    return json.dumps(body)


@pytest.mark.parametrize("size", [100, 37, 0])
def test_one_saved_api_page_is_refused_as_an_export(
    size: int, sim: Simulator, store: Store, pg_url: str, tmp_path: Path
) -> None:
    """A saved Get Blocklist response of up to 100 rows (the API's page) may be the first page
    of a longer listing: taken for a whole channel, the numbers on its other pages would be
    'added after the export'."""
    listed = numbers(200)
    sim.add("sms", listed)
    assert sweep(sim, store, "sms").outcome is Outcome.SUCCEEDED
    page = tmp_path / "blocklist-sms-2025-09-01T0000Z.json"
    page.write_text(api_body(listed[:size]))
    before = periods(pg_url, sim.sid)
    result = _import(pg_url, sim.sid, str(page))
    assert result.returncode == 2
    line = one_error_line(result)
    assert f"{size} row(s) in the API's envelope" in line and "one page" in line and "an export is" in line
    assert periods(pg_url, sim.sid) == before


def test_an_api_shaped_export_of_more_than_a_page_and_a_bare_array_of_a_few_are_read(
    pg_url: str, tmp_path: Path
) -> None:
    import json

    sid = _sid()
    merged = tmp_path / "blocklist-sms-2026-01-01T0000Z.json"
    merged.write_text(api_body(numbers(101)))
    assert _import(pg_url, sid, str(merged)).returncode == 0
    rows_only = tmp_path / "blocklist-sms-2026-01-02T0000Z.json"
    rows_only.write_text(json.dumps([{"mobile": m} for m in numbers(3)]))
    done = _import(pg_url, _sid(), str(rows_only))
    assert done.returncode == 0, done.stderr
    assert "3 numbers, +3 -0" in done.stdout


# -- 9. a JSON error body, however many rows it carries, and JSON nested deep ------------------


@pytest.mark.parametrize(
    "fields",
    [
        {
            "code": "CNT195",
            "message": "Unable to fetch the blocklisted number",
            "error": {"description": "Unable"},
        },
        {"error": {"error": "Internal server error"}},
        {"code": "WA500"},
    ],
)
def test_an_api_error_body_carrying_rows_is_refused(
    fields: dict[str, object], pg_url: str, tmp_path: Path
) -> None:
    sid = _sid()
    body = tmp_path / "blocklist-sms-2026-01-01T0000Z.json"
    body.write_text(api_body(numbers(150), **fields))
    result = _import(pg_url, sid, str(body))
    assert result.returncode == 2
    assert "error" in one_error_line(result) and "not a listing" in one_error_line(result)
    assert _count(pg_url, "blocklist_periods", sid) == 0


@pytest.mark.parametrize("depth", [5_000, 100_000])
@pytest.mark.parametrize("where", ["data", "top"])
def test_json_nested_deep_is_one_line_within_a_second(
    depth: int, where: str, pg_url: str, tmp_path: Path
) -> None:
    import time

    deep = "[" * depth + "]" * depth
    file = tmp_path / "blocklist-sms-2026-01-01T0000Z.json"
    file.write_text('{"code": "CNT196", "data": ' + deep + "}" if where == "data" else deep)
    started = time.monotonic()
    result = _import(pg_url, _sid(), str(file))
    assert time.monotonic() - started < 1.0
    assert result.returncode == 2 and "nested deeper than" in one_error_line(result)


# -- 10. decompression bounded in time as well as size -----------------------------------------


@pytest.mark.parametrize("line", ["", "+919000000001"])
def test_a_gzip_that_inflates_past_any_export_is_refused_at_once(
    line: str, pg_url: str, tmp_path: Path
) -> None:
    """8 MiB of empty lines (or of one number, again and again) gzip to a few KiB: inside the
    size cap, they kept an import busy for a long time (4 GiB of them, for minutes), and the
    empty lines made an empty listing. No export of distinct numbers compresses 200 times."""
    import gzip
    import re

    sid = _sid()
    bomb = tmp_path / "blocklist-sms-2026-01-01T0000Z.csv.gz"
    bomb.write_bytes(
        gzip.compress(b"mobile\n" + (line + "\n").encode() * (8 * 1024 * 1024 // (len(line) + 1)))
    )
    result = _import(pg_url, sid, str(bomb))
    assert result.returncode == 2
    line = one_error_line(result)
    assert "inflates to more than 200 times its size" in line
    # Stopped within its first megabytes: the work, not a wall clock a loaded machine moves.
    inflated = re.search(r"\((\d+) MiB from \d+ KiB so far\)", line)
    assert inflated is not None and int(inflated.group(1)) <= 4
    assert _count(pg_url, "sync_runs", sid) == 0


def test_an_honest_gzip_export_is_read(pg_url: str, tmp_path: Path) -> None:
    """Numbers in order, with long constant columns, compress best of honest exports (about
    35 times); they are read."""
    import gzip

    sid = _sid()
    listing = numbers(30_000)
    export = tmp_path / "blocklist-sms-2026-01-01T0000Z.csv.gz"
    export.write_bytes(
        gzip.compress(
            (
                "mobile,channel_type,channel,blocked_by,reason\n"
                + "".join(
                    f"{m},1,sms,compliance-team@example.com,opted out by keyword STOP\n" for m in listing
                )
            ).encode()
        )
    )
    done = _import(pg_url, sid, str(export))
    assert done.returncode == 0, done.stderr
    assert "30000 numbers" in done.stdout
