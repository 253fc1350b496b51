"""Writing across rolling tables: each date into its table; tables started, found, recreated.

``TableSet`` is the Base as one writer sees it (the tables the platform lists, the registry,
one ``BitableSink`` per table) and knows how to start a table: found by its name (used only if
its fields map) or created through lark-oapi's ``app_table.create`` with the same fields as the
table it follows. ``RoutedUpsert`` is a run's write: rows arrive per account (all dates of
one account at a time), and each date's rows go to the date's home.

Dates already synced stream into their home tables at once, as before. A new date (no home
yet) has no known size until every account is in, and a table's room is exact: so its rows
are held, and placed when either

* the run's projected rows (those so far x accounts in scope / accounts handed over, with a
  25 % margin) fit the period's open table comfortably — they stream from then on, the
  writes overlapping the fetch; or
* the fetch is over — then dates are packed in order: a date goes to the open table if the
  table's count after every planned write stays within ``ADSYNC_TABLE_MAX_ROWS``, else the
  table is closed and the next one started. ``full`` thus rolls exactly when the next write
  would overflow, and no date is split.

A date that grows past its table's room later (late promotions of a date in a table that was
closed exactly at its limit, or a projection that was wrong) is moved whole: its home is set
to the open table with ``moving_from`` the old one, its rows (this run's, the local copy's,
and the records the old table holds) are written there, then its records are deleted from the
old table and ``moving_from`` cleared. A crash in between leaves ``moving_from`` set, and the
next writer finishes the move.

A registered table the platform no longer lists was deleted by a person: it is recreated
under the same name and fields, its dates re-homed to it and rewritten from the local copy.

Every method that changes the registry or creates a table runs under the Base's writer lease
(``tables.write_lease``): one writer per Base, so eight processes starting the first sync of
a new period create one table, and the other seven find it in the registry.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from lark_oapi.api.bitable.v1 import (
    AppTableCreateHeader,
    AppTableFieldProperty,
    CreateAppTableRequest,
    CreateAppTableRequestBody,
    ListAppTableRequest,
    ReqTable,
)

from adsync.sync import localcopy
from adsync.sync.bitable import (
    TEXT_LIKE,
    BitableSink,
    CapacityError,
    Layout,
    LayoutColumn,
    StoredRecord,
    UpsertResult,
    UpsertStream,
)
from adsync.sync.columns import COLUMNS, DATE, NUMBER, TEXT
from adsync.sync.config import Settings
from adsync.sync.errors import AdsyncError, ConfigError, mask
from adsync.sync.feishu import FeishuCaller, FeishuError, make_client
from adsync.sync.reports import ReportRow
from adsync.sync.store import Store
from adsync.sync.tables import (
    CLOSED,
    CONFIGURED,
    CREATED,
    DELETED,
    FOUND,
    FULL,
    OPEN,
    Registry,
    TableEvent,
    TableRecord,
    follow,
    period_of,
    table_link,
    table_name,
)

log = logging.getLogger("adsync.routing")

TABLE_PAGE = 100  # list tables: page_size at most 100 (app-table list)
TABLE_NAME_DUPLICATED = 1254013
EARLY_MARGIN = 1.25  # projected rows x this must fit before held dates stream early
SELECT_TYPES = frozenset({3, 4})


class TableProblem(AdsyncError):
    """A table cannot be used as it is (its fields do not map, a date is larger than a
    table); what to do is in the hint."""

    exit_code = 1


# -- the Base's tables --------------------------------------------------------------------------


class TableSet:
    """The tables of the Base: listed once per session, one sink per table, and (for a
    holder of the writer lease) starting, adopting and recreating tables."""

    def __init__(
        self, settings: Settings, store: Store, caller: FeishuCaller | None = None
    ) -> None:
        settings.require("FEISHU_BITABLE_APP_TOKEN")
        if settings.table_roll == FULL and not settings.feishu_bitable_table_id:
            raise ConfigError(
                "FEISHU_BITABLE_TABLE_ID is not set",
                hint="set it to the first table (tbl… from the table's address), or set "
                "ADSYNC_TABLE_ROLL=month (quarter, year) to have adsync find or create each "
                "period's table by name",
            )
        self.settings, self.store = settings, store
        self.app = str(settings.feishu_bitable_app_token)
        self.mode = settings.table_roll
        self.max_rows = settings.table_max_rows
        self.caller = caller or FeishuCaller(
            make_client(settings), base_delay=settings.retry_base_delay
        )
        self.registry = Registry(store, self.app)
        self.events: list[TableEvent] = []
        self.fresh: set[str] = set()  # created in this session: empty, nobody else writes
        self._live: dict[str, str] | None = None
        self._sinks: dict[str, BitableSink] = {}
        self._api = self.caller.client.bitable.v1
        self.where = f"base {mask(self.app)}"

    # ---- reading -------------------------------------------------------------------------------

    def live(self, refresh: bool = False) -> dict[str, str]:
        """table_id -> name of every table the platform lists in the Base."""
        if self._live is not None and not refresh:
            return self._live
        tables: dict[str, str] = {}
        page_token = ""
        while True:
            builder = ListAppTableRequest.builder().app_token(self.app).page_size(TABLE_PAGE)
            if page_token:
                builder = builder.page_token(page_token)
            data = self.caller.call(
                f"Bitable list tables of {self.where}", self._api.app_table.list, builder.build()
            ).data
            for item in data.items or []:
                tables[str(item.table_id)] = str(item.name or "")
            if not data.has_more or not data.page_token:
                break
            page_token = data.page_token
        self._live = tables
        return tables

    def sink(self, table_id: str) -> BitableSink:
        found = self._sinks.get(table_id)
        if found is None:
            found = BitableSink(
                self.settings, self.caller, table_id=table_id, capacity_warnings=False
            )
            self._sinks[table_id] = found
        return found

    def link(self, table_id: str) -> str:
        return table_link(self.settings, table_id)

    def configured(self) -> str | None:
        """FEISHU_BITABLE_TABLE_ID, or the table that replaced it after a deletion."""
        return follow(self.registry.tables(), self.settings.feishu_bitable_table_id)

    def where_dates(self, dates: Sequence[date]) -> dict[date, str | None]:
        """The table each date is in (its home), or would go to now (None: a table that does
        not exist yet). Read-only: before the first sync since upgrading, the configured table
        holds every date."""
        tables = self.registry.tables()
        homes = self.registry.homes(dates)
        out: dict[date, str | None] = {}
        for day in dates:
            if day in homes:
                out[day] = homes[day].table_id
                continue
            if not tables:
                out[day] = self.settings.feishu_bitable_table_id
                continue
            period = period_of(day, self.mode)
            open_ = [t for t in tables if t.status == OPEN and t.period == period]
            if open_:
                out[day] = max(open_, key=lambda t: t.part).table_id
            else:
                name = table_name(self.settings.table_name, period, 1)
                named = [tid for tid, n in self.live().items() if n == name]
                out[day] = named[0] if named else None
        return out

    # ---- a writer's session (the writer lease is held) ---------------------------------------

    def prepare(self) -> dict[str, list[date]]:
        """Register the configured table (the first start after upgrading: every date of the
        local copy is in it), take a newly configured one, and recreate tables a person
        deleted. Returns {recreated table: its dates, to be rewritten from the local copy}."""
        live = self.live()
        configured = self.settings.feishu_bitable_table_id
        tables = self.registry.tables()
        if configured and configured not in {t.table_id for t in tables}:
            if configured not in live:
                raise ConfigError(
                    f"FEISHU_BITABLE_TABLE_ID {configured} is not a table of {self.where}",
                    hint="the Base has "
                    + (", ".join(f"{n} ({t})" for t, n in live.items()) or "no tables")
                    + "; use one of them (tbl… from the table's address)",
                )
            period = FULL if self.mode == FULL else None
            if not self.registry.bootstrap(configured, live[configured], period):
                self._take_configured(configured, live[configured])
        rewrites: dict[str, list[date]] = {}
        for table in self.registry.tables():
            if table.status != DELETED and table.table_id not in live:
                new = self._recreate(table)
                rewrites[new.table_id] = self.registry.move_homes(table.table_id, new.table_id)
        return rewrites

    def _take_configured(self, table_id: str, name: str) -> None:
        """FEISHU_BITABLE_TABLE_ID now names a table adsync has not used: new dates go there
        (dates already synced stay where they are)."""
        tables = self.registry.tables()
        if self.mode == FULL:
            parts = [t.part for t in tables if t.period == FULL]
            for t in tables:
                if t.period == FULL and t.status == OPEN:
                    self.registry.update(t.table_id, status=CLOSED)
            self.registry.add(
                table_id, name, period=FULL, part=max(parts, default=0) + 1, origin=CONFIGURED
            )
        else:
            self.registry.add(table_id, name, period=None, part=1, origin=CONFIGURED)
        log.info("%s: FEISHU_BITABLE_TABLE_ID names %s: new dates go there", self.where, name)

    def open_table(self, period: str) -> TableRecord | None:
        """The table new dates of ``period`` go to; None when one must be started."""
        tables = self.registry.tables()
        candidates = [t for t in tables if t.status == OPEN and t.period == period]
        if candidates:
            return max(candidates, key=lambda t: t.part)
        if period == FULL:
            return None
        unassigned = [t for t in tables if t.status == OPEN and t.period is None]
        if unassigned:  # the configured table serves the first period that needs a table
            table = unassigned[0]
            self.registry.update(table.table_id, period=period)
            return self.registry.get(table.table_id)
        name = table_name(self.settings.table_name, period, 1)
        known = {t.table_id for t in tables}
        for table_id, listed in self.live().items():
            if listed == name and table_id not in known:
                return self._adopt(table_id, name, period, 1, f"found by its name for {period}")
        return None

    def start(self, period: str, reason: str) -> TableRecord:
        """The next table of ``period``: found by name (a person made it) or created."""
        tables = self.registry.tables()
        part = max((t.part for t in tables if t.period == period), default=0) + 1
        name = table_name(self.settings.table_name, period, part)
        known = {t.table_id for t in tables}
        for table_id, listed in self.live().items():
            if listed == name and table_id not in known:
                return self._adopt(table_id, name, period, part, reason)
        try:
            table_id = self._create(name)
        except FeishuError as exc:
            if exc.code != TABLE_NAME_DUPLICATED:
                raise
            # Our own earlier attempt whose answer was lost, or a person a moment ago.
            found = [t for t, n in self.live(refresh=True).items() if n == name]
            if not found:
                raise
            return self._adopt(found[0], name, period, part, reason, origin=CREATED)
        record = self.registry.add(table_id, name, period=period, part=part, origin=CREATED, rows=0)
        self._event("started", record, reason)
        return record

    def roll(self, table: TableRecord) -> TableRecord:
        """``table`` is full: close it and start the next part of its period."""
        self.registry.update(table.table_id, status=CLOSED)
        reason = f"{table.name} is full ({self.max_rows:,} rows a table)"
        log.info("%s: %s; starting the next table", self.where, reason)
        return self.start(table.period or FULL, reason)

    def _adopt(
        self,
        table_id: str,
        name: str,
        period: str,
        part: int,
        reason: str,
        origin: str = FOUND,
    ) -> TableRecord:
        """Use a table of the right name that adsync did not register: only if its fields
        map (missing ones are created, as for the configured table)."""
        try:
            self.sink(table_id).prepare()
        except ConfigError as exc:
            raise TableProblem(
                f"table {name!r} ({table_id}) in {self.where} has the name adsync uses for "
                f"{period}, but its fields do not fit: {exc.message}",
                hint=exc.hint + "; or rename that table so adsync creates its own",
            ) from None
        record = self.registry.add(table_id, name, period=period, part=part, origin=origin)
        self._event("found" if origin == FOUND else "started", record, reason)
        return record

    def _recreate(self, old: TableRecord) -> TableRecord:
        """A registered table the Base no longer has: a person deleted it."""
        name = old.name or table_name(self.settings.table_name, old.period or FULL, old.part)
        reason = f"{old.label} was deleted in the Base"
        known = {t.table_id for t in self.registry.tables()}
        named = [t for t, n in self.live().items() if n == name and t not in known]
        if named:  # a person made a new one under the old name: use it if its fields map
            table_id = named[0]
            self._adopt_check(table_id, name)
            origin = FOUND
        else:
            table_id = self._create(name)
            origin = CREATED
        status = OPEN if old.status == OPEN else CLOSED
        record = self.registry.add(
            table_id,
            name,
            period=old.period,
            part=old.part,
            origin=origin,
            status=status,
            replaces=old.table_id,
            rows=None,  # counted once its dates are rewritten (the group is told then)
        )
        self.registry.update(old.table_id, status=DELETED, replaced_by=table_id)
        log.warning("%s: %s; recreated as %s", self.where, reason, table_id)
        self._event("recreated", record, reason, replaces=old.table_id)
        return record

    def _adopt_check(self, table_id: str, name: str) -> None:
        try:
            self.sink(table_id).prepare()
        except ConfigError as exc:
            raise TableProblem(
                f"table {name!r} ({table_id}) replaces a deleted table, but its fields do not "
                f"fit: {exc.message}",
                hint=exc.hint,
            ) from None

    def _event(self, kind: str, table: TableRecord, reason: str, replaces: str = "") -> None:
        self.events.append(
            TableEvent(
                kind=kind,
                table_id=table.table_id,
                name=table.name,
                period=table.period or FULL,
                reason=reason,
                link=self.link(table.table_id),
                replaces=replaces,
            )
        )

    # ---- creating a table ----------------------------------------------------------------------

    def _create(self, name: str) -> str:
        """Create ``name`` with the fields of the table it follows; its layout is known from
        the answer (no listing needed), then ``after_create`` gives it what else it needs."""
        source, specs = self._reference_fields()
        headers = []
        for spec in specs:
            header = (
                AppTableCreateHeader.builder().field_name(spec["field_name"]).type(spec["type"])
            )
            if spec.get("property"):
                header = header.property(AppTableFieldProperty(spec["property"]))
            headers.append(header.build())
        body = CreateAppTableRequestBody.builder().table(
            ReqTable.builder().name(name).fields(headers).build()
        )
        request = CreateAppTableRequest.builder().app_token(self.app).request_body(body.build())
        # No client_token on this API: a retry after a lost answer meets 1254013, which
        # ``start`` answers by adopting the table of that name.
        data = self.caller.call(
            f"Bitable create table {name!r} in {self.where}",
            self._api.app_table.create,
            request.build(),
        ).data
        table_id = str(data.table_id)
        ids = list(data.field_id_list or [])
        columns = []
        for spec, field_id in zip(specs, ids, strict=False):
            key = spec.get("key")
            if key is None:
                continue
            contract = next(c for c in COLUMNS if c.key == key)
            text_typed = contract.type != TEXT and spec["type"] in TEXT_LIKE
            columns.append(
                LayoutColumn(key, spec["field_name"], spec["type"], field_id, False, text_typed)
            )
        sink = self.sink(table_id)
        if len(columns) == len(COLUMNS):
            order = {c.key: i for i, c in enumerate(COLUMNS)}
            sink.layout = Layout(tuple(sorted(columns, key=lambda c: order[c.key])))
        if self._live is not None:
            self._live[table_id] = name
        self.fresh.add(table_id)
        log.info("%s: created table %s (%s)", self.where, name, table_id)
        self.after_create(table_id, source)
        return table_id

    def after_create(self, table_id: str, source: str | None) -> None:
        """Per-account views: a table adsync starts gets the views of ``source``, the table it
        follows (None: the first table of a Base), so people find "their" account in the new
        table as in the old. Runs under the writer lease, once per table created (started, or
        recreated after a deletion): the views are recorded as wanted here and made when the
        run's writes are done (``adsync.sync.views``), so the rows are not kept waiting."""
        from adsync.sync.viewplan import Ledger

        try:
            Ledger(self.store, self.app).follow(table_id, source)
        except Exception:  # noqa: BLE001 - views never fail a sync; the next sync or `adsync views` makes them
            log.warning(
                "%s: could not note the views %s is to get", self.where, table_id, exc_info=True
            )

    def _reference_fields(self) -> tuple[str | None, list[dict[str, Any]]]:
        """The fields a new table is created with: those of the latest live table adsync
        writes (names and types as there, so a mapped legacy layout continues as it is), its
        primary field first; the contract's defaults when there is none."""
        wanted = {c.key: dict(self.settings.bitable_fields).get(c.name, c.name) for c in COLUMNS}
        live = self.live()
        source = next(
            (
                t
                for t in reversed(self.registry.tables())
                if t.status != DELETED and t.table_id in live and t.table_id not in self.fresh
            ),
            None,
        )
        if source is None:
            return None, [
                {"field_name": wanted[c.key], "type": c.type, "property": c.property, "key": c.key}
                for c in COLUMNS
            ]
        sink = self.sink(source.table_id)
        if sink.layout is None:
            sink.prepare()
        serves = {name: key for key, name in wanted.items()}
        specs: list[dict[str, Any]] = []
        for listed in sink.field_specs():
            name = str(listed.field_name)
            key = serves.get(name)
            if key is None and not listed.is_primary:
                continue  # people's own columns stay theirs
            ftype = int(listed.type or TEXT) if key else TEXT
            spec = {
                "field_name": name,
                "type": ftype,
                "property": _property(ftype, listed.property) if key else None,
                "key": key,
            }
            # The first field of a new table is its primary (index) column: the same as here.
            if listed.is_primary:
                specs.insert(0, spec)
            else:
                specs.append(spec)
        have = {s["key"] for s in specs}
        for col in COLUMNS:  # fields the source lacks (not created there yet): the contract's
            if col.key not in have:
                specs.append(
                    {
                        "field_name": wanted[col.key],
                        "type": col.type,
                        "property": col.property,
                        "key": col.key,
                    }
                )
        return source.table_id, specs


def _property(ftype: int, prop: Any) -> dict[str, Any] | None:
    """A listed field's display property, as the create body takes it (no option ids)."""
    if prop is None:
        return None
    if ftype == NUMBER and getattr(prop, "formatter", None):
        return {"formatter": prop.formatter}
    if ftype == DATE and getattr(prop, "date_formatter", None):
        return {"date_formatter": prop.date_formatter}
    if ftype in SELECT_TYPES and getattr(prop, "options", None):
        return {"options": [{"name": o.name} for o in prop.options if getattr(o, "name", None)]}
    return None


# -- a run's write across tables ----------------------------------------------------------------


@dataclass
class RoutedResult:
    upsert: UpsertResult
    events: list[TableEvent] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # the tables written


class RoutedUpsert:
    """One run's rows into the Base: each date to its home (see the module docstring)."""

    def __init__(
        self,
        tables: TableSet,
        dates: Sequence[date],
        run_tag: str,
        synced_at: datetime,
        account_names: Mapping[str, str] | None = None,
        accounts_total: int = 0,
    ) -> None:
        self.ts = tables
        self.dates = sorted(set(dates))
        self.run_tag, self.synced_at = run_tag, synced_at
        self.names = dict(account_names or {})
        self.accounts_total = accounts_total
        self.parts = 0
        self.home: dict[date, str] = {}  # decided dates -> table
        self.held: dict[date, dict[str, ReportRow]] = {}
        self.run_rows: dict[date, dict[str, ReportRow]] = defaultdict(dict)
        self.moving: dict[date, str] = {}  # date -> the table it leaves (written at finish)
        self.rewrites: dict[str, list[date]] = {}
        self._streams: dict[str, UpsertStream] = {}
        self._results: dict[str, UpsertResult] = {}
        self._problems: list[AdsyncError] = []
        self._cleared: dict[str, int] = {}  # records deleted from tables dates moved out of
        self._started = time.monotonic()
        self._calls = tables.caller.calls

    # ---- start ---------------------------------------------------------------------------------

    def open(self) -> None:
        """Registry, deleted tables, and a stream (one count, one read) for every table the
        run's dates are in or will most likely go to."""
        ts = self.ts
        self.rewrites = ts.prepare()
        homes = ts.registry.homes(self.dates)
        for day, home in ts.registry.pending_moves().items():
            if day not in set(self.dates):  # an unfinished move of another date: finish it
                self.home[day] = home.table_id
                self.moving[day] = str(home.moving_from)
        reads: dict[str, set[date]] = defaultdict(set)
        for day in self.dates:
            if day in homes:
                self.home[day] = homes[day].table_id
                reads[homes[day].table_id].add(day)
                if homes[day].moving_from:
                    self.moving[day] = homes[day].moving_from
            else:
                self.held[day] = {}
        for period in sorted({period_of(d, ts.mode) for d in self.held}):
            table = ts.open_table(period)
            if table is not None:
                reads[table.table_id].update(
                    d for d in self.held if period_of(d, ts.mode) == period
                )
        for table_id in sorted(reads):
            self._stream(table_id, sorted(reads[table_id]))
        for table_id, days in self.rewrites.items():
            outside = [d for d in days if d not in set(self.dates)]
            rows = _load(ts.store, outside)
            if rows:
                self._stream(table_id, outside).add(rows)

    # ---- rows ----------------------------------------------------------------------------------

    def add(self, rows: Sequence[ReportRow]) -> None:
        """One account's rows (any of the run's dates)."""
        self.parts += 1
        by_date: dict[date, list[ReportRow]] = defaultdict(list)
        for row in rows:
            if row.stat_date not in self.home and row.stat_date not in self.held:
                raise ValueError(f"rows dated {row.stat_date} are outside this run's dates")
            if self.run_rows[row.stat_date].setdefault(row.sync_key, row) is row:
                by_date[row.stat_date].append(row)
        for day in sorted(by_date):
            if day in self.moving:
                continue  # written whole when the move is done
            if day in self.held:
                for row in by_date[day]:
                    self.held[day].setdefault(row.sync_key, row)
            else:
                self._send(day, self.home[day], by_date[day])
        self._place_early()

    def _send(self, day: date, table_id: str, rows: list[ReportRow]) -> None:
        try:
            self._stream(table_id, [day]).add(rows)
        except CapacityError:
            # The date no longer fits where it lives: it moves whole (at finish).
            log.info("%s: %s no longer fits %s: it moves", self.ts.where, day, table_id)
            self.moving[day] = table_id

    def _place_early(self) -> None:
        """Place held dates now when the run's projected rows fit their open table with a
        margin: their writes then overlap the fetch."""
        if not self.held or not self.accounts_total or self.parts < min(3, self.accounts_total):
            return
        scale = self.accounts_total / self.parts * EARLY_MARGIN
        by_period: dict[str, list[date]] = defaultdict(list)
        for day in self.held:
            by_period[period_of(day, self.ts.mode)].append(day)
        for period, days in sorted(by_period.items()):
            projected = scale * sum(len(self.held[d]) for d in days)
            table = self.ts.open_table(period)
            if table is None:
                if projected > self.ts.max_rows:
                    continue
                table = self.ts.start(period, f"the first of {period}")
            stream = self._stream(table.table_id, days)
            if stream.planned_rows + projected > self.ts.max_rows:
                continue
            self.ts.registry.set_homes(days, table.table_id)
            for day in sorted(days):
                rows = list(self.held.pop(day).values())
                self.home[day] = table.table_id
                self._send(day, table.table_id, rows)

    # ---- finish --------------------------------------------------------------------------------

    def finish(self) -> RoutedResult:
        """Place what is held (exactly, in date order), move what outgrew its table, write
        everything, then clear the moved dates from the tables they left."""
        self._pack()
        for table_id, days in self.rewrites.items():  # recreated: the run's dates, the rest
            inside = [d for d in days if d in set(self.dates)]
            rows = _load(self.ts.store, inside)
            if rows:
                self._stream(table_id, inside).add(rows)
        moved = self._move()
        for table_id, stream in self._streams.items():
            self._results[table_id] = stream.finish()
        for day, source in moved:
            self._clear(day, source)
        total = self.written()
        for table_id, result in self._results.items():
            total.warnings += result.warnings
            stream = self._streams[table_id]
            self.ts.registry.counted(
                table_id, stream.total_before - result.deleted + result.created
            )
        for table_id, deleted in self._cleared.items():
            record = self.ts.registry.get(table_id)
            if record is not None and record.rows is not None:
                self.ts.registry.counted(table_id, max(0, record.rows - deleted))
        total.api_calls = self.ts.caller.calls - self._calls
        total.seconds = round(time.monotonic() - self._started, 3)
        events = [
            replace(
                e,
                dates=len(self.rewrites.get(e.table_id, [])),
                rows=self._results[e.table_id].created if e.table_id in self._results else 0,
            )
            if e.kind == "recreated"
            else e
            for e in self.ts.events
        ]
        if self._problems:
            raise self._problems[0]
        return RoutedResult(total, events, sorted(self._streams))

    def written(self) -> UpsertResult:
        """What every table's upsert has written so far (all of it after ``finish``; after a
        failure, what went out before it: a run never reports "0 created" for rows written)."""
        total = UpsertResult()
        for table_id, stream in self._streams.items():
            result = self._results.get(table_id, stream.result)
            total.created += result.created
            total.updated += result.updated
            total.unchanged += result.unchanged
            total.deleted += result.deleted
            total.confirmed_after_timeout += result.confirmed_after_timeout
        return total

    def _pack(self) -> None:
        ts = self.ts
        by_period: dict[str, list[date]] = defaultdict(list)
        for day in self.held:
            by_period[period_of(day, ts.mode)].append(day)
        for period, days in sorted(by_period.items()):
            table = ts.open_table(period)
            if table is not None:
                self._stream(table.table_id, days)  # one read for all of them
            for day in sorted(days):
                rows = list(self.held.pop(day).values())
                if not rows:
                    continue  # no account had rows that day: nothing to place
                if table is None:
                    table = ts.start(period, f"the first of {period}")
                table = self._place(day, rows, table)

    def _place(self, day: date, rows: list[ReportRow], table: TableRecord) -> TableRecord:
        """``day`` into ``table`` if it fits, else into the next table; returns the table
        the next date goes to."""
        ts = self.ts
        stream = self._stream(table.table_id, [day])
        ts.registry.set_homes([day], table.table_id)
        try:
            stream.add(rows)
            self.home[day] = table.table_id
            return table
        except CapacityError:
            pass
        if day in stream.stored_dates():
            # Records of this day are already there (kept by hand before adsync knew it):
            # the day lives there and moves whole.
            self.home[day] = table.table_id
            self.moving[day] = table.table_id
            return table
        if stream.planned_rows == 0:  # not even an empty table holds it
            ts.registry.drop_homes([day])
            self._too_big(day, len(rows))
            return table
        following = ts.roll(table)
        ts.registry.set_homes([day], following.table_id)
        try:
            self._stream(following.table_id, [day]).add(rows)
            self.home[day] = following.table_id
        except CapacityError:
            ts.registry.drop_homes([day])
            self._too_big(day, len(rows))
        return following

    def _too_big(self, day: date, rows: int) -> None:
        self._problems.append(
            TableProblem(
                f"{day} has {rows:,} rows, more than one table holds "
                f"(ADSYNC_TABLE_MAX_ROWS {self.ts.max_rows:,}); its rows were not written to "
                "the Bitable (the local copy has them)",
                hint="raise ADSYNC_TABLE_MAX_ROWS if your plan allows more rows per table, "
                "then sync that date again",
            )
        )

    def _move(self) -> list[tuple[date, str]]:
        """Write each moving date whole into the open table of its period (or the table a
        move begun before chose); returns (date, table it leaves)."""
        ts, moved = self.ts, []
        for day in sorted(self.moving):
            source = self.moving[day]
            rows = dict(self.run_rows.get(day, {}))  # this run's values win
            for row in _load(ts.store, [day]):
                rows.setdefault(row.sync_key, row)
            if source in ts.live():
                for record in ts.sink(source).read([day], self.names):
                    row = _from_stored(record)
                    if row is not None:
                        rows.setdefault(row.sync_key, row)
            target = self._move_target(day, source)
            for attempt in (1, 2):
                ts.registry.set_homes([day], target.table_id, moving_from=source)
                try:
                    self._stream(target.table_id, [day]).add(list(rows.values()))
                    break
                except CapacityError:
                    if attempt == 2:  # not even an empty table holds it
                        ts.registry.set_homes([day], source)
                        self._too_big(day, len(rows))
                        target = None
                        break
                    target = ts.roll(target)
            if target is None:
                continue
            self.home[day] = target.table_id
            moved.append((day, source))
        return moved

    def _move_target(self, day: date, source: str) -> TableRecord:
        ts = self.ts
        home = ts.registry.homes([day]).get(day)
        if home is not None and home.moving_from == source and home.table_id != source:
            begun = ts.registry.get(home.table_id)  # a move begun before: same target
            if begun is not None and begun.status != DELETED:
                return begun
        period = period_of(day, ts.mode)
        target = ts.open_table(period)
        if target is None:
            return ts.start(period, f"the first of {period}")
        if target.table_id == source:
            return ts.roll(target)
        return target

    def _clear(self, day: date, source: str) -> None:
        """The moved date's records leave the table it was in; the move is done."""
        ts = self.ts
        if source in ts.live():
            sink = ts.sink(source)
            gone = [r.record_id for r in sink.read([day], self.names) if r.key]
            if gone:
                deleted = sink.delete_records(gone, [day])
                self._cleared[source] = self._cleared.get(source, 0) + deleted
        ts.registry.set_homes([day], self.home[day])

    # ---- helpers -------------------------------------------------------------------------------

    def _stream(self, table_id: str, dates: Sequence[date]) -> UpsertStream:
        stream = self._streams.get(table_id)
        if stream is not None:
            stream.read_more(dates)
            return stream
        sink = self.ts.sink(table_id)
        if sink.layout is None:
            sink.prepare()
        stream = sink.stream(
            dates, self.run_tag, self.synced_at, self.names, fresh=table_id in self.ts.fresh
        )
        self._streams[table_id] = stream
        return stream


def _load(store: Store, days: Sequence[date]) -> list[ReportRow]:
    """The local copy's rows of ``days``."""
    if not days:
        return []
    wanted = set(days)
    return [r for r in localcopy.load(store, min(wanted), max(wanted)) if r.stat_date in wanted]


def _from_stored(record: StoredRecord) -> ReportRow | None:
    """A record read from a table, as a row to write elsewhere (a date that moves)."""
    if not record.key:
        return None
    day_text, account_id, promotion_id = record.key.split("|", 2)
    v = record.values
    return ReportRow(
        stat_date=date.fromisoformat(day_text),
        account_id=account_id,
        account_name=str(v.get("account_name") or ""),
        project_id=str(v.get("project_id") or ""),
        project_name=str(v.get("project_name") or ""),
        promotion_id=promotion_id,
        promotion_name=str(v.get("promotion_name") or ""),
        cost=v.get("cost") or Decimal("0.00"),
        show_cnt=int(v.get("show_cnt") or 0),
        click_cnt=int(v.get("click_cnt") or 0),
        convert_cnt=int(v.get("convert_cnt") or 0),
        clue_cnt=int(v.get("clue_cnt") or 0),
    )


__all__ = ["RoutedResult", "RoutedUpsert", "TableProblem", "TableSet"]
