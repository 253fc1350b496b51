"""Rows of the local copy to a file: xlsx (one sheet per month) or csv.

The rows are the local copy's (``report_rows``): the rows the Bitable holds, readable when the
Bitable is not. Column names are the Bitable's field names (``columns.COLUMNS``, renamed by
``ADSYNC_BITABLE_FIELDS`` when an existing table uses other names), so a sheet reads like the
table. Cells keep the Bitable's types: ids and names text (a 19-digit id is above 2^53: as a
number it would lose digits), money numbers with two decimals (rounded half up from the cents
the local copy keeps), counts numbers, 日期 a date, 同步时间 a date-time in ADSYNC_TIMEZONE.

Every sheet (and the csv) ends in a totals row: money and counts summed; 转化成本(元), the one
ratio column, recomputed from the sums (total spend / total conversions), never summed.

openpyxl writes the xlsx (imported only here, only when an xlsx is written); the csv is the
stdlib's, UTF-8 with a byte-order mark so Excel opens 中文 names correctly. A file is written
beside its destination and moved into place: no half-written file at the path, and an existing
file is never replaced unless asked (``force``).
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from sqlalchemy import select

from adsync.sync.columns import COLUMNS
from adsync.sync.dates import period_label
from adsync.sync.errors import AdsyncError, ConfigError
from adsync.sync.localcopy import to_row
from adsync.sync.reports import ReportRow, cost_per, row_values
from adsync.sync.store import Store, accounts, report_rows

FORMATS = ("xlsx", "csv")
MONEY_KEYS = frozenset({"cost", "conversion_cost"})
COUNT_KEYS = ("show_cnt", "click_cnt", "convert_cnt", "clue_cnt")
TOTAL_LABEL = "合计"
# Excel's own limits (support.microsoft.com "Excel specifications and limits").
XLSX_MAX_ROWS = 1_048_576
XLSX_MAX_CELL_CHARS = 32_767


class NothingToExport(AdsyncError):
    """No rows in the local copy for the dates (and account) asked: no file is written.
    Exit 1 (as "rows not synced"): a script waiting for a file must not take it as done."""

    exit_code = 1


@dataclass(frozen=True)
class Totals:
    rows: int = 0
    cost: Decimal = Decimal("0.00")
    show_cnt: int = 0
    click_cnt: int = 0
    convert_cnt: int = 0
    clue_cnt: int = 0

    @property
    def conversion_cost(self) -> Decimal | None:
        return cost_per(self.cost, self.convert_cnt)

    def add(self, row: ReportRow) -> Totals:
        return Totals(
            self.rows + 1,
            self.cost + row.cost,
            self.show_cnt + row.show_cnt,
            self.click_cnt + row.click_cnt,
            self.convert_cnt + row.convert_cnt,
            self.clue_cnt + row.clue_cnt,
        )


@dataclass(frozen=True)
class Line:
    """One local-copy row and when it was last synced."""

    row: ReportRow
    synced_at: datetime


@dataclass(frozen=True)
class Sheet:
    name: str  # "2026-02": the month it holds
    lines: tuple[Line, ...]
    totals: Totals


@dataclass(frozen=True)
class Export:
    """What an export holds, before it is written (one object rendered as xlsx, csv, a card)."""

    start: date
    end: date
    headers: tuple[str, ...]  # the Bitable's field names, in COLUMNS order
    sheets: tuple[Sheet, ...]
    tz: ZoneInfo
    account: tuple[str, str] | None = None  # (id, name) when one account was asked for
    totals: Totals = field(default_factory=Totals)

    @property
    def label(self) -> str:
        return period_label(self.start, self.end)

    @property
    def rows(self) -> int:
        return self.totals.rows

    @property
    def account_count(self) -> int:
        return len({line.row.account_id for s in self.sheets for line in s.lines})

    def default_name(self, fmt: str) -> str:
        label = self.label.replace("..", "_")
        suffix = f"-{self.account[0]}" if self.account else ""
        return f"adsync-export-{label}{suffix}.{fmt}"

    def to_json(self) -> dict[str, Any]:
        t = self.totals
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "label": self.label,
            "account": list(self.account) if self.account else None,
            "rows": t.rows,
            "accounts": self.account_count,
            "sheets": [{"name": s.name, "rows": s.totals.rows} for s in self.sheets],
            "totals": {
                "cost": f"{t.cost:.2f}",
                "show_cnt": t.show_cnt,
                "click_cnt": t.click_cnt,
                "convert_cnt": t.convert_cnt,
                "conversion_cost": None if t.conversion_cost is None else f"{t.conversion_cost}",
                "clue_cnt": t.clue_cnt,
            },
        }


@dataclass(frozen=True)
class Written:
    path: Path
    format: str
    bytes: int


# -- reading -------------------------------------------------------------------------------------


def field_names(mapping: Sequence[tuple[str, str]] = ()) -> tuple[str, ...]:
    """The Bitable's column names: the defaults, renamed by ADSYNC_BITABLE_FIELDS."""
    renamed = dict(mapping)
    return tuple(renamed.get(c.name, c.name) for c in COLUMNS)


def known_accounts(store: Store, start: date, end: date) -> list[tuple[str, str]]:
    """(id, name) of every account an ``--account`` may name: those adsync knows (in scope or
    not: an account no longer granted still has its rows) and those with rows in the range."""
    names: dict[str, str] = {}
    known = select(accounts.c.account_id, accounts.c.name)
    in_range = (
        select(report_rows.c.account_id, report_rows.c.account_name)
        .where(report_rows.c.stat_date >= start, report_rows.c.stat_date <= end)
        .distinct()
    )

    def read(conn: Any) -> tuple[list[Any], list[Any]]:
        return conn.execute(known).all(), conn.execute(in_range).all()

    stored, found = store.read(read)
    for account_id, name in found:
        names[account_id] = names.get(account_id) or name or ""
    for account_id, name in stored:
        names[account_id] = name or names.get(account_id, "")
    return sorted(names.items())


def collect(
    store: Store,
    start: date,
    end: date,
    *,
    tz: ZoneInfo,
    account: tuple[str, str] | None = None,
    mapping: Sequence[tuple[str, str]] = (),
) -> Export:
    """The local copy's rows of ``start..end`` (one account's if given), a sheet per month.
    Raises NothingToExport when there are none."""
    query = select(report_rows).where(
        report_rows.c.stat_date >= start, report_rows.c.stat_date <= end
    )
    if account is not None:
        query = query.where(report_rows.c.account_id == account[0])
    query = query.order_by(
        report_rows.c.stat_date, report_rows.c.account_id, report_rows.c.promotion_id
    )
    found = store.read(lambda conn: conn.execute(query).all())
    if not found:
        who = f" for {account[1] or account[0]}" if account else ""
        label = period_label(start, end)
        raise NothingToExport(
            f"no rows in the local copy for {label}{who}: nothing to export, no file written",
            hint=f"`adsync sync {start}..{end}` fetches them (`adsync history` shows what ran)",
        )
    months: dict[str, list[Line]] = {}
    cursor = date(start.year, start.month, 1)
    while cursor <= end:  # every month of the range has its sheet, rows or not
        months[f"{cursor:%Y-%m}"] = []
        cursor = date(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 1)
    for r in found:
        row = to_row(r)
        months[f"{row.stat_date:%Y-%m}"].append(Line(row, r.synced_at))
    sheets = []
    overall = Totals()
    for name, lines in months.items():
        totals = Totals()
        for line in lines:
            totals = totals.add(line.row)
            overall = overall.add(line.row)
        sheets.append(Sheet(name, tuple(lines), totals))
    return Export(start, end, field_names(mapping), tuple(sheets), tz, account, overall)


# -- cells -------------------------------------------------------------------------------------


def _values(line: Line, tz: ZoneInfo) -> list[Any]:
    """A row's cells in COLUMNS order, typed as the Bitable types them."""
    by_key = row_values(line.row)
    # Excel has no time zones: the business zone's wall clock, as the Bitable shows it.
    by_key["synced_at"] = line.synced_at.astimezone(tz).replace(tzinfo=None, microsecond=0)
    return [by_key[c.key] for c in COLUMNS]


def _total_values(totals: Totals) -> list[Any]:
    by_key: dict[str, Any] = {
        "date": TOTAL_LABEL,
        "cost": totals.cost,
        "show_cnt": totals.show_cnt,
        "click_cnt": totals.click_cnt,
        "convert_cnt": totals.convert_cnt,
        "conversion_cost": totals.conversion_cost,  # from the sums, not a sum of ratios
        "clue_cnt": totals.clue_cnt,
    }
    return [by_key.get(c.key) for c in COLUMNS]


# -- writing -------------------------------------------------------------------------------------


def write(export: Export, fmt: str, path: Path, *, force: bool = False) -> Written:
    """Write ``export`` as ``fmt`` to ``path`` (a directory: its default name inside).

    The file is written beside its destination under a hidden temporary name, then linked into
    place, which fails if something is there (``force``: replaced). ConfigError (exit 2) for a
    path that exists or cannot be written, naming it and what to do."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", hint="use xlsx or csv")
    if path.is_dir():
        path = path / export.default_name(fmt)
    if path.exists() and not force:
        raise ConfigError(
            f"{path} already exists; nothing was written",
            hint="choose another --output, or add --force to replace it",
        )
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # Opened here, before the writer starts: a path that cannot be written fails first.
        with open(temporary, "xb") as out:
            if fmt == "xlsx":
                _write_xlsx(export, out)
            else:
                _write_csv(export, out)
        _place(temporary, path, force)
    except FileExistsError:
        raise ConfigError(
            f"{path} appeared while the export was written; nothing was replaced",
            hint="choose another --output, or add --force to replace it",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror or type(exc).__name__}",
            hint="choose a directory you may write to (--output PATH)",
        ) from None
    finally:
        temporary.unlink(missing_ok=True)
    return Written(path, fmt, path.stat().st_size)


def _place(temporary: Path, path: Path, force: bool) -> None:
    if force:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # atomic, and refuses an existing path
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then move
        if path.exists():
            raise FileExistsError(str(path)) from None
        os.replace(temporary, path)


def _write_csv(export: Export, out: BinaryIO) -> None:
    # utf-8-sig: the byte-order mark is how Excel knows a csv is UTF-8 (without it 中文 names
    # open as mojibake). Values are text as stored (a formula-like one behind an apostrophe);
    # money with two decimals.
    with io.TextIOWrapper(out, encoding="utf-8-sig", newline="") as text:
        writer = csv.writer(text)
        writer.writerow(export.headers)
        for sheet in export.sheets:
            for line in sheet.lines:
                writer.writerow(_csv_cells(_values(line, export.tz)))
        writer.writerow(_csv_cells(_total_values(export.totals)))


# A text cell starting with one of these is a formula to Excel and LibreOffice when a csv opens
# (CSV injection: a promotion named "=HYPERLINK(…)" by anyone with access to an ad account). Such
# cells get a leading apostrophe, the spreadsheet convention for "this is text" (OWASP's advice).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cells(values: list[Any]) -> list[str]:
    out = []
    for value in values:
        if isinstance(value, str) and value.startswith(_FORMULA_START):
            out.append("'" + value)
            continue
        if value is None:
            out.append("")
        elif isinstance(value, Decimal):
            out.append(f"{value:.2f}")
        elif isinstance(value, datetime):
            out.append(value.strftime("%Y-%m-%d %H:%M:%S"))
        elif isinstance(value, date):
            out.append(value.isoformat())
        else:
            out.append(str(value))
    return out


def _write_xlsx(export: Export, out: BinaryIO) -> None:
    for sheet in export.sheets:
        if sheet.totals.rows + 2 > XLSX_MAX_ROWS:
            raise ConfigError(
                f"{sheet.name} has {sheet.totals.rows:,} rows, more than a sheet holds",
                hint="export it as csv (--format csv), or one account at a time (--account)",
            )
    # Imported here: only an xlsx export pays for openpyxl.
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font

    widths = {"date": 12, "sync_key": 44, "synced_at": 20}
    for key in ("account_name", "project_name", "promotion_name"):
        widths[key] = 28
    for key in ("account_id", "project_id", "promotion_id"):
        widths[key] = 22  # 19 digits, shown whole
    bold = Font(bold=True)
    keys = [c.key for c in COLUMNS]

    workbook = Workbook(write_only=True)  # streams rows: a year of rows stays small in memory
    for sheet in export.sheets:
        ws = workbook.create_sheet(sheet.name)
        ws.freeze_panes = "A2"
        for index, key in enumerate(keys):
            ws.column_dimensions[_column_letter(index)].width = widths.get(key, 12)

        # Plain values where openpyxl types them right (text, counts, and dates, which it gives
        # yyyy-mm-dd / yyyy-mm-dd h:mm:ss); a styled cell only where one is needed: money,
        # the bold header and totals, text that openpyxl would take for a formula. Per-cell
        # objects are much of the writing time (20,000 rows: a fifth less CPU this way).
        def cell(value: Any, font: Any = None, ws: Any = ws) -> Any:
            if isinstance(value, str):
                # Control characters (which the format cannot hold) are dropped.
                value = ILLEGAL_CHARACTERS_RE.sub("", value)[:XLSX_MAX_CELL_CHARS]
                if font is None and not value.startswith("="):
                    return value
                c = WriteOnlyCell(ws, value=value)
                c.data_type = "s"  # "=HYPERLINK(…)" as a name stays a name
            elif isinstance(value, Decimal):
                c = WriteOnlyCell(ws, value=float(value))  # already to the cent, half up
                c.number_format = "0.00"
            elif font is None:
                return value
            else:
                c = WriteOnlyCell(ws, value=value)
            if font is not None:
                c.font = font
            return c

        ws.append([cell(name, bold) for name in export.headers])
        for line in sheet.lines:
            ws.append([cell(v) for v in _values(line, export.tz)])
        ws.append([cell(v, bold) for v in _total_values(sheet.totals)])
    workbook.save(out)


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters
