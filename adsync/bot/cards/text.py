"""Any card as plain text for the terminal (``adsync chat``, ``adsync report``)."""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from adsync.bot.cards.fit import _elements_of
from adsync.bot.cards.parts import _clip, _one_line

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
