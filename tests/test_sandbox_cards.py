"""The sandbox's card JSON 2.0 rules: the platform's own examples pass, and each rule adsync
relies on refuses a card the way the platform does (230099 with the documented sub-code), so a
malformed card fails a test instead of a user's chat."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from adsync.sandbox.cards import MAX_COMPONENTS, validate_card

# -- the platform's own examples (open.larksuite.com/document/uAjLw4CM/ukzMukzMukzM/feishu-cards/
#    card-json-v2-components/…, "Sample code" / "Example" sections), transcribed ---------------

TITLE_EXAMPLE = {  # …/content-components/title
    "schema": "2.0",
    "body": {"elements": [{"tag": "div", "text": {"tag": "plain_text", "content": "示例文本"}}]},
    "header": {
        "title": {"tag": "lark_md", "content": ":Partying:卡片主标题 "},
        "subtitle": {"tag": "plain_text", "content": "卡片副标题"},
        "text_tag_list": [
            {"tag": "text_tag", "text": {"tag": "plain_text", "content": "标签 1"}, "color": "blue"},
            {"tag": "text_tag", "text": {"tag": "plain_text", "content": "标签 2"},
             "color": "turquoise"},
        ],
        "template": "blue",
        "icon": {"tag": "standard_icon", "token": "larkcommunity_colorful"},
        "padding": "12px",
    },
}  # fmt: skip
DIVIDER_EXAMPLE = {  # …/content-components/divider
    "schema": "2.0",
    "body": {
        "direction": "vertical",
        "padding": "12px 12px 12px 12px",
        "elements": [
            {
                "tag": "div",
                "text": {"tag": "plain_text", "content": "普通文本示例", "text_size": "normal",
                         "text_align": "left", "text_color": "default"},
                "margin": "0px 0px 0px 0px",
            },
            {"tag": "hr", "margin": "0px 0px 0px 0px"},
            {"tag": "button", "text": {"tag": "plain_text", "content": "查看更多"},
             "type": "primary", "width": "default", "size": "medium", "margin": "0px 0px 0px 0px"},
        ],
    },
}  # fmt: skip
BUTTON_EXAMPLE = {  # …/interactive-components/button (first column set of the sample)
    "schema": "2.0",
    "header": {"template": "blue", "title": {"content": "Buttons", "tag": "plain_text"}},
    "body": {
        "elements": [
            {
                "tag": "column_set",
                "flex_mode": "flow",
                "background_style": "default",
                "columns": [
                    {
                        "tag": "column",
                        "width": "auto",
                        "weight": 1,
                        "vertical_align": "top",
                        "elements": [
                            {
                                "tag": "button",
                                "text": {"tag": "plain_text", "content": "镭射按钮"},
                                "behaviors": [
                                    {"type": "open_url",
                                     "default_url": "https://open.larksuite.com/document",
                                     "android_url": "https://developer.android.com/",
                                     "ios_url": "lark://msgcard/unsupported_action",
                                     "pc_url": "https://www.windows.com"}
                                ],
                                "type": "laser",
                                "hover_tips": {"tag": "plain_text", "content": "hover提示"},
                                "value": {"key": "value"},
                            }
                        ],
                    },
                    {
                        "tag": "column",
                        "width": "auto",
                        "weight": 1,
                        "vertical_align": "top",
                        "elements": [
                            {
                                "tag": "button",
                                "type": "danger",
                                "text": {"tag": "plain_text", "content": "我是 disabled 按钮"},
                                "disabled": True,
                                "disabled_tips": {"tag": "plain_text", "content": "被禁用了"},
                                "behaviors": [{"type": "callback", "value": {"k": "v"}}],
                            }
                        ],
                    },
                ],
            }
        ]
    },
}  # fmt: skip
TABLE_EXAMPLE = {  # …/content-components/table ("Sample code", two of its rows)
    "schema": "2.0",
    "header": {"template": "blue", "title": {"content": "表格组件示例", "tag": "plain_text"}},
    "body": {
        "elements": [
            {
                "tag": "table",
                "page_size": 5,
                "row_height": "auto",
                "header_style": {"text_align": "left", "text_size": "normal",
                                 "background_style": "none", "text_color": "grey", "bold": True,
                                 "lines": 1},
                "columns": [
                    {"name": "customer_name", "display_name": "客户名称", "data_type": "text",
                     "horizontal_align": "left", "vertical_align": "top", "width": "auto"},
                    {"name": "customer_scale", "display_name": "客户规模", "data_type": "options",
                     "horizontal_align": "left", "vertical_align": "top", "width": "auto"},
                    {"name": "customer_arr", "display_name": "ARR(万元)", "data_type": "number",
                     "format": {"symbol": "¥", "precision": 2, "separator": True},
                     "width": "auto"},
                    {"name": "customer_poc", "display_name": "跟进人", "data_type": "persons",
                     "horizontal_align": "left", "vertical_align": "top", "width": "auto"},
                    {"name": "customer_date", "display_name": "签约日期", "data_type": "date",
                     "date_format": "YYYY/MM/DD", "width": "auto"},
                    {"name": "customer_link", "display_name": "相关链接", "data_type": "lark_md",
                     "width": "auto"},
                    {"name": "company_image", "display_name": "企业图片",
                     "data_type": "markdown"},
                ],
                "rows": [
                    {"customer_name": "Lark科技", "customer_date": 1699341315000,
                     "customer_scale": [{"text": "S2", "color": "blue"}], "customer_arr": 168,
                     "customer_poc": ["ou_14a32f1a02e64944cf19207aa43abcef",
                                      "ou_e393cf9c22e6e617a4332210d2aabcef"],
                     "customer_link": "[Lark科技](/document-mod/index)",
                     "company_image": "![image.png](img_v3_02cc_bf88cdee)"},
                    {"customer_name": "Lark科技_01", "customer_date": 1606101072000,
                     "customer_scale": [{"text": "S1", "color": "red"}], "customer_arr": 168.23,
                     "customer_poc": "ou_14a32f1a02e64944cf19207aa43abcef",
                     "customer_link": "[Lark科技_01](/document-mod/index)",
                     "company_image": "![image.png](img_v3_02cc_bf88cdee)"},
                ],
            }
        ]
    },
}  # fmt: skip
CHART_EXAMPLE = {  # …/content-components/chart ("Line Chart", with its mock data)
    "schema": "2.0",
    "body": {
        "elements": [
            {
                "tag": "chart",
                "chart_spec": {
                    "type": "line",
                    "title": {"text": "Line Chart"},
                    "data": {"values": [{"time": "2:00", "value": 8},
                                        {"time": "4:00", "value": 9}]},
                    "xField": "time",
                    "yField": "value",
                },
            }
        ]
    },
    "header": {"template": "purple", "title": {"content": "Card Title", "tag": "plain_text"}},
}  # fmt: skip
MARKDOWN_EXAMPLE = {  # …/content-components/rich-text ("JSON Structure")
    "schema": "2.0",
    "config": {"update_multi": True, "summary": {"content": "Custom content"},
               "width_mode": "fill", "enable_forward": True},
    "body": {
        "elements": [
            {
                "tag": "markdown",
                "element_id": "custom_id",
                "margin": "0px 0px 0px 0px",
                "content": "# Heading 1",
                "text_size": "normal",
                "text_align": "left",
                "icon": {"tag": "standard_icon", "token": "chat-forbidden_outlined",
                         "color": "orange"},
            }
        ]
    },
}  # fmt: skip


@pytest.mark.parametrize(
    "card",
    [TITLE_EXAMPLE, DIVIDER_EXAMPLE, BUTTON_EXAMPLE, TABLE_EXAMPLE, CHART_EXAMPLE,
     MARKDOWN_EXAMPLE],
    ids=["title", "divider", "button", "table", "chart", "markdown"],
)  # fmt: skip
def test_the_platforms_own_examples_are_accepted(card: dict[str, Any]) -> None:
    assert validate_card(card) is None


# -- what is refused, and with which code ---------------------------------------------------

Edit = Callable[[dict[str, Any]], None]


def refused(base: dict[str, Any], edit: Edit) -> tuple[int, str]:
    card = copy.deepcopy(base)
    edit(card)
    error = validate_card(card)
    assert error is not None, "accepted"
    return error.sub_code, error.platform_message()


def elements(card: dict[str, Any]) -> list[dict[str, Any]]:
    return card["body"]["elements"]


def first_column(card: dict[str, Any]) -> dict[str, Any]:
    return elements(card)[0]["columns"][0]


@pytest.mark.parametrize(
    ("base", "edit", "where"),
    [
        (MARKDOWN_EXAMPLE, lambda c: elements(c)[0].update(font="x"), "font"),
        (TITLE_EXAMPLE, lambda c: c["header"]["title"].update(bold=True), "title -> bold"),
        (TITLE_EXAMPLE, lambda c: c["header"].update(color="red"), "header -> color"),
        (DIVIDER_EXAMPLE, lambda c: elements(c)[1].update(style="dashed"), "style"),
        (DIVIDER_EXAMPLE, lambda c: elements(c)[2].update(action="x"), "action"),
        (BUTTON_EXAMPLE, lambda c: first_column(c)["elements"][0]["behaviors"][0]
         .update(target="_blank"), "target"),
        (BUTTON_EXAMPLE, lambda c: first_column(c).update(height="10px"), "height"),
        (BUTTON_EXAMPLE, lambda c: elements(c)[0].update(gap="8px"), "gap"),
        (TABLE_EXAMPLE, lambda c: elements(c)[0].update(striped=True), "striped"),
        (TABLE_EXAMPLE, lambda c: elements(c)[0]["columns"][0].update(sortable=True), "sortable"),
        (TABLE_EXAMPLE, lambda c: elements(c)[0]["header_style"].update(italic=True), "italic"),
        (CHART_EXAMPLE, lambda c: elements(c)[0].update(theme="dark"), "theme"),
        (MARKDOWN_EXAMPLE, lambda c: c["config"].update(wide_screen_mode=True),
         "wide_screen_mode"),
        (MARKDOWN_EXAMPLE, lambda c: c.update(elements=[]), "ROOT -> elements"),
        (MARKDOWN_EXAMPLE, lambda c: c.update(i18n_elements={}), "i18n_elements"),
        (MARKDOWN_EXAMPLE, lambda c: c.update(fallback={}), "fallback"),
    ],
)  # fmt: skip
def test_an_unknown_property_is_refused_with_its_path(
    base: dict[str, Any], edit: Edit, where: str
) -> None:
    code, message = refused(base, edit)
    assert code == 200621 and "unsupported property" in message and where in message


@pytest.mark.parametrize(
    ("edit", "what"),
    [
        (lambda c: elements(c)[0].update(page_size=11), "page_size"),
        (lambda c: elements(c)[0].update(row_height="30px"), "row_height"),
        (lambda c: elements(c)[0]["columns"][0].update(data_type="string"), "data_type"),
        (lambda c: elements(c)[0]["columns"][0].pop("data_type"), "data_type is missing"),
        (lambda c: elements(c)[0]["columns"][1].pop("name"), "name is missing"),
        (lambda c: elements(c)[0]["columns"][0].update(width="60px"), "width"),
        (lambda c: elements(c)[0]["columns"][0].update(format={"precision": 2}), "format"),
        (lambda c: elements(c)[0]["columns"].append(dict(elements(c)[0]["columns"][0])),
         "unique"),
        (lambda c: elements(c)[0].pop("rows"), "rows is missing"),
    ],
)  # fmt: skip
def test_table_columns_follow_the_table_page(edit: Edit, what: str) -> None:
    code, message = refused(TABLE_EXAMPLE, edit)
    assert code == 200621 and what in message


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (lambda c: elements(c)[0]["rows"][0].update(customer_region="华东"), 200915),
        (lambda c: elements(c)[0]["rows"][1].update(customer_arr="168.23"), 200914),
        (lambda c: elements(c)[0]["rows"][0].update(customer_arr=True), 200914),
        (lambda c: elements(c)[0]["rows"][0].update(customer_date="2023-11-07"), 200914),
        (lambda c: elements(c)[0]["rows"][0].update(customer_poc=[42]), 200914),
        (lambda c: elements(c)[0]["rows"][0].update(customer_scale=[{"label": "S2"}]), 200914),
        (lambda c: elements(c)[0]["rows"][0].update(customer_scale={"text": "S2"}), 200914),
        (lambda c: elements(c)[0]["rows"][0].update(
            customer_scale=[{"text": "S2", "color": "pink"}]), 200914),
        (lambda c: elements(c)[0]["rows"][0].update(customer_name={"text": "x"}), 200914),
    ],
)  # fmt: skip
def test_table_cells_must_match_their_columns(edit: Edit, code: int) -> None:
    got, message = refused(TABLE_EXAMPLE, edit)
    assert got == code
    assert "rows -> [" in message  # the path names the row and the cell


@pytest.mark.parametrize("bad", ["1accounts", "_accounts", "m-accounts", "a" * 21, "账户", "", 7])
def test_element_ids_follow_the_documented_format(bad: Any) -> None:
    code, message = refused(MARKDOWN_EXAMPLE, lambda c: elements(c)[0].update(element_id=bad))
    assert code == 200621 and "element_id" in message
    assert validate_card({**MARKDOWN_EXAMPLE, "body": {"elements": [
        {**elements(MARKDOWN_EXAMPLE)[0], "element_id": "a" * 20}]}}) is None  # fmt: skip


def test_element_ids_are_unique_across_the_whole_card() -> None:
    def twice_in_columns(c: dict[str, Any]) -> None:
        first_column(c)["elements"][0]["element_id"] = "retry"
        elements(c)[0]["columns"][1]["elements"][0]["element_id"] = "retry"

    assert refused(BUTTON_EXAMPLE, twice_in_columns)[0] == 200621

    def header_and_body(c: dict[str, Any]) -> None:
        c["header"]["text_tag_list"][0]["element_id"] = "status"
        elements(c)[0]["element_id"] = "status"

    code, message = refused(TITLE_EXAMPLE, header_and_body)
    assert code == 200621 and "unique" in message


@pytest.mark.parametrize(
    ("edit", "what"),
    [
        (lambda c: c.update(schema="3.0"), "schema"),
        (lambda c: c.update(schema=2.0), "schema"),
        (lambda c: c.pop("schema"), "1.0"),  # a 1.0 card has elements at the top, not a body
        (lambda c: c["config"].update(update_multi=False), "update_multi must be true"),
        (lambda c: c["config"].update(update_multi="true"), "boolean"),
    ],
)
def test_schema_2_0_and_shared_cards(edit: Edit, what: str) -> None:
    code, message = refused(MARKDOWN_EXAMPLE, edit)
    assert code == 200621 and what in message


def test_tables_stay_at_the_root_and_at_most_five() -> None:
    table = elements(TABLE_EXAMPLE)[0]

    def nested(c: dict[str, Any]) -> None:
        first_column(c)["elements"].append(copy.deepcopy(table))

    code, message = refused(BUTTON_EXAMPLE, nested)
    assert code == 200621 and "root" in message
    five = {**TABLE_EXAMPLE, "body": {"elements": [copy.deepcopy(table) for _ in range(5)]}}
    assert validate_card(five) is None
    code, message = refused(five, lambda c: elements(c).append(copy.deepcopy(table)))
    assert code == 11310 and "table number over limit" in message


def test_at_most_200_elements_or_components() -> None:
    def hrs(n: int) -> dict[str, Any]:
        return {"schema": "2.0", "body": {"elements": [{"tag": "hr"}] * n}}

    assert validate_card(hrs(MAX_COMPONENTS)) is None
    error = validate_card(hrs(MAX_COMPONENTS + 1))
    assert error is not None and error.sub_code == 11310
    # Text objects count too: 100 buttons are 200 elements (button + its plain_text).
    button = {"tag": "button", "text": {"tag": "plain_text", "content": "x"}}
    assert validate_card({"schema": "2.0", "body": {"elements": [button] * 100}}) is None
    error = validate_card({"schema": "2.0", "body": {"elements": [button] * 101}})
    assert error is not None and error.sub_code == 11310


def test_column_sets_nest_at_most_five_levels() -> None:
    def nest(levels: int) -> dict[str, Any]:
        inner: dict[str, Any] = {"tag": "markdown", "content": "x"}
        for _ in range(levels):
            inner = {"tag": "column_set", "columns": [{"tag": "column", "elements": [inner]}]}
        return {"schema": "2.0", "body": {"elements": [inner]}}

    assert validate_card(nest(5)) is None
    error = validate_card(nest(6))
    assert error is not None and "nest" in error.message


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: elements(c)[0]["chart_spec"].update(type="lines"),
        lambda c: elements(c)[0]["chart_spec"].pop("yField"),
        lambda c: elements(c)[0]["chart_spec"].update(data={"values": "mock_data"}),
        lambda c: elements(c)[0]["chart_spec"].update(data=[{"values": [1, 2]}]),
        lambda c: elements(c).__setitem__(0, {**elements(c)[0], "chart_spec": []}),
    ],
)
def test_an_invalid_chart_spec_is_200550(edit: Edit) -> None:
    code, message = refused(CHART_EXAMPLE, edit)
    assert code == 200550 and "chart spec is invalid" in message and "tag: chart" in message


def test_tags_2_0_does_not_support() -> None:
    action = {"tag": "action", "actions": [{"tag": "button"}]}
    code, message = refused(MARKDOWN_EXAMPLE, lambda c: elements(c).append(action))
    assert code == 200861 and "unsupported tag action" in message
    assert refused(MARKDOWN_EXAMPLE, lambda c: elements(c).append({"tag": "blink"}))[0] == 200861
    # A real 2.0 component the sandbox has no schema for says so, instead of passing unchecked.
    code, message = refused(MARKDOWN_EXAMPLE, lambda c: elements(c).append({"tag": "img"}))
    assert code == 200621 and "does not model" in message


def test_buttons_behave_as_the_button_page_says() -> None:
    def behavior(b: dict[str, Any]) -> Edit:
        return lambda c: first_column(c)["elements"][0].update(behaviors=[b])

    assert refused(BUTTON_EXAMPLE, behavior({"type": "open_url"}))[0] == 200621  # no URL
    assert refused(BUTTON_EXAMPLE, behavior({"type": "callback", "value": "x"}))[0] == 200621
    assert refused(BUTTON_EXAMPLE, behavior({"type": "jump", "url": "https://x"}))[0] == 200621
    type_edit = lambda c: first_column(c)["elements"][0].update(type="primary_outline")  # noqa: E731
    assert refused(BUTTON_EXAMPLE, type_edit)[0] == 200621


def test_margins_and_spacing_use_the_documented_units() -> None:
    for bad in ("10", "4px 0 4px", "100px", "4pt"):
        code, _ = refused(MARKDOWN_EXAMPLE, lambda c, b=bad: elements(c)[0].update(margin=b))
        assert code == 200621, bad
    for good in ("0", "10px", "4px 0", "-4px 0 4px 0"):
        card = copy.deepcopy(MARKDOWN_EXAMPLE)
        elements(card)[0]["margin"] = good
        assert validate_card(card) is None, good


def test_the_sandbox_answers_230099_with_the_sub_code_over_http() -> None:
    import lark_oapi as lark
    from lark_oapi.api.im.v1 import CreateMessageRequest, CreateMessageRequestBody

    from adsync.sandbox.feishu import FeishuSandbox
    from adsync.sandbox.server import SandboxServer
    from adsync.sync.feishu import TOKEN_CACHE

    bad = copy.deepcopy(TABLE_EXAMPLE)
    elements(bad)[0]["rows"][0]["customer_region"] = "华东"
    TOKEN_CACHE.drop("self_tenant_token:cli_sandbox_app")
    with SandboxServer(platforms=[FeishuSandbox()]) as server:
        client = (
            lark.Client.builder()
            .app_id("cli_sandbox_app")
            .app_secret("sandbox-feishu-secret")
            .domain(server.url)
            .cache(TOKEN_CACHE)
            .log_level(lark.LogLevel.ERROR)
            .build()
        )
        for card, code in ((bad, 230099), (TABLE_EXAMPLE, 0)):
            body = (
                CreateMessageRequestBody.builder()
                .receive_id("oc_sandbox_reports")
                .msg_type("interactive")
                .content(json.dumps(card, ensure_ascii=False))
                .build()
            )
            request = CreateMessageRequest.builder().receive_id_type("chat_id").request_body(body)
            response = client.im.v1.message.create(request.build())
            assert response.code == code, response.msg
            if code:
                assert response.raw.status_code == 400
                assert "ErrCode: 200915" in response.msg and "customer_region" in response.msg
