"""The Bitable sink: the table's layout, reads by date, and upserts by 同步键 through lark-oapi.

One row per (date, local account, promotion) and exactly one (DESIGN.md). ``upsert`` reads the
rows stored for the dates in question, diffs them against the source (``plan``: create, update,
delete pre-existing duplicates, leave everything else alone) and writes the difference in
chunks, serially, with a pause between writes. ``stream`` does the same with rows that arrive
in parts (a run feeds each account as it is fetched), so the writes overlap the fetch. Every
call goes through ``FeishuCaller`` (token refusal, backoff on transient codes); creates and
updates carry a deterministic ``client_token`` so a chunk the caller retries after a lost
answer is applied once.

Existing tables with another layout are mapped by ``ADSYNC_BITABLE_FIELDS``; a column that is
text in the table while the contract says number or date (the legacy layout) is written and
read as text from then on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from lark_oapi.api.bitable.v1 import (
    AppTableField,
    AppTableFieldProperty,
    AppTableRecord,
    BatchCreateAppTableRecordRequest,
    BatchCreateAppTableRecordRequestBody,
    BatchDeleteAppTableRecordRequest,
    BatchDeleteAppTableRecordRequestBody,
    BatchUpdateAppTableRecordRequest,
    Condition,
    CreateAppTableFieldRequest,
    FilterInfo,
    ListAppTableFieldRequest,
    SearchAppTableRecordRequest,
    SearchAppTableRecordRequestBody,
)

from adsync.sync.columns import COLUMNS, DATE, NUMBER, TEXT, Column
from adsync.sync.config import Settings
from adsync.sync.errors import AdsyncError, ConfigError, mask
from adsync.sync.feishu import FeishuCaller, FeishuError, make_client, require_bitable
from adsync.sync.reports import CENT, ReportRow, row_values, sync_key

log = logging.getLogger("adsync.bitable")

SINGLE_SELECT = 3
TEXT_LIKE = frozenset({TEXT, SINGLE_SELECT})  # written and read as plain strings
TYPE_LABELS = {TEXT: "text", NUMBER: "number", SINGLE_SELECT: "single select", DATE: "date"}

MAX_ROWS = 20_000  # records per table (error 1254103)
WARN_AT = 0.9
# Records per call, the platform's own limits (reference §4.2: batch_create and batch_update
# take 1,000, batch_delete 500; 1254104 above them). Fewer, larger writes also mean fewer
# chances of a 1254291 write conflict on the table.
WRITE_CHUNK = 1000  # batch_create / batch_update
DELETE_CHUNK = 500  # batch_delete
SEARCH_PAGE = 500
FIELD_PAGE = 100
MAX_CONDITIONS = 50
MAX_FILTER_CHARS = 1800  # the platform refuses filters over 2,000 characters (1254107)
RECORD_NOT_FOUND = 1254043
FIELD_NAME_DUPLICATED = 1254014

MONEY = frozenset({"cost", "conversion_cost"})
COUNTS = frozenset({"show_cnt", "click_cnt", "convert_cnt", "clue_cnt"})
COMPARED = tuple(c.key for c in COLUMNS if c.key != "synced_at")  # the sync time always moves

TOKEN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/adsync/bitable/client_token")
DATE_RE = re.compile(r"^\s*(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})")

T = TypeVar("T")


class CapacityError(AdsyncError):
    """The table would exceed its row limit; nothing was written."""

    exit_code = 1


class WriteUnconfirmed(AdsyncError):
    """A write got no answer, and reading the table back did not find all of it."""

    exit_code = 1


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutColumn:
    key: str  # the contract column (columns.COLUMNS key)
    field_name: str  # the field that holds it in this table
    type: int  # the field's actual Feishu type
    field_id: str
    created: bool  # created by this prepare()
    text_typed: bool  # the contract says number/date, the table has text: write/read text


@dataclass(frozen=True)
class Layout:
    columns: tuple[LayoutColumn, ...]
    missing: tuple[str, ...] = ()  # contract keys with no field (prepare(create_missing=False))
    _by_key: dict[str, LayoutColumn] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {c.key: c for c in self.columns})

    def get(self, key: str) -> LayoutColumn | None:
        return self._by_key.get(key)

    def __getitem__(self, key: str) -> LayoutColumn:
        return self._by_key[key]

    @property
    def field_names(self) -> list[str]:
        return [c.field_name for c in self.columns]

    @property
    def created(self) -> tuple[str, ...]:
        return tuple(c.field_name for c in self.columns if c.created)


@dataclass(frozen=True)
class FieldInfo:
    name: str
    type: int
    field_id: str
    column: str | None  # the contract column it serves, if any


@dataclass(frozen=True)
class StoredRecord:
    record_id: str
    key: str  # 同步键, or derived for legacy rows; "" when it cannot be told (left alone)
    values: dict[str, Any]  # normalised, by column key


@dataclass(frozen=True)
class Update:
    record_id: str
    row: ReportRow


@dataclass
class Plan:
    creates: list[ReportRow] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    unchanged: int = 0
    # Dates of the stored records this plan touches: where to look again if one vanishes.
    scope: tuple[date, ...] = ()

    @property
    def writes(self) -> int:
        return len(self.creates) + len(self.updates) + len(self.deletes)


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    # Of those, rows whose write got no answer in time but were found written when read back.
    confirmed_after_timeout: int = 0
    api_calls: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


# -- the sink -----------------------------------------------------------------------------------


class BitableSink:
    """One Bitable table. Not locked: callers serialise writers (the runner holds a lease)."""

    def __init__(
        self,
        settings: Settings,
        caller: FeishuCaller | None = None,
        *,
        write_gap: float | None = None,
        max_rows: int | None = None,
        table_id: str | None = None,
        capacity_warnings: bool = True,
    ) -> None:
        """``table_id``: any table of the Base (rolling tables); default the configured one.
        ``capacity_warnings``: off where a full table rolls over by itself (adsync.sync.tables
        forecasts the fill instead)."""
        self.settings = settings
        if table_id is None:
            self.app_token, self.table_id = require_bitable(settings)
        else:
            settings.require("FEISHU_BITABLE_APP_TOKEN")
            self.app_token, self.table_id = str(settings.feishu_bitable_app_token), table_id
        self.caller = caller or FeishuCaller(
            make_client(settings), base_delay=settings.retry_base_delay
        )
        self.write_gap = settings.bitable_write_gap if write_gap is None else write_gap
        self.max_rows = settings.table_max_rows if max_rows is None else max_rows
        self.capacity_warnings = capacity_warnings
        self.tz: ZoneInfo = settings.tz
        self.layout: Layout | None = None
        self._listed: list[Any] | None = None
        self._api = self.caller.client.bitable.v1
        self._last_write: float | None = None
        # Rows whose write timed out (or got a gateway error) but were there when read back.
        self.confirmed_after_timeout = 0
        # Names the table without its app_token (an access path to the Base: shown masked).
        self.where = f"table {self.table_id} (base {mask(self.app_token)})"

    # ---- layout ----------------------------------------------------------------------------

    def prepare(self, create_missing: bool = True) -> Layout:
        """Resolve every contract column to a field, creating missing ones; cache the layout."""
        self._listed = self._list_fields()
        existing = {f.field_name: f for f in self._listed}
        wanted = self._wanted_names()
        self._check_mapping(existing)
        columns: list[LayoutColumn] = []
        missing: list[str] = []
        for col in COLUMNS:
            name = wanted[col.key]
            found, created = existing.get(name), False
            if found is None:
                if not create_missing:
                    missing.append(col.key)
                    continue
                found, created = self._create_field(col, name), True
                self._listed.append(found)
            actual = int(found.type or 0)
            self._check_type(col, name, actual)
            text_typed = col.type != TEXT and actual in TEXT_LIKE
            columns.append(
                LayoutColumn(col.key, name, actual, found.field_id or "", created, text_typed)
            )
        self.layout = Layout(tuple(columns), tuple(missing))
        if self.layout.created:
            log.info("%s: created fields %s", self.where, "、".join(self.layout.created))
        return self.layout

    def fields(self) -> list[FieldInfo]:
        """Every field of the table, with the contract column each serves (``adsync fields``)."""
        serves = {name: key for key, name in self._wanted_names().items()}
        return [
            FieldInfo(f.field_name, int(f.type or 0), f.field_id or "", serves.get(f.field_name))
            for f in self._list_fields()
        ]

    def field_specs(self) -> list[Any]:
        """The table's fields as the platform lists them (name, type, property, primary): what
        a table started after this one is created with (as ``prepare`` last listed them)."""
        if self._listed is None:
            self._listed = self._list_fields()
        return self._listed

    def _wanted_names(self) -> dict[str, str]:
        mapped = dict(self.settings.bitable_fields)
        return {c.key: mapped.get(c.name, c.name) for c in COLUMNS}

    def _check_mapping(self, existing: Mapping[str, Any]) -> None:
        absent = [(d, a) for d, a in self.settings.bitable_fields if a not in existing]
        if absent:
            pairs = "; ".join(f"{d} → {a!r}" for d, a in absent)
            raise ConfigError(
                f"ADSYNC_BITABLE_FIELDS names fields that {self.where} does not have: {pairs}",
                hint="use exact field names (spaces count): the table has "
                + "、".join(existing)
                + "; or drop the pair to have the default field created",
            )
        names = list(self._wanted_names().values())
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(
                f"ADSYNC_BITABLE_FIELDS maps several columns onto {'、'.join(twice)}",
                hint="map each default field to a different existing field",
            )

    def _check_type(self, col: Column, name: str, actual: int) -> None:
        if actual == col.type or actual in TEXT_LIKE:
            return
        have = TYPE_LABELS.get(actual, f"type {actual}")
        need = TYPE_LABELS[col.type]
        raise ConfigError(
            f"field {name!r} of {self.where} is a {have} field; {col.name} needs {need} or text",
            hint="change the field's type in the Base, or map the column to another field with "
            "ADSYNC_BITABLE_FIELDS",
        )

    def _list_fields(self) -> list[Any]:
        items: list[Any] = []
        page_token = ""
        while True:
            builder = (
                ListAppTableFieldRequest.builder()
                .app_token(self.app_token)
                .table_id(self.table_id)
                .page_size(FIELD_PAGE)
            )
            if page_token:
                builder = builder.page_token(page_token)
            data = self._call("list fields", self._api.app_table_field.list, builder.build()).data
            items.extend(data.items or [])
            if not data.has_more or not data.page_token:
                return items
            page_token = data.page_token

    def _create_field(self, col: Column, name: str) -> Any:
        body = AppTableField.builder().field_name(name).type(col.type)
        if col.property:
            body = body.property(AppTableFieldProperty(col.property))
        request = (
            CreateAppTableFieldRequest.builder()
            .app_token(self.app_token)
            .table_id(self.table_id)
            # Fixed for this request, so the caller's retries of it are one creation.
            .client_token(str(uuid.uuid4()))
            .request_body(body.build())
            .build()
        )
        try:
            create = self._api.app_table_field.create
            return self._write(f"create field {name}", create, request).data.field
        except FeishuError as exc:
            if exc.code != FIELD_NAME_DUPLICATED:
                raise
        # Another writer created it between our list and our create: use theirs.
        found = {f.field_name: f for f in self._list_fields()}.get(name)
        if found is None:
            raise FeishuError(self._what(f"create field {name}"), FIELD_NAME_DUPLICATED, "")
        return found

    def _layout(self) -> Layout:
        return self.layout if self.layout is not None else self.prepare()

    # ---- reads -----------------------------------------------------------------------------

    def count(self) -> int:
        body = SearchAppTableRecordRequestBody.builder().automatic_fields(False).build()
        request = (
            SearchAppTableRecordRequest.builder()
            .app_token(self.app_token)
            .table_id(self.table_id)
            .page_size(1)
            .request_body(body)
            .build()
        )
        response = self._call("count records", self._api.app_table_record.search, request)
        return int(response.data.total or 0)

    def read(
        self, dates: Sequence[date], account_names: Mapping[str, str] | None = None
    ) -> list[StoredRecord]:
        """Every record dated one of ``dates``, in table order, values normalised."""
        layout = self._layout()
        date_col = layout.get("date")
        if date_col is None or not dates:
            return []  # no date column: the table holds no adsync rows yet
        names = {k.strip(): v for k, v in (account_names or {}).items()}
        return [
            self._stored(item, layout, names)
            for item in self._search_dates(date_col, dates, layout.field_names)
        ]

    def _search_dates(
        self, date_col: LayoutColumn, dates: Sequence[date], field_names: list[str]
    ) -> Iterator[Any]:
        seen: set[str] = set()
        conditions = self._date_conditions(date_col, sorted(set(dates)))
        for group in pack_conditions(conditions):
            for item in self._search(group, field_names):
                if item.record_id not in seen:  # a record can match one day in two spellings
                    seen.add(item.record_id)
                    yield item

    def _date_conditions(self, col: LayoutColumn, dates: list[date]) -> list[dict[str, Any]]:
        def cond(value: list[str]) -> dict[str, Any]:
            return {"field_name": col.field_name, "operator": "is", "value": value}

        if not col.text_typed:
            # The platform resolves the ms to that day in the Base's time zone; we write 00:00
            # in ADSYNC_TIMEZONE, so the same ms finds what we wrote whatever the Base's zone.
            return [cond(["ExactDate", str(self._day_ms(d))]) for d in dates]
        # Legacy text dates: the two spellings seen in hand-kept tables.
        return [cond([spelling]) for d in dates for spelling in (d.isoformat(), f"{d:%Y/%m/%d}")]

    def _search(self, conditions: list[dict[str, Any]] | None, names: list[str]) -> Iterator[Any]:
        page_token = ""
        while True:
            body = SearchAppTableRecordRequestBody.builder().field_names(names)
            body = body.automatic_fields(False)
            if conditions:
                body = body.filter(to_filter(conditions))
            builder = (
                SearchAppTableRecordRequest.builder()
                .app_token(self.app_token)
                .table_id(self.table_id)
                .page_size(SEARCH_PAGE)
                .request_body(body.build())
            )
            if page_token:
                builder = builder.page_token(page_token)
            search = self._api.app_table_record.search
            data = self._call("search records", search, builder.build()).data
            yield from data.items or []
            if not data.has_more or not data.page_token:
                return
            page_token = data.page_token

    def _stored(self, item: Any, layout: Layout, names: Mapping[str, str]) -> StoredRecord:
        raw = item.fields or {}
        values = {c.key: self._decode(c.key, raw.get(c.field_name)) for c in layout.columns}
        key = values.get("sync_key") or derive_key(values, names)
        return StoredRecord(str(item.record_id), key, values)

    def _decode(self, key: str, raw: Any) -> Any:
        if key == "date":
            return to_date(raw, self.tz)
        if key == "synced_at":
            return to_datetime(raw, self.tz)
        if key in MONEY:
            amount = to_decimal(raw)
            return None if amount is None else amount.quantize(CENT, rounding=ROUND_HALF_UP)
        if key in COUNTS:
            return to_count(raw)
        return to_text(raw)

    def _record_ids(self, scope: Sequence[date]) -> set[str]:
        """Ids of the records still there: in ``scope``'s dates, else in the whole table."""
        layout = self._layout()
        date_col = layout.get("date")
        if scope and date_col is not None:
            items = self._search_dates(date_col, scope, [date_col.field_name])
        else:
            items = self._search(None, layout.field_names[:1])
        return {str(i.record_id) for i in items}

    # ---- diff ------------------------------------------------------------------------------

    def plan(self, rows: Sequence[ReportRow], stored: Sequence[StoredRecord]) -> Plan:
        """What to write so each row's key has exactly one record with the row's values."""
        by_key: dict[str, list[StoredRecord]] = {}
        for record in stored:
            if record.key:  # unidentifiable records are never touched
                by_key.setdefault(record.key, []).append(record)
        plan = Plan()
        touched: set[date] = set()
        for key, row in {r.sync_key: r for r in rows}.items():
            found = by_key.get(key)
            if not found:
                plan.creates.append(row)
                continue
            keep, *extra = found  # the oldest stays: its record_id is what people link to
            plan.deletes.extend(r.record_id for r in extra)
            changed = differs(keep.values, row_values(row))
            if changed:
                plan.updates.append(Update(keep.record_id, row))
            else:
                plan.unchanged += 1
            if extra or changed:
                touched.update(r.values["date"] for r in found if r.values.get("date"))
        plan.scope = tuple(sorted(touched))
        return plan

    # ---- writes ----------------------------------------------------------------------------

    def upsert(
        self,
        rows: Sequence[ReportRow],
        dates: Sequence[date],
        run_tag: str,
        synced_at: datetime,
        account_names: Mapping[str, str] | None = None,
    ) -> UpsertResult:
        """Read the dates, diff, check capacity, write. Keys not in ``rows`` are left alone."""
        # Rows dated outside ``dates`` would otherwise be created next to their stored twin.
        days = sorted(set(dates) | {r.stat_date for r in rows})
        stream = self.stream(days, run_tag, synced_at, account_names)
        stream.add(rows)
        return stream.finish()

    def stream(
        self,
        dates: Sequence[date],
        run_tag: str,
        synced_at: datetime,
        account_names: Mapping[str, str] | None = None,
        fresh: bool = False,
    ) -> UpsertStream:
        """An upsert of ``dates`` whose rows are given in parts (see ``UpsertStream``)."""
        return UpsertStream(self, dates, run_tag, synced_at, account_names, fresh=fresh)

    def apply(self, plan: Plan, run_tag: str, synced_at: datetime) -> UpsertResult:
        """Deletes, then updates, then creates; serial, chunked, spaced by ``write_gap``."""
        started, calls = time.monotonic(), self.caller.calls
        confirmed = self.confirmed_after_timeout
        self._layout()
        result = UpsertResult(unchanged=plan.unchanged)
        result.deleted = self._delete_all(plan.deletes, plan.scope)
        result.updated, vanished = self._update_all(
            plan.updates, run_tag, synced_at, plan.scope, "update"
        )
        creates = [*plan.creates, *vanished]  # a record deleted under us: write it anew
        result.created = self._create_all(creates, run_tag, synced_at)
        if creates:
            collapsed = self._collapse(creates, run_tag, synced_at)
            if collapsed:
                result.deleted += collapsed
                result.warnings.append(
                    f"{collapsed} duplicate row(s) written at the same time by another sync "
                    f"were removed from {self.where}"
                )
        result.api_calls = self.caller.calls - calls
        result.confirmed_after_timeout = self.confirmed_after_timeout - confirmed
        if result.confirmed_after_timeout:
            result.warnings.append(confirmed_warning(result.confirmed_after_timeout))
        result.seconds = round(time.monotonic() - started, 3)
        log.info(
            "%s: created %d, updated %d, unchanged %d, deleted %d (%d calls)",
            self.where,
            result.created,
            result.updated,
            result.unchanged,
            result.deleted,
            result.api_calls,
        )
        return result

    def _check_capacity(self, total: int, deletes: int, creates: int, written: int = 0) -> None:
        """Refuse, before writing them, rows that would take the table past its limit."""
        after = total - deletes + creates
        if after > self.max_rows:
            kept = f"the {written:,} rows written before stay, " if written else ""
            raise CapacityError(
                f"{self.where} has {total:,} rows and this sync would add "
                f"{after - total:,} more ({after:,} in all), above the limit of "
                f"{self.max_rows:,} rows per table; {kept}nothing {'more ' if written else ''}"
                "was written",
                hint="create a new table in the Base and set FEISHU_BITABLE_TABLE_ID to it, "
                "or archive old rows, then sync again",
            )

    def _capacity_warnings(self, total: int, deletes: int, creates: int) -> list[str]:
        after = total - deletes + creates
        if self.capacity_warnings and after >= WARN_AT * self.max_rows:
            share = 100 * after / self.max_rows
            return [
                f"{self.where} holds {after:,} of at most {self.max_rows:,} rows ({share:.0f}%): "
                "start a new table (FEISHU_BITABLE_TABLE_ID) or archive old rows soon"
            ]
        return []

    def delete_records(self, record_ids: Sequence[str], scope: Sequence[date]) -> int:
        """Delete these records (of ``scope``'s dates), tolerating ones already gone."""
        self._layout()
        return self._delete_all(record_ids, scope)

    def _delete_all(self, record_ids: Sequence[str], scope: Sequence[date]) -> int:
        deleted = 0
        for chunk in chunks(list(record_ids), DELETE_CHUNK):
            try:
                self._tolerating_vanished(chunk, lambda rid: rid, self._send_delete, scope)
            except FeishuError as exc:
                if not exc.outcome_unknown:
                    raise
                self._confirm_deleted(chunk, scope, exc)
            deleted += len(chunk)  # all of them are gone now, whoever removed them
        return deleted

    def _send_delete(self, record_ids: list[str], _attempt: int) -> None:
        # batch_delete has no client_token: a retry after a lost answer meets 1254043, which
        # _tolerating_vanished answers by re-reading what is still there.
        body = BatchDeleteAppTableRecordRequestBody.builder().records(record_ids).build()
        request = (
            BatchDeleteAppTableRecordRequest.builder()
            .app_token(self.app_token)
            .table_id(self.table_id)
            .request_body(body)
            .build()
        )
        self._write("batch_delete", self._api.app_table_record.batch_delete, request)

    def _update_all(
        self,
        updates: Sequence[Update],
        run_tag: str,
        synced_at: datetime,
        scope: Sequence[date],
        op: str,
    ) -> tuple[int, list[ReportRow]]:
        """Returns (records updated, rows whose record vanished before it could be updated)."""
        updated, vanished = 0, []
        for index, chunk in enumerate(chunks(list(updates), WRITE_CHUNK)):

            def send(items: list[Update], attempt: int, index: int = index) -> None:
                self._send_update(items, run_tag, synced_at, f"{op}:{index}:{attempt}")

            try:
                sent, gone = self._tolerating_vanished(chunk, lambda u: u.record_id, send, scope)
            except FeishuError as exc:
                if not exc.outcome_unknown:
                    raise
                sent, gone = self._confirm_updated(chunk, scope, exc), []
            updated += len(sent)
            vanished.extend(u.row for u in gone)
        return updated, vanished

    def _send_update(
        self, updates: list[Update], run_tag: str, synced_at: datetime, label: str
    ) -> None:
        layout = self._layout()
        records = [
            {"record_id": u.record_id, "fields": self._encode(u.row, synced_at, layout, True)}
            for u in updates
        ]
        request = (
            BatchUpdateAppTableRecordRequest.builder()
            .app_token(self.app_token)
            .table_id(self.table_id)
            .client_token(self._client_token(run_tag, label, records))
            .build()
        )
        # A plain dict, not the SDK's model: lark-oapi's encoder drops None from model objects,
        # and None is how a cell is emptied (转化成本 when conversions fall to 0).
        request.body = {"records": records}
        self._write("batch_update", self._api.app_table_record.batch_update, request)

    def _create_all(
        self, rows: Sequence[ReportRow], run_tag: str, synced_at: datetime, first: int = 0
    ) -> int:
        """``first``: the index of the first chunk, for its client_token label."""
        layout = self._layout()
        for index, chunk in enumerate(chunks(list(rows), WRITE_CHUNK), start=first):
            records = [self._encode(row, synced_at, layout, False) for row in chunk]
            body = BatchCreateAppTableRecordRequestBody.builder().records(
                [AppTableRecord.builder().fields(r).build() for r in records]
            )
            request = (
                BatchCreateAppTableRecordRequest.builder()
                .app_token(self.app_token)
                .table_id(self.table_id)
                .client_token(self._client_token(run_tag, f"create:{index}", records))
                .request_body(body.build())
                .build()
            )
            try:
                self._write("batch_create", self._api.app_table_record.batch_create, request)
            except FeishuError as exc:
                if not exc.outcome_unknown:
                    raise
                self._confirm_created(chunk, exc)
        return len(rows)

    # ---- writes that got no answer --------------------------------------------------------
    #
    # A write can time out (ADSYNC_HTTP_TIMEOUT) or meet a gateway error after the platform
    # applied it: a slow platform answers late. The caller retried it (client_token makes that
    # safe) until its attempts ran out; before the rows are called failed, the table is read
    # back. Rows found as written count as written — "confirmed after a timeout" — and only
    # what is really missing fails the run.

    def _confirm_created(self, rows: Sequence[ReportRow], exc: FeishuError) -> None:
        def missing() -> list[ReportRow]:
            stored: dict[str, list[StoredRecord]] = {}
            for record in self.read(sorted({r.stat_date for r in rows})):
                stored.setdefault(record.key, []).append(record)
            return [
                r
                for r in rows
                if not any(not differs(s.values, row_values(r)) for s in stored.get(r.sync_key, ()))
            ]

        self._confirm("batch_create", len(rows), missing, exc)

    def _confirm_updated(
        self, updates: Sequence[Update], scope: Sequence[date], exc: FeishuError
    ) -> list[Update]:
        def missing() -> list[Update]:
            days = sorted(set(scope) | {u.row.stat_date for u in updates})
            stored = {s.record_id: s for s in self.read(days)}
            return [
                u
                for u in updates
                if u.record_id not in stored
                or differs(stored[u.record_id].values, row_values(u.row))
            ]

        self._confirm("batch_update", len(updates), missing, exc)
        return list(updates)

    def _confirm_deleted(
        self, record_ids: Sequence[str], scope: Sequence[date], exc: FeishuError
    ) -> None:
        def missing() -> list[str]:
            alive = self._record_ids(scope)
            return [rid for rid in record_ids if rid in alive]

        self._confirm("batch_delete", len(record_ids), missing, exc)

    def _confirm(
        self, op: str, total: int, missing: Callable[[], Sequence[Any]], exc: FeishuError
    ) -> None:
        """Read back until ``missing()`` is empty (the platform's search can trail its writes
        by a moment: three looks, a second apart); raise WriteUnconfirmed if it never is."""
        left: Sequence[Any] = ()
        for look in range(3):
            if look:
                time.sleep(look)
            left = missing()
            if not left:
                if op != "batch_delete":
                    self.confirmed_after_timeout += total
                log.warning(
                    "%s: %s got no answer (%s), but reading the table back shows all %d "
                    "rows written: written (confirmed after a timeout)",
                    self.where,
                    op,
                    exc.message,
                    total,
                )
                return
        raise WriteUnconfirmed(
            f"{exc.message}; read back afterwards, {len(left)} of {total} rows are not in "
            f"{self.where} as written",
            hint="sync the same dates again: every write is an upsert, so nothing is doubled",
        )

    def _collapse(self, created: Sequence[ReportRow], run_tag: str, synced_at: datetime) -> int:
        """Look again at what was just created. Another writer that read the table before these
        rows existed may have created the same keys: keep the oldest record of each key (every
        writer picks the same one) and delete the rest, so concurrent syncs still end exact."""
        stored = self.read(sorted({r.stat_date for r in created}))
        again = self.plan(created, stored)
        # again.creates: rows the search does not show yet (indexing lag); never write twice.
        deleted = self._delete_all(again.deletes, again.scope)
        self._update_all(again.updates, run_tag, synced_at, again.scope, "update-after-create")
        return deleted

    def _tolerating_vanished(
        self,
        items: list[T],
        record_id: Callable[[T], str],
        send: Callable[[list[T], int], None],
        scope: Sequence[date],
    ) -> tuple[list[T], list[T]]:
        """Send ``items``; on 1254043 (a record is gone — deleted by someone else, or by our own
        earlier attempt whose answer was lost) re-read which still exist and send only those.
        Returns (sent, vanished)."""
        vanished: list[T] = []
        for attempt in range(4):
            if not items:
                return items, vanished
            try:
                send(items, attempt)
                return items, vanished
            except FeishuError as exc:
                if exc.code != RECORD_NOT_FOUND or attempt == 3:
                    raise
            alive = self._record_ids(scope)
            vanished += [i for i in items if record_id(i) not in alive]
            items = [i for i in items if record_id(i) in alive]
        return items, vanished  # not reached

    # ---- encoding --------------------------------------------------------------------------

    def _encode(
        self, row: ReportRow, synced_at: datetime, layout: Layout, for_update: bool
    ) -> dict[str, Any]:
        """A row as a ``fields`` map in each column's actual type. Empty cells are omitted on
        create and sent as None (which empties the cell) on update."""
        values = row_values(row)
        values["synced_at"] = synced_at
        out: dict[str, Any] = {}
        for col in layout.columns:
            encoded = self._encode_value(col, values[col.key])
            if encoded is not None or for_update:
                out[col.field_name] = encoded
        return out

    def _encode_value(self, col: LayoutColumn, value: Any) -> Any:
        if value is None:
            return None
        if col.key == "date":
            return value.isoformat() if col.text_typed else self._day_ms(value)
        if col.key == "synced_at":
            if col.text_typed:
                return value.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S")
            return int(value.timestamp() * 1000)
        if col.key in MONEY:
            amount = Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)
            return f"{amount:.2f}" if col.text_typed else round(float(amount), 2)
        if col.key in COUNTS:
            return str(int(value)) if col.text_typed else int(value)
        return str(value)

    def _day_ms(self, day: date) -> int:
        return int(datetime(day.year, day.month, day.day, tzinfo=self.tz).timestamp() * 1000)

    def _client_token(self, run_tag: str, label: str, records: list[dict[str, Any]]) -> str:
        """Same run, same chunk, same content -> same token: a retried chunk is applied once,
        while another run (another run_tag) or changed content is never taken for a replay."""
        content = json.dumps(records, ensure_ascii=False, sort_keys=True, default=str)
        digest = hashlib.sha256(content.encode()).hexdigest()
        name = f"{run_tag}|{self.app_token}|{self.table_id}|{label}|{digest}"
        return str(uuid.uuid5(TOKEN_NAMESPACE, name))

    # ---- calls -----------------------------------------------------------------------------

    def _what(self, op: str) -> str:
        return f"Bitable {op} on {self.where}"

    def _call(self, op: str, fn: Callable[[Any], Any], request: Any) -> Any:
        return self.caller.call(self._what(op), fn, request)

    def _write(self, op: str, fn: Callable[[Any], Any], request: Any) -> Any:
        """A write, spaced from the previous one: the platform applies a table's writes one at
        a time and answers back-to-back writes with 1254291/1254607."""
        if self._last_write is not None and self.write_gap > 0:
            wait = self.write_gap - (time.monotonic() - self._last_write)
            if wait > 0:
                time.sleep(wait)
        try:
            return self._call(op, fn, request)
        finally:
            self._last_write = time.monotonic()


class UpsertStream:
    """An upsert whose rows arrive in parts, one account at a time while the others are still
    being fetched: the table's serial, spaced writes then overlap the rate-limited fetch
    instead of following it.

    It reads the dates once, up front; each ``add`` diffs its rows against that read and sends
    every chunk that is full; ``finish`` sends the rest. Capacity is checked for everything
    planned so far before any of a part is written: the part that would overflow the table
    raises CapacityError and nothing of it, nor anything still pending, is written (``upsert``
    gives one part: nothing at all). A key that comes again in a later part is ignored.

    ``fresh``: the table was created a moment ago by this writer (under the Base's writer
    lease): it holds nothing, so it is neither counted nor read. ``read_more`` adds dates to
    an open stream (rolling tables decide some dates' table only once their rows are in).
    """

    def __init__(
        self,
        sink: BitableSink,
        dates: Sequence[date],
        run_tag: str,
        synced_at: datetime,
        account_names: Mapping[str, str] | None = None,
        fresh: bool = False,
    ) -> None:
        self.sink, self.run_tag, self.synced_at = sink, run_tag, synced_at
        self.fresh = fresh
        self._names = dict(account_names or {})
        self._started, self._calls = time.monotonic(), sink.caller.calls
        self._confirmed = sink.confirmed_after_timeout
        sink._layout()
        self.dates: frozenset[date] = frozenset()
        # Counted before the read: records another writer adds after this point show in the
        # count at the end, which is how ``finish`` tells whether to look for duplicates.
        self.total_before = 0 if fresh else sink.count()
        self._stored: dict[str, list[StoredRecord]] = {}
        self.read_more(dates)
        self.result = UpsertResult()
        self._seen: set[str] = set()
        self._deletes: list[str] = []
        self._updates: list[Update] = []
        self._creates: list[ReportRow] = []
        self._created: list[ReportRow] = []
        self._scope: set[date] = set()
        self._planned_deletes = self._planned_creates = 0
        self._chunk = 0  # write chunks sent: labels their client_tokens

    def read_more(self, dates: Sequence[date]) -> None:
        """Take ``dates`` into this upsert: their stored records are read (one search)."""
        new = sorted(set(dates) - self.dates)
        if not new:
            return
        # A table that counted 0 before any read holds nothing to read (records someone else
        # adds after the count show in the count at the end, as for any read).
        if not self.fresh and self.total_before > 0:
            for record in self.sink.read(new, self._names):
                self._stored.setdefault(record.key, []).append(record)
        self.dates = self.dates | frozenset(new)

    @property
    def planned_rows(self) -> int:
        """The table's rows once everything planned so far is written."""
        return self.total_before - self._planned_deletes + self._planned_creates

    def stored_dates(self) -> set[date]:
        """Dates of the identifiable records this upsert read."""
        return {
            r.values["date"]
            for found in self._stored.values()
            for r in found
            if r.values.get("date")
        }

    def add(self, rows: Sequence[ReportRow]) -> None:
        outside = sorted({r.stat_date for r in rows} - self.dates)
        if outside:  # unread dates: their stored twins would be missed and duplicated
            raise ValueError(f"rows dated {outside[0]} are outside the dates this upsert read")
        fresh = [r for r in rows if r.sync_key not in self._seen]
        keys = {r.sync_key for r in fresh}
        plan = self.sink.plan(fresh, [rec for k in keys for rec in self._stored.get(k, ())])
        if plan.creates:
            written = self.result.created + self.result.updated + self.result.deleted
            self.sink._check_capacity(
                self.total_before,
                self._planned_deletes + len(plan.deletes),
                self._planned_creates + len(plan.creates),
                written,
            )
        self._seen |= keys
        self._planned_deletes += len(plan.deletes)
        self._planned_creates += len(plan.creates)
        self.result.unchanged += plan.unchanged
        self._scope.update(plan.scope)
        self._deletes += plan.deletes
        self._updates += plan.updates
        self._creates += plan.creates
        self._send(final=False)

    def finish(self) -> UpsertResult:
        """Send what is left; look for concurrent duplicates if the table's count says another
        writer added records meanwhile."""
        self._send(final=True)
        sink, result = self.sink, self.result
        if self._planned_creates:
            result.warnings += sink._capacity_warnings(
                self.total_before, self._planned_deletes, self._planned_creates
            )
        if self._created and not self.fresh:
            # Nobody else added a record since the count before the read: none of ours can
            # have a twin, and reading every created date again (a search page per 500 rows)
            # would find nothing. Any difference, whatever its cause, means look.
            expected = self.total_before - result.deleted + result.created
            if sink.count() != expected:
                collapsed = sink._collapse(self._created, self.run_tag, self.synced_at)
                if collapsed:
                    result.deleted += collapsed
                    result.warnings.append(
                        f"{collapsed} duplicate row(s) written at the same time by another "
                        f"sync were removed from {sink.where}"
                    )
        result.api_calls = sink.caller.calls - self._calls
        result.confirmed_after_timeout = sink.confirmed_after_timeout - self._confirmed
        if result.confirmed_after_timeout:
            result.warnings.append(confirmed_warning(result.confirmed_after_timeout))
        result.seconds = round(time.monotonic() - self._started, 3)
        log.info(
            "%s: created %d, updated %d, unchanged %d, deleted %d (%d calls)",
            sink.where,
            result.created,
            result.updated,
            result.unchanged,
            result.deleted,
            result.api_calls,
        )
        return result

    def _send(self, final: bool) -> None:
        """Deletes, then updates, then creates, each in full chunks (and the rest if ``final``)."""
        sink, scope = self.sink, sorted(self._scope)
        while self._deletes and (final or len(self._deletes) >= DELETE_CHUNK):
            chunk, self._deletes = self._deletes[:DELETE_CHUNK], self._deletes[DELETE_CHUNK:]
            self.result.deleted += sink._delete_all(chunk, scope)
        while self._updates and (final or len(self._updates) >= WRITE_CHUNK):
            chunk_u, self._updates = self._updates[:WRITE_CHUNK], self._updates[WRITE_CHUNK:]
            op = f"update:{self._chunk}"
            updated, vanished = sink._update_all(chunk_u, self.run_tag, self.synced_at, scope, op)
            self._chunk += 1
            self.result.updated += updated
            self.result.confirmed_after_timeout = sink.confirmed_after_timeout - self._confirmed
            self._creates += vanished  # a record deleted under us: write it anew
        while self._creates and (final or len(self._creates) >= WRITE_CHUNK):
            chunk_c, self._creates = self._creates[:WRITE_CHUNK], self._creates[WRITE_CHUNK:]
            sink._create_all(chunk_c, self.run_tag, self.synced_at, first=self._chunk)
            self._chunk += 1
            self.result.created += len(chunk_c)
            self._created += chunk_c
            self.result.confirmed_after_timeout = sink.confirmed_after_timeout - self._confirmed


# -- pure helpers -------------------------------------------------------------------------------


def confirmed_warning(rows: int) -> str:
    return (
        f"Feishu did not answer in time for {rows:,} row(s); read back, they are in the table: "
        "written (confirmed after a timeout)"
    )


def chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def pack_conditions(conditions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split ``or``-joined conditions into filters within the platform's limits (50
    conditions, 2,000 characters)."""
    groups: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for cond in conditions:
        candidate = [*current, cond]
        too_big = len(candidate) > MAX_CONDITIONS or filter_chars(candidate) > MAX_FILTER_CHARS
        if current and too_big:
            groups.append(current)
            current = [cond]
        else:
            current = candidate
    if current:
        groups.append(current)
    return groups


def filter_chars(conditions: list[dict[str, Any]]) -> int:
    # With json's default ", " separators: an over-estimate of the compact form the SDK sends.
    text = json.dumps({"conjunction": "or", "conditions": conditions}, ensure_ascii=False)
    return len(text)


def to_filter(conditions: list[dict[str, Any]]) -> FilterInfo:
    return (
        FilterInfo.builder()
        .conjunction("or")
        .conditions(
            [
                Condition.builder()
                .field_name(c["field_name"])
                .operator(c["operator"])
                .value(c["value"])
                .build()
                for c in conditions
            ]
        )
        .build()
    )


def differs(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether a stored record needs an update (columns the table lacks are not compared)."""
    return any(key in stored and stored[key] != wanted[key] for key in COMPARED)


def derive_key(values: Mapping[str, Any], account_names: Mapping[str, str]) -> str:
    """The key of a legacy row without 同步键: date + account id (or its name, mapped) +
    promotion id; "" when one of them is missing."""
    day, promotion = values.get("date"), values.get("promotion_id")
    account = values.get("account_id") or account_names.get(
        str(values.get("account_name") or "").strip(), ""
    )
    if not (day and account and promotion):
        return ""
    return sync_key(day, account, promotion)


def to_text(raw: Any) -> str:
    """A cell as text: a text field's segment list joined, numbers without exponent."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return str(raw).lower()
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        return str(int(raw)) if raw.is_integer() else repr(raw)
    if isinstance(raw, list):
        return "".join(to_text(s.get("text") if isinstance(s, dict) else s) for s in raw)
    if isinstance(raw, dict):
        return to_text(raw.get("text", raw.get("value")))
    return str(raw)


def to_decimal(raw: Any) -> Decimal | None:
    """A number cell, or a number kept as text ("118.4", "1,052.30", "¥12"), as Decimal."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        text = repr(raw) if isinstance(raw, float) else str(raw)
    else:
        text = re.sub(r"[,，\s¥￥元]", "", to_text(raw))
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def to_count(raw: Any) -> int | None:
    number = to_decimal(raw)
    if number is None or number != number.to_integral_value():
        return None
    return int(number)


def to_date(raw: Any, tz: ZoneInfo) -> date | None:
    """A date cell (ms epoch) or a text date ("2026-02-11", "2026/2/11") as a date."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return datetime.fromtimestamp(raw / 1000, tz).date()
    text = to_text(raw).strip()
    match = DATE_RE.match(text)
    if match:
        try:
            return date(*(int(g) for g in match.groups()))
        except ValueError:
            return None
    if text.isdigit() and len(text) >= 12:  # an epoch in ms kept as text
        return datetime.fromtimestamp(int(text) / 1000, tz).date()
    return None


def to_datetime(raw: Any, tz: ZoneInfo) -> datetime | None:
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return datetime.fromtimestamp(raw / 1000, tz)
    text = to_text(raw).strip().replace("/", "-")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


__all__ = [
    "BitableSink",
    "CapacityError",
    "WriteUnconfirmed",
    "FieldInfo",
    "Layout",
    "LayoutColumn",
    "Plan",
    "StoredRecord",
    "Update",
    "UpsertResult",
    "UpsertStream",
]
