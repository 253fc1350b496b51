"""The Feishu sandbox: shape-compatible with lark-oapi 1.7.5 and strict where the platform is."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import lark_oapi as lark
import pytest
import requests
from lark_oapi.api.bitable.v1 import (
    AppTableCreateHeader,
    AppTableField,
    AppTableFieldProperty,
    AppTableRecord,
    BatchCreateAppTableRecordRequest,
    BatchCreateAppTableRecordRequestBody,
    BatchDeleteAppTableRecordRequest,
    BatchDeleteAppTableRecordRequestBody,
    BatchUpdateAppTableRecordRequest,
    BatchUpdateAppTableRecordRequestBody,
    Condition,
    CreateAppTableFieldRequest,
    CreateAppTableRequest,
    CreateAppTableRequestBody,
    DeleteAppTableRequest,
    FilterInfo,
    GetAppTableRecordRequest,
    ListAppTableFieldRequest,
    ListAppTableRecordRequest,
    ListAppTableRequest,
    ReqTable,
    SearchAppTableRecordRequest,
    SearchAppTableRecordRequestBody,
    UpdateAppTableFieldRequest,
)
from lark_oapi.api.im.v1 import (
    CreateMessageRequest,
    CreateMessageRequestBody,
    PatchMessageRequest,
    PatchMessageRequestBody,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
)
from werkzeug.serving import make_server

from adsync.sandbox.feishu import FeishuSandbox, Options
from adsync.sandbox.server import create_app

APP_TOKEN = "bascnSandboxApp0001"
TABLE_ID = "tblSandboxDaily01"
CHAT = "oc_sandbox_reports"
SECRET = "sandbox-feishu-secret"
SHANGHAI = ZoneInfo("Asia/Shanghai")
TABLE = f"/open-apis/bitable/v1/apps/{APP_TOKEN}/tables/{TABLE_ID}"
DAILY_FIELDS = [
    {"field_name": "同步键", "type": 1},
    {"field_name": "日期", "type": 5, "property": {"date_formatter": "yyyy/MM/dd"}},
    {"field_name": "账户名称", "type": 1},
    {"field_name": "消耗(元)", "type": 2, "property": {"formatter": "0.00"}},
    {"field_name": "展示数", "type": 2},
]
_app_ids = itertools.count(1)


@dataclass
class Harness:
    url: str
    sandbox: FeishuSandbox
    app_id: str = ""

    def reset(self, **options: Any) -> None:
        # lark-oapi caches tenant tokens process-wide per app_id; a fresh app_id per reset
        # keeps a token from a previous test out of this one.
        self.app_id = options.setdefault("app_id", f"cli_test_{next(_app_ids)}")
        resp = requests.post(f"{self.url}/_sandbox/reset", json={"feishu": options}, timeout=5)
        assert resp.status_code == 200, resp.text

    def token(self) -> str:
        body = self.call(
            "POST",
            "/open-apis/auth/v3/tenant_access_token/internal",
            auth=False,
            json={"app_id": self.app_id, "app_secret": SECRET},
        )[1]
        return body["tenant_access_token"]

    def call(
        self, method: str, path: str, *, auth: bool | str = True, **kwargs: Any
    ) -> tuple[int, dict[str, Any], requests.structures.CaseInsensitiveDict[str]]:
        headers = kwargs.pop("headers", {})
        if auth:
            token = auth if isinstance(auth, str) else self.token()
            headers["Authorization"] = f"Bearer {token}"
        resp = requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)
        try:
            body = resp.json()
        except ValueError:
            body = {"_text": resp.text}
        return resp.status_code, body, resp.headers

    def client(self) -> lark.Client:
        return (
            lark.Client.builder()
            .app_id(self.app_id)
            .app_secret(SECRET)
            .domain(self.url)
            .log_level(lark.LogLevel.ERROR)
            .build()
        )

    def table(self, app_token: str = APP_TOKEN, table_id: str = TABLE_ID) -> dict[str, Any]:
        return requests.get(
            f"{self.url}/_sandbox/feishu/tables/{app_token}/{table_id}", timeout=5
        ).json()

    def messages(self, chat_id: str = CHAT) -> list[dict[str, Any]]:
        resp = requests.get(
            f"{self.url}/_sandbox/feishu/messages", params={"chat_id": chat_id}, timeout=5
        )
        return resp.json()["messages"]

    def control(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.url}/_sandbox/feishu/{path}", json=body, timeout=5)

    def create(
        self, records: list[dict[str, Any]], token: str | None = None, **params: Any
    ) -> tuple[int, dict[str, Any]]:
        status, body, _ = self.call(
            "POST",
            TABLE + "/records/batch_create",
            auth=token or True,
            params=params,
            json={"records": [{"fields": f} for f in records]},
        )
        return status, body

    def search(
        self, body: dict[str, Any], token: str | None = None, **params: Any
    ) -> dict[str, Any]:
        return self.call(
            "POST", TABLE + "/records/search", auth=token or True, params=params, json=body
        )[1]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FeishuSandbox]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    sandbox = FeishuSandbox(seed=1)
    httpd = make_server("127.0.0.1", 0, create_app(platforms=[sandbox]), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", sandbox
    httpd.shutdown()
    thread.join(timeout=5)


@pytest.fixture()
def fs(server: tuple[str, FeishuSandbox]) -> Iterator[Harness]:
    url, sandbox = server
    harness = Harness(url, sandbox)
    harness.reset(table_fields=DAILY_FIELDS)
    yield harness
    sandbox.clock = time.time
    requests.post(f"{url}/_sandbox/faults", json={"feishu": {}}, timeout=5)


def day_ms(
    y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0, tz: ZoneInfo = SHANGHAI
) -> int:
    return int(datetime(y, m, d, hh, mm, ss, tzinfo=tz).timestamp() * 1000)


def row(key: str, spend: float = 1.0, day: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"同步键": key, "账户名称": "本地推A", "消耗(元)": spend}
    if day is not None:
        out["日期"] = day
    return out


# --------------------------------------------------------------------------------------------
# tenant_access_token
# --------------------------------------------------------------------------------------------


def test_token_is_reused_while_more_than_30_minutes_remain(fs: Harness) -> None:
    path = "/open-apis/auth/v3/tenant_access_token/internal"
    creds = {"app_id": fs.app_id, "app_secret": SECRET}
    _, first, _ = fs.call("POST", path, auth=False, json=creds)
    fs.sandbox.clock = lambda: time.time() + 3000  # 70 min left: still the same token
    _, second, _ = fs.call("POST", path, auth=False, json=creds)
    assert first["code"] == 0 and first["msg"] == "ok" and first["expire"] == 7200
    assert first["tenant_access_token"].startswith("t-")
    assert second["tenant_access_token"] == first["tenant_access_token"]
    assert 4190 <= second["expire"] <= 4200  # remaining lifetime, not the full 7200

    fs.sandbox.clock = lambda: time.time() + 6000  # < 30 min left: a new one, both valid
    _, third, _ = fs.call("POST", path, auth=False, json=creds)
    assert third["tenant_access_token"] != first["tenant_access_token"]
    assert third["expire"] == 7200
    for token in (first["tenant_access_token"], third["tenant_access_token"]):
        assert fs.call("GET", TABLE + "/fields", auth=token)[1]["code"] == 0

    fs.sandbox.clock = lambda: time.time() + 7300  # the first one has now expired
    assert (
        fs.call("GET", TABLE + "/fields", auth=first["tenant_access_token"])[1]["code"] == 99991663
    )


def test_token_errors_and_auth_header(fs: Harness) -> None:
    path = "/open-apis/auth/v3/tenant_access_token/internal"
    status, body, _ = fs.call(
        "POST", path, auth=False, json={"app_id": fs.app_id, "app_secret": "wrong"}
    )
    assert (status, body["code"]) == (400, 10014)
    status, body, _ = fs.call(
        "POST", path, auth=False, json={"app_id": "cli_nope", "app_secret": SECRET}
    )
    assert (status, body["code"]) == (400, 10003)

    status, body, _ = fs.call("GET", TABLE + "/fields", auth=False)
    assert (status, body["code"]) == (400, 99991661)
    status, body, _ = fs.call("GET", TABLE + "/fields", auth="t-forged")
    assert (status, body["code"]) == (400, 99991663)
    assert "t-forged" not in json.dumps(body)  # token values never echoed


def test_revoked_tokens_hit_the_sdk_cache(fs: Harness) -> None:
    """lark-oapi keeps its cached token after 99991663: our code must clear and retry."""
    client = fs.client()
    request = ListAppTableFieldRequest.builder().app_token(APP_TOKEN).table_id(TABLE_ID).build()
    assert client.bitable.v1.app_table_field.list(request).success()
    requests.post(f"{fs.url}/_sandbox/feishu/revoke_tokens", timeout=5)
    resp = client.bitable.v1.app_table_field.list(request)
    assert resp.code == 99991663
    assert fs.sandbox.stats()["tokens_issued"] == 1


# --------------------------------------------------------------------------------------------
# Fields
# --------------------------------------------------------------------------------------------


def test_fields_create_list_update_through_sdk(fs: Harness) -> None:
    fs.reset()  # default table: a single primary text field
    client = fs.client()
    created = client.bitable.v1.app_table_field.create(
        CreateAppTableFieldRequest.builder()
        .app_token(APP_TOKEN)
        .table_id(TABLE_ID)
        .request_body(
            AppTableField.builder()
            .field_name("消耗(元)")
            .type(2)
            .property(AppTableFieldProperty.builder().formatter("0.00").build())
            .build()
        )
        .build()
    )
    assert created.success(), created.msg
    assert created.data.field.field_id.startswith("fld")
    assert created.data.field.property.formatter == "0.00"
    assert created.data.field.ui_type == "Number"
    assert created.get_log_id()

    listed = client.bitable.v1.app_table_field.list(
        ListAppTableFieldRequest.builder()
        .app_token(APP_TOKEN)
        .table_id(TABLE_ID)
        .page_size(1)
        .build()
    )
    assert listed.success() and listed.data.total == 2 and listed.data.has_more
    assert listed.data.items[0].field_name == "文本" and listed.data.items[0].is_primary
    second = client.bitable.v1.app_table_field.list(
        ListAppTableFieldRequest.builder()
        .app_token(APP_TOKEN)
        .table_id(TABLE_ID)
        .page_size(1)
        .page_token(listed.data.page_token)
        .build()
    )
    assert [f.field_name for f in second.data.items] == ["消耗(元)"]
    assert not second.data.has_more

    updated = client.bitable.v1.app_table_field.update(
        UpdateAppTableFieldRequest.builder()
        .app_token(APP_TOKEN)
        .table_id(TABLE_ID)
        .field_id(created.data.field.field_id)
        .request_body(AppTableField.builder().field_name("花费").type(2).build())
        .build()
    )
    assert updated.success() and updated.data.field.field_name == "花费"


def test_field_errors(fs: Harness) -> None:
    path = TABLE + "/fields"
    cases = [
        ({"field_name": "同步键", "type": 1}, 1254014),  # duplicate name
        ({"field_name": "x", "type": 99}, 1254001),  # invalid type
        ({"field_name": "x", "type": 19}, 1254001),  # lookup cannot be created
        ({"field_name": "y", "type": 2, "property": {"formatter": "0.00元"}}, 1254001),
        ({"field_name": "z", "type": 5, "property": {"date_formatter": "dd.MM"}}, 1254001),
    ]
    for body, code in cases:
        assert fs.call("POST", path, json=body)[1]["code"] == code, body
    assert fs.call("GET", path, params={"page_size": 101})[1]["code"] == 99992402
    assert (
        fs.call("PUT", path + "/fldNope", json={"field_name": "a", "type": 1})[1]["code"] == 1254044
    )
    missing_app = "/open-apis/bitable/v1/apps/bascnNope/tables/tblX/fields"
    assert fs.call("GET", missing_app)[1]["code"] == 1254040
    missing_table = f"/open-apis/bitable/v1/apps/{APP_TOKEN}/tables/tblNope/fields"
    assert fs.call("GET", missing_table)[1]["code"] == 1254041


def test_field_type_change_converts_text_numbers(fs: Harness) -> None:
    fs.control(
        "tables",
        {
            "app_token": APP_TOKEN,
            "table_id": TABLE_ID,
            "fields": [{"field_name": "键", "type": 1}, {"field_name": "消耗", "type": 1}],
            "records": [
                {"fields": {"键": "a", "消耗": "12.50"}},
                {"fields": {"键": "b", "消耗": "n/a"}},
            ],
        },
    )
    field_id = fs.table()["fields"][1]["field_id"]
    body = {"field_name": "消耗", "type": 2, "property": {"formatter": "0.00"}}
    assert fs.call("PUT", TABLE + f"/fields/{field_id}", json=body)[1]["code"] == 0
    assert [r["fields"].get("消耗") for r in fs.table()["records"]] == [12.5, None]


# --------------------------------------------------------------------------------------------
# Record writes: limits, names, conversions
# --------------------------------------------------------------------------------------------


def test_batch_limits(fs: Harness) -> None:
    status, body = fs.create([row(f"k{i}") for i in range(1001)])
    assert (status, body["code"]) == (400, 1254104)
    ids = [f"rec{i:010d}" for i in range(501)]
    assert (
        fs.call("POST", TABLE + "/records/batch_delete", json={"records": ids})[1]["code"]
        == 1254104
    )
    assert fs.create([])[1]["code"] == 1254001
    assert fs.create([row(f"k{i}") for i in range(1000)])[1]["code"] == 0


def test_row_cap_rejects_the_whole_batch(fs: Harness) -> None:
    fs.reset(table_fields=DAILY_FIELDS, max_rows=5)
    assert fs.create([row(f"k{i}") for i in range(4)])[1]["code"] == 0
    assert fs.create([row("k4"), row("k5")])[1]["code"] == 1254103
    assert len(fs.table()["records"]) == 4  # nothing from the failed batch
    assert fs.create([row("k4")])[1]["code"] == 0


def test_unknown_field_name_everywhere(fs: Harness) -> None:
    token = fs.token()
    assert fs.create([{"同步键": "a", "消耗 (元)": 1}], token)[1]["code"] == 1254045  # space
    assert fs.search({"field_names": ["日期", "花费"]}, token)["code"] == 1254045
    flt = {
        "conjunction": "and",
        "conditions": [{"field_name": "账户", "operator": "is", "value": ["x"]}],
    }
    assert fs.search({"filter": flt}, token)["code"] == 1254045
    assert fs.search({"sort": [{"field_name": "nope", "desc": True}]}, token)["code"] == 1254045
    assert fs.table()["records"] == []


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"消耗(元)": "12.5"}, 1254061),  # numbers as strings
        ({"消耗(元)": True}, 1254061),
        ({"同步键": 123}, 1254060),  # text must be a string (ids too)
        ({"日期": 1739548800000.0}, 1254064),  # float ms
        ({"日期": "2025-02-15"}, 1254064),
    ],
)
def test_strict_value_conversion(fs: Harness, fields: dict[str, Any], code: int) -> None:
    status, body = fs.create([{"同步键": "k", **fields}])
    assert (status, body["code"]) == (400, code)
    assert fs.table()["records"] == []


def test_big_integers_in_number_fields_lose_precision(fs: Harness) -> None:
    assert fs.create([{"同步键": "k", "展示数": 1234567890123456789}])[1]["code"] == 0
    stored = fs.table()["records"][0]["fields"]["展示数"]
    assert stored != 1234567890123456789  # ids belong in text fields


def test_text_reads_back_as_segments(fs: Harness) -> None:
    client = fs.client()
    created = client.bitable.v1.app_table_record.batch_create(
        BatchCreateAppTableRecordRequest.builder()
        .app_token(APP_TOKEN)
        .table_id(TABLE_ID)
        .request_body(
            BatchCreateAppTableRecordRequestBody.builder()
            .records(
                [
                    AppTableRecord.builder()
                    .fields(row("2026-02-15|1|9", 12.5, day_ms(2026, 2, 15)))
                    .build()
                ]
            )
            .build()
        )
        .build()
    )
    assert created.success(), created.msg
    record = created.data.records[0]
    assert record.record_id.startswith("rec") and len(record.record_id) == 13
    assert record.fields["同步键"] == "2026-02-15|1|9"  # the write echo is in write format

    found = client.bitable.v1.app_table_record.search(
        SearchAppTableRecordRequest.builder()
        .app_token(APP_TOKEN)
        .table_id(TABLE_ID)
        .page_size(500)
        .request_body(
            SearchAppTableRecordRequestBody.builder()
            .field_names(["同步键", "消耗(元)", "日期", "展示数"])
            .build()
        )
        .build()
    )
    assert found.success()
    fields = found.data.items[0].fields
    assert fields["同步键"] == [{"text": "2026-02-15|1|9", "type": "text"}]
    assert fields["消耗(元)"] == 12.5 and fields["日期"] == day_ms(2026, 2, 15)
    assert "展示数" not in fields  # empty cells are omitted

    listed = client.bitable.v1.app_table_record.list(
        ListAppTableRecordRequest.builder().app_token(APP_TOKEN).table_id(TABLE_ID).build()
    )
    assert listed.data.items[0].fields["同步键"] == "2026-02-15|1|9"
    got = client.bitable.v1.app_table_record.get(
        GetAppTableRecordRequest.builder()
        .app_token(APP_TOKEN)
        .table_id(TABLE_ID)
        .record_id(record.record_id)
        .text_field_as_array(True)
        .build()
    )
    assert got.data.record.fields["同步键"][0]["text"] == "2026-02-15|1|9"


def test_update_and_delete(fs: Harness) -> None:
    client = fs.client()
    _, body = fs.create([row("a", 1), row("b", 2)])
    rid_a, rid_b = (r["record_id"] for r in body["data"]["records"])

    bad = fs.call(
        "POST",
        TABLE + "/records/batch_update",
        json={
            "records": [
                {"record_id": rid_a, "fields": {"消耗(元)": 5}},
                {"record_id": "recMissing01", "fields": {"消耗(元)": 6}},
            ]
        },
    )[1]
    assert bad["code"] == 1254043
    assert fs.table()["records"][0]["fields"]["消耗(元)"] == 1  # nothing written

    updated = client.bitable.v1.app_table_record.batch_update(
        BatchUpdateAppTableRecordRequest.builder()
        .app_token(APP_TOKEN)
        .table_id(TABLE_ID)
        .request_body(
            BatchUpdateAppTableRecordRequestBody.builder()
            .records(
                [
                    AppTableRecord.builder()
                    .record_id(rid_a)
                    .fields({"消耗(元)": 7.25, "账户名称": None})
                    .build()
                ]
            )
            .build()
        )
        .build()
    )
    assert updated.success(), updated.msg
    # lark-oapi's JSON.marshal drops None inside dicts: the SDK cannot clear a cell this way.
    assert fs.table()["records"][0]["fields"]["账户名称"] == "本地推A"
    cleared = fs.call(
        "POST",
        TABLE + "/records/batch_update",
        json={"records": [{"record_id": rid_a, "fields": {"账户名称": None}}]},
    )[1]
    assert cleared["code"] == 0
    assert fs.table()["records"][0]["fields"] == {"同步键": "a", "消耗(元)": 7.25}

    missing = fs.call(
        "POST", TABLE + "/records/batch_delete", json={"records": [rid_b, "recMissing01"]}
    )[1]
    assert missing["code"] == 1254043
    deleted = client.bitable.v1.app_table_record.batch_delete(
        BatchDeleteAppTableRecordRequest.builder()
        .app_token(APP_TOKEN)
        .table_id(TABLE_ID)
        .request_body(BatchDeleteAppTableRecordRequestBody.builder().records([rid_b]).build())
        .build()
    )
    assert deleted.success() and deleted.data.records[0].deleted
    assert [r["record_id"] for r in fs.table()["records"]] == [rid_a]


# --------------------------------------------------------------------------------------------
# Search: filters and pagination
# --------------------------------------------------------------------------------------------


def test_exact_date_is_the_whole_day_in_the_document_timezone(fs: Harness) -> None:
    days = {
        "before": day_ms(2026, 2, 14, 23, 59, 59),
        "start": day_ms(2026, 2, 15),
        "end": day_ms(2026, 2, 15, 23, 59, 59),
        "after": day_ms(2026, 2, 16),
    }
    assert fs.create([row(k, day=v) for k, v in days.items()])[1]["code"] == 0

    def keys(operator: str, value: list[str]) -> list[str]:
        body = {
            "field_names": ["同步键"],
            "filter": {
                "conjunction": "and",
                "conditions": [{"field_name": "日期", "operator": operator, "value": value}],
            },
        }
        result = fs.search(body)
        assert result["code"] == 0, result
        return [i["fields"]["同步键"][0]["text"] for i in result["data"].get("items") or []]

    # Any instant of the day selects the day: UTC midnight is 08:00 in Shanghai.
    utc_midnight = day_ms(2026, 2, 15, tz=ZoneInfo("UTC"))
    assert keys("is", ["ExactDate", str(utc_midnight)]) == ["start", "end"]
    assert keys("is", ["ExactDate", str(day_ms(2026, 2, 15, 23))]) == ["start", "end"]
    assert keys("isGreater", ["ExactDate", str(days["start"])]) == ["after"]
    assert keys("isLess", ["ExactDate", str(days["start"])]) == ["before"]

    sdk_filter = (
        FilterInfo.builder()
        .conjunction("and")
        .conditions(
            [
                Condition.builder()
                .field_name("日期")
                .operator("is")
                .value(["ExactDate", str(days["start"])])
                .build()
            ]
        )
        .build()
    )
    found = fs.client().bitable.v1.app_table_record.search(
        SearchAppTableRecordRequest.builder()
        .app_token(APP_TOKEN)
        .table_id(TABLE_ID)
        .page_size(500)
        .request_body(SearchAppTableRecordRequestBody.builder().filter(sdk_filter).build())
        .build()
    )
    assert found.success() and found.data.total == 2

    fs.sandbox.clock = lambda: days["after"] / 1000 + 3600  # "today" is 2026-02-16
    assert keys("is", ["Yesterday"]) == ["start", "end"]
    assert keys("is", ["Today"]) == ["after"]

    bad = {
        "filter": {
            "conjunction": "and",
            "conditions": [
                {"field_name": "日期", "operator": "isGreaterEqual", "value": ["Today"]}
            ],
        }
    }
    assert fs.search(bad)["code"] == 1254018
    raw_ms = {
        "filter": {
            "conjunction": "and",
            "conditions": [{"field_name": "日期", "operator": "is", "value": [str(days["start"])]}],
        }
    }
    assert fs.search(raw_ms)["code"] == 1254018


def test_doc_timezone_moves_the_day_boundary(fs: Harness) -> None:
    fs.reset(table_fields=DAILY_FIELDS, doc_timezone="UTC")
    fs.create([row("a", day=day_ms(2026, 2, 15, 7)), row("b", day=day_ms(2026, 2, 15, 9))])

    def keys(instant: int) -> list[str]:
        flt = {
            "conjunction": "and",
            "conditions": [
                {"field_name": "日期", "operator": "is", "value": ["ExactDate", str(instant)]}
            ],
        }
        return [
            i["fields"]["同步键"][0]["text"] for i in fs.search({"filter": flt})["data"]["items"]
        ]

    # In UTC, 07:00 Shanghai on the 15th is still the 14th ...
    assert keys(day_ms(2026, 2, 15, 12, tz=ZoneInfo("UTC"))) == ["b"]
    # ... and so is Shanghai's midnight of the 15th: a filter value is a day in the doc's zone.
    assert keys(day_ms(2026, 2, 15)) == ["a"]


def test_filter_grammar(fs: Harness) -> None:
    fs.create([row("a", 1), row("b", 20), {**row("c", 300), "账户名称": "其他账户"}])
    token = fs.token()

    def keys(flt: dict[str, Any]) -> list[str]:
        result = fs.search({"filter": flt}, token)
        assert result["code"] == 0, result
        return [i["fields"]["同步键"][0]["text"] for i in result["data"].get("items") or []]

    cond = lambda f, op, *v: {"field_name": f, "operator": op, "value": list(v)}  # noqa: E731
    assert keys({"conjunction": "and", "conditions": [cond("消耗(元)", "isGreater", "10")]}) == [
        "b",
        "c",
    ]
    assert keys(
        {
            "conjunction": "or",
            "conditions": [cond("同步键", "is", "a"), cond("账户名称", "contains", "其他")],
        }
    ) == ["a", "c"]
    assert keys(
        {
            "conjunction": "and",
            "conditions": [cond("账户名称", "is", "本地推A")],
            "children": [
                {
                    "conjunction": "or",
                    "conditions": [cond("同步键", "is", "a"), cond("同步键", "is", "c")],
                }
            ],
        }
    ) == ["a"]
    assert keys({"conjunction": "and", "conditions": [cond("展示数", "isEmpty")]}) == [
        "a",
        "b",
        "c",
    ]

    def code(flt: dict[str, Any]) -> int:
        return fs.search({"filter": flt}, token)["code"]

    assert (
        code(
            {
                "conjunction": "and",
                "conditions": [{"field_name": "消耗(元)", "operator": "isGreater", "value": [10]}],
            }
        )
        == 1254018
    )
    assert code({"conjunction": "xor", "conditions": []}) == 1254018
    assert code({"conjunction": "and", "conditions": [cond("同步键", "like", "a")]}) == 1254018
    assert code({"conjunction": "and", "conditions": [cond("同步键", "isGreater", "a")]}) == 1254018
    assert code({"conjunction": "and", "conditions": [cond("同步键", "is", "k")] * 51}) == 1254018
    assert code({"conjunction": "and", "conditions": [cond("同步键", "is", "k" * 2100)]}) == 1254107
    assert (
        code({"conjunction": "and", "children": [{"conjunction": "and", "children": []}]})
        == 1254018
    )


def test_search_pagination_at_500(fs: Harness) -> None:
    token = fs.token()
    assert fs.create([row(f"k{i:04d}") for i in range(1000)], token)[1]["code"] == 0
    assert fs.create([row(f"k{i:04d}") for i in range(1000, 1200)], token)[1]["code"] == 0
    seen: list[str] = []
    page_token: str | None = None
    pages = 0
    while True:
        params = {"page_size": 500, **({"page_token": page_token} if page_token else {})}
        result = fs.search({"field_names": ["同步键"]}, token, **params)
        assert result["code"] == 0 and result["data"]["total"] == 1200
        seen += [i["record_id"] for i in result["data"]["items"]]
        pages += 1
        if not result["data"]["has_more"]:
            assert "page_token" not in result["data"]
            break
        page_token = result["data"]["page_token"]
    assert pages == 3 and len(seen) == len(set(seen)) == 1200

    assert fs.search({}, token, page_size=501)["code"] == 99992402
    first = fs.search({}, token, page_size=500)["data"]["page_token"]
    other_query = {"filter": {"conjunction": "and", "conditions": []}}
    assert fs.search(other_query, token, page_size=500, page_token=first)["code"] == 99992402
    assert fs.search({}, token, page_token="garbage!")["code"] == 99992402
    default = fs.search({}, token)["data"]
    assert len(default["items"]) == 20 and default["has_more"]


def test_empty_search_has_no_items_key(fs: Harness) -> None:
    data = fs.search({})["data"]
    assert data == {"has_more": False, "total": 0}


def test_sort(fs: Harness) -> None:
    fs.create([row("a", 5), row("b", 50), {"同步键": "c"}, row("d", 0.5)])
    result = fs.search({"sort": [{"field_name": "消耗(元)", "desc": True}]})
    assert [i["fields"]["同步键"][0]["text"] for i in result["data"]["items"]] == [
        "b",
        "a",
        "d",
        "c",
    ]


# --------------------------------------------------------------------------------------------
# Idempotency and write serialisation
# --------------------------------------------------------------------------------------------


def test_client_token_makes_batch_create_idempotent(fs: Harness) -> None:
    token = fs.token()
    client_token = str(uuid.uuid5(uuid.NAMESPACE_URL, "tbl:2026-02-15:0:create"))
    status, first = fs.create([row("a"), row("b")], token, client_token=client_token)
    assert status == 200 and first["code"] == 0
    _, again = fs.create([row("a"), row("b")], token, client_token=client_token)
    assert again["data"] == first["data"]  # the original response, record ids included
    assert len(fs.table()["records"]) == 2
    assert fs.sandbox.stats()["idempotent_replays"] == 1

    _, changed = fs.create([row("a"), row("c")], token, client_token=client_token)
    assert changed["code"] == 1255006
    assert fs.create([row("z")], token, client_token="not-a-uuid")[1]["code"] == 1254037
    assert len(fs.table()["records"]) == 2


def test_client_token_through_the_sdk(fs: Harness) -> None:
    client = fs.client()
    client_token = str(uuid.uuid4())

    def send() -> Any:
        return client.bitable.v1.app_table_record.batch_create(
            BatchCreateAppTableRecordRequest.builder()
            .app_token(APP_TOKEN)
            .table_id(TABLE_ID)
            .client_token(client_token)
            .ignore_consistency_check(True)
            .request_body(
                BatchCreateAppTableRecordRequestBody.builder()
                .records([AppTableRecord.builder().fields(row("a")).build()])
                .build()
            )
            .build()
        )

    first, second = send(), send()
    assert first.success() and second.success()
    assert first.data.records[0].record_id == second.data.records[0].record_id
    assert len(fs.table()["records"]) == 1


def test_same_client_token_in_flight_is_a_duplicate_submit(fs: Harness) -> None:
    fs.reset(table_fields=DAILY_FIELDS, write_hold_ms=300)
    token, client_token = fs.token(), str(uuid.uuid4())
    results: list[int] = []
    barrier = threading.Barrier(2)

    def send(delay: float) -> None:
        barrier.wait()
        time.sleep(delay)
        results.append(fs.create([row("a")], token, client_token=client_token)[1]["code"])

    threads = [threading.Thread(target=send, args=(d,)) for d in (0.0, 0.1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1254608]
    assert len(fs.table()["records"]) == 1


def test_concurrent_writes_to_one_table_conflict(fs: Harness) -> None:
    fs.reset(table_fields=DAILY_FIELDS, write_hold_ms=150)
    token = fs.token()
    codes: list[int] = []
    barrier = threading.Barrier(3)

    def writer(key: str) -> None:
        barrier.wait()
        codes.append(fs.create([row(key)], token)[1]["code"])

    def reader() -> None:
        barrier.wait()
        time.sleep(0.05)  # lands while a write holds the table: reads are fine
        codes.append(fs.search({}, token)["code"])

    threads = [threading.Thread(target=writer, args=(k,)) for k in ("a", "b")]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [0, 0, 1254291]
    assert len(fs.table()["records"]) == 1  # the rejected write left nothing behind
    assert fs.sandbox.stats()["write_conflicts"] == 1
    assert fs.create([row("b")], token)[1]["code"] == 0  # a serial retry succeeds


# --------------------------------------------------------------------------------------------
# IM
# --------------------------------------------------------------------------------------------


def _send(
    client: lark.Client,
    content: dict[str, Any],
    msg_type: str = "text",
    chat_id: str = CHAT,
    uuid_: str | None = None,
) -> Any:
    body = (
        CreateMessageRequestBody.builder()
        .receive_id(chat_id)
        .msg_type(msg_type)
        .content(json.dumps(content, ensure_ascii=False))
    )
    if uuid_:
        body = body.uuid(uuid_)
    request = CreateMessageRequest.builder().receive_id_type("chat_id").request_body(body.build())
    return client.im.v1.message.create(request.build())


CARD = {
    "schema": "2.0",
    "config": {"update_multi": True},
    "header": {"title": {"tag": "plain_text", "content": "昨日广告汇总"}, "template": "blue"},
    "body": {"elements": [{"tag": "markdown", "content": "**花费** ¥12,345"}]},
}


def test_send_reply_patch_through_sdk(fs: Harness) -> None:
    client = fs.client()
    sent = _send(client, CARD, "interactive")
    assert sent.success(), sent.msg
    msg = sent.data
    assert msg.message_id.startswith("om_") and msg.chat_id == CHAT
    assert msg.sender.sender_type == "app" and msg.sender.id == fs.app_id
    assert json.loads(msg.body.content) == CARD

    reply = client.im.v1.message.reply(
        ReplyMessageRequest.builder()
        .message_id(msg.message_id)
        .request_body(
            ReplyMessageRequestBody.builder()
            .msg_type("text")
            .content(json.dumps({"text": "收到"}))
            .reply_in_thread(True)
            .build()
        )
        .build()
    )
    assert reply.success() and reply.data.parent_id == msg.message_id
    assert reply.data.thread_id.startswith("omt_")

    new_card = {**CARD, "body": {"elements": [{"tag": "markdown", "content": "done"}]}}
    patched = client.im.v1.message.patch(
        PatchMessageRequest.builder()
        .message_id(msg.message_id)
        .request_body(PatchMessageRequestBody.builder().content(json.dumps(new_card)).build())
        .build()
    )
    assert patched.success(), patched.msg

    messages = fs.messages()
    assert [m["via"] for m in messages] == ["create", "reply"]
    assert [v["content"] for v in messages[0]["versions"]] == [CARD, new_card]
    assert messages[0]["content"] == new_card

    not_card = client.im.v1.message.patch(
        PatchMessageRequest.builder()
        .message_id(reply.data.message_id)
        .request_body(PatchMessageRequestBody.builder().content(json.dumps(new_card)).build())
        .build()
    )
    assert not_card.code == 230001


def test_uuid_dedups_within_an_hour(fs: Harness) -> None:
    client = fs.client()
    key = str(uuid.uuid5(uuid.NAMESPACE_URL, "daily-report:2026-02-15"))
    first = _send(client, {"text": "日报"}, uuid_=key)
    second = _send(client, {"text": "日报"}, uuid_=key)
    assert first.data.message_id == second.data.message_id
    assert len(fs.messages()) == 1
    fs.sandbox.clock = lambda: time.time() + 3700
    assert _send(client, {"text": "日报"}, uuid_=key).data.message_id != first.data.message_id
    assert _send(client, {"text": "x"}, uuid_="u" * 51).code == 99992402


def test_message_limits_and_membership(fs: Harness) -> None:
    client = fs.client()
    big_card = {**CARD, "body": {"elements": [{"tag": "markdown", "content": "x" * 31_000}]}}
    assert _send(client, big_card, "interactive").code == 230025
    assert _send(client, {"text": "x" * 100_000}).success()  # text allows 150 KB
    assert _send(client, {"text": "x" * 160_000}).code == 230025

    fs.control("chats", {"chat_id": "oc_without_bot", "bot_member": False})
    assert _send(client, {"text": "hi"}, chat_id="oc_without_bot").code == 230002
    assert _send(client, {"text": "hi"}, chat_id="oc_unknown").code == 230002

    path = "/open-apis/im/v1/messages"
    raw = {"receive_id": CHAT, "msg_type": "text", "content": {"text": "not a string"}}
    assert (
        fs.call("POST", path, params={"receive_id_type": "chat_id"}, json=raw)[1]["code"] == 230001
    )
    raw["content"] = "{not json"
    assert (
        fs.call("POST", path, params={"receive_id_type": "chat_id"}, json=raw)[1]["code"] == 230001
    )
    assert fs.call("POST", path, json={**raw, "content": "{}"})[1]["code"] == 99992402
    legacy_in_v2 = {"schema": "2.0", "elements": [{"tag": "markdown", "content": "x"}]}
    assert _send(client, legacy_in_v2, "interactive").code == 230099


def test_the_size_limit_is_on_the_request_body_not_the_card(fs: Harness) -> None:
    # "卡片消息请求体最大不能超过 30 KB": the card is a JSON string inside the body, so each quote
    # in it is escaped twice. 8,000 quotes weigh 16 KB in the card and 32 KB in the body.
    client = fs.client()
    quotes = {**CARD, "body": {"elements": [{"tag": "markdown", "content": '"' * 8000}]}}
    plain = {**CARD, "body": {"elements": [{"tag": "markdown", "content": "x" * 16000}]}}
    refused = _send(client, quotes, "interactive")
    assert refused.code == 230025 and "request body" in refused.msg
    assert _send(client, plain, "interactive").success()
    [message] = fs.messages()
    assert 16_000 < message["versions"][0]["body_bytes"] < 30 * 1024


def test_delayed_card_update_token_works_twice(fs: Harness) -> None:
    sent = _send(fs.client(), CARD, "interactive")
    token = fs.control("card_token", {"message_id": sent.data.message_id}).json()["token"]
    path = "/open-apis/interactive/v1/card/update"
    auth = fs.token()
    for _ in range(2):
        assert fs.call("POST", path, auth=auth, json={"token": token, "card": CARD})[1]["code"] == 0
    assert (
        fs.call("POST", path, auth=auth, json={"token": token, "card": CARD})[1]["code"] == 200810
    )
    assert len(fs.messages()[0]["versions"]) == 3


# --------------------------------------------------------------------------------------------
# Custom bot webhook
# --------------------------------------------------------------------------------------------


def _sign(timestamp: int, secret: str) -> str:
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, digestmod=hashlib.sha256).digest()).decode()


def test_custom_bot_signature(fs: Harness) -> None:
    hook = fs.control("hooks", {"hook_id": "hk1", "secret": "s3cr3t"}).json()
    assert hook["path"] == "/open-apis/bot/v2/hook/hk1"
    now = int(time.time())

    def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, out, _ = fs.call("POST", hook["path"], auth=False, json=body)
        return status, out

    text = {"msg_type": "text", "content": {"text": "告警"}}
    status, ok = post({"timestamp": str(now), "sign": _sign(now, "s3cr3t"), **text})
    assert status == 200 and ok["code"] == 0 and ok["StatusCode"] == 0
    assert post({"timestamp": str(now), "sign": _sign(now, "wrong"), **text})[1]["code"] == 19021
    stale = now - 3700
    assert (
        post({"timestamp": str(stale), "sign": _sign(stale, "s3cr3t"), **text})[1]["code"] == 19021
    )
    assert (
        post({"timestamp": now * 1000, "sign": _sign(now * 1000, "s3cr3t"), **text})[1]["code"]
        == 19021
    )
    card = {"msg_type": "interactive", "card": CARD}
    assert post({"timestamp": str(now), "sign": _sign(now, "s3cr3t"), **card})[1]["code"] == 0
    huge = {"msg_type": "text", "content": {"text": "x" * 21_000}}
    assert post({"timestamp": str(now), "sign": _sign(now, "s3cr3t"), **huge})[1]["code"] == 9499
    assert fs.call("POST", "/open-apis/bot/v2/hook/nope", auth=False, json=text)[1]["code"] == 19001

    got = requests.get(f"{fs.url}/_sandbox/feishu/hooks/hk1/messages", timeout=5).json()
    assert [m["msg_type"] for m in got["messages"]] == ["text", "interactive"]


# --------------------------------------------------------------------------------------------
# Faults, control routes, stats
# --------------------------------------------------------------------------------------------


def test_injected_faults(fs: Harness) -> None:
    token = fs.token()
    script = {
        "feishu": {
            "scripted": [
                {"path": "records/batch_create", "code": 1254290, "times": 1},
                {"path": "records/search", "code": 1255040, "times": 1},
                {"path": "im/v1/messages", "code": 502, "http": True, "times": 1},
            ]
        }
    }
    assert requests.post(f"{fs.url}/_sandbox/faults", json=script, timeout=5).status_code == 200

    status, body, headers = fs.call(
        "POST",
        TABLE + "/records/batch_create",
        auth=token,
        json={"records": [{"fields": row("a")}]},
    )
    assert (status, body["code"], headers["x-ogw-ratelimit-reset"]) == (429, 1254290, "1")
    assert fs.table()["records"] == []
    assert fs.create([row("a")], token)[1]["code"] == 0

    status, body, _ = fs.call("POST", TABLE + "/records/search", auth=token, json={})
    assert (status, body["code"]) == (504, 1255040)

    status, body, _ = fs.call(
        "POST",
        "/open-apis/im/v1/messages",
        auth=token,
        params={"receive_id_type": "chat_id"},
        json={},
    )
    assert status == 502 and "_text" in body

    stats = fs.sandbox.stats()
    assert stats["errors"]["1254290"] == 1 and stats["faults_injected"] == 3


def test_rate_limit_fault_uses_99991400(fs: Harness) -> None:
    token = fs.token()
    requests.post(
        f"{fs.url}/_sandbox/faults",
        json={"feishu": {"rate_limit_qps": 1, "paths": ["/fields"]}},
        timeout=5,
    )
    codes = [fs.call("GET", TABLE + "/fields", auth=token)[1]["code"] for _ in range(3)]
    assert codes[0] == 0 and 99991400 in codes


def test_control_tables_hold_legacy_layouts(fs: Harness) -> None:
    legacy = {
        "app_token": "bascnLegacy",
        "table_id": "tblLegacy",
        "name": "旧表",
        "fields": [
            {"field_name": "时间", "type": 1},
            {"field_name": "账户名称", "type": 1},
            {"field_name": "消耗", "type": 1},
        ],
        "records": [{"fields": {"时间": "2026-02-15", "账户名称": "A", "消耗": "12.50"}}],
    }
    assert fs.control("tables", legacy).json()["ok"]
    snapshot = fs.table("bascnLegacy", "tblLegacy")
    assert snapshot["records"][0]["fields"] == {
        "时间": "2026-02-15",
        "账户名称": "A",
        "消耗": "12.50",
    }
    assert snapshot["fields"][0]["is_primary"]
    path = "/open-apis/bitable/v1/apps/bascnLegacy/tables/tblLegacy/records/search"
    result = fs.call("POST", path, json={})[1]
    assert result["data"]["items"][0]["fields"]["消耗"] == [{"text": "12.50", "type": "text"}]
    app = fs.call("GET", "/open-apis/bitable/v1/apps/bascnLegacy")[1]
    assert app["data"]["app"]["time_zone"] == "Asia/Shanghai"

    bad = dict(legacy, records=[{"fields": {"消耗": 12.5}}])
    resp = fs.control("tables", bad)
    assert resp.status_code == 400 and "TextFieldConvFail" in resp.json()["error"]


def test_extra_tables_option_and_validation(fs: Harness) -> None:
    extra = {
        "app_token": APP_TOKEN,
        "table_id": "tblOld",
        "fields": [{"field_name": "时间", "type": 1}],
        "records": [{"fields": {"时间": "2026-02-01"}}],
    }
    fs.reset(extra_tables=[extra])
    assert len(fs.table(APP_TOKEN, "tblOld")["records"]) == 1
    assert [f["field_name"] for f in fs.table()["fields"]] == ["文本"]
    tables = fs.call("GET", f"/open-apis/bitable/v1/apps/{APP_TOKEN}/tables")[1]["data"]
    assert {t["table_id"] for t in tables["items"]} == {TABLE_ID, "tblOld"}
    with pytest.raises(ValueError, match="unknown feishu sandbox options"):
        Options.from_dict({"max_row": 5})


def _create_table(client: lark.Client, name: str, fields: list[tuple[str, int]] | None) -> Any:
    table = ReqTable.builder().name(name)
    if fields is not None:
        headers = []
        for field_name, ftype in fields:
            header = AppTableCreateHeader.builder().field_name(field_name).type(ftype)
            if ftype == 2:
                header = header.property(AppTableFieldProperty({"formatter": "0.00"}))
            headers.append(header.build())
        table = table.fields(headers)
    body = CreateAppTableRequestBody.builder().table(table.build()).build()
    request = CreateAppTableRequest.builder().app_token(APP_TOKEN).request_body(body).build()
    return client.bitable.v1.app_table.create(request)


def test_tables_are_created_listed_and_deleted_with_the_platforms_limits(fs: Harness) -> None:
    fs.reset(table_fields=DAILY_FIELDS, max_tables=3)
    client = fs.client()
    made = _create_table(client, " 本地推日报 2026-02 ", [("同步键", 1), ("消耗(元)", 2)])
    assert made.success(), made.msg
    table_id = made.data.table_id
    assert len(made.data.field_id_list) == 2 and made.data.default_view_id
    snapshot = fs.table(APP_TOKEN, table_id)
    assert snapshot["name"] == "本地推日报 2026-02"  # trimmed
    assert [f["field_name"] for f in snapshot["fields"]] == ["同步键", "消耗(元)"]
    assert snapshot["fields"][0]["is_primary"] and not snapshot["fields"][1]["is_primary"]
    assert snapshot["fields"][1]["property"]["formatter"] == "0.00"
    assert [f["field_id"] for f in snapshot["fields"]] == made.data.field_id_list

    assert _create_table(client, "本地推日报 2026-02", None).code == 1254013  # names are unique
    assert _create_table(client, "a/b", None).code == 1254001
    assert _create_table(client, "x" * 101, None).code == 1254001
    twice = _create_table(client, "本地推日报 2026-03", [("同步键", 1), ("同步键", 1)])
    assert twice.code == 1254014
    assert "本地推日报 2026-03" not in {t["name"] for t in _tables(fs)}  # nothing kept
    bare = _create_table(client, "本地推日报 2026-03", None)  # no fields: the primary only
    assert bare.success() and bare.data.field_id_list is None
    assert [f["field_name"] for f in fs.table(APP_TOKEN, bare.data.table_id)["fields"]] == ["文本"]
    assert _create_table(client, "本地推日报 2026-04", None).code == 1254100  # 3 a Base here

    listed = client.bitable.v1.app_table.list(
        ListAppTableRequest.builder().app_token(APP_TOKEN).page_size(2).build()
    )
    assert listed.success() and listed.data.has_more and len(listed.data.items) == 2
    rest = client.bitable.v1.app_table.list(
        ListAppTableRequest.builder()
        .app_token(APP_TOKEN)
        .page_size(2)
        .page_token(listed.data.page_token)
        .build()
    )
    assert [t.table_id for t in listed.data.items + rest.data.items] == [
        TABLE_ID,
        table_id,
        bare.data.table_id,
    ]

    gone = client.bitable.v1.app_table.delete(
        DeleteAppTableRequest.builder().app_token(APP_TOKEN).table_id(table_id).build()
    )
    assert gone.success()
    path = f"/open-apis/bitable/v1/apps/{APP_TOKEN}/tables/{table_id}/records/search"
    assert fs.call("POST", path, json={})[1]["code"] == 1254041  # a deleted table
    again = client.bitable.v1.app_table.delete(
        DeleteAppTableRequest.builder().app_token(APP_TOKEN).table_id(table_id).build()
    )
    assert again.code == 1254041


def _tables(fs: Harness) -> list[dict[str, Any]]:
    return requests.get(f"{fs.url}/_sandbox/feishu/tables/{APP_TOKEN}", timeout=5).json()["tables"]


def test_tables_in_batches_all_or_nothing_and_deleted_by_a_person(fs: Harness) -> None:
    base = f"/open-apis/bitable/v1/apps/{APP_TOKEN}/tables"
    made = fs.call("POST", base + "/batch_create", json={"tables": [{"name": "A"}, {"name": "B"}]})
    assert made[1]["code"] == 0 and len(made[1]["data"]["table_ids"]) == 2
    dup = fs.call("POST", base + "/batch_create", json={"tables": [{"name": "C"}, {"name": "A"}]})
    assert dup[1]["code"] == 1254013
    assert sorted(t["name"] for t in _tables(fs)) == ["A", "B", "广告日报"]  # no C
    a, b = made[1]["data"]["table_ids"]
    unknown = fs.call("POST", base + "/batch_delete", json={"table_ids": [a, "tblNoSuch"]})
    assert unknown[1]["code"] == 1254041 and len(_tables(fs)) == 3  # nothing deleted
    too_many = fs.call("POST", base + "/batch_delete", json={"table_ids": [a] * 51})
    assert too_many[1]["code"] == 1254001
    assert fs.call("POST", base + "/batch_delete", json={"table_ids": [a, b]})[1]["code"] == 0

    # A person deletes the last table: the Base remains, its table ids answer 1254041.
    person = requests.delete(f"{fs.url}/_sandbox/feishu/tables/{APP_TOKEN}/{TABLE_ID}", timeout=5)
    assert person.json()["ok"] and _tables(fs) == []
    listed = fs.call("GET", base)[1]
    assert listed["code"] == 0 and listed["data"]["total"] == 0
    assert fs.call("POST", TABLE + "/records/search", json={})[1]["code"] == 1254041
    assert fs.call("GET", "/open-apis/bitable/v1/apps/bascnNoSuchBase/tables")[1]["code"] == 1254040
    assert fs.sandbox.stats()["tables_deleted"] == 3


def test_stats_count_calls_and_messages(fs: Harness) -> None:
    client = fs.client()
    _send(client, {"text": "a"})
    fs.create([row("a")])
    stats = fs.sandbox.stats()
    assert stats["messages_sent"] == 1 and stats["writes"] == 1
    assert stats["calls"]["POST /open-apis/im/v1/messages"] == 1
    assert stats["tables"][f"{APP_TOKEN}/{TABLE_ID}"] == 1
    served = requests.get(f"{fs.url}/_sandbox/stats", timeout=5).json()["feishu"]
    assert served["records_created"] == 1
