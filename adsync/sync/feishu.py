"""The one lark-oapi client adsync uses, and one way to call it.

lark-oapi manages the tenant_access_token itself but never drops a token the platform refused
(99991663/99991664) and never retries; ``FeishuCaller.call`` adds both: a refused token is
dropped from the cache and the call retried once; transient failures (rate limits, write
conflicts, timeouts) are retried with backoff. Importing this module imports lark-oapi (seconds,
175 MB): only commands that talk to Feishu import it.

Rate limits wait for the limit's window, not the generic backoff: the platform's answer says how
long (HTTP 429, 99991400, header ``x-ogw-ratelimit-reset`` in seconds: "使用该响应头延迟请求是
解除限频的最好方法", 频控策略 page), and the IM limits without that header (230020: 5 messages a
second per chat; 11232/11233) free up within a second. A retry sooner than that only spends an
attempt on the same refusal.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lark_oapi as lark
import requests
from lark_oapi.core.cache import ICache
from lark_oapi.core.exception import ObtainAccessTokenException

from adsync.sync.config import Settings
from adsync.sync.errors import AdsyncError

log = logging.getLogger("adsync.feishu")

TOKEN_REFUSED = frozenset({99991661, 99991663, 99991664})
# Rate limits: the gateway's (99991400, HTTP 429), the Bitable's (1254290), the IM's (230020 on
# the send/reply pages: 5 QPS per chat or user; 11232/11233 in the server error codes).
RATE_LIMITED = frozenset({99991400, 1254290, 230020, 11232, 11233, 429})
# Retried with backoff: rate limits, table write conflicts, data not ready, timeouts.
TRANSIENT = RATE_LIMITED | {1254291, 1254607, 1255040, 1254608}
RATE_WINDOW = 1.0  # seconds: the per-second windows (5/s per chat, 50/s per app)
RESET_CAP = 60.0  # seconds: the longest window (1,000 a minute); a larger reset is not trusted
MEANINGS = {
    1254291: "write conflict (another write to this table was in progress)",
    1254607: "data not ready",
    1254290: "too many requests",
    1255040: "Feishu timed out",
    99991400: "rate limited",
    230020: "too many messages (5 a second per chat)",
    11232: "too many messages (rate limited)",
    11233: "too many messages (rate limited)",
    1254103: "the table is full (20,000 rows)",
    1254045: "a field name does not exist in the table",
    1254040: "the Bitable app_token does not exist",
    1254041: "the table does not exist",
    1254013: "a table of that name already exists in the Base",
    1254100: "the Base holds its maximum of 100 tables and dashboards",
    1254302: "no permission on this Base (add the app as a collaborator)",
    1254020: "a view of that name already exists in the table",
    1254021: "a view needs a name",
    1254022: "the view name is refused (1-100 characters, no [ ])",
    1254042: "the view does not exist",
    1254044: "a field id does not exist in the table",
    1254101: "the table holds its maximum of 200 views",
    99991663: "tenant access token invalid",
    99991672: "the app lacks a permission scope",
    10014: "app secret wrong",
    10015: "app secret wrong",
    230002: "the bot is not in this chat",
    230025: "the message is too large",
}


class FeishuError(AdsyncError):
    def __init__(self, what: str, code: int, msg: str, log_id: str = "") -> None:
        meaning = MEANINGS.get(code, "")
        text = f"Feishu {what} failed: {code}"
        if meaning:
            text += f" {meaning}"
        if msg and msg != meaning:
            text += f" ({msg})"
        if log_id:
            text += f" [log_id {log_id}]"
        super().__init__(text, hint=_hint(code))
        self.code = code
        self.platform_message = msg
        self.log_id = log_id

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT or 500 <= self.code < 600

    @property
    def rate_limited(self) -> bool:
        return self.code in RATE_LIMITED

    @property
    def outcome_unknown(self) -> bool:
        """Whether the request may have been applied although it failed: no answer came (a
        timeout, a dropped connection: code 0), a gateway answered for a platform that did not
        (5xx), Feishu's own timeout (1255040), or the same ``client_token`` still in progress
        (1254608). A write that failed this way is read back before it is called failed."""
        return self.code == 0 or 500 <= self.code < 600 or self.code in (1255040, 1254608)


def _hint(code: int) -> str:
    if code in (1254040, 1254041, 1254003, 1254004):
        return "check FEISHU_BITABLE_APP_TOKEN and FEISHU_BITABLE_TABLE_ID"
    if code in (1254302, 1254304, 91403):
        return "open the Base, add the app as a collaborator with edit rights"
    if code in (10014, 10015, 10003):
        return "check FEISHU_APP_ID and FEISHU_APP_SECRET"
    if code == 230002:
        return "add the bot to the chat, or fix FEISHU_REPORT_CHAT_IDS"
    if code == 1254100:
        return "move old tables to another Base (or delete unused ones and dashboards)"
    if code == 1254101:
        return "delete views nobody uses in that table, then run `adsync views`"
    if code == 1254103:
        return "start a new table (FEISHU_BITABLE_TABLE_ID) or archive old rows"
    return "retry later; if it persists, run `adsync doctor`"


class TokenCache(ICache):
    """lark-oapi's token cache, made thread-safe, inspectable and invalidatable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[str, float]] = {}

    def get(self, key: str) -> str:
        with self._lock:
            item = self._items.get(key)
            return item[0] if item and item[1] > time.time() else ""

    def set(self, key: str, value: str, expire: int) -> None:  # expire: absolute unix seconds
        with self._lock:
            self._items[key] = (value, float(expire))

    def ttl(self, key: str) -> float | None:
        with self._lock:
            item = self._items.get(key)
        return None if item is None else item[1] - time.time()

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


def make_client(settings: Settings, timeout: float | None = None) -> lark.Client:
    settings.require("FEISHU_APP_ID", "FEISHU_APP_SECRET")
    assert settings.feishu_app_id and settings.feishu_app_secret
    return (
        lark.Client.builder()
        .app_id(settings.feishu_app_id)
        .app_secret(settings.feishu_app_secret.reveal())
        .domain(settings.feishu_domain)
        .timeout(timeout or settings.http_timeout)
        .cache(TOKEN_CACHE)
        .log_level(lark.LogLevel.ERROR)
        .build()
    )


# lark-oapi keeps its token cache process-wide (a class attribute); this is the one instance.
TOKEN_CACHE = TokenCache()


@dataclass
class FeishuCaller:
    """Calls lark-oapi with retries; counts calls (for run results and benchmarks)."""

    client: lark.Client
    attempts: int = 6
    base_delay: float = 0.5
    cap: float = 8.0
    sleep: Callable[[float], None] = time.sleep
    calls: int = 0
    retries: int = 0
    rate_limited: int = 0  # answers that were rate limits (each retried after its window)
    _rng: random.Random = field(default_factory=random.Random)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, what: str, fn: Callable[[Any], Any], request: Any) -> Any:
        """``fn(request)`` -> the successful response; raises FeishuError naming ``what``."""
        refreshed = False
        attempt = 0
        while True:
            reset: float | None = None
            with self._lock:
                self.calls += 1
            try:
                response = fn(request)
            except requests.RequestException as exc:
                error = FeishuError(what, 0, f"no answer ({type(exc).__name__})")
            except json.JSONDecodeError:
                # lark-oapi parses the body before we see the status: a gateway's plain-text
                # 429/502 page surfaces as a JSON error. Retry it like an answer that never came.
                error = FeishuError(what, 0, "no readable answer (not JSON)")
            except ObtainAccessTokenException as exc:
                error = FeishuError("tenant_access_token", int(exc.code or 0), str(exc.msg))
                if not error.transient:  # a wrong secret stays wrong; a rate limit passes
                    raise error from None
            else:
                if response.success():
                    return response
                code = int(response.code or 0)
                status = getattr(response.raw, "status_code", 0) or 0
                if status == 429 and not code:
                    code = 429
                error = FeishuError(
                    what, code, str(response.msg or ""), response.get_log_id() or ""
                )
                reset = _reset_after(response)
                if code in TOKEN_REFUSED and not refreshed:
                    # lark-oapi would keep the refused token until its own expiry: drop it.
                    TOKEN_CACHE.drop(f"self_tenant_token:{self.client._config.app_id}")
                    refreshed = True
                    continue
                if not (error.transient or error.code == 0):
                    raise error
            attempt += 1
            if attempt >= self.attempts:
                raise error
            backoff = min(self.cap, self.base_delay * 2 ** (attempt - 1))
            if error.rate_limited:
                # The limit's own window (or what the platform says), then a little jitter so
                # that callers limited together do not come back together.
                wait = max(reset if reset is not None else RATE_WINDOW, backoff)
                delay = wait + self._rng.uniform(0, wait / 4)
            else:
                delay = self._rng.uniform(0, backoff)
            with self._lock:
                self.retries += 1
                self.rate_limited += error.rate_limited
            log.info("%s: %s; retry %d in %.2fs", what, error.message, attempt, delay)
            self.sleep(delay)


def _reset_after(response: Any) -> float | None:
    """Seconds the platform asks a rate-limited caller to wait (``x-ogw-ratelimit-reset``),
    bounded to [0, RESET_CAP]; None when it does not say."""
    headers = getattr(response.raw, "headers", None) or {}
    for key, value in headers.items():
        if str(key).lower() == "x-ogw-ratelimit-reset":
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None
            return min(max(seconds, 0.0), RESET_CAP) if seconds == seconds else None
    return None


def tenant_token_ttl(settings: Settings) -> float | None:
    """Seconds left on the cached tenant token (None if none is cached in this process)."""
    return TOKEN_CACHE.ttl(f"self_tenant_token:{settings.feishu_app_id}")


def require_bitable(settings: Settings) -> tuple[str, str]:
    settings.require("FEISHU_BITABLE_APP_TOKEN", "FEISHU_BITABLE_TABLE_ID")
    assert settings.feishu_bitable_app_token and settings.feishu_bitable_table_id
    return settings.feishu_bitable_app_token, settings.feishu_bitable_table_id


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


__all__ = [
    "FeishuCaller",
    "FeishuError",
    "TOKEN_CACHE",
    "make_client",
    "require_bitable",
    "tenant_token_ttl",
    "dumps",
]
