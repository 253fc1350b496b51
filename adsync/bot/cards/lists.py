"""Cards that list things: verify results, recent runs, accounts in scope."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from adsync.bot.cards.fit import _note_for, fit
from adsync.bot.cards.parts import (
    MAX_LIST,
    NAME_CHARS,
    REASON_CHARS,
    Card,
    Lang,
    TzLike,
    _card,
    _cell,
    _lang,
    _markdown,
    _md,
    _more_list,
    _option,
    _reason,
    _span,
    _t,
    _table,
    _trigger_word,
    _when,
    _zone,
    _zone_name,
    count,
)

if TYPE_CHECKING:  # annotations only: these modules import SQLAlchemy
    from adsync.sync.discovery import AccountsView, ListedAccount
    from adsync.sync.verify import VerifyResult


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
