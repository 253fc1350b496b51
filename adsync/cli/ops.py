"""`adsync sandbox` and `adsync doctor`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from adsync.cli.context import Context
from adsync.cli.fmt import print_json
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
    return checks


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
