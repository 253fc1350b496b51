"""Per-account views in the Bitable, through lark-oapi's ``app_table_view`` APIs.

A grid view per account (named after it, e.g. ``菲象_郑州天后_27``) whose filter is the single
condition ``账户ID`` is <account id>: which tables get which views is ``adsync.sync.viewplan``.

**A view is an account's view by its filter, not its name.** A grid view whose filter is
exactly that one condition is the account's view, whoever made it; everything else is a
person's own view and is never changed. So a person may rename adsync's view (the name is
kept: adsync renames a view only while it still carries the name adsync gave it, when the
account is renamed); a person's view that happens to have the account's name stays as it is
and adsync's view is named ``name (account id)`` instead (state ``name-clash``); a view deleted
by hand is made again by ``adsync views`` (``missing-and-created``).

**Sort.** The open API cannot sort a view: lark-oapi's ``AppTableViewProperty`` has
``filter_info``, ``hidden_fields`` and ``hierarchy_config`` only, and the create body
(``ReqView``) a name and a type. So the views are filtered, not sorted; sorting one by 日期
(descending) is a click in the Base (the README says so).

**Once, across processes.** Views are made only by a holder of the Base's writer lease (the
run's writer holds it; ``adsync views`` takes it), so eight processes syncing at once make one
view per account. Creating a view and setting its filter are two calls: the ledger records the
intent first, so a view left without its filter by a crash is finished, not duplicated. A
create whose answer was lost (the caller retries it) meets 1254020 and finds the view it made.

**Cheap.** After a sync, nothing is asked of the platform unless the ledger says a view is
missing, unfinished, or named after an account name that changed (``viewplan.to_do``);
``adsync views`` looks at every table. A failure here never fails a sync: it is a warning.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from lark_oapi.api.bitable.v1 import (
    AppTableViewProperty,
    AppTableViewPropertyFilterInfo,
    AppTableViewPropertyFilterInfoCondition,
    CreateAppTableViewRequest,
    GetAppTableViewRequest,
    ListAppTableViewRequest,
    PatchAppTableViewRequest,
    PatchAppTableViewRequestBody,
    ReqView,
)

from adsync.sync.causes import collapse
from adsync.sync.errors import AdsyncError
from adsync.sync.feishu import FeishuError
from adsync.sync.viewplan import (
    CREATING,
    FAILED,
    OK,
    Ledger,
    LedgerRow,
    free_name,
    to_do,
    view_name,
    wanted_views,
)

if TYPE_CHECKING:
    from adsync.sync.routing import TableSet

log = logging.getLogger("adsync.views")

VIEW_PAGE = 100  # list views: page_size at most 100
NAME_DUPLICATED = 1254020  # ViewNameDuplicated
TOO_MANY_VIEWS = 1254101  # ViewExceedLimit: 200 views a table
VIEW_LIMIT = 200

# What ``adsync views`` says each view went through this time.
CREATED, RENAMED, RECREATED, NAME_CLASH = "created", "renamed", "missing-and-created", "name-clash"


@dataclass
class ViewLine:
    table_id: str
    table_name: str
    account_id: str
    account_name: str
    view_id: str = ""
    view_name: str = ""
    state: str = OK  # ok | created | renamed | missing-and-created | name-clash | failed
    note: str = ""


@dataclass
class ViewsResult:
    lines: list[ViewLine] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tables_checked: int = 0
    api_calls: int = 0

    @property
    def changes(self) -> list[ViewLine]:
        return [v for v in self.lines if v.state not in (OK, FAILED)]

    @property
    def failed(self) -> list[ViewLine]:
        return [v for v in self.lines if v.state == FAILED]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "views": [asdict(v) for v in self.lines],
            "warnings": self.warnings,
            "tables_checked": self.tables_checked,
            "api_calls": self.api_calls,
            "sort": "not settable through the open API: sort each view by 日期 in the Base",
        }


@dataclass
class _Listed:
    view_id: str
    name: str
    view_type: str
    account: str | None = None  # the account its filter selects ("" unfiltered, None other)
    read: bool = False  # its filter was read (get)


class ViewKeeper:
    """Makes the per-account views of a Base exist. Call it while holding the Base's writer
    lease (``tables.write_lease``)."""

    def __init__(self, tables: TableSet) -> None:
        self.ts = tables
        self.settings = tables.settings
        self.ledger = Ledger(tables.store, tables.app)
        self._api = tables.caller.client.bitable.v1
        self._last_write: float | None = None

    # ---- entry points ------------------------------------------------------------------------

    def after_sync(self, scope: Mapping[str, str], today: date) -> ViewsResult:
        """After a run's writes: only tables the ledger says need something are looked at
        (none, usually: no Feishu call)."""
        wanted = self._wanted(scope, today)
        return self._keep(wanted, to_do(wanted, self.ledger.rows()), verify=False)

    def daily(self, scope: Mapping[str, str], today: date) -> ViewsResult:
        """After the scheduled morning run: every table's views listed (a call a table, plus a
        read of each view adsync did not make), so a view deleted by hand is back by the
        morning; adsync's own views are trusted by id, not read again."""
        wanted = self._wanted(scope, today)
        return self._keep(wanted, list(wanted), verify=False)

    def ensure(self, scope: Mapping[str, str], today: date) -> ViewsResult:
        """``adsync views``: every table looked at, every view's filter read again."""
        wanted = self._wanted(scope, today)
        return self._keep(wanted, list(wanted), verify=True)

    # ---- the work ----------------------------------------------------------------------------

    def _wanted(self, scope: Mapping[str, str], today: date) -> dict[str, dict[str, str]]:
        registered = self.ts.registry.tables()
        if not registered:  # no sync has written to this Base yet: it makes the views
            return {}
        live = self.ts.live()
        tables = [t for t in registered if t.table_id in live]
        return wanted_views(self.ts.store, self.ts.app, tables, self.ts.mode, today, scope)

    def _keep(
        self, wanted: Mapping[str, Mapping[str, str]], tables: Sequence[str], verify: bool
    ) -> ViewsResult:
        result = ViewsResult()
        calls = self.ts.caller.calls
        names = self.ts.live()
        for table_id in tables:
            result.tables_checked += 1
            table_name = names.get(table_id, "")
            try:
                lines = self._table(table_id, table_name, wanted[table_id], verify)
            except AdsyncError as exc:  # the table could not be read at all
                lines = [
                    ViewLine(table_id, table_name, a, n, state=FAILED, note=exc.message)
                    for a, n in wanted[table_id].items()
                ]
            result.lines.extend(lines)
        result.api_calls = self.ts.caller.calls - calls
        result.warnings = _warnings(result.failed)
        for line in result.changes:
            log.info(
                "%s (%s): view %s of %s: %s",
                line.table_name,
                line.table_id,
                line.view_name,
                line.account_id,
                line.state,
            )
        return result

    def _table(
        self, table_id: str, table_name: str, wanted: Mapping[str, str], verify: bool
    ) -> list[ViewLine]:
        field_id = self._account_field(table_id)
        rows = {a: r for (t, a), r in self.ledger.rows(table_id).items()}
        listed = self._list(table_id)
        trusted = {r.view_id: r.account_id for r in rows.values() if r.view_id and r.state == OK}
        for view in listed:
            if view.view_type != "grid":
                continue
            if not verify and view.view_id in trusted:
                view.account = trusted[view.view_id]  # made by adsync, its filter unchanged
            else:
                view.account = self._filter_account(table_id, view.view_id, field_id)
                view.read = True
        by_account: dict[str, _Listed] = {}
        for view in listed:
            if view.account:
                # Two views of one account (a person copied it): the one adsync knows wins.
                known = rows.get(view.account)
                if view.account not in by_account or (known and known.view_id == view.view_id):
                    by_account[view.account] = view
        taken = {v.name for v in listed}
        ctx = _TableWork(table_id, table_name, field_id, rows, listed, by_account, taken)
        order = sorted(wanted.items(), key=lambda item: (view_name(item[1], item[0]), item[0]))
        lines = []
        for account_id, account_name in order:
            lines.append(self._one(ctx, account_id, account_name))
        return lines

    def _one(self, ctx: _TableWork, account_id: str, account_name: str) -> ViewLine:
        line = ViewLine(ctx.table_id, ctx.table_name, account_id, account_name)
        row = ctx.rows.get(account_id)
        if ctx.stopped:
            return self._failed(ctx, line, ctx.stopped)
        try:
            view = ctx.by_account.get(account_id)
            if view is not None:
                return self._existing(ctx, line, view, row)
            half = self._half_made(ctx, row)
            if half is not None:  # created before a crash, its filter never set: finish it
                self._set_filter(ctx, half.view_id, account_id)
                self._record(ctx, line, half.view_id, half.name, OK)
                line.state = CREATED
                return line
            return self._create(ctx, line, row)
        except FeishuError as exc:
            # The caller already retried what passes (rate limits, conflicts): the rest of the
            # table would meet the same refusal.
            ctx.stopped = exc.message
            if exc.code == TOO_MANY_VIEWS:
                ctx.stopped = (
                    f"the table holds the most views a table may have ({VIEW_LIMIT}, 1254101)"
                )
            return self._failed(ctx, line, ctx.stopped)

    def _existing(
        self, ctx: _TableWork, line: ViewLine, view: _Listed, row: LedgerRow | None
    ) -> ViewLine:
        if row is None or row.view_id != view.view_id:
            # Found by its filter (adsync's own whose record was lost, or a person's made the
            # same way): used as it is, its name untouched.
            self._record(ctx, line, view.view_id, view.name, OK, note="found by its filter")
            return line
        wanted = view_name(line.account_name, line.account_id)
        renamed = bool(line.account_name) and row.account_name != line.account_name
        if renamed and view.name == row.view_name and view.name != wanted:
            # The account was renamed and the view still has the name adsync gave it.
            name = free_name(wanted, line.account_id, ctx.taken - {view.name})
            if name != view.name:
                self._rename(ctx, view.view_id, name)
                ctx.taken.discard(view.name)
                ctx.taken.add(name)
                view.name = name
            clash = f"{wanted!r} is taken by another view" if name != wanted else ""
            self._record(ctx, line, view.view_id, name, OK, note=clash)
            line.state = RENAMED if name == wanted else NAME_CLASH
            return line
        # A person's new name stays (adsync remembers the name it gave, not theirs).
        note = "renamed in the Base: kept" if view.name != row.view_name else (row.note or "")
        self.ledger.put(
            ctx.table_id,
            line.account_id,
            account_name=line.account_name or row.account_name,
            state=OK,
            note=note or None,
        )
        line.view_id, line.view_name, line.note = view.view_id, view.name, note
        return line

    def _half_made(self, ctx: _TableWork, row: LedgerRow | None) -> _Listed | None:
        if row is None or row.state != CREATING:
            return None
        for view in ctx.listed:
            if view.account != "":
                continue  # filtered (on something), or not a grid view
            if (row.view_id and view.view_id == row.view_id) or (
                not row.view_id and view.name == row.view_name
            ):
                return view
        return None

    def _create(self, ctx: _TableWork, line: ViewLine, row: LedgerRow | None) -> ViewLine:
        wanted = view_name(line.account_name, line.account_id)
        name = free_name(wanted, line.account_id, ctx.taken)
        account_id = line.account_id
        # The intent first: a crash between the create and the filter is finished next time.
        self.ledger.put(
            ctx.table_id,
            account_id,
            view_id=None,
            view_name=name,
            account_name=line.account_name,
            state=CREATING,
            note=None,
        )
        view_id, name = self._create_view(ctx, name, wanted, account_id)
        ctx.taken.add(name)
        self.ledger.put(ctx.table_id, account_id, view_id=view_id, view_name=name)
        self._set_filter(ctx, view_id, account_id)
        had = row is not None and bool(row.view_id) and row.state == OK
        notes = ["deleted in the Base: made again"] if had else []
        if name != wanted:
            notes.append(f"{wanted!r} is taken by another view")
        self._record(ctx, line, view_id, name, OK, note="; ".join(notes))
        line.state = RECREATED if had else (CREATED if name == wanted else NAME_CLASH)
        return line

    def _create_view(
        self, ctx: _TableWork, name: str, wanted: str, account_id: str
    ) -> tuple[str, str]:
        """Create a grid view named ``name``: its id and the name it got."""
        try:
            return self._create_call(ctx.table_id, name), name
        except FeishuError as exc:
            if exc.code != NAME_DUPLICATED:
                raise
        # Our own create whose answer was lost (the caller retried it), or a person's view of
        # that name made a moment ago: a view of that name without a filter is ours.
        for view in self._list(ctx.table_id):
            if view.name == name:
                if self._filter_account(ctx.table_id, view.view_id, ctx.field_id) == "":
                    return view.view_id, name
                break
        ctx.taken.add(name)
        other = free_name(wanted, account_id, ctx.taken)
        self.ledger.put(ctx.table_id, account_id, view_name=other)
        return self._create_call(ctx.table_id, other), other

    def _record(
        self, ctx: _TableWork, line: ViewLine, view_id: str, name: str, state: str, note: str = ""
    ) -> None:
        self.ledger.put(
            ctx.table_id,
            line.account_id,
            view_id=view_id,
            view_name=name,
            account_name=line.account_name,
            state=state,
            note=note or None,
        )
        line.view_id, line.view_name, line.note = view_id, name, note

    def _failed(self, ctx: _TableWork, line: ViewLine, why: str) -> ViewLine:
        self.ledger.put(ctx.table_id, line.account_id, state=FAILED, note=why)
        line.state, line.note = FAILED, why
        return line

    # ---- the platform ------------------------------------------------------------------------

    def _account_field(self, table_id: str) -> str:
        sink = self.ts.sink(table_id)
        layout = sink.layout or sink.prepare(create_missing=False)
        column = layout.get("account_id")
        if column is None or not column.field_id:
            raise AdsyncError(
                f"table {table_id} has no 账户ID field to filter on yet",
                hint="the first sync into it creates its fields; then run `adsync views`",
            )
        return column.field_id

    def _list(self, table_id: str) -> list[_Listed]:
        out: list[_Listed] = []
        page_token = ""
        while True:
            builder = (
                ListAppTableViewRequest.builder()
                .app_token(self.ts.app)
                .table_id(table_id)
                .page_size(VIEW_PAGE)
            )
            if page_token:
                builder = builder.page_token(page_token)
            data = self._call(table_id, "list views", self._api.app_table_view.list, builder).data
            for item in data.items or []:
                out.append(
                    _Listed(str(item.view_id), str(item.view_name or ""), str(item.view_type or ""))
                )
            if not data.has_more or not data.page_token:
                return out
            page_token = data.page_token

    def _filter_account(self, table_id: str, view_id: str, field_id: str) -> str | None:
        """The account a view's filter selects: its id when the filter is exactly ``账户ID is
        <id>``; "" when the view has no filter; None for any other filter."""
        request = (
            GetAppTableViewRequest.builder()
            .app_token(self.ts.app)
            .table_id(table_id)
            .view_id(view_id)
        )
        view = self._call(table_id, "get view", self._api.app_table_view.get, request).data.view
        prop = getattr(view, "property", None)
        flt = getattr(prop, "filter_info", None)
        conditions = list(getattr(flt, "conditions", None) or [])
        if not conditions:
            return ""
        if len(conditions) != 1:
            return None
        cond = conditions[0]
        if cond.field_id != field_id or cond.operator != "is":
            return None
        try:
            values = json.loads(cond.value or "")
        except ValueError:
            return None
        if isinstance(values, list) and len(values) == 1 and isinstance(values[0], str | int):
            return str(values[0])
        return None

    def _create_call(self, table_id: str, name: str) -> str:
        request = (
            CreateAppTableViewRequest.builder()
            .app_token(self.ts.app)
            .table_id(table_id)
            .request_body(ReqView.builder().view_name(name).view_type("grid").build())
        )
        create = self._api.app_table_view.create
        return str(
            self._write(table_id, f"create view {name!r}", create, request).data.view.view_id
        )

    def _set_filter(self, ctx: _TableWork, view_id: str, account_id: str) -> None:
        condition = (
            AppTableViewPropertyFilterInfoCondition.builder()
            .field_id(ctx.field_id)
            .operator("is")
            .value(json.dumps([account_id]))
            .build()
        )
        flt = AppTableViewPropertyFilterInfo.builder().conjunction("and").conditions([condition])
        body = PatchAppTableViewRequestBody.builder().property(
            AppTableViewProperty.builder().filter_info(flt.build()).build()
        )
        self._patch(ctx.table_id, view_id, body.build(), f"filter view {view_id} on {account_id}")

    def _rename(self, ctx: _TableWork, view_id: str, name: str) -> None:
        body = PatchAppTableViewRequestBody.builder().view_name(name).build()
        self._patch(ctx.table_id, view_id, body, f"rename view {view_id} to {name!r}")

    def _patch(self, table_id: str, view_id: str, body: Any, what: str) -> None:
        request = (
            PatchAppTableViewRequest.builder()
            .app_token(self.ts.app)
            .table_id(table_id)
            .view_id(view_id)
            .request_body(body)
        )
        self._write(table_id, what, self._api.app_table_view.patch, request)

    def _call(self, table_id: str, op: str, fn: Any, builder: Any) -> Any:
        return self.ts.caller.call(f"Bitable {op} on table {table_id}", fn, builder.build())

    def _write(self, table_id: str, op: str, fn: Any, builder: Any) -> Any:
        """Spaced like the sink's writes: a view change is a write to the table, and the
        platform takes a table's writes one at a time (1254291)."""
        gap = self.settings.bitable_write_gap
        if self._last_write is not None and gap > 0:
            wait = gap - (time.monotonic() - self._last_write)
            if wait > 0:
                time.sleep(wait)
        try:
            return self._call(table_id, op, fn, builder)
        finally:
            self._last_write = time.monotonic()


@dataclass
class _TableWork:
    table_id: str
    table_name: str
    field_id: str
    rows: dict[str, LedgerRow]
    listed: list[_Listed]
    by_account: dict[str, _Listed]
    taken: set[str]
    stopped: str = ""  # a refusal that ends the table's work (the rest would meet it too)


def _warnings(failed: Sequence[ViewLine]) -> list[str]:
    """One line per table and cause: "views of 3 accounts not made in …: why → what to do"."""
    grouped: dict[tuple[str, str, str], list[ViewLine]] = {}
    for line in failed:
        grouped.setdefault((line.table_id, line.table_name, line.note), []).append(line)
    out = []
    for (table_id, table_name, why), lines in grouped.items():
        where = f"{table_name} ({table_id})" if table_name else table_id
        who = ", ".join(v.account_name or v.account_id for v in lines[:3])
        more = f" and {len(lines) - 3} more" if len(lines) > 3 else ""
        fix = (
            "delete views nobody uses in that table, then run `adsync views`"
            if "1254101" in why
            else "run `adsync views` to try again"
        )
        out.append(f"per-account views not made in {where} for {who}{more}: {why} → {fix}")
    return collapse(out)


__all__ = ["ViewKeeper", "ViewLine", "ViewsResult"]
