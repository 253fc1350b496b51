"""`adsync sandbox` and `adsync doctor`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from adsync.cli.context import Context
from adsync.cli.fmt import print_json
from adsync.sync.config import Settings
from adsync.sync.errors import AdsyncError, AuthorizationNeeded, ConfigError


def sandbox(ctx: Context) -> int:
    from adsync.sandbox.server import main as serve

    return serve(["--port", str(ctx.args.port), "--seed", str(ctx.args.seed)])


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    exit_code: int = 0


def _check(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except AdsyncError as exc:
        return Check(name, False, exc.message, exc.hint, exc.exit_code)


def doctor_checks(ctx: Context) -> list[Check]:
    settings = ctx.settings
    checks = [
        _check(
            "Ocean Engine app",
            lambda: (
                settings.require("OCEANENGINE_APP_ID", "OCEANENGINE_APP_SECRET")
                or f"app {settings.oceanengine_app_id}, API {settings.oceanengine_api_base}"
            ),
        ),
        _check(
            "redirect URI",
            lambda: (
                settings.require("OCEANENGINE_REDIRECT_URI")
                or str(settings.oceanengine_redirect_uri)
            ),
        ),
        _check("database", lambda: ctx.services.store.check()),
    ]
    if not checks[-1].ok:
        return checks
    checks.append(_check("Ocean Engine reachable", lambda: _reachable(ctx)))
    checks.append(_check("token", lambda: _token(ctx)))
    if checks[-1].ok:
        checks.append(_check("accounts", lambda: _accounts(ctx)))
    checks.extend(_feishu_checks(ctx))
    return checks


def _feishu_checks(ctx: Context) -> list[Check]:
    """Feishu app, Bitable reachable and writable, fields, report chats, alert webhook."""
    settings = ctx.settings
    app = _check(
        "Feishu app",
        lambda: (
            settings.require("FEISHU_APP_ID", "FEISHU_APP_SECRET")
            or f"app {settings.feishu_app_id} at {settings.feishu_domain}"
        ),
    )
    table = _check(
        "Bitable configured",
        lambda: (
            settings.require("FEISHU_BITABLE_APP_TOKEN", "FEISHU_BITABLE_TABLE_ID")
            or f"table {settings.feishu_bitable_table_id}"
        ),
    )
    checks = [app, _check("Feishu event keys", lambda: _event_keys(settings))]
    if app.ok:
        checks.append(_check("Feishu bot", lambda: _bot_identity(settings)))
    checks.append(table)
    if app.ok and table.ok:
        from adsync.sync.bitable import BitableSink  # imports lark-oapi: only when configured

        sink = BitableSink(settings)
        fields = _check("Bitable fields", lambda: _fields(sink))
        checks.append(fields)
        if fields.ok:
            checks.append(_check("Bitable writable", lambda: _writable(sink)))
    checks.append(
        _check(
            "report chats",
            lambda: (
                settings.require("FEISHU_REPORT_CHAT_IDS")
                or f"{len(settings.feishu_report_chat_ids)} chat(s) get the daily report and alerts"
            ),
        )
    )
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
    settings = sink.settings  # type: ignore[attr-defined]
    app_token, table_id = settings.feishu_bitable_app_token, settings.feishu_bitable_table_id
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
    from adsync.sync.oceanengine import OceanEngineAPI

    status = ctx.services.tokens.status()
    if status.health == "reauthorize":
        raise AuthorizationNeeded(status.message)
    client = ctx.services.new_client()
    try:
        OceanEngineAPI(client, ctx.services.tokens).get("/open_api/2/user/info/", {})
    finally:
        client.close()
    note = "" if status.health == "ok" else f" — {status.message}"
    return f"{status.health}: valid, {len(status.account_ids)} accounts granted{note}"


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
        ctx.say(f"{'✓' if c.ok else '✗'} {c.name}: {c.detail}")
        if not c.ok and c.fix:
            ctx.say(f"    fix: {c.fix}")
    ctx.say("all checks passed" if worst == 0 else "some checks failed; fix them from the top")
    return worst
