"""Feishu's side of event delivery: events built, encrypted and signed exactly as the platform
sends them to a developer server, and delivered along its retry ladder.

* body ``{"encrypt": base64(iv + AES-256-CBC(sha256(encrypt_key), iv, PKCS7(json)))}``;
* headers ``X-Lark-Request-Timestamp``, ``X-Lark-Request-Nonce`` and
  ``X-Lark-Signature = sha256(timestamp + nonce + encrypt_key + raw body).hexdigest()``;
* a delivery that is not answered HTTP 200 within 3 s is re-sent after 15 s, 5 min, 1 h and
  6 h (the ladder is compressed by a factor for tests).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from Crypto.Cipher import AES  # pycryptodome, which lark-oapi depends on as well

from adsync.sandbox.feishu import BOT_NAME, BOT_OPEN_ID

RETRY_LADDER = (15.0, 300.0, 3600.0, 21600.0)  # seconds after the first attempt, per the docs


def encrypt(plaintext: str, encrypt_key: str) -> str:
    key = hashlib.sha256(encrypt_key.encode("utf-8")).digest()
    iv = os.urandom(16)
    data = plaintext.encode("utf-8")
    pad = 16 - len(data) % 16
    cipher = AES.new(key, AES.MODE_CBC, iv)
    return base64.b64encode(iv + cipher.encrypt(data + bytes([pad]) * pad)).decode("ascii")


def sign(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode("utf-8") + body).hexdigest()


def _header(
    event_type: str, token: str, event_id: str | None = None, create_time_ms: int | None = None
) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex if event_id is None else event_id,
        "token": token,
        "create_time": str(int(time.time() * 1000) if create_time_ms is None else create_time_ms),
        "event_type": event_type,
        "tenant_key": "sandbox_tenant",
        "app_id": "cli_sandbox_app",
    }


def message_event(
    text: str,
    *,
    token: str,
    chat_id: str = "oc_sandbox_reports",
    user_id: str = "ou_sandbox_user",
    chat_type: str = "group",
    mention_bot: bool = True,
    mention_others: Sequence[tuple[str, str]] = (),
    message_id: str | None = None,
    event_id: str | None = None,
    create_time_ms: int | None = None,
) -> dict[str, Any]:
    """An ``im.message.receive_v1`` event as the platform sends it (v2.0 schema).

    ``mention_others`` are (name, open_id) of people @-mentioned before the bot; every
    mention is a ``@_user_N`` placeholder in the text and an entry of ``mentions`` with the
    mentioned open_id — the bot's own (``BOT_OPEN_ID``) when ``mention_bot``."""
    mentioned = [*mention_others, *([(BOT_NAME, BOT_OPEN_ID)] if mention_bot else [])]
    mentions = []
    keys = []
    for n, (name, open_id) in enumerate(mentioned, start=1):
        key = f"@_user_{n}"
        keys.append(key)
        mentions.append(
            {
                "key": key,
                "id": {"open_id": open_id, "union_id": "on_" + open_id[3:], "user_id": ""},
                "name": name,
                "tenant_key": "sandbox_tenant",
            }
        )
    if keys:
        text = " ".join(keys) + " " + text
    created = str(create_time_ms if create_time_ms is not None else int(time.time() * 1000))
    return {
        "schema": "2.0",
        "header": _header("im.message.receive_v1", token, event_id),
        "event": {
            "sender": {
                "sender_id": {"open_id": user_id, "union_id": f"on_{user_id}", "user_id": ""},
                "sender_type": "user",
                "tenant_key": "sandbox_tenant",
            },
            "message": {
                "message_id": message_id or f"om_{secrets.token_hex(16)}",
                "create_time": created,
                "update_time": created,
                "chat_id": chat_id,
                "chat_type": chat_type,
                "message_type": "text",
                "content": json.dumps({"text": text}, ensure_ascii=False),
                "mentions": mentions,
            },
        },
    }


def card_action_event(
    value: dict[str, Any],
    *,
    token: str,
    user_id: str = "ou_sandbox_user",
    chat_id: str = "oc_sandbox_reports",
    message_id: str = "om_card",
    event_id: str | None = None,
    create_time_ms: int | None = None,
) -> dict[str, Any]:
    """A ``card.action.trigger`` callback (a button press). ``event_id=""`` leaves the id
    empty; ``create_time_ms`` dates the header (now by default)."""
    return {
        "schema": "2.0",
        "header": _header("card.action.trigger", token, event_id, create_time_ms),
        "event": {
            "operator": {"open_id": user_id, "union_id": f"on_{user_id}", "tenant_key": "t"},
            "token": "c-" + secrets.token_hex(8),
            "action": {"value": value, "tag": "button"},
            "context": {"open_message_id": message_id, "open_chat_id": chat_id},
        },
    }


def chat_event(event_type: str, chat_id: str, *, token: str) -> dict[str, Any]:
    """``im.chat.member.bot.added_v1`` / ``..deleted_v1`` and similar chat-level events."""
    return {
        "schema": "2.0",
        "header": _header(event_type, token),
        "event": {"chat_id": chat_id, "operator_id": {"open_id": "ou_sandbox_user"}},
    }


def url_verification(challenge: str, token: str) -> dict[str, Any]:
    return {"challenge": challenge, "token": token, "type": "url_verification"}


@dataclass
class Delivery:
    """One event body as sent on the wire: the same bytes on every retry."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def seal(
    event: dict[str, Any],
    encrypt_key: str,
    *,
    signed: bool = True,
    timestamp: int | None = None,
) -> Delivery:
    """Encrypt (and sign) ``event`` as the platform does; no key means plaintext.
    ``timestamp`` (epoch seconds, signed with the body) defaults to now."""
    plaintext = json.dumps(event, ensure_ascii=False)
    if not encrypt_key:
        return Delivery(plaintext.encode("utf-8"), {"Content-Type": "application/json"})
    body = json.dumps({"encrypt": encrypt(plaintext, encrypt_key)}).encode("utf-8")
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signed and event.get("type") != "url_verification":  # the challenge is never signed
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        nonce = secrets.token_hex(8)
        headers.update(
            {
                "X-Lark-Request-Timestamp": stamp,
                "X-Lark-Request-Nonce": nonce,
                "X-Lark-Signature": sign(stamp, nonce, encrypt_key, body),
            }
        )
    return Delivery(body, headers)


def deliver(url: str, delivery: Delivery, timeout: float = 3.0) -> requests.Response:
    return requests.post(url, data=delivery.body, headers=delivery.headers, timeout=timeout)


def deliver_with_retries(
    url: str, delivery: Delivery, *, compress: float = 1.0, attempts: int = 5
) -> list[int | str]:
    """Deliver, then re-deliver along the ladder until HTTP 200. ``compress`` shrinks the
    ladder (1000 turns 15 s into 15 ms). Returns the status (or error) of each attempt."""
    outcomes: list[int | str] = []
    started = time.monotonic()
    for attempt in range(attempts):
        if attempt:
            due = started + RETRY_LADDER[attempt - 1] / compress
            time.sleep(max(0.0, due - time.monotonic()))
        try:
            status: int | str = deliver(url, delivery).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        outcomes.append(status)
        if status == 200:
            break
    return outcomes
