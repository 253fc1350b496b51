"""Building blocks of every card: words in two languages, numbers and times, text made safe for
card markdown, and the JSON 2.0 components (shapes from the component docs)."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any, Literal
from zoneinfo import ZoneInfo

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
