"""`adsync views`: the per-account views of every table adsync writes, checked against the
Base (each view's filter read again) and made where missing."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime

from adsync.cli.context import Context
from adsync.cli.fmt import print_json, table

# The Base's writer lease may be held by a sync writing right now: wait for it that long.
LEASE_WAIT = 300.0

STATE_WORDS = {
    "ok": "ok",
    "created": "created",
    "renamed": "renamed (its account was renamed)",
    "missing-and-created": "made again (deleted in the Base)",
    "name-clash": "created under another name (the name was taken)",
    "failed": "NOT MADE",
}


def views(ctx: Context) -> int:
    from adsync.sync.leases import holding
    from adsync.sync.reports import resolve_accounts
    from adsync.sync.routing import TableSet
    from adsync.sync.store import actor
    from adsync.sync.tables import write_lease
    from adsync.sync.views import ViewKeeper

    settings = ctx.settings
    settings.require("FEISHU_APP_ID", "FEISHU_APP_SECRET", "FEISHU_BITABLE_APP_TOKEN")
    services = ctx.services
    scope = resolve_accounts(settings, services.store, services.tokens.granted_account_ids())
    base = TableSet(settings, services.store)
    today = datetime.now(settings.tz).date()
    # One writer per Base (a sync's writer holds the same lease): a view is made once.
    with holding(services.store, [write_lease(settings)], f"{actor()}:views", wait=LEASE_WAIT):
        result = ViewKeeper(base).ensure({a.id: a.name for a in scope}, today)
    if ctx.json:
        print_json({**result.to_json(), "exit_code": result.exit_code})
        return result.exit_code
    by_table = defaultdict(list)
    for line in result.lines:
        by_table[(line.table_id, line.table_name)].append(line)
    for (table_id, table_name), lines in by_table.items():
        ctx.say(f"{table_name} ({table_id})" if table_name else table_id)
        rows = [["account", "view", "view id", "state"]]
        for v in lines:
            state = STATE_WORDS.get(v.state, v.state)
            if v.note:
                state += f" — {v.note}"
            rows.append([f"{v.account_name or '—'} ({v.account_id})", v.view_name or "—",
                         v.view_id or "—", state])  # fmt: skip
        table(rows, ctx.out)
    if not result.lines:
        ctx.say("no views to keep: no table holds rows yet (the first sync makes the views)")
    counts = Counter(v.state for v in result.lines)
    done = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    ctx.say(
        f"{len(result.lines)} per-account views in {len(by_table)} tables"
        + (f": {done}" if done else "")
        + f" · {result.api_calls} Feishu calls"
    )
    for warning in result.warnings:
        ctx.say(f"  ! {warning}")
    ctx.say(
        "views are filtered on 账户ID; the open API cannot sort a view: sort one by 日期 "
        "(descending) in the Base, once"
    )
    return result.exit_code
