"""Acknowledge fast, work in the background.

Feishu wants an answer within 3 s and otherwise re-delivers after 15 s, 5 min, 1 h and 6 h. So
an event handler here only: claims the delivery in the database (by ``event_id`` and
``message_id``, kept 12 h, shared by every process), drops messages older than 30 minutes (a
backlog replayed after an outage), and queues the work. The work runs on a thread pool with
one serial lane per chat, so a chat's commands answer in the order they were typed while
other chats go on in parallel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from adsync.bot import cards
from adsync.bot.actions import Actions, Caller
from adsync.bot.commands import (
    CommandError,
    Sync,
    TokenRefresh,
    check_access,
    help_text,
    is_admin,
    parse,
)
from adsync.bot.messenger import Messenger, Posted, message_uuid
from adsync.sync.store import Store

log = logging.getLogger("adsync.worker")

DEDUP_TTL = timedelta(hours=12)  # longer than the platform's 7.1 h retry window
STALE_AFTER_MS = 30 * 60 * 1000


class ChatLanes:
    """A thread pool where jobs of one lane (chat) run one at a time, in order.

    Acknowledgements first: while webhook requests are being answered (``acknowledging``), a
    lane does not start its next job, for up to ``ack_priority`` seconds. Everything in the
    process shares one GIL, so under a burst of deliveries the commands queued by the first
    ones (cards, replies) would otherwise take CPU from the requests still waiting for their
    200, which have a 3 s deadline; the commands have none and start a moment later. The cap
    keeps the lanes moving under a stream of requests that never pauses."""

    def __init__(self, max_workers: int = 4, ack_priority: float = 1.0) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="chat")
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Callable[[], None]]] = {}
        self._idle = threading.Condition(self._lock)
        self._ack_priority = ack_priority
        self._acks = 0
        self._acks_done = threading.Condition(threading.Lock())

    @contextlib.contextmanager
    def acknowledging(self) -> Iterator[None]:
        """Around the handling of one webhook request."""
        with self._acks_done:
            self._acks += 1
        try:
            yield
        finally:
            with self._acks_done:
                self._acks -= 1
                if not self._acks:
                    self._acks_done.notify_all()

    def _after_acks(self) -> None:
        deadline = time.monotonic() + self._ack_priority
        with self._acks_done:
            while self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._acks_done.wait(left)

    def submit(self, lane: str, job: Callable[[], None]) -> None:
        with self._lock:
            queue = self._queues.get(lane)
            if queue is not None:  # the lane is busy: its drainer will get to it
                queue.append(job)
                return
            self._queues[lane] = deque([job])
        self._pool.submit(self._drain, lane)

    def _drain(self, lane: str) -> None:
        while True:
            with self._lock:
                queue = self._queues[lane]
                if not queue:
                    del self._queues[lane]
                    self._idle.notify_all()
                    return
                job = queue[0]
            self._after_acks()
            try:
                job()
            except Exception:  # noqa: BLE001 - a failed job must not stall its lane
                log.exception("job in lane %s failed", lane)
            with self._lock:
                queue.popleft()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no lane has work (tests, graceful shutdown)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._queues:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


@dataclass
class Incoming:
    """A chat message reduced to what a command needs."""

    event_id: str
    message_id: str
    chat_id: str
    chat_type: str
    user_id: str
    text: str
    create_time_ms: int
    mentioned: bool = False


@dataclass
class Bot:
    """Event handlers shared by the webhook and the long connection."""

    store: Store
    actions: Actions
    messenger: Messenger
    lanes: ChatLanes = field(default_factory=ChatLanes)
    now_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    handled: int = 0  # commands executed (for tests and /healthz)

    @property
    def settings(self) -> Any:
        return self.actions.settings

    # -- events -------------------------------------------------------------------------------

    def on_message(self, incoming: Incoming) -> str:
        """Fast path: filter and queue, nothing else — not even the database: the duplicate
        check is the job's first step, so a burst of deliveries is acknowledged at the speed
        of the HTTP stack. Returns what happened (for tests)."""
        if incoming.chat_type == "group" and not incoming.mentioned:
            return "not for me"  # with all-group-messages permission, only @adsync counts
        age = self.now_ms() - incoming.create_time_ms
        if incoming.create_time_ms and age > STALE_AFTER_MS:
            log.info(
                "message %s is %d min old: acknowledged, not run", incoming.message_id, age // 60000
            )
            return "stale"
        self.lanes.submit(incoming.chat_id, lambda: self._run_message(incoming))
        return "queued"

    def on_card_action(
        self,
        event_id: str,
        value: dict[str, Any],
        user_id: str,
        chat_id: str,
        message_id: str,
        chat_type: str = "group",
    ) -> dict[str, Any]:
        """A button press: answer within 3 s with a toast (and the card), queue the work."""
        lang = "zh" if value.get("lang") == "zh" else "en"
        if not self._claim(event_id, ""):
            return _toast("info", "已在处理" if lang == "zh" else "Already on it")
        action = value.get("action")
        if action == "sync_retry":
            try:
                start = date.fromisoformat(str(value["start"]))
                end = date.fromisoformat(str(value["end"]))
                accounts = [str(a) for a in value.get("accounts") or []]
            except (KeyError, ValueError):
                return _toast("error", "Bad button value")
            command = Sync(start, end, None, lang=lang)
        elif action == "token_refresh":
            command, accounts = TokenRefresh(lang=lang), []
        else:
            return _toast("info", "OK")
        denial = check_access(
            command, user_id=user_id, chat_id=chat_id, chat_type=chat_type, settings=self.settings
        )
        if denial is not None:
            return _toast("error", denial.message)
        caller = Caller(user_id, chat_id, chat_type, is_admin(user_id, self.settings))
        self.lanes.submit(
            chat_id, lambda: self._run_card_action(command, accounts, caller, message_id)
        )
        text = "正在重试失败的账户 …" if lang == "zh" else "Retrying the failed accounts …"
        if action == "token_refresh":
            text = "正在刷新 token …" if lang == "zh" else "Refreshing the token …"
        return _toast("info", text)

    def on_bot_added(self, event_id: str, chat_id: str) -> None:
        if not self._claim(event_id, ""):
            return

        def welcome() -> None:
            card = cards.message_card("adsync", help_text("zh", may_change=False), "zh", "info")
            self.messenger.send(chat_id, card, message_uuid("welcome", chat_id))

        self.lanes.submit(chat_id, welcome)

    def on_bot_removed(self, event_id: str, chat_id: str) -> None:
        log.warning("the bot was removed from chat %s; alerts to it will use the webhook", chat_id)

    # -- jobs (background) --------------------------------------------------------------------

    def _run_message(self, incoming: Incoming) -> None:
        if not self._claim(incoming.event_id, incoming.message_id):
            log.info("message %s delivered again: already handled", incoming.message_id)
            return
        try:
            command = parse(incoming.text, self.actions.today())
        except CommandError as exc:
            title = "没看懂" if exc.lang == "zh" else "Not sure what you mean"
            card = cards.message_card(title, str(exc), exc.lang, "info")
            self._reply(incoming.message_id, card, None)
            return
        lang = command.lang
        denial = check_access(
            command,
            user_id=incoming.user_id,
            chat_id=incoming.chat_id,
            chat_type=incoming.chat_type,
            settings=self.settings,
        )
        if denial is not None:
            title = "没有权限" if lang == "zh" else "Not allowed"
            people = denial.admins if denial.reason == "admin_only" else ()
            self._reply(
                incoming.message_id,
                cards.message_card(title, denial.message, lang, "warning", people=people),
                None,
            )
            return
        caller = Caller(
            incoming.user_id,
            incoming.chat_id,
            incoming.chat_type,
            is_admin(incoming.user_id, self.settings),
        )
        working: Posted | None = None
        if self.actions.is_long(command):
            working = self._post(
                lambda: self.messenger.reply(
                    incoming.message_id,
                    self.actions.working(command),
                    message_uuid("working", incoming.message_id),
                )
            )
        card = self.actions.execute(command, caller)
        self.handled += 1
        self._reply(incoming.message_id, card, working)

    def _run_card_action(
        self, command: Any, accounts: list[str], caller: Caller, message_id: str
    ) -> None:
        if isinstance(command, Sync):
            result = self.actions.sync(
                command.start, command.end, accounts or None, caller, trigger="retry"
            )
            card = cards.sync_card(result, command.lang)
        else:
            card = self.actions.execute(command, caller, trigger="button")
        self.handled += 1
        self._post(lambda: self.messenger.update(message_id, card))

    def _reply(self, message_id: str, card: dict[str, Any], working: Posted | None) -> None:
        self._post(
            lambda: self.messenger.reply_or_update(
                message_id, card, message_uuid("reply", message_id), working
            )
        )

    @staticmethod
    def _post(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - Feishu trouble is logged, the lane goes on
            log.error("could not post to Feishu: %s", exc)
            return None

    def _claim(self, event_id: str, message_id: str) -> bool:
        """First delivery wins, across retries, restarts and instances."""
        keys = [f"evt:{event_id}"] if event_id else []
        if message_id:
            keys.append(f"msg:{message_id}")
        # Both keys in one statement: the claim is the only database work on the way to the
        # acknowledgement, so it is one round trip, not one (or two) per key.
        return self.store.claim_all(keys, DEDUP_TTL)


def _toast(kind: str, content: str) -> dict[str, Any]:
    return {"toast": {"type": kind, "content": content}}


def message_text(message_type: str, content: str, mentions: list[Any] | None) -> str:
    """The plain text of a text or post message, @-mention placeholders removed."""
    try:
        body = json.loads(content or "{}")
    except ValueError:
        return ""
    if message_type == "text":
        text = str(body.get("text") or "")
    elif message_type == "post":
        post = body.get("content") or next(iter(body.values()), {}).get("content", [])
        parts = []
        for line in post or []:
            for item in line or []:
                if isinstance(item, dict) and item.get("tag") in ("text", "md", "a"):
                    parts.append(str(item.get("text") or ""))
            parts.append(" ")
        text = "".join(parts)
    else:
        return ""
    for mention in mentions or []:
        key = getattr(mention, "key", None) or (
            mention.get("key") if isinstance(mention, dict) else None
        )
        if key:
            text = text.replace(key, " ")
    return text.strip()
