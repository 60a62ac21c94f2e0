"""The demo: the whole job end to end with nothing installed but the package.

Starts the simulator on loopback, migrates, sweeps every channel (the initial load), changes
the simulator's lists the way Kaleyra users would, sweeps again and shows what was recorded.
Each demo uses a fresh account SID so it never rewrites an earlier demo's history, and its own
SQLite file (``blocklist-sync-demo.db``) unless ``--database-url`` names another database: it
never reads ``DATABASE_URL``, so its made-up accounts never land in a production database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import select

from sync import database
from sync.run import client_for, sweep_accounts, worst_exit_code
from sync.settings import CHANNELS, Account
from sync.simulator import Simulator
from sync.store import Store
from sync.store.schema import blocklist_events
from sync.sweep import SweepOptions, SweepResult
from sync.vocabulary import Trigger

NUMBERS_PER_CHANNEL = 5000


def run_demo(store: Store, where: str, *, echo: Callable[[str], None]) -> int:
    before, after = database.upgrade(store.engine)
    echo(f"1. schema at {after} in {where}" + ("" if before == after else f" (was {before or 'empty'})"))
    sid = "HXDEMO" + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    with Simulator.start(numbers=NUMBERS_PER_CHANNEL, sid=sid) as sim:
        account = Account(sid=sim.sid, api_key=sim.api_key, base_url=sim.base_url, channels=CHANNELS)
        echo(
            f"2. Kaleyra simulator at {sim.base_url}, account {sid}, "
            f"{NUMBERS_PER_CHANNEL} numbers per channel"
        )

        def sweep(trigger: Trigger) -> list[SweepResult]:
            results = sweep_accounts([account], store, SweepOptions(trigger=trigger), client_for)
            for r in results:
                diff = r.diff
                counts = f"{diff.seen} blocklisted, +{diff.added} -{diff.removed}" if diff else ""
                echo(
                    f"   {r.channel:<9} {r.outcome.label:<10} {counts} (run {r.run_id})"
                    + (f": {r.message}" if r.message else "")
                )
            return results

        echo("3. first sweep (initial load):")
        first = sweep(Trigger.MANUAL)
        added = [f"+9170000{i:05d}" for i in range(12)]
        removed = sim.numbers("whatsapp")[:7]
        sim.add("sms", added)
        sim.remove("whatsapp", removed)
        sim.remove("voice", sim.numbers("voice")[:3])
        echo("4. in Kaleyra: 12 numbers blocklisted on sms; 7 unblocked on whatsapp and 3 on voice")
        echo("5. second sweep:")
        second = sweep(Trigger.SCHEDULED)
    run_ids = [r.run_id for r in second if r.run_id is not None]
    with store.engine.connect() as connection:
        events = connection.execute(
            select(
                blocklist_events.c.change,
                blocklist_events.c.channel,
                blocklist_events.c.mobile,
                blocklist_events.c.not_before,
                blocklist_events.c.detected_at,
            )
            .where(blocklist_events.c.run_id.in_(run_ids))
            .order_by(blocklist_events.c.channel, blocklist_events.c.change, blocklist_events.c.mobile)
        ).all()
    echo(f"6. events recorded by the second sweep ({len(events)}):")
    for change, channel, mobile, not_before, detected_at in events:
        echo(
            f"   {change:<8} {channel:<9} {mobile}  between {not_before:%H:%M:%S} and "
            f"{detected_at:%H:%M:%S} UTC"
        )
    echo(
        f"7. the data lives in {where}: tables blocklist_entries (now), blocklist_events "
        f"(history), sync_runs (every sweep); try `blocklist-sync status --all "
        f"--database-url '{where}'`."
    )
    return worst_exit_code(first + second)
