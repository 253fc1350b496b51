"""Read commands over the local copy and the Bitable: accounts, summary, fields, records,
tables, verify, history."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from adsync.cli.args import when_text
from adsync.cli.context import Context
from adsync.cli.fmt import print_json, table, when
from adsync.sync.dates import parse_when, spans_text
from adsync.sync.reports import dates_between, resolve_accounts

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
        else:  # several authorizations: these could not be asked (their accounts stay listed)
            for _chain, exc in refreshed.refusals:
                view.problems.append(f"{exc.message} (`adsync auth list`)")
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

    start, end = parse_when(when_text(ctx), _today(ctx))
    services = ctx.services
    scope = resolve_accounts(ctx.settings, services.store, services.tokens.granted_account_ids())
    s = summarize(services.store, start, end, scope)
    if ctx.json:
        print_json(s.to_json())
        return 0
    if not s.synced:
        # Nothing synced: zeros here would read as every account collapsing to −100 %.
        ctx.say(f"Summary {s.label}: not synced yet — there are no figures for it.")
        ctx.say(f"  → run `adsync sync {s.label}`")
        return 0
    t = s.totals
    period = "the day before" if s.days == 1 else f"the {s.days} days before"
    ctx.say(f"Summary {s.label}  ({len(s.accounts)} accounts with data, {t.rows} rows)")
    if s.not_synced:
        missing = spans_text(s.not_synced)
        ctx.say(
            f"  ! not synced yet: {missing} ({len(s.not_synced)} of {s.days} days); the figures "
            f"cover the other days → run `adsync sync {missing.split(', ')[0]}`"
        )
    compared = period if s.comparable else "the period before: not comparable, not all synced"
    ctx.say(
        f"  spend ¥{_money(t.cost)} ({_pct(s.cost_change)} vs {compared}) · "
        f"shows {t.show_cnt:,} · clicks {t.click_cnt:,} · conversions {t.convert_cnt} "
        f"({_pct(s.convert_change)}) · cost/conversion ¥{_money(t.conversion_cost)} · "
        f"group-buy leads {t.clue_cnt}"
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
    for a in s.unsynced_accounts:
        ctx.say(f"  · {a.name or a.id}: not synced yet for these dates")
    for a in s.silent_accounts:
        ctx.say(f"  · {a.name or a.id}: no rows")
    peak = max((p.cost for p in s.trend), default=Decimal(0)) or Decimal(1)
    ctx.say("7-day spend:")
    for p in s.trend:
        if not p.synced:
            ctx.say(f"  {p.day:%m-%d} {'':<20} not synced yet")
            continue
        bar = "█" * int(20 * p.cost / peak)
        ctx.say(f"  {p.day:%m-%d} {bar:<20} ¥{_money(p.cost)}")
    if not t.rows:
        ctx.say("no rows in the local copy for these dates: no account reported any")
    return 0


TYPE_NAMES = {1: "text", 2: "number", 5: "date", 3: "single select", 7: "checkbox"}


def fields(ctx: Context) -> int:
    """The fields of every table adsync writes (rolling tables), with their mapping."""
    from adsync.sync.routing import TableSet

    tables = TableSet(ctx.settings, ctx.services.store)
    live = tables.live()
    shown = [t for t in tables.registry.tables() if t.status != "deleted" and t.table_id in live]
    ids = [t.table_id for t in shown] or [i for i in [tables.configured()] if i in live]
    names = {t.table_id: t.name for t in shown}
    docs = []
    for table_id in ids:
        infos = tables.sink(table_id).fields()
        docs.append(
            {
                "table_id": table_id,
                "name": names.get(table_id) or live.get(table_id, ""),
                "fields": [i.__dict__ for i in infos],
            }
        )
    if ctx.json:
        current = docs[-1]["fields"] if docs else []
        print_json({"fields": current, "tables": docs})
        return 0
    if not docs:
        ctx.say("no table yet: the first sync creates one with the 15 contract fields")
    for doc in docs:
        if len(docs) > 1:
            ctx.say(f"{doc['name']} ({doc['table_id']})")
        rows = [["field", "type", "adsync column"]]
        for i in doc["fields"]:
            rows.append([i["name"], TYPE_NAMES.get(i["type"], str(i["type"])), i["column"] or "—"])
        table(rows, ctx.out)
    return 0


RECORDS_MAX_DAYS = 92  # a search of the Bitable per day range; a quarter at most at once


def records(ctx: Context) -> int:
    """A day's or a range's rows, each date read from its own table (rolling tables)."""
    from collections import defaultdict

    from adsync.sync.routing import TableSet

    start, end = parse_when(when_text(ctx), _today(ctx), max_days=RECORDS_MAX_DAYS)
    days = dates_between(start, end)
    tables = TableSet(ctx.settings, ctx.services.store)
    live = tables.live()
    by_table: dict[str, list[Any]] = defaultdict(list)
    for day, table_id in tables.where_dates(days).items():  # each date's home table
        if table_id is not None and table_id in live:
            by_table[table_id].append(day)
    stored = []
    for table_id, in_table in sorted(by_table.items()):
        sink = tables.sink(table_id)
        sink.prepare(create_missing=False)
        stored += sink.read(sorted(in_table))
    label = str(start) if start == end else f"{start}..{end}"
    if ctx.json:
        print_json(
            {
                "date": start.isoformat(),
                "start": start.isoformat(),
                "end": end.isoformat(),
                "tables": sorted(by_table),
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
    rows = [["date", "account", "promotion", "spend", "shows", "clicks", "conv"]]
    for r in sorted(stored, key=lambda r: r.key):
        v = r.values
        rows.append(
            [
                r.key.split("|", 1)[0],
                str(v.get("account_name") or v.get("account_id") or ""),
                str(v.get("promotion_name") or v.get("promotion_id") or ""),
                _money(v.get("cost")),
                str(v.get("show_cnt", "")),
                str(v.get("click_cnt", "")),
                str(v.get("convert_cnt", "")),
            ]
        )
    table(rows, ctx.out)
    where = ", ".join(f"{live.get(t, '')} ({t})" for t in sorted(by_table))
    ctx.say(f"{len(stored)} records for {label}" + (f" in {where}" if where else ""))
    return 0


def tables(ctx: Context) -> int:
    """The Base's tables adsync writes: periods, dates, rows and room left."""
    from adsync.sync.routing import TableSet
    from adsync.sync.tables import MAX_TABLES, current_table, forecast, table_link

    settings, store = ctx.settings, ctx.services.store
    base = TableSet(settings, store)
    live = base.live()
    registered = base.registry.tables()
    spans = base.registry.spans()
    today = _today(ctx)
    current = current_table(registered, settings.table_roll, today)
    docs = []
    for t in registered:
        here = t.table_id in live
        rows = base.sink(t.table_id).count() if here and t.status != "deleted" else None
        first, last, count = spans.get(t.table_id, (None, None, 0))
        docs.append(
            {
                "table_id": t.table_id,
                "name": t.name,
                "period": t.period or "—",
                "part": t.part,
                "origin": t.origin,
                "status": t.status if here or t.status == "deleted" else "missing",
                "current": current is not None and t.table_id == current.table_id,
                "first_date": first,
                "last_date": last,
                "dates": count,
                "rows": rows,
                "room": None if rows is None else max(0, settings.table_max_rows - rows),
                "replaced_by": t.replaced_by,
                "link": table_link(settings, t.table_id),
            }
        )
    outlook = forecast(store, settings, today)
    doc = {
        "roll": settings.table_roll,
        "max_rows": settings.table_max_rows,
        "base_tables": len(live),
        "tables": docs,
        "forecast": outlook.__dict__ if outlook else None,
    }
    if ctx.json:
        print_json(doc)
        return 0
    status_words = {
        "open": "open",
        "closed": "full",
        "deleted": "deleted",
        "missing": "deleted in the Base: recreated by the next sync",
    }
    lines = [["table", "name", "period", "dates", "rows", "room left", "status"]]
    for d in docs:
        dates = f"{d['first_date']}..{d['last_date']} ({d['dates']})" if d["dates"] else "—"
        status = status_words.get(d["status"], d["status"])
        if d["current"]:
            status += " · new days go here"
        if d["replaced_by"]:
            status += f" → {d['replaced_by']}"
        lines.append(
            [
                d["table_id"],
                d["name"],
                d["period"],
                dates,
                "—" if d["rows"] is None else f"{d['rows']:,}",
                "—" if d["room"] is None else f"{d['room']:,}",
                status,
            ]
        )
    table(lines, ctx.out)
    roll = {"full": "when the current table is full"}.get(settings.table_roll, settings.table_roll)
    ctx.say(
        f"a new table starts {'every ' if settings.table_roll != 'full' else ''}{roll}; "
        f"{settings.table_max_rows:,} rows a table; {len(live)} of {MAX_TABLES} tables and "
        "dashboards in the Base"
    )
    if not docs:
        ctx.say("no table used yet: the first sync registers or creates one")
    if outlook is not None:
        ctx.say(
            f"{outlook.name} holds {outlook.rows:,} rows and gains ~{outlook.per_day:,.0f} a day: "
            f"full in about {outlook.days_to_full:.0f} days ({outlook.full_on})"
            + ("" if outlook.before_period_ends else ", after its period ends")
        )
    return 0


def verify(ctx: Context) -> int:
    from adsync.sync.verify import verify as reconcile

    start, end = parse_when(when_text(ctx), _today(ctx))
    result = reconcile(ctx.services, start, end, fix=ctx.args.fix)
    if ctx.json:
        print_json(result.to_json())
        return result.exit_code
    ctx.say(
        f"Verify {start}..{end}: {result.local_rows} rows in the local copy, "
        f"{result.table_rows} records in the Bitable"
    )
    if len(result.tables) > 1:
        ctx.say(f"  tables: {', '.join(result.tables)}")
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
    rows = [["run", "started", "trigger", "dates", "status", "rows c/u/=", "why"]]
    for r in found:
        dates = (
            str(r["date_from"])
            if r["date_from"] == r["date_to"]
            else f"{r['date_from']}..{r['date_to']}"
        )
        why = r["why"]
        rows.append(
            [
                str(r["id"]),
                when(r["started_at"], tz),
                r["trigger"],
                dates,
                r["status"],
                f"{r['rows_created']}/{r['rows_updated']}/{r['rows_unchanged']}",
                why if len(why) <= WHY_CHARS else why[: WHY_CHARS - 1] + "…",
            ]
        )
    table(rows, ctx.out)
    if any(len(r["why"]) > WHY_CHARS for r in found):
        ctx.say("(`adsync history --json` has every reason in full)")
    return 0


WHY_CHARS = 100  # the why column on a terminal; --json has it whole
