"""`adsync sync`, with a live progress bar on a terminal and plain lines elsewhere."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TextIO

from adsync.cli.args import resolve_account, today, when_text
from adsync.cli.context import Context
from adsync.cli.fmt import print_json, table
from adsync.sync.causes import cause_of, collapse, group
from adsync.sync.dates import check_reportable, parse_when
from adsync.sync.errors import AdsyncError
from adsync.sync.reports import report_today, resolve_accounts
from adsync.sync.runner import FAILED, Progress, Runner, RunResult

STATUS_WORD = {
    "ok": "OK",
    "partial": "PARTIAL",
    "failed": "FAILED",
    "busy": "BUSY",
    "interrupted": "INTERRUPTED",
}


class ProgressView:
    """A one-line bar redrawn in place on a TTY; one line per account otherwise."""

    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream = stream
        self.live = live
        self._drawn = False

    def __call__(self, p: Progress) -> None:
        if self.live:
            self._bar(p)
        elif p.last is not None:
            status = p.last.status if p.last.status != FAILED else f"FAILED: {p.last.reason}"
            self.stream.write(
                f"[{p.done}/{p.total}] {p.last.label}: {p.last.rows} rows, {status}\n"
            )
            self.stream.flush()
        elif p.stage == "write":
            self.stream.write(f"writing {p.rows} rows to the Bitable …\n")
            self.stream.flush()

    def _bar(self, p: Progress) -> None:
        width = 28
        filled = width * p.done // max(p.total, 1)
        stage = {"fetch": "fetching", "write": "writing Bitable", "done": "done"}[p.stage]
        line = f"\r[{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} accounts · {p.rows} rows · {stage}"
        self.stream.write(line.ljust(78))
        self.stream.flush()
        self._drawn = True
        if p.stage == "done":
            self.stream.write("\n")


# What a sync needs before anything is opened or recorded: a run without them could only fail.
REQUIRED = (
    "OCEANENGINE_APP_ID",
    "OCEANENGINE_APP_SECRET",
    "FEISHU_APP_ID",
    "FEISHU_APP_SECRET",
    "FEISHU_BITABLE_APP_TOKEN",
)
SHOWN_LABELS = 5  # accounts named per cause; the rest are counted


def sync(ctx: Context) -> int:
    start, end = parse_when(when_text(ctx), today(ctx))
    # Usage and configuration errors exit 2 here, before the database is opened (no ./data
    # for a missing configuration) and before the ledger records a run that could not start.
    ctx.settings.require(*REQUIRED)
    if ctx.settings.table_roll == "full":  # a period roll finds or creates its tables by name
        ctx.settings.require("FEISHU_BITABLE_TABLE_ID")
    check_reportable(start, report_today())
    account_ids = None
    if ctx.args.account:
        services = ctx.services
        scope = resolve_accounts(
            ctx.settings, services.store, services.tokens.granted_account_ids()
        )
        account_ids = [resolve_account(ctx.args.account, [(a.id, a.name) for a in scope])]
    view = None if ctx.json else ProgressView(sys.stderr, sys.stderr.isatty())
    runner = Runner(ctx.services, progress=view)
    result = runner.run(
        start,
        end,
        account_ids=account_ids,
        trigger="cli",
        requested_by="cli",
        wait=0 if ctx.args.no_wait else 1800,
    )
    if result.needs_authorization:
        # The operator may authorize from here: a link bound to the CLI (never minted by the
        # run itself, whose result also reaches chat cards).
        with contextlib.suppress(AdsyncError):
            result.auth_url = ctx.services.tokens.authorization_url(requested_by="cli")
    if result.table_events or (result.table_forecast and result.table_forecast.warn):
        _tell_the_group(ctx)
    if ctx.json:
        print_json(result.to_json())
    else:
        render(ctx, result)
    return result.exit_code


def _tell_the_group(ctx: Context) -> None:
    """A table started, recreated or filling: the group hears it now (the clock's sweep
    would within minutes; a run from the terminal need not wait for it)."""
    from adsync.bot.alerts import Notifier
    from adsync.bot.messenger import Messenger
    from adsync.bot.table_notices import TableNotices

    settings = ctx.settings
    messenger = (
        Messenger(settings) if settings.feishu_app_id and settings.feishu_app_secret else None
    )
    notifier = Notifier(settings, ctx.services.store, messenger)
    try:
        TableNotices(ctx.services, notifier, lambda: today(ctx)).send()
    except Exception:  # noqa: BLE001 - the sync is done; the clock's sweep tells them later
        logging.getLogger("adsync.cli").exception("could not tell the group about the tables")


def render(ctx: Context, result: RunResult) -> None:
    say = ctx.say
    say(
        f"Sync {result.dates}: {STATUS_WORD.get(result.status, result.status)}  (run {result.run_id})"
    )
    if result.accounts:
        rows = [["account", "name", "status", "rows", "calls"]]
        for a in result.accounts:
            status = a.status if a.status != FAILED else "FAILED"
            rows.append([a.account_id, a.name or "—", status, str(a.rows), str(a.api_calls)])
        table(rows, ctx.out)
    ok = sum(1 for a in result.accounts if a.status != FAILED)
    confirmed = ""
    if result.confirmed_after_timeout:
        confirmed = f" ({result.confirmed_after_timeout} written, confirmed after a timeout)"
    say(
        f"{ok}/{len(result.accounts)} accounts · {result.rows} rows · Bitable: "
        f"{result.created} created, {result.updated} updated{confirmed}, "
        f"{result.unchanged} unchanged, "
        f"{result.deleted} duplicates removed · {result.api_calls} Ocean Engine calls, "
        f"{result.feishu_calls} Feishu calls · {result.seconds:.1f}s"
    )
    # One line per cause, with its count: twenty accounts refused for one reason are one line.
    # The run's own error (the authorization died) is said below, with its count.
    error_cause = cause_of(result.error)[0] if result.error else None
    causes = group((a.label, a.reason) for a in result.failed)
    folded = sum(c.count for c in causes if c.short == error_cause)
    for cause in (c for c in causes if c.short != error_cause):
        shown = ", ".join(cause.labels[:SHOWN_LABELS])
        more = cause.count - SHOWN_LABELS
        who = f"{shown} and {more} more" if more > 0 else shown
        noun = "account" if cause.count == 1 else "accounts"
        say(f"  ✗ {cause.text if cause.count == 1 else cause.short} — {cause.count} {noun}: {who}")
        if cause.fix and not result.auth_url:
            say(f"    → {cause.fix}")
    for e in result.table_events:
        what = {"started": "started", "found": "found by name", "recreated": "recreated"}
        extra = f", {e.rows:,} rows of {e.dates} dates rewritten" if e.kind == "recreated" else ""
        say(f"  + table {e.name} ({e.table_id}) {what.get(e.kind, e.kind)}: {e.reason}{extra}")
    for line in result.view_changes:
        say(f"  + {line}")
    outlook = result.table_forecast
    if outlook is not None and outlook.warn:
        say(
            f"  ! {outlook.name} is full in about {outlook.days_to_full:.0f} days "
            f"({outlook.rows:,} of {outlook.max_rows:,} rows); the next table starts by itself"
        )
    for w in collapse(result.warnings):
        say(f"  ! {w}")
    if result.error:
        not_synced = f" — {folded} accounts not synced" if folded else ""
        say(f"  ✗ {result.error}{not_synced}")
        if result.auth_url:
            say(f"    → authorize again: {result.auth_url}")
        elif result.hint:
            say(f"    → {result.hint}")
