"""The summary card: totals, changes, a trend and the accounts behind them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from adsync.bot.cards.fit import _note_for, fit
from adsync.bot.cards.parts import (
    CHART_POINTS,
    MAX_NAMES,
    NAME_CHARS,
    Card,
    Lang,
    _card,
    _cell,
    _change,
    _chart,
    _hr,
    _lang,
    _markdown,
    _md,
    _more_list,
    _span,
    _t,
    _table,
    _tiles,
    count,
    money,
    pct,
)
from adsync.bot.cards.run import _causes_block
from adsync.sync.causes import cause_of, group  # pure: no SQLAlchemy
from adsync.sync.dates import spans_text

if TYPE_CHECKING:  # annotations only: these modules import SQLAlchemy
    from adsync.sync.dailyreport import DailyReport
    from adsync.sync.runner import AccountResult
    from adsync.sync.summary import AccountSummary, Summary, Totals


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


def report_card(report: DailyReport, lang: str) -> Card:
    """The daily report of one day: the card the clock posts (in Chinese) and the one
    `adsync report` prints and the chat's `report` shows."""
    return summary_card(report.summary, lang, failures=report.failures, average=report.average)


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
