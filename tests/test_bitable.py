"""The Bitable sink against the real sandbox process, over HTTP, through lark-oapi.

What the table holds is read back through the sandbox's raw dump (write format, no SDK in the
way), so ids, money and dates are checked exactly as stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from adsync.sync.bitable import BitableSink, CapacityError, row_values
from adsync.sync.columns import COLUMNS, DATE, NUMBER, TEXT
from adsync.sync.config import Settings, load_settings
from adsync.sync.errors import ConfigError
from adsync.sync.feishu import FeishuCaller, FeishuError, make_client
from adsync.sync.reports import ReportRow
from tests.conftest import FEISHU_APP_ID, FEISHU_SECRET, Sandbox, report

APP = "bascnSandboxApp0001"
TABLE = "tblSandboxDaily01"
LEGACY = "tblLegacyDaily01"
ACCOUNT = ("7604686719380537359", "北京朝阳店")
OTHER = ("7604686719380537360", "上海静安店")
DAY = date(2026, 2, 11)
DAY_MS = 1770739200000  # 2026-02-11 00:00 Asia/Shanghai
SYNCED = datetime(2026, 2, 12, 7, 0, tzinfo=UTC)
ROUTE = "POST /open-apis/bitable/v1/apps/<app_token>/tables/<table_id>"
FAULT_CODES = [1254291, 1254607, 1254290, 1255040]
ZONE = ZoneInfo("Asia/Shanghai")


# -- helpers ------------------------------------------------------------------------------------


def make_settings(sandbox: Sandbox, tmp_path: Path, **extra: str) -> Settings:
    env = {
        "FEISHU_APP_ID": FEISHU_APP_ID,
        "FEISHU_APP_SECRET": FEISHU_SECRET,
        "FEISHU_DOMAIN": sandbox.url,
        "FEISHU_BITABLE_APP_TOKEN": APP,
        "FEISHU_BITABLE_TABLE_ID": TABLE,
        "ADSYNC_HTTP_TIMEOUT": "10",
        **extra,
    }
    return load_settings(env, cwd=tmp_path)


def make_sink(settings: Settings, attempts: int = 6, **kwargs: Any) -> BitableSink:
    caller = FeishuCaller(make_client(settings), attempts=attempts, base_delay=0.01)
    return BitableSink(settings, caller, write_gap=kwargs.pop("write_gap", 0), **kwargs)


def make_rows(
    n: int, day: date = DAY, account: tuple[str, str] = ACCOUNT, start: int = 0
) -> list[ReportRow]:
    """``n`` promotion rows with 19-digit ids, Chinese names and awkward amounts."""
    return [
        ReportRow(
            stat_date=day,
            account_id=account[0],
            account_name=account[1],
            project_id=str(7604686719380000000 + i // 10),
            project_name=f"春季团购项目{i // 10}",
            promotion_id=str(7604686719380600000 + i),
            promotion_name=f"单元{i}·到店套餐",
            cost=Decimal(i * 1373 % 1_000_000) / 100,  # 0.00 .. 9999.99
            show_cnt=1000 + 7 * i,
            click_cnt=3 * i % 500,
            convert_cnt=i % 4,  # every fourth row has no conversions: an empty cost cell
            clue_cnt=i % 3,
        )
        for i in range(start, start + n)
    ]


def dump(sandbox: Sandbox, table: str = TABLE) -> dict[str, Any]:
    return sandbox.get(f"/_sandbox/feishu/tables/{APP}/{table}")


def records_by_key(sandbox: Sandbox, table: str = TABLE) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in dump(sandbox, table)["records"]:
        out.setdefault(record["fields"].get("同步键", ""), []).append(record)
    return out


def expected_fields(row: ReportRow) -> dict[str, Any]:
    """The row as the contract layout stores it (empty cells absent)."""
    fields: dict[str, Any] = {
        "日期": day_ms(row.stat_date),
        "账户ID": row.account_id,
        "账户名称": row.account_name,
        "项目ID": row.project_id,
        "项目名称": row.project_name,
        "单元ID": row.promotion_id,
        "单元名称": row.promotion_name,
        "消耗(元)": float(row.cost),
        "展示数": row.show_cnt,
        "点击数": row.click_cnt,
        "转化数": row.convert_cnt,
        "团购线索数": row.clue_cnt,
        "同步键": row.sync_key,
    }
    if row.conversion_cost is not None:
        fields["转化成本(元)"] = float(row.conversion_cost)
    return {k: v for k, v in fields.items() if v != ""}


def day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=ZONE).timestamp() * 1000)


def assert_exact(sandbox: Sandbox, rows: list[ReportRow], table: str = TABLE) -> None:
    """Exactly one record per row, every value as the row says (money to the cent)."""
    stored = {k: v for k, v in records_by_key(sandbox, table).items() if k}
    wanted = {r.sync_key: r for r in rows}
    assert sorted(stored) == sorted(wanted)
    for key, row in wanted.items():
        assert len(stored[key]) == 1, f"{key} stored {len(stored[key])} times"
        fields = dict(stored[key][0]["fields"])
        assert isinstance(fields.pop("同步时间"), int)
        assert fields == expected_fields(row)
        assert Decimal(str(fields["消耗(元)"])) == row.cost


def calls(sandbox: Sandbox, op: str) -> int:
    return int(sandbox.stats("feishu")["calls"].get(f"{ROUTE}/{op}", 0))


def with_cost(row: ReportRow, cost: str, convert: int | None = None) -> ReportRow:
    values = dict(row.__dict__, cost=Decimal(cost))
    if convert is not None:
        values["convert_cnt"] = convert
    return ReportRow(**values)


@pytest.fixture
def settings_(sandbox: Sandbox, tmp_path: Path) -> Settings:
    return make_settings(sandbox, tmp_path)


@pytest.fixture
def sink(settings_: Settings) -> BitableSink:
    return make_sink(settings_)


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    report(f"bitable {request.node.name}: {time.monotonic() - started:.2f}s")


# -- layout -------------------------------------------------------------------------------------


def test_prepare_creates_contract_fields_once(sandbox: Sandbox, sink: BitableSink) -> None:
    layout = sink.prepare()
    assert layout.created == tuple(c.name for c in COLUMNS)
    assert not any(c.text_typed for c in layout.columns)
    fields = {f["field_name"]: f for f in dump(sandbox)["fields"]}
    for col in COLUMNS:
        assert fields[col.name]["type"] == col.type
        if col.type == NUMBER:
            assert fields[col.name]["property"]["formatter"] == col.formatter
        if col.type == DATE:
            assert fields[col.name]["property"]["date_formatter"] == col.formatter
    assert fields["消耗(元)"]["property"]["formatter"] == "0.00"
    assert fields["同步时间"]["property"]["date_formatter"] == "yyyy/MM/dd HH:mm"

    again = make_sink(sink.settings).prepare()
    assert again.created == ()
    assert [c.field_id for c in again.columns] == [c.field_id for c in layout.columns]
    assert calls(sandbox, "fields") == len(COLUMNS)  # created once, not twice

    infos = {i.name: i for i in sink.fields()}
    assert infos["文本"].column is None  # the table's own primary field serves nothing
    assert infos["账户ID"].column == "account_id" and infos["账户ID"].type == TEXT
    assert infos["日期"].field_id == layout["date"].field_id


def test_mapped_name_that_does_not_exist_is_a_clear_error(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = make_settings(sandbox, tmp_path, ADSYNC_BITABLE_FIELDS="日期=时间,账户名称=账户")
    with pytest.raises(ConfigError) as caught:
        make_sink(settings).prepare()
    text = str(caught.value)
    assert "'时间'" in text and "'账户'" in text and TABLE in text
    assert "文本" in text  # the hint lists the fields that do exist
    assert APP not in text  # the app_token is shown masked at most
    assert calls(sandbox, "fields") == 0  # nothing created on a bad mapping


def test_platform_errors_name_the_table_and_operation(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = make_settings(sandbox, tmp_path, FEISHU_BITABLE_TABLE_ID="tblNoSuchTable")
    with pytest.raises(FeishuError) as caught:
        make_sink(settings).prepare()
    text = str(caught.value)
    assert caught.value.code == 1254041
    assert "list fields" in text and "tblNoSuchTable" in text
    assert "FEISHU_BITABLE_TABLE_ID" in text  # the hint
    assert APP not in text and FEISHU_SECRET not in text


def test_write_gap_setting(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = make_settings(sandbox, tmp_path)
    assert settings.bitable_write_gap == 0.3
    assert BitableSink(settings, FeishuCaller(make_client(settings))).write_gap == 0.3
    assert make_settings(sandbox, tmp_path, ADSYNC_BITABLE_WRITE_GAP="0").bitable_write_gap == 0
    with pytest.raises(ConfigError, match="ADSYNC_BITABLE_WRITE_GAP"):
        make_settings(sandbox, tmp_path, ADSYNC_BITABLE_WRITE_GAP="-1")
    started = time.monotonic()
    make_sink(settings, write_gap=0.02).prepare()  # 15 field creations, spaced
    assert time.monotonic() - started >= 14 * 0.02


# -- upsert -------------------------------------------------------------------------------------


def test_upsert_creates_in_chunks_then_writes_nothing(sandbox: Sandbox, sink: BitableSink) -> None:
    rows = make_rows(1200)
    sink.prepare()
    before = sink.caller.calls
    result = sink.upsert(rows, [DAY], "run1", SYNCED)
    assert (result.created, result.updated, result.deleted, result.unchanged) == (1200, 0, 0, 0)
    stats = sandbox.stats("feishu")
    assert calls(sandbox, "records/batch_create") == 2  # 1,000 + 200: the platform's limit
    assert stats["records_created"] == 1200
    # 1 count (0: an empty table is not searched), 2 creates, 1 count: it matches what was
    # created, so nobody else wrote meanwhile and the created dates are not searched again
    assert result.api_calls == sink.caller.calls - before == 4
    assert_exact(sandbox, rows)
    report(f"bitable: 1,200 rows created in {result.seconds:.2f}s, {result.api_calls} calls")

    writes = stats["writes"]
    again = sink.upsert(rows, [DAY], "run2", SYNCED + timedelta(days=1))
    assert (again.created, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 1200)
    assert sandbox.stats("feishu")["writes"] == writes  # not one write at the platform
    assert again.warnings == []
    report(
        f"bitable: 1,200 unchanged rows checked in {again.seconds:.2f}s, {again.api_calls} calls"
    )


def test_updates_take_1000_a_call_and_deletes_500(sandbox: Sandbox, sink: BitableSink) -> None:
    # The platform's per-call limits (batch_update 1,000, batch_delete 500; the sandbox answers
    # 1254104 above them): 1,100 changed rows are two updates, not three; 600 duplicates are
    # two deletes, never one call of 600.
    rows = make_rows(1100)
    sink.upsert(rows, [DAY], "run1", SYNCED)
    table = dump(sandbox)
    dups = [{"fields": dict(r["fields"])} for r in table["records"][:600]]
    sandbox.post("/_sandbox/feishu/tables", {**table, "records": table["records"] + dups})
    changed = [with_cost(r, "7.77") for r in rows]
    before = sandbox.stats("feishu")["calls"]
    result = sink.upsert(changed, [DAY], "run2", SYNCED)
    after = sandbox.stats("feishu")["calls"]

    def made(op: str) -> int:
        return after.get(f"{ROUTE}/{op}", 0) - before.get(f"{ROUTE}/{op}", 0)

    assert (result.created, result.updated, result.deleted) == (0, 1100, 600)
    assert (made("records/batch_update"), made("records/batch_delete")) == (2, 2)
    assert sandbox.stats("feishu")["errors"].get("1254104") is None
    assert_exact(sandbox, changed)


def test_changed_metric_updates_exactly_that_row(sandbox: Sandbox, sink: BitableSink) -> None:
    rows = make_rows(40)
    sink.upsert(rows, [DAY], "run1", SYNCED)
    ids_before = {k: v[0]["record_id"] for k, v in records_by_key(sandbox).items()}
    assert rows[9].conversion_cost is not None
    changed = list(rows)
    changed[7] = with_cost(rows[7], "118.36")
    changed[9] = with_cost(rows[9], rows[9].cost, convert=0)  # its 转化成本 must empty

    result = sink.upsert(changed, [DAY], "run2", SYNCED)
    assert (result.created, result.updated, result.deleted, result.unchanged) == (0, 2, 0, 38)
    assert sandbox.stats("feishu")["records_updated"] == 2
    assert_exact(sandbox, changed)
    after = records_by_key(sandbox)
    assert {k: v[0]["record_id"] for k, v in after.items()} == ids_before
    assert after[rows[7].sync_key][0]["fields"]["消耗(元)"] == 118.36
    assert "转化成本(元)" not in after[rows[9].sync_key][0]["fields"]


def test_duplicates_collapse_and_other_keys_are_left_alone(
    sandbox: Sandbox, sink: BitableSink
) -> None:
    mine, theirs = make_rows(20), make_rows(10, account=OTHER, start=500)
    sink.upsert(mine + theirs, [DAY], "run1", SYNCED)
    table = dump(sandbox)
    originals = {r["fields"]["同步键"]: r for r in table["records"]}
    # Pre-existing duplicates, as the old delete-then-rewrite scripts left them.
    dup3 = dict(originals[mine[3].sync_key]["fields"], **{"消耗(元)": 1.0})
    dup5 = dict(originals[mine[5].sync_key]["fields"])
    extra = [{"fields": dup3}, {"fields": dict(dup3)}, {"fields": dup5}]
    sandbox.post("/_sandbox/feishu/tables", {**table, "records": table["records"] + extra})

    # This run only has 15 of my rows: my other 5 and the other account's 10 stay untouched.
    result = sink.upsert(mine[:15], [DAY], "run2", SYNCED + timedelta(hours=1))
    assert (result.created, result.updated, result.deleted, result.unchanged) == (0, 0, 3, 15)
    after = {r["fields"]["同步键"]: r for r in dump(sandbox)["records"]}
    assert after == originals  # same record ids, same values, untouched sync times
    assert_exact(sandbox, mine + theirs)


def test_ids_and_money_round_trip_exactly(sandbox: Sandbox, sink: BitableSink) -> None:
    amounts = ["0.01", "0.10", "0.30", "118.36", "1052.30", "99999.99", "1234567.89", "0.00"]
    rows = [with_cost(r, a) for r, a in zip(make_rows(len(amounts)), amounts, strict=True)]
    sink.upsert(rows, [DAY], "run1", SYNCED)
    assert_exact(sandbox, rows)
    raw = records_by_key(sandbox)[rows[0].sync_key][0]["fields"]
    assert raw["账户ID"] == "7604686719380537359"  # text, never a float
    assert raw["单元ID"] == "7604686719380600000"

    stored = {s.key: s for s in sink.read([DAY])}
    for row in rows:
        values = dict(stored[row.sync_key].values)
        assert values.pop("synced_at") == SYNCED
        assert values == row_values(row)
        assert str(values["cost"]) == str(row.cost.quantize(Decimal("0.01")))


def test_dates_are_days_in_shanghai(sandbox: Sandbox, sink: BitableSink) -> None:
    days = [DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)]
    rows = [r for d in days for r in make_rows(3, day=d)]
    sink.upsert(rows, days, "run1", SYNCED)
    found = sink.read([DAY])
    assert sorted(s.key for s in found) == sorted(r.sync_key for r in rows if r.stat_date == DAY)
    assert {s.values["date"] for s in found} == {DAY}
    raw = records_by_key(sandbox)[make_rows(1)[0].sync_key][0]["fields"]
    assert raw["日期"] == DAY_MS

    # A long range is split into several searches (≤ 50 conditions, ≤ 2,000 characters).
    many = [DAY + timedelta(days=n) for n in range(60)]
    sink.upsert([r for d in many for r in make_rows(1, day=d)], many, "run2", SYNCED)
    searches = calls(sandbox, "records/search")
    assert len(sink.read(many)) == 60 + 4  # days 0..59, plus the two other rows of DAY, DAY+1
    assert calls(sandbox, "records/search") - searches >= 3


# -- legacy layout ------------------------------------------------------------------------------


def legacy_table(promotions: list[str]) -> dict[str, Any]:
    def legacy(day: str, account: str, promotion: str, cost: str) -> dict[str, Any]:
        return {
            "fields": {
                "时间": day,
                "账户": account,
                "单元ID": promotion,
                "单元名称": "旧单元",
                "消耗(元)": cost,
                "展示数": "1,200",
                "点击数": "30",
                "转化数": "2",
                "转化成本": "59.20",
            }
        }

    text = ["时间", "账户", "单元ID", "单元名称", "消耗(元)", "展示数", "点击数", "转化数"]
    return {
        "app_token": APP,
        "table_id": LEGACY,
        "name": "旧日报",
        "fields": [{"field_name": n, "type": TEXT} for n in [*text, "转化成本"]],
        "records": [
            legacy("2026-02-11", "北京朝阳店", promotions[0], "1,052.30"),
            legacy("2026/02/11", "北京朝阳店", promotions[1], "118.4"),
            legacy("2026-02-11", "杭州西湖店", promotions[2], "5"),  # unknown account: kept
            legacy("2026-02-10", "北京朝阳店", promotions[0], "7"),  # another day: kept
        ],
    }


def test_legacy_layout_is_mapped_and_matched(sandbox: Sandbox, tmp_path: Path) -> None:
    rows = make_rows(5)
    sandbox.post("/_sandbox/feishu/tables", legacy_table([r.promotion_id for r in rows]))
    settings = make_settings(
        sandbox,
        tmp_path,
        FEISHU_BITABLE_TABLE_ID=LEGACY,
        ADSYNC_BITABLE_FIELDS="日期=时间,账户名称=账户,转化成本(元)=转化成本",
    )
    sink = make_sink(settings)
    layout = sink.prepare()
    assert layout["date"].field_name == "时间" and layout["date"].text_typed
    assert layout["cost"].text_typed and layout["conversion_cost"].field_name == "转化成本"
    assert not layout["account_name"].text_typed  # text by contract too
    assert set(layout.created) == {
        "账户ID",
        "项目ID",
        "项目名称",
        "团购线索数",
        "同步键",
        "同步时间",
    }

    before = dump(sandbox, LEGACY)["records"]
    names = {ACCOUNT[1]: ACCOUNT[0]}
    stored = {s.record_id: s for s in sink.read([DAY], account_names=names)}
    first = stored[before[0]["record_id"]]
    assert first.key == rows[0].sync_key  # derived: date + mapped account name + promotion
    assert first.values["cost"] == Decimal("1052.30") and first.values["show_cnt"] == 1200
    assert stored[before[1]["record_id"]].values["date"] == DAY  # "2026/02/11"
    assert stored[before[2]["record_id"]].key == ""  # no id for 杭州西湖店: never touched

    result = sink.upsert(rows, [DAY], "run1", SYNCED, account_names=names)
    assert (result.created, result.updated, result.deleted) == (3, 2, 0)
    after = {r["record_id"]: r["fields"] for r in dump(sandbox, LEGACY)["records"]}
    assert len(after) == 7  # 5 rows + the two legacy rows that are not ours
    assert after[before[2]["record_id"]] == before[2]["fields"]
    assert after[before[3]["record_id"]] == before[3]["fields"]
    updated = after[before[1]["record_id"]]  # gained its key, written as text
    row = rows[1]
    assert updated["同步键"] == row.sync_key and updated["账户ID"] == ACCOUNT[0]
    assert updated["时间"] == "2026-02-11"
    assert updated["消耗(元)"] == f"{row.cost:.2f}" and updated["展示数"] == str(row.show_cnt)
    assert updated["转化成本"] == f"{row.conversion_cost:.2f}"
    assert "转化成本" not in after[before[0]["record_id"]]  # row 0 has no conversions
    keyed = [f for f in after.values() if f.get("同步键")]
    assert sorted(f["同步键"] for f in keyed) == sorted(r.sync_key for r in rows)

    again = sink.upsert(rows, [DAY], "run2", SYNCED, account_names=names)
    assert (again.created, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 5)


# -- capacity -----------------------------------------------------------------------------------


def test_capacity_refused_before_the_platform_and_warned_near_it(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.reset(feishu={"max_rows": 100})
    sink = make_sink(make_settings(sandbox, tmp_path), max_rows=100)
    assert sink.upsert(make_rows(85), [DAY], "run1", SYNCED).warnings == []
    writes = sandbox.stats("feishu")["writes"]

    with pytest.raises(CapacityError) as caught:
        sink.upsert(make_rows(85 + 20), [DAY], "run2", SYNCED)
    text = str(caught.value)
    assert "85 rows" in text and "20 more" in text and "100 rows" in text
    assert "FEISHU_BITABLE_TABLE_ID" in text and caught.value.exit_code == 1
    stats = sandbox.stats("feishu")
    assert stats["writes"] == writes and "1254103" not in stats["errors"]
    assert stats["tables"][f"{APP}/{TABLE}"] == 85

    result = sink.upsert(make_rows(91), [DAY], "run3", SYNCED)
    assert result.created == 6
    assert len(result.warnings) == 1 and "91" in result.warnings[0]


def test_rows_in_parts_are_sent_as_chunks_fill_and_end_exact(
    sandbox: Sandbox, settings_: Settings
) -> None:
    # What a run does: each account's rows are handed over as soon as they are fetched.
    sink = make_sink(settings_, max_rows=2000)
    sink.upsert(make_rows(100), [DAY], "run1", SYNCED)
    mine = [with_cost(r, "1.23") if i < 50 else r for i, r in enumerate(make_rows(600))]
    theirs = make_rows(600, account=OTHER)
    stream = sink.stream([DAY], "run2", SYNCED)
    stream.add(mine)  # 50 updates, 50 unchanged, 500 creates: no chunk is full yet
    assert calls(sandbox, "records/batch_create") == 1  # run1's
    stream.add(theirs)  # 1,100 creates pending: one full chunk (1,000) goes out now
    assert calls(sandbox, "records/batch_create") == 2
    searches = calls(sandbox, "records/search")
    result = stream.finish()
    assert (result.created, result.updated, result.unchanged) == (1100, 50, 50)
    # The count after the creates matches: the created day is not searched again.
    assert calls(sandbox, "records/search") == searches + 1
    assert_exact(sandbox, mine + theirs)

    # A part that would overflow the table is refused before any of it is written.
    third, fourth = ("7604686719380537361", "广州天河店"), ("7604686719380537362", "深圳南山店")
    stream = sink.stream([DAY], "run3", SYNCED)
    stream.add(make_rows(450, account=third))
    with pytest.raises(CapacityError) as caught:
        stream.add(make_rows(400, account=fourth))
    assert "1,200 rows" in str(caught.value) and "850 more" in str(caught.value)
    assert sandbox.stats("feishu")["tables"][f"{APP}/{TABLE}"] == 1200


# -- failures -----------------------------------------------------------------------------------


def test_transient_faults_still_end_exact(sandbox: Sandbox, sink: BitableSink) -> None:
    faults = {
        "error_rate": 0.2,
        "error_codes": FAULT_CODES,
        "http_error_codes": [429],  # a gateway's plain-text 429, which lark-oapi cannot parse
        "seed": 11,
    }
    sandbox.faults(feishu=faults)
    # Under faults from the first call: token, field creation, reads, creates.
    sink.upsert(make_rows(600), [DAY], "run1", SYNCED)
    injected = sandbox.stats("feishu")["faults_injected"]
    # Then updates, creates and the deletion of pre-existing duplicates, still under faults.
    sandbox.faults(feishu={})
    table = dump(sandbox)
    dups = [{"fields": dict(r["fields"])} for r in table["records"][::100]]
    sandbox.post("/_sandbox/feishu/tables", {**table, "records": table["records"] + dups})
    rows = [with_cost(r, "1.23") if i % 6 == 0 else r for i, r in enumerate(make_rows(1100))]
    sandbox.faults(feishu={**faults, "seed": 12})
    result = sink.upsert(rows, [DAY], "run2", SYNCED)
    injected += sandbox.stats("feishu")["faults_injected"]
    sandbox.faults(feishu={})
    assert injected >= 5, "the faults were not injected"
    assert (result.created, result.updated, result.deleted) == (500, 100, 6)
    assert_exact(sandbox, rows)
    report(f"bitable: {injected} injected faults, {sink.caller.retries} retries, exact table")


def lose_first_answer(sink: BitableSink, op: str) -> list[int]:
    """Make the first successful ``op`` call lose its answer (a read timeout after the write).
    Returns the list of answers seen (True: success)."""
    resource = sink.caller.client.bitable.v1.app_table_record
    real, seen = getattr(resource, op), []

    def flaky(request: Any) -> Any:
        response = real(request)
        seen.append(response.success())
        if seen.count(True) == 1 and seen[-1]:
            raise requests.ReadTimeout("answer lost after the write")
        return response

    setattr(resource, op, flaky)
    return seen


def test_a_retried_chunk_is_written_once(sandbox: Sandbox, sink: BitableSink) -> None:
    rows = make_rows(1200)
    sink.prepare()
    # One chunk's answer lost after the write, one chunk refused with a timeout code first.
    seen = lose_first_answer(sink, "batch_create")
    sandbox.faults(feishu={"scripted": [{"path": "batch_create", "code": 1255040, "times": 1}]})
    result = sink.upsert(rows, [DAY], "run1", SYNCED)
    stats = sandbox.stats("feishu")
    # chunk 1: refused (1255040), written but answer lost, replayed; chunk 2: written
    assert result.created == 1200 and seen == [False, True, True, True]
    assert stats["records_created"] == 1200
    assert stats["idempotent_replays"] == 1  # the retry was answered from the first write
    assert_exact(sandbox, rows)

    # batch_delete has no client_token: a retried delete meets 1254043, re-reads, and is done.
    table = dump(sandbox)
    dups = [{"fields": dict(r["fields"])} for r in table["records"][:3]]
    sandbox.post("/_sandbox/feishu/tables", {**table, "records": table["records"] + dups})
    lose_first_answer(sink, "batch_delete")
    result = sink.upsert(rows, [DAY], "run2", SYNCED)
    assert result.deleted == 3
    assert sandbox.stats("feishu")["errors"].get("1254043") == 1
    assert_exact(sandbox, rows)


def test_two_writers_at_once_end_exact(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = make_settings(sandbox, tmp_path)
    rows = make_rows(900)
    # Overlapping halves, each written by its own sink (own caller), both starting together.
    # Writes are spaced a little, as in production, so the two can interleave.
    work = [
        (make_sink(settings, attempts=10, write_gap=0.03), rows[:600]),
        (make_sink(settings, attempts=10, write_gap=0.03), rows[300:]),
    ]
    barrier, errors = threading.Barrier(2), []

    def run(sink: BitableSink, part: list[ReportRow]) -> None:
        try:
            barrier.wait()
            sink.upsert(part, [DAY], f"thread-{id(sink)}", SYNCED)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert_exact(sandbox, rows)
    stats = sandbox.stats("feishu")
    report(
        f"bitable: two writers at once: {stats['write_conflicts']} write conflicts retried, "
        f"{stats['records_deleted']} concurrent duplicates collapsed, table exact"
    )
