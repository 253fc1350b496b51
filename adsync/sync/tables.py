"""Rolling tables: which Bitable table of the Base holds which dates.

A Bitable table holds a fixed number of rows (``ADSYNC_TABLE_MAX_ROWS``: 20,000 on the basic
plan; the platform answers 1254103 past it), so a team syncing every day fills one in months
(77 accounts x 2 promotions) or weeks (x 20). adsync therefore writes into a series of tables
in the same Base (at most 100 tables and dashboards per Base, 1254100):

* ``ADSYNC_TABLE_ROLL=month|quarter|year``: each period has its table, named from
  ``ADSYNC_TABLE_NAME`` (``本地推日报 2026-02``), found by that name or created;
* ``full`` (the default): the configured table is used until the next date's rows would not
  fit, then ``本地推日报 #2`` is started, and so on;
* in every mode a table that fills up before its period ends continues in a next part
  (``本地推日报 2026-02 #2``).

Every date has one home (``table_dates``): its rows are all in that table, a re-sync or a
backfill writes them there (last year's dates into last year's table, never today's), and
nothing splits a date across two tables. The registry (``bitable_tables``) remembers every
table, where it came from and what became of it (full, deleted by a person and recreated).

This module is the registry and the arithmetic (periods, names, forecasts): no Feishu calls,
no lark-oapi, so the CLI's read commands and the bot's notices use it cheaply. Writing across
tables — routing each date to its table, starting and recreating tables — is
``adsync.sync.routing``. Every change to the registry is made by a holder of the Base's writer
lease (``write_lease``), so two processes never both start the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from adsync.sync.config import Settings
from adsync.sync.store import (
    BACKGROUND_WAIT_SECONDS,
    Store,
    UTCDateTime,
    bitable_tables,
    report_rows,
    table_dates,
    utcnow,
)

FULL = "full"  # the period key of tables rolled only when full
OPEN, CLOSED, DELETED = "open", "closed", "deleted"
CONFIGURED, CREATED, FOUND = "configured", "created", "found"
WARN_DAYS = 7  # the group hears a week before a table is expected to fill
RATE_DAYS = 7  # the fill rate: rows per day over the last week of synced dates
MAX_TABLES = 100  # tables and dashboards per Base (1254100)

T = TypeVar("T")


def write_lease(settings: Settings) -> str:
    """The lease every writer of the Base holds: one writer per Base, so table creation and
    the registry have a single author at a time (the platform also refuses overlapping
    writes to one table, 1254291)."""
    return f"write:{settings.feishu_bitable_app_token}"


def day_lease(settings: Settings, day: date) -> str:
    """Two runs never write the same date at once, whichever table holds it."""
    return f"sync:{settings.feishu_bitable_app_token}:{day.isoformat()}"


# -- periods and names --------------------------------------------------------------------------


def period_of(day: date, roll: str) -> str:
    """The period a date belongs to: ``2026-02``, ``2026-Q1``, ``2026``; ``full`` otherwise."""
    if roll == "month":
        return f"{day:%Y-%m}"
    if roll == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    if roll == "year":
        return str(day.year)
    return FULL


def period_end(period: str) -> date | None:
    """The last day of a period (None for ``full``)."""
    if period == FULL:
        return None
    if "-Q" in period:
        year, quarter = period.split("-Q")
        first_of_next = _first_of_month(int(year), int(quarter) * 3 + 1)
    elif "-" in period:
        year, month = period.split("-")
        first_of_next = _first_of_month(int(year), int(month) + 1)
    else:
        first_of_next = date(int(period) + 1, 1, 1)
    return first_of_next - timedelta(days=1)


def _first_of_month(year: int, month: int) -> date:
    return date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def table_name(template: str, period: str, part: int) -> str:
    """``本地推日报 2026-02``; its next parts ``… 2026-02 #2``; full-mode tables ``… #2``."""
    label = period if part <= 1 else f"{period} #{part}"
    if period == FULL:
        label = f"#{part}"
    return template.replace("{period}", label).strip()


def table_link(settings: Settings, table_id: str) -> str:
    """The table in a browser. ``ADSYNC_BITABLE_URL`` (the Base's address as the browser
    shows it, with the tenant's own host) is the reliable form; without it the link is built
    on the public host of ``FEISHU_DOMAIN`` (open.feishu.cn -> feishu.cn), which sends people
    to their tenant after login."""
    if settings.bitable_url:
        base = settings.bitable_url.split("?", 1)[0]
    else:
        parts = urlsplit(settings.feishu_domain)
        host = parts.netloc.removeprefix("open.")
        base = f"{parts.scheme}://{host}/base/{settings.feishu_bitable_app_token}"
    return f"{base}?table={table_id}"


# -- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRecord:
    table_id: str
    name: str
    period: str | None
    part: int
    origin: str
    status: str
    rows: int | None
    counted_at: datetime | None
    registered_at: datetime
    replaces: str | None
    replaced_by: str | None
    announced_at: datetime | None
    fill_warned_at: datetime | None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.table_id})" if self.name else self.table_id


@dataclass(frozen=True)
class Home:
    table_id: str
    moving_from: str | None = None


@dataclass(frozen=True)
class TableEvent:
    """Something the group should hear about a table (reported in the run's result)."""

    kind: str  # started | found | recreated
    table_id: str
    name: str
    period: str
    reason: str
    link: str = ""
    replaces: str = ""
    dates: int = 0
    rows: int = 0


class Registry:
    """The tables of one Base and the home of every date, in the database.

    Its writes are made by a writer in the background (nobody waits on them with a deadline),
    so they wait for the database as long as a run's ledger does (``BACKGROUND_WAIT_SECONDS``),
    and each is written so that running it again after a commit whose answer was lost changes
    nothing (``Store.transact(..., idempotent=True)``)."""

    def __init__(self, store: Store, app_token: str) -> None:
        self.store = store
        self.app = app_token

    def _write(self, fn: Callable[[Connection], T]) -> T:
        return self.store.transact(fn, wait=BACKGROUND_WAIT_SECONDS, idempotent=True)

    def _mine(self) -> Any:
        return bitable_tables.c.app_token == self.app

    # ---- tables ------------------------------------------------------------------------------

    def tables(self) -> list[TableRecord]:
        query = (
            select(bitable_tables)
            .where(self._mine())
            .order_by(bitable_tables.c.registered_at, bitable_tables.c.table_id)
        )
        return [_record(r) for r in self.store.read(lambda conn: conn.execute(query).all())]

    def get(self, table_id: str) -> TableRecord | None:
        return next((t for t in self.tables() if t.table_id == table_id), None)

    def add(
        self,
        table_id: str,
        name: str,
        *,
        period: str | None,
        part: int,
        origin: str,
        status: str = OPEN,
        replaces: str | None = None,
        rows: int | None = None,
    ) -> TableRecord:
        now = utcnow()
        values = {
            "app_token": self.app,
            "table_id": table_id,
            "name": name,
            "period": period,
            "part": part,
            "origin": origin,
            "status": status,
            "rows": rows,
            "counted_at": now if rows is not None else None,
            "registered_at": now,
            "replaces": replaces,
        }
        stmt = self._insert(bitable_tables).values(**values).on_conflict_do_nothing()
        self._write(lambda conn: conn.execute(stmt))
        found = self.get(table_id)
        assert found is not None
        return found

    def _insert(self, table: Any) -> Any:
        return (pg_insert if self.store.dialect == "postgresql" else sqlite_insert)(table)

    def update(self, table_id: str, **values: Any) -> None:
        stmt = (
            update(bitable_tables)
            .where(self._mine(), bitable_tables.c.table_id == table_id)
            .values(**values)
        )
        self._write(lambda conn: conn.execute(stmt))

    def counted(self, table_id: str, rows: int) -> None:
        self.update(table_id, rows=rows, counted_at=utcnow())

    def claim(self, table_id: str, column: str) -> datetime | None:
        """Mark ``column`` (announced_at, fill_warned_at) if it is not yet: the time marked
        when this caller is the one to speak, None if someone already did. (A rerun after a
        lost commit recognises its own mark.)"""
        now = utcnow()
        col = bitable_tables.c[column]
        stmt = (
            update(bitable_tables)
            .where(self._mine(), bitable_tables.c.table_id == table_id)
            .where(col.is_(None) | (col == now))
            .values({column: now})
        )
        done = self._write(lambda conn: conn.execute(stmt).rowcount)
        return now if done else None

    def unclaim(self, table_id: str, column: str, at: datetime) -> None:
        """Give a claim back (nobody heard the message): the next attempt speaks again."""
        col = bitable_tables.c[column]
        stmt = (
            update(bitable_tables)
            .where(self._mine(), bitable_tables.c.table_id == table_id, col == at)
            .values({column: None})
        )
        self._write(lambda conn: conn.execute(stmt))

    # ---- homes -------------------------------------------------------------------------------

    def homes(self, dates: Iterable[date] | None = None) -> dict[date, Home]:
        query = select(table_dates).where(table_dates.c.app_token == self.app)
        wanted = sorted(set(dates)) if dates is not None else None
        if wanted is not None:
            if not wanted:
                return {}
            query = query.where(table_dates.c.stat_date.between(wanted[0], wanted[-1]))
        found = self.store.read(lambda conn: conn.execute(query).all())
        keep = set(wanted) if wanted is not None else None
        return {
            r.stat_date: Home(r.table_id, r.moving_from)
            for r in found
            if keep is None or r.stat_date in keep
        }

    def set_homes(
        self, dates: Sequence[date], table_id: str, moving_from: str | None = None
    ) -> None:
        if not dates:
            return
        now = utcnow()
        stmt = self._insert(table_dates)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table_dates.c.app_token, table_dates.c.stat_date],
            set_={
                "table_id": stmt.excluded.table_id,
                "moving_from": stmt.excluded.moving_from,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        values = [
            {
                "app_token": self.app,
                "stat_date": d,
                "table_id": table_id,
                "moving_from": moving_from,
                "updated_at": now,
            }
            for d in sorted(set(dates))
        ]
        self._write(lambda conn: conn.execute(stmt, values))

    def drop_homes(self, dates: Sequence[date]) -> None:
        stmt = (
            delete(table_dates)
            .where(table_dates.c.app_token == self.app)
            .where(table_dates.c.stat_date.in_(sorted(set(dates))))
        )
        self._write(lambda conn: conn.execute(stmt))

    def move_homes(self, old: str, new: str) -> list[date]:
        """Every date of ``old`` now lives in ``new`` (a table recreated after a deletion);
        returns those dates (``new`` is a fresh table: its dates are the moved ones, also when
        this runs again after a lost commit)."""

        def move(conn: Connection) -> list[date]:
            conn.execute(
                update(table_dates)
                .where(table_dates.c.app_token == self.app, table_dates.c.table_id == old)
                .values(table_id=new, updated_at=utcnow())
            )
            days = conn.execute(
                select(table_dates.c.stat_date).where(
                    table_dates.c.app_token == self.app, table_dates.c.table_id == new
                )
            ).scalars()
            return sorted(days)

        return self._write(move)

    def pending_moves(self) -> dict[date, Home]:
        return {d: h for d, h in self.homes().items() if h.moving_from}

    def spans(self) -> dict[str, tuple[date, date, int]]:
        """table_id -> (first date, last date, number of dates) it holds."""
        query = (
            select(
                table_dates.c.table_id,
                func.min(table_dates.c.stat_date),
                func.max(table_dates.c.stat_date),
                func.count(),
            )
            .where(table_dates.c.app_token == self.app)
            .group_by(table_dates.c.table_id)
        )
        found = self.store.read(lambda conn: conn.execute(query).all())
        return {r[0]: (r[1], r[2], int(r[3])) for r in found}

    def bootstrap(self, configured: str, name: str, period: str | None) -> bool:
        """A Base with no registry yet (a fresh install, or the first start after upgrading):
        the configured table is the first table. True if it is now registered that way (also
        when this runs again after a lost commit); False if the Base had tables already."""

        def register(conn: Connection) -> bool:
            known = conn.execute(select(bitable_tables.c.table_id).where(self._mine())).scalars()
            ids = set(known)
            if ids:
                return configured in ids and len(ids) == 1
            conn.execute(
                insert(bitable_tables).values(
                    app_token=self.app,
                    table_id=configured,
                    name=name,
                    period=period,
                    part=1,
                    origin=CONFIGURED,
                    status=OPEN,
                    registered_at=utcnow(),
                )
            )
            return True

        return self._write(register)

    def remember_legacy(self, configured: str) -> int:
        """Before the Base has a registry, every date of the local copy was synced into the
        configured table: give them that home. Called before a run fetches anything (its own
        rows must not count as synced before), and by ``verify``. Returns the dates homed."""
        now = utcnow()

        def remember(conn: Connection) -> int:
            started = (
                conn.execute(
                    select(func.count()).select_from(bitable_tables).where(self._mine())
                ).scalar()
                or conn.execute(
                    select(func.count())
                    .select_from(table_dates)
                    .where(table_dates.c.app_token == self.app)
                ).scalar()
            )
            if started:
                return 0
            held = select(report_rows.c.stat_date).distinct().subquery()
            stmt = self._insert(table_dates).from_select(
                ["app_token", "stat_date", "table_id", "updated_at"],
                select(
                    literal(self.app),
                    held.c.stat_date,
                    literal(configured),
                    literal(now, UTCDateTime()),
                )
                # SQLite parses "SELECT … ON CONFLICT" only with a WHERE (its upsert docs).
                .where(held.c.stat_date.is_not(None)),
            )
            return int(conn.execute(stmt.on_conflict_do_nothing()).rowcount or 0)

        return self._write(remember)


def _record(r: Any) -> TableRecord:
    return TableRecord(
        table_id=r.table_id,
        name=r.name,
        period=r.period,
        part=r.part,
        origin=r.origin,
        status=r.status,
        rows=r.rows,
        counted_at=r.counted_at,
        registered_at=r.registered_at,
        replaces=r.replaces,
        replaced_by=r.replaced_by,
        announced_at=r.announced_at,
        fill_warned_at=r.fill_warned_at,
    )


def follow(tables: Sequence[TableRecord], table_id: str | None) -> str | None:
    """A table id, or what replaced it (a deleted table adsync recreated under a new id)."""
    by_id = {t.table_id: t for t in tables}
    seen: set[str] = set()
    while table_id in by_id and by_id[table_id].replaced_by and table_id not in seen:
        seen.add(table_id)
        table_id = by_id[table_id].replaced_by
    return table_id


def current_table(tables: Sequence[TableRecord], roll: str, today: date) -> TableRecord | None:
    """The table new days go into: the open table of today's period (its latest part)."""
    period = period_of(today, roll)
    candidates = [t for t in tables if t.status == OPEN and t.period == period]
    if not candidates and roll == FULL:
        candidates = [t for t in tables if t.status == OPEN and t.period is None]
    return max(candidates, key=lambda t: (t.part, t.registered_at), default=None)


# -- when the current table fills ---------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """When the table new days go into is expected to fill, at the recent rate."""

    table_id: str
    name: str
    period: str
    rows: int
    max_rows: int
    per_day: float  # rows a synced day adds (mean of the last RATE_DAYS dates with rows)
    days_to_full: float
    full_on: date
    before_period_ends: bool  # period rolls: the table fills before its period is over

    @property
    def warn(self) -> bool:
        return self.before_period_ends and self.days_to_full <= WARN_DAYS


def forecast(store: Store, settings: Settings, today: date) -> Forecast | None:
    """The current table's fill forecast, from the registry's last count and the local
    copy's rows per day; None without a current table, a count or a rate."""
    if not settings.feishu_bitable_app_token:
        return None
    registry = Registry(store, settings.feishu_bitable_app_token)
    table = current_table(registry.tables(), settings.table_roll, today)
    if table is None or table.rows is None:
        return None
    query = (
        select(report_rows.c.stat_date, func.count())
        .where(report_rows.c.stat_date <= today)
        .group_by(report_rows.c.stat_date)
        .order_by(report_rows.c.stat_date.desc())
        .limit(RATE_DAYS)
    )
    per_date = store.read(lambda conn: conn.execute(query).all())
    if not per_date:
        return None
    per_day = sum(int(n) for _d, n in per_date) / len(per_date)
    room = max(0, settings.table_max_rows - table.rows)
    days = room / per_day if per_day else float("inf")
    if days == float("inf"):
        return None
    full_on = today + timedelta(days=int(days))
    end = period_end(table.period or FULL)
    return Forecast(
        table_id=table.table_id,
        name=table.name,
        period=table.period or FULL,
        rows=table.rows,
        max_rows=settings.table_max_rows,
        per_day=round(per_day, 1),
        days_to_full=round(days, 1),
        full_on=full_on,
        before_period_ends=end is None or full_on <= end,
    )


__all__ = [
    "CLOSED",
    "CONFIGURED",
    "CREATED",
    "DELETED",
    "FOUND",
    "FULL",
    "Forecast",
    "Home",
    "OPEN",
    "Registry",
    "TableEvent",
    "TableRecord",
    "current_table",
    "day_lease",
    "follow",
    "forecast",
    "period_end",
    "period_of",
    "table_link",
    "table_name",
    "write_lease",
]
