"""Storage: SQLAlchemy Core tables, a versioned schema migrated on open, and the two locks
everything else builds on.

SQLite (the default, under ``ADSYNC_DATA_DIR``) runs in WAL mode with a busy timeout, and every
transaction is opened by us (``BEGIN`` / ``BEGIN IMMEDIATE``) rather than by the sqlite3 module,
so an exclusive section really is exclusive across processes. Within one process, transactions
take turns on a lock first (see ``Store._turn``), so threads queue instead of polling SQLite's
busy handler. PostgreSQL uses row locks
(``SELECT ... FOR UPDATE``). A process killed inside a transaction leaves nothing behind: the
database rolls it back and releases its locks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from adsync.sync.errors import StoreError

SQLITE_BUSY_SECONDS = 60  # how long a writer waits for the database before giving up


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

# One row per Ocean Engine app: the current token pair of the authorization chain.
tokens = Table(
    "tokens",
    metadata,
    Column("app_id", String(32), primary_key=True),
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
    Index("ix_token_history_app_at", "app_id", "at"),
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
    Column("status", String(16), nullable=False),  # running | ok | partial | failed
    Column("api_calls", Integer, nullable=False, default=0),
    Column("rows_created", Integer, nullable=False, default=0),
    Column("rows_updated", Integer, nullable=False, default=0),
    Column("rows_unchanged", Integer, nullable=False, default=0),
    Column("rows_deleted", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("detail", Text),  # JSON: the result object
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
    Index("ix_dedup_expires", "expires_at"),
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


def utcnow() -> datetime:
    return datetime.now(UTC)


def actor() -> str:
    """Who is doing something, for history rows and lease holders."""
    return f"{socket.gethostname()}:{os.getpid()}"


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


def _v4(conn: Connection) -> None:
    """Discovery by account type: the accounts table learns where each account came from."""
    add_missing_columns(conn, accounts)


MIGRATIONS.append((4, _v4))


def _v5(conn: Connection) -> None:
    # The rolling-table registry: new tables on databases whose step 1 ran before they existed.
    bitable_tables.create(conn, checkfirst=True)
    table_dates.create(conn, checkfirst=True)


MIGRATIONS.append((5, _v5))


def schema_target() -> int:
    """The schema this adsync expects: its highest migration step."""
    return max(version for version, _ in MIGRATIONS)


def _describe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is described, not shown
        return "(unparseable URL)"


class Store:
    """The database: an engine, a migrated schema, transactions and locks."""

    def __init__(self, url: str) -> None:
        self.url_for_humans = _describe(url)
        self.dialect = make_url(url).get_backend_name()
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
        try:
            self.engine = self._create_engine(url)
            self.migrate()
        except StoreError:
            raise
        except (SQLAlchemyError, sqlite3.Error, OSError, ValueError) as exc:
            raise self._error("cannot open", exc) from None

    def _error(self, doing: str, exc: BaseException) -> StoreError:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        hint = (
            "check ADSYNC_DATABASE_URL (or ADSYNC_DATA_DIR for the default SQLite file); "
            "if the file is damaged, move it aside and re-authorize"
        )
        if self.dialect == "postgresql":
            hint = "check that PostgreSQL is running and ADSYNC_DATABASE_URL is right"
        return StoreError(f"database {self.url_for_humans} {doing}: {detail}", hint=hint)

    def _create_engine(self, url: str) -> Engine:
        if self.dialect == "sqlite":
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        return create_engine(url, pool_pre_ping=True)

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

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """On SQLite, this process's turn to open a transaction (see ``__init__``)."""
        if self._turn_lock is None:
            yield
            return
        if not self._turn_lock.acquire(timeout=SQLITE_BUSY_SECONDS):
            raise StoreError(
                f"database {self.url_for_humans} is locked: another thread of this process "
                f"held it for {SQLITE_BUSY_SECONDS} s",
                hint="a transaction is stuck; restart the process",
            )
        try:
            yield
        finally:
            self._turn_lock.release()

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A plain transaction: committed on success, rolled back on error."""
        with self._turn(), self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[Connection]:
        """A transaction that holds the database's write lock from its first statement (SQLite
        ``BEGIN IMMEDIATE``). On PostgreSQL it is a plain transaction: lock the rows you need
        with ``FOR UPDATE``."""
        with self._turn(), self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def check(self) -> str:
        """A quick health check; returns a description or raises StoreError."""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(func.count()).select_from(tokens)).scalar()
                if self.dialect == "sqlite":
                    result = conn.exec_driver_sql("PRAGMA quick_check").scalar()
                    if result != "ok":
                        raise StoreError(f"database {self.url_for_humans} is damaged: {result}")
        except SQLAlchemyError as exc:
            raise self._error("is not readable", exc) from None
        return f"{self.url_for_humans} (schema {self.schema_version()})"

    def dispose(self) -> None:
        self.engine.dispose()

    # -- leases --------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take ``name`` for ``ttl`` if it is free, expired, or already ours."""
        now = utcnow()
        with self.begin() as conn:
            taken = conn.execute(
                update(leases)
                .where(leases.c.name == name)
                .where((leases.c.expires_at < now) | (leases.c.holder == holder))
                .values(holder=holder, acquired_at=now, expires_at=now + ttl)
            ).rowcount
            if taken:
                return True
        try:
            with self.begin() as conn:
                conn.execute(
                    insert(leases).values(
                        name=name, holder=holder, acquired_at=now, expires_at=now + ttl
                    )
                )
            return True
        except IntegrityError:
            return False

    def renew_lease(self, name: str, holder: str, ttl: timedelta) -> bool:
        with self.begin() as conn:
            return bool(
                conn.execute(
                    update(leases)
                    .where(leases.c.name == name, leases.c.holder == holder)
                    .values(expires_at=utcnow() + ttl)
                ).rowcount
            )

    def release_lease(self, name: str, holder: str) -> None:
        with self.begin() as conn:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))

    def lease_holder(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
            ).first()
        if row is None or row.expires_at < utcnow():
            return None
        return row.holder

    # -- dedup ---------------------------------------------------------------------------------

    def claim(self, key: str, ttl: timedelta) -> bool:
        """True the first time ``key`` is claimed within ``ttl`` (across processes)."""
        return self.claim_all([key], ttl)

    def claim_all(self, keys: Sequence[str], ttl: timedelta) -> bool:
        """True if this call claimed every one of ``keys``: each was new, or its claim had
        expired. Keys that were free are taken even when another was held (as separate claims
        would), so a retry under a new event id of a known message is remembered as well.

        One upsert, one transaction, one round trip: a key is inserted, or its row taken over
        if expired; a live claim is left alone and not counted, so the count of rows written
        says whether all were ours. (It was two transactions a key, the second only after an
        IntegrityError.) Concurrent claims of a key on PostgreSQL wait for each other at the
        unique index and then see the winner's row; SQLite has one writer at a time."""
        wanted = sorted(set(keys))  # one row per key, and one lock order on PostgreSQL
        if not wanted:
            return True
        now = utcnow()
        params: dict[str, Any] = {"now": now, "until": now + ttl}
        params.update({f"key{i}": k for i, k in enumerate(wanted)})
        with self.begin() as conn:
            return conn.execute(self._claim_statement(len(wanted)), params).rowcount == len(wanted)

    def _claim_statement(self, n: int) -> Any:
        """The upsert for ``n`` keys, as SQL text (the same on SQLite and PostgreSQL), built once
        per ``n``. Text is compiled once and cached; SQLAlchemy compiles a multi-row
        ``insert().values([...])`` on every call, which cost more than the database work."""
        stmt = self._claim_statements.get(n)
        if stmt is None:
            rows = ", ".join(f"(:key{i}, :now, :until)" for i in range(n))
            stmt = text(
                f"INSERT INTO dedup (key, created_at, expires_at) VALUES {rows} "
                "ON CONFLICT (key) DO UPDATE SET created_at = excluded.created_at, "
                "expires_at = excluded.expires_at WHERE dedup.expires_at < :now"
            ).bindparams(
                bindparam("now", type_=UTCDateTime()), bindparam("until", type_=UTCDateTime())
            )
            self._claim_statements[n] = stmt
        return stmt

    def purge_expired(self) -> int:
        now = utcnow()
        with self.begin() as conn:
            n = conn.execute(delete(dedup).where(dedup.c.expires_at < now)).rowcount
            n += conn.execute(delete(oauth_states).where(oauth_states.c.expires_at < now)).rowcount
        return n


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Let the "begin" listener issue BEGIN so we choose DEFERRED or IMMEDIATE ourselves.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable against process crashes in WAL
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())


def open_store(url: str) -> Store:
    return Store(url)


__all__ = [
    "Store",
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
    "leases",
    "oauth_states",
    "notifications",
    "alerts",
    "bitable_tables",
    "table_dates",
]
