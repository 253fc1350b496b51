"""`adsync auth url|code` and `adsync token status|refresh`."""

from __future__ import annotations

from adsync.cli.context import Context
from adsync.cli.fmt import duration, print_json, when
from adsync.sync.tokens import TokenStatus

HEALTH_MARK = {"ok": "OK", "expiring": "EXPIRING", "reauthorize": "RE-AUTHORIZE"}


def auth_url(ctx: Context) -> int:
    url = ctx.services.tokens.authorization_url(requested_by="cli")
    if ctx.json:
        print_json({"auth_url": url})
    else:
        ctx.say("Open this link, tick every local-push account, and confirm:")
        ctx.say(f"  {url}")
        ctx.say("The callback finishes by itself when `adsync serve` runs at the redirect URI;")
        ctx.say("otherwise copy auth_code from the address bar and run `adsync auth code CODE`.")
    return 0


def auth_code(ctx: Context) -> int:
    result = ctx.services.tokens.authorize(ctx.args.code)
    if ctx.json:
        print_json(
            {
                "account_ids": list(result.account_ids),
                "names": result.names,
                "access_expires_at": result.access_expires_at.isoformat(),
                "refresh_expires_at": result.refresh_expires_at.isoformat(),
            }
        )
        return 0
    tz = ctx.settings.tz
    ctx.say(f"Authorized. {len(result.account_ids)} accounts granted:")
    for account_id in result.account_ids:
        ctx.say(f"  {account_id}  {result.names.get(account_id, '')}".rstrip())
    _scope_line(ctx)
    ctx.say(f"Access token valid until {when(result.access_expires_at, tz)}, refresh token until")
    ctx.say(f"{when(result.refresh_expires_at, tz)} ({ctx.settings.timezone}); adsync renews both.")
    return 0


def _scope_line(ctx: Context) -> None:
    """What the grant means for syncing: 本地推 accounts found (organisations and 来客 accounts
    expanded), and granted accounts skipped."""
    from adsync.sync.discovery import account_view
    from adsync.sync.errors import AdsyncError

    services = ctx.services
    try:
        view = account_view(ctx.settings, services.store, services.tokens.granted_account_ids())
    except AdsyncError as exc:
        ctx.say(f"→ {exc.message}")
        ctx.say(f"  {exc.hint}")
        return
    if view.empty is not None:
        ctx.say(f"→ {view.empty.message}")
        ctx.say(f"  {view.empty.hint}")
        return
    skipped = f"; {len(view.skipped)} skipped" if view.skipped else ""
    ctx.say(
        f"→ {len(view.accounts)} accounts in scope (from {view.origin_text}){skipped}: "
        "`adsync accounts` lists them, `adsync accounts --check` tries each"
    )


def token_status(ctx: Context) -> int:
    status = ctx.services.tokens.status()
    if ctx.json:
        print_json(status.to_json())
    else:
        render_status(ctx, status)
    return 3 if status.health == "reauthorize" else 0


def token_refresh(ctx: Context) -> int:
    ctx.services.tokens.refresh(reason="adsync token refresh")
    status = ctx.services.tokens.status()
    if ctx.json:
        print_json(status.to_json())
    else:
        ctx.say("Refreshed.")
        render_status(ctx, status)
    return 0


def render_status(ctx: Context, status: TokenStatus) -> None:
    tz = ctx.settings.tz
    ctx.say(f"Ocean Engine token (app {status.app_id or '?'}): {HEALTH_MARK[status.health]}")
    ctx.say(f"  {status.message}")
    if not status.authorized:
        return
    ctx.say(
        f"  access token   until {when(status.access_expires_at, tz)}  "
        f"({duration(status.access_left_s)} left)  [{status.access_prefix}]"
    )
    ctx.say(
        f"  refresh token  until {when(status.refresh_expires_at, tz)}  "
        f"({duration(status.refresh_left_s)} left)"
    )
    ctx.say(f"  last refresh   {when(status.last_refresh_at, tz)}")
    if status.last_failure_at is not None:
        ctx.say(
            f"  last failure   {when(status.last_failure_at, tz)}  {status.last_failure_reason}"
        )
    ctx.say(
        f"  accounts       {len(status.account_ids)} granted   (times in {ctx.settings.timezone})"
    )
