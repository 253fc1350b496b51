"""Read commands over the local copy and the Bitable: accounts, summary, fields, records,
verify, history."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from adsync.cli.context import Context
from adsync.cli.fmt import print_json, table, when
from adsync.sync.dates import parse_day, parse_when
from adsync.sync.reports import resolve_accounts

if TYPE_CHECKING:
    from adsync.sync.discovery import AccountsView


def _today(ctx: Context):  # noqa: ANN202 - a date
    return datetime.now(ctx.settings.tz).date()


def _money(value: Decimal | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1%}"


def accounts(ctx: Context) -> int:
    """The accounts in scope and where each came from; skipped and vanished ones with the
    reason. ``--check``: one 1-day report call per account; exit 1 if any fails."""
    from adsync.sync import discovery

    services = ctx.services
    check = None
    if getattr(ctx.args, "check", False):
        from adsync.sync.probe import check_accounts

        check = check_accounts(services, _today(ctx) - timedelta(days=1))
        view, changes = check.view, check.changes
    else:
        # Ask the platform (a call or a few); the stored list stands if it cannot answer.
        refreshed = discovery.refresh(services)
        view = discovery.account_view(
            ctx.settings, services.store, services.tokens.granted_account_ids()
        )
        view.problems = list(refreshed.problems)
        if refreshed.refused is not None:
            view.problems.append(
                f"the list was not refreshed: {refreshed.refused.message} "
                "(`adsync auth url` to authorize again)"
            )
        changes = discovery.describe(refreshed.changes)
    if ctx.json:
        doc = view.to_json()
        doc["changes"] = changes
        if check is not None:
            doc["check"] = check.to_json()
        if view.empty is not None:
            doc["exit_code"] = view.empty.exit_code
        print_json(doc)
        return _accounts_exit(view, check)
    _print_accounts(ctx, view, changes)
    if view.empty is not None:  # the list says why; the error says what to do
        print(f"error: {view.empty}", file=sys.stderr)
        return view.empty.exit_code
    if check is None:
        return 0
    from adsync.sync.probe import summary_line

    ctx.say()
    ctx.say(f"Check: one 1-day report call ({check.day}) per account")
    for r in check.failed:
        ctx.say(f"  ✗ {r.account.label}: {r.error}")
        ctx.say(f"      fix: {r.fix}")
    ctx.say(("✓ " if not check.failed else "✗ ") + summary_line(check))
    return check.exit_code


def _accounts_exit(view: AccountsView, check: Any) -> int:
    if view.empty is not None:
        return view.empty.exit_code  # 2: nothing in scope is a configuration problem
    return check.exit_code if check is not None else 0


def _print_accounts(ctx: Context, view: AccountsView, changes: list[str]) -> None:
    tz = ctx.settings.tz
    rows = [["id", "name", "source", "last synced", "last outcome"]]
    for a in view.accounts:
        outcome = a.last_outcome or "—"
        if a.last_outcome == "failed" and a.last_reason:
            outcome = f"failed: {a.last_reason[:60]}"
        rows.append([a.id, a.name or "—", a.via, when(a.last_synced_at, tz), outcome])
    table(rows, ctx.out)
    if view.managers:
        ctx.say("Expanded (organisations and 来客 accounts; not synced themselves):")
        for m in view.managers:
            ctx.say(f"  {m.label} [{m.account_type}]: {m.note}")
    if view.skipped:
        ctx.say(f"Skipped ({len(view.skipped)} granted accounts not synced):")
        for s in view.skipped:
            ctx.say(f"  {s.label} [{s.account_type}]: {s.note}")
            if s.fix:
                ctx.say(f"      fix: {s.fix}")
    if view.vanished:
        ctx.say(f"No longer found ({len(view.vanished)}, not synced any more):")
        for v in view.vanished:
            ctx.say(f"  {v.label} since {when(v.at, tz)}: {v.note}")
    for line in changes:
        ctx.say(f"changed: {line}")
    for line in view.problems:
        ctx.say(f"warning: {line}")
    checked = f", listed {when(view.checked_at, tz)}" if view.checked_at else ""
    ctx.say(f"{len(view.accounts)} accounts in scope (from {view.origin_text}{checked})")


def summary(ctx: Context) -> int:
    from adsync.sync.summary import summarize

    services = ctx.services
    start, end = parse_when(ctx.args.when, _today(ctx))
    scope = resolve_accounts(ctx.settings, services.store, services.tokens.granted_account_ids())
    s = summarize(services.store, start, end, scope)
    if ctx.json:
        print_json(s.to_json())
        return 0
    t = s.totals
    period = "the day before" if s.days == 1 else f"the {s.days} days before"
    ctx.say(f"Summary {s.label}  ({len(s.accounts)} accounts with data, {t.rows} rows)")
    ctx.say(
        f"  spend ¥{_money(t.cost)} ({_pct(s.cost_change)} vs {period}) · shows {t.show_cnt:,} · "
        f"clicks {t.click_cnt:,} · conversions {t.convert_cnt} ({_pct(s.convert_change)}) · "
        f"cost/conversion ¥{_money(t.conversion_cost)} · group-buy leads {t.clue_cnt}"
    )
    rows = [["account", "spend", "change", "conv", "cost/conv", "leads"]]
    for a in s.accounts:
        rows.append(
            [
                a.name or a.account_id,
                _money(a.totals.cost),
                _pct(a.cost_change),
                str(a.totals.convert_cnt),
                _money(a.totals.conversion_cost),
                str(a.totals.clue_cnt),
            ]
        )
    table(rows, ctx.out)
    for a in s.silent_accounts:
        ctx.say(f"  · {a.name or a.id}: no rows")
    peak = max((p.cost for p in s.trend), default=Decimal(0)) or Decimal(1)
    ctx.say("7-day spend:")
    for p in s.trend:
        bar = "█" * int(20 * p.cost / peak)
        ctx.say(f"  {p.day:%m-%d} {bar:<20} ¥{_money(p.cost)}")
    if not t.rows:
        ctx.say("no rows in the local copy for these dates — run `adsync sync` first")
    return 0


def fields(ctx: Context) -> int:
    from adsync.sync.bitable import BitableSink

    sink = BitableSink(ctx.settings)
    infos = sink.fields()
    if ctx.json:
        print_json({"fields": [i.__dict__ for i in infos]})
        return 0
    type_names = {1: "text", 2: "number", 5: "date", 3: "single select", 7: "checkbox"}
    rows = [["field", "type", "adsync column"]]
    for i in infos:
        rows.append([i.name, type_names.get(i.type, str(i.type)), i.column or "—"])
    table(rows, ctx.out)
    return 0


def records(ctx: Context) -> int:
    from adsync.sync.bitable import BitableSink

    day = (
        parse_day(ctx.args.date, _today(ctx)) if ctx.args.date else _today(ctx) - timedelta(days=1)
    )
    sink = BitableSink(ctx.settings)
    sink.prepare(create_missing=False)
    stored = sink.read([day])
    if ctx.json:
        print_json(
            {
                "date": day.isoformat(),
                "records": [
                    {
                        "record_id": r.record_id,
                        "key": r.key,
                        **{k: str(v) for k, v in r.values.items()},
                    }
                    for r in stored
                ],
            }
        )
        return 0
    rows = [["account", "promotion", "spend", "shows", "clicks", "conv"]]
    for r in sorted(stored, key=lambda r: r.key):
        v = r.values
        rows.append(
            [
                str(v.get("account_name") or v.get("account_id") or ""),
                str(v.get("promotion_name") or v.get("promotion_id") or ""),
                _money(v.get("cost")),
                str(v.get("show_cnt", "")),
                str(v.get("click_cnt", "")),
                str(v.get("convert_cnt", "")),
            ]
        )
    table(rows, ctx.out)
    ctx.say(f"{len(stored)} records for {day}")
    return 0


def verify(ctx: Context) -> int:
    from adsync.sync.verify import verify as reconcile

    start, end = parse_when(ctx.args.when, _today(ctx))
    result = reconcile(ctx.services, start, end, fix=ctx.args.fix)
    if ctx.json:
        print_json(result.to_json())
        return result.exit_code
    ctx.say(
        f"Verify {start}..{end}: {result.local_rows} rows in the local copy, "
        f"{result.table_rows} records in the Bitable"
    )
    for label, keys in (
        ("missing from the Bitable", result.missing),
        ("duplicated in the Bitable", result.duplicated),
        ("different from the local copy", result.different),
        ("only in the Bitable (left alone)", result.extra),
    ):
        if keys:
            shown = ", ".join(keys[:5]) + (" …" if len(keys) > 5 else "")
            ctx.say(f"  {len(keys)} {label}: {shown}")
    if result.clean:
        ctx.say("  the Bitable matches the local copy")
    elif result.fixed:
        ctx.say("  repaired: the Bitable now matches the local copy")
    else:
        ctx.say("  → run `adsync verify ... --fix` to repair")
    return result.exit_code


def history(ctx: Context) -> int:
    from adsync.sync.runner import recent_runs

    found = recent_runs(ctx.services, limit=ctx.args.limit)
    if ctx.json:
        print_json({"runs": found})
        return 0
    tz = ctx.settings.tz
    rows = [["run", "started", "trigger", "dates", "status", "rows c/u/=", "error"]]
    for r in found:
        dates = (
            str(r["date_from"])
            if r["date_from"] == r["date_to"]
            else f"{r['date_from']}..{r['date_to']}"
        )
        rows.append(
            [
                str(r["id"]),
                when(r["started_at"], tz),
                r["trigger"],
                dates,
                r["status"],
                f"{r['rows_created']}/{r['rows_updated']}/{r['rows_unchanged']}",
                (r["error"] or "")[:50],
            ]
        )
    table(rows, ctx.out)
    return 0
