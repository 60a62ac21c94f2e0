"""``blocklist-sync report``: one HTML file for people without a BI tool.

Reads only the BI views (``blocklist_daily_size``, ``blocklist_daily_changes``,
``blocklist_sync_health``), so the report and the dashboards can never disagree. The file is
self-contained: pygal renders each chart as inline SVG, with its tooltip script and every other
external reference switched off, so it opens offline and from an e-mail attachment alike.
pygal is an optional extra (``pip install 'kaleyra-blocklist-sync[report]'``): the sync itself
never needs it.
"""

from __future__ import annotations

import datetime as dt
import html
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Engine, text

from sync.settings import ConfigError
from sync.store import as_utc

__all__ = ["ReportData", "gather", "render", "require_charting"]

INSTALL_HINT = (
    "the report needs the charting extra: pip install 'kaleyra-blocklist-sync[report]' (or pip install pygal)"
)

Key = tuple[str, str]  # (account_sid, channel)


@dataclass
class ReportData:
    first_day: dt.date
    last_day: dt.date
    generated_at: dt.datetime
    source: str  # the database, password masked
    sizes: dict[Key, dict[dt.date, int]]
    added: dict[Key, dict[dt.date, int]]
    removed: dict[Key, dict[dt.date, int]]
    health: list[dict[str, object]]

    @property
    def days(self) -> list[dt.date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + dt.timedelta(days=i) for i in range(count)]

    @property
    def period(self) -> str:
        """The days the report covers, in words: ``2026-11-01 to 2026-11-28 (UTC days, 28
        days)``. Fewer than ``--days`` asked for when the first sweep is more recent, so the
        page and the command's line both say what it shows, not what was asked."""
        count = len(self.days)
        return (
            f"{self.first_day.isoformat()} to {self.last_day.isoformat()} "
            f"(UTC days, {count} day{'' if count == 1 else 's'})"
        )


def _day(value: object) -> dt.date:
    """PostgreSQL returns dates; SQLite returns ISO text."""
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def gather(engine: Engine, days: int, source: str, today: dt.date | None = None) -> ReportData:
    """The last ``days`` UTC days ending today (from the first sweep on, if that is later)."""
    now = dt.datetime.now(dt.UTC)
    last = today or now.date()
    first = last - dt.timedelta(days=days - 1)
    with engine.connect() as c:
        began = c.execute(text("SELECT MIN(day) FROM blocklist_daily_size")).scalar_one()
    if began is not None and _day(began) > first:
        first = _day(began)  # no empty weeks before the first sweep
    since = first if engine.dialect.name == "postgresql" else first.isoformat()
    sizes: dict[Key, dict[dt.date, int]] = defaultdict(dict)
    added: dict[Key, dict[dt.date, int]] = defaultdict(dict)
    removed: dict[Key, dict[dt.date, int]] = defaultdict(dict)
    with engine.connect() as c:
        for day, sid, channel, entries in c.execute(
            text(
                "SELECT day, account_sid, channel, entries FROM blocklist_daily_size "
                "WHERE day >= :since ORDER BY account_sid, channel, day"
            ),
            {"since": since},
        ):
            sizes[sid, channel][_day(day)] = entries
        for day, sid, channel, plus, minus in c.execute(
            text(
                "SELECT day, account_sid, channel, added, removed FROM blocklist_daily_changes "
                "WHERE day >= :since ORDER BY account_sid, channel, day"
            ),
            {"since": since},
        ):
            added[sid, channel][_day(day)] = plus
            removed[sid, channel][_day(day)] = minus
        health = [
            dict(r)
            for r in c.execute(
                text(
                    "SELECT account_sid, channel, last_run_status, last_run_finished_at, "
                    "last_success_at, entries, last_run_error FROM blocklist_sync_health "
                    "ORDER BY account_sid, channel"
                )
            ).mappings()
        ]
    return ReportData(first, last, now, source, dict(sizes), dict(added), dict(removed), health)


def require_charting() -> None:
    """Fail in one line, before touching the database, when the optional extra is missing."""
    try:
        import pygal  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def _chart(kind: str, title: str, data: ReportData, series: dict[str, list[int | None]]) -> str:
    import pygal

    legend_rows = -(-max(len(series), 1) // 2)  # two columns; the plot keeps its own height
    chart = getattr(pygal, kind)(
        # js=[]: no tooltip script fetched from the network
        title=title,
        width=960,
        height=360 + 21 * legend_rows,
        js=[],
        disable_xml_declaration=True,
        x_label_rotation=30,
        show_minor_x_labels=False,
        x_labels_major_every=max(1, len(data.days) // 12),
        legend_at_bottom=True,
        allow_interruptions=True,
        style=pygal.style.CleanStyle,
        dots_size=2,
        truncate_legend=-1,
        legend_at_bottom_columns=2,
    )
    chart.x_labels = [d.isoformat() for d in data.days]
    if not series:
        chart.add("no data in this period", [None] * len(data.days))
    for name, values in series.items():
        chart.add(name, values)
    return str(chart.render(is_unicode=True))


def _when(value: object) -> str:
    if value is None:
        return "never"
    stamp = as_utc(value if isinstance(value, dt.datetime) else str(value))
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(data: ReportData) -> str:
    """The whole HTML document."""
    days = data.days
    size_series = {
        f"{sid} {channel}": [by_day.get(d) for d in days]
        for (sid, channel), by_day in sorted(data.sizes.items())
    }
    change_series: dict[str, list[int | None]] = {}
    for key in sorted(set(data.added) | set(data.sizes)):
        sid, channel = key
        change_series[f"{sid} {channel} added"] = [data.added.get(key, {}).get(d, 0) for d in days]
        change_series[f"{sid} {channel} removed"] = [data.removed.get(key, {}).get(d, 0) for d in days]
    rows = (
        "\n".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(cell))}</td>"
                for cell in (
                    h["account_sid"],
                    h["channel"],
                    h["last_run_status"],
                    _when(h["last_run_finished_at"]),
                    _when(h["last_success_at"]),
                    h["entries"],
                    h["last_run_error"] or "",
                )
            )
            + "</tr>"
            for h in data.health
        )
        or '<tr><td colspan="7">no sweeps yet</td></tr>'
    )
    period = f"{data.first_day.isoformat()} to {data.last_day.isoformat()}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Kaleyra blocklist report, {period}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ background: #f3f3f3; text-align: left; }} figure {{ margin: 1em 0; }}
</style></head><body>
<h1>Kaleyra blocklist report</h1>
<p id="period">Period covered: {data.period}. Generated
{_when(data.generated_at)} from {html.escape(data.source)}.</p>
<h2>Blocklist size per channel</h2>
<p>Numbers blocklisted at the end of each day; a day without a sweep carries the last known size.</p>
<figure id="size">{_chart("Line", "Entries at the end of each UTC day", data, size_series)}</figure>
<h2>Daily additions and removals</h2>
<p>Changes the sweeps detected each day; the initial load is not counted.</p>
<figure id="changes">{_chart("Line", "Additions and removals per UTC day", data, change_series)}</figure>
<h2>Sync health</h2>
<table id="health"><tr><th>Account</th><th>Channel</th><th>Last run</th><th>Finished</th>
<th>Last success</th><th>Entries now</th><th>Error</th></tr>
{rows}
</table>
</body></html>
"""
