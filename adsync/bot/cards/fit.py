"""Card sizes as the platform counts them, and ``fit``: any card cut to fit the request-body limit."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from adsync.bot.cards.parts import (
    CARD_LIMIT,
    MAX_BUTTONS,
    Card,
    Lang,
    _buttons,
    _card,
    _clip,
    _markdown,
    _t,
)


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
