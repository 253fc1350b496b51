"""Getting a message to the team, whatever state Feishu is in, without repeating ourselves.

* ``Notifier.broadcast`` posts a card to every report chat through the bot; a chat the bot
  cannot reach (app credentials broken, bot removed: 230002, Feishu down) gets it through the
  custom-bot webhook ``FEISHU_ALERT_WEBHOOK_URL`` instead, signed as the platform checks it.
* ``Notifier.alert`` sends one problem at most once per 6 hours, across processes (a
  conditional update in the database decides who sends; a send nobody received does not
  count), and ``resolve`` sends a single "all clear" once the problem is gone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from adsync.bot import cards
from adsync.bot.messenger import Messenger, message_uuid
from adsync.sync.config import Settings
from adsync.sync.store import Store, alerts, utcnow

log = logging.getLogger("adsync.alerts")

REPEAT_AFTER = timedelta(hours=6)
WEBHOOK_LIMIT = 20 * 1024  # the custom bot refuses request bodies above 20 KB
WEBHOOK_ENVELOPE = 512  # msg_type, timestamp, sign and keys around the card


def webhook_sign(timestamp: int, secret: str) -> str:
    """Feishu custom-bot signature: HMAC-SHA256 keyed by "timestamp\\nsecret" over nothing."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", digestmod=hashlib.sha256).digest()).decode()


@dataclass
class Delivered:
    chat_id: str
    via: str  # bot | webhook | failed
    message_id: str = ""
    error: str = ""


class Notifier:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        messenger: Messenger | None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.messenger = messenger
        self.now = now

    # -- delivery -----------------------------------------------------------------------------

    def broadcast(
        self, card: dict[str, Any], key: str, chats: Sequence[str] | None = None
    ) -> list[Delivered]:
        """``card`` to every report chat (or to ``chats`` of them). ``key`` names the occasion
        (for the message uuid)."""
        chats = self.settings.feishu_report_chat_ids if chats is None else chats
        if not chats:
            if self._webhook(card):
                return [Delivered("(webhook)", "webhook")]
            log.error("no FEISHU_REPORT_CHAT_IDS and no webhook: could not deliver %s", key)
            return [Delivered("", "failed", error="no report chats configured")]
        out = []
        webhook_used = False
        for chat_id in chats:
            try:
                if self.messenger is None:
                    raise RuntimeError("the bot is not configured")
                posted = self.messenger.send(chat_id, card, message_uuid(key, chat_id))
                out.append(Delivered(chat_id, "bot", posted.message_id))
            except Exception as exc:  # noqa: BLE001 - any bot failure falls back to the webhook
                # The reason rides into the webhook's message: our own errors' words only,
                # never a library's exception text.
                reason = getattr(exc, "message", None) or type(exc).__name__
                log.error("could not post %s to %s through the bot: %s", key, chat_id, reason)
                # One webhook post covers every chat that failed: it is a single group.
                if not webhook_used and self._webhook(
                    card, note=f"(bot delivery failed: {reason})"
                ):
                    webhook_used = True
                    out.append(Delivered(chat_id, "webhook"))
                else:
                    out.append(
                        Delivered(chat_id, "webhook" if webhook_used else "failed", error=reason)
                    )
        return out

    def _webhook(self, card: dict[str, Any], note: str = "") -> bool:
        url = self.settings.feishu_alert_webhook_url
        if url is None:
            return False
        import requests

        raw = self._webhook_body(card, note)
        try:
            # The bytes measured are the bytes sent: requests' json= would re-serialise with
            # ensure_ascii, doubling every 中文 character (3 bytes -> a 6-byte \uXXXX escape).
            response = requests.post(
                url.reveal(),
                data=raw,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=10,
            )
            answer = response.json() if response.content else {}
        except (requests.RequestException, ValueError) as exc:
            log.error("the alert webhook failed: %s", type(exc).__name__)
            return False
        code = answer.get("code", answer.get("StatusCode", 0))
        if response.status_code != 200 or code not in (0, None):
            log.error("the alert webhook refused the message: %s %s", code, answer.get("msg"))
            return False
        return True

    def _webhook_body(self, card: dict[str, Any], note: str) -> bytes:
        """The custom-bot request body, at most ``WEBHOOK_LIMIT`` bytes as sent: the card fitted
        to the limit (there it is an object, smaller than the escaped string ``card_size``
        counts), or, if even that cannot fit, the card as text cut to the bytes left."""
        fitted = cards.fit(card, WEBHOOK_LIMIT - WEBHOOK_ENVELOPE)
        raw = self._signed({"msg_type": "interactive", "card": fitted})
        if len(raw) <= WEBHOOK_LIMIT:
            return raw
        text = cards.to_text(card) + (f"\n{note}" if note else "")
        lo, hi = 0, len(text)  # the longest prefix of the text whose body fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(self._signed(_text_body(text[:mid]))) <= WEBHOOK_LIMIT:
                lo = mid
            else:
                hi = mid - 1
        return self._signed(_text_body(text[:lo]))

    def _signed(self, body: dict[str, Any]) -> bytes:
        secret = self.settings.feishu_alert_webhook_secret
        if secret is not None:
            timestamp = int(time.time())
            body = {
                **body,
                "timestamp": str(timestamp),
                "sign": webhook_sign(timestamp, secret.reveal()),
            }
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    # -- problems -----------------------------------------------------------------------------

    def alert(
        self,
        problem: str,
        title: str,
        lines: Sequence[str],
        *,
        buttons: Sequence[tuple[str, str]] = (),
        severity: str = "error",
        people: Sequence[str] = (),
    ) -> bool:
        """Send this problem unless it was sent in the last 6 hours; True if sent.
        ``people``: open_ids @-mentioned (the admins who can fix it)."""
        now = self.now()
        if not self._claim_send(problem, " | ".join(lines)[:1000], now):
            return False
        card = cards.alert_card(
            title, lines, severity=severity, buttons=buttons, lang="zh", people=people
        )
        # The uuid names this claim, not a 6-hour slot: a problem that comes back after its
        # all clear must post again, and the platform drops a repeated uuid for an hour.
        delivered = self.broadcast(card, f"alert:{problem}:{now.isoformat()}")
        if any(d.via != "failed" for d in delivered):
            return True
        # Nobody heard it (bot and webhook both failed): give the claim back, or the problem
        # would stay silent for 6 hours after Feishu recovers.
        with self.store.begin() as conn:
            conn.execute(
                update(alerts)
                .where(alerts.c.problem == problem, alerts.c.last_sent == now)
                .values(last_sent=None)
            )
        return False

    def resolve(self, problem: str, title: str, lines: Sequence[str] = ()) -> bool:
        """Send one "all clear" if ``problem`` was open; True if sent."""
        now = self.now()
        with self.store.begin() as conn:
            closed = conn.execute(
                update(alerts)
                .where(alerts.c.problem == problem, alerts.c.cleared_at.is_(None))
                .values(cleared_at=now)
            ).rowcount
        if not closed:
            return False
        card = cards.alert_card(
            title, list(lines) or ["已恢复正常 · all clear"], severity="ok", lang="zh"
        )
        self.broadcast(card, f"clear:{problem}:{int(now.timestamp())}")
        return True

    def open_problems(self) -> list[str]:
        query = select(alerts.c.problem).where(alerts.c.cleared_at.is_(None))
        return [r.problem for r in self.store.read(lambda conn: conn.execute(query).all())]

    def _claim_send(self, problem: str, detail: str, now: datetime) -> bool:
        """Atomically: record the problem, and decide whether this process sends it now."""
        try:
            with self.store.begin() as conn:
                conn.execute(
                    insert(alerts).values(
                        problem=problem, first_seen=now, last_seen=now, last_sent=now, detail=detail
                    )
                )
            return True
        except IntegrityError:
            pass
        with self.store.begin() as conn:
            sent = conn.execute(
                update(alerts)
                .where(alerts.c.problem == problem)
                .where(
                    alerts.c.cleared_at.is_not(None)
                    | alerts.c.last_sent.is_(None)
                    | (alerts.c.last_sent <= now - REPEAT_AFTER)
                )
                .values(last_sent=now, last_seen=now, cleared_at=None, detail=detail)
            ).rowcount
            if not sent:
                conn.execute(
                    update(alerts).where(alerts.c.problem == problem).values(last_seen=now)
                )
        return bool(sent)


def _text_body(text: str) -> dict[str, Any]:
    return {"msg_type": "text", "content": {"text": text}}
