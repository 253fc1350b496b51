"""Ocean Engine Open API over ``requests``: the envelope, typed errors by code family, retries,
a client-side rate limit, and pagination.

Every response is HTTP 200 with a business ``code``; ``code != 0`` is an error. Families:

* transient — 40100 (rate limited), 5xxxx, HTTP 5xx/429, timeouts: bounded exponential backoff
  with full jitter, then ``TransientError``;
* access token dead — 40102, 40104, 40105: ``AccessTokenRejected``; ``OceanEngineAPI`` refreshes
  once through the token manager and retries once;
* authorization dead — 40103, 40107, 40108: ``AuthorizationDead`` at once (no retry storm); 40110
  too, but only from the OAuth endpoints (``/open_api/oauth2/``), where it means "auth_code已过期"
  (the real answer recorded in the reference notes §1.2). Elsewhere 40110 is the developer rate
  limit ("开发者频控", westng/oceanengine-sdk-php ERROR_CODES_GUIDE.md, which retries it): transient;
* permanent — 40001, 40002, 40118 and anything unknown: ``PermanentError``, no retry.

Request parameters follow the official Go SDK ``oceanengine/ad_open_sdk_go`` (v1.1.93, generated
from the platform's OpenAPI spec): the models named at each call below.

There is no official Python SDK; this module is the whole client.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from adsync.sync.errors import AdsyncError, AuthorizationNeeded

log = logging.getLogger("adsync.oceanengine")

TRANSIENT_CODES = frozenset({40100, 50000})
ACCESS_TOKEN_DEAD = frozenset({40102, 40104, 40105})
AUTHORIZATION_DEAD = frozenset({40103, 40107, 40108})
AUTH_CODE_REFUSED = 40110  # on /open_api/oauth2/ only; elsewhere the developer rate limit
OAUTH_PATHS = "/open_api/oauth2/"
PERMANENT_CODES = frozenset({40001, 40002, 40118})

CODE_MEANINGS = {
    40001: "bad parameter",
    40002: "no permission for this account",
    40100: "too many requests",
    40101: "app id or secret rejected",
    40102: "access token expired",
    40103: "refresh token expired",
    40104: "access token missing",
    40105: "access token invalid",
    40107: "refresh token invalid (already used or revoked)",
    40108: "wrong grant type",
    40110: "authorization code expired or already used",
    40118: "the app has no permission for this API",
    50000: "Ocean Engine system error",
}


def meaning_of(code: int, path: str = OAUTH_PATHS) -> str:
    if code == AUTH_CODE_REFUSED and not is_oauth(path):
        return "too many requests (developer rate limit)"
    return CODE_MEANINGS.get(code, "")


class OceanEngineError(AdsyncError):
    """An Ocean Engine call failed. ``code`` is the business code (or HTTP status, or 0)."""

    def __init__(self, path: str, code: int, message: str, request_id: str = "") -> None:
        meaning = meaning_of(code, path)
        text = f"Ocean Engine {path} failed: {code}"
        if meaning:
            text += f" {meaning}"
        if message and message != meaning:
            text += f" ({message})"
        if request_id:
            text += f" [request_id {request_id}]"
        super().__init__(text, hint=self.default_hint)
        self.path = path
        self.code = code
        self.platform_message = message
        self.request_id = request_id

    default_hint = ""


class TransientError(OceanEngineError):
    default_hint = (
        "Ocean Engine is busy or unreachable; it was retried — try again in a few minutes"
    )


class AccessTokenRejected(OceanEngineError):
    default_hint = "the access token was refused; adsync refreshes it once and retries"


class PermanentError(OceanEngineError):
    default_hint = (
        "this will not succeed by retrying; check the account id and the app's permissions"
    )


class AuthorizationDead(AuthorizationNeeded):
    """The refresh token or auth code is gone: a person must authorize again."""

    def __init__(self, path: str, code: int, message: str, request_id: str = "") -> None:
        meaning = meaning_of(code, path) or "authorization rejected"
        super().__init__(f"Ocean Engine {path} refused the authorization: {code} {meaning}")
        self.path = path
        self.code = code
        self.platform_message = message
        self.request_id = request_id


def is_oauth(path: str) -> bool:
    return path.startswith(OAUTH_PATHS)


def classify(
    path: str, code: int, message: str, request_id: str = ""
) -> OceanEngineError | AuthorizationDead:
    if code == AUTH_CODE_REFUSED:
        if is_oauth(path):
            return AuthorizationDead(path, code, message, request_id)
        return TransientError(
            path, code, message or "developer rate limit (开发者频控)", request_id
        )
    if code in TRANSIENT_CODES or code >= 50000:
        return TransientError(path, code, message, request_id)
    if code in ACCESS_TOKEN_DEAD:
        return AccessTokenRejected(path, code, message, request_id)
    if code in AUTHORIZATION_DEAD:
        return AuthorizationDead(path, code, message, request_id)
    return PermanentError(path, code, message, request_id)


@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(cap, base * 2**n))."""

    attempts: int = 5  # the first try and four retries
    base: float = 0.5
    cap: float = 8.0

    def delay(self, retry_number: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap, self.base * (2**retry_number)))


class RateLimiter:
    """At most ``rate`` calls per second from this process, evenly spaced, shared by threads."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            time.sleep(wait)


@dataclass(frozen=True)
class TokenGrant:
    """What the OAuth endpoints return: a token pair, its lifetimes, and the granted accounts."""

    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    advertiser_ids: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never print the tokens
        return (
            f"TokenGrant(expires_in={self.expires_in}, refresh_expires_in="
            f"{self.refresh_expires_in}, advertiser_ids={self.advertiser_ids})"
        )


@dataclass
class CallStats:
    calls: int = 0
    retries: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, path: str, retry: bool) -> None:
        with self._lock:
            self.calls += 1
            self.retries += int(retry)
            self.by_path[path] = self.by_path.get(path, 0) + 1


def encode_params(params: dict[str, Any]) -> dict[str, str]:
    """Arrays and objects go as JSON strings (the platform rejects ``a=1&a=2`` and Python reprs)."""
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, list | tuple | dict):
            out[key] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        else:
            out[key] = str(value)
    return out


class OceanEngineClient:
    """One ``requests`` session with timeouts, the envelope, retries and a rate limit."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 20.0,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        pool_size: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (min(5.0, timeout), timeout)  # connect, read
        self.retry = retry or RetryPolicy()
        self.limiter = limiter
        self.stats = CallStats()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._pool_size = pool_size
        self._session: Any = None
        self._session_lock = threading.Lock()

    @property
    def session(self) -> Any:
        """The ``requests`` session, made on first use: `adsync token status` never pays for
        importing requests."""
        with self._session_lock:
            if self._session is not None:
                return self._session
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=self._pool_size, pool_maxsize=self._pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = "adsync/0.1"
            self._session = session
            return session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        access_token: str | None = None,
    ) -> dict[str, Any]:
        """Call ``path`` and return the envelope's ``data``; transient failures are retried."""
        last: OceanEngineError | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                self._sleep(self.retry.delay(attempt - 1, self._rng))
            try:
                return self._once(method, path, params, body, access_token, retry=bool(attempt))
            except TransientError as exc:
                last = exc
                # DEBUG (`-v`): the run says the outcome once per cause, with its count; a
                # WARNING per attempt and account made one outage 70 lines.
                log.debug("%s (attempt %d of %d)", exc.message, attempt + 1, self.retry.attempts)
        assert last is not None
        raise last

    def _once(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: dict[str, Any] | None,
        access_token: str | None,
        retry: bool,
    ) -> dict[str, Any]:
        if self.limiter is not None:
            self.limiter.acquire()
        headers = {"X-Request-Id": uuid.uuid4().hex}
        if access_token is not None:
            headers["Access-Token"] = access_token
        self.stats.count(path, retry)
        started = time.monotonic()
        session = self.session
        import requests  # already loaded by the session

        try:
            response = session.request(
                method,
                self.base_url + path,
                params=encode_params(params or {}),
                json=body,
                headers=headers,
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise TransientError(path, 0, f"no answer within {self.timeout[1]:g}s") from None
        except requests.ConnectionError as exc:
            reason = type(exc).__name__
            raise TransientError(path, 0, f"cannot connect to {self.base_url} ({reason})") from None
        elapsed = time.monotonic() - started
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(path, response.status_code, f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise PermanentError(path, response.status_code, f"HTTP {response.status_code}")
        try:
            # Exact numbers: ints stay ints (19-digit ids), money parses as Decimal, never float.
            envelope = response.json(parse_float=Decimal)
        except ValueError:
            raise TransientError(path, 0, "the answer was not JSON") from None
        if not isinstance(envelope, dict) or "code" not in envelope:
            raise PermanentError(path, 0, "the answer has no code field")
        code = int(envelope.get("code") or 0)
        request_id = str(envelope.get("request_id") or "")
        log.debug("Ocean Engine %s -> %s in %.0f ms [%s]", path, code, elapsed * 1000, request_id)
        if code != 0:
            raise classify(path, code, str(envelope.get("message") or ""), request_id)
        data = envelope.get("data")
        return data if isinstance(data, dict) else {}

    # -- OAuth ----------------------------------------------------------------------------------

    def exchange_auth_code(self, app_id: str, secret: str, auth_code: str) -> TokenGrant:
        # Exactly the fields of the SDK's Oauth2AccessTokenRequest
        # (models/model_oauth2_access_token_request.go): app_id (int64), secret, auth_code.
        # No grant_type: the generated model has none (only older third-party clients send it).
        data = self.request(
            "POST",
            "/open_api/oauth2/access_token/",
            body={"app_id": int(app_id), "secret": secret, "auth_code": auth_code},
        )
        return _grant(data, "/open_api/oauth2/access_token/")

    def refresh_token(self, app_id: str, secret: str, refresh_token: str) -> TokenGrant:
        # Exactly the SDK's Oauth2RefreshTokenRequest (models/model_oauth2_refresh_token_request
        # .go): app_id, secret, refresh_token; no grant_type (the ktao 本地推 project refreshes
        # without it, reference notes §1.3).
        data = self.request(
            "POST",
            "/open_api/oauth2/refresh_token/",
            body={"app_id": int(app_id), "secret": secret, "refresh_token": refresh_token},
        )
        return _grant(data, "/open_api/oauth2/refresh_token/")

    def authorized_accounts(self, access_token: str) -> list[dict[str, Any]]:
        """``data.list`` of ``oauth2/advertiser/get``. The SDK (api/api_oauth2_advertiser_get.go)
        sends one query parameter, ``access_token``, and no header; never the app secret (some
        third-party clients put app_id and secret in this URL, where proxies log them)."""
        data = self.request(
            "GET", ADVERTISER_GET, params={ADVERTISER_GET_TOKEN_PARAM: access_token}
        )
        return list(data.get("list") or [])


ADVERTISER_GET = "/open_api/oauth2/advertiser/get/"
ADVERTISER_GET_TOKEN_PARAM = "access_token"  # a query parameter here, not the header


def _grant(data: dict[str, Any], path: str) -> TokenGrant:
    try:
        return TokenGrant(
            access_token=str(data["access_token"]),
            refresh_token=str(data["refresh_token"]),
            expires_in=int(data["expires_in"]),
            refresh_expires_in=int(data["refresh_token_expires_in"]),
            advertiser_ids=tuple(str(i) for i in data.get("advertiser_ids") or ()),
        )
    except (KeyError, TypeError, ValueError):
        raise PermanentError(path, 0, "the answer lacks a token pair or its lifetimes") from None


class TokenSource(Protocol):
    """What ``OceanEngineAPI`` needs from the token manager."""

    def get_valid_token(self) -> str: ...

    def replace_rejected(self, rejected_token: str, reason: str) -> str: ...


class OceanEngineAPI:
    """Business calls with a valid token: a dead access token is refreshed once, then retried once."""

    def __init__(self, client: OceanEngineClient, tokens: TokenSource) -> None:
        self.client = client
        self.tokens = tokens

    def get(
        self, path: str, params: dict[str, Any], *, token_param: str | None = None
    ) -> dict[str, Any]:
        """GET with a valid token in the ``Access-Token`` header, or, for the endpoints whose
        SDK request takes it as a query parameter (``oauth2/advertiser/get``), in
        ``params[token_param]``."""
        token = self.tokens.get_valid_token()
        try:
            return self._get(path, params, token, token_param)
        except AccessTokenRejected as exc:
            log.info("Ocean Engine refused the access token (%s); refreshing once", exc.code)
            token = self.tokens.replace_rejected(token, f"{exc.code} on {path}")
        try:
            return self._get(path, params, token, token_param)
        except AccessTokenRejected as exc:
            raise TokenRevoked(exc.path, exc.code, exc.platform_message, exc.request_id) from None

    def _get(
        self, path: str, params: dict[str, Any], token: str, token_param: str | None
    ) -> dict[str, Any]:
        if token_param is None:
            return self.client.request("GET", path, params=params, access_token=token)
        return self.client.request("GET", path, params={**params, token_param: token})

    def authorized_accounts(self) -> list[dict[str, Any]]:
        """``oauth2/advertiser/get`` with a valid token (refreshed once if refused)."""
        data = self.get(ADVERTISER_GET, {}, token_param=ADVERTISER_GET_TOKEN_PARAM)
        return list(data.get("list") or [])

    def pages(
        self, path: str, params: dict[str, Any], list_key: str, page_size: int = 100
    ) -> Iterator[list[dict[str, Any]]]:
        """Every page of a page-numbered list, until ``page >= total_page`` or an empty page."""
        page = 1
        while True:
            data = self.get(path, {**params, "page": page, "page_size": page_size})
            items = list(data.get(list_key) or [])
            yield items
            total_page = int((data.get("page_info") or {}).get("total_page") or 0)
            if not items or page >= total_page:
                return
            page += 1


class TokenRevoked(AuthorizationNeeded):
    """A freshly refreshed access token was refused as well: the grant was revoked or changed."""

    def __init__(self, path: str, code: int, message: str, request_id: str = "") -> None:
        super().__init__(
            f"Ocean Engine refused a freshly refreshed access token on {path} ({code}): "
            "the authorization was probably revoked or replaced"
        )
        self.code = code
        self.request_id = request_id
