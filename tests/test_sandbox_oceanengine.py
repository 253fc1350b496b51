"""The Ocean Engine sandbox over real HTTP: OAuth, rotation, strict report params, data, faults."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
from werkzeug.serving import make_server

from adsync.sandbox.oceanengine import OceanEngineSandbox
from adsync.sandbox.server import create_app

TODAY = "2026-02-12"
APP_ID = "1700000000000001"
SECRET = "sandbox-oe-secret"
ALL_METRICS = ["stat_cost", "show_cnt", "click_cnt", "convert_cnt", "clue_pay_order_cnt"]
PROMOTION = "/open_api/v3.0/local/report/promotion/get/"
ACCOUNT = "/open_api/v3.0/local/report/account/get/"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _serve(seed: int) -> tuple[Any, threading.Thread, str]:
    app = create_app(platforms=[OceanEngineSandbox(seed=seed)])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    # Request lines can carry ?access_token=...; keep them out of the test output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server, thread, url = _serve(seed=1)
    yield url
    server.shutdown()
    thread.join(timeout=5)


class OE:
    """A tiny client for the tests: raw requests, so every check sees exactly what went over."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.http.post(self.base + path, json=body or {}, timeout=5).json()

    def get(self, path: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return self.http.get(self.base + path, params=params, timeout=5, **kw).json()

    def reset(self, **options: Any) -> None:
        assert self.post("/_sandbox/reset", {"oceanengine": {"today": TODAY, **options}})["ok"]

    def faults(self, **cfg: Any) -> None:
        r = self.http.post(self.base + "/_sandbox/faults", json={"oceanengine": cfg}, timeout=5)
        assert r.status_code == 200, r.text

    def clock(self, offset: float) -> None:
        self.post("/_sandbox/oceanengine/clock", {"offset_seconds": offset})

    def code(self, **body: Any) -> str:
        return self.post("/_sandbox/oceanengine/auth_code", body)["auth_code"]

    def exchange(self, code: str, **extra: Any) -> dict[str, Any]:
        body = {"app_id": int(APP_ID), "secret": SECRET, "auth_code": code, **extra}
        return self.post("/open_api/oauth2/access_token/", body)

    def authorize(self, **body: Any) -> dict[str, Any]:
        resp = self.exchange(self.code(**body))
        assert resp["code"] == 0, resp
        return resp["data"]

    def refresh(self, token: str, **extra: Any) -> dict[str, Any]:
        body = {"app_id": APP_ID, "secret": SECRET, "refresh_token": token, **extra}
        return self.post("/open_api/oauth2/refresh_token/", body)

    def report(self, token: str | None, path: str = PROMOTION, **params: Any) -> dict[str, Any]:
        query = {
            "start_date": "2026-02-05",
            "end_date": "2026-02-11",
            "time_granularity": "TIME_GRANULARITY_DAILY",
            "metrics": json.dumps(ALL_METRICS),
            "page": 1,
            "page_size": 100,
            **params,
        }
        query = {k: v for k, v in query.items() if v is not None}
        headers = {"Access-Token": token} if token is not None else {}
        return self.get(path, query, headers=headers)

    def all_pages(self, token: str, **params: Any) -> tuple[list[dict[str, Any]], list[dict]]:
        rows: list[dict[str, Any]] = []
        infos: list[dict[str, Any]] = []
        page = 1
        while True:
            resp = self.report(token, page=page, **params)
            assert resp["code"] == 0, resp
            rows += resp["data"]["promotion_list"]
            infos.append(resp["data"]["page_info"])
            if page >= resp["data"]["page_info"]["total_page"]:
                return rows, infos
            page += 1

    def truth(
        self, account_id: int | None = None, start: str = "2026-02-05", end: str = "2026-02-11"
    ):
        params: dict[str, Any] = {"start_date": start, "end_date": end}
        if account_id is not None:
            params["local_account_id"] = account_id
        return self.get("/_sandbox/oceanengine/truth", params)

    def stats(self) -> dict[str, Any]:
        return self.get("/_sandbox/stats")["oceanengine"]


@pytest.fixture
def oe(base_url: str) -> OE:
    client = OE(base_url)
    client.reset()
    return client


def _busiest_account(oe: OE, start: str, end: str) -> int:
    accounts = oe.truth(start=start, end=end)["accounts"]
    return max(accounts, key=lambda a: len(a["rows"]))["local_account_id"]


# -- authorization page and auth codes ---------------------------------------------------------


def test_auth_page_redirects_with_code_and_state(oe: OE) -> None:
    page = oe.base + "/audit/oauth.html"
    params = {"app_id": APP_ID, "redirect_uri": "https://bot.example/cb?x=1", "state": "s-42"}
    r = requests.get(page, params=params, allow_redirects=False, timeout=5)
    assert r.status_code == 302
    location = urlsplit(r.headers["Location"])
    query = parse_qs(location.query)
    assert location.netloc == "bot.example" and location.path == "/cb"
    assert query["state"] == ["s-42"] and query["x"] == ["1"]
    data = oe.exchange(query["auth_code"][0])
    assert data["code"] == 0
    grant = oe.get("/_sandbox/oceanengine/grant")
    # The simulated user ticked every account.
    assert data["data"]["advertiser_ids"] == grant["all_account_ids"] == grant["account_ids"]
    assert data["data"]["advertiser_id"] == grant["account_ids"][0]

    for bad, word in (
        ({"redirect_uri": "https://bot.example/cb"}, "app_id"),
        ({"app_id": "999", "redirect_uri": "https://bot.example/cb"}, "app_id"),
        ({"app_id": APP_ID}, "redirect_uri"),
    ):
        r = requests.get(page, params=bad, allow_redirects=False, timeout=5)
        assert r.status_code == 400 and word in r.text and "text/html" in r.headers["Content-Type"]


def test_auth_code_is_single_use(oe: OE) -> None:
    code = oe.code()
    first = oe.exchange(code, grant_type="auth_code")
    assert first["code"] == 0
    data = first["data"]
    assert data["expires_in"] == 86399 and data["refresh_token_expires_in"] == 2591999
    assert all(isinstance(i, int) for i in data["advertiser_ids"])
    again = oe.exchange(code)
    assert again["code"] == 40110 and again["message"] == "auth_code已过期，请重新授权"
    assert again["data"] == {} and again["request_id"]
    assert oe.exchange("not-a-code")["code"] == 40110


def test_auth_code_expires_after_ten_minutes(oe: OE) -> None:
    fresh, stale = oe.code(), oe.code()
    oe.clock(599)
    assert oe.exchange(fresh)["code"] == 0
    oe.clock(601)
    assert oe.exchange(stale)["code"] == 40110


def test_exchange_checks_app_credentials_and_grant_type(oe: OE) -> None:
    code = oe.code()
    bad_secret = {"app_id": APP_ID, "secret": "wrong", "auth_code": code}
    assert oe.post("/open_api/oauth2/access_token/", bad_secret)["code"] == 40101
    bad_app = {"app_id": 1700000000000002, "secret": SECRET, "auth_code": code}
    assert oe.post("/open_api/oauth2/access_token/", bad_app)["code"] == 40101
    assert oe.exchange(code, grant_type="refresh_token")["code"] == 40108
    # None of the failures above consumed the code; app_id as a string of digits is fine.
    ok = oe.post("/open_api/oauth2/access_token/", {**bad_app, "app_id": APP_ID})
    assert ok["code"] == 0
    form = requests.post(oe.base + "/open_api/oauth2/access_token/", data=bad_app, timeout=5)
    assert form.json()["code"] == 40001  # a form post instead of JSON is a client bug


def test_reauthorizing_replaces_every_earlier_token(oe: OE) -> None:
    old = oe.authorize()
    new = oe.authorize(account_ids=old["advertiser_ids"][:2])
    assert new["advertiser_ids"] == old["advertiser_ids"][:2]
    assert (
        oe.get("/open_api/2/user/info/", headers={"Access-Token": old["access_token"]})["code"]
        == 40105
    )
    assert oe.refresh(old["refresh_token"])["code"] == 40107
    # The narrower grant is what counts now.
    outside = old["advertiser_ids"][2]
    assert oe.report(new["access_token"], local_account_id=outside)["code"] == 40002


# -- refresh and rotation ----------------------------------------------------------------------


def test_refresh_rotates_strictly(oe: OE) -> None:
    first = oe.authorize()
    account = first["advertiser_ids"][0]
    resp = oe.refresh(first["refresh_token"], grant_type="refresh_token")
    assert resp["code"] == 0
    second = resp["data"]
    assert set(second) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
    }
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    # No grace window for the old pair.
    assert oe.refresh(first["refresh_token"])["code"] == 40107
    assert oe.report(first["access_token"], local_account_id=account)["code"] == 40105
    assert oe.report(second["access_token"], local_account_id=account)["code"] == 0
    third = oe.refresh(second["refresh_token"])  # no grant_type, as the ktao project sends
    assert third["code"] == 0
    stats = oe.stats()
    assert (stats["refresh_ok"], stats["refresh_failed"], stats["exchanges"]) == (2, 1, 1)
    assert stats["errors"] == {"40107": 1, "40105": 1}


def test_refresh_rejects_bad_secret_and_grant_type(oe: OE) -> None:
    tokens = oe.authorize()
    assert oe.refresh(tokens["refresh_token"], secret="nope")["code"] == 40101
    assert oe.refresh(tokens["refresh_token"], grant_type="auth_code")["code"] == 40108
    # Rejected calls did not rotate anything.
    assert oe.refresh(tokens["refresh_token"])["code"] == 0


def test_expired_tokens_give_40102_and_40103(oe: OE) -> None:
    tokens = oe.authorize()
    account = tokens["advertiser_ids"][0]
    oe.post("/_sandbox/oceanengine/expire", {"access": True})
    assert oe.report(tokens["access_token"], local_account_id=account)["code"] == 40102
    renewed = oe.refresh(tokens["refresh_token"])["data"]
    assert oe.report(renewed["access_token"], local_account_id=account)["code"] == 0
    oe.post("/_sandbox/oceanengine/expire", {"access": False, "refresh": True})
    assert oe.refresh(renewed["refresh_token"])["code"] == 40103


def test_access_token_expires_on_the_sandbox_clock(oe: OE) -> None:
    tokens = oe.authorize()
    user_info = "/open_api/2/user/info/"
    headers = {"Access-Token": tokens["access_token"]}
    info = oe.get(user_info, headers=headers)
    assert info["code"] == 0 and info["data"]["app_id"] == int(APP_ID)
    oe.clock(86399)
    assert oe.get(user_info, headers=headers)["code"] == 40102
    oe.clock(2591999)
    assert oe.refresh(tokens["refresh_token"])["code"] == 40103


def test_revoke_kills_the_whole_grant(oe: OE) -> None:
    tokens = oe.authorize()
    oe.post("/_sandbox/oceanengine/revoke")
    assert (
        oe.report(tokens["access_token"], local_account_id=tokens["advertiser_id"])["code"] == 40105
    )
    assert oe.refresh(tokens["refresh_token"])["code"] == 40107


def test_advertiser_list_and_denied_accounts(oe: OE) -> None:
    tokens = oe.authorize()
    denied, invalid = tokens["advertiser_ids"][1], tokens["advertiser_ids"][2]
    # deny: the report refuses the account (40002) while the grant still lists it as valid;
    # invalidate: the relationship is gone (is_valid false), and the report refuses it too.
    oe.post("/_sandbox/oceanengine/accounts", {"deny": [denied], "invalidate": [invalid]})
    listing = oe.get("/open_api/oauth2/advertiser/get/", {"access_token": tokens["access_token"]})
    assert listing["code"] == 0
    rows = {row["account_id"]: row for row in listing["data"]["list"]}
    assert list(rows) == tokens["advertiser_ids"]
    assert rows[denied]["is_valid"] is True and rows[invalid]["is_valid"] is False
    assert all(r["account_type"] == "ADVERTISER" and r["account_name"] for r in rows.values())
    assert oe.report(tokens["access_token"], local_account_id=denied)["code"] == 40002
    assert oe.report(tokens["access_token"], local_account_id=invalid)["code"] == 40002
    grown = oe.post("/_sandbox/oceanengine/accounts", {"add": 2})
    assert len(grown["account_ids"]) == len(tokens["advertiser_ids"]) + 2
    new_account = grown["account_ids"][-1]
    assert oe.report(tokens["access_token"], local_account_id=new_account)["code"] == 0


# -- report parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code", "word"),
    [
        ({"metrics": "['stat_cost']"}, 40001, "metrics"),  # a Python repr, the real trap
        ({"metrics": "stat_cost"}, 40001, "metrics"),
        ({"metrics": None}, 40001, "metrics"),
        ({"metrics": '["stat_cost","spend"]'}, 40001, "spend"),
        ({"metrics": "[]"}, 40001, "metrics"),
        ({"page_size": 30}, 40001, "page_size"),
        ({"page_size": 1000}, 40001, "page_size"),
        ({"page": 0}, 40001, "page"),
        ({"page": "x"}, 40001, "page"),
        ({"local_account_id": None}, 40001, "local_account_id"),
        ({"local_account_id": "12ab"}, 40001, "local_account_id"),
        ({"start_date": "2026/02/05"}, 40001, "start_date"),
        ({"end_date": None}, 40001, "end_date"),
        ({"start_date": "2026-02-11", "end_date": "2026-02-05"}, 40001, "start_date"),
        ({"start_date": "2025-01-01", "end_date": "2026-02-11"}, 40001, "365"),
        ({"start_date": "2025-02-01", "end_date": "2025-02-02"}, 40001, "start_date"),
        ({"time_granularity": "DAILY"}, 40001, "time_granularity"),
        ({"time_granularity": "TIME_GRANULARITY_HOURLY", "start_date": "2026-02-01"}, 40001, "7"),
        ({"order_field": "ctr"}, 40001, "order_field"),
        ({"order_field": "stat_cost", "order_type": "UP"}, 40001, "order_type"),
        ({"filtering": "{'promotion_ids': [1]}"}, 40001, "filtering"),
        ({"filtering": '{"promotion_ids": [1.5]}'}, 40001, "promotion_ids"),
        ({"filtering": '{"status": "ALL"}'}, 40003, "status"),
    ],
)
def test_report_parameters_are_checked(oe: OE, params: dict, code: int, word: str) -> None:
    tokens = oe.authorize()
    query = {"local_account_id": tokens["advertiser_id"], **params}
    resp = oe.report(tokens["access_token"], **query)
    assert resp["code"] == code, resp
    assert word in resp["message"] and resp["data"] == {}


def test_report_token_errors(oe: OE) -> None:
    tokens = oe.authorize()
    account = tokens["advertiser_id"]
    missing = oe.report(None, local_account_id=account)
    assert missing["code"] == 40104 and missing["message"] == "The access_token is empty."
    # The token belongs in the Access-Token header, not the query string.
    in_query = oe.report(None, local_account_id=account, access_token=tokens["access_token"])
    assert in_query["code"] == 40104
    bearer = oe.report("Bearer " + tokens["access_token"], local_account_id=account)
    assert bearer["code"] == 40105
    # Repeated metrics (requests' encoding of a Python list) are not a JSON array either.
    repeated = oe.report(tokens["access_token"], local_account_id=account, metrics=ALL_METRICS)
    assert repeated["code"] == 40001


def test_account_outside_the_grant_is_40002(oe: OE) -> None:
    everyone = oe.get("/_sandbox/oceanengine/grant")["all_account_ids"]
    tokens = oe.authorize(account_ids=everyone[:3])
    for account in everyone[3:] + [1234567890123456]:
        assert oe.report(tokens["access_token"], local_account_id=account)["code"] == 40002


# -- report data -------------------------------------------------------------------------------


def test_pages_concatenate_to_the_truth(oe: OE) -> None:
    tokens = oe.authorize()
    start, end = "2026-01-01", "2026-02-11"
    for account in tokens["advertiser_ids"]:
        rows, infos = oe.all_pages(
            tokens["access_token"],
            local_account_id=account,
            start_date=start,
            end_date=end,
            page_size=10,
        )
        truth = oe.truth(account, start, end)["rows"]
        assert rows == truth
        total = infos[0]["total_number"]
        assert total == len(truth)
        assert all(i["total_page"] == math.ceil(total / 10) for i in infos)
        assert all(i["page_size"] == 10 for i in infos)
        assert [i["page"] for i in infos] == list(range(1, len(infos) + 1))
        keys = [(r["stat_time_day"], r["promotion_id"]) for r in rows]
        assert len(keys) == len(set(keys))
        beyond = oe.report(
            tokens["access_token"],
            local_account_id=account,
            start_date=start,
            end_date=end,
            page_size=10,
            page=len(infos) + 1,
        )
        assert beyond["code"] == 0 and beyond["data"]["promotion_list"] == []


def test_ids_are_exact_19_digit_integers(oe: OE) -> None:
    tokens = oe.authorize()
    account = _busiest_account(oe, "2026-02-05", "2026-02-11")
    raw = requests.get(
        oe.base + PROMOTION,
        params={
            "local_account_id": account,
            "start_date": "2026-02-05",
            "end_date": "2026-02-11",
            "metrics": json.dumps(ALL_METRICS),
            "page_size": 100,
        },
        headers={"Access-Token": tokens["access_token"]},
        timeout=5,
    ).text
    rows = json.loads(raw)["data"]["promotion_list"]
    truth = oe.truth(account)["rows"]
    assert rows
    for row, expected in zip(rows, truth, strict=True):
        for key in ("promotion_id", "project_id"):
            assert type(row[key]) is int and row[key] == expected[key]
            assert row[key] > 2**53 and len(str(row[key])) == 19
            assert f'"{key}":{row[key]}' in raw  # a JSON integer, never a float or a string


def test_rows_carry_only_requested_metrics(oe: OE) -> None:
    tokens = oe.authorize()
    account = _busiest_account(oe, "2026-02-05", "2026-02-11")
    metrics = ["stat_cost", "click_cnt", "ctr", "cpc_platform", "conversion_cost"]
    resp = oe.report(tokens["access_token"], local_account_id=account, metrics=json.dumps(metrics))
    rows = resp["data"]["promotion_list"]
    ident = {"promotion_id", "promotion_name", "project_id", "project_name", "stat_time_day"}
    assert rows and all(set(r) == ident | set(metrics) for r in rows)
    for r in rows:
        assert isinstance(r["stat_cost"], float) and round(r["stat_cost"], 2) == r["stat_cost"]
        assert type(r["click_cnt"]) is int
        assert all(isinstance(r[m], float) for m in ("ctr", "cpc_platform", "conversion_cost"))
        assert any("\u4e00" <= ch <= "\u9fff" for ch in r["promotion_name"] + r["project_name"])


def test_plausible_magnitudes_and_one_empty_account(oe: OE) -> None:
    accounts = oe.truth(start="2026-01-12", end="2026-02-11")["accounts"]
    empty = [a for a in accounts if not a["rows"]]
    assert len(accounts) == 7 and empty
    rows = [r for a in accounts for r in a["rows"]]
    live = [r for r in rows if r["show_cnt"]]
    assert len(live) > 100
    assert 50 <= sorted(r["stat_cost"] for r in live)[len(live) // 2] <= 1500
    assert all(r["click_cnt"] <= r["show_cnt"] and r["convert_cnt"] <= r["click_cnt"] for r in rows)
    assert max(r["show_cnt"] for r in rows) < 40_000 and max(r["click_cnt"] for r in rows) < 300
    assert sum(r["clue_pay_order_cnt"] == 0 for r in rows) > 0.8 * len(rows)
    # Promotions start, end and pause: some have fewer rows than the 31 days of the range.
    per_promotion: dict[int, int] = {}
    for r in rows:
        per_promotion[r["promotion_id"]] = per_promotion.get(r["promotion_id"], 0) + 1
    assert min(per_promotion.values()) < 31 and max(per_promotion.values()) <= 31
    assert any(r["stat_cost"] == 0.0 and r["show_cnt"] == 0 for r in rows)  # like the sample
    assert all(1_000_000_000_000_000 <= a["local_account_id"] < 10**16 for a in accounts)


def test_dense_world_has_every_promotion_every_day(oe: OE) -> None:
    # The load-test world: no empty account, no pauses, no starts or ends inside the window.
    oe.reset(accounts=6, promotions_per_account=5, dense=True)
    start, end = "2025-02-12", "2026-02-11"  # the oldest day a report may ask for .. yesterday
    accounts = oe.truth(start=start, end=end)["accounts"]
    assert len(accounts) == 6
    for account in accounts:
        days: dict[str, set[int]] = {}
        for r in account["rows"]:
            days.setdefault(r["stat_time_day"], set()).add(r["promotion_id"])
        assert len(days) == 365 and all(len(ids) == 5 for ids in days.values())
        assert len(account["rows"]) == 365 * 5
    tokens = oe.authorize()
    resp = oe.report(
        tokens["access_token"],
        local_account_id=accounts[1]["local_account_id"],
        start_date="2026-02-08",
        end_date="2026-02-11",
        page_size=10,
    )
    assert resp["data"]["page_info"]["total_number"] == 20
    r = requests.post(oe.base + "/_sandbox/oceanengine/reset", json={"dense": "yes"}, timeout=5)
    assert r.status_code == 400 and "dense" in r.text


def test_same_seed_same_data_other_seed_other_data(oe: OE) -> None:
    truth = oe.truth(start="2026-01-01", end="2026-02-11")
    server, thread, url = _serve(seed=1)
    try:
        twin = OE(url)
        twin.reset()
        assert twin.truth(start="2026-01-01", end="2026-02-11") == truth
        twin.reset(seed=2)
        assert twin.truth(start="2026-01-01", end="2026-02-11") != truth
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_total_hourly_and_account_reports_agree_with_daily(oe: OE) -> None:
    tokens = oe.authorize()
    token = tokens["access_token"]
    account = _busiest_account(oe, "2026-02-05", "2026-02-11")
    truth = oe.truth(account)["rows"]
    total = oe.report(token, local_account_id=account, time_granularity="TIME_GRANULARITY_TOTAL")
    by_promotion: dict[int, int] = {}
    for r in truth:
        by_promotion[r["promotion_id"]] = by_promotion.get(r["promotion_id"], 0) + r["show_cnt"]
    assert {r["promotion_id"]: r["show_cnt"] for r in total["data"]["promotion_list"]} == (
        by_promotion
    )
    assert all("stat_time_day" not in r for r in total["data"]["promotion_list"])

    # account/get without time_granularity: ONE aggregated row.
    one = oe.report(token, ACCOUNT, local_account_id=account, time_granularity=None)
    assert len(one["data"]["data_list"]) == 1
    cents = round(sum(r["stat_cost"] for r in truth) * 100)
    assert round(one["data"]["data_list"][0]["stat_cost"] * 100) == cents
    daily = oe.report(token, ACCOUNT, local_account_id=account)["data"]["data_list"]
    assert [d["stat_time_day"] for d in daily] == sorted({r["stat_time_day"] for r in truth})
    for day in daily:
        shows = sum(r["show_cnt"] for r in truth if r["stat_time_day"] == day["stat_time_day"])
        assert day["show_cnt"] == shows

    hourly = oe.report(
        token,
        local_account_id=account,
        start_date="2026-02-10",
        end_date="2026-02-11",
        time_granularity="TIME_GRANULARITY_HOURLY",
    )["data"]["promotion_list"]
    assert sum(r["click_cnt"] for r in hourly) == sum(
        r["click_cnt"] for r in truth if r["stat_time_day"] >= "2026-02-10"
    )
    assert all(r["stat_time_hour"].startswith(r["stat_time_day"]) for r in hourly)


def test_order_field_and_promotion_filter(oe: OE) -> None:
    tokens = oe.authorize()
    account = _busiest_account(oe, "2026-02-05", "2026-02-11")
    resp = oe.report(tokens["access_token"], local_account_id=account, order_field="stat_cost")
    costs = [r["stat_cost"] for r in resp["data"]["promotion_list"]]
    assert costs == sorted(costs, reverse=True)
    wanted = resp["data"]["promotion_list"][0]["promotion_id"]
    filtered = oe.report(
        tokens["access_token"],
        local_account_id=account,
        filtering=json.dumps({"promotion_ids": [wanted]}),
    )
    ids = {r["promotion_id"] for r in filtered["data"]["promotion_list"]}
    assert ids == {wanted}


def test_today_is_partial_and_the_future_is_empty(oe: OE) -> None:
    tokens = oe.authorize()
    account = tokens["advertiser_ids"][0]  # account 0 always has a running promotion

    def at_hour(hour: int) -> list[dict[str, Any]]:
        real_day = datetime.now(SHANGHAI).date()
        moment = datetime(real_day.year, real_day.month, real_day.day, hour, 30, tzinfo=SHANGHAI)
        oe.clock(moment.timestamp() - time.time())
        resp = oe.report(
            tokens["access_token"],
            local_account_id=account,
            start_date=TODAY,
            end_date="2026-02-20",
        )
        assert resp["code"] == 0
        return resp["data"]["promotion_list"]

    assert at_hour(0) == []  # nothing reported yet just after midnight
    noon, evening = at_hour(12), at_hour(20)
    assert {r["stat_time_day"] for r in noon + evening} <= {TODAY}
    if noon:  # a paused day has no row at all
        assert sum(r["stat_cost"] for r in evening) >= sum(r["stat_cost"] for r in noon)
        assert sum(r["show_cnt"] for r in evening) >= sum(r["show_cnt"] for r in noon)


def test_adjust_corrects_an_account_day(oe: OE) -> None:
    account = _busiest_account(oe, "2026-02-05", "2026-02-11")
    before = oe.truth(account, "2026-02-09", "2026-02-10")["rows"]
    oe.post(
        "/_sandbox/oceanengine/adjust", {"account_id": account, "date": "2026-02-10", "factor": 2}
    )
    after = oe.truth(account, "2026-02-09", "2026-02-10")["rows"]
    for old, new in zip(before, after, strict=True):
        if old["stat_time_day"] == "2026-02-10":
            assert new["show_cnt"] == old["show_cnt"] * 2
            assert round(new["stat_cost"] * 100) == round(old["stat_cost"] * 100) * 2
        else:
            assert new == old


# -- faults ------------------------------------------------------------------------------------


def test_random_business_and_http_faults(oe: OE) -> None:
    tokens = oe.authorize()
    account = tokens["advertiser_id"]
    oe.faults(error_rate=1.0, error_codes=[50000], paths=["/local/report/"])
    resp = oe.report(tokens["access_token"], local_account_id=account)
    assert resp["code"] == 50000 and resp["data"] == {} and resp["request_id"]
    assert (
        oe.get("/open_api/2/user/info/", headers={"Access-Token": tokens["access_token"]})["code"]
        == 0
    )  # paths limits the faults
    oe.faults(error_rate=1.0, http_error_codes=[503])
    raw = requests.get(oe.base + PROMOTION, params={"local_account_id": account}, timeout=5)
    assert raw.status_code == 503 and not raw.text.lstrip().startswith("{")
    errors = oe.stats()["errors"]
    assert errors["50000"] == 1 and errors["http_503"] == 1


def test_scripted_refresh_failures_do_not_rotate(oe: OE) -> None:
    tokens = oe.authorize()
    oe.faults(scripted=[{"path": "refresh_token", "code": 50000, "times": 2}])
    assert oe.refresh(tokens["refresh_token"])["code"] == 50000
    assert oe.refresh(tokens["refresh_token"])["code"] == 50000
    assert oe.refresh(tokens["refresh_token"])["code"] == 0
    stats = oe.stats()
    assert (stats["refresh_ok"], stats["refresh_failed"]) == (1, 2)


def test_latency_and_rate_limit(oe: OE) -> None:
    tokens = oe.authorize()
    headers = {"Access-Token": tokens["access_token"]}
    oe.faults(latency_ms=150)
    started = time.monotonic()
    assert oe.get("/open_api/2/user/info/", headers=headers)["code"] == 0
    assert time.monotonic() - started >= 0.15
    oe.faults(rate_limit_qps=3)
    codes = [oe.get("/open_api/2/user/info/", headers=headers)["code"] for _ in range(6)]
    assert codes[:3] == [0, 0, 0] and 40100 in codes[3:]
    assert oe.stats()["errors"]["40100"] >= 1


# -- control surface ---------------------------------------------------------------------------


def test_control_routes_never_expose_tokens(oe: OE) -> None:
    tokens = oe.authorize()
    grant_text = requests.get(oe.base + "/_sandbox/oceanengine/grant", timeout=5).text
    stats_text = requests.get(oe.base + "/_sandbox/stats", timeout=5).text
    for secret in (tokens["access_token"], tokens["refresh_token"], SECRET):
        assert secret not in grant_text and secret not in stats_text
    grant = json.loads(grant_text)
    assert grant["access_token_prefix"] == tokens["access_token"][:4]
    assert [a["id"] for a in grant["accounts"]] == tokens["advertiser_ids"]
    assert requests.get(oe.base + "/_sandbox/oceanengine/token_check", timeout=5).status_code == 404


def test_bad_options_and_control_input_are_refused(oe: OE) -> None:
    r = requests.post(oe.base + "/_sandbox/oceanengine/reset", json={"acounts": 3}, timeout=5)
    assert r.status_code == 400 and "acounts" in r.text
    r = requests.post(oe.base + "/_sandbox/oceanengine/accounts", json={"deny": [1]}, timeout=5)
    assert r.status_code == 400
    r = requests.post(oe.base + "/_sandbox/oceanengine/expire", json={}, timeout=5)
    assert r.status_code == 400  # nothing to expire before an authorization
    oe.reset(accounts=2, promotions_per_account=1, app_id="42", secret="s")
    grant = oe.get("/_sandbox/oceanengine/grant")
    assert grant["app_id"] == "42" and len(grant["all_account_ids"]) == 2
    assert grant["today"] == TODAY


# -- the kinds of authorization (oauth2/advertiser/get account_type) ------------------------------

CUSTOMER_CENTER = "/open_api/v3.0/customer_center/account/list/"
LIFE_LIST = "/open_api/v3.0/local/life/advertiser/list/"


def _listing(oe: OE, token: str, path: str, **params: Any) -> dict[str, Any]:
    query = {k: v for k, v in params.items() if v is not None}
    return oe.get(path, query, headers={"Access-Token": token})


def _types(oe: OE, token: str) -> dict[int, dict[str, Any]]:
    listing = oe.get("/open_api/oauth2/advertiser/get/", {"access_token": token})
    assert listing["code"] == 0, listing
    return {row["account_id"]: row for row in listing["data"]["list"]}


def test_an_organisation_grant_lists_its_local_accounts_and_checks_every_parameter(
    oe: OE,
) -> None:
    locals_ = [a["local_account_id"] for a in oe.truth()["accounts"]]
    minted = oe.post(
        "/_sandbox/oceanengine/auth_code",
        {"grants": [{"type": "CUSTOMER_ADMIN", "account_ids": locals_[:3]}]},
    )
    [org] = minted["granted"]
    tokens = oe.exchange(minted["auth_code"])["data"]
    token, org_id = tokens["access_token"], org["account_id"]
    assert tokens["advertiser_ids"] == [
        org_id
    ]  # the grant holds the organisation, not its accounts
    assert _types(oe, token)[org_id]["account_type"] == "CUSTOMER_ADMIN"
    ok = _listing(oe, token, CUSTOMER_CENTER, account_id=org_id, filter='{"account_type":"LOCAL"}')
    assert ok["code"] == 0, ok
    assert [a["account_id"] for a in ok["data"]["accounts"]] == locals_[:3]
    assert all(a["account_type"] == "LOCAL" and a["account_name"] for a in ok["data"]["accounts"])
    assert ok["data"]["page_info"] == {
        "page": 1,
        "page_size": 10,
        "total_number": 3,
        "total_page": 1,
    }
    ad = _listing(oe, token, CUSTOMER_CENTER, account_id=org_id, filter='{"account_type":"AD"}')
    assert [a["account_id"] for a in ad["data"]["accounts"]] == org["ad_accounts"]
    # The organisation's 本地推 accounts answer the report; its own id and its AD account do not.
    assert oe.report(token, local_account_id=locals_[0])["code"] == 0
    assert oe.report(token, local_account_id=locals_[3])["code"] == 40002
    assert oe.report(token, local_account_id=org_id)["code"] == 40002
    not_local = oe.report(token, local_account_id=org["ad_accounts"][0])
    assert not_local["code"] == 40001 and "账户ID错误" in not_local["message"]
    for params, word in (
        ({"filter": '{"account_type":"LOCAL"}'}, "account_id is required"),
        ({"account_id": org_id}, "filter is required"),
        ({"account_id": org_id, "filtering": '{"account_type":"LOCAL"}'}, "filter is required"),
        ({"account_id": org_id, "filter": "{'account_type': 'LOCAL'}"}, "JSON-encoded object"),
        ({"account_id": org_id, "filter": "LOCAL"}, "JSON-encoded object"),
        ({"account_id": org_id, "filter": "{}"}, "account_type is required"),
        ({"account_id": org_id, "filter": '{"account_type":"local"}'}, "account_type is required"),
        ({"account_id": org_id, "filter": '{"account_type":"LOCAL","x":1}'}, "unknown filter"),
        (
            {"account_id": org_id, "filter": '{"account_type":"LOCAL"}', "page_size": 101},
            "1 and 100",
        ),
        ({"account_id": org_id, "filter": '{"account_type":"LOCAL"}', "page_size": 0}, "1 and 100"),
        (
            {
                "account_id": org_id,
                "filter": '{"account_type":"LOCAL"}',
                "page": 101,
                "page_size": 100,
            },
            "10000",
        ),
        ({"account_id": "12ab", "filter": '{"account_type":"LOCAL"}'}, "digits"),
    ):
        answer = _listing(oe, token, CUSTOMER_CENTER, **params)
        assert answer["code"] == 40001 and word in answer["message"], (params, answer)
    outside = _listing(
        oe, token, CUSTOMER_CENTER, account_id=locals_[0], filter='{"account_type":"LOCAL"}'
    )
    assert outside["code"] == 40002  # not in the grant
    assert _listing(oe, "", CUSTOMER_CENTER, account_id=org_id)["code"] == 40104
    # Many accounts: every page, in order, 10 a page by default.
    oe.post("/_sandbox/oceanengine/accounts", {"add": 9, "under": org_id})
    pages = [
        _listing(
            oe, token, CUSTOMER_CENTER, account_id=org_id, filter='{"account_type":"LOCAL"}', page=p
        )
        for p in (1, 2)
    ]
    assert [p["data"]["page_info"]["total_page"] for p in pages] == [2, 2]
    listed = [a["account_id"] for p in pages for a in p["data"]["accounts"]]
    assert len(listed) == len(set(listed)) == 12 and listed[:3] == locals_[:3]


def test_a_laike_grant_lists_local_account_ids_without_names(oe: OE) -> None:
    locals_ = [a["local_account_id"] for a in oe.truth()["accounts"]]
    minted = oe.post(
        "/_sandbox/oceanengine/auth_code",
        {"grants": [{"type": "PLATFORM_ROLE_LIFE", "account_ids": locals_[:5]}]},
    )
    [life] = minted["granted"]
    token = oe.exchange(minted["auth_code"])["data"]["access_token"]
    assert _types(oe, token)[life["account_id"]]["account_type"] == "PLATFORM_ROLE_LIFE"
    answer = _listing(oe, token, LIFE_LIST, life_account_id=life["account_id"], page_size=100)
    assert answer["code"] == 0, answer
    items = answer["data"]["adv_list"]
    assert [i["local_account_id"] for i in items] == locals_[:5]
    assert {tuple(sorted(i)) for i in items} == {
        ("account_main_copy_tag", "local_account_id", "local_account_role")
    }  # the SDK's LocalLifeAdvertiserListV30ResponseDataAdvListInner: no names
    assert {i["local_account_role"] for i in items} == {"DIRECT_ACCOUNT", "VIRTUAL_ACCOUNT"}
    direct = _listing(
        oe,
        token,
        LIFE_LIST,
        life_account_id=life["account_id"],
        filtering='{"local_account_role":"DIRECT_ACCOUNT"}',
    )
    assert len(direct["data"]["adv_list"]) == 4
    assert oe.report(token, local_account_id=locals_[4])["code"] == 0
    for params, word in (
        ({}, "life_account_id is required"),
        ({"life_account_id": 0}, "positive integer"),
        ({"life_account_id": life["account_id"], "page_size": 101}, "1 and 100"),
        (
            {"life_account_id": life["account_id"], "filtering": '{"role":"ALL"}'},
            "unknown filtering",
        ),
        ({"life_account_id": life["account_id"], "filtering": "ALL"}, "JSON-encoded object"),
        (
            {"life_account_id": life["account_id"], "filtering": '{"local_account_role":"X"}'},
            "local_account_role",
        ),
    ):
        got = _listing(oe, token, LIFE_LIST, **params)
        assert got["code"] == 40001 and word in got["message"], (params, got)


def test_a_companys_advertiser_id_fails_the_local_report_like_the_platform(oe: OE) -> None:
    locals_ = [a["local_account_id"] for a in oe.truth()["accounts"]]
    minted = oe.post(
        "/_sandbox/oceanengine/auth_code",
        {"account_ids": locals_[:1], "grants": [{"type": "ADVERTISER", "local": False}]},
    )
    advertiser = minted["granted"][1]
    assert advertiser["local"] is False and advertiser["account_name"].endswith("总户")
    token = oe.exchange(minted["auth_code"])["data"]["access_token"]
    kinds = _types(oe, token)
    # The authorization cannot tell them apart: both are ADVERTISER, both valid.
    assert kinds[locals_[0]]["account_type"] == kinds[advertiser["account_id"]]["account_type"]
    refused = oe.report(token, local_account_id=advertiser["account_id"])
    assert refused["code"] == 40001 and "账户ID错误" in refused["message"]
    assert oe.report(token, local_account_id=locals_[0])["code"] == 0


def test_agents_and_invalid_grants(oe: OE) -> None:
    locals_ = [a["local_account_id"] for a in oe.truth()["accounts"]]
    minted = oe.post(
        "/_sandbox/oceanengine/auth_code",
        {
            "grants": [
                {"type": "AGENT", "account_ids": locals_[:2]},
                {"type": "CUSTOMER_OPERATOR", "account_ids": locals_[2:4], "is_valid": False},
                {"type": "ADVERTISER", "account_id": locals_[4], "is_valid": False},
            ]
        },
    )
    agent, org, direct = (g["account_id"] for g in minted["granted"])
    token = oe.exchange(minted["auth_code"])["data"]["access_token"]
    kinds = _types(oe, token)
    assert [kinds[i]["account_type"] for i in (agent, org, direct)] == [
        "AGENT",
        "CUSTOMER_OPERATOR",
        "ADVERTISER",
    ]
    assert [kinds[i]["is_valid"] for i in (agent, org, direct)] == [True, False, False]
    # An agent's accounts answer the report (ADSYNC_ACCOUNTS can name them) but cannot be
    # listed with the organisation endpoint; an invalid grant reaches nothing.
    assert oe.report(token, local_account_id=locals_[0])["code"] == 0
    wrong = _listing(
        oe, token, CUSTOMER_CENTER, account_id=agent, filter='{"account_type":"LOCAL"}'
    )
    assert wrong["code"] == 40001 and "CUSTOMER_ADMIN or CUSTOMER_OPERATOR" in wrong["message"]
    gone = _listing(oe, token, CUSTOMER_CENTER, account_id=org, filter='{"account_type":"LOCAL"}')
    assert gone["code"] == 40002
    assert oe.report(token, local_account_id=locals_[2])["code"] == 40002
    assert oe.report(token, local_account_id=locals_[4])["code"] == 40002
    oe.post("/_sandbox/oceanengine/accounts", {"validate": [org]})
    assert oe.report(token, local_account_id=locals_[2])["code"] == 0


def test_bad_grants_are_refused_at_the_control_api(oe: OE) -> None:
    locals_ = [a["local_account_id"] for a in oe.truth()["accounts"]]
    for grants, word in (
        ([{"type": "LOCAL"}], "account_type"),
        ([{"type": "CUSTOMER_ADMIN", "accounts": [1]}], "unknown grant fields"),
        ([{"type": "CUSTOMER_ADMIN", "account_ids": [1]}], "unknown account ids"),
        ([{"type": "ADVERTISER"}], "not an account id"),
        ([{"type": "ADVERTISER", "account_ids": locals_[:1]}], "one account"),
        ([{"type": "AGENT", "account_id": locals_[0]}], "takes account_ids"),
        ([{"type": "AGENT", "is_valid": "no"}], "true or false"),
        (["CUSTOMER_ADMIN"], "an object"),
    ):
        r = requests.post(
            oe.base + "/_sandbox/oceanengine/auth_code", json={"grants": grants}, timeout=5
        )
        assert r.status_code == 400 and word in r.json()["error"], (grants, r.text)
    r = requests.post(
        oe.base + "/_sandbox/oceanengine/accounts", json={"add": 1, "under": locals_[0]}, timeout=5
    )
    assert r.status_code == 400 and "not a manager" in r.json()["error"]


def test_requests_route_shows_parameter_names_never_values(oe: OE) -> None:
    tokens = oe.authorize()
    oe.get("/open_api/oauth2/advertiser/get/", {"access_token": tokens["access_token"]})
    seen = oe.get("/_sandbox/oceanengine/requests")["requests"]
    assert seen["/open_api/oauth2/access_token/"]["body"] == ["app_id", "auth_code", "secret"]
    assert seen["/open_api/oauth2/advertiser/get/"] == {
        "query": ["access_token"],
        "body": [],
        "access_token_header": False,
    }
    assert tokens["access_token"] not in json.dumps(seen)


def test_user_info_is_strict_about_its_token_and_answers_the_sdk_fields(oe: OE) -> None:
    """GET /open_api/2/user/info/ (official SDK UserInfoV2Api: Access-Token header, no
    parameters): the cheap call `token status --check` makes."""
    tokens = oe.authorize()
    path = "/open_api/2/user/info/"
    ok = oe.get(path, headers={"Access-Token": tokens["access_token"]})
    assert ok["code"] == 0
    assert set(ok["data"]) == {
        "id",
        "display_name",
        "email",
        "app_id",
        "token_scope_list",
        "token_api_list",
        "material_auth_status",
    }
    assert oe.get(path)["code"] == 40104
    assert oe.get(path, headers={"Access-Token": "not-a-token"})["code"] == 40105
    oe.post("/_sandbox/oceanengine/expire", {"access": True})
    assert oe.get(path, headers={"Access-Token": tokens["access_token"]})["code"] == 40102


def test_consenting_again_replaces_the_grant_before_any_exchange(oe: OE) -> None:
    """ "重新授权会覆盖前一次授权" (reference §1.1): the consent itself overwrites the previous
    grant, so its tokens die even if the new code is never exchanged."""
    old = oe.authorize()
    oe.code()  # someone consents again and never finishes
    headers = {"Access-Token": old["access_token"]}
    assert oe.get("/open_api/2/user/info/", headers=headers)["code"] == 40105
    assert oe.refresh(old["refresh_token"])["code"] == 40107
