"""Posting to Feishu chats through lark-oapi: send, reply and update cards.

Every post carries a ``uuid`` derived from what caused it (the message being answered, the
report's chat and date), so a repeated delivery or a retried call never posts twice — the
platform keeps at most one message per uuid for an hour.

Every request is measured as it will be sent: lark-oapi serialises the body with
``JSON.marshal`` (``Transport.execute``), and the platform refuses a card message whose body
exceeds 30 KB (230025). Cards arrive already fitted (``cards.fit``); a body that still exceeds
the limit less the margin (a long receive_id) is refitted by exactly the excess, never sent.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lark_oapi.api.im.v1 import (
    CreateFileRequest,
    CreateFileRequestBody,
    CreateMessageRequest,
    CreateMessageRequestBody,
    PatchMessageRequest,
    PatchMessageRequestBody,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
)
from lark_oapi.core.json import JSON

from adsync.bot import cards
from adsync.bot.cards import card_content
from adsync.sync.config import Settings
from adsync.sync.errors import AdsyncError
from adsync.sync.feishu import FeishuCaller, FeishuError, make_client

log = logging.getLogger("adsync.messenger")

R = TypeVar("R", CreateMessageRequest, ReplyMessageRequest, PatchMessageRequest)

# What a sent body may weigh: the platform's 30 KB less the margin cards keep (cards/parts.py says why).
SEND_LIMIT = cards.BODY_LIMIT - cards.MARGIN_BYTES


# IM file upload (im-v1 file/create, "使用限制"): at most 30 MB, never empty. Checked here before
# the bytes travel; the platform answers 234006 / 234010 all the same.
FILE_LIMIT = 30 * 1024 * 1024


class FileNotPostable(AdsyncError):
    """A file Feishu would refuse (empty, or over 30 MB): nothing was uploaded."""


def message_uuid(*parts: str) -> str:
    """A platform ``uuid`` (≤ 50 chars) from what caused the post: stable across retries."""
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
    return f"adsync-{digest[:40]}"


def body_bytes(request: CreateMessageRequest | ReplyMessageRequest | PatchMessageRequest) -> int:
    """Bytes of the request body exactly as lark-oapi 1.7.5 sends it
    (``Transport.execute``: ``JSON.marshal(req.body).encode("utf-8")``)."""
    return len((JSON.marshal(request.body) or "").encode("utf-8"))


def within_limit(card: dict[str, Any], build: Callable[[str], R]) -> R:
    """The request ``build`` makes for ``card``, its body measured as sent; a card whose body
    would exceed ``SEND_LIMIT`` is refitted by the excess (the body is the card's ``card_size``
    plus a fixed envelope, so one refit lands under the limit)."""
    request = build(card_content(card))
    excess = body_bytes(request) - SEND_LIMIT
    if excess > 0:
        log.info("card body %d bytes over the limit; fitting it", excess)
        request = build(card_content(cards.fit(card, cards.card_size(card) - excess)))
    return request


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
        def build(content: str) -> CreateMessageRequest:
            return (
                CreateMessageRequest.builder()
                .receive_id_type("chat_id")
                .request_body(
                    CreateMessageRequestBody.builder()
                    .receive_id(chat_id)
                    .msg_type("interactive")
                    .content(content)
                    .uuid(uuid)
                    .build()
                )
                .build()
            )

        request = within_limit(card, build)
        response = self.caller.call(f"send to {chat_id}", self._im.create, request)
        return Posted(response.data.message_id, chat_id)

    def reply(self, message_id: str, card: dict[str, Any], uuid: str) -> Posted:
        def build(content: str) -> ReplyMessageRequest:
            return (
                ReplyMessageRequest.builder()
                .message_id(message_id)
                .request_body(
                    ReplyMessageRequestBody.builder()
                    .msg_type("interactive")
                    .content(content)
                    .uuid(uuid)
                    .build()
                )
                .build()
            )

        request = within_limit(card, build)
        response = self.caller.call("reply", self._im.reply, request)
        return Posted(response.data.message_id, getattr(response.data, "chat_id", "") or "")

    def upload_file(self, path: Path, file_type: str = "stream", name: str = "") -> str:
        """Upload ``path`` for a file message (``im.v1.file.create``) -> its ``file_key``.
        ``file_type``: the platform's opus/mp4/pdf/doc/xls/ppt, else stream."""
        data = path.read_bytes()
        if not data:
            raise FileNotPostable(f"{path.name} is empty; Feishu takes no empty file")
        if len(data) > FILE_LIMIT:
            raise FileNotPostable(
                f"{path.name} is {len(data) / 1024 / 1024:.1f} MB; Feishu takes files up to 30 MB",
                hint="export fewer months, or one account at a time",
            )

        def send(_: Any) -> Any:
            # A fresh request for every try: lark-oapi turns the body into a one-shot stream
            # (``FileResource.create`` replaces it with a MultipartEncoder), so a retry of the
            # same request object would send nothing.
            body = (
                CreateFileRequestBody.builder()
                .file_type(file_type)
                .file_name(name or path.name)
                .file(io.BytesIO(data))
                .build()
            )
            request = CreateFileRequest.builder().request_body(body).build()
            return self.caller.client.im.v1.file.create(request)

        response = self.caller.call("upload file", send, None)
        return str(response.data.file_key)

    def reply_file(self, message_id: str, file_key: str, uuid: str) -> Posted:
        """Post an uploaded file as a reply to ``message_id``: a file message (msg_type "file",
        content ``{"file_key": …}``)."""
        request = (
            ReplyMessageRequest.builder()
            .message_id(message_id)
            .request_body(
                ReplyMessageRequestBody.builder()
                .msg_type("file")
                .content(json.dumps({"file_key": file_key}))
                .uuid(uuid)
                .build()
            )
            .build()
        )
        response = self.caller.call("post file", self._im.reply, request)
        return Posted(response.data.message_id, getattr(response.data, "chat_id", "") or "")

    def update(self, message_id: str, card: dict[str, Any]) -> None:
        def build(content: str) -> PatchMessageRequest:
            return (
                PatchMessageRequest.builder()
                .message_id(message_id)
                .request_body(PatchMessageRequestBody.builder().content(content).build())
                .build()
            )

        self.caller.call("update card", self._im.patch, within_limit(card, build))

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
