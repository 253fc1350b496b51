"""Feishu cards (JSON 2.0) for every answer and report the bot posts, and their plain text.

Every builder is a pure function from a result object to a card dict: no I/O, no lark-oapi (the
sender serialises the dict), no database (the result types are imported for annotations only,
because ``adsync.sync.*`` pulls SQLAlchemy). Each returns a card that is already ``fit`` under
the platform's 30 KB limit (error 230025), with ``update_multi`` on so a "working on it…" card
can be PATCHed into the answer later.

The limit is on the *request body* ("卡片消息、富文本消息请求体最大不能超过 30 KB", the create
and reply pages), where the card travels as a JSON string inside JSON: every quote and backslash
of the card is escaped once more. ``card_size`` counts exactly those bytes (lark-oapi 1.7.5
serialises the body with ``json.dumps(…, ensure_ascii=False)``, ``core/json.py``), and
``CARD_LIMIT`` leaves room for the rest of the body and a margin.

Component shapes follow the JSON 2.0 docs (open.feishu.cn → feishu-cards/card-json-v2-*):
``markdown``, ``hr``, ``table`` (text/options columns, ``page_size`` ≤ 10, at most 5 per card,
top level only), ``column_set``/``column``, ``chart`` (a VChart ``chart_spec``), and
``button`` with ``behaviors`` ``[{"type": "open_url", "default_url": …}]`` or
``[{"type": "callback", "value": {…}}]``. JSON 2.0 rejects unknown properties, so nothing here
carries private keys: the only bookkeeping rides in documented ``element_id`` values.

``to_text`` renders any card for the terminal (``adsync chat``): the console shows exactly that.
"""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from adsync.sync.causes import Cause, cause_of, collapse, group  # pure: no SQLAlchemy
from adsync.sync.dates import spans_text

if TYPE_CHECKING:  # annotations only: these modules import SQLAlchemy
    from adsync.sync.discovery import AccountsView, ListedAccount
    from adsync.sync.runner import AccountResult, RunResult
    from adsync.sync.summary import AccountSummary, Summary, Totals
    from adsync.sync.tokens import TokenStatus
    from adsync.sync.verify import VerifyResult

__all__ = [
    "BODY_LIMIT",
    "CARD_LIMIT",
    "Card",
    "accounts_card",
    "alert_card",
    "authorization_card",
    "card_content",
    "card_size",
    "count",
    "duration",
    "fit",
    "history_card",
    "mentions",
    "message_card",
    "money",
    "pct",
    "summary_card",
    "sync_card",
    "to_text",
    "token_card",
    "verify_card",
    "working_card",
]

Card = dict[str, Any]
Lang = Literal["en", "zh"]
TzLike = tzinfo | str | None

# The platform refuses a card message whose request body exceeds 30 KB (230025; create, reply
# and patch pages). The body is {"receive_id": …, "msg_type": …, "content": "<card>", "uuid": …}:
# ENVELOPE_BYTES covers everything but the card (ids ≤ 64 characters, a 50-character uuid, the
# keys), and MARGIN_BYTES stays unused: the docs warn that style tags make "the actual message
# body longer than the request body", and "30 KB" may be counted as 30,000 bytes.
BODY_LIMIT = 30 * 1024
ENVELOPE_BYTES = 512
MARGIN_BYTES = 2 * 1024
CARD_LIMIT = BODY_LIMIT - ENVELOPE_BYTES - MARGIN_BYTES  # bytes of the card as sent (card_size)
DEFAULT_TZ = "Asia/Shanghai"

PAGE_SIZE = 10  # table rows per page: the documented maximum
NAME_CHARS = 48  # an account name in a table cell (the cell ellipsises anyway)
REASON_CHARS = 160  # a failure reason in a cell or line
LINE_CHARS = 400  # one line of free text (warnings, alert lines)
TEXT_CHARS = 4000  # a whole free-text block (help, errors)
MAX_LIST = 10  # warnings / alert lines listed before "… and N more"
MAX_NAMES = 20  # silent account names listed inline
MAX_BUTTONS = 5
CHART_POINTS = 31  # a month of days; the trend is normally 7

TEMPLATES = {"info": "blue", "ok": "green", "success": "green", "warning": "orange", "error": "red"}
SYNC_TEMPLATES = {"ok": "green", "partial": "orange", "failed": "red", "busy": "red"}
HEALTH_TEMPLATES = {"ok": "green", "expiring": "orange", "reauthorize": "red", "unsaved": "red"}
STATUS_COLORS = {  # option-tag colours in tables (the documented blue/green/orange/red)
    "ok": "green",
    "no_data": "blue",
    "partial": "orange",
    "failed": "red",
    "busy": "red",
    "running": "blue",
    "interrupted": "orange",  # its process died mid-run (recovery.py); the next sync completes it
}


# -- words --------------------------------------------------------------------------------------


def _lang(lang: object) -> Lang:
    return "zh" if str(lang or "").lower().startswith("zh") else "en"


def _t(lang: Lang, en: str, zh: str) -> str:
    return zh if lang == "zh" else en


_STATUS_WORDS = {
    "ok": ("done", "完成"),
    "partial": ("partly failed", "部分失败"),
    "failed": ("failed", "失败"),
    "busy": ("already running", "正在进行中"),
    "running": ("running", "进行中"),
    "interrupted": ("interrupted", "已中断"),
    "no_data": ("no data", "无数据"),
}
_TRIGGER_WORDS = {
    "chat": ("from chat", "群聊指令"),
    "button": ("from a button", "卡片按钮"),
    "retry": ("retry", "重试"),
    "schedule": ("scheduled", "定时任务"),
    "catchup": ("catch-up", "补同步"),
    "settle": ("late-data pass", "数据回补"),
    "cli": ("command line", "命令行"),
}


def _status_word(status: str, lang: Lang) -> str:
    en, zh = _STATUS_WORDS.get(status, (status, status))
    return _t(lang, en, zh)


def _trigger_word(trigger: str, lang: Lang) -> str:
    en, zh = _TRIGGER_WORDS.get(trigger, (trigger, trigger))
    return _t(lang, en, zh)


# -- numbers, times -----------------------------------------------------------------------------


def _decimal(value: object) -> Decimal | None:
    if value is None:
        return None
    try:
        # str() first: Decimal(0.1) would carry the binary float's 55 digits.
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def money(value: object) -> str:
    """¥12,345.67 (half-up to the fen); "—" for None or anything not a finite number."""
    d = _decimal(value)
    if d is None:
        return "—"
    with localcontext() as ctx:
        ctx.rounding = ROUND_HALF_UP  # format() rounds with the context; money rounds half-up
        text = f"{abs(d):,.2f}"
    return f"-¥{text}" if d < 0 and text.strip("0.,") else f"¥{text}"


def count(value: object) -> str:
    """12,345; "—" for None."""
    d = _decimal(value)
    return "—" if d is None else f"{int(d):,}"


def pct(value: float | None) -> str:
    """+12.3% / -4.0% / 0.0%; "—" when there is nothing to compare against."""
    if value is None or not math.isfinite(value):
        return "—"
    if abs(value) < 0.0005:
        return "0.0%"
    return f"{value:+,.1%}"


def _change(now: object, before: object) -> float | None:
    """Relative change; None when the base is zero or missing (same rule as sync.summary)."""
    a, b = _decimal(now), _decimal(before)
    if a is None or not b:
        return None
    try:
        ratio = float((a - b) / b)
    except (InvalidOperation, OverflowError):
        return None
    return ratio if math.isfinite(ratio) else None


def duration(seconds: float | None, lang: str = "en") -> str:
    """3d 4h / 5h 12m / 12m, or 3天4小时 / 5小时12分 / 12分钟; past values say "expired … ago"."""
    lg = _lang(lang)
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 0:
        span = duration(-seconds, lg)
        return _t(lg, f"expired {span} ago", f"已过期 {span}")
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return _t(lg, f"{days:,}d {hours}h", f"{days:,}天{hours}小时")
    if hours:
        return _t(lg, f"{hours}h {minutes}m", f"{hours}小时{minutes}分")
    return _t(lg, f"{minutes}m", f"{minutes}分钟")


def _seconds(value: float, lang: Lang) -> str:
    if not math.isfinite(value):
        return "—"
    if value < 60:
        return _t(lang, f"{value:.1f}s", f"{value:.1f} 秒")
    minutes, secs = divmod(int(value), 60)
    return _t(lang, f"{minutes:,}m {secs}s", f"{minutes:,} 分 {secs} 秒")


def _zone(tz: TzLike) -> tzinfo:
    if tz is None:
        return ZoneInfo(DEFAULT_TZ)
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def _zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or str(zone)


def _when(value: object, zone: tzinfo) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)  # the store is UTC
        return aware.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    return str(value)


def _span(start: object, end: object) -> str:
    return str(start) if start == end else f"{start}..{end}"


# -- text hygiene -------------------------------------------------------------------------------


def _visible(text: object) -> str:
    """Control characters and line breaks become spaces; zero-width joiners stay (emoji)."""
    text = str(text)
    if text.isprintable():  # the common case, and C-fast
        return text
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)


def _one_line(text: object) -> str:
    """One line, runs of blanks folded (a name must never start a new markdown line)."""
    return " ".join(_visible(text).split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


# Characters the card markdown treats as syntax, escaped as numeric HTML entities (the rich-text
# doc's "特殊字符转义" table). Only text we did not write is escaped: names, reasons, errors.
_MD_ESCAPES = str.maketrans({c: f"&#{ord(c)};" for c in "\\`*_~[]<>#|$"})
_ENTITY_START = re.compile(r"&(?=#?\w+;)")  # a literal "&amp;"-looking run, not every "&"
_LINE_START = re.compile(r"(?m)^( *)([-+=]|\d+(?=\.))")  # list / heading markers at line start
_LEADING_SPACES = re.compile(r"(?m)^ +")


def _md(text: object, limit: int = LINE_CHARS, *, multiline: bool = False) -> str:
    """Untrusted text made safe for a markdown element: no mentions, links, fonts or lists."""
    if multiline:  # keep the lines and their indentation, lose everything else invisible
        raw = "\n".join(_visible(line).rstrip() for line in str(text).splitlines())
    else:
        raw = _one_line(text)
    raw = _clip(raw.strip("\n"), limit)
    # "&" that would start an entity is marked first (NUL cannot survive _visible), so the
    # escapes below don't escape their own "&#"; then it becomes an entity of its own.
    out = _ENTITY_START.sub("\x00", raw).translate(_MD_ESCAPES).replace("\x00", "&#38;")
    out = _LINE_START.sub(lambda m: m.group(1) + f"&#{ord(m.group(2)[0])};" + m.group(2)[1:], out)
    # Four leading spaces would make a code block; keep the indent as en spaces.
    return _LEADING_SPACES.sub(lambda m: "&ensp;" * len(m.group()), out)


_API_PREFIX = re.compile(r"^Ocean Engine /\S+ failed: ")


def _reason(text: object) -> str:
    """A failure reason as people read it: "40002 no permission …" first, not the API path
    (the path stays in the logs; the code and the platform's words are what matter here)."""
    return _API_PREFIX.sub("", _one_line(text or ""))


def _cell(text: object, limit: int = NAME_CHARS) -> str:
    """Table text cells are plain text (data_type text): one line, bounded, no escaping."""
    return _clip(_one_line(text), limit)


_OPEN_ID = re.compile(r"^o[un]_[0-9A-Za-z_-]{1,64}$")


def mentions(open_ids: Sequence[str]) -> str:
    """Card markdown that @-mentions people: ``<at id=ou_…></at>`` renders as the person's
    name in Feishu (the rich-text doc's "@指定人"). Only well-formed open_ids pass: the ids come
    from configuration, but nothing else may ride into a card's markup."""
    return " ".join(f"<at id={i}></at>" for i in open_ids if _OPEN_ID.match(i))


# -- components (shapes from the JSON 2.0 component docs) ---------------------------------------


def _card(
    title: str,
    template: str,
    elements: list[dict[str, Any]],
    *,
    subtitle: str = "",
    summary: str = "",
) -> Card:
    header: dict[str, Any] = {
        "title": {"tag": "plain_text", "content": _clip(_one_line(title), 120) or "adsync"},
        "template": template,
    }
    if subtitle:
        header["subtitle"] = {"tag": "plain_text", "content": _clip(_one_line(subtitle), 120)}
    config: dict[str, Any] = {"update_multi": True}  # 2.0 supports only shared cards
    if summary:  # the chat list's preview line instead of "[卡片]"
        config["summary"] = {"content": _clip(_one_line(summary), 100)}
    return {"schema": "2.0", "config": config, "header": header, "body": {"elements": elements}}


def _markdown(content: str, *, size: str = "", element_id: str = "") -> dict[str, Any]:
    element: dict[str, Any] = {"tag": "markdown", "content": content}
    if size:
        element["text_size"] = size
    if element_id:
        element["element_id"] = element_id
    return element


def _hr() -> dict[str, Any]:
    return {"tag": "hr"}


def _table(
    element_id: str, columns: Sequence[tuple[str, str, str]], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """``columns``: (key, header, kind) with kind "text", "num" (right-aligned text) or
    "options". Numbers travel as preformatted text: the same "¥12,345.67" on every client and
    in ``to_text``, and no float ever reaches the JSON."""
    cols = []
    for key, header, kind in columns:
        col: dict[str, Any] = {
            "name": key,
            "display_name": header,
            "data_type": "options" if kind == "options" else "text",
            "width": "auto",
        }
        if kind == "num":
            col["horizontal_align"] = "right"
        cols.append(col)
    return {
        "tag": "table",
        "element_id": element_id,
        "page_size": PAGE_SIZE,
        "row_height": "low",
        "freeze_first_column": True,
        "header_style": {"background_style": "grey", "bold": True, "text_color": "default"},
        "columns": cols,
        "rows": rows,
    }


def _option(status: str, lang: Lang) -> list[dict[str, str]]:
    return [{"text": _status_word(status, lang), "color": STATUS_COLORS.get(status, "blue")}]


def _button(label: str, *, url: str = "", value: dict[str, Any] | None = None, kind: str = ""):
    behaviors: list[dict[str, Any]] = []
    if url:
        behaviors.append({"type": "open_url", "default_url": url})
    if value is not None:
        behaviors.append({"type": "callback", "value": value})
    return {
        "tag": "button",
        "text": {"tag": "plain_text", "content": _clip(_one_line(label), 40) or "OK"},
        "type": kind or "default",
        "behaviors": behaviors,
    }


def _buttons(buttons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One button stands alone; several share a row (a flowing column_set, as in the doc)."""
    if len(buttons) <= 1:
        return buttons
    return [
        {
            "tag": "column_set",
            "flex_mode": "flow",
            "horizontal_spacing": "8px",
            "columns": [
                {"tag": "column", "width": "auto", "elements": [button]} for button in buttons
            ],
        }
    ]


def _tiles(tiles: Sequence[tuple[str, str, Sequence[str]]]) -> list[dict[str, Any]]:
    """Metric tiles, three to a row: label, big value, grey comparison lines."""
    rows = []
    for i in range(0, len(tiles), 3):
        columns = []
        for label, value, notes in tiles[i : i + 3]:
            lines = [f"<font color='grey'>{label}</font>", f"**{value}**"]
            lines += [f"<font color='grey'>{note}</font>" for note in notes]
            columns.append(
                {
                    "tag": "column",
                    "width": "weighted",
                    "weight": 1,
                    "background_style": "grey",
                    "padding": "8px",
                    "elements": [_markdown("\n".join(lines))],
                }
            )
        rows.append(
            {
                "tag": "column_set",
                "flex_mode": "trisect",
                "horizontal_spacing": "8px",
                "columns": columns,
            }
        )
    return rows


def _chart(title: str, points: Sequence[tuple[str, Decimal | None]]) -> dict[str, Any]:
    """A VChart line of one value per day (the documented line-chart shape). ``label`` is an
    extra data field: VChart ignores it, ``to_text`` prints it."""
    values = []
    for day, value in points:
        d = _decimal(value)
        number = float(d) if d is not None else 0.0
        if not math.isfinite(number):  # beyond float range: JSON has no Infinity
            number = 0.0
        values.append({"day": day, "spend": round(number, 2), "label": money(value)})
    return {
        "tag": "chart",
        "aspect_ratio": "2:1",
        "chart_spec": {
            "type": "line",
            "title": {"text": title},
            "data": {"values": values},
            "xField": "day",
            "yField": "spend",
        },
    }


def _more_list(items: Sequence[str], limit: int, lang: Lang, sep: str) -> str:
    shown = sep.join(items[:limit])
    hidden = len(items) - min(len(items), limit)
    if hidden:
        shown += _t(lang, f" … and {hidden:,} more", f" 等，另有 {hidden:,} 个")
    return shown


# -- sizes and fitting --------------------------------------------------------------------------


def card_content(card: Mapping[str, Any]) -> str:
    """The ``content`` string of an interactive message: the card as compact JSON. 中文 stays
    UTF-8 (3 bytes) instead of a 6-byte ``\\uXXXX`` escape (7 once escaped again in the body)."""
    return json.dumps(card, ensure_ascii=False, separators=(",", ":"))


def card_size(card: Mapping[str, Any]) -> int:
    """Bytes the card takes in the request body: its ``content`` string as a JSON string
    literal, quotes included, escaped the way lark-oapi's ``JSON.marshal`` writes it
    (``ensure_ascii=False``). A ``"`` or ``\\`` in a name costs 4 bytes, a line break 3."""
    return len(json.dumps(card_content(card), ensure_ascii=False).encode("utf-8"))


def _note_for(noun_en: str, noun_zh: str, command: str, lang: Lang) -> Callable[[int], str]:
    def note(hidden: int) -> str:
        return _t(
            lang,
            f"… and {hidden:,} more {noun_en}, see `{command}`",
            f"…… 另有 {hidden:,} 个{noun_zh}未列出，完整列表见 `{command}`",
        )

    return note


def _card_lang(card: Mapping[str, Any]) -> Lang:
    title = str(((card.get("header") or {}).get("title") or {}).get("content", ""))
    return "zh" if any("\u3400" <= ch <= "\u9fff" for ch in title) else "en"


_NOTE_ID = re.compile(r"^m_(\w{1,10})_(\d+)$")


def fit(card: Card, limit: int = CARD_LIMIT, *, note: Callable[[int], str] | None = None) -> Card:
    """The card, guaranteed to take at most ``limit`` bytes in the request body (``card_size``).

    Cuts in order of least loss: table rows (the same number kept in every table, with a note
    "… and N more accounts, see `adsync summary`" after each cut table), then long markdown,
    then charts; as a last resort a short card with the title, a notice and the buttons. The
    input is not modified; a card that already fits comes back as is.
    """
    if card_size(card) <= limit:
        return card
    note = note or _note_for("accounts", "账户", "adsync summary", _card_lang(card))
    out = _copy(card)
    body = out.get("body")
    elements = body.get("elements") if isinstance(body, dict) else None
    if isinstance(elements, list):
        _cut_tables(out, elements, limit, note)
        if card_size(out) <= limit:
            return out
        _cut_markdown(out, elements, limit)
        if card_size(out) <= limit:
            return out
        elements[:] = [e for e in elements if not (isinstance(e, dict) and e.get("tag") == "chart")]
        if card_size(out) <= limit:
            return out
    return _last_resort(card, limit)


def _copy(value: Any) -> Any:
    """A deep copy of the card's structure; table rows are only ever replaced, never edited,
    so each row dict is shared (copying 500 rows dominated the cost of fitting)."""
    if isinstance(value, dict):
        return {
            k: list(v) if k == "rows" and isinstance(v, list) else _copy(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _cut_tables(card: Card, elements: list[Any], limit: int, note: Callable[[int], str]) -> None:
    tables = [e for e in elements if isinstance(e, dict) and e.get("tag") == "table"]
    tables = [t for t in tables if isinstance(t.get("rows"), list) and t["rows"]]
    if not tables:
        return
    full = {id(t): list(t["rows"]) for t in tables}
    base = {id(t): _hidden_before(elements, t, i) for i, t in enumerate(tables)}

    def apply(keep: int) -> None:
        for i, table in enumerate(tables):
            rows = full[id(table)]
            table["rows"] = rows[:keep]
            hidden = base[id(table)] + len(rows) - len(table["rows"])
            _set_note(elements, table, i, hidden, note)

    # The largest common cap that fits: every table keeps the same number of leading rows.
    # No more rows than the smallest row's size allows can fit, which keeps the serialisations
    # inside the search small (500 rows of 300 bytes are cut to ~100 before the first dump).
    smallest = min(
        len(json.dumps(r, ensure_ascii=False).encode()) for t in tables for r in t["rows"]
    )
    hi = min(max(len(rows) for rows in full.values()) - 1, limit // max(smallest, 1))
    lo, best = 0, -1
    while lo <= hi:
        mid = (lo + hi) // 2
        apply(mid)
        if card_size(card) <= limit:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    apply(max(best, 0))
    if best <= 0:  # a table with no rows says nothing the note doesn't: drop it
        empty = {id(t) for t in tables if not t["rows"]}
        elements[:] = [e for e in elements if id(e) not in empty]


def _table_key(table: dict[str, Any], index: int) -> str:
    key = re.sub(r"\W", "", str(table.get("element_id") or ""))[:10]
    return key or f"t{index}"


def _hidden_before(elements: list[Any], table: dict[str, Any], index: int) -> int:
    """Rows an earlier ``fit`` already cut from this table (its note's element_id says)."""
    at = next(i for i, e in enumerate(elements) if e is table)
    if at + 1 < len(elements) and isinstance(elements[at + 1], dict):
        m = _NOTE_ID.match(str(elements[at + 1].get("element_id", "")))
        if m and m.group(1) == _table_key(table, index):
            return int(m.group(2))
    return 0


def _set_note(
    elements: list[Any], table: dict[str, Any], index: int, hidden: int, note: Callable[[int], str]
) -> None:
    at = next(i for i, e in enumerate(elements) if e is table)
    key = _table_key(table, index)
    following = elements[at + 1] if at + 1 < len(elements) else None
    has_note = isinstance(following, dict) and bool(
        (m := _NOTE_ID.match(str(following.get("element_id", "")))) and m.group(1) == key
    )
    if hidden <= 0:
        if has_note:
            del elements[at + 1]
        return
    element = _markdown(note(hidden), size="notation", element_id=f"m_{key}_{hidden}")
    if has_note:
        elements[at + 1] = element
    else:
        elements.insert(at + 1, element)


_PARTIAL_ENTITY = re.compile(r"&#?\w*$")


def _cut_markdown(card: Card, elements: list[Any], limit: int) -> None:
    blocks = [e for e in _walk(elements) if e.get("tag") == "markdown"]
    while card_size(card) > limit:
        longest = max(blocks, key=lambda e: len(str(e.get("content", ""))), default=None)
        text = str(longest.get("content", "")) if longest else ""
        if longest is None or len(text) <= 200:
            return
        cut = text[: len(text) // 2]
        if "\n" in cut[len(cut) // 2 :]:
            cut = cut[: cut.rfind("\n")]
        longest["content"] = _PARTIAL_ENTITY.sub("", cut) + "\n…"


def _last_resort(card: Mapping[str, Any], limit: int) -> Card:
    lang = _card_lang(card)
    header = card.get("header") if isinstance(card.get("header"), dict) else {}
    title = str((header.get("title") or {}).get("content", "adsync"))
    template = str(header.get("template", "blue"))
    notice = _markdown(
        _t(
            lang,
            "This answer is too large for a chat card. Run the same command in a terminal "
            "(`adsync …`) for all of it.",
            "内容太多，卡片放不下。请在终端运行对应的 `adsync …` 命令查看完整结果。",
        )
    )
    buttons = [e for e in _walk(_elements_of(card)) if e.get("tag") == "button"]
    small = _card(_clip(title, 100), template, [notice, *_buttons(buttons[:MAX_BUTTONS])])
    if card_size(small) <= limit:
        return small
    small = _card(_clip(title, 100), template, [notice])
    if card_size(small) <= limit:
        return small
    return _card("adsync", template, [])  # only a limit below ~300 bytes gets here


def _elements_of(card: Mapping[str, Any]) -> list[Any]:
    body = card.get("body")
    elements = body.get("elements") if isinstance(body, dict) else None
    return elements if isinstance(elements, list) else []


def _walk(elements: Iterable[Any]) -> Iterable[dict[str, Any]]:
    """Every component, depth first, through column_set → column → elements."""
    for element in elements:
        if not isinstance(element, dict):
            continue
        yield element
        for column in element.get("columns") or ():
            if isinstance(column, dict) and column.get("tag") == "column":
                yield column
                yield from _walk(column.get("elements") or ())


# -- sync ---------------------------------------------------------------------------------------


def sync_card(result: RunResult, lang: str) -> Card:
    """One sync run: status colour, totals, per-account table (failures first, with reasons),
    warnings, and the buttons that fix what failed."""
    lg = _lang(lang)
    dates = _span(result.start, result.end)
    word = _status_word(result.status, lg)
    title = _t(lg, f"Sync {dates} · {word}", f"同步 {dates} · {word}")
    template = SYNC_TEMPLATES.get(result.status, "blue")
    subtitle_parts = []
    if result.run_id is not None:
        subtitle_parts.append(_t(lg, f"run {result.run_id}", f"第 {result.run_id} 次运行"))
    if result.trigger:
        subtitle_parts.append(_trigger_word(result.trigger, lg))
    subtitle = " · ".join(subtitle_parts)
    if result.status == "busy":
        return fit(_busy_card(result, lg, title, subtitle), note=_sync_note(lg))

    elements: list[dict[str, Any]] = []
    if result.error:
        elements.append(_markdown(_error_block(result, lg)))
    failed = [a for a in result.accounts if a.status == "failed"]
    total = len(result.accounts)
    ok = total - len(failed)
    if total:
        elements.append(_markdown(_sync_totals(result, ok, total, lg)))
    elif not result.error:
        elements.append(
            _markdown(
                _t(
                    lg,
                    "**No accounts in scope**, so nothing was synced. Check `adsync accounts` "
                    "and ADSYNC_ACCOUNTS, or authorize the accounts again.",
                    "**没有可同步的账户**，什么也没有同步。请检查 `adsync accounts` 和 "
                    "ADSYNC_ACCOUNTS，或重新授权账户。",
                )
            )
        )
    # The run's own error (the authorization died) is said above; its accounts are not
    # listed again as a cause of their own.
    error_cause = cause_of(result.error)[0] if result.error else None
    grouped = group((a.name or a.account_id, a.reason) for a in failed)
    causes = [c for c in grouped if c.short != error_cause]
    if causes:
        elements.append(_markdown(_causes_block(causes, total, lg, bool(result.auth_url))))
    if total:
        numbers = {c.short: n for n, c in enumerate(causes, 1)} if len(causes) > 1 else {}
        elements.append(_sync_table(result.accounts, lg, numbers))
    if result.table_events:
        elements.append(_markdown(_table_events(result.table_events, lg)))
    if result.warnings:
        elements.append(_markdown(_warnings(collapse(result.warnings), lg)))
    buttons = []
    if result.auth_url:  # only the CLI sets one; chat cards never carry a link
        label = _t(lg, "Authorize again", "重新授权")
        buttons.append(_button(label, url=result.auth_url, kind="primary_filled"))
    if failed:
        value: dict[str, Any] = {
            "action": "sync_retry",
            "start": result.start.isoformat(),
            "end": result.end.isoformat(),
            "accounts": [a.account_id for a in failed],
            "lang": lg,
        }
        if result.run_id is not None:
            value["run_id"] = result.run_id
        label = _t(
            lg, f"Retry {len(failed):,} failed accounts", f"重试失败的 {len(failed):,} 个账户"
        )
        buttons.append(_button(label, value=value, kind="primary" if not buttons else "default"))
    if buttons:
        elements.append(_hr())
        elements.extend(_buttons(buttons))
    preview = _t(
        lg,
        f"{title}: {ok}/{total} accounts, {count(result.rows)} rows",
        f"{title}：{ok}/{total} 个账户，{count(result.rows)} 行",
    )
    card = _card(title, template, elements, subtitle=subtitle, summary=preview)
    return fit(card, note=_sync_note(lg))


def _table_events(events: Sequence[Any], lg: Lang) -> str:
    """Rolling tables: a table started, found or recreated by this run (the group also gets
    a message of its own for each)."""
    words = {
        "started": ("started", "已启用"),
        "found": ("found by its name", "按名称找到"),
        "recreated": ("recreated after a deletion", "被删除后已重建"),
    }
    lines = []
    for e in events[:MAX_LIST]:
        en, zh = words.get(e.kind, (e.kind, e.kind))
        lines.append(_t(lg, f"🗂 table **{_md(e.name)}** {en}", f"🗂 数据表 **{_md(e.name)}** {zh}"))
    return "\n".join(lines)


def _sync_note(lang: Lang) -> Callable[[int], str]:
    # `adsync accounts` lists every account with its last outcome and reason.
    return _note_for("accounts", "账户", "adsync accounts", lang)


def _busy_card(result: RunResult, lang: Lang, title: str, subtitle: str) -> Card:
    lines = [
        _t(
            lang,
            "Another sync of these dates is running, so this one did not start. "
            "Its result will be posted when it finishes.",
            "这些日期正在同步中，本次没有重复启动。那次同步完成后会发出结果。",
        )
    ]
    if result.error:
        lines.append(_md(result.error))
    if result.hint:
        lines.append("→ " + _md(result.hint))
    card = _card(title, SYNC_TEMPLATES["busy"], [_markdown("\n".join(lines))], subtitle=subtitle)
    card["config"]["summary"] = {"content": _clip(title, 100)}
    return card


def _error_block(result: RunResult, lang: Lang) -> str:
    lines = [f"**✗ {_md(result.error)}**"]
    if result.auth_url:
        lines.append(
            _t(
                lang,
                "The Ocean Engine authorization has to be renewed by a person: press "
                "**Authorize again**, tick every account, and finish; then retry.",
                "巨量引擎授权需要人工续期：点击**重新授权**，勾选全部账户并完成，然后重试。",
            )
        )
    elif getattr(result, "dead_chains", None):
        # Several Ocean Engine logins: whose authorization it is decides who opens the link.
        whose = "、".join(_md(d.who, NAME_CHARS) for d in result.dead_chains)
        others = result.status == "partial"
        lines.append(
            _t(
                lang,
                f"Renew the authorization of {whose}: an admin sends `auth` to me in a direct "
                "chat and opens the link signed in at Ocean Engine as that login, ticks every "
                "account and finishes; then retry."
                + (" The other accounts were synced." if others else ""),
                f"需要续期 {whose} 的巨量引擎授权：管理员在与我的单聊中发送“授权”，用该巨量引擎账号"
                "登录后打开链接，勾选全部账户并完成，然后重试。"
                + ("其他账户已照常同步。" if others else ""),
            )
        )
    elif getattr(result, "needs_authorization", False):
        lines.append(
            _t(
                lang,
                "The Ocean Engine authorization has to be renewed by an admin: send `auth` to "
                "me in a direct chat, tick every account, and finish; then retry.",
                "巨量引擎授权需要管理员续期：管理员在与我的单聊中发送“授权”，勾选全部账户并完成，然后重试。",
            )
        )
    elif result.hint:
        lines.append("→ " + _md(result.hint))
    return "\n".join(lines)


def _sync_totals(result: RunResult, ok: int, total: int, lang: Lang) -> str:
    no_data = sum(1 for a in result.accounts if a.status == "no_data")
    accounts = _t(lang, f"**Accounts** {ok:,}/{total:,} synced", f"**账户** {ok:,}/{total:,} 成功")
    if no_data:
        accounts += _t(lang, f" ({no_data:,} with no data)", f"（{no_data:,} 个无数据）")
    lines = [
        accounts
        + _t(lang, f" · **Rows** {count(result.rows)}", f" · **行数** {count(result.rows)}")
    ]
    lines.append(
        _t(
            lang,
            f"**Bitable** {count(result.created)} created · {count(result.updated)} updated · "
            f"{count(result.unchanged)} unchanged · {count(result.deleted)} duplicates removed",
            f"**多维表格** 新增 {count(result.created)} · 更新 {count(result.updated)} · "
            f"未变 {count(result.unchanged)} · 删除重复 {count(result.deleted)}",
        )
    )
    confirmed = getattr(result, "confirmed_after_timeout", 0)
    if confirmed:
        # Feishu answered too late, the rows were read back: they are there, say so plainly.
        lines.append(
            _t(
                lang,
                f"{count(confirmed)} rows written (confirmed after a timeout): Feishu answered "
                "late, reading the table back found them",
                f"{count(confirmed)} 行已写入（超时后回读确认）：飞书响应超时，回读表格确认已写入",
            )
        )
    lines.append(
        _t(
            lang,
            f"**Time** {_seconds(result.seconds, lang)} · {count(result.api_calls)} Ocean Engine "
            f"calls · {count(result.feishu_calls)} Feishu calls",
            f"**耗时** {_seconds(result.seconds, lang)} · 巨量引擎调用 {count(result.api_calls)} 次 · "
            f"飞书调用 {count(result.feishu_calls)} 次",
        )
    )
    if ok and not result.rows and not result.error:
        lines.append(
            _t(
                lang,
                "No account returned data for these dates.",
                "这些日期所有账户都没有数据。",
            )
        )
    return "\n".join(lines)


def _causes_block(causes: Sequence[Cause], total: int, lang: Lang, auth: bool) -> str:
    """Each cause of failure once, with how many accounts it hit and what to do (the table
    below shows who): twenty accounts refused for one reason are one line, not twenty."""
    lines = []
    for n, cause in enumerate(causes[:MAX_LIST], 1):
        tag = f"#{n} " if len(causes) > 1 else ""  # the table's cause column refers to it
        lines.append(
            _t(
                lang,
                f"**✗ {tag}{cause.count:,} of {total:,} accounts**: {_md(cause.short)}",
                f"**✗ {tag}{total:,} 个账户中 {cause.count:,} 个失败**：{_md(cause.short)}",
            )
        )
        if cause.fix and not auth:
            lines.append("→ " + _md(cause.fix))
    hidden = len(causes) - MAX_LIST
    if hidden > 0:
        lines.append(_t(lang, f"… and {hidden:,} more causes", f"…… 另有 {hidden:,} 种原因"))
    return "\n".join(lines)


def _sync_table(
    accounts: Sequence[AccountResult], lang: Lang, causes: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The accounts, failures first. Each cause is written once above the table; with several,
    a column gives each failed account its cause's number (#1, #2 …), not the text again."""
    ordered = sorted(accounts, key=lambda a: a.status != "failed")  # stable: failures first
    with_reasons = bool(causes) and any(a.reason for a in ordered)
    columns = [
        ("account", _t(lang, "Account", "账户"), "text"),
        ("status", _t(lang, "Status", "状态"), "options"),
        ("rows", _t(lang, "Rows", "行数"), "num"),
    ]
    if with_reasons:
        columns.append(("reason", _t(lang, "Cause", "原因"), "text"))
    rows = []
    for a in ordered:
        row: dict[str, Any] = {
            "account": _cell(a.name or a.account_id),
            "status": _option(a.status, lang),
            "rows": count(a.rows),
        }
        if with_reasons:
            number = causes.get(cause_of(a.reason)[0]) if causes and a.reason else None
            row["reason"] = f"#{number}" if number else ""
        rows.append(row)
    return _table("accounts", columns, rows)


def _warnings(warnings: Sequence[str], lang: Lang) -> str:
    lines = [f"⚠️ {_md(w)}" for w in warnings[:MAX_LIST]]
    hidden = len(warnings) - len(lines)
    if hidden > 0:
        lines.append(_t(lang, f"… and {hidden:,} more warnings", f"…… 另有 {hidden:,} 条提醒"))
    return "\n".join(lines)


# -- token --------------------------------------------------------------------------------------


def token_card(
    status: TokenStatus,
    lang: str,
    auth_url: str | None = None,
    *,
    tz: TzLike = None,
    note: str = "",
    admins: Sequence[str] = (),
    chains: Sequence[TokenStatus] = (),
) -> Card:
    """The Ocean Engine authorization as a traffic light, with lifetimes and what to do.

    ``status`` is the authorization that needs a person first; with several authorizations
    (one per Ocean Engine login), ``chains`` holds them all and each gets its own block, named
    after its user. ``auth_url`` (a re-authorize button) is given only to an admin in a direct
    chat; everyone else gets ``note`` (who can authorize, and how) and the ``admins``
    @-mentioned."""
    lg = _lang(lang)
    zone = _zone(tz)
    template = HEALTH_TEMPLATES.get(status.health, "red")
    title = _t(lg, "Ocean Engine authorization", "巨量引擎授权")
    subtitle = _t(lg, f"app {status.app_id}", f"应用 {status.app_id}") if status.app_id else ""
    elements: list[dict[str, Any]] = []
    if len(chains) > 1:
        subtitle += _t(lg, f" · {len(chains)} authorizations", f" · {len(chains)} 个授权")
        elements.append(_markdown(_chains_headline(chains, lg)))
        for chain in chains:
            lines = [f"**{_md(chain.who, NAME_CHARS)}** · ID {_md(chain.chain_id, 40)}"]
            lines.append(_token_headline(chain, lg))
            if chain.authorized and chain.access_expires_at is not None:
                lines += _token_lines(chain, lg, zone, who=False)
            elements.append(_hr())
            elements.append(_markdown("\n".join(lines)))
    else:
        lines = [_token_headline(status, lg)]
        if status.authorized and status.access_expires_at is not None:
            lines += _token_lines(status, lg, zone)
        elements.append(_markdown("\n".join(lines)))
    if status.health != "ok" and not auth_url and (note or admins):
        advice = _md(note, TEXT_CHARS, multiline=True)
        if mentions(admins):
            advice = (advice + "\n" if advice else "") + mentions(admins)
        elements.append(_markdown(advice))
    buttons = []
    if status.health != "ok" and auth_url:
        label = _t(lg, "Authorize again", "重新授权")
        buttons.append(_button(label, url=auth_url, kind="primary_filled"))
    refreshable = [c for c in (chains or [status]) if c.authorized]
    if any(c.health not in ("reauthorize", "unsaved") for c in refreshable):
        # A dead chain cannot be refreshed; offering it would only produce a second failure.
        value = {"action": "token_refresh", "lang": lg}
        buttons.append(_button(_t(lg, "Refresh now", "立即刷新"), value=value))
    if buttons:
        elements.append(_hr())
        elements.extend(_buttons(buttons))
    preview = f"{title}: {_health_word(status.health, lg)}"
    return fit(
        _card(title, template, elements, subtitle=subtitle, summary=preview),
        note=_note_for("accounts", "账户", "adsync token status", lg),
    )


def _chains_headline(chains: Sequence[TokenStatus], lang: Lang) -> str:
    bad = [c for c in chains if c.health != "ok"]
    n = len(chains)
    if not bad:
        return _t(
            lang,
            f"🟢 **All {n} authorizations are healthy.** The tokens renew themselves.",
            f"🟢 **{n} 个授权全部正常。** token 会自动续期。",
        )
    dead = [c for c in bad if c.health in ("reauthorize", "unsaved")]
    names = "、".join(_md(c.user_name or c.user_id or c.chain_id, NAME_CHARS) for c in bad)
    if dead:
        return _t(
            lang,
            f"🔴 **{len(dead)} of {n} authorizations need a person** ({names}); the others go "
            "on syncing their accounts.",
            f"🔴 **{n} 个授权中有 {len(dead)} 个需要处理**（{names}）；其他授权的账户照常同步。",
        )
    return _t(
        lang,
        f"🟠 **{len(bad)} of {n} authorizations need attention** ({names}).",
        f"🟠 **{n} 个授权中有 {len(bad)} 个需要关注**（{names}）。",
    )


def _health_word(health: str, lang: Lang) -> str:
    words = {
        "ok": ("healthy", "正常"),
        "expiring": ("needs attention", "需要关注"),
        "reauthorize": ("authorize again", "需要重新授权"),
        "unsaved": ("refreshed but not saved", "已刷新但未保存"),
    }
    en, zh = words.get(health, (health, health))
    return _t(lang, en, zh)


def _token_headline(status: TokenStatus, lang: Lang) -> str:
    if not status.authorized:
        return _t(
            lang,
            "🔴 **Not authorized yet.** Someone with the Ocean Engine account has to authorize "
            "adsync once: send `auth`.",
            "🔴 **尚未授权。** 需要有巨量引擎账号的同事授权一次：发送“授权”。",
        )
    if status.health == "ok":
        return _t(
            lang,
            "🟢 **Healthy.** The tokens renew themselves; nothing to do.",
            "🟢 **正常。** token 会自动续期，无需操作。",
        )
    failed_last = status.last_failure_at is not None and (
        status.last_refresh_at is None or status.last_failure_at > status.last_refresh_at
    )
    if status.health == "expiring":
        if failed_last:
            reason = _md(status.last_failure_reason or "", REASON_CHARS)
            return _t(
                lang,
                f"🟠 **The last refresh failed**: {reason}. It is retried automatically; "
                "press **Refresh now** to try at once.",
                f"🟠 **上次刷新失败**：{reason}。系统会自动重试，也可以点击**立即刷新**。",
            )
        return _t(
            lang,
            "🟠 **The refresh token expires soon.** A refresh renews it (automatic, or press "
            "**Refresh now**).",
            "🟠 **refresh token 即将过期。** 刷新一次即可续期（会自动刷新，也可以点击**立即刷新**）。",
        )
    if status.health == "unsaved":
        reason = _md(status.message or "", TEXT_CHARS)
        return _t(
            lang,
            f"🔴 **Refreshed but not saved.** {reason}",
            f"🔴 **token 已刷新但未保存。** 新的 token 还没有写进数据库；如果一直如此，需要重新授权。"
            f"（{reason}）",
        )
    reason = _md(status.dead_reason or status.message or "", REASON_CHARS)
    if status.user_name or status.user_id:
        who = _md(status.user_name or status.user_id, NAME_CHARS)
        return _t(
            lang,
            f"🔴 **Authorize again: {who}.** {reason}\nTheir accounts do not sync until an "
            f"admin's link is opened logged in at Ocean Engine as {who}.",
            f"🔴 **需要重新授权：{who}。** {reason}\n在用 {who} 的巨量引擎账号打开管理员的授权"
            "链接之前，其账户不会同步。",
        )
    return _t(
        lang,
        f"🔴 **Authorize again.** {reason}\nSyncs stop until an admin authorizes adsync again.",
        f"🔴 **需要重新授权。** {reason}\n管理员重新授权之前同步会停止。",
    )


def _lifetime(label: str, left_s: int | None, at: object, lang: Lang, zone: tzinfo) -> str:
    """ "**Access token** 5h 12m left · until …" / "… 剩余 5小时12分 · … 到期"."""
    when = _when(at, zone)
    if left_s is not None and left_s < 0:
        span = duration(-left_s, lang)
        return _t(
            lang, f"{label} expired {span} ago · at {when}", f"{label} 已过期 {span} · {when}"
        )
    span = duration(left_s, lang)
    return _t(lang, f"{label} {span} left · until {when}", f"{label} 剩余 {span} · {when} 到期")


def _token_lines(status: TokenStatus, lang: Lang, zone: tzinfo, *, who: bool = True) -> list[str]:
    access = _t(lang, "**Access token**", "**access token**")
    if status.access_prefix:
        access += f" {_md(status.access_prefix, 16)}"  # masked: tells two tokens apart, no more
    lines = [
        _lifetime(access, status.access_left_s, status.access_expires_at, lang, zone),
        _lifetime(
            _t(lang, "**Refresh token**", "**refresh token**"),
            status.refresh_left_s,
            status.refresh_expires_at,
            lang,
            zone,
        ),
        _t(lang, "**Last refresh** ", "**上次刷新** ") + _when(status.last_refresh_at, zone),
        _t(lang, "**Confirmed live** ", "**最近确认有效** ")
        + _when(status.last_confirmed_at, zone)
        + (_t(lang, " (just checked)", "（刚刚检查）") if status.checked else ""),
    ]
    if status.last_failure_at is not None:
        lines.append(
            _t(lang, "**Last failure** ", "**上次失败** ")
            + _when(status.last_failure_at, zone)
            + (
                f" · {_md(status.last_failure_reason, REASON_CHARS)}"
                if status.last_failure_reason
                else ""
            )
        )
    granted = len(status.account_ids)
    lines.append(_t(lang, f"**Accounts** {granted:,} granted", f"**账户** 已授权 {granted:,} 个"))
    if who and status.chain_id:
        whose = _md(status.who, NAME_CHARS * 2)
        lines.append(_t(lang, f"**Authorized by** {whose}", f"**授权人** {whose}"))
    zone_name = _md(_zone_name(zone), 40)
    lines.append(_markdown_note(_t(lang, f"Times in {zone_name}", f"时间为 {zone_name}")))
    return lines


def _markdown_note(text: str) -> str:
    return f"<font color='grey'>{text}</font>"


# -- summary ------------------------------------------------------------------------------------


def summary_card(
    summary: Summary,
    lang: str,
    *,
    failures: Sequence[AccountResult] = (),
    average: Totals | None = None,
) -> Card:
    """The daily report: totals with change vs the previous period (and vs ``average``, the
    7-day average for the same span, when given), the trend chart, per-account figures, silent
    accounts and accounts that failed to sync."""
    lg = _lang(lang)
    period = _span(summary.start, summary.end)
    one_day = summary.start == summary.end
    title = (
        _t(lg, f"Ad report · {period}", f"广告日报 · {period}")
        if one_day
        else _t(lg, f"Ad summary · {period}", f"广告汇总 · {period}")
    )
    days = (summary.end - summary.start).days + 1
    subtitle = (
        _t(lg, "vs the day before", "对比前一天")
        if one_day
        else _t(lg, f"vs the previous {days} days", f"对比前 {days} 天")
    )
    empty = not summary.totals.rows
    unsynced = not summary.synced or summary.not_synced or summary.unsynced_accounts
    template = "orange" if failures or empty or unsynced else "blue"
    elements: list[dict[str, Any]] = _tiles(_summary_tiles(summary, average, lg, one_day))
    if unsynced:
        elements.append(_markdown(_not_synced_block(summary, lg)))
    elif empty:
        elements.append(
            _markdown(
                _t(
                    lg,
                    f"⚠️ **No data for {period}.** If that is unexpected, sync it: `sync {period}`.",
                    f"⚠️ **{period} 没有数据。** 如果不正常，请同步：“同步 {period}”。",
                )
            )
        )
    if failures:
        elements.append(
            _markdown(
                _t(
                    lg,
                    f"**✗ {len(failures):,} accounts failed to sync**; the figures above miss them.",
                    f"**✗ {len(failures):,} 个账户同步失败**，以上数字不包含它们。",
                )
            )
        )
        causes = group((a.name or a.account_id, a.reason) for a in failures)
        elements.append(_markdown(_causes_block(causes, len(failures), lg, auth=False)))
        numbers = {c.short: n for n, c in enumerate(causes, 1)} if len(causes) > 1 else {}
        elements.append(_failures_table(failures, lg, numbers))
    # A day nobody synced would plot as a fall to zero: it is left out of the chart.
    trend = summary.trend[-CHART_POINTS:]
    points = [(p.day.strftime("%m-%d"), p.cost) for p in trend if p.synced]
    if points:
        chart_title = _t(lg, f"Spend, last {len(points)} days", f"近 {len(points)} 天消耗")
        if len(points) < len(trend):
            chart_title = _t(
                lg,
                f"Spend, the {len(points)} synced days of the last {len(trend)}",
                f"近 {len(trend)} 天中已同步的 {len(points)} 天消耗",
            )
        elements.append(_chart(chart_title, points))
    if summary.accounts:
        elements.append(_hr())
        elements.append(_summary_table(summary.accounts, lg))
    if summary.silent_accounts:
        names = [_md(a.name or a.id, NAME_CHARS) for a in summary.silent_accounts]
        listed = _more_list(names, MAX_NAMES, lg, _t(lg, ", ", "、"))
        elements.append(
            _markdown(
                _t(
                    lg,
                    f"**Silent accounts** ({len(names):,}, in scope but no rows): {listed}",
                    f"**无数据账户**（{len(names):,} 个，在范围内但没有数据）：{listed}",
                )
            )
        )
    preview = _t(
        lg,
        f"{title}: spend {money(summary.totals.cost)}, {count(summary.totals.convert_cnt)} conversions",
        f"{title}：消耗 {money(summary.totals.cost)}，转化 {count(summary.totals.convert_cnt)}",
    )
    card = _card(title, template, elements, subtitle=subtitle, summary=preview)
    return fit(card, note=_note_for("accounts", "账户", "adsync summary", lg))


def _not_synced_block(summary: Summary, lang: Lang) -> str:
    """Days or accounts nobody has synced yet: said as such, never shown as a fall to zero."""
    period = _span(summary.start, summary.end)
    if not summary.synced:
        return _t(
            lang,
            f"⚠️ **{period} is not synced yet**, so there are no figures for it (not a fall "
            f"to zero). Sync it: `sync {period}`.",
            f"⚠️ **{period} 还没有同步**，所以没有数字（不是降到 0）。请同步：“同步 {period}”。",
        )
    lines = []
    if summary.not_synced:
        missing = spans_text(summary.not_synced)
        n, days = len(summary.not_synced), summary.days
        lines.append(
            _t(
                lang,
                f"⚠️ **Not synced yet: {_md(missing)}** ({n} of {days} days); the figures cover "
                f"the other days and are not compared with the previous period. Sync them: "
                f"`sync {_md(missing.split(', ')[0])}`.",
                f"⚠️ **还没有同步：{_md(missing)}**（{days} 天中的 {n} 天）；以上数字只含其他日期，"
                f"不做环比。请同步：“同步 {_md(missing.split(', ')[0])}”。",
            )
        )
    elif summary.unsynced_accounts:
        names = [_md(a.name or a.id, NAME_CHARS) for a in summary.unsynced_accounts]
        listed = _more_list(names, MAX_NAMES, lang, _t(lang, ", ", "、"))
        lines.append(
            _t(
                lang,
                f"⚠️ **Not synced yet for {len(names):,} accounts** (their figures are missing, "
                f"not zero): {listed}. Sync them: `sync {period}`.",
                f"⚠️ **{len(names):,} 个账户还没有同步**（缺数据，不是 0）：{listed}。"
                f"请同步：“同步 {period}”。",
            )
        )
    return "\n".join(lines)


def _summary_tiles(
    summary: Summary, average: Totals | None, lang: Lang, one_day: bool
) -> list[tuple[str, str, list[str]]]:
    now, before = summary.totals, summary.previous
    prev_word = _t(
        lang, "vs prev day" if one_day else "vs prev period", "较前一天" if one_day else "较上期"
    )
    avg_word = _t(lang, "vs 7-day avg", "较 7 日均值")
    # A period with days nobody synced compares with nothing: "—", never a fake −100 %.
    comparable = summary.comparable

    def notes(pick: Callable[[Totals], object]) -> list[str]:
        out = [f"{prev_word} {pct(_change(pick(now), pick(before)) if comparable else None)}"]
        if average is not None:
            moved = _change(pick(now), pick(average)) if not summary.not_synced else None
            out.append(f"{avg_word} {pct(moved)}")
        return out

    return [
        (_t(lang, "Spend", "消耗"), money(now.cost), notes(lambda t: t.cost)),
        (_t(lang, "Conversions", "转化数"), count(now.convert_cnt), notes(lambda t: t.convert_cnt)),
        (
            _t(lang, "Cost / conversion", "转化成本"),
            money(now.conversion_cost),
            notes(lambda t: t.conversion_cost),
        ),
        (_t(lang, "Group-buy leads", "团购线索"), count(now.clue_cnt), notes(lambda t: t.clue_cnt)),
        (_t(lang, "Impressions", "展示数"), count(now.show_cnt), notes(lambda t: t.show_cnt)),
        (_t(lang, "Clicks", "点击数"), count(now.click_cnt), notes(lambda t: t.click_cnt)),
    ]


def _summary_table(accounts: Sequence[AccountSummary], lang: Lang) -> dict[str, Any]:
    columns = [
        ("account", _t(lang, "Account", "账户"), "text"),
        ("spend", _t(lang, "Spend", "消耗"), "num"),
        ("change", _t(lang, "Change", "环比"), "num"),
        ("conv", _t(lang, "Conv.", "转化"), "num"),
        ("cpa", _t(lang, "Cost/conv.", "转化成本"), "num"),
    ]
    rows = [
        {
            "account": _cell(a.name or a.account_id),
            "spend": money(a.totals.cost),
            "change": pct(_change(a.totals.cost, a.previous.cost) if a.comparable else None),
            "conv": count(a.totals.convert_cnt),
            "cpa": money(a.totals.conversion_cost),
        }
        for a in accounts
    ]
    return _table("accounts", columns, rows)


def _failures_table(
    failures: Sequence[AccountResult], lang: Lang, causes: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Who failed; each cause is written once above, a column numbers it when there are several."""
    columns = [("account", _t(lang, "Account", "账户"), "text")]
    if causes:
        columns.append(("reason", _t(lang, "Cause", "原因"), "text"))
    rows = []
    for a in failures:
        row = {"account": _cell(a.name or a.account_id)}
        if causes:
            number = causes.get(cause_of(a.reason)[0]) if a.reason else None
            row["reason"] = f"#{number}" if number else "—"
        rows.append(row)
    return _table("failures", columns, rows)


# -- verify, history, accounts ------------------------------------------------------------------


def verify_card(result: VerifyResult, lang: str) -> Card:
    """The Bitable reconciled against the local copy: what differs, and how to repair it."""
    lg = _lang(lang)
    period = _span(result.start, result.end)
    if result.fixed:
        template, verdict = "green", _t(lg, "repaired", "已修复")
    elif result.clean:
        template, verdict = "green", _t(lg, "matches", "一致")
    else:
        template, verdict = "orange", _t(lg, "differences found", "发现差异")
    title = _t(lg, f"Bitable check {period} · {verdict}", f"多维表格校验 {period} · {verdict}")
    lines = [
        _t(
            lg,
            f"**Local copy** {count(result.local_rows)} rows · **Bitable** {count(result.table_rows)} rows",
            f"**本地数据** {count(result.local_rows)} 行 · **多维表格** {count(result.table_rows)} 行",
        ),
        _t(
            lg,
            f"Missing {count(len(result.missing))} · duplicated {count(len(result.duplicated))} · "
            f"different {count(len(result.different))} · extra {count(len(result.extra))} (left alone)",
            f"缺失 {count(len(result.missing))} · 重复 {count(len(result.duplicated))} · "
            f"不一致 {count(len(result.different))} · 多余 {count(len(result.extra))}（不处理）",
        ),
    ]
    samples = [
        (_t(lg, "Missing", "缺失"), result.missing),
        (_t(lg, "Duplicated", "重复"), result.duplicated),
        (_t(lg, "Different", "不一致"), result.different),
    ]
    for label, keys in samples:
        if keys:
            shown = _more_list([_md(k, 80) for k in keys], 5, lg, _t(lg, ", ", "、"))
            lines.append(f"**{label}**: {shown}")
    if result.fixed:
        lines.append(
            _t(
                lg,
                "Repaired: the Bitable now matches the local copy.",
                "已修复：多维表格与本地数据一致。",
            )
        )
    elif result.clean:
        lines.append(_t(lg, "The Bitable matches the local copy.", "多维表格与本地数据一致。"))
    else:
        lines.append(
            _t(
                lg,
                f"An admin can repair it: send `verify {period} fix`.",
                f"管理员可以修复：发送“校验 {period} 修复”。",
            )
        )
    card = _card(title, template, [_markdown("\n".join(lines))], summary=title)
    return fit(card, note=_note_for("keys", "键", "adsync verify", lg))


def history_card(runs: Sequence[Mapping[str, Any]], lang: str, *, tz: TzLike = None) -> Card:
    """Recent runs from the ledger (rows of ``adsync.sync.runner.recent_runs``)."""
    lg = _lang(lang)
    zone = _zone(tz)
    title = _t(lg, "Recent syncs", "最近同步记录")
    if not runs:
        text = _t(
            lg,
            "No syncs yet. Send `sync yesterday` to run one.",
            "还没有同步记录。发送“同步 昨天”开始。",
        )
        return fit(_card(title, "blue", [_markdown(text)]), note=_history_note(lg))
    columns = [
        ("run", _t(lg, "Run", "编号"), "num"),
        ("started", _t(lg, "Started", "开始时间"), "text"),
        ("trigger", _t(lg, "Trigger", "来源"), "text"),
        ("dates", _t(lg, "Dates", "日期"), "text"),
        ("status", _t(lg, "Status", "状态"), "options"),
        ("rows", _t(lg, "Created/updated/same", "新增/更新/未变"), "num"),
        ("error", _t(lg, "Why", "原因"), "text"),
    ]
    rows = []
    for r in runs:
        status = str(r.get("status") or "")
        rows.append(
            {
                "run": str(r.get("id", "")),
                "started": _when(r.get("started_at"), zone),
                "trigger": _cell(_trigger_word(str(r.get("trigger") or ""), lg), 24),
                "dates": _span(r.get("date_from"), r.get("date_to")),
                "status": _option(status, lg),
                "rows": f"{count(r.get('rows_created') or 0)}/{count(r.get('rows_updated') or 0)}/"
                f"{count(r.get('rows_unchanged') or 0)}",
                # Why it failed or was partial, each cause once with its count (recent_runs).
                "error": _cell(r.get("why") or r.get("error") or "", REASON_CHARS),
            }
        )
    latest = str(runs[0].get("status") or "")
    template = {"failed": "orange", "partial": "orange", "interrupted": "orange"}.get(
        latest, "blue"
    )
    subtitle = _t(
        lg,
        f"last {len(runs):,} runs · times in {_zone_name(zone)}",
        f"最近 {len(runs):,} 次 · 时间为 {_zone_name(zone)}",
    )
    card = _card(title, template, [_table("runs", columns, rows)], subtitle=subtitle, summary=title)
    return fit(card, note=_history_note(lg))


def _history_note(lang: Lang) -> Callable[[int], str]:
    return _note_for("runs", "记录", "adsync history", lang)


def accounts_card(view: AccountsView, lang: str, *, tz: TzLike = None) -> Card:
    """Accounts in scope with where each came from (direct, via an organisation, via a 来客
    account, ADSYNC_ACCOUNTS) and its last outcome; then the granted accounts that are not
    synced — skipped (with the fix) and vanished — and what the last listing could not do."""
    lg = _lang(lang)
    zone = _zone(tz)
    title = _t(lg, "Ad accounts", "广告账户")
    notes = _accounts_notes(view, lg, zone)
    if not view.accounts:
        text = _t(
            lg,
            "No accounts in scope. Authorize the accounts (send `auth`) or set ADSYNC_ACCOUNTS.",
            "没有可同步的账户。请授权账户（发送“授权”）或设置 ADSYNC_ACCOUNTS。",
        )
        elements = [_markdown(text)] + ([_markdown(notes)] if notes else [])
        return fit(_card(title, "orange", elements), note=_accounts_note(lg))
    failed = sum(1 for a in view.accounts if a.last_outcome == "failed")
    never = sum(1 for a in view.accounts if not a.last_outcome)
    columns = [
        ("account", _t(lg, "Account", "账户"), "text"),
        ("id", "ID", "text"),
        ("source", _t(lg, "Source", "来源"), "text"),
        ("synced", _t(lg, "Last synced", "上次同步"), "text"),
        ("outcome", _t(lg, "Last outcome", "上次结果"), "options"),
        ("reason", _t(lg, "Reason", "原因"), "text"),
    ]
    ordered = sorted(view.accounts, key=lambda a: a.last_outcome != "failed")
    rows = []
    for a in ordered:
        outcome = a.last_outcome
        rows.append(
            {
                "account": _cell(a.name or a.id),
                "id": _cell(a.id, 32),
                "source": _cell(_source_words(a, lg)),
                "synced": _when(a.last_synced_at, zone),
                "outcome": _option(outcome, lg) if outcome else [{"text": "—", "color": "blue"}],
                "reason": _cell(_reason(a.last_reason), REASON_CHARS),
            }
        )
    subtitle = _t(
        lg,
        f"{len(view.accounts):,} in scope · {failed:,} failed last time · {never:,} never synced"
        + (f" · {len(view.skipped):,} skipped" if view.skipped else ""),
        f"共 {len(view.accounts):,} 个 · 上次失败 {failed:,} 个 · 从未同步 {never:,} 个"
        + (f" · 跳过 {len(view.skipped):,} 个" if view.skipped else ""),
    )
    template = "orange" if failed or view.skipped or view.problems else "blue"
    elements = [_table("accounts", columns, rows)]
    if notes:
        elements.append(_markdown(notes))
    card = _card(title, template, elements, subtitle=subtitle, summary=title)
    return fit(card, note=_accounts_note(lg))


def _source_words(account: ListedAccount, lang: Lang) -> str:
    parent = account.parent_name or account.parent_id
    if account.source == "organisation":
        return _t(lang, f"via organisation {parent}", f"工作台 {parent}")
    if account.source == "life":
        return _t(lang, f"via 来客 {parent}", f"来客 {parent}")
    if account.source == "config":
        return "ADSYNC_ACCOUNTS"
    return _t(lang, "direct", "直接授权")


def _accounts_notes(view: AccountsView, lang: Lang, zone: tzinfo) -> str:
    """Skipped, vanished and problems, each a bounded list of escaped lines."""
    lines: list[str] = []
    if view.skipped:
        lines.append(
            _t(
                lang,
                f"**Skipped** ({len(view.skipped):,} granted, not synced):",
                f"**已跳过**（已授权但不同步，{len(view.skipped):,} 个）：",
            )
        )
        for s in view.skipped[:MAX_LIST]:
            lines.append(f"· {_md(s.label, NAME_CHARS)} · {_md(s.account_type, 48)}: {_md(s.note)}")
            if s.fix:
                lines.append(_t(lang, f"  fix: {_md(s.fix)}", f"  处理：{_md(s.fix)}"))
        if len(view.skipped) > MAX_LIST:
            hidden = len(view.skipped) - MAX_LIST
            lines.append(_t(lang, f"… and {hidden:,} more", f"…… 另有 {hidden:,} 个"))
    if view.vanished:
        lines.append(
            _t(
                lang,
                f"**No longer found** ({len(view.vanished):,}, not synced any more):",
                f"**已不在授权范围**（{len(view.vanished):,} 个，不再同步）：",
            )
        )
        for v in view.vanished[:MAX_LIST]:
            lines.append(f"· {_md(v.label, NAME_CHARS)} · {_when(v.at, zone)}: {_md(v.note)}")
        if len(view.vanished) > MAX_LIST:
            hidden = len(view.vanished) - MAX_LIST
            lines.append(_t(lang, f"… and {hidden:,} more", f"…… 另有 {hidden:,} 个"))
    for problem in view.problems[:MAX_LIST]:
        lines.append(f"⚠️ {_md(problem)}")
    return "\n".join(lines)


def _accounts_note(lang: Lang) -> Callable[[int], str]:
    return _note_for("accounts", "账户", "adsync accounts", lang)


# -- alerts and plain answers -------------------------------------------------------------------


def alert_card(
    title: str,
    lines: Sequence[str],
    *,
    severity: str = "error",
    buttons: Sequence[tuple[str, str]] = (),
    lang: str = "en",
    people: Sequence[str] = (),
) -> Card:
    """An alert for the report chat: red error, orange warning, green "all clear" (``ok``).
    ``buttons`` are (label, url) links; ``people`` are open_ids @-mentioned on a line of their
    own (the admins who can fix it)."""
    lg = _lang(lang)
    template = TEMPLATES.get(severity, "red")
    shown = [_md(line) for line in lines[:MAX_LIST]]
    hidden = len(lines) - len(shown)
    if hidden > 0:
        shown.append(_t(lg, f"… and {hidden:,} more", f"…… 另有 {hidden:,} 条"))
    if mentions(people):
        shown.append(mentions(people))
    elements: list[dict[str, Any]] = [_markdown("\n".join(shown))] if shown else []
    links = [
        _button(label, url=url, kind="primary" if i == 0 else "default")
        for i, (label, url) in enumerate(b for b in buttons if b[1])
        if i < MAX_BUTTONS
    ]
    if links:
        elements.extend(_buttons(links))
    preview = title + (f": {_one_line(lines[0])}" if lines else "")
    return fit(_card(title, template, elements, summary=preview), note=_plain_note(lg))


def authorization_card(
    kind: str,
    by: str,
    account_ids: Sequence[str],
    names: Mapping[str, str],
    dropped: Sequence[str] = (),
    *,
    user: str = "",
    added: bool = False,
    left_scope: Sequence[str] = (),
) -> Card:
    """Tells the report chats who authorized what. ``kind``: authorized | confirmed (a grant
    that drops accounts, taken by an admin) | cancelled | refused (0 accounts) | removed (an
    authorization forgotten; ``left_scope`` the accounts no other one reaches). ``by`` is an
    open_id (@-mentioned) or the operator's label; ``user`` the Ocean Engine login whose
    authorization it is; ``added``: a new login's, beside the others."""
    who = mentions([by]) or _md(f"the operator ({by or 'cli'}) · 运维")
    login = _md(user, NAME_CHARS * 2)

    def listed(ids: Sequence[str]) -> str:
        shown = [_md(names.get(i) or i, NAME_CHARS) for i in ids[:MAX_NAMES]]
        more = len(ids) - len(shown)
        return "、".join(shown) + (f" …（+{more}）" if more > 0 else "")

    lines: list[str]
    if kind == "removed":
        title, template = "授权已移除 · authorization removed", "orange"
        lines = [
            f"{who} 移除了 {login} 的授权 · removed the authorization of {login}",
            f"{len(left_scope)} 个账户不再同步（已同步的数据保留） · {len(left_scope)} accounts no "
            "longer synced (rows already synced stay)"
            if left_scope
            else "其账户都由其他授权覆盖，照常同步 · every one of its accounts is still synced "
            "through another authorization",
        ]
        if left_scope:
            lines.append(listed(left_scope))
        card = _card(title, template, [_markdown("\n".join(lines))], summary=title)
        return fit(card, note=_plain_note("zh"))
    if kind == "refused":
        title, template = "授权未采用 · authorization refused", "red"
        lines = [
            f"{who} 的授权没有勾选任何账户，未采用；巨量引擎已用它覆盖之前的授权，同步会停止。"
            "管理员请重新授权并勾选全部账户。",
            "The authorization ticked no accounts and was not taken; Ocean Engine replaced the "
            "previous one with it, so nothing syncs until an admin authorizes again.",
        ]
    elif kind == "cancelled":
        title, template = "授权已取消 · authorization cancelled", "orange"
        lines = [
            f"{who} 取消了一次会移除 {len(dropped)} 个账户的授权。巨量引擎已用它覆盖之前的授权，"
            "同步会停止，管理员请重新授权并勾选全部账户。",
            f"Cancelled: it would have dropped {len(dropped)} accounts. The previous "
            "authorization no longer works: an admin must authorize again with every account.",
        ]
    else:
        title, template = "巨量引擎已授权 · Ocean Engine authorized", "green"
        lines = [f"{who} 授权了 {len(account_ids)} 个账户 · authorized {len(account_ids)} accounts"]
        if user:
            lines.append(
                f"巨量引擎账号 {login}（新增授权，与其他授权并存） · Ocean Engine login {login} "
                "(a new authorization, beside the others)"
                if added
                else f"巨量引擎账号 {login} · Ocean Engine login {login}"
            )
        if account_ids:
            lines.append(listed(account_ids))
        if kind == "confirmed" and dropped:
            template = "orange"
            lines.append(
                f"**确认移除 {len(dropped)} 个账户 · confirmed dropping {len(dropped)}**："
                + listed(dropped)
            )
    preview = title
    card = _card(title, template, [_markdown("\n".join(lines))], summary=preview)
    return fit(card, note=_plain_note("zh"))


def working_card(text: str, lang: str) -> Card:
    """Posted at once for a long command, then PATCHed into the answer (update_multi)."""
    lg = _lang(lang)
    elements = [
        _markdown(_md(text, TEXT_CHARS, multiline=True)),
        _markdown(
            _t(lg, "This card updates itself when done.", "完成后这张卡片会自动更新。"),
            size="notation",
        ),
    ]
    title = _t(lg, "⏳ Working on it…", "⏳ 正在处理…")
    return fit(_card(title, "wathet", elements, summary=title), note=_plain_note(lg))


def message_card(
    title: str,
    text: str,
    lang: str,
    severity: str = "info",
    *,
    people: Sequence[str] = (),
    buttons: Sequence[tuple[str, str]] = (),
) -> Card:
    """A plain answer: help, usage errors, denials. ``severity``: info|ok|warning|error.
    ``people``: open_ids @-mentioned on a line of their own (e.g. the admins to ask);
    ``buttons``: (label, url) links."""
    lg = _lang(lang)
    template = TEMPLATES.get(severity, "blue")
    body = _md(text, TEXT_CHARS, multiline=True)
    if mentions(people):
        body = (body + "\n" if body else "") + mentions(people)
    elements = [_markdown(body)] if body else []
    links = [_button(label, url=url) for label, url in buttons[:MAX_BUTTONS] if url]
    if links:
        elements.extend(_buttons(links))
    return fit(_card(title, template, elements, summary=title), note=_plain_note(lg))


def _plain_note(lang: Lang) -> Callable[[int], str]:
    return _note_for("rows", "行", "adsync", lang)


# -- plain text for the terminal ----------------------------------------------------------------

_MARKERS = {"green": "✓", "orange": "!", "red": "✗", "yellow": "!", "carmine": "✗"}
RULE = "─" * 40
TEXT_CELL = 48  # widest table cell in the terminal, in cells


def to_text(card: Mapping[str, Any]) -> str:
    """Any card as readable plain text: the title line, markdown without markup, tables as
    aligned columns (CJK counts two cells), buttons as "[label] → url", charts as bars."""
    header = card.get("header") if isinstance(card.get("header"), dict) else {}
    title = str((header.get("title") or {}).get("content", ""))
    marker = _MARKERS.get(str(header.get("template", "")), "•")
    lines = [f"{marker} {title}".rstrip()]
    subtitle = (header.get("subtitle") or {}).get("content")
    if subtitle:
        lines.append(f"  {subtitle}")
    body = _render_elements(_elements_of(card))
    if body:
        lines.append(RULE)
        lines.extend(body)
    return "\n".join(line.rstrip() for line in lines)


def _render_elements(elements: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for element in elements:
        if isinstance(element, dict):
            out.extend(_render(element))
    return out


def _render(element: Mapping[str, Any]) -> list[str]:
    tag = element.get("tag")
    if tag == "markdown":
        return _plain(str(element.get("content", ""))).split("\n")
    if tag in ("div", "plain_text"):
        text = element.get("text") if tag == "div" else element
        return _plain(str((text or {}).get("content", ""))).split("\n")
    if tag == "hr":
        return [RULE]
    if tag == "table":
        return _render_table(element)
    if tag == "button":
        return [_render_button(element)]
    if tag == "chart":
        return _render_chart(element.get("chart_spec") or {})
    if tag == "column_set":
        return _render_columns(element)
    if tag == "column":
        return _render_elements(element.get("elements") or ())
    return []


def _render_button(button: Mapping[str, Any]) -> str:
    label = str((button.get("text") or {}).get("content", ""))
    for behavior in button.get("behaviors") or ():
        if isinstance(behavior, dict) and behavior.get("type") == "open_url":
            return f"[{label}] → {behavior.get('default_url', '')}"
    return f"[{label}]"


def _render_columns(column_set: Mapping[str, Any]) -> list[str]:
    columns = [c for c in column_set.get("columns") or () if isinstance(c, dict)]
    blocks = [_render_elements(c.get("elements") or ()) for c in columns]
    blocks = [b for b in blocks if b]
    only_buttons = all(
        all(isinstance(e, dict) and e.get("tag") == "button" for e in c.get("elements") or ())
        for c in columns
    )
    if only_buttons or len(blocks) <= 1:
        return [line for block in blocks for line in block]
    widths = [max(_cells(line) for line in block) for block in blocks]
    if sum(widths) + 3 * (len(widths) - 1) > 100:  # too wide for a terminal: stack them
        return [line for block in blocks for line in (*block, "")][:-1]
    height = max(len(b) for b in blocks)
    rows = []
    for i in range(height):
        parts = [_pad(b[i] if i < len(b) else "", w) for b, w in zip(blocks, widths, strict=True)]
        rows.append("   ".join(parts).rstrip())
    return rows


def _render_table(table: Mapping[str, Any]) -> list[str]:
    columns = [c for c in table.get("columns") or () if isinstance(c, dict)]
    if not columns:
        return []
    grid = [[_clip(str(c.get("display_name", c.get("name", ""))), TEXT_CELL) for c in columns]]
    for row in table.get("rows") or ():
        if isinstance(row, dict):
            last = len(columns) - 1
            grid.append(
                [
                    _table_cell(row.get(c.get("name")), c, clip=i < last)
                    for i, c in enumerate(columns)
                ]
            )
    widths = [max(_cells(r[i]) for r in grid) for i in range(len(columns))]
    right = [c.get("horizontal_align") == "right" for c in columns]
    out = []
    for row in grid:
        parts = [
            _pad(cell, widths[i], right=right[i] and row is not grid[0])
            for i, cell in enumerate(row)
        ]
        out.append("  ".join(parts).rstrip())
    if len(grid) == 1:
        out.append("  (—)")
    return out


def _table_cell(value: Any, column: Mapping[str, Any], *, clip: bool = True) -> str:
    if value is None:
        text = ""
    elif isinstance(value, list):
        text = ", ".join(str(v.get("text", "")) if isinstance(v, dict) else str(v) for v in value)
    elif isinstance(value, dict):
        text = str(value.get("text", ""))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        text = f"{value:,}"
    else:
        text = str(value)
    if column.get("data_type") in ("lark_md", "markdown"):
        text = _plain(text)
    text = _one_line(text)
    return _cell_clip(text, TEXT_CELL) if clip else text


def _render_chart(spec: Mapping[str, Any]) -> list[str]:
    title = str((spec.get("title") or {}).get("text", ""))
    data = spec.get("data")
    values = data.get("values") if isinstance(data, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        values = data[0].get("values")
    x_field, y_field = spec.get("xField"), spec.get("yField")
    if not isinstance(values, list) or not isinstance(y_field, str):
        return [title] if title else []
    points = []
    for v in values:
        if not isinstance(v, dict):
            continue
        y = v.get(y_field)
        number = float(y) if isinstance(y, (int, float)) and math.isfinite(y) else 0.0
        label = v.get("label") if isinstance(v.get("label"), str) else f"{number:,.2f}"
        points.append((str(v.get(x_field, "")) if isinstance(x_field, str) else "", number, label))
    if not points:
        return [title] if title else []
    top = max((p[1] for p in points), default=0.0)
    head = f"{title}  {_sparkline([p[1] for p in points])}".strip()
    width = max(_cells(p[0]) for p in points)
    lines = [head]
    for x, y, label in points:
        lines.append(f"  {_pad(x, width)}  {_bar(y, top, 20)}  {label}".rstrip())
    return lines


_SPARKS = "▁▂▃▄▅▆▇█"
_EIGHTHS = " ▏▎▍▌▋▊▉"


def _sparkline(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    if high <= low:
        return _SPARKS[0] * len(values)
    scale = (len(_SPARKS) - 1) / (high - low)
    return "".join(_SPARKS[round((v - low) * scale)] for v in values)


def _bar(value: float, top: float, width: int) -> str:
    if top <= 0 or value <= 0:
        return " " * width
    eighths = round(value / top * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[part] if part else "")
    return bar + " " * (width - _cells(bar))


_MD_STRIP = [
    (re.compile(r"<br\s*/?>", re.I), "\n"),
    (re.compile(r"<hr\s*/?>", re.I), "\n" + RULE + "\n"),
    (re.compile(r"<text_tag\b[^>]*>(.*?)</text_tag>", re.I | re.S), r"[\1]"),
    (re.compile(r"<at\b[^>]*\bid=['\"]?all['\"]?[^>]*>\s*</at>", re.I), "@all"),
    # "<at id=ou_x></at>" shows the person's name in Feishu; the terminal has no directory,
    # so it shows the id the name stands for ("@ou_x"); a tag with text shows the text.
    (
        re.compile(r"<at\b[^>]*?\b(?:id|user_id)=['\"]?([^'\" >]+)['\"]?[^>]*>\s*</at>", re.I),
        r"@\1",
    ),
    (re.compile(r"<at\b[^>]*>(.*?)</at>", re.I | re.S), r"@\1"),
    (re.compile(r"<link\b[^>]*\burl='([^']*)'[^>]*>(.*?)</link>", re.I | re.S), r"\2 (\1)"),
    (re.compile(r"<a\b[^>]*\bhref='([^']*)'[^>]*>(.*?)</a>", re.I | re.S), r"\2 (\1)"),
    (re.compile(r"</?[a-z_]+\b[^>]*>", re.I), ""),  # font, number_tag, … (user "<" is escaped)
    (re.compile(r"\[([^\]]*)\]\(([^)]*)\)"), r"\1 (\2)"),
    (re.compile(r"\*+|~~|`"), ""),  # every literal "*" is markup: user text is escaped
    (re.compile(r"(?m)^#{1,6}\s+|^>\s?"), ""),
]


def _plain(markdown: str) -> str:
    """Markdown → text. Markup goes first; escaped user text (entities) is decoded last, so
    a name containing "**" is printed, not stripped."""
    text = markdown
    for pattern, repl in _MD_STRIP:
        text = pattern.sub(repl, text)
    text = html.unescape(text).replace("\u2002", " ").replace("\xa0", " ").replace("\u2003", " ")
    return text.strip("\n")


def _cells(text: str) -> int:
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _cell_clip(text: str, width: int) -> str:
    if _cells(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = _cells(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _pad(text: str, width: int, *, right: bool = False) -> str:
    gap = " " * max(width - _cells(text), 0)
    return gap + text if right else text + gap
