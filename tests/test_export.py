"""Export: the local copy's rows as a file people open in Excel, from the command line and in
the chat (a file message), on both storage backends.

Every workbook here is opened back with openpyxl (the library that wrote it) and compared with
the local copy read straight from the database, not with what the exporter thought it wrote."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import requests
from sqlalchemy import select

from .conftest import FEISHU_APP_ID, FEISHU_SECRET, InProcessCli, Sandbox
from .test_bot import ENCRYPT_KEY, VERIFY_TOKEN, BotServer, card_text, messages, say

ACCOUNT_A = "1700000000000123"  # 16 digits, as Ocean Engine's local accounts
ACCOUNT_B = "1700000000000456"
# Ids above 2^53: as a float they would end in different digits.
PROJECT = "7412345678901234567"
UNIT_1 = "7498765432109876543"
UNIT_2 = "7498765432109876549"
HEADERS = [
    "日期",
    "账户ID",
    "账户名称",
    "项目ID",
    "项目名称",
    "单元ID",
    "单元名称",
    "消耗(元)",
    "展示数",
    "点击数",
    "转化数",
    "转化成本(元)",
    "团购线索数",
    "同步键",
    "同步时间",
]


def months_back(today: date, n: int) -> date:
    """The first day of the month ``n`` months before ``today``'s."""
    year, month = divmod(today.year * 12 + today.month - 1 - n, 12)
    return date(year, month + 1, 1)


def seed(store: Any, first_day: date, days: int = 3) -> None:
    """Rows in the local copy: two accounts (names alike: 门店 东区 / 门店 西区), two units, a
    name that looks like a formula, a day without conversions (empty cost per conversion)."""
    from adsync.sync import localcopy
    from adsync.sync.reports import ReportRow

    rows = []
    for i in range(days):
        day = first_day + timedelta(days=i)
        rows.append(
            ReportRow(
                day,
                ACCOUNT_A,
                "门店 东区",
                PROJECT,
                "春季推广",
                UNIT_1,
                "=HYPERLINK(1)",
                Decimal("123.45") + i,
                1000 + i,
                50,
                3 if i else 0,
                1,
            )  # fmt: skip
        )
        rows.append(
            ReportRow(
                day,
                ACCOUNT_B,
                "门店 西区",
                PROJECT,
                "春季推广",
                UNIT_2,
                "单元 二",
                Decimal("0.05"),
                7,
                1,
                1,
                0,
            )  # fmt: skip
        )
    localcopy.save(store, rows, None)


def local_copy(store: Any, start: date, end: date) -> list[Any]:
    """The rows as stored, read without the exporter."""
    from adsync.sync.store import report_rows

    query = (
        select(report_rows)
        .where(report_rows.c.stat_date >= start, report_rows.c.stat_date <= end)
        .order_by(report_rows.c.stat_date, report_rows.c.account_id, report_rows.c.promotion_id)
    )
    with store.engine.connect() as conn:
        return conn.execute(query).all()


def cents(value: float) -> int:
    return int((Decimal(str(value)) * 100).to_integral_value(ROUND_HALF_UP))


def check_sheet(ws: Any, stored: list[Any]) -> None:
    """Every row of ``ws`` is the stored row in the Bitable's types, then a totals row."""
    rows = list(ws.iter_rows())
    assert [c.value for c in rows[0]] == HEADERS
    body, totals = rows[1:-1], rows[-1]
    assert len(body) == len(stored)
    for cells, r in zip(body, stored, strict=True):
        by = dict(zip(HEADERS, cells, strict=True))
        assert by["日期"].value.date() == r.stat_date and by["日期"].is_date
        for name, want in (("账户ID", r.account_id), ("项目ID", r.project_id),
                           ("单元ID", r.promotion_id)):  # fmt: skip
            assert by[name].data_type == "s" and by[name].value == want  # every digit, as text
        assert by["单元名称"].data_type == "s" and by["单元名称"].value == r.promotion_name
        assert by["消耗(元)"].number_format == "0.00"
        assert cents(by["消耗(元)"].value) == r.cost_cents
        assert by["展示数"].value == r.show_cnt and by["转化数"].value == r.convert_cnt
        if r.convert_cnt:
            per = (Decimal(r.cost_cents) / 100 / r.convert_cnt).quantize(
                Decimal("0.01"), ROUND_HALF_UP
            )
            assert Decimal(str(by["转化成本(元)"].value)) == per
        else:
            assert by["转化成本(元)"].value is None  # empty, as in the Bitable
        assert by["同步键"].value == f"{r.stat_date}|{r.account_id}|{r.promotion_id}"
        assert isinstance(by["同步时间"].value, datetime)
    total = dict(zip(HEADERS, (c.value for c in totals), strict=True))
    assert total["日期"] == "合计" and total["账户ID"] is None
    assert cents(total["消耗(元)"]) == sum(r.cost_cents for r in stored)
    for name, key in (("展示数", "show_cnt"), ("点击数", "click_cnt"), ("转化数", "convert_cnt"),
                      ("团购线索数", "clue_cnt")):  # fmt: skip
        assert total[name] == sum(getattr(r, key) for r in stored)
    conversions = sum(r.convert_cnt for r in stored)
    per = (Decimal(sum(r.cost_cents for r in stored)) / 100 / conversions).quantize(
        Decimal("0.01"), ROUND_HALF_UP
    )
    assert Decimal(str(total["转化成本(元)"])) == per  # from the sums, not a sum of ratios


@pytest.fixture
def today(settings: Any) -> date:
    return datetime.now(settings.tz).date()


# -- the command line -----------------------------------------------------------------------


def test_a_month_exported_opens_back_with_the_local_copys_rows_and_totals(
    services: Any, env: dict[str, str], cli: InProcessCli, tmp_path: Path, today: date
) -> None:
    month = months_back(today, 1)
    seed(services.store, month, days=4)
    seed(services.store, month - timedelta(days=2), days=2)  # the month before: not in it
    done = cli(["export", f"{month:%Y-%m}"], env)
    assert done.returncode == 0, done.stderr
    path = tmp_path / f"adsync-export-{month:%Y-%m}.xlsx"
    assert str(path.name) in done.stdout and "8 rows" in done.stdout
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == [f"{month:%Y-%m}"]
    end = months_back(today, 0) - timedelta(days=1)
    stored = local_copy(services.store, month, end)
    assert len(stored) == 8
    check_sheet(book.active, stored)

    # The same export as csv: UTF-8 with a BOM, the same rows as text, one totals line.
    done = cli(["export", f"{month:%Y-%m}", "--format", "csv", "--json"], env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    raw = Path(doc["path"]).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    lines = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert lines[0] == HEADERS and len(lines) == 1 + 8 + 1
    for line, r in zip(lines[1:-1], stored, strict=True):
        # A name Excel would run as a formula is text behind an apostrophe (CSV injection).
        name = "'" + r.promotion_name if r.promotion_name.startswith("=") else r.promotion_name
        assert line[:7] == [str(r.stat_date), r.account_id, r.account_name, r.project_id,
                            r.project_name, r.promotion_id, name]  # fmt: skip
        assert line[7] == f"{Decimal(r.cost_cents) / 100:.2f}"
    assert "'=HYPERLINK(1)" in [line[6] for line in lines]
    assert lines[-1][0] == "合计"
    assert lines[-1][7] == f"{Decimal(sum(r.cost_cents for r in stored)) / 100:.2f}"
    assert doc["rows"] == 8 and doc["accounts"] == 2


def test_a_range_of_two_months_makes_two_sheets_and_an_account_filters(
    services: Any, env: dict[str, str], cli: InProcessCli, tmp_path: Path, today: date
) -> None:
    first, second = months_back(today, 2), months_back(today, 1)
    seed(services.store, first + timedelta(days=20), days=2)
    seed(services.store, second, days=2)
    out = tmp_path / "out"
    out.mkdir()
    done = cli(["export", f"{first:%Y-%m}..{second:%Y-%m}", "--output", str(out)], env)
    assert done.returncode == 0, done.stderr
    (path,) = out.iterdir()
    assert path.name == f"adsync-export-{first:%Y-%m}_{second:%Y-%m}.xlsx"
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == [f"{first:%Y-%m}", f"{second:%Y-%m}"]
    check_sheet(book[f"{first:%Y-%m}"], local_copy(services.store, first, second - timedelta(1)))
    check_sheet(book[f"{second:%Y-%m}"], local_copy(services.store, second, second + timedelta(27)))

    # One account, by part of its name: only its rows.
    single = tmp_path / "east.xlsx"
    done = cli(["export", f"{second:%Y-%m}", "--account", "东区", "--output", str(single)], env)
    assert done.returncode == 0, done.stderr
    rows = list(openpyxl.load_workbook(single).active.iter_rows(min_row=2, values_only=True))
    assert {r[1] for r in rows[:-1]} == {ACCOUNT_A} and len(rows) == 2 + 1

    # A name part both accounts share: which ones, and nothing written.
    done = cli(["export", f"{second:%Y-%m}", "--account", "门店", "--output", "x.xlsx"], env)
    assert done.returncode == 2
    assert ACCOUNT_A in done.stderr and ACCOUNT_B in done.stderr
    assert not (tmp_path / "x.xlsx").exists()


def test_bad_input_gets_a_clear_answer_and_writes_nothing(
    services: Any, env: dict[str, str], cli: InProcessCli, tmp_path: Path, today: date
) -> None:
    month = months_back(today, 1)
    seed(services.store, month, days=1)

    def files() -> set[str]:  # what an export could leave (the database's own files aside)
        return {p.name for p in tmp_path.rglob("*") if p.suffix in (".xlsx", ".csv", ".tmp")}

    before = files()

    done = cli(["export", "2026-13"], env)
    assert done.returncode == 2 and "no month" in done.stderr
    done = cli(["export", f"{month:%Y-%m}", "--account", "nobody"], env)
    assert done.returncode == 2 and "no account" in done.stderr and ACCOUNT_A in done.stderr
    empty = months_back(today, 5)
    done = cli(["export", f"{empty:%Y-%m}"], env)
    assert done.returncode == 1 and "no rows in the local copy" in done.stderr
    assert "adsync sync" in done.stderr
    done = cli(["export", f"{month:%Y-%m}", "--format", "csv", "--output", "a.xlsx"], env)
    assert done.returncode == 2 and "--format csv" in done.stderr
    done = cli(["export", f"{month:%Y-%m}", "--output", str(tmp_path / "missing" / "a.xlsx")], env)
    assert done.returncode == 2 and "cannot write" in done.stderr
    assert files() == before  # nothing, not even a temporary file

    existing = tmp_path / "report.xlsx"
    existing.write_bytes(b"someone's work")
    done = cli(["export", f"{month:%Y-%m}", "--output", str(existing)], env)
    assert done.returncode == 2 and "already exists" in done.stderr and "--force" in done.stderr
    assert existing.read_bytes() == b"someone's work"
    done = cli(["export", f"{month:%Y-%m}", "--output", str(existing), "--force"], env)
    assert done.returncode == 0
    assert openpyxl.load_workbook(existing).sheetnames == [f"{month:%Y-%m}"]
    assert files() == {"report.xlsx"}


def test_an_export_after_a_real_sync_holds_what_the_bitable_holds(
    authorized: Any, env: dict[str, str], cli: InProcessCli, sandbox: Sandbox, today: date
) -> None:
    from adsync.sync.runner import Runner

    day = today - timedelta(days=1)
    assert Runner(authorized).run(day, day).status == "ok"
    done = cli(["export", str(day), "--format", "csv", "--json"], env)
    assert done.returncode == 0, done.stderr
    raw = Path(json.loads(done.stdout)["path"]).read_text(encoding="utf-8-sig")
    exported = list(csv.DictReader(io.StringIO(raw)))[:-1]
    table = sandbox.get("/_sandbox/feishu/tables/bascnSandboxApp0001/tblSandboxDaily01")
    records = {r["fields"]["同步键"]: r["fields"] for r in table["records"]}
    assert exported and len(exported) == len(records)
    for row in exported:
        held = records[row["同步键"]]
        for name in ("账户ID", "账户名称", "项目ID", "单元ID", "单元名称"):
            assert row[name] == held[name]
        assert Decimal(row["消耗(元)"]) == Decimal(str(held["消耗(元)"])).quantize(Decimal("0.01"))
        assert int(row["展示数"]) == held["展示数"] and int(row["转化数"]) == held["转化数"]


def test_the_month_grammar_of_export() -> None:
    from adsync.bot.commands import Export, UsageError, parse
    from adsync.sync.dates import DateError, parse_period

    today = date(2026, 3, 10)
    assert parse_period("", today) == (date(2026, 2, 1), date(2026, 2, 28))  # last month
    assert parse_period("2026-02", today) == (date(2026, 2, 1), date(2026, 2, 28))
    assert parse_period("2026年2月", today) == (date(2026, 2, 1), date(2026, 2, 28))
    assert parse_period("12月", today) == (date(2025, 12, 1), date(2025, 12, 31))
    assert parse_period("this month", today) == (date(2026, 3, 1), today)  # so far
    assert parse_period("1月至3月", today) == (date(2026, 1, 1), today)
    assert parse_period("2025年11月至2月", today) == (date(2025, 11, 1), date(2026, 2, 28))
    assert parse_period("2月1日至7日", today) == (date(2026, 2, 1), date(2026, 2, 7))  # days
    for bad in ("2026-13", "2026-04", "2024-01..2026-02", "soon"):
        with pytest.raises(DateError):
            parse_period(bad, today)
    command = parse("@adsync 导出 2月的数据 门店 东区", today)
    assert command == Export(date(2026, 2, 1), date(2026, 2, 28), "门店 东区", lang="zh")
    assert parse("export feb", today).lang == "en" and not parse("export", today).mutating
    with pytest.raises(UsageError, match="月"):
        parse("导出 13月", today)


# -- the chat ---------------------------------------------------------------------------------


@pytest.fixture
def server(env: dict[str, str], authorized: Any, tmp_path: Path) -> Iterator[BotServer]:
    from adsync.bot.app import create_app
    from adsync.sync.config import load_settings

    settings = load_settings(
        {**env, "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY, "FEISHU_VERIFICATION_TOKEN": VERIFY_TOKEN},
        cwd=tmp_path,
    )
    srv = BotServer(create_app(settings))
    yield srv
    srv.stop()
    srv.bot.actions.services.close()


def test_chat_export_posts_the_workbook_as_a_file_message(
    server: BotServer, sandbox: Sandbox, today: date
) -> None:
    store = server.bot.actions.services.store
    month = months_back(today, 1)
    seed(store, month, days=3)
    assert server.post_event(say(sandbox, f"导出 {month.month}月")).status_code == 200
    server.idle()
    posted = messages(sandbox)
    files = [m for m in posted if m["msg_type"] == "file"]
    assert len(files) == 1, posted
    meta = files[0]["file"]
    assert meta["file_name"] == f"adsync-export-{month:%Y-%m}.xlsx" and meta["file_type"] == "xls"
    data = requests.get(f"{sandbox.url}/_sandbox/feishu/files/{meta['file_key']}", timeout=10)
    assert len(data.content) == meta["size"] > 0
    book = openpyxl.load_workbook(io.BytesIO(data.content))
    assert book.sheetnames == [f"{month:%Y-%m}"]
    check_sheet(book.active, local_copy(store, month, month + timedelta(days=27)))
    # The "working" card became the one-line summary, in Chinese.
    summary = [m for m in posted if m["msg_type"] == "interactive"]
    assert len(summary) == 1 and summary[0]["versions"][-1]["via"] == "patch"
    text = card_text(summary[0]["content"])
    assert "6 行" in text and "2 个账户" in text and "¥" in text

    # A month without rows: a clear answer, no file.
    empty = months_back(today, 4)
    server.post_event(say(sandbox, f"export {empty:%Y-%m}"))
    server.idle()
    latest = messages(sandbox)[-1]
    assert latest["msg_type"] == "interactive" and "no rows" in card_text(latest["content"])
    assert len([m for m in messages(sandbox) if m["msg_type"] == "file"]) == 1


def test_an_upload_the_platform_refuses_ends_in_a_card_saying_what_to_do(
    server: BotServer, sandbox: Sandbox, today: date
) -> None:
    store = server.bot.actions.services.store
    month = months_back(today, 1)
    seed(store, month, days=1)
    # The app lacks the permission to upload (99991672): not worth retrying, said in words.
    sandbox.faults(feishu={"scripted": [{"path": "im/v1/files", "code": 99991672, "times": 5}]})
    server.post_event(say(sandbox, f"export {month:%Y-%m}"))
    server.idle()
    sandbox.faults(feishu={})
    posted = messages(sandbox)
    assert [m["msg_type"] for m in posted] == ["interactive"]
    text = card_text(posted[0]["content"])
    assert "Could not post the export" in text and "im:resource" in text
    assert f"adsync export {month:%Y-%m}" in text
    assert "Traceback" not in text and "FeishuError" not in text


# -- the sandbox's upload --------------------------------------------------------------------


def test_the_sandbox_upload_is_as_strict_as_the_platform(sandbox: Sandbox) -> None:
    token = requests.post(
        f"{sandbox.url}/open-apis/auth/v3/tenant_access_token/internal",
        json={"app_id": FEISHU_APP_ID, "app_secret": FEISHU_SECRET},
        timeout=5,
    ).json()["tenant_access_token"]
    url = f"{sandbox.url}/open-apis/im/v1/files"

    def upload(content: bytes, file_type: str = "xls", auth: bool = True) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if auth else {}
        form = {"file_type": (None, file_type), "file_name": (None, "a.xlsx"), "file": content}
        return requests.post(url, files=form, headers=headers, timeout=30).json()

    assert upload(b"x", auth=False)["code"] == 99991661
    assert upload(b"")["code"] == 234010
    assert upload(b"x", file_type="xlsx")["code"] == 234001
    assert upload(b"\0" * (30 * 1024 * 1024 + 1))["code"] == 234006
    body = bytes(range(256)) * 10  # every byte value, CRLFs included, back untouched
    key = upload(body)["data"]["file_key"]
    assert requests.get(f"{sandbox.url}/_sandbox/feishu/files/{key}", timeout=5).content == body

    send = f"{sandbox.url}/open-apis/im/v1/messages?receive_id_type=chat_id"
    headers = {"Authorization": f"Bearer {token}"}
    for file_key, code in (("file_v3_unknown", 230001), (key, 0)):
        message = {"receive_id": "oc_sandbox_reports", "msg_type": "file",
                   "content": json.dumps({"file_key": file_key})}  # fmt: skip
        assert requests.post(send, json=message, headers=headers, timeout=5).json()["code"] == code


def test_a_file_over_feishus_30_mb_is_refused_before_it_travels(
    settings: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    from adsync.bot import cards
    from adsync.bot.messenger import FileNotPostable, Messenger

    big = tmp_path / "big.xlsx"
    big.write_bytes(b"\0" * (30 * 1024 * 1024 + 1))
    with pytest.raises(FileNotPostable, match="30 MB"):
        Messenger(settings).upload_file(big, "xls")
    assert "POST /open-apis/im/v1/files" not in sandbox.stats("feishu")["calls"]
    text = cards.to_text(cards.export_failed_card("2026-02", "zh", too_large=True))
    assert "30 MB" in text and "按账户" in text and "adsync export 2026-02" in text


def test_the_terminals_export_writes_to_the_current_directory(
    services: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, today: date
) -> None:
    from adsync.bot.actions import Actions
    from adsync.bot.console import Console

    month = months_back(today, 1)
    seed(services.store, month, days=2)
    monkeypatch.chdir(tmp_path)
    console = Console(Actions(services), io.StringIO())
    answer = console.answer(f"export {month:%Y-%m}")
    path = tmp_path / f"adsync-export-{month:%Y-%m}.xlsx"
    assert str(path) in answer and "4 rows" in answer
    assert openpyxl.load_workbook(path).sheetnames == [f"{month:%Y-%m}"]
    again = console.answer(f"export {month:%Y-%m}")
    assert "already exists" in again  # never over the file already there
