"""Feishu cards: JSON 2.0 shape, colours, buttons, figures, both languages, the 30 KB limit
with 500 accounts, the terminal rendering, random contents (hypothesis), and one round trip
through lark-oapi to the Feishu sandbox, whose platform-side checks must accept every kind."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsync.bot import cards
from adsync.bot.cards import CARD_LIMIT, card_size, fit, to_text
from adsync.sandbox.feishu import card_problem
from adsync.sync.discovery import AccountsView, ListedAccount, OtherAccount
from adsync.sync.reports import Account
from adsync.sync.runner import AccountResult, RunResult
from adsync.sync.summary import AccountSummary, DayPoint, Summary, Totals
from adsync.sync.tokens import TokenStatus
from adsync.sync.verify import VerifyResult

DAY = date(2026, 2, 11)
NOW = datetime(2026, 2, 11, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
AUTH_URL = "https://open.oceanengine.com/audit/oauth.html?app_id=1700000000000001&state=s1"
REASON_40002 = (
    "Ocean Engine /open_api/v3.0/local/report/promotion/get/ failed: 40002 no permission for "
    "this account (没有权限进行相关操作) [request_id 20260211070000abc]"
)
TEMPLATES = {
    "blue",
    "wathet",
    "turquoise",
    "green",
    "yellow",
    "orange",
    "red",
    "carmine",
    "violet",
    "purple",
    "indigo",
    "grey",
    "default",
}  # fmt: skip  (the header template enum of the JSON 2.0 structure doc)
ELEMENT_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,19}$")


# -- realistic objects ----------------------------------------------------------------------------


def long_name(i: int) -> str:
    return f"杭州市西湖区文三路美食城第{i}分店本地推广告账户（团购专用）旗舰店"


def run_result(status: str = "partial", **overrides: Any) -> RunResult:
    accounts = [
        AccountResult("1811111111111111111", "杭州西湖店", "ok", rows=1234, api_calls=3),
        AccountResult("1822222222222222222", "上海徐汇店", "no_data", api_calls=1),
        AccountResult("1833333333333333333", "北京朝阳店", "failed", REASON_40002, api_calls=1),
    ]
    fields: dict[str, Any] = {
        "run_id": 42,
        "accounts": accounts,
        "created": 1200,
        "updated": 30,
        "unchanged": 4,
        "deleted": 2,
        "api_calls": 5,
        "feishu_calls": 4,
        "seconds": 12.34,
        "warnings": ["field 消耗(元) uses formatter 0.0; values are rounded by the table"],
    }
    fields.update(overrides)
    return RunResult(DAY, DAY, "chat", status=status, **fields)


def totals(cost: str, shows: int, clicks: int, conv: int, clues: int) -> Totals:
    return Totals(Decimal(cost), shows, clicks, conv, clues, rows=max(conv, 1))


def summary(accounts: int = 2) -> Summary:
    per_account = [
        AccountSummary(
            "1811111111111111111",
            "杭州西湖店",
            totals("10000.50", 80000, 1500, 50, 8),
            totals("9000.00", 70000, 1400, 40, 6),
        ),
        AccountSummary("1822222222222222222", "", totals("2345.17", 20000, 500, 30, 4), Totals()),
    ]
    per_account += [
        AccountSummary(
            str(1900000000000000000 + i), long_name(i), totals("100", 1, 1, 1, 0), Totals()
        )
        for i in range(max(accounts - 2, 0))
    ]
    trend = [
        DayPoint(DAY - timedelta(days=6 - i), Decimal(1000 + 300 * i), 10 + i, 5) for i in range(7)
    ]
    return Summary(
        DAY,
        DAY,
        totals("12345.67", 100000, 2000, 80, 12),
        totals("10000.00", 90000, 1800, 100, 10),
        per_account,
        trend,
        [Account("1844444444444444444", "宁波鄞州店"), Account("1855555555555555555", "")],
    )


def token_status(health: str, authorized: bool = True) -> TokenStatus:
    if not authorized:
        return TokenStatus(False, "reauthorize", "1700000000000001", message="not authorized yet")
    return TokenStatus(
        authorized=True,
        health=health,
        app_id="1700000000000001",
        access_expires_at=NOW + timedelta(hours=5),
        access_left_s=5 * 3600 + 12 * 60,
        refresh_expires_at=NOW + timedelta(days=29, hours=3),
        refresh_left_s=29 * 86400 + 3 * 3600,
        last_refresh_at=NOW - timedelta(hours=19),
        last_failure_at=NOW - timedelta(hours=1) if health == "expiring" else None,
        last_failure_reason="40100 too many requests" if health == "expiring" else None,
        dead_reason="40107 refresh token invalid (already used)"
        if health == "reauthorize"
        else None,
        generation=3,
        account_ids=("1811111111111111111", "1822222222222222222"),
        access_prefix="abcd…",
        message="the token chain is healthy",
    )


def verify_result(clean: bool = False) -> VerifyResult:
    if clean:
        return VerifyResult(DAY, DAY, 120, 120)
    return VerifyResult(
        DAY,
        DAY,
        120,
        119,
        missing=[f"2026-02-11|1811111111111111111|p{i}" for i in range(7)],
        duplicated=["2026-02-11|1822222222222222222|p9"],
    )


def history_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": 43,
            "started_at": NOW,
            "trigger": "schedule",
            "date_from": date(2026, 2, 8),
            "date_to": DAY,
            "status": "partial",
            "rows_created": 1200,
            "rows_updated": 30,
            "rows_unchanged": 4,
            "error": None,
        },
        {
            "id": 42,
            "started_at": NOW - timedelta(days=1),
            "trigger": "chat",
            "date_from": date(2026, 2, 10),
            "date_to": date(2026, 2, 10),
            "status": "ok",
            "rows_created": 0,
            "rows_updated": 0,
            "rows_unchanged": 1234,
            "error": None,
        },
    ]


def account_rows() -> AccountsView:
    return AccountsView(
        "discovery",
        [
            ListedAccount(
                "1811111111111111111", "杭州西湖店", "direct", last_synced_at=NOW, last_outcome="ok"
            ),
            ListedAccount(
                "1833333333333333333",
                "北京朝阳店",
                "organisation",
                "1600000000000001",
                "巨量工作台-天后医美集团",
                NOW - timedelta(days=1),
                "failed",
                REASON_40002,
            ),
            ListedAccount("1866666666666666666", "", "life", "1600000000000002", "抖音来客-天后"),
        ],
        skipped=[
            OtherAccount("1600000000000003", "代理商", "AGENT", "not a 本地推 account", "set *x*")
        ],
        vanished=[OtherAccount("1811111111111111112", "旧店", "", "no longer listed", at=NOW)],
    )


def every_card(lang: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "sync ok", cards.sync_card(run_result("ok", accounts=run_result().accounts[:2]), lang)
    yield "sync partial", cards.sync_card(run_result(), lang)
    yield "sync auth", cards.sync_card(auth_failure(), lang)
    yield "sync busy", cards.sync_card(busy(), lang)
    for health in ("ok", "expiring", "reauthorize"):
        yield f"token {health}", cards.token_card(token_status(health), lang, AUTH_URL)
    yield "token none", cards.token_card(token_status("", authorized=False), lang, AUTH_URL)
    failed = [a for a in run_result().accounts if a.status == "failed"]
    yield (
        "summary",
        cards.summary_card(summary(), lang, failures=failed, average=summary().previous),
    )
    yield "verify", cards.verify_card(verify_result(), lang)
    yield "history", cards.history_card(history_rows(), lang)
    yield "accounts", cards.accounts_card(account_rows(), lang)
    yield (
        "alert",
        cards.alert_card(
            "同步失败" if lang == "zh" else "Sync failed",
            ["2 accounts failed", "run `adsync history`"],
            buttons=[("Authorize", AUTH_URL)],
            lang=lang,
        ),
    )
    yield (
        "all clear",
        cards.alert_card("All clear", ["every account synced"], severity="ok", lang=lang),
    )
    yield "working", cards.working_card("Syncing 2026-02-11 for 3 accounts …", lang)
    yield "message", cards.message_card("Help", "adsync commands:\n• help — this list", lang)


def auth_failure() -> RunResult:
    accounts = [
        AccountResult(a.account_id, a.name, "failed", "not fetched: authorization needed")
        for a in run_result().accounts
    ]
    return run_result(
        "failed",
        accounts=accounts,
        created=0,
        updated=0,
        unchanged=0,
        deleted=0,
        warnings=[],
        error="Ocean Engine refused the authorization: 40107 refresh token invalid",
        hint=f"open this link, tick every account, and finish: {AUTH_URL}",
        auth_url=AUTH_URL,
    )


def busy() -> RunResult:
    return RunResult(
        DAY,
        DAY,
        "chat",
        status="busy",
        error="a sync of 2026-02-11 is already running (run 41)",
        hint="wait for it to finish, or send `history`",
    )


# -- helpers --------------------------------------------------------------------------------------


def walk(elements: list[Any]) -> Iterator[dict[str, Any]]:
    for element in elements:
        yield element
        if element.get("tag") != "column_set":
            continue  # a table's "columns" are column definitions, not components
        for column in element["columns"]:
            yield column
            yield from walk(column.get("elements") or [])


def elements(card: dict[str, Any]) -> list[dict[str, Any]]:
    return card["body"]["elements"]


def of_tag(card: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return [e for e in walk(elements(card)) if e.get("tag") == tag]


def markdown(card: dict[str, Any]) -> str:
    return "\n".join(e["content"] for e in of_tag(card, "markdown"))


def buttons(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["text"]["content"]: b for b in of_tag(card, "button")}


def callback(button: dict[str, Any]) -> dict[str, Any]:
    return next(b["value"] for b in button["behaviors"] if b["type"] == "callback")


def link(button: dict[str, Any]) -> str:
    return next(b["default_url"] for b in button["behaviors"] if b["type"] == "open_url")


def table(card: dict[str, Any], element_id: str = "accounts") -> dict[str, Any]:
    return next(e for e in elements(card) if e.get("element_id") == element_id)


def cells(card: dict[str, Any], element_id: str, column: str) -> list[Any]:
    return [row.get(column) for row in table(card, element_id)["rows"]]


def assert_valid(card: dict[str, Any], limit: int = CARD_LIMIT) -> None:
    """The JSON 2.0 rules this module relies on (structure doc, component docs)."""
    assert card_problem(card) is None  # the sandbox's own platform-side check
    assert card["schema"] == "2.0" and "elements" not in card
    assert card["config"]["update_multi"] is True
    assert card["header"]["title"]["tag"] == "plain_text" and card["header"]["title"]["content"]
    assert card["header"]["template"] in TEMPLATES
    assert card_size(card) <= limit
    components = list(walk(elements(card)))
    assert len(components) <= 200  # "一张卡片最多支持 200 个元素或组件"
    ids = [c["element_id"] for c in components if "element_id" in c]
    assert len(ids) == len(set(ids)) and all(ELEMENT_ID.match(i) for i in ids)
    tables = [c for c in components if c["tag"] == "table"]
    assert len(tables) <= 5 and all(t in elements(card) for t in tables)  # top level only
    for t in tables:
        assert 1 <= t["page_size"] <= 10
        names = {c["name"] for c in t["columns"]}
        assert all(set(row) <= names for row in t["rows"])
        assert all(c["data_type"] in ("text", "options") for c in t["columns"])
    for b in (c for c in components if c["tag"] == "button"):
        assert b["text"]["tag"] == "plain_text" and 0 < len(b["text"]["content"]) <= 100
        for behavior in b["behaviors"]:
            assert behavior["type"] in ("open_url", "callback")
            if behavior["type"] == "open_url":
                assert behavior["default_url"].startswith("http")
            else:
                assert isinstance(behavior["value"], dict)
    for chart in (c for c in components if c["tag"] == "chart"):
        spec = chart["chart_spec"]
        assert spec["type"] in ("line", "bar") and spec["xField"] and spec["yField"]
        assert all(isinstance(v[spec["yField"]], float) for v in spec["data"]["values"])
    json.loads(json.dumps(card, ensure_ascii=False, allow_nan=False))  # no NaN/Infinity


# -- shape, colours, languages --------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_card_is_a_valid_shared_2_0_card(lang: str) -> None:
    for name, card in every_card(lang):
        try:
            assert_valid(card)
        except AssertionError as exc:
            raise AssertionError(f"{name} ({lang}): {exc}") from exc
        text = to_text(card)
        assert text.splitlines()[0].endswith(card["header"]["title"]["content"])
        assert "{" not in text and "}" not in text, name


@pytest.mark.parametrize(
    ("status", "colour"),
    [("ok", "green"), ("partial", "orange"), ("failed", "red"), ("busy", "red")],
)
def test_sync_card_colour_follows_status(status: str, colour: str) -> None:
    result = busy() if status == "busy" else run_result(status)
    assert cards.sync_card(result, "en")["header"]["template"] == colour


def test_sync_card_partial_lists_failures_first_with_reasons_and_offers_a_retry() -> None:
    card = cards.sync_card(run_result(), "en")
    assert card["header"]["title"]["content"] == "Sync 2026-02-11 · partly failed"
    assert card["header"]["subtitle"]["content"] == "run 42 · from chat"
    text = markdown(card)
    for figure in ("2/3 synced", "1 with no data", "1,234", "1,200 created", "30 updated",
                   "4 unchanged", "2 duplicates removed", "12.3s"):  # fmt: skip
        assert figure in text, figure
    assert cells(card, "accounts", "account") == ["北京朝阳店", "杭州西湖店", "上海徐汇店"]
    assert [s[0] for s in cells(card, "accounts", "status")] == [
        {"text": "failed", "color": "red"},
        {"text": "done", "color": "green"},
        {"text": "no data", "color": "blue"},
    ]
    assert cells(card, "accounts", "rows") == ["0", "1,234", "0"]
    # One cause: said once above the table (with its count and fix), no reason column.
    assert "1 of 3 accounts" in text and "40002 no permission" in text
    assert "reason" not in table(card)["rows"][0]
    assert "formatter 0.0" in text  # the warning
    retry = buttons(card)["Retry 1 failed accounts"]
    assert callback(retry) == {
        "action": "sync_retry",
        "start": "2026-02-11",
        "end": "2026-02-11",
        "accounts": ["1833333333333333333"],
        "lang": "en",
        "run_id": 42,
    }
    assert "Authorize again" not in buttons(card)


def test_sync_card_ok_has_no_buttons_and_a_range_title() -> None:
    result = run_result("ok", accounts=run_result().accounts[:2])
    result.end = date(2026, 2, 12)
    card = cards.sync_card(result, "zh")
    assert card["header"]["title"]["content"] == "同步 2026-02-11..2026-02-12 · 完成"
    assert not of_tag(card, "button") and "reason" not in table(card)["rows"][0]


def test_sync_card_authorization_failure_links_the_authorization_page() -> None:
    card = cards.sync_card(auth_failure(), "zh")
    assert card["header"]["template"] == "red"
    again = buttons(card)["重新授权"]
    assert link(again) == AUTH_URL and again["type"] == "primary_filled"
    retry = callback(buttons(card)["重试失败的 3 个账户"])
    assert retry["accounts"] == [a.account_id for a in auth_failure().accounts]
    assert retry["lang"] == "zh"
    assert "40107" in markdown(card) and "重新授权" in markdown(card)


def test_busy_card_is_short() -> None:
    card = cards.sync_card(busy(), "en")
    assert card["header"]["title"]["content"] == "Sync 2026-02-11 · already running"
    assert [e["tag"] for e in elements(card)] == ["markdown"]
    assert "already running (run 41)" in to_text(card)
    zh = cards.sync_card(busy(), "zh")
    assert "正在进行中" in zh["header"]["title"]["content"] and "同步中" in markdown(zh)


def test_sync_card_with_no_accounts_never_looks_like_success() -> None:
    card = cards.sync_card(run_result("failed", accounts=[], warnings=[]), "en")
    assert card["header"]["template"] == "red"
    assert "No accounts in scope" in markdown(card)


def test_languages_differ_where_people_read() -> None:
    for (name, en), (_, zh) in zip(every_card("en"), every_card("zh"), strict=True):
        if name in ("alert", "all clear", "message"):
            continue  # the caller's own title and text
        assert en != zh, name
        assert re.search(r"[\u4e00-\u9fff]", to_text(zh)), name
        chinese_in_en = re.findall(r"[\u4e00-\u9fff]+", en["header"]["title"]["content"])
        assert not chinese_in_en, name


# -- token ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "colour"), [("ok", "green"), ("expiring", "orange"), ("reauthorize", "red")]
)
def test_token_card_is_a_traffic_light(health: str, colour: str) -> None:
    card = cards.token_card(token_status(health), "en", auth_url=AUTH_URL)
    assert card["header"]["template"] == colour
    shown = buttons(card)
    assert ("Authorize again" in shown) == (health != "ok")
    if health != "reauthorize":
        assert callback(shown["Refresh now"]) == {"action": "token_refresh", "lang": "en"}
    else:
        assert "Refresh now" not in shown  # a dead chain cannot be refreshed
        assert link(shown["Authorize again"]) == AUTH_URL


def test_token_card_figures_and_time_zone() -> None:
    card = cards.token_card(token_status("expiring"), "en")
    text = markdown(card)
    assert "5h 12m left" in text and "until 2026-02-11 13:00" in text  # 05:00 UTC in Shanghai
    assert "29d 3h left" in text and "until 2026-03-12 11:00" in text
    assert "Last refresh** 2026-02-10 13:00" in text
    assert "40100 too many requests" in text and "abcd…" in text
    assert "Authorize again" not in buttons(card)  # no URL given
    utc = markdown(cards.token_card(token_status("expiring"), "en", tz="UTC"))
    assert "until 2026-02-11 05:00" in utc and "Times in UTC" in utc
    zh = markdown(cards.token_card(token_status("ok"), "zh", tz=ZoneInfo("Asia/Shanghai")))
    assert "5小时12分" in zh and "29天3小时" in zh and "正常" in zh


def test_token_card_says_expired_not_negative_time_left() -> None:
    status = dataclasses.replace(token_status("reauthorize"), access_left_s=-7200)
    assert "expired 2h 0m ago · at 2026-02-11 13:00" in markdown(cards.token_card(status, "en"))
    assert "已过期 2小时0分" in markdown(cards.token_card(status, "zh"))


def test_token_card_when_never_authorized() -> None:
    card = cards.token_card(token_status("", authorized=False), "zh", auth_url=AUTH_URL)
    assert card["header"]["template"] == "red"
    assert list(buttons(card)) == ["重新授权"] and "尚未授权" in markdown(card)


# -- summary --------------------------------------------------------------------------------------


def test_summary_card_figures_changes_chart_and_lists() -> None:
    failed = [a for a in run_result().accounts if a.status == "failed"]
    average = totals("11000.00", 95000, 1900, 70, 11)
    card = cards.summary_card(summary(), "en", failures=failed, average=average)
    assert card["header"]["title"]["content"] == "Ad report · 2026-02-11"
    assert card["header"]["template"] == "orange"  # an account failed
    text = markdown(card)
    for figure in ("¥12,345.67", "100,000", "2,000", "**80**", "¥154.32", "**12**",
                   "vs prev day +23.5%", "vs prev day -20.0%", "vs 7-day avg +12.2%"):  # fmt: skip
        assert figure in text, figure
    assert "1 accounts failed to sync" in text
    assert cells(card, "failures", "account") == ["北京朝阳店"]
    assert cells(card, "accounts", "spend") == ["¥10,000.50", "¥2,345.17"]
    assert cells(card, "accounts", "change") == ["+11.1%", "—"]  # no previous spend: no change
    assert cells(card, "accounts", "account") == ["杭州西湖店", "1822222222222222222"]
    assert cells(card, "accounts", "cpa") == ["¥200.01", "¥78.17"]
    assert "宁波鄞州店" in text and "1855555555555555555" in text  # silent accounts
    (chart,) = of_tag(card, "chart")
    spec = chart["chart_spec"]
    assert spec["type"] == "line" and spec["xField"] == "day" and spec["yField"] == "spend"
    assert [v["day"] for v in spec["data"]["values"]][0] == "02-05"
    assert [v["spend"] for v in spec["data"]["values"]] == [1000.0 + 300 * i for i in range(7)]
    plain = cards.summary_card(summary(), "en")
    assert plain["header"]["template"] == "blue" and "vs 7-day avg" not in markdown(plain)
    assert not [e for e in elements(plain) if e.get("element_id") == "failures"]


def test_summary_card_chinese_and_empty_period() -> None:
    empty = Summary(DAY, DAY, Totals(), Totals(), [], [DayPoint(DAY, Decimal(0), 0, 0)], [])
    card = cards.summary_card(empty, "zh")
    assert card["header"]["title"]["content"] == "广告日报 · 2026-02-11"
    assert card["header"]["template"] == "orange" and "没有数据" in markdown(card)
    assert "较前一天 —" in markdown(card)  # zero before: no percentage invented
    ranged = summary()
    ranged.start = date(2026, 2, 5)
    text = markdown(cards.summary_card(ranged, "zh"))
    assert "消耗" in text and "转化成本" in text and "团购线索" in text and "较上期" in text


# -- verify, history, accounts, alerts ------------------------------------------------------------


def test_verify_history_accounts_cards() -> None:
    dirty = cards.verify_card(verify_result(), "en")
    assert dirty["header"]["template"] == "orange"
    assert "Missing 7" in markdown(dirty) and "verify 2026-02-11 fix" in markdown(dirty)
    assert "… and 2 more" in markdown(dirty)  # five keys shown of seven
    clean = cards.verify_card(verify_result(clean=True), "zh")
    assert clean["header"]["template"] == "green" and "一致" in markdown(clean)

    history = cards.history_card(history_rows(), "en")
    assert cells(history, "runs", "started") == ["2026-02-11 08:00", "2026-02-10 08:00"]
    assert cells(history, "runs", "dates")[0] == "2026-02-08..2026-02-11"
    assert cells(history, "runs", "rows")[0] == "1,200/30/4"
    assert cards.history_card([], "zh")["body"]["elements"][0]["content"].startswith("还没有")

    accounts = cards.accounts_card(account_rows(), "en")
    assert cells(accounts, "accounts", "account")[0] == "北京朝阳店"  # failures first
    assert cells(accounts, "accounts", "synced") == ["2026-02-10 08:00", "2026-02-11 08:00", "—"]
    assert cells(accounts, "accounts", "source") == [
        "via organisation 巨量工作台-天后医美集团",
        "direct",
        "via 来客 抖音来客-天后",
    ]
    subtitle = accounts["header"]["subtitle"]["content"]
    assert "1 failed last time" in subtitle and "1 skipped" in subtitle
    notes = markdown(accounts)
    assert "代理商 (1600000000000003)" in notes and "AGENT" in notes and "set &#42;x&#42;" in notes
    assert "No longer found" in notes and "旧店" in notes
    zh = cards.accounts_card(account_rows(), "zh")
    assert cells(zh, "accounts", "source")[0] == "工作台 巨量工作台-天后医美集团"
    assert "已跳过" in markdown(zh)


def test_alert_severities_and_link_buttons() -> None:
    for severity, colour in (("error", "red"), ("warning", "orange"), ("ok", "green")):
        card = cards.alert_card("t", ["x"], severity=severity, lang="en")
        assert card["header"]["template"] == colour
    card = cards.alert_card(
        "授权",
        ["打开链接"],
        severity="warning",
        buttons=[("去授权", AUTH_URL), ("x", "")],
        lang="zh",
    )
    assert list(buttons(card)) == ["去授权"] and link(buttons(card)["去授权"]) == AUTH_URL
    many = cards.alert_card("t", [f"line {i}" for i in range(40)], lang="en")
    assert "… and 30 more" in markdown(many)
    assert cards.message_card("t", "x", "en", "error")["header"]["template"] == "red"
    assert cards.working_card("x", "zh")["header"]["title"]["content"] == "⏳ 正在处理…"


# -- untrusted text -------------------------------------------------------------------------------


def test_names_cannot_inject_markdown_but_read_normally() -> None:
    evil = "<at id=all></at> **老板** [点我](https://evil.example) `x` #1 ~~y~~ &#42;\n- list"
    result = run_result(warnings=[evil])
    result.accounts[2].reason = evil
    card = cards.sync_card(result, "en")
    text = markdown(card)
    assert (
        "<at" not in text and "**老板**" not in text and "](" not in text and "\n- list" not in text
    )
    plain = to_text(card)
    assert (
        "<at id=all></at> **老板** [点我](https://evil.example) `x` #1 ~~y~~ &#42; - list" in plain
    )
    message = cards.message_card("t", "line one\n    four spaces\n- dash\n1. one", "en")
    assert "\n    " not in markdown(message)  # no accidental code block or list
    assert to_text(message).splitlines()[2:] == ["line one", "    four spaces", "- dash", "1. one"]


# -- numbers --------------------------------------------------------------------------------------


def test_number_formatting() -> None:
    assert cards.money(Decimal("12345.675")) == "¥12,345.68"  # half up, like the Bitable
    assert cards.money(Decimal("-3.5")) == "-¥3.50" and cards.money(Decimal("-0.001")) == "¥0.00"
    assert cards.money(None) == "—" and cards.money(Decimal("NaN")) == "—"
    assert cards.money(Decimal("1e30")).startswith("¥1,000,000,000")
    assert cards.count(1234567) == "1,234,567" and cards.count(None) == "—"
    assert cards.pct(0.123) == "+12.3%" and cards.pct(-0.04) == "-4.0%" and cards.pct(0.0) == "0.0%"
    assert cards.pct(None) == "—" and cards.pct(float("inf")) == "—"
    assert cards.pct(123.45) == "+12,345.0%"
    assert cards.duration(3 * 86400 + 4 * 3600) == "3d 4h"
    assert cards.duration(-7200, "zh") == "已过期 2小时0分"
    assert cards.duration(None) == "—"


# -- the 30 KB limit ------------------------------------------------------------------------------


def five_hundred() -> list[AccountResult]:
    return [
        AccountResult(
            str(1800000000000000000 + i),
            long_name(i),
            "failed" if i % 2 else "ok",
            REASON_40002 if i % 2 else "",
            rows=i * 1000,
        )
        for i in range(500)
    ]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_500_accounts_fit_with_a_note(lang: str) -> None:
    many = five_hundred()
    sync = cards.sync_card(run_result(accounts=many, warnings=["w" * 1000] * 50), lang)
    big = summary(accounts=500)
    big.silent_accounts = [Account(str(i), long_name(i)) for i in range(500)]
    report = cards.summary_card(big, lang, failures=many[1::2], average=big.previous)
    rows = [
        ListedAccount(a.account_id, a.name, "direct", "", "", NOW, a.status, a.reason) for a in many
    ]
    listed = cards.accounts_card(AccountsView("discovery", rows), lang)
    for card, ids, total in (
        (sync, ["accounts"], 500),
        (report, ["accounts", "failures"], None),
        (listed, ["accounts"], 500),
    ):
        assert_valid(card)
        assert card_size(card) > CARD_LIMIT - 2048  # it was cut to fit, not emptied
        for element_id in ids:
            shown = len(table(card, element_id)["rows"])
            note = next(
                e for e in elements(card) if e.get("element_id", "").startswith(f"m_{element_id}")
            )
            hidden = int(re.search(r"([\d,]+)", note["content"]).group(1).replace(",", ""))
            expected = total or len(big.accounts if element_id == "accounts" else many[1::2])
            assert shown >= 10 and shown + hidden == expected
            assert ("more accounts" in note["content"]) == (lang == "en")
            assert ("另有" in note["content"]) == (lang == "zh")
        assert "…" in to_text(card)
    retry = callback(next(iter(b for b in of_tag(sync, "button") if "behaviors" in b)))
    assert len(retry["accounts"]) == 250  # every failed account, even if not all are listed
    note = next(e for e in elements(report) if e.get("element_id", "").startswith("m_accounts"))
    assert "adsync summary" in note["content"]


def test_fit_is_a_no_op_when_small_and_refits_with_honest_counts() -> None:
    card = cards.sync_card(run_result(), "en")
    assert fit(card) is card
    big = cards.sync_card(run_result(accounts=five_hundred()), "en")
    smaller = fit(big, 12_000)
    smallest = fit(smaller, 9_000)
    assert card_size(smaller) <= 12_000 and card_size(smallest) <= 9_000
    note = next(e for e in elements(smallest) if e.get("element_id", "").startswith("m_"))
    hidden = int(re.search(r"([\d,]+) more", note["content"]).group(1).replace(",", ""))
    assert hidden + len(table(smallest)["rows"]) == 500
    assert len(table(big)["rows"]) > len(table(smaller)["rows"]) > len(table(smallest)["rows"])


def test_fit_last_resort_keeps_title_and_buttons() -> None:
    card = cards.alert_card("x" * 200, ["y" * 300], buttons=[("Open", AUTH_URL)], lang="en")
    tiny = fit(card, 700)
    assert card_size(tiny) <= 700 and "too large" in markdown(tiny)
    assert link(buttons(tiny)["Open"]) == AUTH_URL
    assert (
        card_problem(fit({"schema": "2.0", "header": {}, "body": None, "x": "z" * 999}, 500))
        is None
    )


# -- plain text -----------------------------------------------------------------------------------


def test_to_text_reads_like_the_card() -> None:
    failed = [a for a in run_result().accounts if a.status == "failed"]
    text = to_text(cards.summary_card(summary(), "zh", failures=failed))
    lines = text.splitlines()
    assert lines[0] == "! 广告日报 · 2026-02-11" and lines[1] == "  对比前一天"
    for figure in ("¥12,345.67", "100,000", "+23.5%", "¥154.32", "宁波鄞州店", "40002"):
        assert figure in text, figure
    assert "**" not in text and "<font" not in text and "&#" not in text
    bars = [line for line in lines if re.match(r"^  0\d-\d\d  ", line)]
    assert len(bars) == 7 and bars[-1].endswith("¥2,800.00") and "█" in bars[-1]
    head = next(i for i, line in enumerate(lines) if line.startswith("账户") and "消耗" in line)
    width = cards.text._cells  # CJK counts two cells: the spend column ends at one place
    ends = {width(lines[i][: lines[i].index("¥") + len("¥10,000.50")]) for i in (head + 1,)}
    ends.add(width(lines[head + 2][: lines[head + 2].index("¥2,345.17") + len("¥2,345.17")]))
    assert len(ends) == 1

    sync = to_text(cards.sync_card(auth_failure(), "en"))
    assert f"[Authorize again] → {AUTH_URL}" in sync and "[Retry 3 failed accounts]" in sync
    assert sync.splitlines()[0] == "✗ Sync 2026-02-11 · failed"
    token = to_text(cards.token_card(token_status("ok"), "en"))
    assert token.splitlines()[0] == "✓ Ocean Engine authorization" and "[Refresh now]" in token


# -- random contents ------------------------------------------------------------------------------

nasty = st.sampled_from(
    ["", " ", "\n\n", '"引号"', "'", "\\", "{}", "**", "<at id=all></at>", "😀👨‍👩‍👧", "店\t名\r\n",
     "&#42;", "`", "|", "# h", "- x", "1. y", "\u200b", "\x00", "ｆｕｌｌ", "长" * 300]
)  # fmt: skip
texts = st.one_of(nasty, st.text(max_size=120), st.lists(nasty, max_size=4).map("".join))
money_values = st.decimals(
    min_value=Decimal("-1e15"), max_value=Decimal("1e18"), places=2, allow_nan=False
)
counts = st.integers(min_value=0, max_value=10**18)
ids = st.integers(min_value=0, max_value=10**19 - 1).map(str)  # 19-digit ids, as text


@st.composite
def run_results(draw: st.DrawFn) -> RunResult:
    accounts = draw(
        st.lists(
            st.builds(
                AccountResult,
                account_id=ids,
                name=texts,
                status=st.sampled_from(["ok", "no_data", "failed"]),
                reason=texts,
                rows=counts,
            ),
            max_size=40,
        )
    )
    start = draw(st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)))
    return RunResult(
        start,
        start + timedelta(days=draw(st.integers(0, 92))),
        draw(st.sampled_from(["chat", "schedule", "retry", "cli", "weird"])),
        status=draw(st.sampled_from(["ok", "partial", "failed", "busy", "running", "??"])),
        run_id=draw(st.none() | st.integers(1, 10**9)),
        accounts=accounts,
        created=draw(counts),
        updated=draw(counts),
        unchanged=draw(counts),
        deleted=draw(counts),
        seconds=draw(st.floats(0, 1e7)),
        warnings=draw(st.lists(texts, max_size=15)),
        error=draw(texts),
        hint=draw(texts),
        auth_url=draw(st.sampled_from(["", AUTH_URL])),
    )


def random_totals() -> st.SearchStrategy[Totals]:
    return st.builds(
        Totals,
        cost=money_values,
        show_cnt=counts,
        click_cnt=counts,
        convert_cnt=st.one_of(st.just(0), counts),
        clue_cnt=counts,
        rows=st.integers(0, 10**6),
    )


@st.composite
def summaries(draw: st.DrawFn) -> Summary:
    start = draw(st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)))
    end = start + timedelta(days=draw(st.integers(0, 30)))
    accounts = draw(
        st.lists(
            st.builds(
                AccountSummary,
                account_id=ids,
                name=texts,
                totals=random_totals(),
                previous=random_totals(),
            ),
            max_size=30,
        )
    )
    trend = [
        DayPoint(end - timedelta(days=i), draw(money_values), draw(counts), 1)
        for i in range(draw(st.integers(0, 40)))
    ]
    silent = draw(st.lists(st.builds(Account, id=ids, name=texts)))
    return Summary(
        start, end, draw(random_totals()), draw(random_totals()), accounts, trend, silent
    )


RANDOM = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_random(card: dict[str, Any]) -> None:
    assert_valid(card)
    to_text(card)
    small = fit(card, 4096)  # random contents through every cutting path
    assert_valid(small, 4096)
    to_text(small)


@RANDOM
@given(run_results(), st.sampled_from(["en", "zh"]))
def test_random_sync_results_never_crash_and_always_fit(result: RunResult, lang: str) -> None:
    check_random(cards.sync_card(result, lang))


@RANDOM
@given(
    summaries(),
    st.sampled_from(["en", "zh"]),
    st.lists(
        st.builds(
            AccountResult,
            account_id=st.just("1"),
            name=texts,
            status=st.just("failed"),
            reason=texts,
        ),
        max_size=20,
    ),
    st.none() | random_totals(),
)
def test_random_summaries_never_crash_and_always_fit(
    s: Summary, lang: str, failures: list[AccountResult], average: Totals | None
) -> None:
    check_random(cards.summary_card(s, lang, failures=failures, average=average))


@RANDOM
@given(
    texts, st.lists(texts, max_size=30), st.lists(st.tuples(texts, st.sampled_from(["", AUTH_URL])))
)
def test_random_alerts_and_messages(
    title: str, lines: list[str], links: list[tuple[str, str]]
) -> None:
    check_random(cards.alert_card(title, lines, buttons=links, lang="zh"))
    check_random(cards.message_card(title, "\n".join(lines), "en", "warning"))


# -- import weight --------------------------------------------------------------------------------


def test_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, adsync.bot.cards; "
        "print([m for m in ('sqlalchemy', 'lark_oapi', 'flask', 'requests') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- through lark-oapi to the sandbox ------------------------------------------------------------

SANDBOX_APP = ("cli_sandbox_app", "sandbox-feishu-secret")
# A platform error echoed into a reason: quotes and backslashes, each 4 bytes once the card is
# a JSON string inside the JSON request body.
LONG_REASON = (
    "Ocean Engine /open_api/v3.0/local/report/promotion/get/ failed: 40002 no permission for "
    'this account (没有权限进行相关操作) {"code":40002,"message":"No permission to operate '
    'account \\"1800000000000000000\\" in C:\\\\ads\\\\report"} [request_id 20260211070000abc]'
)


def nasty_name(i: int) -> str:
    return f'"{i}号"店\\{long_name(i)}'


@pytest.fixture(scope="module")
def feishu() -> Iterator[Any]:
    """The Feishu sandbox in this process, over HTTP on loopback, shared by this module."""
    from adsync.sandbox.feishu import FeishuSandbox
    from adsync.sandbox.server import SandboxServer

    platform = FeishuSandbox()
    with SandboxServer(platforms=[platform]) as server:
        server.platform = platform  # type: ignore[attr-defined]
        yield server


def messenger_for(feishu: Any, tmp_path: Any, chats: Sequence[str] = ()) -> Any:
    """The real Messenger (lark-oapi client, FeishuCaller) pointed at the sandbox."""
    import requests

    from adsync.bot.messenger import Messenger
    from adsync.sync.config import load_settings
    from adsync.sync.feishu import TOKEN_CACHE

    reset = {"feishu": {"chats": [{"chat_id": c, "bot_member": True} for c in chats]}}
    requests.post(f"{feishu.url}/_sandbox/reset", json=reset, timeout=5).raise_for_status()
    # lark-oapi caches tenant tokens per app_id for the whole process; one minted by another
    # sandbox would be refused by this one.
    TOKEN_CACHE.drop(f"self_tenant_token:{SANDBOX_APP[0]}")
    env = {
        "FEISHU_APP_ID": SANDBOX_APP[0],
        "FEISHU_APP_SECRET": SANDBOX_APP[1],
        "FEISHU_DOMAIN": feishu.url,
        "ADSYNC_HTTP_TIMEOUT": "10",
        "ADSYNC_RETRY_BASE_DELAY": "0.01",
    }
    return Messenger(load_settings(env, cwd=tmp_path))


def stored(feishu: Any, chat_id: str) -> list[dict[str, Any]]:
    import requests

    return requests.get(
        f"{feishu.url}/_sandbox/feishu/messages", params={"chat_id": chat_id}, timeout=5
    ).json()["messages"]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_200_failed_accounts_with_long_reasons_fit_the_30_kb_request_body(
    feishu: Any, tmp_path: Any, lang: str
) -> None:
    # The incident: a sync card with 77 failed accounts measured 30,361 B by adsync's count and
    # 31,524 B as sent, and was refused (230025) exactly when the failure list mattered most.
    # The worst case, sent, replied and updated through the real client; the sandbox measures
    # the raw request body it received, as the platform's limit is worded.
    from adsync.bot.messenger import SEND_LIMIT, message_uuid

    chat = "oc_worst_case"
    messenger = messenger_for(feishu, tmp_path, [chat])
    accounts = [
        AccountResult(str(1800000000000000000 + i), nasty_name(i), "failed", LONG_REASON)
        for i in range(200)
    ]
    result = run_result("failed", accounts=accounts, created=0, updated=0, unchanged=0)
    card = cards.sync_card(result, lang)
    assert_valid(card)
    working = messenger.send(chat, cards.working_card("Syncing…", lang), message_uuid("w", lang))
    messenger.update(working.message_id, card)  # the "working on it" card becomes the answer
    messenger.reply(working.message_id, card, message_uuid("r", lang))
    first, reply = stored(feishu, chat)
    sent = [first["versions"][1], reply["versions"][0]]
    assert [v["content"] for v in sent] == [card, card]
    for version in sent:
        # Inside the limit with the margin kept, and cut to fit, not emptied.
        assert SEND_LIMIT - 4096 < version["body_bytes"] <= SEND_LIMIT
    shown = len(table(card)["rows"])
    note = next(e for e in elements(card) if e.get("element_id", "").startswith("m_accounts"))
    hidden = int(re.search(r"([\d,]+)", note["content"]).group(1).replace(",", ""))
    assert shown >= 40 and shown + hidden == 200
    retry = callback(next(b for b in of_tag(card, "button") if "behaviors" in b))
    assert len(retry["accounts"]) == 200  # every failed account is retried, listed or not


def worst_cards(lang: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every card kind with the most a user could make it carry: 500 accounts, names full of
    quotes and backslashes, long reasons, many lines."""
    many = [
        AccountResult(str(1800000000000000000 + i), nasty_name(i), "failed", LONG_REASON, rows=i)
        for i in range(500)
    ]
    warnings = [f'"{LONG_REASON}" \\ {i}' for i in range(40)]
    yield "sync", cards.sync_card(run_result("failed", accounts=many, warnings=warnings), lang)
    big = summary(accounts=2)
    big.accounts = [
        AccountSummary(a.account_id, a.name, totals("123456789.99", 10**9, 10**8, 10**6, 10**5),
                       totals("1.00", 1, 1, 1, 1))
        for a in many
    ]  # fmt: skip
    big.silent_accounts = [Account(str(i), nasty_name(i)) for i in range(500)]
    big.trend = [DayPoint(DAY - timedelta(days=i), Decimal("99999999.99"), 1, 1) for i in range(31)]
    yield "summary", cards.summary_card(big, lang, failures=many, average=big.previous)
    status = dataclasses.replace(
        token_status("expiring"),
        last_failure_reason=LONG_REASON * 3,
        account_ids=tuple(str(i) for i in range(2000)),
    )
    yield "token", cards.token_card(status, lang, AUTH_URL + "&x=" + "y" * 1000)
    runs = [
        {**history_rows()[0], "id": 10**9 - i, "error": LONG_REASON * 2, "trigger": "schedule"}
        for i in range(300)
    ]
    yield "history", cards.history_card(runs, lang)
    listed = [
        ListedAccount(
            a.account_id,
            a.name,
            "organisation",
            "1600000000000001",
            "工作台" * 30,
            NOW,
            "failed",
            LONG_REASON,
        )
        for a in many
    ]
    others = [
        OtherAccount(a.account_id, a.name, "PLATFORM_ROLE_STAR", LONG_REASON, LONG_REASON, NOW)
        for a in many
    ]
    view = AccountsView("discovery", listed, skipped=others, managers=others, vanished=others)
    yield "accounts", cards.accounts_card(view, lang)
    keys = [f'2026-02-11|{1800000000000000000 + i}|"{i}"\\' for i in range(5000)]
    yield "verify", cards.verify_card(VerifyResult(DAY, DAY, 5000, 0, missing=keys), lang)
    lines = [f'{LONG_REASON} "{i}" \\' for i in range(200)]
    links = [(f'"按钮" {i} \\', AUTH_URL + "&n=" + "z" * 900) for i in range(20)]
    yield "alert", cards.alert_card("同步失败 " * 40, lines, buttons=links, lang=lang)
    yield "message", cards.message_card("帮助", "\n".join(lines), lang)
    yield "working", cards.working_card("\n".join(lines), lang)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_card_kind_at_its_worst_is_accepted_as_sent(
    feishu: Any, tmp_path: Any, lang: str
) -> None:
    from adsync.bot.messenger import SEND_LIMIT, message_uuid

    built = list(worst_cards(lang))
    chats = [f"oc_worst_{name}" for name, _ in built]  # one chat each: 5 messages/s per chat
    messenger = messenger_for(feishu, tmp_path, chats)
    for (name, card), chat in zip(built, chats, strict=True):
        assert_valid(card)
        messenger.send(chat, card, message_uuid(name, lang))  # raises on 230025 / 230099
        [message] = stored(feishu, chat)
        assert message["content"] == card, name
        assert message["versions"][0]["body_bytes"] <= SEND_LIMIT, name


def test_a_long_receive_id_is_refitted_by_what_the_body_weighs(feishu: Any, tmp_path: Any) -> None:
    # The body is the card plus an envelope; an envelope larger than the one cards allow for
    # (here a 1,500-character chat id) is measured as sent and the card refitted, not refused.
    from adsync.bot.messenger import SEND_LIMIT, message_uuid

    chat = "oc_" + "x" * 1500
    messenger = messenger_for(feishu, tmp_path, [chat])
    card = next(c for name, c in worst_cards("zh") if name == "accounts")
    messenger.send(chat, card, message_uuid("long", chat))
    [message] = stored(feishu, chat)
    assert message["versions"][0]["body_bytes"] <= SEND_LIMIT
    assert len(table(message["content"])["rows"]) < len(table(card)["rows"])


def test_every_card_kind_is_accepted_by_the_feishu_sandbox_over_http(
    feishu: Any, tmp_path: Any
) -> None:
    from adsync.bot.messenger import message_uuid

    big = summary(accounts=500)
    kinds: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        *((name, (lambda c=card: c)) for name, card in every_card("zh")),
        ("sync 500", lambda: cards.sync_card(run_result(accounts=five_hundred()), "en")),
        ("summary 500", lambda: cards.summary_card(big, "zh", failures=five_hundred()[1::2])),
    ]
    chats = [f"oc_kind_{i}" for i in range(len(kinds))]  # the platform allows 5 a second a chat
    messenger = messenger_for(feishu, tmp_path, chats)
    for (name, build), chat in zip(kinds, chats, strict=True):
        card = build()
        messenger.send(chat, card, message_uuid(name))
        [message] = stored(feishu, chat)
        assert message["content"] == card and message["content"]["schema"] == "2.0", name
