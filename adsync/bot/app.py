"""The Flask app: ``POST /feishu/events``, ``GET /oauth/oceanengine/callback``, ``GET /healthz``.

Events go through lark-oapi's ``EventDispatcherHandler`` (decryption, verification token,
``X-Lark-Signature``). Its own answer to a bad request is HTTP 500 — which Feishu would retry
for seven hours — so the view maps every refusal to a 4xx: our handlers never raise (they only
claim and queue), so a 500 from the dispatcher can only mean the request itself was refused.

Gunicorn: ``gunicorn 'adsync.bot.app:create_app()'`` (what the Procfile runs).
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

import lark_oapi as lark
from flask import Flask, Response, jsonify, request
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

from adsync.bot.actions import Actions
from adsync.bot.messenger import Messenger, message_uuid
from adsync.bot.worker import Bot, Incoming, message_text
from adsync.sync.config import Settings, load_settings
from adsync.sync.errors import AdsyncError

log = logging.getLogger("adsync.app")

MAX_BODY = 1024 * 1024  # Feishu events are a few KB; anything near this is not from Feishu


def build_bot(settings: Settings) -> Bot:
    from adsync.sync.recovery import recover_after_crash
    from adsync.sync.services import open_services

    services = open_services(settings)
    recover_after_crash(services.store)  # runs and leases a killed predecessor left behind
    return Bot(services.store, Actions(services), Messenger(settings))


def build_dispatcher(settings: Settings, bot: Bot, *, for_ws: bool = False) -> Any:
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
    handlers = EventHandlers(bot)
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


class EventHandlers:
    """Adapters from lark-oapi's event objects to the Bot. Never raise, never block."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    def message(self, data: P2ImMessageReceiveV1) -> None:
        try:
            event = data.event
            msg = event.message
            sender = event.sender.sender_id if event.sender else None
            incoming = Incoming(
                event_id=data.header.event_id if data.header else "",
                message_id=msg.message_id or "",
                chat_id=msg.chat_id or "",
                chat_type=msg.chat_type or "group",
                user_id=(sender.open_id if sender else "") or "",
                text=message_text(msg.message_type or "", msg.content or "", msg.mentions),
                create_time_ms=int(msg.create_time or 0),
                mentioned=bool(msg.mentions),
            )
            outcome = self.bot.on_message(incoming)
            log.debug("message %s: %s", incoming.message_id, outcome)
        except Exception:  # noqa: BLE001 - a 500 here would make Feishu retry for hours
            log.exception("could not take a message event")

    def card_action(self, data: P2CardActionTrigger) -> P2CardActionTriggerResponse:
        try:
            event = data.event
            answer = self.bot.on_card_action(
                event_id=data.header.event_id if data.header else "",
                value=dict(event.action.value or {}) if event.action else {},
                user_id=(event.operator.open_id if event.operator else "") or "",
                chat_id=(event.context.open_chat_id if event.context else "") or "",
                message_id=(event.context.open_message_id if event.context else "") or "",
            )
        except Exception:  # noqa: BLE001
            log.exception("could not take a card action")
            answer = {"toast": {"type": "error", "content": "adsync could not take that"}}
        return P2CardActionTriggerResponse(answer)

    def bot_added(self, data: P2ImChatMemberBotAddedV1) -> None:
        try:
            self.bot.on_bot_added(data.header.event_id, data.event.chat_id or "")
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


def create_app(settings: Settings | None = None, bot: Bot | None = None) -> Flask:
    settings = settings or load_settings()
    if bot is None:
        settings.require("FEISHU_APP_ID", "FEISHU_APP_SECRET")
        bot = build_bot(settings)
    dispatcher = build_dispatcher(settings, bot)
    app = Flask("adsync")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["adsync_bot"] = bot

    @app.post("/feishu/events")
    def events() -> Any:
        raw = request.get_data(cache=True)  # the signature covers the raw bytes
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return _refuse(400, "the body is not JSON")
        if not isinstance(body, dict):
            return _refuse(400, "the body is not a JSON object")
        # Queued commands wait while requests are being acknowledged (see ChatLanes).
        with bot.lanes.acknowledging():
            answer = dispatcher.do(parse_req())
        if answer.status_code == 200:
            return Response(answer.content, 200, content_type="application/json; charset=utf-8")
        reason = _reason(answer.content)
        if "processor not found" in reason:
            # Signed and well-formed, just a type we don't subscribe to: acknowledge it.
            log.warning("event of an unsubscribed type acknowledged: %s", reason)
            return jsonify({"msg": "ignored"})
        status = 401 if any(w in reason for w in ("signature", "verification", "encrypt")) else 400
        return _refuse(status, reason)

    @app.get("/healthz")
    def healthz() -> Any:
        checks: dict[str, Any] = {}
        try:
            checks["database"] = bot.store.check()
        except AdsyncError as exc:
            checks["database"] = f"FAILED: {exc.message}"
        missing = [
            name
            for name, value in (
                ("FEISHU_APP_ID", settings.feishu_app_id),
                ("FEISHU_APP_SECRET", settings.feishu_app_secret),
                ("OCEANENGINE_APP_ID", settings.oceanengine_app_id),
                ("FEISHU_BITABLE_APP_TOKEN", settings.feishu_bitable_app_token),
            )
            if not value
        ]
        checks["configuration"] = "ok" if not missing else f"missing: {', '.join(missing)}"
        ok = not missing and not str(checks["database"]).startswith("FAILED")
        return jsonify({"ok": ok, **checks}), (200 if ok else 503)

    @app.get("/oauth/oceanengine/callback")
    def oauth_callback() -> Any:
        return _finish_authorization(bot, settings)

    return app


def _finish_authorization(bot: Bot, settings: Settings) -> Any:
    code = request.args.get("auth_code", "").strip()
    state = request.args.get("state", "").strip()
    tokens = bot.actions.services.tokens
    if not code or not state:
        return _page(400, "Missing auth_code or state", "Open the authorization link again.")
    if not tokens.consume_state(state):
        return _page(
            400,
            "This authorization link is unknown or was already used",
            "Ask the bot for a new link (`auth` in the group, or `adsync auth url`).",
        )
    try:
        result = tokens.authorize(code)
    except AdsyncError as exc:
        return _page(400, "Authorization failed", exc.message)
    names = [result.names.get(i) or i for i in result.account_ids]
    from adsync.bot import cards

    card = cards.alert_card(
        "Ocean Engine authorized · 巨量引擎已授权",
        [f"{len(names)} accounts: " + "、".join(names[:20]) + (" …" if len(names) > 20 else "")],
        severity="ok",
        lang="zh",
    )
    for chat_id in settings.feishu_report_chat_ids:
        try:
            bot.messenger.send(chat_id, card, message_uuid("authorized", chat_id, state))
        except AdsyncError as exc:
            log.error("could not tell %s about the authorization: %s", chat_id, exc)
    return _page(
        200, "adsync is authorized", f"{len(names)} accounts granted. You can close this page."
    )


def _page(status: int, title: str, text: str) -> Response:
    body = (
        "<!doctype html><meta charset=utf-8><title>adsync</title>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    )
    return Response(body, status, content_type="text/html; charset=utf-8")


def _reason(content: bytes | None) -> str:
    try:
        return str(json.loads(content or b"{}").get("msg", ""))[:200]
    except ValueError:
        return "refused"


def _refuse(status: int, reason: str) -> Response:
    log.warning("refused a /feishu/events request (%d): %s", status, reason)
    return Response(
        json.dumps({"msg": reason}), status, content_type="application/json; charset=utf-8"
    )
