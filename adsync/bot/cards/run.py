"""The sync card: what a run did, account by account."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from adsync.bot.cards.fit import _note_for, fit
from adsync.bot.cards.parts import (
    MAX_LIST,
    NAME_CHARS,
    SYNC_TEMPLATES,
    Card,
    Lang,
    _button,
    _buttons,
    _card,
    _cell,
    _clip,
    _hr,
    _lang,
    _markdown,
    _md,
    _option,
    _seconds,
    _span,
    _status_word,
    _t,
    _table,
    _trigger_word,
    count,
)
from adsync.sync.causes import Cause, cause_of, collapse, group  # pure: no SQLAlchemy

if TYPE_CHECKING:  # annotations only: these modules import SQLAlchemy
    from adsync.sync.runner import AccountResult, RunResult


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
