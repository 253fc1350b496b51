"""Alerts, authorization links and plain answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adsync.bot.cards.fit import _note_for, fit
from adsync.bot.cards.parts import (
    MAX_BUTTONS,
    MAX_LIST,
    MAX_NAMES,
    NAME_CHARS,
    TEMPLATES,
    TEXT_CHARS,
    Card,
    Lang,
    _button,
    _buttons,
    _card,
    _lang,
    _markdown,
    _md,
    _one_line,
    _t,
    mentions,
)


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
