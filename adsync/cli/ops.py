"""`adsync sandbox` and `adsync doctor`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from adsync.cli.context import Context
from adsync.cli.fmt import print_json
from adsync.sync.config import Settings
from adsync.sync.errors import AdsyncError, AuthorizationNeeded, ConfigError
from adsync.sync.tables import period_of, table_name


def sandbox(ctx: Context) -> int:
    from adsync.sandbox.server import main as serve

    argv = ["--port", str(ctx.args.port), "--seed", str(ctx.args.seed)]
    if ctx.args.write_env:
        argv += ["--write-env", ctx.args.write_env]
    return serve(argv)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    exit_code: int = 0
    skipped: bool = False  # not run: an earlier check it depends on failed


def _skipped(name: str, because: str) -> Check:
    return Check(name, True, f"skipped: {because}", skipped=True)


def _check(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except AdsyncError as exc:
        return Check(name, False, exc.message, exc.hint, exc.exit_code)


def doctor_checks(ctx: Context) -> list[Check]:
    settings = ctx.settings
    checks = []
    if settings.unknown:
        checks.append(
            Check(
                "settings",
                False,
                "; ".join(settings.unknown),
                "rename or remove them (.env.example lists every setting)",
                2,
            )
        )
    app = _check(
        "Ocean Engine app",
        lambda: (
            settings.require("OCEANENGINE_APP_ID", "OCEANENGINE_APP_SECRET")
            or f"app {settings.oceanengine_app_id}, API {settings.oceanengine_api_base}"
        ),
    )
    checks.append(app)
    checks.append(
        _check(
            "redirect URI",
            lambda: (
                settings.require("OCEANENGINE_REDIRECT_URI")
                or str(settings.oceanengine_redirect_uri)
            ),
        )
    )
    if not app.ok:
        # Nothing at the platform can be checked without the app, and retrying it would only
        # cost seconds; nor is a database (./data) created for a configuration not there.
        checks.append(_check("database", lambda: _database_untouched(settings)))
        because = "set the Ocean Engine app first"
        checks.append(_skipped("Ocean Engine reachable", because))
        checks.append(_skipped("token", because))
        checks.append(_skipped("accounts", because))
    else:
        checks.append(_check("database", lambda: ctx.services.store.check()))
        if not checks[-1].ok:
            return checks
        checks.append(_check("chat commands", lambda: _commands(ctx)))
        checks.append(_check("Ocean Engine reachable", lambda: _reachable(ctx)))
        checks.append(_check("token", lambda: _token(ctx)))
        if checks[-1].ok:
            checks.append(_check("accounts", lambda: _accounts(ctx)))
    checks.extend(_feishu_checks(ctx, with_store=app.ok))
    checks.append(_admins(ctx))
    return checks


def _database_untouched(settings: Settings) -> str:
    """The database, looked at without creating it (the configuration is incomplete)."""
    from sqlalchemy.engine import make_url

    from adsync.sync.store import Store

    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return f"{url.database} does not exist yet; the first command that needs it creates it"
    store = Store(settings.db_url)
    try:
        return store.check()
    finally:
        store.dispose()


def _commands(ctx: Context) -> str:
    """Are chat commands being answered? Acknowledged ones wait in the queue for a worker."""
    from adsync.sync.queue import JobQueue

    backlog = JobQueue(ctx.services.store).backlog()
    age = int(backlog.age().total_seconds())
    if backlog.stalled():
        raise AdsyncError(
            f"{backlog.waiting} acknowledged chat command(s) waiting, the oldest for "
            f"{age // 60} min: no worker is taking them",
            hint="start `adsync worker` (the Procfile's worker process) beside the web "
            "process, or run `adsync serve`, which starts its own; nothing is lost meanwhile",
        )
    if backlog.waiting:
        return f"{backlog.waiting} waiting (the oldest {age} s): a worker is taking them"
    return "none waiting"


def _admins(ctx: Context) -> Check:
    """Who may change things and authorize from chat (not a failure: a setting to decide)."""
    admins = ctx.settings.admins
    if admins:
        return Check("admins", True, f"{len(admins)} admin(s) may sync, refresh and authorize")
    return Check(
        "admins",
        True,
        "ADSYNC_ADMINS is not set: everyone in the chats may sync and refresh, and chat hands "
        "out no authorization links (only `adsync auth url` does) — set ADSYNC_ADMINS to the "
        "admins' open_ids (ou_…)",
    )


def _feishu_checks(ctx: Context, with_store: bool = True) -> list[Check]:
    """Feishu app, Bitable reachable and writable, fields, report chats, alert webhook.
    ``with_store``: the database may be opened (the table registry is there)."""
    settings = ctx.settings
    app = _check(
        "Feishu app",
        lambda: (
            settings.require("FEISHU_APP_ID", "FEISHU_APP_SECRET")
            or f"app {settings.feishu_app_id} at {settings.feishu_domain}"
        ),
    )
    table = _check("Bitable configured", lambda: _configured(settings))
    checks = [app, _check("Feishu event keys", lambda: _event_keys(settings))]
    if app.ok:
        checks.append(_check("Feishu bot", lambda: _bot_identity(settings)))
    checks.append(table)
    if app.ok and table.ok and not with_store:
        checks.append(
            _skipped("Bitable tables", "set the Ocean Engine app first (the registry is local)")
        )
        if settings.feishu_bitable_table_id:
            from adsync.sync.bitable import BitableSink  # imports lark-oapi: only when set

            sink = BitableSink(settings)
            fields = _check("Bitable fields", lambda: _fields(sink))
            checks.append(fields)
            if fields.ok:
                checks.append(_check("Bitable writable", lambda: _writable(sink)))
    elif app.ok and table.ok:
        from adsync.sync.routing import TableSet  # imports lark-oapi: only when configured

        base = TableSet(settings, ctx.services.store)
        tables = _check("Bitable tables", lambda: _tables(base))
        checks.append(tables)
        try:
            current = _current(base)
        except AdsyncError as exc:  # the Base did not answer: said by the tables check
            current = ""
            if tables.ok:
                checks.append(Check("Bitable fields", False, exc.message, exc.hint, 1))
        if current == "":
            pass
        elif current is None:
            name = table_name(
                settings.table_name, period_of(_today(settings), settings.table_roll), 1
            )
            checks.append(
                Check(
                    "Bitable fields",
                    True,
                    f"no table for today's period yet: the first sync creates {name!r} "
                    "with the 15 fields",
                )
            )
        else:
            sink = base.sink(current)
            fields = _check("Bitable fields", lambda: _fields(sink))
            checks.append(fields)
            if fields.ok:
                checks.append(_check("Bitable writable", lambda: _writable(sink)))
    chats = _check(
        "report chats",
        lambda: (
            settings.require("FEISHU_REPORT_CHAT_IDS")
            or f"{len(settings.feishu_report_chat_ids)} chat(s) get the daily report and alerts"
        ),
    )
    checks.append(chats)
    if chats.ok and app.ok:
        checks.extend(_membership_checks(settings))
    elif chats.ok:
        checks.append(_skipped("bot in the report chats", "set the Feishu app first"))
    if settings.feishu_alert_webhook_url is None:
        checks.append(
            Check(
                "alert webhook",
                True,
                "not set (optional): alerts go through the bot only",
            )
        )
    else:
        checks.append(Check("alert webhook", True, "set: alerts fall back to it if the bot fails"))
    return checks


def _membership_checks(settings: Settings) -> list[Check]:
    """One check per report chat: the bot must be in it, or every report to it fails (230002)."""
    from adsync.sync.chats import memberships
    from adsync.sync.feishu import FeishuCaller, make_client

    # Two tries, short waits: a doctor answers in seconds, not after a retry ladder.
    caller = FeishuCaller(make_client(settings), attempts=2, base_delay=0.2)
    checks = []
    for m in memberships(caller, settings.feishu_report_chat_ids):
        name = f"bot in {m.chat_id}"
        if m.member:
            checks.append(
                Check(name, True, "the bot is a member: reports and alerts can be posted")
            )
        elif m.member is False:
            checks.append(
                Check(
                    name,
                    False,
                    "the bot is not a member of this chat: reports and alerts to it would fail",
                    "open the group → settings → Bots → Add bot → this app; or remove the chat "
                    "from FEISHU_REPORT_CHAT_IDS",
                    1,
                )
            )
        else:
            checks.append(Check(name, False, m.problem, m.fix, 1))
    return checks


def _event_keys(settings: Settings) -> str:
    """The webhook opens only with the Encrypt Key (signatures); the token is a second check."""
    from adsync.bot.gate import webhook_key_problem

    problem = webhook_key_problem(settings)
    if problem is not None:
        raise problem
    if not settings.feishu_verification_token:
        return (
            "FEISHU_ENCRYPT_KEY set: events are signed and encrypted; FEISHU_VERIFICATION_TOKEN "
            "is not set (recommended: each event's token is then checked too)"
        )
    return "FEISHU_ENCRYPT_KEY and FEISHU_VERIFICATION_TOKEN set: events are signed and checked"


def _bot_identity(settings: Settings) -> str:
    """The bot's own open_id: group messages count only when they @-mention it."""
    from adsync.bot.intake import BotIdentity
    from adsync.sync.feishu import FeishuCaller, make_client

    caller = FeishuCaller(make_client(settings, timeout=10.0), attempts=2, base_delay=0.2)
    return f"its open_id is {BotIdentity(caller).fetch()} (@-mentions of it are commands)"


def _today(settings: Any) -> date:
    return datetime.now(settings.tz).date()


def _configured(settings: Any) -> str:
    settings.require("FEISHU_BITABLE_APP_TOKEN")
    roll, limit = settings.table_roll, settings.table_max_rows
    if roll == "full":
        settings.require("FEISHU_BITABLE_TABLE_ID")
        return (
            f"table {settings.feishu_bitable_table_id}; the next table starts when one is full "
            f"({limit:,} rows)"
        )
    first = settings.feishu_bitable_table_id
    return f"a table per {roll} named {settings.table_name!r} ({limit:,} rows each)" + (
        f", the first one {first}" if first else ""
    )


def _tables(base: Any) -> str:
    """Every table adsync registered is still in the Base; a table of the current period's
    name that adsync would adopt has fields that map; the Base has room for more tables."""
    from adsync.sync.tables import MAX_TABLES, OPEN

    live = base.live()
    registered = base.registry.tables()
    gone = [t for t in registered if t.status != "deleted" and t.table_id not in live]
    if gone:
        spans = base.registry.spans()
        names = "; ".join(f"{t.label} ({spans.get(t.table_id, (0, 0, 0))[2]} dates)" for t in gone)
        raise AdsyncError(
            f"deleted in the Base: {names}",
            hint="the next sync recreates it and rewrites its dates from the local copy "
            "(run `adsync sync` now, or let the daily run do it)",
        )
    settings = base.settings
    period = period_of(_today(settings), settings.table_roll)
    known = {t.table_id for t in registered}
    if period != "full" and not any(t.period == period for t in registered):
        name = table_name(settings.table_name, period, 1)
        for table_id, listed in live.items():
            if listed == name and table_id not in known:
                try:
                    base.sink(table_id).prepare(create_missing=False)
                except ConfigError as exc:
                    raise AdsyncError(
                        f"table {name!r} ({table_id}) has the name adsync uses for {period}, "
                        f"but its fields do not fit: {exc.message}",
                        hint=exc.hint + "; or rename that table so adsync creates its own",
                    ) from None
    if len(live) >= MAX_TABLES - 5:
        raise AdsyncError(
            f"the Base has {len(live)} tables; it holds at most {MAX_TABLES} tables and "
            "dashboards (1254100)",
            hint="move old tables to another Base, or delete unused ones",
        )
    in_use = [t for t in registered if t.status != "deleted"]
    open_ = sum(1 for t in in_use if t.status == OPEN)
    return (
        f"{len(in_use)} table(s) in use ({open_} open), {len(live)} of {MAX_TABLES} in the Base "
        "(`adsync tables` lists them)"
    )


def _current(base: Any) -> str | None:
    """The table new days go into now (the configured one before the first sync)."""
    from adsync.sync.tables import current_table

    today = _today(base.settings)
    found = current_table(base.registry.tables(), base.settings.table_roll, today)
    if found is not None and found.table_id in base.live():
        return str(found.table_id)
    return base.where_dates([today])[today]


def _fields(sink: object) -> str:
    layout = sink.prepare(create_missing=False)  # type: ignore[attr-defined]
    text_typed = [c.field_name for c in layout.columns if c.text_typed]
    detail = f"{len(layout.columns)} of 15 fields present"
    if layout.missing:
        detail += f"; {len(layout.missing)} will be created by the first sync"
    if text_typed:
        detail += f"; text-typed (legacy layout): {', '.join(text_typed)}"
    return detail


def _writable(sink: object) -> str:
    """Create one empty record and delete it again: the app may write to this table."""
    from lark_oapi.api.bitable.v1 import (
        AppTableRecord,
        BatchCreateAppTableRecordRequest,
        BatchCreateAppTableRecordRequestBody,
        BatchDeleteAppTableRecordRequest,
        BatchDeleteAppTableRecordRequestBody,
    )

    caller = sink.caller  # type: ignore[attr-defined]
    app_token, table_id = sink.app_token, sink.table_id  # type: ignore[attr-defined]
    records = caller.client.bitable.v1.app_table_record
    created = caller.call(
        "write probe",
        records.batch_create,
        BatchCreateAppTableRecordRequest.builder()
        .app_token(app_token)
        .table_id(table_id)
        .request_body(
            BatchCreateAppTableRecordRequestBody.builder()
            .records([AppTableRecord.builder().fields({}).build()])
            .build()
        )
        .build(),
    )
    record_id = created.data.records[0].record_id
    caller.call(
        "delete the write probe",
        records.batch_delete,
        BatchDeleteAppTableRecordRequest.builder()
        .app_token(app_token)
        .table_id(table_id)
        .request_body(BatchDeleteAppTableRecordRequestBody.builder().records([record_id]).build())
        .build(),
    )
    return "a probe record was written and removed"


def _reachable(ctx: Context) -> str:
    from adsync.sync.oceanengine import AccessTokenRejected, OceanEngineError, TransientError

    client = ctx.services.new_client()
    try:
        # Without a token the platform answers 40104: proof the host and the envelope work.
        client.request("GET", "/open_api/2/user/info/")
    except AccessTokenRejected:
        return f"{ctx.settings.oceanengine_api_base} answers"
    except TransientError as exc:
        raise AdsyncError(
            exc.message,
            hint="check OCEANENGINE_API_BASE and this machine's network access to it",
        ) from None
    except OceanEngineError as exc:
        return f"{ctx.settings.oceanengine_api_base} answers ({exc.code})"
    finally:
        client.close()
    return f"{ctx.settings.oceanengine_api_base} answers"


def _token(ctx: Context) -> str:
    """Every authorization (one per Ocean Engine login) must be live: one call each."""
    tokens = ctx.services.tokens
    statuses = tokens.statuses()
    if not statuses:
        raise AuthorizationNeeded(tokens.status().message)
    dead = [s for s in statuses if s.health == "reauthorize"]
    if dead:
        several = len(statuses) > 1
        raise AuthorizationNeeded(
            "; ".join(f"{s.who}: {s.message}" if several else s.message for s in dead)
        )
    client = ctx.services.new_client()
    try:
        for s in statuses:
            ctx.services.api(client, s.chain_id).get("/open_api/2/user/info/", {})
    finally:
        client.close()
    if len(statuses) == 1:
        status = statuses[0]
        note = "" if status.health == "ok" else f" — {status.message}"
        return f"{status.health}: valid, {len(status.account_ids)} accounts granted{note}"
    notes = [f"{s.who}: {s.health}, {len(s.account_ids)} accounts" for s in statuses]
    return f"{len(statuses)} authorizations valid ({'; '.join(notes)})"


def _accounts(ctx: Context) -> str:
    """The account probe (`adsync accounts --check`): every account in scope answers a 1-day
    report; granted accounts adsync cannot use are named with what to do."""
    from datetime import datetime, timedelta

    from adsync.sync.probe import check_accounts, summary_line

    day = datetime.now(ctx.settings.tz).date() - timedelta(days=1)
    check = check_accounts(ctx.services, day)
    view = check.view
    parts, fixes = [], []
    if check.failed:
        failures = [f"{r.account.label}: {r.error}" for r in check.failed]
        parts.append(f"{summary_line(check)}: {_some(failures)}")
        fixes += [r.fix for r in check.failed]
    if view.skipped:
        skipped = [f"{s.label} [{s.account_type}]: {s.note}" for s in view.skipped]
        parts.append(f"{len(skipped)} granted accounts skipped: {_some(skipped)}")
        fixes += [s.fix for s in view.skipped]
    if parts:
        raise AdsyncError(
            "; ".join(parts),
            hint=" | ".join(dict.fromkeys(f for f in fixes if f))
            + " (`adsync accounts --check` lists every one)",
        )
    return f"{summary_line(check)}; from {view.origin_text}"


def _some(items: list[str], limit: int = 5) -> str:
    more = f" … and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def doctor(ctx: Context) -> int:
    try:
        checks = doctor_checks(ctx)
    except ConfigError as exc:
        checks = [Check("configuration", False, exc.message, exc.hint, exc.exit_code)]
    worst = max((c.exit_code or 1 for c in checks if not c.ok), default=0)
    if ctx.json:
        print_json({"ok": worst == 0, "checks": [c.__dict__ for c in checks]})
        return worst
    for c in checks:
        mark = "·" if c.skipped else "✓" if c.ok else "✗"
        ctx.say(f"{mark} {c.name}: {c.detail}")
        if not c.ok and c.fix:
            ctx.say(f"    fix: {c.fix}")
    if worst:
        ctx.say("some checks failed; fix them from the top")
    elif any(c.skipped for c in checks):
        ctx.say("no check failed, but some were skipped")
    else:
        ctx.say("all checks passed")
    return worst
