"""The Flask app: ``POST /feishu/events``, ``GET /oauth/oceanengine/callback``, ``GET /healthz``.

Events go through lark-oapi's ``EventDispatcherHandler`` (decryption, verification token,
``X-Lark-Signature``) after ``gate`` has screened the body: the endpoint exists only with
``FEISHU_ENCRYPT_KEY`` set, every body that is not a signed, encrypted event is refused with a
fixed 4xx before lark-oapi decrypts anything, and lark-oapi's own non-200 answers (it says 500
for everything, which Feishu would retry for hours) become the same fixed 4xx reasons — never
exception text. ``intake`` decides which authenticated events are taken (addressed to the bot,
fresh button presses, the real chat type). Our handlers only filter and spool (``worker``); an
event that could not be written to the spool (a full or read-only disk) was not kept, so it is
not acknowledged either: 503, and Feishu delivers it again.

Gunicorn: ``gunicorn -c python:adsync.bot.gunicorn_conf 'adsync.bot.app:create_app()'`` (what
the Procfile runs; ``adsync serve`` reads the same settings).
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable
from typing import Any

import lark_oapi as lark
from flask import Flask, Response, g, has_request_context, jsonify, request
from lark_oapi.adapter.flask import parse_req
from lark_oapi.api.im.v1 import (
    P2ImChatMemberBotAddedV1,
    P2ImChatMemberBotDeletedV1,
    P2ImMessageReceiveV1,
)
from lark_oapi.event.callback.model.p2_card_action_trigger import (
    P2CardActionTrigger,
    P2CardActionTriggerResponse,
)
from werkzeug.exceptions import RequestEntityTooLarge

from adsync.bot import gate
from adsync.bot.actions import Actions
from adsync.bot.intake import Intake
from adsync.bot.messenger import Messenger
from adsync.bot.worker import Bot, Incoming, NotStored, message_text
from adsync.sync.config import Settings, load_settings
from adsync.sync.errors import AdsyncError

log = logging.getLogger("adsync.app")

# The event was authentic but could not be written down: not acknowledged, delivered again.
NOT_STORED = gate.Refusal(503, "event not stored; deliver it again")
MAX_BODY = 1024 * 1024  # Feishu events are a few KB; anything near this is not from Feishu


def build_bot(settings: Settings) -> Bot:
    from adsync.sync.recovery import recover_after_crash
    from adsync.sync.services import open_services

    services = open_services(settings)
    recover_after_crash(services.store)  # runs and leases a killed predecessor left behind
    return Bot(services.store, Actions(services), Messenger(settings))


def stop_bot(bot: Bot) -> None:
    """The mover's last pass, then the connections: for a clean exit."""
    bot.stop_mover()
    bot.actions.services.close()


def build_dispatcher(
    settings: Settings, bot: Bot, *, for_ws: bool = False, intake: Intake | None = None
) -> Any:
    """lark-oapi's dispatcher with a handler for every event type the app subscribes to, so
    none is answered 500 (and retried for hours). Over the long connection both keys must be
    empty strings (the platform neither encrypts nor signs there)."""
    encrypt = (
        "" if for_ws or not settings.feishu_encrypt_key else settings.feishu_encrypt_key.reveal()
    )
    token = (
        ""
        if for_ws or not settings.feishu_verification_token
        else settings.feishu_verification_token.reveal()
    )
    if intake is None:
        intake = Intake.for_settings(settings)
        intake.identity.prefetch()  # the bot's open_id, before the first group message
    handlers = EventHandlers(bot, intake, None if for_ws else _signed_timestamp)
    return (
        lark.EventDispatcherHandler.builder(encrypt, token)
        .register_p2_im_message_receive_v1(handlers.message)
        .register_p2_card_action_trigger(handlers.card_action)
        .register_p2_im_chat_member_bot_added_v1(handlers.bot_added)
        .register_p2_im_chat_member_bot_deleted_v1(handlers.bot_removed)
        .register_p2_im_message_message_read_v1(handlers.ignore)
        .register_p2_im_message_recalled_v1(handlers.ignore)
        .register_p2_im_chat_access_event_bot_p2p_chat_entered_v1(handlers.ignore)
        .register_p2_application_bot_menu_v6(handlers.ignore)
        .build()
    )


def _not_stored() -> None:
    """Mark the webhook request whose event could not be spooled (the view answers 503)."""
    if has_request_context():
        g.adsync_not_stored = True


def _signed_timestamp() -> str | None:
    """The webhook request's ``X-Lark-Request-Timestamp`` (covered by the signature)."""
    return request.headers.get(gate.TIMESTAMP) if has_request_context() else None


class EventHandlers:
    """Adapters from lark-oapi's event objects to the Bot. Never raise, never block.

    ``sent_at`` gives the webhook's signed request timestamp; over the long connection (no
    headers) a callback is dated by its event header's ``create_time``."""

    def __init__(
        self, bot: Bot, intake: Intake, sent_at: Callable[[], str | None] | None = None
    ) -> None:
        self.bot = bot
        self.intake = intake
        self.sent_at = sent_at

    def message(self, data: P2ImMessageReceiveV1) -> None:
        try:
            event = data.event
            msg = event.message
            sender = event.sender.sender_id if event.sender else None
            self.intake.chats.remember(msg.chat_id or "", msg.chat_type or "")
            incoming = Incoming(
                event_id=data.header.event_id if data.header else "",
                message_id=msg.message_id or "",
                chat_id=msg.chat_id or "",
                chat_type=msg.chat_type or "group",
                user_id=(sender.open_id if sender else "") or "",
                text=message_text(msg.message_type or "", msg.content or "", msg.mentions),
                create_time_ms=int(msg.create_time or 0),
                mentioned=self.intake.addressed(msg.chat_type or "group", msg.mentions),
            )
            outcome = self.bot.on_message(incoming)
            log.debug("message %s: %s", incoming.message_id, outcome)
        except NotStored:
            _not_stored()
            raise
        except Exception:  # noqa: BLE001 - a 500 here would make Feishu retry for hours
            log.exception("could not take a message event")

    def card_action(self, data: P2CardActionTrigger) -> P2CardActionTriggerResponse:
        try:
            event = data.event
            header = data.header
            value = dict(event.action.value or {}) if event.action else {}
            sent_at = (self.sent_at() if self.sent_at else None) or (
                header.create_time if header else None
            )
            event_id = (header.event_id if header else "") or ""
            refusal = self.intake.card_action_refusal(event_id, sent_at, str(value.get("lang")))
            if refusal is not None:
                return P2CardActionTriggerResponse(refusal)
            chat_id = (event.context.open_chat_id if event.context else "") or ""
            answer = self.bot.on_card_action(
                event_id=event_id,
                value=value,
                user_id=(event.operator.open_id if event.operator else "") or "",
                chat_id=chat_id,
                message_id=(event.context.open_message_id if event.context else "") or "",
                chat_type=self.intake.chats.kind(chat_id),
            )
        except Exception:  # noqa: BLE001
            log.exception("could not take a card action")
            answer = {"toast": {"type": "error", "content": "adsync could not take that"}}
        return P2CardActionTriggerResponse(answer)

    def bot_added(self, data: P2ImChatMemberBotAddedV1) -> None:
        try:
            self.bot.on_bot_added(data.header.event_id, data.event.chat_id or "")
        except NotStored:
            _not_stored()
            raise
        except Exception:  # noqa: BLE001
            log.exception("could not take a bot-added event")

    def bot_removed(self, data: P2ImChatMemberBotDeletedV1) -> None:
        try:
            self.bot.on_bot_removed(data.header.event_id, data.event.chat_id or "")
        except Exception:  # noqa: BLE001
            log.exception("could not take a bot-removed event")

    @staticmethod
    def ignore(_data: Any) -> None:
        return None


def create_app(
    settings: Settings | None = None, bot: Bot | None = None, *, webhook: bool = True
) -> Flask:
    """The app. ``webhook=False`` (``adsync serve --ws``: events come over the long connection)
    leaves ``/feishu/events`` out; with it, the endpoint needs ``FEISHU_ENCRYPT_KEY`` and
    refuses every request without it (503; ``/healthz`` names the setting)."""
    settings = settings or load_settings()
    if bot is None:
        settings.require("FEISHU_APP_ID", "FEISHU_APP_SECRET")
        bot = build_bot(settings)
    app = Flask("adsync")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["adsync_bot"] = bot
    bot.start_mover()  # spooled events into the database queue, as soon as it takes them
    key_problem = gate.webhook_key_problem(settings) if webhook else None
    if webhook:
        _events_endpoint(app, settings, bot, key_problem)

    @app.get("/healthz")
    def healthz() -> Any:
        # Public: says ok or not and names the failing check, nothing else (no URL, path, host).
        checks: dict[str, str] = {}
        try:
            bot.store.check()
            checks["database"] = "ok"
        except AdsyncError as exc:
            log.error("health check: the database failed: %s", exc.message)
            checks["database"] = "failed"
        else:
            checks["commands"] = _commands_health(bot)
        missing = [
            name
            for name, value in (
                ("FEISHU_APP_ID", settings.feishu_app_id),
                ("FEISHU_APP_SECRET", settings.feishu_app_secret),
                ("OCEANENGINE_APP_ID", settings.oceanengine_app_id),
                ("FEISHU_BITABLE_APP_TOKEN", settings.feishu_bitable_app_token),
                ("FEISHU_ENCRYPT_KEY", settings.feishu_encrypt_key if webhook else "n/a"),
            )
            if not value
        ]
        checks["configuration"] = "ok" if not missing else f"missing: {', '.join(missing)}"
        ok = all(v == "ok" for v in checks.values())
        return jsonify({"ok": ok, **checks}), (200 if ok else 503)

    @app.get("/oauth/oceanengine/callback")
    def oauth_callback() -> Any:
        return _finish_authorization(bot, settings)

    @app.post("/oauth/oceanengine/confirm")
    def oauth_confirm() -> Any:
        return _decide_authorization(bot, settings)

    return app


def _commands_health(bot: Bot) -> str:
    """``stalled`` when chat commands wait and nothing takes them (only ``web`` deployed, or
    the worker died): the acknowledgements go on, so without this nobody would notice."""
    assert bot.queue is not None
    try:
        backlog = bot.queue.backlog()
    except AdsyncError as exc:
        log.error("health check: the command queue could not be read: %s", exc.message)
        return "failed"
    if not backlog.stalled():
        return "ok"
    log.error(
        "health check: %d chat command(s) waiting, the oldest for %d min: no worker is taking "
        "them; start `adsync worker` (the Procfile's worker) or run `adsync serve`",
        backlog.waiting,
        backlog.age().total_seconds() // 60,
    )
    return "stalled"


def _events_endpoint(
    app: Flask, settings: Settings, bot: Bot, key_problem: AdsyncError | None
) -> None:
    refusals = app.extensions["adsync_refusals"] = gate.RefusalLog(log)
    gate.quiet_dispatcher_tracebacks()
    if key_problem is not None:
        log.error("%s — %s", key_problem.message, key_problem.hint)

        @app.post("/feishu/events")
        def events_not_configured() -> Any:
            return _refuse(refusals, gate.NOT_CONFIGURED)

        return

    assert settings.feishu_encrypt_key is not None
    encrypt_key = settings.feishu_encrypt_key.reveal()
    intake = app.extensions["adsync_intake"] = Intake.for_settings(settings)
    intake.identity.prefetch()  # the bot's open_id, before the first group message
    dispatcher = build_dispatcher(settings, bot, intake=intake)

    @app.post("/feishu/events")
    def events() -> Any:
        try:
            raw = request.get_data(cache=True)  # the signature covers the raw bytes
        except RequestEntityTooLarge:
            return _refuse(refusals, gate.TOO_LARGE)
        refusal, signed = gate.screen(raw, request.headers, encrypt_key)
        if refusal is not None:
            return _refuse(refusals, refusal)
        # The spool's mover waits while requests are being acknowledged (see spool.AckGate).
        with bot.acknowledging():
            answer = dispatcher.do(parse_req())
        if g.get("adsync_not_stored"):
            return _refuse(refusals, NOT_STORED)
        if answer.status_code == 200:
            return Response(answer.content, 200, content_type="application/json; charset=utf-8")
        reason = _reason(answer.content)
        if signed and "processor not found" in reason:
            # Signed and well-formed, just a type we don't subscribe to: acknowledge it.
            log.warning("event of an unsubscribed type acknowledged: %s", reason[:100])
            return jsonify({"msg": "ignored"})
        return _refuse(refusals, gate.dispatcher_refusal(reason, signed))


def _finish_authorization(bot: Bot, settings: Settings) -> Any:
    """The redirect after someone consented at Ocean Engine. The ``state`` must have been
    issued here, within 15 minutes, to an admin (or the operator), and not used yet; the grant
    is then judged (``TokenManager.authorize``): 0 accounts refused, one that drops accounts
    shown for confirmation, anything else taken. The report chats are told who did what."""
    from adsync.bot.announce import announce_authorization, announce_refusal
    from adsync.sync.errors import AuthorizationNeeded, GrantRefused
    from adsync.sync.tokens import StateRefused

    code = request.args.get("auth_code", "").strip()
    state = request.args.get("state", "").strip()
    tokens = bot.actions.services.tokens
    store = bot.actions.services.store
    if not code or not state:
        return _page(400, "Missing auth_code or state", "Open the authorization link again.")
    try:
        requested_by = tokens.consume_state(state)
    except StateRefused as exc:
        log.warning("authorization callback refused: %s", exc.reason)
        status = 403 if exc.reason == "not_admin" else 400
        return _page(status, "This authorization link cannot be used", exc.public_text())
    try:
        result = tokens.authorize(code, requested_by=requested_by)
    except GrantRefused as exc:
        _tell(lambda: announce_refusal(settings, store, requested_by, bot.messenger))
        return _page(400, "Authorization refused", exc.public_text())
    except AuthorizationNeeded as exc:
        return _page(400, "Authorization failed", exc.message)
    except AdsyncError as exc:
        log.error("authorization callback failed: %s", exc.message)
        return _page(503, "Authorization failed", exc.public_text())
    if result.pending:
        return _confirmation_page(result)
    _tell(lambda: announce_authorization(settings, store, result, bot.messenger))
    if result.replaced:
        how = f"This replaces {result.who}'s previous authorization."
    elif result.others:
        how = (
            f"Added beside the {result.others} other authorization"
            f"{'s' if result.others > 1 else ''}: each Ocean Engine login's accounts sync."
        )
    else:
        how = ""
    text = f"{result.who} granted {len(result.account_ids)} accounts. {how}".strip()
    return _page(200, "adsync is authorized", f"{text} You can close this page.")


def _decide_authorization(bot: Bot, settings: Settings) -> Any:
    """The confirmation page's form: take or cancel one pending grant, once."""
    from adsync.bot.announce import announce_authorization
    from adsync.sync.errors import GrantRefused

    pending_id = request.form.get("pending", "")
    decision = request.form.get("decision", "")
    if not pending_id or decision not in ("take", "cancel"):
        return _page(400, "Not a valid confirmation", "Open the authorization link again.")
    tokens = bot.actions.services.tokens
    try:
        result = tokens.decide(pending_id, decision)
    except GrantRefused as exc:
        return _page(400, "This confirmation cannot be used", exc.public_text())
    except AdsyncError as exc:
        log.error("authorization confirmation failed: %s", exc.message)
        return _page(503, "Confirmation failed", exc.public_text())
    store = bot.actions.services.store
    _tell(lambda: announce_authorization(settings, store, result, bot.messenger))
    if result.cancelled:
        return _page(
            200,
            "Cancelled: the new authorization was not taken",
            "Ocean Engine replaced the previous authorization when you consented, so adsync "
            "cannot sync until an admin authorizes again with every account ticked "
            "(ask the bot for `auth` in a direct chat, or run `adsync auth url`).",
        )
    return _page(
        200,
        "adsync is authorized",
        f"{len(result.account_ids)} accounts granted; {len(result.dropped)} no longer synced. "
        "You can close this page.",
    )


def _tell(fn: Any) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the page still answers; the chat missed it
        log.error("could not tell the report chats about an authorization (%s)", type(exc).__name__)


def _confirmation_page(result: Any) -> Response:
    """What the new grant would change, and a form bound to that pending grant."""

    def items(ids: Any) -> str:
        return "".join(
            f"<li>{html.escape(result.names.get(i) or '')} <code>{html.escape(i)}</code></li>"
            for i in ids
        )

    minutes = 10
    if result.pending_until is not None:
        from adsync.sync.store import utcnow

        minutes = max(int((result.pending_until - utcnow()).total_seconds() // 60), 1)
    pending = html.escape(result.pending_id)
    body = (
        "<!doctype html><meta charset=utf-8><title>adsync: confirm the authorization</title>"
        "<h1>This authorization drops accounts</h1>"
        f"<p>{html.escape(result.who)} authorized again. It grants {len(result.account_ids)} "
        f"accounts; {len(result.dropped)} of the {len(result.previous)} their previous "
        "authorization granted would no longer be synced through it:</p>"
        f"<ul>{items(result.dropped)}</ul>"
        + (f"<p>New:</p><ul>{items(result.added)}</ul>" if result.added else "")
        + "<p>Ocean Engine has already replaced their previous authorization with this one "
        "(重新授权会覆盖前一次授权), so its stored tokens no longer work (other logins' "
        "authorizations are not affected). Take it to sync only these "
        "accounts, or cancel and authorize again with every account ticked. This page works "
        f"once, for {minutes} more minutes.</p>"
        '<form method=post action="confirm">'
        f'<input type=hidden name=pending value="{pending}">'
        "<button name=decision value=take>Take it: sync only these accounts</button> "
        "<button name=decision value=cancel>Cancel</button></form>"
    )
    return _secure(Response(body, 200, content_type="text/html; charset=utf-8"))


def _page(status: int, title: str, text: str) -> Response:
    body = (
        "<!doctype html><meta charset=utf-8><title>adsync</title>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    )
    return _secure(Response(body, status, content_type="text/html; charset=utf-8"))


def _secure(response: Response) -> Response:
    """The authorization pages: never cached, never framed (the confirm button cannot be
    clickjacked), no referrer (the callback URL carries the code and state), no scripts."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return response


def _reason(content: bytes | None) -> str:
    try:
        return str(json.loads(content or b"{}").get("msg", ""))[:200]
    except ValueError:
        return "refused"


def _refuse(refusals: gate.RefusalLog, refusal: gate.Refusal) -> Response:
    refusals.refused(refusal, request.remote_addr or "")
    return Response(
        json.dumps({"msg": refusal.reason}),
        refusal.status,
        content_type="application/json; charset=utf-8",
    )
