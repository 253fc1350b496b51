"""Which authenticated events the bot takes, decided at the door — for the webhook and the long
connection alike (both hand lark-oapi's event objects to ``app.EventHandlers``).

* **Addressed to the bot.** A group message is a command only when it @-mentions the bot
  itself: its ``mentions`` carry the open_id of everyone mentioned, and the bot's own comes
  from ``GET /open-apis/bot/v3/info`` (fetched once, cached; the open_id of an app's bot never
  changes). "@Alice token status" is for Alice. Direct chats are always for the bot. If the
  bot's open_id cannot be fetched, group messages are *not* taken (and the log says why,
  loudly): guessing — any mention, or a mention that carries the bot's name — would answer
  messages meant for people, and nothing is lost in practice: the info API is the same
  platform, app credentials and tenant token the replies need, so a bot that cannot ask who
  it is could not answer either.
* **The real chat type of a card action.** A button press carries only ``open_chat_id``. The
  access check needs to know whether that is an admin's direct chat (always obeyed) or a
  group (subject to ``ADSYNC_ALLOWED_CHAT_IDS``): the type is what the bot saw in messages
  from that chat, else ``GET /open-apis/im/v1/chats/:chat_id``'s ``chat_mode`` (cached).
  Unknown counts as a group, the stricter of the two.
* **Fresh, identified card actions.** The platform never re-sends a callback (it answers
  within 3 s or fails, feishu.md §1.6), so a press older than ``ADSYNC_CALLBACK_MAX_AGE``
  (default 300 s) is a replay: refused. The window is far shorter than the 12-hour dedup
  claim, so a replay that outlives its claim is stale by then. A press without an
  ``event_id`` (the claim's key) is refused: it could be replayed without limit.

The lookups answer inside the 3-second acknowledgement: one attempt, a 2-second timeout.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adsync.sync.config import Settings
from adsync.sync.errors import AdsyncError, ConfigError
from adsync.sync.feishu import FeishuCaller, make_client

log = logging.getLogger("adsync.intake")

BOT_INFO_URI = "/open-apis/bot/v3/info"
LOOKUP_TIMEOUT = 2.0  # seconds per platform call made while a delivery waits for its answer
LOUD_EVERY = 300.0  # seconds between repeats of the same loud log line


class BotIdentity:
    """The bot's own open_id, asked of the platform once and kept.

    ``open_id()`` waits up to ``wait`` seconds for a lookup in flight (the one started at
    start-up, usually long done); a failed lookup is retried at most every ``retry_after``
    seconds, so a broken platform costs one call per interval, not one per message."""

    def __init__(self, caller: FeishuCaller, retry_after: float = 30.0, wait: float = 1.5) -> None:
        self._caller = caller
        self._retry_after = retry_after
        self._wait = wait
        self._lock = threading.Lock()
        self._open_id: str | None = None
        self._pending: threading.Event | None = None
        self._failed_at: float | None = None
        self.problem = ""  # why the last lookup failed (for logs and doctor)

    def prefetch(self) -> None:
        """Start the lookup in the background (at start-up, before the first message)."""
        self._start()

    def open_id(self) -> str | None:
        if self._open_id is not None:
            return self._open_id
        pending = self._start()
        if pending is not None:
            pending.wait(self._wait)
        return self._open_id

    def fetch(self) -> str:
        """One lookup, now; raises AdsyncError naming what failed (`adsync doctor`)."""
        from lark_oapi.core.enum import AccessTokenType, HttpMethod
        from lark_oapi.core.model import BaseRequest

        # lark-oapi 1.7.5 has no model for bot/v3 (its own Channel layer reads it raw too,
        # lark_oapi/channel/bot_identity.py): a BaseRequest through the SDK's client, which
        # adds the tenant token.
        request = BaseRequest()
        request.http_method = HttpMethod.GET
        request.uri = BOT_INFO_URI
        request.token_types = {AccessTokenType.TENANT}
        response = self._caller.call("bot info", self._caller.client.request, request)
        try:
            body = json.loads(response.raw.content or b"{}")
        except ValueError:
            body = {}
        # ``bot`` is at the top level of this answer, not under ``data``.
        bot = body.get("bot") or (body.get("data") or {}).get("bot") or {}
        open_id = bot.get("open_id") if isinstance(bot, dict) else None
        if not isinstance(open_id, str) or not open_id.startswith("ou_"):
            raise AdsyncError(
                "Feishu bot info has no open_id (is the app's bot ability enabled?)",
                hint="enable the bot ability of the Feishu app and publish a version",
            )
        with self._lock:
            self._open_id = open_id
            self.problem = ""
        return open_id

    def _start(self) -> threading.Event | None:
        with self._lock:
            if self._open_id is not None:
                return None
            if self._pending is not None:
                return self._pending
            now = time.monotonic()
            if self._failed_at is not None and now - self._failed_at < self._retry_after:
                return None
            pending = self._pending = threading.Event()
        threading.Thread(
            target=self._lookup, args=(pending,), name="bot-identity", daemon=True
        ).start()
        return pending

    def _lookup(self, pending: threading.Event) -> None:
        try:
            self.fetch()
        except AdsyncError as exc:
            with self._lock:
                self._failed_at = time.monotonic()
                self.problem = exc.message
            log.error("could not ask Feishu for the bot's own open_id: %s", exc.message)
        except Exception as exc:  # noqa: BLE001 - a lookup thread must end, and say why
            with self._lock:
                self._failed_at = time.monotonic()
                self.problem = type(exc).__name__
            log.error("could not ask Feishu for the bot's own open_id (%s)", type(exc).__name__)
        finally:
            with self._lock:
                self._pending = None
            pending.set()


class ChatKinds:
    """chat_id -> "p2p" or "group": learned from messages, else asked of the platform."""

    def __init__(self, caller: FeishuCaller, capacity: int = 4096) -> None:
        self._caller = caller
        self._capacity = capacity
        self._lock = threading.Lock()
        self._kinds: OrderedDict[str, str] = OrderedDict()

    def remember(self, chat_id: str, chat_type: str) -> None:
        """What a message event said (``chat_type`` p2p or group) — authenticated, free."""
        if chat_id and chat_type:
            self._put(chat_id, "p2p" if chat_type == "p2p" else "group")

    def kind(self, chat_id: str) -> str:
        with self._lock:
            known = self._kinds.get(chat_id)
        if known is not None:
            return known
        if not chat_id:
            return "group"
        try:
            mode = self._chat_mode(chat_id)
        except AdsyncError as exc:
            # Not cached: the next press asks again. A group is the stricter assumption.
            log.warning(
                "could not tell the type of chat %s (%s); treating it as a group",
                chat_id,
                exc.message,
            )
            return "group"
        kind = "p2p" if mode == "p2p" else "group"
        self._put(chat_id, kind)
        return kind

    def _chat_mode(self, chat_id: str) -> str:
        from lark_oapi.api.im.v1 import GetChatRequest

        request = GetChatRequest.builder().chat_id(chat_id).build()
        response = self._caller.call(
            f"chat info of {chat_id}", self._caller.client.im.v1.chat.get, request
        )
        # A chat the bot is not in answers only its name and avatar: no chat_mode.
        return str(getattr(response.data, "chat_mode", "") or "")

    def _put(self, chat_id: str, kind: str) -> None:
        with self._lock:
            self._kinds[chat_id] = kind
            self._kinds.move_to_end(chat_id)
            while len(self._kinds) > self._capacity:
                self._kinds.popitem(last=False)


def mention_open_ids(mentions: Sequence[Any] | None) -> list[str]:
    """The open_ids of a message's ``mentions`` (lark-oapi MentionEvent objects or dicts)."""
    found = []
    for mention in mentions or []:
        ident = getattr(mention, "id", None)
        if ident is None and isinstance(mention, dict):
            ident = mention.get("id")
        open_id = getattr(ident, "open_id", None)
        if open_id is None and isinstance(ident, dict):
            open_id = ident.get("open_id")
        if isinstance(open_id, str) and open_id:
            found.append(open_id)
    return found


def epoch_seconds(raw: Any) -> float | None:
    """A platform timestamp in seconds. ``X-Lark-Request-Timestamp`` is in seconds, event
    headers' ``create_time`` in milliseconds (and in microseconds in the docs' v2 envelope
    example), so the unit is told by the size: a 2020s date is 10 digits in seconds, 13 in
    milliseconds, 16 in microseconds."""
    try:
        value = float(str(raw).strip())
    except (TypeError, ValueError):
        return None
    if not value or value != value:  # 0 or nan
        return None
    if value > 1e14:
        return value / 1e6
    if value > 1e11:
        return value / 1e3
    return value


@dataclass
class Intake:
    identity: BotIdentity
    chats: ChatKinds
    callback_max_age: float
    clock: Callable[[], float] = time.time
    _loud_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from adsync.bot.worker import DEDUP_TTL

        if self.callback_max_age >= DEDUP_TTL.total_seconds():
            raise ConfigError(
                f"ADSYNC_CALLBACK_MAX_AGE ({self.callback_max_age:.0f} s) must be shorter than "
                f"the {DEDUP_TTL} a delivery is remembered, or a replay could run again",
                hint="set ADSYNC_CALLBACK_MAX_AGE to a few minutes, like 300",
            )

    @classmethod
    def for_settings(cls, settings: Settings) -> Intake:
        caller = FeishuCaller(make_client(settings, timeout=LOOKUP_TIMEOUT), attempts=1)
        return cls(BotIdentity(caller), ChatKinds(caller), float(settings.callback_max_age))

    def addressed(self, chat_type: str, mentions: Sequence[Any] | None) -> bool:
        """Is this message for the bot? Direct chats always; groups when the bot is @-ed."""
        if chat_type == "p2p":
            return True
        mentioned = mention_open_ids(mentions)
        if not mentioned:
            return False
        own = self.identity.open_id()
        if own is None:
            self._loud(
                "identity",
                "a group message @-mentioned someone, but the bot's own open_id is unknown "
                f"({self.identity.problem or 'Feishu has not answered GET ' + BOT_INFO_URI}), "
                "so it was not taken as a command. Check FEISHU_APP_ID/FEISHU_APP_SECRET and "
                "that the app's bot ability is enabled (`adsync doctor`).",
            )
            return False
        return own in mentioned

    def card_action_refusal(
        self, event_id: str, sent_at: Any, lang: str = "en"
    ) -> dict[str, Any] | None:
        """The toast refusing a button press, or None to take it."""
        zh = lang == "zh"
        if not event_id:
            log.warning("refused a card action without an event_id")
            text = (
                "无法确认这次点击，请重新点击按钮。"
                if zh
                else "Could not verify this press; press again."
            )
            return {"toast": {"type": "error", "content": text}}
        sent = epoch_seconds(sent_at)
        age = None if sent is None else self.clock() - sent
        if age is None or abs(age) > self.callback_max_age:
            shown = "unknown" if age is None else f"{age:.0f} s"
            log.warning(
                "refused card action %s: sent %s ago, the window is %.0f s (a replay, or clocks "
                "apart)",
                event_id,
                shown,
                self.callback_max_age,
            )
            text = (
                "这个按钮请求已过期，请重新点击。"
                if zh
                else "This press is too old to run; press again."
            )
            return {"toast": {"type": "error", "content": text}}
        return None

    def _loud(self, key: str, message: str) -> None:
        now = time.monotonic()
        last = self._loud_at.get(key)
        if last is None or now - last >= LOUD_EVERY:
            self._loud_at[key] = now
            log.error(message)
