"""Acknowledge at once, keep what was acknowledged, answer it exactly once.

Feishu wants an answer within 3 s, re-delivers after 15 s, 5 min, 1 h and 6 h when it gets
none, and never again once it got a 200. So an event handler here only filters (a group
message must mention the bot; a message older than 30 minutes is a backlog replayed after an
outage: acknowledged, not run) and appends the event to this process's spool (``spool.py``:
on disk before the 200, no database on the way). The spool's mover stores it in the database
queue (``adsync.sync.queue``), which stores a delivery once by its ``event_id`` and its
``message_id`` (kept two days, shared by every process), and a worker — ``adsync worker``, the
one ``adsync serve`` starts, or another's — runs it (``dispatch.py``).

Running one job (``Bot.run_job``): parse, check access, answer. A long command (sync, verify)
first posts its "working on it" card and lets the chat's quick commands past it; a sync that
the same or a wider running sync already covers joins it ("already running, I will update this
card") and gets that run's result. The answer is stored before it is posted; posting uses a
``uuid`` derived from the message, so a crash between posting and marking it done posts the
same message again, which the platform drops (it keeps a uuid for an hour).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from adsync.bot import cards
from adsync.bot.access import check_access, is_admin
from adsync.bot.actions import Actions, Caller, ExportFile
from adsync.bot.commands import (
    Command,
    CommandError,
    Export,
    Sync,
    TokenRefresh,
    help_text,
    parse,
)
from adsync.bot.messenger import FileNotPostable, Messenger, Posted, message_uuid
from adsync.bot.spool import AckGate, Mover, Spool
from adsync.sync.errors import StoreError
from adsync.sync.feishu import FeishuError
from adsync.sync.queue import ANSWERED, KEEP_FINISHED, LONG, QUICK, Job, JobQueue, NewJob
from adsync.sync.runner import RunResult
from adsync.sync.store import Store

log = logging.getLogger("adsync.worker")

STALE_AFTER_MS = 30 * 60 * 1000
DEDUP_TTL = KEEP_FINISHED  # how long a delivery is recognised: the queue keeps its job that long
LONG_TURN_POLL_S = 0.25  # how often a long job looks whether the chat's earlier ones are done
# Worth another try later rather than an error card: the database locked, restarting, gone.
TRANSIENT: tuple[type[BaseException], ...] = (StoreError, OperationalError, InterfaceError)
SYNC_TOPIC = "sync|"


class NotStored(Exception):
    """The event could not be written to the spool: it must not be acknowledged."""


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
    """Event handlers shared by the webhook and the long connection, and what a worker does
    with the jobs they queue."""

    store: Store
    actions: Actions
    messenger: Messenger
    spool: Spool | None = None
    queue: JobQueue | None = None
    now_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    handled: int = 0  # commands executed in this process (for tests and /healthz)
    sync_wait: float = 900.0  # a queued sync waits this long for other runs of its dates
    # Longest the mover waits for acknowledgements in flight. Short, because it is also how far
    # apart two messages of a chat delivered to two web processes must be to keep their order.
    ack_priority: float = 0.2

    def __post_init__(self) -> None:
        if self.spool is None:
            self.spool = Spool(self.settings.data_dir / "spool")
        if self.queue is None:
            self.queue = JobQueue(self.store)
        self.queued = threading.Event()  # jobs were stored: a worker in this process looks
        self.gate = AckGate(self.ack_priority)
        self._mover: Mover | None = None
        self._count_lock = threading.Lock()

    @property
    def settings(self) -> Any:
        return self.actions.settings

    # -- acknowledging ------------------------------------------------------------------------

    def acknowledging(self) -> contextlib.AbstractContextManager[None]:
        """Around the handling of one webhook request: the mover waits for these (AckGate)."""
        return self.gate.acknowledging()

    def on_message(self, incoming: Incoming) -> str:
        """Filter and spool; nothing else. Returns what happened (for tests)."""
        if incoming.chat_type == "group" and not incoming.mentioned:
            return "not for me"  # with all-group-messages permission, only @adsync counts
        age = self.now_ms() - incoming.create_time_ms
        if incoming.create_time_ms and age > STALE_AFTER_MS:
            log.info(
                "message %s is %d min old: acknowledged, not run", incoming.message_id, age // 60000
            )
            return "stale"
        self._spool(
            "message",
            incoming.chat_id,
            incoming.create_time_ms,
            incoming.event_id,
            incoming.message_id,
            asdict(incoming),
        )
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
        """A button press: answer within 3 s with a toast, queue the work (a repeated
        callback is dropped by the queue, by its event id)."""
        lang = "zh" if value.get("lang") == "zh" else "en"
        action = value.get("action")
        if action == "sync_retry":
            try:
                start = date.fromisoformat(str(value["start"]))
                end = date.fromisoformat(str(value["end"]))
                accounts = [str(a) for a in value.get("accounts") or []]
            except (KeyError, ValueError):
                return _toast("error", "Bad button value")
            command: Command = Sync(start, end, None, lang=lang)
        elif action == "token_refresh":
            command, accounts = TokenRefresh(lang=lang), []
        else:
            return _toast("info", "OK")
        denial = check_access(
            command, user_id=user_id, chat_id=chat_id, chat_type=chat_type, settings=self.settings
        )
        if denial is not None:
            return _toast("error", denial.message)
        payload = {
            "action": action,
            "start": str(value.get("start", "")),
            "end": str(value.get("end", "")),
            "accounts": accounts,
            "lang": lang,
            "user_id": user_id,
            "chat_id": chat_id,
            "chat_type": chat_type,
            "message_id": message_id,
        }
        try:
            self._spool("card_action", chat_id, self.now_ms(), event_id, "", payload)
        except NotStored:
            text = "暂时无法处理，请稍后再试" if lang == "zh" else "Could not take that; try again"
            return _toast("error", text)
        text = "正在重试失败的账户 …" if lang == "zh" else "Retrying the failed accounts …"
        if action == "token_refresh":
            text = "正在刷新 token …" if lang == "zh" else "Refreshing the token …"
        return _toast("info", text)

    def on_bot_added(self, event_id: str, chat_id: str) -> None:
        self._spool("bot_added", chat_id, self.now_ms(), event_id, "", {"chat_id": chat_id})

    def on_bot_removed(self, event_id: str, chat_id: str) -> None:
        log.warning("the bot was removed from chat %s; alerts to it will use the webhook", chat_id)

    def _spool(
        self, kind: str, lane: str, seq: int, event_id: str, message_id: str, payload: Any
    ) -> None:
        record = {
            "kind": kind,
            "lane": lane,
            "seq": int(seq or self.now_ms()),
            "event_id": event_id,
            "message_id": message_id,
            "payload": payload,
        }
        assert self.spool is not None
        try:
            self.spool.append(record)
        except OSError as exc:
            log.error("could not write the event to the spool in %s: %s", self.spool.directory, exc)
            raise NotStored(str(exc)) from None

    # -- from the spool to the queue ----------------------------------------------------------

    def start_mover(self, *, own: bool = True) -> Mover:
        """The thread that moves spooled events into the database queue (``own=False``: only
        files that stopped processes left, for a worker that acknowledges nothing)."""
        assert self.spool is not None
        if self._mover is None:
            self._mover = Mover(
                self.spool, self.enqueue, before_move=self.gate.wait, own=own
            ).start()
        return self._mover

    def stop_mover(self) -> None:
        if self._mover is not None:
            self._mover.stop()
            self._mover = None

    def enqueue(self, records: list[dict[str, Any]]) -> None:
        """Spooled events into the queue (raises if the database will not take them)."""
        assert self.queue is not None
        new = [job for job in (self._job(r) for r in records) if job is not None]
        if new:
            self.queue.enqueue(new)
            self.queued.set()

    def _job(self, record: dict[str, Any]) -> NewJob | None:
        kind = str(record.get("kind") or "")
        payload = record.get("payload")
        if kind not in ("message", "card_action", "bot_added") or not isinstance(payload, dict):
            log.error("a spooled event of unknown shape was skipped (%s)", kind or "no kind")
            return None
        return NewJob(
            kind=kind,
            lane=str(record.get("lane") or ""),
            seq=int(record.get("seq") or 0),
            weight=self._weight(kind, payload),
            payload=payload,
            event_id=str(record.get("event_id") or ""),
            message_id=str(record.get("message_id") or ""),
        )

    def _weight(self, kind: str, payload: dict[str, Any]) -> str:
        if kind == "card_action":
            return LONG if payload.get("action") == "sync_retry" else QUICK
        if kind != "message":
            return QUICK
        try:
            command = parse(str(payload.get("text") or ""), self.actions.today())
        except CommandError:
            return QUICK
        return LONG if self.actions.is_long(command) else QUICK

    # -- running a job (in a worker) ----------------------------------------------------------

    def run_job(self, job: Job) -> Callable[[], None] | None:
        """Take one claimed job as far as it goes quickly. Returns the slow rest (a long
        command's work) for the caller to run where it may take minutes, or None."""
        try:
            if job.exhausted:
                self._give_up(job)
                return None
            if job.state == ANSWERED:
                self._deliver(job)
                return None
            return self._start(job)
        except Exception as exc:  # noqa: BLE001 - the job is tried again, or given up
            self._failed(job, exc)
            return None

    def _start(self, job: Job) -> Callable[[], None] | None:
        if job.kind == "bot_added":
            card = cards.message_card("adsync", help_text("zh", may_change=False), "zh", "info")
            self._answer(job, card)
            return None
        if job.kind == "card_action":
            return self._start_card_action(job)
        known = Incoming.__dataclass_fields__
        incoming = Incoming(**{k: v for k, v in job.payload.items() if k in known})
        try:
            command = parse(incoming.text, self.actions.today())
        except CommandError as exc:
            title = "没看懂" if exc.lang == "zh" else "Not sure what you mean"
            self._answer(job, cards.message_card(title, str(exc), exc.lang, "info"))
            return None
        denial = check_access(
            command,
            user_id=incoming.user_id,
            chat_id=incoming.chat_id,
            chat_type=incoming.chat_type,
            settings=self.settings,
        )
        if denial is not None:
            title = "没有权限" if command.lang == "zh" else "Not allowed"
            people = denial.admins if denial.reason == "admin_only" else ()
            card = cards.message_card(title, denial.message, command.lang, "warning", people=people)
            self._answer(job, card)
            return None
        caller = Caller(
            incoming.user_id,
            incoming.chat_id,
            incoming.chat_type,
            is_admin(incoming.user_id, self.settings),
        )
        if not self.actions.is_long(command):
            card = self.actions.execute(command, caller, transient=TRANSIENT)
            self._count()
            self._answer(job, card)
            return None
        if isinstance(command, Sync):
            accounts = self._accounts_of(command)
            if self._join(job, command, accounts):
                return None
            self._release(job, self.actions.working(command), _topic(command, accounts))
            return lambda: self._finish_sync(job, command, caller, accounts, "chat")
        if isinstance(command, Export):
            self._release(job, self.actions.working(command))
            return lambda: self._guard(job, lambda: self._finish_export(job, command, caller))
        self._release(job, self.actions.working(command))

        def finish() -> None:
            self._after_earlier_long_jobs(job)
            card = self.actions.execute(command, caller, transient=TRANSIENT)
            self._count()
            self._answer(job, card)

        return lambda: self._guard(job, finish)

    def _start_card_action(self, job: Job) -> Callable[[], None] | None:
        p = job.payload
        lang = "zh" if p.get("lang") == "zh" else "en"
        user_id = str(p.get("user_id") or "")
        chat_id = str(p.get("chat_id") or job.lane)
        chat_type = str(p.get("chat_type") or "group")
        caller = Caller(user_id, chat_id, chat_type, is_admin(user_id, self.settings))
        if p.get("action") == "sync_retry":
            command = Sync(date.fromisoformat(p["start"]), date.fromisoformat(p["end"]), lang=lang)
            accounts = [str(a) for a in p.get("accounts") or []] or None
            if self._join(job, command, accounts, post=False):
                return None
            # The button's card is what gets the answer: no "working on it" card of its own.
            self._release(job, None, _topic(command, accounts))
            return lambda: self._finish_sync(job, command, caller, accounts, "retry")
        card = self.actions.execute(
            TokenRefresh(lang=lang), caller, trigger="button", transient=TRANSIENT
        )
        self._count()
        self._answer(job, card)
        return None

    # -- long commands ------------------------------------------------------------------------

    def _release(self, job: Job, working: dict[str, Any] | None, topic: str = "") -> None:
        """Post the "working on it" card (once: a job run again after a crash reuses it), let
        the chat's quick commands go past, and say what this job will do (``topic``), so that
        the same sync asked meanwhile joins it instead of running again."""
        assert self.queue is not None
        working_id = job.working_id
        if working is not None and not working_id:
            posted = self.messenger.reply(
                job.message_id, working, message_uuid("working", job.message_id)
            )
            working_id = posted.message_id
        self.queue.release(job, working_id)
        if topic:
            self.queue.publish(job, topic)

    def _join(
        self, job: Job, command: Sync, accounts: list[str] | None, *, post: bool = True
    ) -> bool:
        """Join a running sync that covers this one: answer "already running, I will update
        this card" now, and the leader's result when it has one."""
        assert self.queue is not None
        for leader_id, topic in self.queue.running_topics(SYNC_TOPIC):
            if leader_id == job.id or not _covers(topic, command.start, command.end, accounts):
                continue
            working_id = job.working_id
            if post and not working_id:
                zh = command.lang == "zh"
                text = (
                    "同样的同步正在进行中；完成后我会用它的结果更新这张卡片。"
                    if zh
                    else "This sync is already running; I will update this card with its result."
                )
                posted = self.messenger.reply(
                    job.message_id,
                    cards.working_card(text, command.lang),
                    message_uuid("working", job.message_id),
                )
                working_id = job.working_id = posted.message_id
            if self.queue.join(job, leader_id, working_id):
                log.info("job %s joined the running sync of job %s", job.id, leader_id)
                return True
        return False

    def _after_earlier_long_jobs(self, job: Job) -> None:
        """A chat's syncs and verifies do their work one at a time, in order."""
        assert self.queue is not None
        while self.queue.long_ahead(job):
            time.sleep(LONG_TURN_POLL_S)

    def _finish_sync(
        self, job: Job, command: Sync, caller: Caller, accounts: list[str] | None, trigger: str
    ) -> None:
        def finish() -> None:
            self._after_earlier_long_jobs(job)
            # A covering sync may have started while this one waited its turn (or both started
            # at the same moment): join it rather than fetch the same reports again.
            if self._join(job, command, accounts, post=False):
                return
            card, result = self.actions.execute_sync(
                command,
                caller,
                trigger,
                account_ids=accounts,
                wait=self.sync_wait,
                transient=TRANSIENT,
            )
            self._count()
            self._answer(job, card, lambda follower: self._follower_answer(follower, result, card))

        self._guard(job, finish)

    def _finish_export(self, job: Job, command: Export, caller: Caller) -> None:
        """Write the xlsx, post it under the question as a file message, then the one-line
        summary in place of the "working" card (or why the file is not there)."""
        self._after_earlier_long_jobs(job)  # "sync 2月" then "导出 2月": the sync first
        with tempfile.TemporaryDirectory(prefix="adsync-export-") as directory:
            card, made = self.actions.export_file(
                command, caller, Path(directory), transient=TRANSIENT
            )
            if made is not None:
                card = self._post_file(job, command, made) or card
        self._count()
        self._answer(job, card)

    def _post_file(self, job: Job, command: Export, made: ExportFile) -> dict[str, Any] | None:
        """Upload and post the file; None when it is in the chat, else the card saying why not.
        The post's uuid comes from the question: a job run again posts it once."""
        label = made.rows.label
        try:
            key = self.messenger.upload_file(made.written.path, "xls")  # xlsx: the "xls" type
            self.messenger.reply_file(job.message_id, key, message_uuid("file", job.message_id))
            return None
        except FileNotPostable as exc:
            log.warning("export %s of job %s not posted: %s", label, job.id, exc.message)
            return cards.export_failed_card(label, command.lang, too_large=True)
        except FeishuError as exc:
            log.warning("export %s of job %s not posted: %s", label, job.id, exc.message)
            return cards.export_failed_card(label, command.lang, code=exc.code)

    def _follower_answer(
        self, follower: Job, result: RunResult | None, card: dict[str, Any]
    ) -> dict[str, Any]:
        """The leader's result in the follower's language."""
        if result is None:
            return {"card": card}
        return {"card": cards.sync_card(result, self._lang_of(follower))}

    def _lang_of(self, job: Job) -> str:
        if job.kind == "card_action":
            return "zh" if job.payload.get("lang") == "zh" else "en"
        try:
            return parse(str(job.payload.get("text") or ""), self.actions.today()).lang
        except CommandError as exc:
            return exc.lang

    def _accounts_of(self, command: Sync) -> list[str] | None:
        try:
            return self.actions.account_ids(command)
        except Exception:  # noqa: BLE001 - not joinable; the run itself will say what is wrong
            return None

    # -- answering ----------------------------------------------------------------------------

    def _answer(
        self,
        job: Job,
        card: dict[str, Any],
        for_follower: Callable[[Job], dict[str, Any]] | None = None,
    ) -> None:
        """Store the answer, then post it."""
        assert self.queue is not None
        if not self.queue.answer(job, {"card": card}, for_follower):
            log.warning("job %s is no longer ours (its lease ran out); not answering", job.id)
            return
        self._deliver(job)

    def _deliver(self, job: Job) -> None:
        assert self.queue is not None and job.answer is not None
        card = job.answer["card"]
        if job.kind == "message":
            working = Posted(job.working_id) if job.working_id else None
            self.messenger.reply_or_update(
                job.message_id, card, message_uuid("reply", job.message_id), working
            )
        elif job.kind == "card_action":
            self.messenger.update(str(job.payload.get("message_id") or ""), card)
        else:
            chat_id = str(job.payload.get("chat_id") or job.lane)
            self.messenger.send(chat_id, card, message_uuid("welcome", chat_id))
        self.queue.done(job)

    def _guard(self, job: Job, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - tried again, or given up
            self._failed(job, exc)

    def _failed(self, job: Job, exc: BaseException) -> None:
        assert self.queue is not None
        reason = _describe(exc)
        job.error = reason
        try:
            if isinstance(exc, FeishuError) and exc.code and not exc.transient:
                # Feishu refused the post itself (the bot left the chat, the message is gone,
                # the card is malformed): another try gets the same answer, and the chat
                # cannot be told either.
                log.error("job %s (%s): Feishu refused its answer: %s", job.id, job.kind, reason)
                self.queue.give_up(job, reason)
                return
            log.warning("job %s (%s) failed on try %d: %s", job.id, job.kind, job.attempts, reason)
            self.queue.retry_later(job, reason)
        except Exception as again:  # noqa: BLE001 - its lease runs out; it is freed then
            log.error("could not put job %s back: %s", job.id, _describe(again))

    def _give_up(self, job: Job) -> None:
        """Tried too often: tell the chat (best effort), and stop."""
        assert self.queue is not None
        lang = self._lang_of(job)
        zh = lang == "zh"
        tries = job.attempts - 1
        reason = job.error or ("处理它的进程中断" if zh else "the process running it stopped")
        text = (
            f"试了 {tries} 次仍未完成（{reason}）。请稍后再发一次。"
            if zh
            else f"I tried {tries} times and could not finish this ({reason}). "
            "Please ask again in a while."
        )
        card = cards.message_card("未能完成" if zh else "Could not finish", text, lang, "error")
        try:
            if job.kind == "message":
                working = Posted(job.working_id) if job.working_id else None
                self.messenger.reply_or_update(
                    job.message_id, card, message_uuid("gave-up", job.message_id), working
                )
            elif job.kind == "card_action":
                self.messenger.update(str(job.payload.get("message_id") or ""), card)
        except Exception as exc:  # noqa: BLE001 - the job is given up either way
            log.error("could not tell chat %s that job %s failed: %s", job.lane, job.id, exc)
        log.error("job %s given up after %d tries: %s", job.id, tries, reason)
        self.queue.give_up(job, reason)

    def _count(self) -> None:
        with self._count_lock:
            self.handled += 1


def _topic(command: Sync, accounts: list[str] | None) -> str:
    """What a sync does, for another to see whether it covers it: dates and accounts."""
    scope = ",".join(sorted(accounts)) if accounts else "*"
    return f"{SYNC_TOPIC}{command.start}|{command.end}|{scope}"


def _covers(topic: str, start: date, end: date, accounts: list[str] | None) -> bool:
    """Does the running sync ``topic`` do everything a sync of ``start..end`` (of
    ``accounts``, None = all) would?"""
    try:
        _, first, last, scope = topic.split("|", 3)
        if date.fromisoformat(first) > start or date.fromisoformat(last) < end:
            return False
    except ValueError:
        return False
    if scope == "*":
        return True
    return accounts is not None and set(accounts) <= set(scope.split(","))


def _describe(exc: BaseException) -> str:
    """What failed, for the log and the chat, without the exception's text (a database error
    can carry SQL parameters)."""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message[:300]
    if isinstance(exc, OperationalError | InterfaceError):
        return "the database was unavailable"
    return type(exc).__name__


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
