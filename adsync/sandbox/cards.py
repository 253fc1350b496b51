"""The card JSON rules the Feishu platform enforces, as a small schema per component.

JSON 2.0 refuses what it does not know ("在 JSON 2.0 版本中，传入不支持的属性将报错", the 2.0
breaking-changes page), so every object below lists the properties its doc lists, and anything
else is an error. Built from the platform's docs, not from adsync's output:

* structure — feishu-cards/card-json-v2-structure: the top-level keys, ``config``, ``card_link``,
  ``body``; ``element_id`` unique in the card, letters/digits/underscores, starting with a letter,
  at most 20 characters; at most 200 elements or components in a card.
* breaking changes — card-json-v2-breaking-changes-release-notes: ``elements`` live under
  ``body``; no ``i18n_elements``, no ``fallback``; ``update_multi`` may only be ``true``; the 1.0
  interactive module (``"tag": "action"``) is gone (also the button page).
* components — card-json-v2-components/…: title (``header``), plain-text (``div`` and text
  objects), rich-text (``markdown``), divider (``hr``), button, table, column-set, chart.
* error codes — im-v1/message/create, "230099 子错误码": 200621 the card JSON is wrong, 200861
  a tag 2.0 no longer supports, 200914 a table cell its column's ``data_type`` cannot parse,
  200915 a row key no column declares, 200550 an invalid ``chart_spec``, 11310 "element exceeds
  the limit" (over 200). The error text follows the documented shape ``Failed to create card
  content, ext=ErrCode: N; ErrPath: ROOT -> …; ErrMsg: …; ErrorValue: …``.

Where the docs name no sub-code — an unsupported property, a value outside its enum, a bad or
repeated ``element_id``, a table inside a column, ``update_multi: false`` — the sandbox answers
200621, the documented code for incorrect card JSON (unverified against the live platform).
More than five tables answers 11310 "card table number over limit", the text users report
(the table page says "单张卡片最多支持放置五个表格组件"; the sub-code is unverified).

Components that exist in 2.0 but adsync does not use (forms, pickers, images, …) are refused
with a message saying the sandbox does not model them: a card using one fails a test until its
schema is added here from its doc, instead of passing unchecked.

1.0 cards ignore unknown properties on the platform, so they get only the structural checks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CardError", "MAX_COMPONENTS", "MAX_TABLES", "validate_card"]

BAD_JSON = 200621  # "parse card json err, please check whether the card json is correct"
UNSUPPORTED_TAG = 200861  # "cards of schema V2 no longer support this capability"
BAD_CELL = 200914  # "table rows is invalid" (a cell its data_type cannot parse)
BAD_ROW_NAME = 200915  # "table rows name is invalid" (a key no column declares)
BAD_CHART = 200550  # "chart spec is invalid"
OVER_LIMIT = 11310  # "element exceeds the limit" / "card table number over limit"

MAX_COMPONENTS = 200  # "一张卡片最多支持 200 个元素或组件" (structure page)
MAX_TABLES = 5  # "单张卡片最多支持放置五个表格组件" (table page)
MAX_COLUMN_NESTING = 5  # "分栏组件最多支持嵌套五层" (column-set page)
ELEMENT_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,19}$")

# Tags 2.0 refuses (the 1.0 interactive module and note: breaking-changes page, "废弃组件").
V1_ONLY_TAGS = frozenset({"action", "note"})
# Tags 2.0 has but this sandbox does not model (component overview page).
UNMODELLED_TAGS = frozenset(
    {
        "img",
        "img_combination",
        "person",
        "person_list",
        "form",
        "input",
        "overflow",
        "select_static",
        "multi_select_static",
        "select_person",
        "multi_select_person",
        "date_picker",
        "picker_time",
        "picker_datetime",
        "select_img",
        "checker",
        "collapsible_panel",
        "interactive_container",
        "audio",
    }
)


@dataclass(frozen=True)
class CardError:
    """Why the platform would refuse a card: answered as 230099 with ``platform_message``."""

    sub_code: int
    path: str
    message: str
    value: str = ""

    def platform_message(self) -> str:
        return (
            f"Failed to create card content, ext=ErrCode: {self.sub_code}; ErrPath: {self.path}; "
            f"ErrMsg: {self.message}; ErrorValue: {self.value}; "
        )


class _Invalid(Exception):
    def __init__(self, error: CardError) -> None:
        super().__init__(error.message)
        self.error = error


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(path: Sequence[str], message: str, value: Any = "", code: int = BAD_JSON) -> _Invalid:
    return _Invalid(
        CardError(code, " -> ".join(path), message, _show(value) if value != "" else "")
    )


# -- value checks: each raises _Invalid or returns ---------------------------------------------

Check = Callable[[Any, list[str], "_Context"], None]


@dataclass
class _Context:
    ids: set[str] = field(default_factory=set)
    components: int = 0
    tables: int = 0

    def count(self, path: list[str]) -> None:
        self.components += 1
        if self.components > MAX_COMPONENTS:
            raise _fail(path, "element exceeds the limit", MAX_COMPONENTS, OVER_LIMIT)


def string(value: Any, path: list[str], ctx: _Context) -> None:
    if not isinstance(value, str):
        raise _fail(path, "must be a string", value)


def boolean(value: Any, path: list[str], ctx: _Context) -> None:
    if not isinstance(value, bool):
        raise _fail(path, "must be a boolean", value)


def integer(lo: int, hi: int | None = None) -> Check:
    def check(value: Any, path: list[str], ctx: _Context) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, "must be an integer", value)
        if value < lo or (hi is not None and value > hi):
            raise _fail(path, f"must be between {lo} and {hi if hi is not None else '∞'}", value)

    return check


def one_of(*allowed: str) -> Check:
    def check(value: Any, path: list[str], ctx: _Context) -> None:
        if value not in allowed:
            raise _fail(path, f"must be one of {', '.join(allowed)}", value)

    return check


_PX = re.compile(r"^(-?\d+)px$")
_PCT = re.compile(r"^(\d+)%$")


def px(lo: int, hi: float = math.inf, *words: str) -> Check:
    """``Npx`` with N in [lo, hi], or one of ``words``."""

    def check(value: Any, path: list[str], ctx: _Context) -> None:
        if isinstance(value, str) and value in words:
            return
        m = _PX.match(value) if isinstance(value, str) else None
        if not m or not lo <= int(m.group(1)) <= hi:
            top = "" if hi == math.inf else f"{int(hi)}"
            choices = ", ".join((*words, f"[{lo},{top}]px"))
            raise _fail(path, f"must be {choices}", value)

    return check


def box(lo: int, hi: int) -> Check:
    """A margin or padding: one, two or four values, each "0" or "Npx" in [lo, hi]."""

    def check(value: Any, path: list[str], ctx: _Context) -> None:
        parts = value.split() if isinstance(value, str) else []
        ok = len(parts) in (1, 2, 4)
        for part in parts:
            m = _PX.match(part)
            ok = ok and (part == "0" or bool(m and lo <= int(m.group(1)) <= hi))
        if not ok:
            raise _fail(path, f'must be 1, 2 or 4 values in [{lo},{hi}]px, e.g. "4px 0"', value)

    return check


def spacing(value: Any, path: list[str], ctx: _Context) -> None:
    # small/medium/large/extra_large or [0,99]px (column-set, structure pages); "default"
    # appears in the column-set page's own example.
    px(0, 99, "small", "medium", "large", "extra_large", "default")(value, path, ctx)


def url(value: Any, path: list[str], ctx: _Context) -> None:
    string(value, path, ctx)


def json_object(value: Any, path: list[str], ctx: _Context) -> None:
    if not isinstance(value, dict):
        raise _fail(path, "must be an object", value)


def strings_by_key(value: Any, path: list[str], ctx: _Context) -> None:
    """An i18n map: {"zh_cn": "…", "en_us": "…"}."""
    json_object(value, path, ctx)
    for key, text in value.items():
        string(text, [*path, key], ctx)


def list_of(item: Check) -> Check:
    def check(value: Any, path: list[str], ctx: _Context) -> None:
        if not isinstance(value, list):
            raise _fail(path, "must be a list", value)
        for i, element in enumerate(value):
            item(element, [*path, f"[{i}]"], ctx)

    return check


@dataclass(frozen=True)
class Shape:
    """An object's documented properties (anything else is refused) and the required ones."""

    props: Mapping[str, Check]
    required: frozenset[str] = frozenset()

    def __call__(self, value: Any, path: list[str], ctx: _Context) -> None:
        if not isinstance(value, dict):
            raise _fail(path, "must be an object", value)
        for key in value:
            if key not in self.props:
                raise _fail([*path, str(key)], "unsupported property", key)
        for key in sorted(self.required - set(value)):
            raise _fail(path, f"required property {key} is missing")
        for key, item in value.items():
            self.props[key](item, [*path, key], ctx)


def shape(props: Mapping[str, Check], *required: str) -> Shape:
    return Shape(dict(props), frozenset(required))


# -- shared pieces --------------------------------------------------------------------------

ALIGN = one_of("left", "center", "right")
VALIGN = one_of("top", "center", "bottom")
COLOR = string  # color enumerations, custom names from config.style.color, or rgba(...)
TEXT_SIZE = string  # enumerated sizes, or a custom name from config.style.text_size

ICON = shape(
    {"tag": one_of("standard_icon", "custom_icon"), "token": string, "color": COLOR,
     "img_key": string}
)  # fmt: skip
# A text object (plain-text page): plain_text or lark_md, in titles, buttons and div.
TEXT = shape(
    {
        "tag": one_of("plain_text", "lark_md"),
        "content": string,
        "i18n_content": strings_by_key,
        "text_size": TEXT_SIZE,
        "text_color": COLOR,
        "text_align": ALIGN,
        "lines": integer(1),
    },
    "tag",
)
MULTI_URL = shape({"url": url, "pc_url": url, "ios_url": url, "android_url": url})
# Suffix-tag colours (title page) and option-tag colours (table page): one enumeration.
TAG_COLOR_NAMES = frozenset(
    [
        "neutral",
        "blue",
        "turquoise",
        "lime",
        "orange",
        "violet",
        "indigo",
        "wathet",
        "green",
        "yellow",
        "red",
        "purple",
        "carmine",
    ]
)
TAG_COLORS = one_of(*sorted(TAG_COLOR_NAMES))
# Header themes (title page).
TEMPLATES = one_of(
    *[
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
    ]
)


def element_id(value: Any, path: list[str], ctx: _Context) -> None:
    if not isinstance(value, str) or not ELEMENT_ID.match(value):
        raise _fail(
            path,
            "element_id must start with a letter and hold at most 20 letters, digits or "
            "underscores",
            value,
        )
    if value in ctx.ids:
        raise _fail(path, "element_id must be unique in the card", value)
    ctx.ids.add(value)


def tagged(tag: str, props: Mapping[str, Check], *required: str) -> Shape:
    """A component: its tag, the common ``element_id`` and ``margin``, and its own props."""
    common: dict[str, Check] = {"tag": one_of(tag), "element_id": element_id,
                                "margin": box(-99, 99)}  # fmt: skip
    return shape({**common, **props}, "tag", *required)


TEXT_TAG = shape(
    {"tag": one_of("text_tag"), "element_id": element_id, "text": TEXT, "color": TAG_COLORS},
    "tag",
)
HEADER = shape(
    {
        "title": TEXT,
        "subtitle": TEXT,
        "text_tag_list": list_of(TEXT_TAG),
        "i18n_text_tag_list": lambda v, p, c: _i18n_lists(v, p, c, TEXT_TAG),
        "template": TEMPLATES,
        "icon": ICON,
        "padding": box(0, 99),
    },
    "title",
)


def _i18n_lists(value: Any, path: list[str], ctx: _Context, item: Check) -> None:
    json_object(value, path, ctx)
    for key, items in value.items():
        list_of(item)(items, [*path, key], ctx)


def _update_multi(value: Any, path: list[str], ctx: _Context) -> None:
    boolean(value, path, ctx)
    if value is not True:
        raise _fail(path, "cards of schema 2.0 are shared cards: update_multi must be true", value)


CONFIG = shape(
    {
        "streaming_mode": boolean,
        "streaming_config": json_object,
        "summary": shape({"content": string, "i18n_content": strings_by_key}),
        "locales": list_of(string),
        "enable_forward": boolean,
        "update_multi": _update_multi,
        "width_mode": one_of("default", "compact", "fill"),
        "use_custom_translation": boolean,
        "enable_forward_interaction": boolean,
        "style": shape({"text_size": json_object, "color": json_object}),
    }
)
CARD_LINK = MULTI_URL


# -- components -----------------------------------------------------------------------------


def _behavior(value: Any, path: list[str], ctx: _Context) -> None:
    """Button behaviors (button page): open_url with its links, or callback with a value."""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "open_url":
        shape({"type": string, "default_url": url, "android_url": url, "ios_url": url,
               "pc_url": url}, "default_url")(value, path, ctx)  # fmt: skip
    elif kind == "callback":
        shape({"type": string, "value": json_object}, "value")(value, path, ctx)
    else:
        raise _fail([*path, "type"], "behavior type must be open_url or callback", kind)


MARKDOWN = tagged(
    "markdown",
    {"content": string, "text_align": ALIGN, "text_size": TEXT_SIZE, "icon": ICON,
     "i18n_content": strings_by_key},
    "content",
)  # fmt: skip
DIV = tagged(
    "div",
    {
        "width": px(16, 999, "fill", "auto"),
        "text": TEXT,
        "icon": ICON,
        "fields": list_of(shape({"is_short": boolean, "text": TEXT}, "text")),
    },
)
HR = tagged("hr", {})
BUTTON = tagged(
    "button",
    {
        "type": one_of("default", "primary", "danger", "text", "primary_text", "danger_text",
                       "primary_filled", "danger_filled", "laser"),
        "size": one_of("tiny", "small", "medium", "large"),
        "width": px(100, math.inf, "default", "fill"),
        "text": TEXT,
        "icon": ICON,
        "hover_tips": TEXT,
        "disabled": boolean,
        "disabled_tips": TEXT,
        "confirm": shape({"title": TEXT, "text": TEXT}, "title"),
        "behaviors": list_of(_behavior),
        "url": url,  # historical properties the page still lists
        "multi_url": MULTI_URL,
        "value": json_object,
        "name": string,
        "form_action_type": one_of("submit", "reset"),
    },
)  # fmt: skip
CHART_TYPES = frozenset(
    {"line", "area", "bar", "pie", "common", "funnel", "scatter", "wordCloud", "radar",
     "rose", "gauge", "circularProgress", "linearProgress", "histogram", "sankey", "treemap"}
)  # fmt: skip


def _chart_spec(value: Any, path: list[str], ctx: _Context) -> None:
    """The VChart spec, as far as a sandbox can judge it: a known chart type, its data as
    ``{"values": [objects]}`` (or a list of those), and the fields a cartesian chart needs."""

    def bad(message: str, got: Any = "") -> _Invalid:
        return _fail(path, f"chart spec is invalid: {message}", got, BAD_CHART)

    if not isinstance(value, dict):
        raise bad("chart_spec must be an object", value)
    kind = value.get("type")
    if kind not in CHART_TYPES:
        raise bad("unknown chart type", kind)
    data = value.get("data")
    datasets = data if isinstance(data, list) else [data]
    for dataset in datasets:
        values = dataset.get("values") if isinstance(dataset, dict) else None
        if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
            raise bad("data must be {values: [objects]}", dataset)
    if kind in ("line", "area", "bar", "scatter"):
        for key in ("xField", "yField"):
            got = value.get(key)
            ok = isinstance(got, str) or (
                isinstance(got, list) and bool(got) and all(isinstance(g, str) for g in got)
            )
            if not ok:
                raise bad(f"{key} must name a data field", got)


CHART = tagged(
    "chart",
    {
        "aspect_ratio": one_of("1:1", "2:1", "4:3", "16:9"),
        "color_theme": one_of("brand", "rainbow", "complementary", "converse", "primary"),
        "chart_spec": _chart_spec,
        "preview": boolean,
        "height": px(1, 999, "auto"),
    },
    "chart_spec",
)
DATA_TYPES = ("text", "lark_md", "options", "number", "persons", "date", "markdown")
TABLE_COLUMN = shape(
    {
        "name": string,
        "display_name": string,
        "width": lambda v, p, c: _column_width(v, p),
        "vertical_align": VALIGN,
        "horizontal_align": ALIGN,
        "data_type": one_of(*DATA_TYPES),
        "format": shape({"precision": integer(0, 10), "symbol": string, "separator": boolean}),
        "date_format": string,
    },
    "name",
    "data_type",
)
HEADER_STYLE = shape(
    {
        "text_align": ALIGN,
        "text_size": one_of("normal", "heading"),
        "background_style": one_of("grey", "none"),
        "text_color": one_of("default", "grey"),
        "bold": boolean,
        "lines": integer(1),
    }
)
TABLE = tagged(
    "table",
    {
        "page_size": integer(1, 10),
        "row_height": px(32, 124, "low", "middle", "high", "auto"),
        "row_max_height": px(32, 999),
        "freeze_first_column": boolean,
        "header_style": HEADER_STYLE,
        "columns": list_of(TABLE_COLUMN),
        "rows": list_of(json_object),
    },
    "columns",
    "rows",
)


def _column_width(value: Any, path: list[str]) -> None:
    """auto, [80,600]px, or [1,100]% (table page)."""
    m = _PCT.match(value) if isinstance(value, str) else None
    if m and 1 <= int(m.group(1)) <= 100:
        return
    px(80, 600, "auto")(value, path, _Context())


def _table_cells(table: dict[str, Any], path: list[str]) -> None:
    """Rows against their columns: every key a declared column (200915), every cell what its
    column's data_type can parse (200914; table page, "data_type 字段说明")."""
    columns: dict[str, str] = {}
    for i, column in enumerate(table["columns"]):
        name = column["name"]
        if name in columns:
            raise _fail([*path, "columns", f"[{i}]", "name"], "column names must be unique", name)
        kind = column["data_type"]
        if "format" in column and kind != "number":
            raise _fail([*path, "columns", f"[{i}]", "format"], "format is for number columns")
        if "date_format" in column and kind != "date":
            raise _fail([*path, "columns", f"[{i}]", "date_format"], "date_format is for dates")
        columns[name] = kind
    for r, row in enumerate(table["rows"]):
        for key, cell in row.items():
            where = [*path, "rows", f"[{r}]", str(key)]
            if key not in columns:
                raise _fail(where, "table rows name is invalid", key, BAD_ROW_NAME)
            if not _cell_ok(columns[key], cell):
                raise _fail(
                    where, f"table rows is invalid: not a {columns[key]} cell", cell, BAD_CELL
                )


def _cell_ok(kind: str, cell: Any) -> bool:
    number = isinstance(cell, int | float) and not isinstance(cell, bool)
    if kind in ("text", "lark_md", "markdown"):  # "non-string types are converted to string"
        return cell is None or isinstance(cell, str | bool) or number
    if kind == "number":
        return number
    if kind == "date":  # Unix milliseconds
        return number
    if kind == "persons":  # one user id, or a list of them
        return isinstance(cell, str) or (
            isinstance(cell, list) and all(isinstance(c, str) for c in cell)
        )
    if kind == "options":  # a plain label, or [{text, color}]
        if isinstance(cell, str):
            return True
        if not isinstance(cell, list):
            return False
        for option in cell:
            if not isinstance(option, dict) or set(option) - {"text", "color"}:
                return False
            if not isinstance(option.get("text"), str):
                return False
            if "color" in option and option["color"] not in TAG_COLOR_NAMES:
                return False
        return True
    return False


COLUMN_SET_PROPS: dict[str, Check] = {
    "horizontal_spacing": spacing,
    "horizontal_align": ALIGN,
    "flex_mode": one_of("none", "stretch", "flow", "bisect", "trisect"),
    "background_style": COLOR,
    "action": shape({"multi_url": MULTI_URL}),
    "columns": list_of(json_object),  # each column is checked as a component below
}
COLUMN_SET = tagged("column_set", COLUMN_SET_PROPS, "columns")
COLUMN = tagged(
    "column",
    {
        "background_style": COLOR,
        "width": px(16, 600, "auto", "weighted"),
        "weight": integer(1, 5),
        "horizontal_spacing": spacing,
        "horizontal_align": ALIGN,
        "vertical_align": VALIGN,
        "vertical_spacing": spacing,
        "direction": one_of("vertical", "horizontal"),
        "padding": box(0, 99),
        "elements": list_of(json_object),  # checked as components below
        "action": shape({"multi_url": MULTI_URL}),
    },
)
COMPONENTS: dict[str, Shape] = {
    "markdown": MARKDOWN,
    "div": DIV,
    "hr": HR,
    "button": BUTTON,
    "chart": CHART,
    "table": TABLE,
    "column_set": COLUMN_SET,
}
BODY = shape(
    {
        "direction": one_of("vertical", "horizontal"),
        "padding": box(0, 99),
        "horizontal_spacing": spacing,
        "horizontal_align": ALIGN,
        "vertical_spacing": spacing,
        "vertical_align": VALIGN,
        "elements": list_of(json_object),  # checked as components below
    }
)
CARD_2 = shape(
    {"schema": one_of("2.0"), "config": CONFIG, "card_link": CARD_LINK, "header": HEADER,
     "body": BODY}
)  # fmt: skip


def _components(elements: list[Any], path: list[str], ctx: _Context, depth: int) -> None:
    """``depth``: how many column sets enclose these elements (0: the card's body)."""
    for i, element in enumerate(elements):
        tag = element.get("tag")
        where = [*path, f"[{i}](tag: {tag})"]
        ctx.count(where)
        if tag in V1_ONLY_TAGS or not isinstance(tag, str):
            raise _fail(where, "cards of schema V2 no longer support this capability",
                        f"unsupported tag {tag}", UNSUPPORTED_TAG)  # fmt: skip
        if tag in UNMODELLED_TAGS:
            raise _fail(
                where,
                f"the sandbox does not model component {tag!r}: add its schema from its doc "
                "to adsync/sandbox/cards.py",
                tag,
            )
        schema = COMPONENTS.get(tag)
        if schema is None:
            raise _fail(where, "cards of schema V2 no longer support this capability",
                        f"unsupported tag {tag}", UNSUPPORTED_TAG)  # fmt: skip
        schema(element, where, ctx)
        _count_objects(element, ctx, where)
        if tag == "table":
            if depth:  # table page, nesting rules: "只可放在卡片根节点下"
                raise _fail(where, "a table may only be placed at the card's root")
            ctx.tables += 1
            if ctx.tables > MAX_TABLES:
                raise _fail(where, "card table number over limit", "table", OVER_LIMIT)
            _table_cells(element, where)
        elif tag == "column_set":
            if depth + 1 > MAX_COLUMN_NESTING:
                raise _fail(where, f"column sets nest at most {MAX_COLUMN_NESTING} levels")
            for c, column in enumerate(element["columns"]):
                at = [*where, "columns", f"[{c}](tag: {column.get('tag')})"]
                ctx.count(at)
                COLUMN(column, at, ctx)
                inner = column.get("elements") or []
                for e, child in enumerate(inner):
                    if child.get("tag") == "form":  # column-set page: no form, no table
                        raise _fail([*at, "elements", f"[{e}]"], "a form cannot be in a column")
                _components(inner, [*at, "elements"], ctx, depth + 1)


def _count_objects(element: Mapping[str, Any], ctx: _Context, path: list[str]) -> None:
    """Text objects, icons and tags count as elements too ("200 个元素或组件")."""
    for key, value in element.items():
        if key in ("chart_spec", "rows", "columns", "elements", "behaviors", "value"):
            continue
        if isinstance(value, dict) and isinstance(value.get("tag"), str):
            ctx.count([*path, key])


def validate_card(card: Any) -> CardError | None:
    """None if the platform would accept ``card`` (a parsed ``content``), else why not."""
    try:
        _validate(card)
    except _Invalid as exc:
        return exc.error
    return None


def _validate(card: Any) -> None:
    root = ["ROOT"]
    if not isinstance(card, dict):
        raise _fail(root, "card must be a JSON object", card)
    if card.get("type") == "template":
        data = card.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("template_id"), str):
            raise _fail(root, "template card needs data.template_id")
        return
    schema = card.get("schema")
    if schema in (None, "1.0"):
        _validate_v1(card)
        return
    if schema != "2.0":
        raise _fail([*root, "schema"], 'schema must be "1.0" or "2.0"', schema)
    ctx = _Context()
    CARD_2(card, root, ctx)
    header = card.get("header") or {}
    for key in ("title", "subtitle", "icon"):
        if key in header:
            ctx.count([*root, "header", key])
    for tag in header.get("text_tag_list") or []:
        ctx.count([*root, "header", "text_tag_list"])
        if "text" in tag:
            ctx.count([*root, "header", "text_tag_list", "text"])
    body = card.get("body") or {}
    _components(body.get("elements") or [], [*root, "body", "elements"], ctx, 0)


def _validate_v1(card: dict[str, Any]) -> None:
    """1.0 ignores unknown properties ("传入不支持的属性作忽略处理"): structure only."""
    elements = card.get("elements")
    if elements is None and isinstance(card.get("i18n_elements"), dict):
        return
    if not isinstance(elements, list):
        raise _fail(["ROOT"], "card needs elements (1.0) or schema 2.0 with body.elements")
    for i, element in enumerate(elements):
        if not isinstance(element, dict) or not isinstance(element.get("tag"), str):
            raise _fail(["ROOT", "elements", f"[{i}]"], "every element needs a tag", element)
