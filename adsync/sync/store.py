"""Storage: SQLAlchemy Core tables, a versioned schema migrated on open, the two locks
everything else builds on, and the one retry policy for databases that come and go.

SQLite (the default, under ``ADSYNC_DATA_DIR``) runs in WAL mode with a busy timeout, and every
transaction is opened by us (``BEGIN`` / ``BEGIN IMMEDIATE``) rather than by the sqlite3 module,
so an exclusive section really is exclusive across processes. Within one process, transactions
take turns on a lock first (see ``Store._turn``), so threads queue instead of polling SQLite's
busy handler. PostgreSQL uses row locks (``SELECT ... FOR UPDATE``). A process killed inside a
transaction leaves nothing behind: the database rolls it back and releases its locks.

**Retries, in one place.** Every call waits for a lock, or for a lost connection to come back,
for a short bound (``ADSYNC_DB_WAIT``, 2 s: a card action must be answered within 3 s), then
fails with a ``StoreError`` that names the lock or the outage — never the 60 s it once was.
SQLite's busy handler and PostgreSQL's ``lock_timeout`` are set to that bound, and what they
give up on is retried only while the bound lasts. Writes nobody waits on (a run's ledger and
local copy) use a longer bound, ``BACKGROUND_WAIT_SECONDS``.

``transact(fn)`` and ``read(fn)`` run the whole transaction again after a lock timeout, a
deadlock, or a connection the server dropped (a restarted PostgreSQL: the pool discards every
connection older than the drop and opens new ones; ``pool_pre_ping`` catches the idle ones at
checkout). A commit whose answer never came is the one thing not rerun blindly: it may have
been applied, so only a transaction declared ``idempotent`` (a rerun changes nothing if the
first one landed: upserts, deletes, updates to fixed values, claims that recognise their own
``owner``) is run again; any other fails saying its outcome is unknown.

``begin()``, ``exclusive()`` and ``connect()`` keep their ``with`` form for code that cannot be
rerun (a token refresh spans a network call): they retry taking the connection and the lock,
and turn a failure inside into the same clear ``StoreError``.

Tables that vanished under a running process (PostgreSQL dropped and recreated: ``relation
"tokens" does not exist``) are created again, empty, by the process that meets the gap, which
logs that what they held is gone; if they cannot be (the database or schema itself is gone),
every call says so, with what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from adsync.sync import processes
from adsync.sync.errors import StoreError
from adsync.sync.private import describe, private_dir, private_file

log = logging.getLogger("adsync.store")

T = TypeVar("T")

# How long a call waits for a lock or for a lost connection to come back before it fails.
# Short: a webhook has 3 s to be answered (Feishu), and a card action waits on its answer.
DB_WAIT_SECONDS = 2.0
# For writes nobody is waiting on (a run's ledger and local copy, migrations), which may queue
# behind another process's long write (16,000 rows of local copy) without anything being wrong.
BACKGROUND_WAIT_SECONDS = 30.0

# What a failed call met (``failure_kind``). Anything else is not retried: a bug, a constraint.
LOCKED, DISCONNECTED, SCHEMA_MISSING = "locked", "disconnected", "schema missing"
# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
PG_LOCKED = frozenset({"55P03", "40001", "40P01"})  # lock timeout, serialization, deadlock
PG_GONE = frozenset({"57P01", "57P02", "57P03", "53300"})  # shut down, crashed, starting, full
PG_SCHEMA_MISSING = frozenset({"42P01", "3F000"})  # undefined table, no schema to create in
SQLITE_BUSY, SQLITE_LOCKED = 5, 6  # primary result codes (extended codes keep them in the low byte)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite keeps no zone; we store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("migrated_at", UTCDateTime, nullable=False),
)

# The chain of the database's first authorization, from before chains had keys (migration
# step 10); its user is looked up at its next refresh or check.
LEGACY_CHAIN = "legacy"

# One row per authorization chain of an Ocean Engine app: the current token pair. Tokens are
# per authorizing user ("API授权是以User为纬度的", reference notes §1.1), so a team whose
# accounts sit under several Ocean Engine logins has one chain per login.
tokens = Table(
    "tokens",
    metadata,
    Column("app_id", String(32), primary_key=True),
    # The Ocean Engine user id (`2/user/info` ``id``) when known at the authorization, else a
    # generated key (``LEGACY_CHAIN`` for a database's first chain). Never changes. Step 10.
    Column("chain_id", String(64), primary_key=True),
    Column("access_token", Text, nullable=False),
    Column("refresh_token", Text, nullable=False),
    Column("access_expires_at", UTCDateTime, nullable=False),
    Column("refresh_expires_at", UTCDateTime, nullable=False),
    Column("advertiser_ids", Text, nullable=False, default="[]"),  # JSON list of id strings
    Column("generation", Integer, nullable=False, default=1),
    Column("authorized_at", UTCDateTime, nullable=False),
    Column("refreshed_at", UTCDateTime),
    Column("dead_at", UTCDateTime),  # set when the platform says the chain is gone
    Column("dead_reason", Text),
    Column("updated_at", UTCDateTime, nullable=False),
    # When the platform last accepted this chain: an authorization, a refresh, or a check
    # (`adsync token status --check`, the watchdog's call). Added by migration step 2.
    Column("confirmed_at", UTCDateTime),
    # Who authorized (`2/user/info`: id, display_name, email as the platform masks it); NULL
    # until known (a migrated chain learns it at its next refresh or check). Step 10.
    Column("user_id", String(32)),
    Column("user_name", Text),
    Column("user_email", Text),
    # SQLite: a refresh in progress (``adsync.sync.tokens``): who claimed the chain, and since
    # when, so the platform is asked without holding the database's only write lock. Step 10.
    Column("refreshing_by", String(160)),
    Column("refreshing_since", UTCDateTime),
)

# A refresh on the wire (PostgreSQL only; see ``adsync.sync.tokens``): written, in its own
# transaction, while the refresher holds the token row's lock and before it asks the platform;
# deleted in the transaction that stores the new pair. A row whose generation is still the
# stored one while nobody holds that lock is a refresh whose answer was never saved.
token_refreshes = Table(
    "token_refreshes",
    metadata,
    Column("app_id", String(32), primary_key=True),
    Column("chain_id", String(64), primary_key=True),  # step 10
    Column("generation", Integer, nullable=False),
    Column("holder", String(160), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
)

# An authorization that would drop accounts already granted, waiting for an admin to take it or
# cancel it on the callback page (or `adsync auth code … --confirm`). It holds a live token
# pair (the platform already replaced the previous grant), so it lives minutes, not days.
pending_grants = Table(
    "pending_grants",
    metadata,
    Column("id", String(64), primary_key=True),  # the confirmation form's secret
    Column("app_id", String(32), nullable=False),
    Column("code_hash", String(64), nullable=False),  # sha256 of the auth_code
    Column("requested_by", String(120), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime),
    Column("decision", String(16)),  # taken | cancelled
    Column("base_generation", Integer),  # the stored chain it would replace
    Column("access_token", Text, nullable=False),
    Column("refresh_token", Text, nullable=False),
    Column("access_expires_at", UTCDateTime, nullable=False),
    Column("refresh_expires_at", UTCDateTime, nullable=False),
    Column("advertiser_ids", Text, nullable=False, default="[]"),
    Column("names", Text, nullable=False, default="{}"),
    # The chain it would replace (the same Ocean Engine user's), and who granted it. Step 10.
    Column("chain_id", String(64)),
    Column("user_id", String(32)),
    Column("user_name", Text),
    Column("user_email", Text),
    Index("ix_pending_grants_code", "code_hash"),
)

token_history = Table(
    "token_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("app_id", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("event", String(24), nullable=False),  # authorized | refreshed | failed | dead
    Column("reason", Text, nullable=False, default=""),
    Column("access_prefix", String(16), nullable=False, default=""),
    Column("refresh_prefix", String(16), nullable=False, default=""),
    Column("generation", Integer),
    Column("actor", String(120), nullable=False, default=""),
    Column("chain_id", String(64)),  # step 10 (NULL rows before it: the legacy chain)
    Index("ix_token_history_app_at", "app_id", "at"),
)

# Which 本地推 accounts each chain reaches, as its last discovery found them: how a run picks
# the chain to fetch an account with, and what leaves the scope when a chain is removed.
chain_accounts = Table(
    "chain_accounts",
    metadata,
    Column("app_id", String(32), primary_key=True),
    Column("chain_id", String(64), primary_key=True),
    Column("account_id", String(32), primary_key=True),
    Column("seen_at", UTCDateTime, nullable=False),
)

# Accounts: configured (ADSYNC_ACCOUNTS), granted, and found by discovery (adsync.sync.discovery).
accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(32), primary_key=True),
    Column("name", Text, nullable=False, default=""),
    # config | grant (before discovery) | direct | organisation | life: how it was found
    Column("source", String(16), nullable=False, default="config"),
    Column("seen_at", UTCDateTime, nullable=False),
    Column("last_synced_at", UTCDateTime),
    Column("last_outcome", String(16)),
    Column("last_reason", Text),
    # Discovery (step 4). scope: in (a 本地推 account synced) | manager (an organisation or
    # 来客 account expanded into others) | skipped (granted, unusable: note + fix say why) |
    # vanished (was in scope, no longer found). NULL: never seen by discovery.
    Column("scope", String(16)),
    Column("account_type", String(48)),  # the platform's account_type (LOCAL for found ones)
    Column("parent_id", String(32)),  # the organisation / 来客 account it was found through
    Column("parent_name", Text),
    Column("valid", Boolean),  # oauth2/advertiser/get is_valid, for granted accounts
    Column("note", Text),  # why skipped or vanished
    Column("fix", Text),  # what to do about it
    Column("checked_at", UTCDateTime),  # the last discovery that found it
    Column("vanished_at", UTCDateTime),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column(
        "trigger", String(24), nullable=False
    ),  # cli | chat | schedule | catchup | retry | settle
    Column("requested_by", String(120), nullable=False, default=""),
    Column("date_from", Date, nullable=False),
    Column("date_to", Date, nullable=False),
    Column("account_filter", String(32)),
    # running | ok | partial | failed | busy | interrupted (its process died: recovery.py)
    Column("status", String(16), nullable=False),
    Column("api_calls", Integer, nullable=False, default=0),
    Column("rows_created", Integer, nullable=False, default=0),
    Column("rows_updated", Integer, nullable=False, default=0),
    Column("rows_unchanged", Integer, nullable=False, default=0),
    Column("rows_deleted", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("detail", Text),  # JSON: the result object
    # The process running it (``actor()``, host:pid@started): how a run left ``running`` by a
    # dead process is told from one still going (recovery.py). Step 9.
    Column("holder", String(160)),
    Index("ix_runs_started", "started_at"),
)

run_accounts = Table(
    "run_accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # ok | no_data | failed
    Column("reason", Text),
    Column("rows", Integer, nullable=False, default=0),
    Column("api_calls", Integer, nullable=False, default=0),
    Index("ix_run_accounts_run", "run_id"),
)

# The local copy of every synced row: summary and verify read this, never the Bitable.
report_rows = Table(
    "report_rows",
    metadata,
    Column("sync_key", String(80), primary_key=True),  # YYYY-MM-DD|account|promotion
    Column("stat_date", Date, nullable=False),
    Column("account_id", String(32), nullable=False),
    Column("account_name", Text, nullable=False, default=""),
    Column("project_id", String(32), nullable=False, default=""),
    Column("project_name", Text, nullable=False, default=""),
    Column("promotion_id", String(32), nullable=False),
    Column("promotion_name", Text, nullable=False, default=""),
    Column("cost_cents", BigInteger, nullable=False, default=0),
    Column("show_cnt", BigInteger, nullable=False, default=0),
    Column("click_cnt", BigInteger, nullable=False, default=0),
    Column("convert_cnt", BigInteger, nullable=False, default=0),
    Column("clue_cnt", BigInteger, nullable=False, default=0),
    Column("synced_at", UTCDateTime, nullable=False),
    Column("run_id", Integer),
    Index("ix_report_rows_date", "stat_date"),
    Index("ix_report_rows_account_date", "account_id", "stat_date"),
)

# Deliveries already claimed (Feishu event_id / message_id), kept past the 7.1 h retry ladder.
dedup = Table(
    "dedup",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    # Who claimed it (one token per claim call): a claim retried after its commit's answer was
    # lost finds its own row and still wins, instead of taking itself for a duplicate. Step 9.
    Column("owner", String(64)),
    Index("ix_dedup_expires", "expires_at"),
)

# The durable command queue (adsync.sync.queue): every acknowledged chat event until it is
# answered, and for two days after (its event and message ids are unique: a re-delivery, which
# Feishu sends for up to 7.1 h, is not stored twice). ``lane`` + ``seq`` order a chat's
# commands; ``holder`` + ``lease_until`` say who runs one; ``answer`` is stored before it is
# posted, so a crash after posting repeats the post (same uuid) rather than the work.
jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("lane", String(120), nullable=False),  # the chat
    Column("seq", BigInteger, nullable=False),  # ms: when it was said (order within the lane)
    Column("kind", String(24), nullable=False),  # message | card_action | bot_added
    Column("weight", String(8), nullable=False),  # quick | long
    Column("event_id", String(100)),  # NULL when the event has none (never two NULLs clash)
    Column("message_id", String(100)),
    Column("payload", Text, nullable=False),  # JSON: what the handler needs
    Column("state", String(16), nullable=False),  # queued|running|joined|answered|done|failed
    Column("released", Boolean, nullable=False, default=False),  # quick commands may pass it
    Column("attempts", Integer, nullable=False, default=0),
    Column("holder", String(160)),
    Column("lease_until", UTCDateTime),
    Column("not_before", UTCDateTime, nullable=False),
    Column("topic", String(200)),  # what a running job does, for others to join (sync:…)
    Column("leader_id", Integer),  # joined: the job whose answer this one shows
    Column("working_id", String(100)),  # the "working on it" message the answer replaces
    Column("answer", Text),  # JSON: the answer, stored before it is posted
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Index("ix_jobs_state", "state", "not_before"),
    Index("ix_jobs_lane", "lane", "seq"),
    Index("ux_jobs_event", "event_id", unique=True),
    Index("ux_jobs_message", "message_id", unique=True),
)

# Named leases: one holder at a time across processes; a dead holder's lease runs out.
leases = Table(
    "leases",
    metadata,
    Column("name", String(120), primary_key=True),
    Column("holder", String(160), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

oauth_states = Table(
    "oauth_states",
    metadata,
    Column("state", String(64), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("requested_by", String(120), nullable=False, default=""),
)

# Messages that must go out once: daily reports per chat and date, alerts per problem.
notifications = Table(
    "notifications",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("sent_at", UTCDateTime, nullable=False),
    Column("detail", Text),
)

alerts = Table(
    "alerts",
    metadata,
    Column("problem", String(200), primary_key=True),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("last_sent", UTCDateTime),
    Column("cleared_at", UTCDateTime),
    Column("detail", Text),
)

# -- rolling tables (adsync.sync.tables) -----------------------------------------------------
# The Bitable tables adsync writes, per Base: the configured first table, tables it started
# (a new period, or the previous one full), tables it found by name, and what became of them.
bitable_tables = Table(
    "bitable_tables",
    metadata,
    Column("app_token", String(64), primary_key=True),
    Column("table_id", String(64), primary_key=True),
    Column("name", Text, nullable=False, default=""),
    # "2026-02", "2026-Q1", "2026" (period rolls), "full" (rolled when full), None: the
    # configured table before it serves a period
    Column("period", String(16)),
    Column("part", Integer, nullable=False, default=1),  # 1, 2, ... within the period
    Column("origin", String(16), nullable=False),  # configured | created | found
    Column("status", String(16), nullable=False),  # open | closed (full) | deleted
    Column("rows", Integer),  # as last counted by a writer
    Column("counted_at", UTCDateTime),
    Column("registered_at", UTCDateTime, nullable=False),
    Column("replaces", String(64)),  # the table id this one was recreated for
    Column("replaced_by", String(64)),
    Column("announced_at", UTCDateTime),  # the group was told it was started
    Column("fill_warned_at", UTCDateTime),  # the group was told it fills within a week
)

# Every date has one home: the table that holds its rows. ``moving_from``: a move to this
# table was begun and the old table may still hold the date's records (finished by the next
# writer that meets it).
table_dates = Table(
    "table_dates",
    metadata,
    Column("app_token", String(64), primary_key=True),
    Column("stat_date", Date, primary_key=True),
    Column("table_id", String(64), nullable=False),
    Column("moving_from", String(64)),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_table_dates_table", "app_token", "table_id"),
)

# Per-account views (adsync.sync.views): the view of each account in each table, as adsync
# last made or found it. ``state``: pending (wanted, not made yet: a table adsync started gets
# the views of the table it follows) | creating (created, its filter maybe not yet set: a crash
# in between is finished by the next writer) | ok | failed (``note`` says why). Step 12.
bitable_views = Table(
    "bitable_views",
    metadata,
    Column("app_token", String(64), primary_key=True),
    Column("table_id", String(64), primary_key=True),
    Column("account_id", String(32), primary_key=True),
    Column("view_id", String(64)),
    Column("view_name", Text),  # the name adsync gave it (or found it under)
    Column("account_name", Text),  # the account name that name was made from
    Column("state", String(16), nullable=False),
    Column("note", Text),
    Column("updated_at", UTCDateTime, nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def actor() -> str:
    """Who is doing something, for history rows and lease holders: ``host:pid@started``
    (``processes.actor``; the start time tells a dead holder from a reused pid)."""
    return processes.actor()


def failure_kind(exc: BaseException) -> str | None:
    """LOCKED, DISCONNECTED or SCHEMA_MISSING for a database error worth retrying (or
    repairing), None for every other error."""
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        message = str(orig).lower()
        if (code is not None and code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)) or (
            "database is locked" in message or "database table is locked" in message
        ):
            return LOCKED
        if message.startswith("no such table"):
            return SCHEMA_MISSING
        return None
    if exc.connection_invalidated:
        return DISCONNECTED
    state = str(getattr(orig, "sqlstate", None) or "")
    if state in PG_LOCKED:
        return LOCKED
    if state.startswith("08") or state in PG_GONE:
        return DISCONNECTED
    if state in PG_SCHEMA_MISSING:
        return SCHEMA_MISSING
    if isinstance(exc, OperationalError) and not state:
        return DISCONNECTED  # no server answer at all: refused, reset, closed while connecting
    return None


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)


def add_missing_columns(conn: Connection, table: Table) -> None:
    """Add the columns of ``table`` that an older database lacks (nullable or with a server
    default), for migration steps. A fresh database gets them from ``create_all`` in step 1,
    so steps must tolerate finding their columns already there."""
    from sqlalchemy import inspect

    have = {c["name"] for c in inspect(conn).get_columns(table.name)}
    for column in table.columns:
        if column.name not in have:
            kind = column.type.compile(dialect=conn.dialect)
            default = ""
            if column.server_default is not None:
                default = f" DEFAULT {column.server_default.arg}"
            conn.execute(
                text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{default}')
            )


# Each step is idempotent (create with checkfirst, add_missing_columns) so a half-applied step
# can simply rerun, and every step not yet recorded runs (not only those above the highest
# recorded), so steps added on parallel branches all apply whatever order they landed in.
# New tables need no step of their own beyond step 1's create_all; new columns on existing
# tables do (add_missing_columns).
# Register a step right after its function: ``MIGRATIONS.append((N, _vN))``.
MIGRATIONS: list[tuple[int, Any]] = [(1, _v1)]


def _v2(conn: Connection) -> None:
    """Token check-ins (``tokens.confirmed_at``), refreshes on the wire, pending grants."""
    add_missing_columns(conn, tokens)
    token_refreshes.create(conn, checkfirst=True)
    pending_grants.create(conn, checkfirst=True)


MIGRATIONS.append((2, _v2))


def _v3(conn: Connection) -> None:
    # The durable command queue. A database that recorded step 1 before ``jobs`` existed gets
    # it here; on a fresh one step 1 already made it (checkfirst).
    jobs.create(conn, checkfirst=True)


MIGRATIONS.append((3, _v3))


def _v4(conn: Connection) -> None:
    """Discovery by account type: the accounts table learns where each account came from."""
    add_missing_columns(conn, accounts)


MIGRATIONS.append((4, _v4))


def _v5(conn: Connection) -> None:
    # The rolling-table registry: new tables on databases whose step 1 ran before they existed.
    bitable_tables.create(conn, checkfirst=True)
    table_dates.create(conn, checkfirst=True)


MIGRATIONS.append((5, _v5))


def _v9(conn: Connection) -> None:
    add_missing_columns(conn, runs)  # runs.holder
    add_missing_columns(conn, dedup)  # dedup.owner


MIGRATIONS.append((9, _v9))


def _v10(conn: Connection) -> None:
    """Several authorizations: the token tables are keyed by (app, chain). A database's chain
    from before becomes ``LEGACY_CHAIN`` and keeps working; its user is looked up later."""
    add_missing_columns(conn, tokens)
    add_missing_columns(conn, token_history)
    add_missing_columns(conn, pending_grants)
    chain_accounts.create(conn, checkfirst=True)
    legacy = conn.execute(text("SELECT count(*) FROM tokens")).scalar()
    for table in (tokens, token_refreshes):
        _key_by_chain(conn, table)
    conn.execute(
        update(token_history)
        .where(token_history.c.chain_id.is_(None))
        .values(chain_id=LEGACY_CHAIN)
    )
    conn.execute(
        update(pending_grants)
        .where(pending_grants.c.chain_id.is_(None))
        .values(chain_id=LEGACY_CHAIN)
    )
    if legacy:
        # The token watchdog's open problems were about the one chain there was: they are the
        # legacy chain's now, so its all clear closes them.
        for kind in ("reauthorize", "revoked", "unsaved", "refresh_failed", "refresh_expiring"):
            conn.execute(
                update(alerts)
                .where(alerts.c.problem == f"token:{kind}")
                .values(problem=f"token:{kind}:{LEGACY_CHAIN}")
            )


def _key_by_chain(conn: Connection, table: Table) -> None:
    """Give ``table`` a ``chain_id`` column (the legacy chain for existing rows) and its
    (app_id, chain_id) primary key, in place. PostgreSQL alters the key; SQLite cannot, so the
    table is copied into its new shape within the migration's transaction."""
    from sqlalchemy import inspect

    have = {c["name"] for c in inspect(conn).get_columns(table.name)}
    if "chain_id" not in have:
        conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "chain_id" VARCHAR(64)'))
    conn.execute(
        text(f"UPDATE {table.name} SET chain_id = :legacy WHERE chain_id IS NULL"),
        {"legacy": LEGACY_CHAIN},
    )
    key = inspect(conn).get_pk_constraint(table.name)
    wanted = [c.name for c in table.primary_key.columns]
    if list(key.get("constrained_columns") or []) == wanted:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ALTER TABLE {table.name} ALTER COLUMN chain_id SET NOT NULL"))
        if key.get("name"):
            conn.execute(text(f'ALTER TABLE {table.name} DROP CONSTRAINT "{key["name"]}"'))
        conn.execute(text(f"ALTER TABLE {table.name} ADD PRIMARY KEY ({', '.join(wanted)})"))
        return
    old = f"{table.name}_before_v10"
    columns = [c["name"] for c in inspect(conn).get_columns(table.name)]
    keep = ", ".join(f'"{c}"' for c in columns if c in table.c)
    conn.execute(text(f"ALTER TABLE {table.name} RENAME TO {old}"))
    table.create(conn)
    conn.execute(text(f"INSERT INTO {table.name} ({keep}) SELECT {keep} FROM {old}"))
    conn.execute(text(f"DROP TABLE {old}"))


MIGRATIONS.append((10, _v10))


def _v12(conn: Connection) -> None:
    # Per-account views: a new table on databases whose step 1 ran before it existed.
    bitable_views.create(conn, checkfirst=True)


MIGRATIONS.append((12, _v12))


def schema_target() -> int:
    """The schema this adsync expects: its highest migration step."""
    return max(version for version, _ in MIGRATIONS)


def _describe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is described, not shown
        return "(unparseable URL)"


class Store:
    """The database: an engine, a migrated schema, transactions and locks, each call retried
    within a bound (see the module docstring)."""

    def __init__(
        self, url: str, data_dir: Path | None = None, *, wait: float = DB_WAIT_SECONDS
    ) -> None:
        self.url_for_humans = _describe(url)
        try:
            self.dialect = make_url(url).get_backend_name()
        except (SQLAlchemyError, ValueError):
            raise StoreError(
                f"{self.url_for_humans} is not a database URL",
                hint="set ADSYNC_DATABASE_URL to sqlite:///path/to/adsync.db or "
                "postgresql://user:password@host:5432/db",
            ) from None
        self.wait = wait  # seconds a call waits for a lock or a lost connection (ADSYNC_DB_WAIT)
        self.data_dir = data_dir
        self.sqlite_path: Path | None = None  # the database file, for SQLite on disk
        # SQLite has one writer at a time, and a connection that finds the database locked
        # sleeps in SQLite's busy handler (1, 2, 5, 10 ... 100 ms) and looks again; with a dozen
        # threads of one process writing (webhook claims, chat lanes, a sync), those sleeps,
        # not the writes, made the waits. Threads of this process queue on this lock instead and
        # start the moment the previous one commits; the busy timeout still arbitrates between
        # processes. Reentrant: a thread's nested transaction behaves as it did without it.
        self._turn_lock: threading.RLock | None = (
            threading.RLock() if self.dialect == "sqlite" else None
        )
        self._claim_statements: dict[int, Any] = {}
        self._repair_lock = threading.Lock()  # one re-creation of vanished tables at a time
        self._repairing = threading.local()  # this thread is re-creating them (no recursion)
        try:
            self.engine = self._create_engine(url)
            self.migrate()
        except StoreError:
            raise
        except (SQLAlchemyError, sqlite3.Error, OSError, ValueError, ImportError) as exc:
            # ImportError: a URL naming a driver that is not installed (mysql://, …).
            raise self._error("cannot open", exc) from None

    def _error(self, doing: str, exc: BaseException) -> StoreError:
        hint = (
            "check ADSYNC_DATABASE_URL (or ADSYNC_DATA_DIR for the default SQLite file); "
            "if the file is damaged, move it aside and re-authorize"
        )
        if self.dialect == "postgresql":
            hint = "check that PostgreSQL is running and ADSYNC_DATABASE_URL is right"
        return StoreError(f"database {self.url_for_humans} {doing}: {_detail(exc)}", hint=hint)

    def _create_engine(self, url: str) -> Engine:
        # hide_parameters: a failed statement's text (which reaches logs, and once reached a
        # chat card) never carries its values — the token pair of an UPDATE included.
        repairs = []
        if self.data_dir is not None:
            repairs.append(private_dir(self.data_dir, create=False))
        if self.dialect == "sqlite":
            database = make_url(url).database
            if database and database != ":memory:" and not database.startswith("file:"):
                self.sqlite_path = Path(database)
                repairs.append(private_dir(self.sqlite_path.parent))
                repairs.append(private_file(self.sqlite_path, create=True))
                for suffix in ("-wal", "-shm", "-journal"):
                    repairs.append(private_file(Path(database + suffix)))
            engine = create_engine(url, connect_args={"timeout": self.wait}, hide_parameters=True)
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        else:
            connect_args: dict[str, Any] = {}
            if "application_name" not in make_url(url).query:
                # Names adsync's sessions in pg_stat_activity (which process, for a DBA).
                name = f"adsync {socket.gethostname()}:{os.getpid()}"
                connect_args["application_name"] = name[:63]
            # pool_pre_ping: a pooled connection the server dropped (a restart, an idle
            # timeout) is noticed at checkout and replaced; one dropped while in use fails its
            # statement, and SQLAlchemy then discards every connection older than the drop
            # (transact retries).
            engine = create_engine(
                url, pool_pre_ping=True, connect_args=connect_args, hide_parameters=True
            )
            event.listen(engine, "connect", _pg_lock_timeout(self.wait))
        if any(repairs):
            log.warning("made owner-only (others could read them): %s", describe(repairs))
        return engine

    def migrate(self) -> None:
        # Every process opens the store; nearly always the schema is current. Look first, with
        # a plain read, so a read-only command (`adsync token status`) takes no write lock.
        with contextlib.suppress(SQLAlchemyError):
            if self.applied_steps() >= {version for version, _ in MIGRATIONS}:
                if self.schema_version() > schema_target():
                    raise self._too_new(self.schema_version())
                return
        with self.exclusive() as conn:
            if self.dialect == "postgresql":
                # Serialise concurrent first starts; keyed by schema so test schemas don't collide.
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema()))"))
            schema_version.create(conn, checkfirst=True)
            applied = set(conn.execute(select(schema_version.c.version)).scalars())
            if applied and max(applied) > schema_target():
                raise self._too_new(max(applied))
            for version, step in MIGRATIONS:
                if version not in applied:
                    step(conn)
                    conn.execute(
                        insert(schema_version).values(version=version, migrated_at=utcnow())
                    )

    def _too_new(self, current: int) -> StoreError:
        return StoreError(
            f"database {self.url_for_humans} has schema {current}, newer than this "
            f"adsync ({schema_target()})",
            hint="upgrade adsync, or point ADSYNC_DATABASE_URL elsewhere",
        )

    def applied_steps(self) -> set[int]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(schema_version.c.version)).scalars())

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.max(schema_version.c.version))).scalar() or 0

    # -- transactions, retried within a bound -----------------------------------------------

    @contextlib.contextmanager
    def _turn(self, deadline: float, wait: float) -> Iterator[None]:
        """On SQLite, this process's turn to open a transaction (see ``__init__``)."""
        if self._turn_lock is None:
            yield
            return
        if not self._turn_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise StoreError(
                f"database {self.url_for_humans} is busy: another thread of this process held "
                f"it for more than {wait:g} s",
                hint="a slow transaction of this process (a token refresh waiting on the "
                "network?) holds it; try again in a moment",
            )
        try:
            yield
        finally:
            self._turn_lock.release()

    def _open(self, exclusive: bool, wait: float, deadline: float) -> tuple[Connection, Any]:
        """One attempt at a connection with its transaction begun, bounded by ``deadline``:
        SQLite's busy handler waits at most what is left of it, PostgreSQL's lock_timeout is
        the call's bound."""
        conn = self.engine.connect()
        try:
            if self.dialect == "sqlite":
                left = max(0.05, deadline - time.monotonic())
                conn.execution_options(
                    # In 50 ms steps, so the PRAGMA that sets it is rarely sent again.
                    sqlite_busy_ms=int(left * 20) * 50,
                    sqlite_begin="IMMEDIATE" if exclusive else "",
                )
            trans = conn.begin()
            if self.dialect == "postgresql" and wait != self.wait:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(wait * 1000)}")
            return conn, trans
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise

    def _open_retrying(
        self, exclusive: bool, wait: float, deadline: float
    ) -> tuple[Connection, Any]:
        attempt = 0
        while True:
            try:
                return self._open(exclusive, wait, deadline)
            except DBAPIError as exc:
                if failure_kind(exc) in (LOCKED, DISCONNECTED) and _pause(attempt, deadline):
                    attempt += 1
                    continue
                raise self._failure(exc, wait) from None

    @contextlib.contextmanager
    def _transaction(self, exclusive: bool, wait: float | None) -> Iterator[Connection]:
        """The ``with`` form: taking the connection and the lock is retried; a failure inside
        becomes a StoreError that says what happened (the body cannot be run again from here:
        use ``transact`` for that)."""
        bound = self.wait if wait is None else wait
        deadline = time.monotonic() + bound
        with self._turn(deadline, bound):
            conn, trans = self._open_retrying(exclusive, bound, deadline)
            committing = False
            try:
                try:
                    yield conn
                    committing = True
                    trans.commit()
                except BaseException:
                    if trans.is_active:
                        with contextlib.suppress(Exception):
                            trans.rollback()
                    raise
            except DBAPIError as exc:
                raise self._failure(exc, bound, committing=committing, repair=True) from None
            finally:
                with contextlib.suppress(Exception):
                    conn.close()

    @contextlib.contextmanager
    def begin(self, *, wait: float | None = None) -> Iterator[Connection]:
        """A plain transaction: committed on success, rolled back on error."""
        with self._transaction(False, wait) as conn:
            yield conn

    @contextlib.contextmanager
    def exclusive(self, *, wait: float | None = None) -> Iterator[Connection]:
        """A transaction that holds the database's write lock from its first statement (SQLite
        ``BEGIN IMMEDIATE``). On PostgreSQL it is a plain transaction: lock the rows you need
        with ``FOR UPDATE``."""
        with self._transaction(True, wait) as conn:
            yield conn

    @contextlib.contextmanager
    def connect(self, *, wait: float | None = None) -> Iterator[Connection]:
        """A connection for reads (rolled back at the end); checking it out is retried."""
        bound = self.wait if wait is None else wait
        deadline = time.monotonic() + bound
        attempt = 0
        while True:
            try:
                conn = self.engine.connect()
                break
            except DBAPIError as exc:
                if failure_kind(exc) == DISCONNECTED and _pause(attempt, deadline):
                    attempt += 1
                    continue
                raise self._failure(exc, bound) from None
        try:
            yield conn
        except DBAPIError as exc:
            raise self._failure(exc, bound, repair=True) from None
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def transact(
        self,
        fn: Callable[[Connection], T],
        *,
        exclusive: bool = False,
        wait: float | None = None,
        idempotent: bool = False,
    ) -> T:
        """Run ``fn(conn)`` in a transaction and commit; on a lock timeout, a deadlock or a lost
        connection, run it again (``fn`` must be safe to rerun: it only talks to ``conn``) until
        ``wait`` runs out. A lost connection during the commit is retried only if
        ``idempotent``: a rerun of ``fn`` after a commit that did land changes nothing."""
        bound = self.wait if wait is None else wait
        deadline = time.monotonic() + bound
        attempt, repaired = 0, False
        while True:
            committing = False
            try:
                with self._turn(deadline, bound):
                    conn, trans = self._open(exclusive, bound, deadline)
                    try:
                        result = fn(conn)
                        committing = True
                        trans.commit()
                        return result
                    except BaseException:
                        if trans.is_active:
                            with contextlib.suppress(Exception):
                                trans.rollback()
                        raise
                    finally:
                        with contextlib.suppress(Exception):
                            conn.close()
            except DBAPIError as exc:
                kind = failure_kind(exc)
                if kind == SCHEMA_MISSING and not repaired:
                    self._recreate_tables(exc)
                    repaired = True
                    continue
                unknown = committing and kind == DISCONNECTED and not idempotent
                if kind in (LOCKED, DISCONNECTED) and not unknown and _pause(attempt, deadline):
                    attempt += 1
                    continue
                raise self._failure(exc, bound, committing=committing) from None

    def read(self, fn: Callable[[Connection], T], *, wait: float | None = None) -> T:
        """Run the read ``fn(conn)``; run it again on a lost connection, within ``wait``."""
        bound = self.wait if wait is None else wait
        deadline = time.monotonic() + bound
        attempt, repaired = 0, False
        while True:
            try:
                with self.engine.connect() as conn:
                    return fn(conn)
            except DBAPIError as exc:
                kind = failure_kind(exc)
                if kind == SCHEMA_MISSING and not repaired:
                    self._recreate_tables(exc)
                    repaired = True
                    continue
                if kind in (LOCKED, DISCONNECTED) and _pause(attempt, deadline):
                    attempt += 1
                    continue
                raise self._failure(exc, bound) from None

    def _failure(
        self, exc: DBAPIError, wait: float, *, committing: bool = False, repair: bool = False
    ) -> BaseException:
        """What to raise for ``exc``: a StoreError naming the lock, the outage or the missing
        tables (after re-creating them, if ``repair``), or ``exc`` itself for anything else
        (a constraint, a bug: not ours to rephrase)."""
        kind = failure_kind(exc)
        where = f"database {self.url_for_humans}"
        detail = _detail(exc)
        if kind is None:
            return exc
        if kind == SCHEMA_MISSING:
            if not repair:
                return self._tables_lost(exc)
            self._recreate_tables(exc)
            return StoreError(
                f"{where} had lost adsync's tables ({detail}); they were created again, "
                "empty: what they held (the authorization, the run history) is gone",
                hint="try again; if it asks for authorization, run `adsync auth url`",
            )
        if kind == LOCKED and self.dialect == "sqlite":
            return StoreError(
                f"{where} is locked by another process: its write lock was held for more "
                f"than {wait:g} s ({detail})",
                hint="another program holds the database file's write lock (a sqlite3 shell or "
                "a DB browser with unsaved changes, a backup, a stuck adsync): close it, then try "
                "again; nothing was changed",
            )
        if kind == LOCKED:
            return StoreError(
                f"{where}: a lock was held by another session for more than {wait:g} s ({detail})",
                hint="another adsync process or a database session holds it (pg_stat_activity "
                "shows which); it is freed when that transaction ends; try again",
            )
        if committing:
            return StoreError(
                f"{where} lost the connection while committing: whether the change was saved "
                f"is unknown ({detail})",
                hint="run the command again (adsync's writes are upserts) and check `adsync "
                "history`",
            )
        return StoreError(
            f"{where} is unreachable: the connection was lost and not back within {wait:g} s "
            f"({detail})",
            hint="check that PostgreSQL is running and reachable at ADSYNC_DATABASE_URL; adsync "
            "reconnects by itself once it is back",
        )

    def _recreate_tables(self, cause: DBAPIError) -> None:
        """adsync's tables vanished under this process (PostgreSQL dropped and recreated):
        create them again, empty, and say so — or raise saying they cannot be."""
        if getattr(self._repairing, "active", False):
            raise self._tables_lost(cause)  # failing inside our own re-creation: give up
        self._repairing.active = True
        try:
            with self._repair_lock:
                log.error(
                    "database %s: adsync's tables are gone (%s); creating them again. What they "
                    "held (the authorization, run history, local copy) is lost: authorize again "
                    "if asked",
                    self.url_for_humans,
                    _detail(cause),
                )
                try:
                    with self.exclusive() as conn:
                        if self.dialect == "postgresql":
                            conn.execute(
                                text("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
                            )
                        metadata.create_all(conn, checkfirst=True)
                    self.migrate()
                except (StoreError, SQLAlchemyError):
                    raise self._tables_lost(cause) from None
        finally:
            self._repairing.active = False

    def _tables_lost(self, cause: DBAPIError) -> StoreError:
        return StoreError(
            f"database {self.url_for_humans} has lost adsync's tables and they cannot be created "
            f"again ({_detail(cause)})",
            hint="the database (or the schema named in ADSYNC_DATABASE_URL) must exist and be "
            "writable; recreate or restore it, then restart adsync",
        )

    def check(self) -> str:
        """A quick health check; returns a description or raises StoreError."""

        def look(conn: Connection) -> None:
            conn.execute(select(func.count()).select_from(tokens)).scalar()
            if self.dialect == "sqlite":
                result = conn.exec_driver_sql("PRAGMA quick_check").scalar()
                if result != "ok":
                    raise StoreError(f"database {self.url_for_humans} is damaged: {result}")

        try:
            self.read(look)
        except SQLAlchemyError as exc:
            raise self._error("is not readable", exc) from None
        return f"{self.url_for_humans} (schema {self.schema_version()})"

    def dispose(self) -> None:
        self.engine.dispose()

    # -- leases --------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take ``name`` for ``ttl`` if it is free, expired, already ours, or held by a process
        that is provably dead (same host, pid gone or reused: ``processes.alive``) — a crashed
        run never makes the next one wait out its TTL. A holder on another host still runs out
        by its TTL."""
        if self._take_lease(name, holder, ttl):
            return True
        current = self.lease_holder(name)
        if current is None or current == holder or processes.alive(current) is not False:
            return False
        log.warning("lease %s: its holder %s is no longer running; taking it over", name, current)
        self.release_lease(name, current)
        return self._take_lease(name, holder, ttl)

    def _take_lease(self, name: str, holder: str, ttl: timedelta) -> bool:
        now = utcnow()
        dialect_insert = pg_insert if self.dialect == "postgresql" else sqlite_insert

        def take(conn: Connection) -> bool:
            if conn.execute(
                update(leases)
                .where(leases.c.name == name)
                .where((leases.c.expires_at < now) | (leases.c.holder == holder))
                .values(holder=holder, acquired_at=now, expires_at=now + ttl)
            ).rowcount:
                return True
            fresh = dialect_insert(leases).values(
                name=name, holder=holder, acquired_at=now, expires_at=now + ttl
            )
            # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT.
            inserted = conn.execute(fresh.on_conflict_do_nothing().returning(leases.c.name))
            return inserted.first() is not None

        # Idempotent: a rerun after a commit that landed finds the lease ours (holder matches).
        return self.transact(take, idempotent=True)

    def renew_lease(self, name: str, holder: str, ttl: timedelta) -> bool:
        def renew(conn: Connection) -> bool:
            return bool(
                conn.execute(
                    update(leases)
                    .where(leases.c.name == name, leases.c.holder == holder)
                    .values(expires_at=utcnow() + ttl)
                ).rowcount
            )

        return self.transact(renew, idempotent=True)

    def release_lease(self, name: str, holder: str) -> None:
        self.transact(
            lambda conn: conn.execute(
                delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            ),
            idempotent=True,
        )

    def lease_holder(self, name: str) -> str | None:
        row = self.read(
            lambda conn: conn.execute(
                select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
            ).first()
        )
        if row is None or row.expires_at < utcnow():
            return None
        return str(row.holder)

    # -- dedup ---------------------------------------------------------------------------------

    def claim(self, key: str, ttl: timedelta) -> bool:
        """True the first time ``key`` is claimed within ``ttl`` (across processes)."""
        return self.claim_all([key], ttl)

    def claim_all(self, keys: Sequence[str], ttl: timedelta, *, wait: float | None = None) -> bool:
        """True if this call claimed every one of ``keys``: each was new, or its claim had
        expired. Keys that were free are taken even when another was held (as separate claims
        would), so a retry under a new event id of a known message is remembered as well.

        One upsert, one transaction, one round trip: a key is inserted, or its row taken over
        if expired; a live claim is left alone and not counted, so the count of rows written
        says whether all were ours. (It was two transactions a key, the second only after an
        IntegrityError.) Concurrent claims of a key on PostgreSQL wait for each other at the
        unique index and then see the winner's row; SQLite has one writer at a time.

        Rerun safely after a lost commit: each call claims under its own ``owner`` token, and a
        row already carrying that token counts as this call's own."""
        wanted = sorted(set(keys))  # one row per key, and one lock order on PostgreSQL
        if not wanted:
            return True
        now = utcnow()
        params: dict[str, Any] = {"now": now, "until": now + ttl, "owner": uuid.uuid4().hex}
        params.update({f"key{i}": k for i, k in enumerate(wanted)})
        statement = self._claim_statement(len(wanted))
        return self.transact(
            lambda conn: conn.execute(statement, params).rowcount == len(wanted),
            wait=wait,
            idempotent=True,
        )

    def _claim_statement(self, n: int) -> Any:
        """The upsert for ``n`` keys, as SQL text (the same on SQLite and PostgreSQL), built once
        per ``n``. Text is compiled once and cached; SQLAlchemy compiles a multi-row
        ``insert().values([...])`` on every call, which cost more than the database work."""
        stmt = self._claim_statements.get(n)
        if stmt is None:
            rows = ", ".join(f"(:key{i}, :now, :until, :owner)" for i in range(n))
            stmt = text(
                f"INSERT INTO dedup (key, created_at, expires_at, owner) VALUES {rows} "
                "ON CONFLICT (key) DO UPDATE SET created_at = excluded.created_at, "
                "expires_at = excluded.expires_at, owner = excluded.owner "
                "WHERE dedup.expires_at < :now OR dedup.owner = :owner"
            ).bindparams(
                bindparam("now", type_=UTCDateTime()), bindparam("until", type_=UTCDateTime())
            )
            self._claim_statements[n] = stmt
        return stmt

    def purge_expired(self) -> int:
        now = utcnow()

        def purge(conn: Connection) -> int:
            n = conn.execute(delete(dedup).where(dedup.c.expires_at < now)).rowcount
            n += conn.execute(delete(oauth_states).where(oauth_states.c.expires_at < now)).rowcount
            n += conn.execute(
                delete(pending_grants).where(pending_grants.c.expires_at < now)
            ).rowcount
            return int(n)

        return self.transact(purge, idempotent=True)


def _pause(attempt: int, deadline: float) -> bool:
    """Sleep before retry ``attempt`` (20 ms doubling to 250 ms, jittered) if the deadline
    leaves room for another try; False when it does not."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    time.sleep(min(left, random.uniform(0.5, 1.0) * min(0.25, 0.02 * 2**attempt)))
    return True


def _detail(exc: BaseException) -> str:
    """The first line of the driver's message (never the SQL or its parameters)."""
    text_ = str(getattr(exc, "orig", None) or exc).strip()
    return (text_.splitlines() or [type(exc).__name__])[0][:200]


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Let the "begin" listener issue BEGIN so we choose DEFERRED or IMMEDIATE ourselves.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        # The busy handler's wait is set per transaction (``_sqlite_on_begin``); reads outside
        # one keep the timeout the connection was opened with (``Store.wait``).
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable against process crashes in WAL
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    busy_ms = options.get("sqlite_busy_ms")
    if busy_ms is not None and conn.info.get("busy_ms") != busy_ms:
        # How long this transaction's statements wait for another process's write lock: what
        # is left of the call's bound, never SQLite's own default of forever-ish retries.
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(busy_ms)}")
        conn.info["busy_ms"] = busy_ms
    mode = options.get("sqlite_begin", "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())


def _pg_lock_timeout(wait: float) -> Callable[[Any, Any], None]:
    """A connect hook: a session waits at most ``wait`` for a lock (55P03 after it), so a call
    blocked by another session's row lock fails within the bound instead of hanging."""

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(wait * 1000)}")
        dbapi_conn.commit()

    return on_connect


def open_store(url: str, wait: float = DB_WAIT_SECONDS, data_dir: Path | None = None) -> Store:
    return Store(url, data_dir, wait=wait)


__all__ = [
    "BACKGROUND_WAIT_SECONDS",
    "DB_WAIT_SECONDS",
    "Store",
    "failure_kind",
    "open_store",
    "utcnow",
    "actor",
    "metadata",
    "tokens",
    "token_history",
    "accounts",
    "runs",
    "run_accounts",
    "report_rows",
    "dedup",
    "jobs",
    "leases",
    "oauth_states",
    "notifications",
    "alerts",
    "bitable_tables",
    "table_dates",
    "token_refreshes",
    "pending_grants",
    "chain_accounts",
    "LEGACY_CHAIN",
]
