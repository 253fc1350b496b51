"""`adsync auth url|code|list|remove` and `adsync token status|refresh`.

A team may hold several authorizations, one per Ocean Engine login (``adsync.sync.tokens``):
``token status`` and ``token refresh`` go through every one, ``auth list`` shows them with the
accounts each reaches, ``auth remove`` forgets one."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from adsync.cli.context import Context
from adsync.cli.fmt import duration, print_json, table, when
from adsync.sync.errors import AdsyncError, AuthorizationNeeded, ConfigError, StoreError
from adsync.sync.tokens import HEALTH_RANK, PENDING_LIFETIME, AuthResult, TokenStatus

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
        ctx.say("It authorizes whoever is logged in at Ocean Engine in that browser: their earlier")
        ctx.say("authorization is replaced, another login's is added beside the others.")
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
    ctx.say(f"Authorized by {result.who}. {len(result.account_ids)} accounts granted:")
    for account_id in result.account_ids:
        ctx.say(f"  {account_id}  {result.names.get(account_id, '')}".rstrip())
    if result.dropped:
        ctx.say(f"No longer granted ({len(result.dropped)}, confirmed):")
        for account_id in result.dropped:
            ctx.say(f"  {account_id}  {result.names.get(account_id, '')}".rstrip())
    if result.replaced:
        ctx.say(f"This replaces {result.who}'s previous authorization (ID {result.chain_id}).")
    elif result.others:
        ctx.say(
            f"Added beside {result.others} other authorization{'s' if result.others > 1 else ''} "
            f"(ID {result.chain_id}); `adsync auth list` shows them all."
        )
    _scope_line(ctx)
    ctx.say(f"Access token valid until {when(result.access_expires_at, tz)}, refresh token until")
    ctx.say(f"{when(result.refresh_expires_at, tz)} ({ctx.settings.timezone}); adsync renews both.")
    _announce(ctx, result)
    return 0


def _render_pending(ctx: Context, result: AuthResult) -> None:
    minutes = int(PENDING_LIFETIME.total_seconds() // 60)
    ctx.say(
        f"NOT TAKEN: this authorization by {result.who} grants {len(result.account_ids)} "
        f"accounts and drops {len(result.dropped)} of the {len(result.previous)} their "
        "authorization granted before:"
    )
    for account_id in result.dropped:
        ctx.say(f"  - {account_id}  {result.names.get(account_id, '')}".rstrip())
    for account_id in result.added:
        ctx.say(f"  + {account_id}  {result.names.get(account_id, '')}".rstrip())
    ctx.say("Ocean Engine has replaced their previous authorization with this one, so its stored")
    ctx.say("tokens no longer work. Either take it (only these accounts will sync) within")
    ctx.say(f"{minutes} minutes — run the same command again with --confirm — or authorize again")
    ctx.say("with every account ticked: `adsync auth url`.")


def _auth_json(result: AuthResult) -> dict[str, object]:
    return {
        "taken": not result.pending,
        "id": result.chain_id,
        "user_id": result.user.id if result.user else None,
        "user_name": result.user.name if result.user else None,
        "replaced": result.replaced,
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
    if not _can_announce(ctx):
        return
    try:
        from adsync.bot.announce import announce_authorization

        announce_authorization(ctx.settings, ctx.services.store, result)
    except Exception as exc:  # noqa: BLE001 - the authorization stands; the chat just missed it
        _announce_failed(exc)


def _can_announce(ctx: Context) -> bool:
    s = ctx.settings
    return bool(s.feishu_app_id and s.feishu_app_secret and s.feishu_report_chat_ids)


def _announce_failed(exc: BaseException) -> None:
    import logging

    logging.getLogger("adsync.cli").warning(
        "could not tell the report chats about the authorization (%s)", type(exc).__name__
    )


def _scope_line(ctx: Context) -> None:
    """What the grant means for syncing: 本地推 accounts found (organisations and 来客 accounts
    expanded), and granted accounts skipped."""
    from adsync.sync.discovery import account_view

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


# -- the authorizations ---------------------------------------------------------------------------


def auth_list(ctx: Context) -> int:
    """Every authorization: whose, its health, the accounts it reaches, its last refresh."""
    from adsync.sync.discovery import chain_views

    views = chain_views(ctx.services.tokens)
    if ctx.json:
        print_json(
            {"app_id": ctx.settings.oceanengine_app_id, "chains": [v.to_json() for v in views]}
        )
        return _worst_exit([v.status for v in views])
    if not views:
        ctx.say("No authorization yet: run `adsync auth url`, open the link, then `adsync auth")
        ctx.say("code CODE` (once per Ocean Engine login whose accounts adsync should sync).")
        return 3
    tz = ctx.settings.tz
    ctx.say(
        f"{len(views)} authorization{'s' if len(views) > 1 else ''} of Ocean Engine app "
        f"{ctx.settings.oceanengine_app_id} (times in {ctx.settings.timezone}):"
    )
    rows = [["ID", "AUTHORIZED BY", "HEALTH", "ACCOUNTS", "LAST REFRESH", "AUTHORIZED"]]
    for v in views:
        s = v.status
        rows.append(
            [
                s.chain_id,
                s.user_name or (s.user_id or "(not looked up yet)"),
                HEALTH_MARK[s.health],
                str(len(v.accounts)),
                when(s.last_refresh_at, tz),
                when(v.authorized_at, tz),
            ]
        )
    table(rows, ctx.out)
    for v in views:
        s = v.status
        ctx.say("")
        ctx.say(f"{s.chain_id} — {s.who}: {s.message}")
        source = "" if v.discovered else " (granted ids; `adsync sync` discovers the 本地推 ones)"
        ctx.say(f"  {len(v.accounts)} accounts{source}:")
        for account_id, name in v.accounts:
            shared = "  (also another authorization)" if account_id in v.shared else ""
            ctx.say(f"    {account_id}  {name}{shared}".rstrip())
    if any(v.status.health in ("reauthorize", "unsaved") for v in views):
        ctx.say("")
        ctx.say("A dead authorization: its user opens `adsync auth url` logged in at Ocean Engine")
        ctx.say(
            "(or an admin sends `auth` to the bot in a direct chat), or `adsync auth remove ID`."
        )
    return _worst_exit([v.status for v in views])


def auth_remove(ctx: Context) -> int:
    """Forget one authorization; asks first (or ``--yes``)."""
    tokens = ctx.services.tokens
    preview = tokens.removal(ctx.args.id)
    if not getattr(ctx.args, "yes", False):
        if ctx.json or not sys.stdin.isatty():
            raise ConfigError(
                f"removing the authorization of {preview.who} needs a confirmation; nothing was "
                "removed",
                hint=f"run `adsync auth remove {preview.chain_id} --yes` (or in a terminal, "
                "without --yes, to be asked)",
            )
        _describe_removal(ctx, preview, future=True)
        answer = input(f"Remove the authorization of {preview.who}? Type yes to remove it: ")
        if answer.strip().lower() not in ("y", "yes"):
            ctx.say("Not removed.")
            return 1
    removed = tokens.remove(ctx.args.id, removed_by="cli")
    if ctx.json:
        print_json(
            {
                "removed": removed.chain_id,
                "who": removed.who,
                "account_ids": list(removed.account_ids),
                "left_scope": list(removed.left_scope),
            }
        )
    else:
        ctx.say(f"Removed the authorization of {removed.who} (ID {removed.chain_id}).")
        _describe_removal(ctx, removed, future=False)
    if _can_announce(ctx):
        try:
            from adsync.bot.announce import announce_removal

            announce_removal(ctx.settings, ctx.services.store, removed, "cli")
        except Exception as exc:  # noqa: BLE001 - removed all the same; the chat just missed it
            _announce_failed(exc)
    return 0


def _describe_removal(ctx: Context, removed: object, *, future: bool) -> None:
    from adsync.sync.tokens import Removed

    assert isinstance(removed, Removed)
    leave = "would leave" if future else "left"
    ctx.say(f"  It reaches {len(removed.account_ids)} accounts.")
    if removed.left_scope:
        ctx.say(f"  {len(removed.left_scope)} no other authorization reaches {leave} the scope:")
        for account_id in removed.left_scope:
            ctx.say(f"    {account_id}  {removed.names.get(account_id, '')}".rstrip())
    else:
        ctx.say(
            "  Every one of them is reached by another authorization: nothing leaves the scope."
        )
    ctx.say("  Rows already synced stay in the Bitable and the local copy. Ocean Engine keeps the")
    ctx.say("  grant until its user removes the app's authorization there.")


def _worst_exit(statuses: list[TokenStatus]) -> int:
    if not statuses:
        return 3
    return 3 if any(s.health in ("reauthorize", "unsaved") for s in statuses) else 0


# -- token status / refresh -----------------------------------------------------------------------


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
    statuses = tokens.check_all() if getattr(ctx.args, "check", False) else tokens.statuses()
    overall = _overall(statuses) or tokens.status()
    if ctx.json:
        print_json({**overall.to_json(), "chains": [s.to_json() for s in statuses]})
    else:
        for n, status in enumerate(statuses or [overall]):
            if n:
                ctx.say("")
            render_status(ctx, status, several=len(statuses) > 1)
    if any(s.health in ("reauthorize", "unsaved") for s in statuses or [overall]):
        return 3
    return 1 if any(s.check_failed for s in statuses) else 0


def _overall(statuses: list[TokenStatus]) -> TokenStatus | None:
    """The chain that needs a person first (what the top of `--json` describes)."""
    return min(statuses, key=lambda s: HEALTH_RANK.get(s.health, 0)) if statuses else None


def _waiting_rescue(ctx: Context) -> Path | None:
    from adsync.sync import rescue

    app_id = ctx.settings.oceanengine_app_id
    if not app_id:
        return None
    found = rescue.waiting(rescue.directory(ctx.settings.db_url, ctx.settings.data_dir), app_id)
    return found[0] if found else None


def token_refresh(ctx: Context) -> int:
    tokens = ctx.services.tokens
    chains = tokens.chains()
    if len(chains) <= 1:
        tokens.refresh(reason="adsync token refresh")  # its failure is the command's error
        status = tokens.status()
        if ctx.json:
            print_json({**status.to_json(), "chains": [status.to_json()]})
        else:
            ctx.say("Refreshed.")
            render_status(ctx, status)
        return 0
    # Several authorizations: each is refreshed on its own; one failing stops no other.
    outcomes = tokens.refresh_all(reason="adsync token refresh")
    statuses = {s.chain_id: s for s in tokens.statuses()}
    failures = [(chain, exc) for chain, exc in outcomes if exc is not None]
    link = ""
    if any(isinstance(exc, AuthorizationNeeded) for _c, exc in failures):
        try:
            link = tokens.authorization_url(requested_by="cli")
        except AdsyncError:
            link = ""
    if ctx.json:
        print_json(
            {
                "chains": [
                    {
                        **(statuses[c.chain_id].to_json() if c.chain_id in statuses else {}),
                        "refreshed": exc is None,
                        "error": exc.message if exc is not None else None,
                    }
                    for c, exc in outcomes
                ],
                **({"auth_url": link} if link else {}),
            }
        )
    else:
        for n, (chain, exc) in enumerate(outcomes):
            if n:
                ctx.say("")
            ctx.say(f"{'Refreshed' if exc is None else 'NOT refreshed'}: {chain.who}")
            if exc is not None:
                ctx.say(f"  {exc.message}")
            if chain.chain_id in statuses:
                render_status(ctx, statuses[chain.chain_id], several=True)
        if link:
            ctx.say("")
            ctx.say("To authorize again, open this link logged in as that Ocean Engine user:")
            ctx.say(f"  {link}")
    return max((exc.exit_code for _c, exc in failures), default=0)


def render_status(ctx: Context, status: TokenStatus, several: bool = False) -> None:
    tz = ctx.settings.tz
    whose = f" of {status.who}" if several and status.chain_id else ""
    ctx.say(f"Ocean Engine token{whose} (app {status.app_id or '?'}): {HEALTH_MARK[status.health]}")
    ctx.say(f"  {status.message}")
    if status.check_failed:
        ctx.say(f"  could not ask the platform now: {status.check_failed}")
    if status.chain_id and not several:
        ctx.say(f"  authorized by  {status.who}  (ID {status.chain_id})")
    elif status.chain_id:
        ctx.say(f"  ID             {status.chain_id}")
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
