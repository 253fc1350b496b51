"""The daily report card of a day, and posting it to the report chats once per chat and day.

Three callers, one card: the clock after the 07:00 run (and after each retry), `adsync report
[DATE] [--post]` and the chat's `report [DATE]` all build it with ``report_card`` from the
same result object (``adsync.sync.dailyreport``), so what the command prints is what the
group got.

Posting keeps a record per day (notification ``report:YYYY-MM-DD``: chat -> message, when,
by whom), written under the lease ``job:report:YYYY-MM-DD``: the clock and an operator's
``--post`` at the same moment take turns, and the second finds the chat already has the
day's report. A chat that has it gets nothing new from ``--post``; the clock updates it in
place with the morning's numbers instead of posting again. The message uuid is derived from
the day and the chat, as the clock always did, so even a crash between posting and
recording posts nothing twice (the platform drops a repeated uuid for an hour).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from adsync.bot import cards
from adsync.sync.dailyreport import daily_report
from adsync.sync.errors import AdsyncError
from adsync.sync.leases import holding
from adsync.sync.services import Services
from adsync.sync.store import Store, actor, notifications

if TYPE_CHECKING:  # the notifier imports lark-oapi; `adsync report` without --post never does
    from adsync.bot.alerts import Notifier

log = logging.getLogger("adsync.report")

REPORT_LEASE = timedelta(minutes=5)
REPORT_WAIT_S = 60.0  # a post in progress (a few chats, seconds) is waited for, not raced


def report_card(services: Services, day: date, lang: str = "zh") -> cards.Card:
    """The daily report card of ``day`` (the clock posts it in Chinese)."""
    return cards.report_card(daily_report(services, day), lang)


def record_key(day: date) -> str:
    return f"report:{day}"


@dataclass
class ChatPost:
    """What became of the day's report in one chat."""

    chat_id: str
    outcome: str  # posted | already | updated | webhook | failed
    message_id: str = ""
    at: str = ""  # ISO time (UTC) it was first posted
    by: str = ""  # clock | cli | …
    error: str = ""

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass
class Posting:
    day: date
    chats: list[ChatPost] = field(default_factory=list)

    @property
    def messages(self) -> dict[str, str]:
        """chat -> message id of every chat that has the day's report (the clock's record)."""
        return {c.chat_id: c.message_id for c in self.chats if c.message_id}

    @property
    def failed(self) -> list[ChatPost]:
        return [c for c in self.chats if c.outcome == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {"date": self.day.isoformat(), "chats": [c.to_json() for c in self.chats]}


def post_report(
    services: Services,
    notifier: Notifier,
    day: date,
    *,
    by: str,
    update_existing: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    wait: float = REPORT_WAIT_S,
) -> Posting:
    """The day's report card to every report chat that does not have it yet. Chats that have
    it are left alone, or (``update_existing``: the clock, with fresher numbers) updated in
    place. Raises ``Busy`` if another process keeps the day's lease longer than ``wait``."""
    store = services.store
    key = record_key(day)
    holder = f"{actor()}:report:{threading.get_ident()}"  # two threads never share a turn
    with holding(store, [f"job:{key}"], holder, ttl=REPORT_LEASE, wait=wait):
        record = posted_reports(store, day)
        card = report_card(services, day)
        posting = Posting(day)
        chats = list(services.settings.feishu_report_chat_ids)
        for chat_id in chats:
            had = record.get(chat_id)
            if had is None:
                continue
            post = ChatPost(chat_id, "already", had.get("message_id", ""), had.get("at", ""))
            post.by = had.get("by", "")
            if update_existing and post.message_id and notifier.messenger is not None:
                try:
                    notifier.messenger.update(post.message_id, card)
                    post.outcome = "updated"
                except AdsyncError as exc:
                    log.warning("could not update the report card in %s: %s", chat_id, exc.message)
            posting.chats.append(post)
        missing = [c for c in chats if c not in record]
        if missing or not chats:  # no chats at all: the notifier's webhook, as for alerts
            at = now().astimezone(UTC).isoformat(timespec="seconds")
            for d in notifier.broadcast(card, key, missing if chats else None):
                if d.via == "failed":
                    posting.chats.append(ChatPost(d.chat_id, "failed", error=d.error))
                    continue
                outcome = "posted" if d.via == "bot" else "webhook"
                posting.chats.append(ChatPost(d.chat_id, outcome, d.message_id, at, by))
                if d.chat_id in chats:
                    record[d.chat_id] = {"message_id": d.message_id, "at": at, "by": by}
            _save(store, key, record, now())
        order = {c: n for n, c in enumerate(chats)}
        posting.chats.sort(key=lambda c: order.get(c.chat_id, len(order)))
        return posting


def refresh_reports(services: Services, notifier: Notifier, day: date) -> int:
    """Every report card of ``day`` already in a chat shows the current numbers (after a
    retry). Returns how many were updated."""
    messenger = notifier.messenger
    if messenger is None:
        return 0
    posted = posted_reports(services.store, day)
    ids = [p["message_id"] for p in posted.values() if p.get("message_id")]
    if not ids:
        return 0
    card = report_card(services, day)
    done = 0
    for message_id in ids:
        try:
            messenger.update(message_id, card)
            done += 1
        except AdsyncError as exc:
            log.warning("could not update the report card: %s", exc.message)
    return done


def posted_reports(store: Store, day: date) -> dict[str, dict[str, str]]:
    """chat -> {message_id, at, by} of the day's report in each chat that has it. Includes
    what the clock recorded before this record existed (its daily record, ``reports``)."""
    out: dict[str, dict[str, str]] = {}
    legacy, legacy_at = _load(store, f"daily:{day + timedelta(days=1)}")
    for chat_id, message_id in ((legacy or {}).get("reports") or {}).items():
        out[chat_id] = {"message_id": message_id, "at": legacy_at, "by": "clock"}
    out.update(_load(store, record_key(day))[0] or {})
    return out


def _load(store: Store, key: str) -> tuple[dict[str, Any] | None, str]:
    query = select(notifications).where(notifications.c.key == key)
    row = store.read(lambda conn: conn.execute(query).first())
    if row is None or not row.detail:
        return None, ""
    return json.loads(row.detail), row.sent_at.astimezone(UTC).isoformat(timespec="seconds")


def _save(store: Store, key: str, record: dict[str, Any], now: datetime) -> None:
    detail = json.dumps(record, ensure_ascii=False)
    with store.begin() as conn:
        changed = conn.execute(
            update(notifications).where(notifications.c.key == key).values(detail=detail)
        ).rowcount
        if not changed:
            conn.execute(insert(notifications).values(key=key, sent_at=now, detail=detail))


__all__ = [
    "ChatPost",
    "Posting",
    "post_report",
    "posted_reports",
    "record_key",
    "refresh_reports",
    "report_card",
]
