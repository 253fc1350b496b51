"""What ``POST /feishu/events`` checks before lark-oapi sees a body, and how it says no.

Anyone on the internet can post to the webhook, so the bytes are judged here first, cheaply
and in an order that gives nothing away:

1. The webhook needs ``FEISHU_ENCRYPT_KEY``: with it the platform encrypts every body and
   signs every event (``X-Lark-Signature = sha256(timestamp + nonce + key + body)``); without
   it anyone could post a plaintext event claiming an admin's open_id. No key, no endpoint
   (503, and ``/healthz`` and ``adsync doctor`` name the setting).
2. The body must be a JSON object ``{"encrypt": "<base64>"}`` — the only shape the platform
   sends once a key is set. Any other body (not JSON, 100,000 ``[``, 50,000 nested
   ``{"a":``, which make ``json.loads`` raise RecursionError, not ValueError) is a 400.
3. A signed request's signature is checked here, in constant time, before anything is
   decrypted: a forger learns nothing about the ciphertext (no padding oracle). Only the
   platform's ``url_verification`` challenge comes unsigned; lark-oapi answers it, and any
   other unsigned body is refused with one fixed answer whatever went wrong inside.

Every refusal answers a fixed short reason (never exception text), and is logged as one line;
a flood is summarised (the first refusal of a minute is logged, the rest counted by reason and
logged once when the minute is over), so garbage cannot fill the log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from adsync.sync.config import Settings
from adsync.sync.errors import ConfigError

TIMESTAMP, NONCE, SIGNATURE = "X-Lark-Request-Timestamp", "X-Lark-Request-Nonce", "X-Lark-Signature"


@dataclass(frozen=True)
class Refusal:
    """One kind of refusal: the HTTP status and the fixed text the caller gets."""

    status: int
    reason: str


NOT_CONFIGURED = Refusal(503, "webhook not configured")
TOO_LARGE = Refusal(413, "body too large")
NOT_JSON = Refusal(400, "body is not a JSON object")
NOT_ENCRYPTED = Refusal(400, "body is not an encrypted event")
BAD_SIGNATURE = Refusal(401, "bad signature")
UNSIGNED = Refusal(401, "unsigned request")
BAD_TOKEN = Refusal(401, "bad verification token")
NOT_AN_EVENT = Refusal(400, "not a valid event")


def webhook_key_problem(settings: Settings) -> ConfigError | None:
    """Why the HTTP event endpoint cannot be opened, or None."""
    if settings.feishu_encrypt_key:
        return None
    return ConfigError(
        "FEISHU_ENCRYPT_KEY is not set: without it the webhook cannot tell Feishu's events "
        "from anyone's, so /feishu/events refuses every request",
        hint="copy the Encrypt Key (and the Verification Token) from the Feishu console "
        "(Events & Callbacks → Encryption Strategy) into FEISHU_ENCRYPT_KEY and "
        "FEISHU_VERIFICATION_TOKEN, or take events over the long connection with "
        "`adsync serve --ws`, which needs neither",
    )


def screen(raw: bytes, headers: Mapping[str, str], encrypt_key: str) -> tuple[Refusal | None, bool]:
    """(refusal or None, whether the request is signed) for a body about to reach lark-oapi."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: deep nesting, not a ValueError
        return NOT_JSON, False
    if not isinstance(body, dict):
        return NOT_JSON, False
    if not isinstance(body.get("encrypt"), str) or not body["encrypt"]:
        return NOT_ENCRYPTED, False
    stamp, nonce, signature = (headers.get(h) for h in (TIMESTAMP, NONCE, SIGNATURE))
    if stamp is None and nonce is None and signature is None:
        return None, False  # may be the url_verification challenge; lark-oapi decides
    if not (stamp and nonce and signature):
        return BAD_SIGNATURE, True
    expected = hashlib.sha256((stamp + nonce + encrypt_key).encode("utf-8") + raw).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return BAD_SIGNATURE, True
    return None, True


def dispatcher_refusal(message: str, signed: bool) -> Refusal:
    """The refusal for lark-oapi's own non-200 answer (its ``msg`` only picks the kind)."""
    if not signed:
        return UNSIGNED  # one answer for every unsigned failure: nothing to learn from it
    if "verification_token" in message:
        return BAD_TOKEN
    return NOT_AN_EVENT


class RefusalLog:
    """One line per refusal, but at most one per ``interval`` seconds: later refusals of the
    interval are counted by reason and summarised in one line when it ends."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._held: Counter[str] = Counter()
        self._timer: threading.Timer | None = None

    def refused(self, refusal: Refusal, peer: str) -> None:
        now = self._clock()
        with self._lock:
            if self._window_start is not None and now - self._window_start < self._interval:
                self._held[refusal.reason] += 1
                if self._timer is None:
                    left = self._interval - (now - self._window_start)
                    self._timer = threading.Timer(left, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
            held = self._take()
            self._window_start = now
        if held:
            self._log.warning(held)
        self._log.warning(
            "refused a /feishu/events request from %s: %s (%d)",
            peer or "?",
            refusal.reason,
            refusal.status,
        )

    def flush(self) -> None:
        """Log the summary of the interval so far (the timer calls it when the interval ends)."""
        with self._lock:
            held = self._take()
            self._window_start = None
        if held:
            self._log.warning(held)

    def _take(self) -> str:
        """The summary line of the held refusals, and forget them (lock held)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._held:
            return ""
        total = sum(self._held.values())
        parts = ", ".join(f"{reason} {n}" for reason, n in self._held.most_common())
        self._held.clear()
        return (
            f"refused {total} more /feishu/events requests in the last "
            f"{self._interval:.0f} s: {parts}"
        )


class DispatcherTracebacks(logging.Filter):
    """Drops lark-oapi's "handle event failed" records (a traceback for every refused body);
    the app logs its own one-line refusal instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("handle event failed")


def quiet_dispatcher_tracebacks() -> None:
    """Install the filter on lark-oapi's logger (``Lark``), once per process."""
    lark_logger = logging.getLogger("Lark")
    if not any(isinstance(f, DispatcherTracebacks) for f in lark_logger.filters):
        lark_logger.addFilter(DispatcherTracebacks())
