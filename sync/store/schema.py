"""The tables: the project's public contract with the BI dashboards that read them.

Created only by the Alembic migrations in ``migrations/``; this module describes the same
tables so the store can build its statements and ``alembic check`` can prove the two agree.
Names and meanings are stable: change them only with a migration and a note to analysts.
All timestamps are ``timestamptz`` in UTC.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    column,
    table,
    text,
)

from sync.sql import sql_in
from sync.vocabulary import Channel, RunStatus, Trigger, in_words

__all__ = [
    "blocklist_channel_types",
    "blocklist_entries",
    "blocklist_events",
    "blocklist_periods",
    "metadata",
    "phone_prefixes",
    "sync_channel_locks",
    "sync_runs",
]

# Stable constraint names, so later migrations can name what they alter (Alembic cookbook).
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# A 64-bit id on PostgreSQL; SQLite only auto-increments a column declared INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")
UtcTime = DateTime(timezone=True)
# Key text (SIDs, channels, E.164 numbers: ASCII) compared byte by byte on PostgreSQL, which is
# cheaper than the linguistic collation and orders them the same (migration 0006). SQLite's
# default collation already compares bytes.
Key = Text(collation="C").with_variant(Text(), "sqlite")

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True, comment="Run id, referenced by events."),
    Column("account_sid", Text, nullable=False, comment="Kaleyra account SID swept."),
    Column("channel", Text, nullable=False, comment=f"Channel swept: {in_words(Channel)}."),
    Column("trigger", Text, nullable=False, comment=f"What started the run: {in_words(Trigger)}."),
    Column(
        "status",
        Text,
        nullable=False,
        comment="running; succeeded (changes applied); failed (nothing applied, see error); "
        "held (safety guard, nothing applied); dry_run (nothing applied); cancelled "
        "(stopped by an operator or a signal, nothing applied).",
    ),
    Column("started_at", UtcTime, nullable=False, comment="When the sweep started (UTC)."),
    Column("finished_at", UtcTime, comment="When the run ended (UTC); NULL while running."),
    Column(
        "pages_fetched",
        Integer,
        nullable=False,
        server_default="0",
        comment="Listing pages fetched from Kaleyra.",
    ),
    Column(
        "entries_seen",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="Distinct numbers the sweep found blocklisted.",
    ),
    Column(
        "added",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="Numbers added (for held and dry_run runs: that would have been added).",
    ),
    Column(
        "removed",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="Numbers removed (for held and dry_run runs: that would have been removed).",
    ),
    Column("error", Text, comment="Why the run failed or was held, readable; never a secret."),
    Column(
        "rejected",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="Rows the listing returned that cannot be a phone number (letters, control "
        "characters, too long); never stored, counted here.",
    ),
    Column(
        "unconfirmed",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="Numbers held but not listed whose removal the mobile filter could not prove "
        "(an answer cut short, a control missing, an unreadable answer): kept as blocklisted, "
        "counted here, checked again by the next sweep.",
    ),
    Column(
        "rescued",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="Numbers held but not listed that the mobile filter showed still blocklisted: "
        "the listing skipped them (the list moved while it was paged).",
    ),
    Column(
        "listing_complete",
        Boolean,
        comment="True when nothing shows the listing skipped a row (none rescued, none "
        "unconfirmed, no page repeated); only such a sweep proves a number absent, so the "
        "not_before of later additions is the start of the last one. NULL for runs that "
        "ended before their listing was judged, and for runs before migration 0008.",
    ),
    # Provenance of an import of a dated export (migration 0010, `blocklist-sync import`).
    Column(
        "source_file",
        Text,
        comment="Imports of dated exports only (trigger backfill): the name of the file "
        "imported, without its directory. NULL for sweeps.",
    ),
    Column(
        "source_bytes",
        BigInteger,
        comment="Imports only: the file's size in bytes, as read (compressed if it was).",
    ),
    Column(
        "source_sha256",
        Text,
        comment="Imports only: SHA-256 of the file's bytes, hex. The same file, account, "
        "channel and time is never imported twice.",
    ),
    Column(
        "rewritten",
        BigInteger,
        comment="Imports placed before a channel's earliest run only: stretches of that run "
        "this import rewrote (an earlier start for numbers the export lists; an addition window for "
        "numbers it does not). NULL otherwise.",
    ),
    CheckConstraint(sql_in("channel", Channel), name="channel"),
    CheckConstraint(sql_in("trigger", Trigger), name="trigger"),
    CheckConstraint(
        sql_in("status", RunStatus),
        name="status",
    ),
    Index("ix_sync_runs_account_channel_started", "account_sid", "channel", "started_at"),
    # A channel's newest succeeded sweep by id, for its coverage (migration 0013).
    Index(
        "ix_sync_runs_succeeded",
        "account_sid",
        "channel",
        "id",
        postgresql_where=text("status = 'succeeded'"),
        sqlite_where=text("status = 'succeeded'"),
    ),
    # A channel's latest succeeded import by time (migration 0013): imports are few.
    Index(
        "ix_sync_runs_imports",
        "account_sid",
        "channel",
        "started_at",
        postgresql_where=text("status = 'succeeded' AND source_sha256 IS NOT NULL"),
        sqlite_where=text("status = 'succeeded' AND source_sha256 IS NOT NULL"),
    ),
    comment="One row per sweep of one account and channel.",
)

blocklist_periods = Table(
    "blocklist_periods",
    metadata,
    Column("account_sid", Key, nullable=False, comment="Kaleyra account SID."),
    Column(
        "channel", Key, nullable=False, comment=f"Channel the number was blocklisted on: {in_words(Channel)}."
    ),
    Column(
        "mobile",
        Key,
        nullable=False,
        comment="Number in canonical E.164: + then 7 to 15 digits, no spaces or separators.",
    ),
    Column(
        "channel_type",
        Text,
        comment="Kaleyra's channel_type for the row, opaque, as first seen. NULL for stretches "
        "that ended before migration 0009 (the events never recorded it).",
    ),
    Column(
        "added_at",
        UtcTime,
        nullable=False,
        comment="detected_at of the addition: when the sweep that first saw the number listed "
        "committed (UTC). Listed from no later than this.",
    ),
    Column(
        "added_not_before",
        UtcTime,
        comment="not_before of the addition: the number was added after this (UTC). NULL for the "
        "initial load (initial_load): blocklisted before the sync began, since when is unknown.",
    ),
    Column(
        "removed_at",
        UtcTime,
        comment="detected_at of the removal: when the sweep that first proved the number gone "
        "committed (UTC). NULL while the number is still blocklisted (an open stretch).",
    ),
    Column(
        "removed_not_before",
        UtcTime,
        comment="not_before of the removal: start of the last sweep that showed the number listed "
        "(UTC); the removal happened after this and no later than removed_at.",
    ),
    Column(
        "initial_load",
        Boolean,
        nullable=False,
        comment="True for stretches opened by a channel's first succeeded sweep: blocklisted "
        "before the sync began, not added then.",
    ),
    # No foreign keys (migration 0006): the run row is always written in the same transaction.
    Column("added_run_id", Id, nullable=False, comment="sync_runs.id of the run that detected the addition."),
    Column(
        "removed_run_id",
        Id,
        comment="sync_runs.id of the run that detected the removal; NULL while open.",
    ),
    Column(
        "proven_present_at",
        UtcTime,
        comment="Open stretches only: NULL when the last succeeded sweep showed the number. "
        "Otherwise that sweep could not prove it either way (sync_runs.unconfirmed) and this is "
        "the start of the last sweep that did: listed for certain until then.",
    ),
    Column(
        "added_event_id",
        Id,
        nullable=False,
        comment="blocklist_events.id of this stretch's addition (migration 0012).",
    ),
    Column(
        "removed_event_id",
        Id,
        comment="blocklist_events.id of this stretch's removal; NULL while open.",
    ),
    # The view blocklist_events gives a removal for each stretch that ended, with this id.
    CheckConstraint("(removed_at IS NULL) = (removed_event_id IS NULL)", name="removal_event"),
    # Both ends come from the database's clock (migration 0008): a window that ends before it
    # begins is a clock fault, never history (migration 0012; NOT VALID on PostgreSQL for rows
    # written before 0008).
    CheckConstraint("added_not_before IS NULL OR added_not_before <= added_at", name="added_window"),
    CheckConstraint("removed_not_before IS NULL OR removed_not_before <= removed_at", name="removed_window"),
    # Number first: a look-up or an as-of question of one number reads a few index pages.
    PrimaryKeyConstraint("mobile", "account_sid", "channel", "added_run_id"),
    # One open stretch per number, and the sweep's comparison and counts read the open ones.
    Index(
        "ux_blocklist_periods_open",
        "account_sid",
        "channel",
        "mobile",
        unique=True,
        postgresql_where=text("removed_at IS NULL"),
        sqlite_where=text("removed_at IS NULL"),
    ),
    # "What changed on these days", by time; partial, so a first load writes no entry in either.
    Index(
        "ix_blocklist_periods_added",
        "account_sid",
        "channel",
        "added_at",
        postgresql_where=text("NOT initial_load"),
        sqlite_where=text("NOT initial_load"),
    ),
    Index(
        "ix_blocklist_periods_removed",
        "account_sid",
        "channel",
        "removed_at",
        postgresql_where=text("removed_at IS NOT NULL"),
        sqlite_where=text("removed_at IS NOT NULL"),
    ),
    # Only the few numbers a sweep could not prove are indexed: clearing them costs nothing
    # on a sweep where every number was proven.
    Index(
        "ix_blocklist_periods_unproven",
        "account_sid",
        "channel",
        postgresql_where=text("proven_present_at IS NOT NULL"),
        sqlite_where=text("proven_present_at IS NOT NULL"),
    ),
    comment="History as stretches: one row per account, channel, number and stretch of being "
    "blocklisted, with honest bounds on both ends. The open rows (removed_at IS NULL) are the "
    "current blocklist (the view blocklist_entries). The one stored history: the view "
    "blocklist_events is derived from it.",
)

# A view since migration 0009 (the open stretches): described here for reading only, outside
# the metadata, so `alembic check` does not look for a table.
blocklist_entries = table(
    "blocklist_entries",
    column("account_sid", Key),
    column("channel", Key),
    column("mobile", Key),
    column("channel_type", Text),
    column("added_at", UtcTime),
    column("added_run_id", Id),
    column("proven_present_at", UtcTime),
)

# A view since migration 0012, derived from the stretches (each gives its addition, and its
# removal once it ended): described here for reading only, like blocklist_entries.
blocklist_events = table(
    "blocklist_events",
    column("id", Id),
    column("account_sid", Key),
    column("channel", Key),
    column("mobile", Key),
    column("change", Text),
    column("detected_at", UtcTime),
    column("not_before", UtcTime),
    column("initial_load", Boolean),
    column("run_id", Id),
)

blocklist_channel_types = Table(
    "blocklist_channel_types",
    metadata,
    Column("account_sid", Key, primary_key=True, comment="Kaleyra account SID."),
    Column("channel", Key, primary_key=True, comment=f"Channel swept: {in_words(Channel)}."),
    Column(
        "channel_type",
        Key,
        primary_key=True,
        comment="A channel_type code this channel's listing carried (opaque: the vendor does "
        "not document the codes, so they are learned, never assumed).",
    ),
    Column("first_run_id", Id, nullable=False, comment="Run that first applied a listing with this code."),
    Column("first_seen_at", UtcTime, nullable=False, comment="detected_at of that run (UTC)."),
    comment="The channel_type codes each channel of an account has carried. A listing whose "
    "rows carry another channel's code, or a mix of codes this channel has not shown, is held "
    "for review: a server that ignores the channel asked for looks exactly like that.",
)

sync_channel_locks = Table(
    "sync_channel_locks",
    metadata,
    Column("account_sid", Key, primary_key=True, comment="Kaleyra account SID."),
    Column("channel", Key, primary_key=True, comment=f"Channel swept: {in_words(Channel)}."),
    comment="The sweeps' locks: one row per account and channel ever swept, holding no data. A "
    "sweep keeps its channel's row locked (SELECT ... FOR UPDATE) while it runs; only a role "
    "that may update this table can, so a read-only login cannot hold the sweeps back.",
)

phone_prefixes = Table(
    "phone_prefixes",
    metadata,
    Column(
        "prefix",
        Text,
        primary_key=True,
        comment="E.164 prefix: '+', the calling code, and for a shared calling code "
        "the national digits that decide the country.",
    ),
    Column("calling_code", Integer, nullable=False, comment="Country calling code the prefix belongs to."),
    Column(
        "region",
        Text,
        comment="ISO 3166 region of numbers whose longest matching prefix this is; "
        "NULL for non-geographic calling codes.",
    ),
    comment="Reference data generated from phonenumbers' metadata (sync/regions.py): a "
    "number belongs to the region of its longest matching prefix.",
)
