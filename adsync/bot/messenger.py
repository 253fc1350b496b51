"""Posting to Feishu chats through lark-oapi: send, reply and update cards.

Every post carries a ``uuid`` derived from what caused it (the message being answered, the
report's chat and date), so a repeated delivery or a retried call never posts twice — the
platform keeps at most one message per uuid for an hour.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from lark_oapi.api.im.v1 import (
    CreateMessageRequest,
    CreateMessageRequestBody,
    PatchMessageRequest,
    PatchMessageRequestBody,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
)

from adsync.sync.config import Settings
from adsync.sync.feishu import FeishuCaller, FeishuError, make_client

log = logging.getLogger("adsync.messenger")


def message_uuid(*parts: str) -> str:
    """A platform ``uuid`` (≤ 50 chars) from what caused the post: stable across retries."""
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
    return f"adsync-{digest[:40]}"


def card_content(card: dict[str, Any]) -> str:
    return json.dumps(card, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Posted:
    message_id: str
    chat_id: str = ""


class Messenger:
    """The bot's voice. One per process; thread-safe (lark-oapi's client keeps no request
    state, our caller only counts)."""

    def __init__(self, settings: Settings, caller: FeishuCaller | None = None) -> None:
        self.settings = settings
        self.caller = caller or FeishuCaller(
            make_client(settings), base_delay=min(0.5, settings.retry_base_delay)
        )
        self._im = self.caller.client.im.v1.message

    def send(self, chat_id: str, card: dict[str, Any], uuid: str) -> Posted:
        request = (
            CreateMessageRequest.builder()
            .receive_id_type("chat_id")
            .request_body(
                CreateMessageRequestBody.builder()
                .receive_id(chat_id)
                .msg_type("interactive")
                .content(card_content(card))
                .uuid(uuid)
                .build()
            )
            .build()
        )
        response = self.caller.call(f"send to {chat_id}", self._im.create, request)
        return Posted(response.data.message_id, chat_id)

    def reply(self, message_id: str, card: dict[str, Any], uuid: str) -> Posted:
        request = (
            ReplyMessageRequest.builder()
            .message_id(message_id)
            .request_body(
                ReplyMessageRequestBody.builder()
                .msg_type("interactive")
                .content(card_content(card))
                .uuid(uuid)
                .build()
            )
            .build()
        )
        response = self.caller.call("reply", self._im.reply, request)
        return Posted(response.data.message_id, getattr(response.data, "chat_id", "") or "")

    def update(self, message_id: str, card: dict[str, Any]) -> None:
        request = (
            PatchMessageRequest.builder()
            .message_id(message_id)
            .request_body(PatchMessageRequestBody.builder().content(card_content(card)).build())
            .build()
        )
        self.caller.call("update card", self._im.patch, request)

    def reply_or_update(
        self, message_id: str, card: dict[str, Any], uuid: str, working: Posted | None
    ) -> Posted:
        """Replace the "working on it" card with the result; if that card cannot be updated,
        reply afresh (the reply's uuid still prevents a double post)."""
        if working is not None:
            try:
                self.update(working.message_id, card)
                return working
            except FeishuError as exc:
                log.warning("could not update the working card (%s); replying instead", exc.code)
        return self.reply(message_id, card, uuid)
