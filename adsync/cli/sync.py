"""`adsync sync`, with a live progress bar on a terminal and plain lines elsewhere."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import TextIO

from adsync.cli.context import Context
from adsync.cli.fmt import print_json, table
from adsync.sync.dates import parse_when
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


def sync(ctx: Context) -> int:
    today = datetime.now(ctx.settings.tz).date()
    start, end = parse_when(ctx.args.when, today)
    view = None if ctx.json else ProgressView(sys.stderr, sys.stderr.isatty())
    runner = Runner(ctx.services, progress=view)
    result = runner.run(
        start,
        end,
        account_ids=[ctx.args.account] if ctx.args.account else None,
        trigger="cli",
        requested_by="cli",
        wait=0 if ctx.args.no_wait else 1800,
    )
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
        TableNotices(ctx.services, notifier, lambda: datetime.now(settings.tz).date()).send()
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
    for a in result.failed:
        say(f"  ✗ {a.label}: {a.reason}")
    for e in result.table_events:
        what = {"started": "started", "found": "found by name", "recreated": "recreated"}
        extra = f", {e.rows:,} rows of {e.dates} dates rewritten" if e.kind == "recreated" else ""
        say(f"  + table {e.name} ({e.table_id}) {what.get(e.kind, e.kind)}: {e.reason}{extra}")
    outlook = result.table_forecast
    if outlook is not None and outlook.warn:
        say(
            f"  ! {outlook.name} is full in about {outlook.days_to_full:.0f} days "
            f"({outlook.rows:,} of {outlook.max_rows:,} rows); the next table starts by itself"
        )
    for w in result.warnings:
        say(f"  ! {w}")
    if result.error:
        say(f"  ✗ {result.error}")
        if result.auth_url:
            say(f"    → authorize again: {result.auth_url}")
        elif result.hint:
            say(f"    → {result.hint}")
    elif result.failed:
        say(
            "  → run the same command again to retry; failed accounts are retried, the rest is unchanged"
        )
