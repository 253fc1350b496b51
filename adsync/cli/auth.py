"""`adsync auth url|code` and `adsync token status|refresh`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from adsync.cli.context import Context
from adsync.cli.fmt import duration, print_json, when
from adsync.sync.errors import ConfigError, StoreError
from adsync.sync.tokens import PENDING_LIFETIME, AuthResult, TokenStatus

HEALTH_MARK = {
    "ok": "OK",
    "expiring": "EXPIRING",
    "reauthorize": "RE-AUTHORIZE",
    "unsaved": "REFRESHED BUT NOT SAVED",
}


def auth_url(ctx: Context) -> int:
    url = ctx.services.tokens.authorization_url(requested_by="cli")
    if ctx.json:
        print_json({"auth_url": url})
    else:
        ctx.say("Open this link within 15 minutes, tick every local-push account, and confirm:")
        ctx.say(f"  {url}")
        ctx.say("The callback finishes by itself when `adsync serve` runs at the redirect URI;")
        ctx.say("otherwise copy the address bar's URL and run `adsync auth code 'URL'`.")
    return 0


def parse_code(text: str) -> tuple[str, str | None]:
    """(auth_code, state) from what was pasted: the whole redirect URL (or its query), whose
    ``state`` is then checked like the callback does, or a bare code (no state)."""
    text = text.strip()
    if "auth_code=" not in text and "://" not in text:
        return text, None
    parts = urlsplit(text if "://" in text else f"x://x/?{text.split('?', 1)[-1]}")
    query = parse_qs(parts.query) or parse_qs(parts.fragment)
    code = (query.get("auth_code") or [""])[0].strip()
    if not code:
        raise ConfigError(
            "the pasted URL has no auth_code",
            hint="paste the address bar's URL after authorizing (it contains auth_code=…), "
            "or just the code",
        )
    state = (query.get("state") or [None])[0]
    return code, state


def auth_code(ctx: Context) -> int:
    tokens = ctx.services.tokens
    code, state = parse_code(ctx.args.code)
    confirm = bool(getattr(ctx.args, "confirm", False))
    requested_by = "cli"
    # A pasted URL's state follows the callback's rules (issued here, unused, 15 minutes, by an
    # admin) — except when --confirm resumes the grant this very code produced a moment ago.
    if state is not None and not (confirm and tokens.has_pending_code(code)):
        requested_by = tokens.consume_state(state)
    result = tokens.authorize(code, requested_by=requested_by, confirm=confirm)
    if ctx.json:
        print_json(_auth_json(result))
        return 3 if result.pending else 0
    if result.pending:
        _render_pending(ctx, result)
        return 3
    tz = ctx.settings.tz
    ctx.say(f"Authorized. {len(result.account_ids)} accounts granted:")
    for account_id in result.account_ids:
        ctx.say(f"  {account_id}  {result.names.get(account_id, '')}".rstrip())
    if result.dropped:
        ctx.say(f"No longer granted ({len(result.dropped)}, confirmed):")
        for account_id in result.dropped:
            ctx.say(f"  {account_id}  {result.names.get(account_id, '')}".rstrip())
    _scope_line(ctx)
    ctx.say(f"Access token valid until {when(result.access_expires_at, tz)}, refresh token until")
    ctx.say(f"{when(result.refresh_expires_at, tz)} ({ctx.settings.timezone}); adsync renews both.")
    _announce(ctx, result)
    return 0


def _render_pending(ctx: Context, result: AuthResult) -> None:
    minutes = int(PENDING_LIFETIME.total_seconds() // 60)
    ctx.say(
        f"NOT TAKEN: this authorization grants {len(result.account_ids)} accounts and drops "
        f"{len(result.dropped)} of the {len(result.previous)} granted before:"
    )
    for account_id in result.dropped:
        ctx.say(f"  - {account_id}  {result.names.get(account_id, '')}".rstrip())
    for account_id in result.added:
        ctx.say(f"  + {account_id}  {result.names.get(account_id, '')}".rstrip())
    ctx.say("Ocean Engine has replaced the previous authorization with this one, so the stored")
    ctx.say("tokens no longer work. Either take it (only these accounts will sync) within")
    ctx.say(f"{minutes} minutes — run the same command again with --confirm — or authorize again")
    ctx.say("with every account ticked: `adsync auth url`.")


def _auth_json(result: AuthResult) -> dict[str, object]:
    return {
        "taken": not result.pending,
        "account_ids": list(result.account_ids),
        "names": result.names,
        "previous_account_ids": list(result.previous),
        "dropped": list(result.dropped),
        "added": list(result.added),
        "access_expires_at": result.access_expires_at.isoformat(),
        "refresh_expires_at": result.refresh_expires_at.isoformat(),
    }


def _announce(ctx: Context, result: AuthResult) -> None:
    """Tell the report chats who authorized what (best effort: the CLI's work is done)."""
    settings = ctx.settings
    if not (
        settings.feishu_app_id and settings.feishu_app_secret and settings.feishu_report_chat_ids
    ):
        return
    try:
        from adsync.bot.announce import announce_authorization

        announce_authorization(settings, ctx.services.store, result)
    except Exception as exc:  # noqa: BLE001 - the authorization stands; the chat just missed it
        import logging

        logging.getLogger("adsync.cli").warning(
            "could not tell the report chats about the authorization (%s)", type(exc).__name__
        )


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
    try:
        tokens = ctx.services.tokens
    except StoreError as exc:
        # The database is unreachable; a refreshed pair waiting on this machine is the one
        # thing worth saying on top of that (it is the only live pair).
        waiting = _waiting_rescue(ctx)
        if waiting is None:
            raise
        if ctx.json:
            print_json({"health": "unsaved", "message": exc.message, "rescue_file": str(waiting)})
        else:
            ctx.say(
                f"Ocean Engine token (app {ctx.settings.oceanengine_app_id}): {HEALTH_MARK['unsaved']}"
            )
            ctx.say(f"  refreshed but not saved: the new pair is kept in {waiting} (owner-only)")
            ctx.say(f"  and saved by the next adsync that reaches the database. {exc.message}")
            ctx.say(f"  → {exc.hint}")
        return 3
    status = tokens.check() if getattr(ctx.args, "check", False) else tokens.status()
    if ctx.json:
        print_json(status.to_json())
    else:
        render_status(ctx, status)
    return 3 if status.health in ("reauthorize", "unsaved") else 0


def _waiting_rescue(ctx: Context) -> Path | None:
    from adsync.sync import rescue

    app_id = ctx.settings.oceanengine_app_id
    if not app_id:
        return None
    path = rescue.rescue_path(rescue.directory(ctx.settings.db_url, ctx.settings.data_dir), app_id)
    return path if path.is_file() else None


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
    if not status.authorized or status.access_expires_at is None:
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
    confirmed = when(status.last_confirmed_at, tz)
    if status.checked:
        confirmed += "  (just now: the platform accepted the token)"
    ctx.say(f"  confirmed live {confirmed}")
    if status.last_failure_at is not None:
        ctx.say(
            f"  last failure   {when(status.last_failure_at, tz)}  {status.last_failure_reason}"
        )
    ctx.say(
        f"  accounts       {len(status.account_ids)} granted   (times in {ctx.settings.timezone})"
    )
