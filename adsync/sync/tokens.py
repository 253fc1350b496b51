"""The token manager: the only way any code obtains an Ocean Engine access token.

Ocean Engine rotates refresh tokens: every refresh returns a new pair and kills the old
refresh token (and the old access token). So:

* a refresh happens inside ``Store.exclusive()`` — SQLite ``BEGIN IMMEDIATE``, PostgreSQL
  ``SELECT ... FOR UPDATE`` on the token row — and the stored pair is re-read after the lock is
  taken: whoever waited finds the fresh pair and does not refresh again;
* the new pair is written and committed right after the platform answers, before anything
  uses it, with nothing in between (no network, no logging to slow sinks);
* a refused chain (40103/40107/...) is recorded as dead and raises ``AuthorizationNeeded`` with
  the authorization link; later callers get the same answer without calling the platform.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Row

from adsync.sync.config import Settings
from adsync.sync.errors import AuthorizationNeeded, ConfigError, mask
from adsync.sync.oceanengine import (
    AuthorizationDead,
    OceanEngineAPI,
    OceanEngineClient,
    OceanEngineError,
    TokenGrant,
)
from adsync.sync.store import (
    BACKGROUND_WAIT_SECONDS,
    Store,
    actor,
    oauth_states,
    token_history,
    tokens,
    utcnow,
)

log = logging.getLogger("adsync.tokens")

EXPIRING_WITHIN = timedelta(days=3)  # refresh-token lifetime left that deserves a warning
STATE_LIFETIME = timedelta(hours=24)
# How long a caller waits for the token lock: its holder may be a refresh on the wire (one
# call and its retries), not a stuck transaction. Not on any acknowledgement path.
TOKEN_LOCK_WAIT = BACKGROUND_WAIT_SECONDS


@dataclass(frozen=True)
class TokenStatus:
    authorized: bool
    health: str  # ok | expiring | reauthorize
    app_id: str
    access_expires_at: datetime | None = None
    access_left_s: int | None = None
    refresh_expires_at: datetime | None = None
    refresh_left_s: int | None = None
    last_refresh_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure_reason: str | None = None
    dead_reason: str | None = None
    generation: int | None = None
    account_ids: tuple[str, ...] = ()
    access_prefix: str = ""
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        out["account_ids"] = list(self.account_ids)
        return out


@dataclass(frozen=True)
class AuthResult:
    account_ids: tuple[str, ...]
    names: dict[str, str]
    access_expires_at: datetime
    refresh_expires_at: datetime


class TokenManager:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        client: OceanEngineClient,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.now = now
        self.margin = timedelta(seconds=settings.refresh_margin)

    # -- the one way to a token -------------------------------------------------------------

    def get_valid_token(self) -> str:
        """A usable access token, refreshed first if less than the margin remains."""
        row = self._read()
        self._raise_if_unusable(row)
        if row.access_expires_at - self.now() > self.margin:
            return row.access_token
        return self._refresh(reason="inside the refresh margin")

    def replace_rejected(self, rejected_token: str, reason: str) -> str:
        """The platform refused ``rejected_token``: refresh once (unless another process already
        did) and return the token to retry with."""
        return self._refresh(reason=f"access token refused ({reason})", rejected=rejected_token)

    def refresh(self, reason: str = "requested") -> str:
        """Refresh now, whatever the time left (``adsync token refresh``, the watchdog)."""
        self._credentials()
        self._raise_if_unusable(self._read())
        return self._refresh(reason=reason, force=True)

    def refresh_if_due(self) -> bool:
        """For the watchdog: refresh inside the margin; True if a refresh happened."""
        row = self._read()
        self._raise_if_unusable(row)
        if row.access_expires_at - self.now() > self.margin:
            return False
        before = row.generation
        self._refresh(reason="watchdog: inside the refresh margin")
        return self._read().generation != before

    def _refresh(self, reason: str, rejected: str | None = None, force: bool = False) -> str:
        app_id, secret = self._credentials()
        # Waiting for the lock may mean waiting for another process's refresh on the wire.
        with self.store.exclusive(wait=TOKEN_LOCK_WAIT) as conn:
            row = self._read(conn, for_update=True)
            problem = self._problem(row)
            if problem is None:
                if rejected is not None and row.access_token != rejected:
                    return row.access_token  # someone else refreshed while we were refused
                fresh = row.access_expires_at - self.now() > self.margin
                if rejected is None and not force and fresh:
                    return row.access_token  # someone else refreshed while we waited
                outcome = self._call_refresh(conn, row, app_id, secret, reason)
        # Raised only after the transaction ended: building the link writes to the store.
        if problem is not None:
            raise self._needed(problem)
        if isinstance(outcome, AuthorizationDead):
            log.error("Ocean Engine refused the refresh token: %s", outcome.message)
            raise self._needed(f"the Ocean Engine authorization is gone: {outcome.message}")
        if isinstance(outcome, OceanEngineError):
            log.error("token refresh failed after retries: %s", outcome.message)
            raise outcome
        log.info("access token refreshed (%s)", reason)
        return outcome.access_token

    def _call_refresh(
        self, conn: Connection, row: Row[Any], app_id: str, secret: str, reason: str
    ) -> TokenGrant | OceanEngineError | AuthorizationDead:
        """Inside the lock: ask the platform, then record what it said. The rotated pair is
        committed before anyone can use it, with nothing slow between answer and commit."""
        try:
            grant = self.client.refresh_token(app_id, secret, row.refresh_token)
        except AuthorizationDead as exc:
            self._mark_dead(conn, row, f"refresh refused: {exc.code} ({exc.platform_message})")
            return exc
        except OceanEngineError as exc:
            self._history(conn, row, "failed", f"{reason}: {exc.message}", row.generation)
            return exc
        now = self.now()
        conn.execute(
            update(tokens)
            .where(tokens.c.app_id == row.app_id)
            .values(
                access_token=grant.access_token,
                refresh_token=grant.refresh_token,
                access_expires_at=now + timedelta(seconds=grant.expires_in),
                refresh_expires_at=now + timedelta(seconds=grant.refresh_expires_in),
                generation=row.generation + 1,
                refreshed_at=now,
                updated_at=now,
            )
        )
        self._history(conn, row, "refreshed", reason, row.generation)
        return grant

    # -- authorization ------------------------------------------------------------------------

    def authorization_url(self, requested_by: str = "") -> str:
        """A link a person opens to authorize; its ``state`` is remembered for the callback."""
        import secrets  # here, not at the top: `adsync token status` never needs it

        self.settings.require("OCEANENGINE_APP_ID", "OCEANENGINE_REDIRECT_URI")
        state = secrets.token_urlsafe(16)
        now = self.now()
        with self.store.begin() as conn:
            conn.execute(
                insert(oauth_states).values(
                    state=state,
                    created_at=now,
                    expires_at=now + STATE_LIFETIME,
                    requested_by=requested_by,
                )
            )
        return self._url(state)

    def _url(self, state: str) -> str:
        query = urlencode(
            {
                "app_id": self.settings.oceanengine_app_id,
                "state": state,
                "redirect_uri": self.settings.oceanengine_redirect_uri,
            }
        )
        return f"{self.settings.oceanengine_auth_url}?{query}"

    def consume_state(self, state: str) -> bool:
        """True once for a state this adsync issued and that has not expired."""
        now = self.now()
        with self.store.begin() as conn:
            return bool(
                conn.execute(
                    update(oauth_states)
                    .where(
                        oauth_states.c.state == state,
                        oauth_states.c.used_at.is_(None),
                        oauth_states.c.expires_at > now,
                    )
                    .values(used_at=now)
                ).rowcount
            )

    def authorize(self, auth_code: str) -> AuthResult:
        """Exchange a one-time auth code, store the new chain, and return the granted accounts."""
        app_id, secret = self._credentials()
        auth_code = auth_code.strip()
        if not auth_code or any(c.isspace() for c in auth_code):
            raise ConfigError(
                "the authorization code is empty or malformed",
                hint="copy the auth_code value from the redirect URL after authorizing",
            )
        with self.store.exclusive(wait=TOKEN_LOCK_WAIT) as conn:
            # Hold the lock: a refresh of the old chain must not overwrite the new one.
            existing = self._read(conn, for_update=True)
            try:
                grant = self.client.exchange_auth_code(app_id, secret, auth_code)
            except AuthorizationDead as exc:
                refused = exc
            else:
                refused = None
                self._store_grant(conn, app_id, existing, grant)
        if refused is not None:
            # Outside the transaction: building the link writes to the store.
            raise self._needed(
                "this authorization code was refused: it was already used or has expired "
                f"(codes work once, for 10 minutes) [{refused.code}]"
            )
        names = self._discover(grant.advertiser_ids)
        log.info("authorized: %d accounts granted", len(grant.advertiser_ids))
        now = self.now()
        return AuthResult(
            account_ids=grant.advertiser_ids,
            names=names,
            access_expires_at=now + timedelta(seconds=grant.expires_in),
            refresh_expires_at=now + timedelta(seconds=grant.refresh_expires_in),
        )

    def _store_grant(
        self, conn: Connection, app_id: str, existing: Row[Any] | None, grant: TokenGrant
    ) -> None:
        now = self.now()
        values = dict(
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            access_expires_at=now + timedelta(seconds=grant.expires_in),
            refresh_expires_at=now + timedelta(seconds=grant.refresh_expires_in),
            advertiser_ids=json.dumps(list(grant.advertiser_ids)),
            authorized_at=now,
            refreshed_at=None,
            dead_at=None,
            dead_reason=None,
            updated_at=now,
        )
        generation = (existing.generation + 1) if existing else 1
        if existing is None:
            conn.execute(insert(tokens).values(app_id=app_id, generation=generation, **values))
        else:
            conn.execute(
                update(tokens)
                .where(tokens.c.app_id == app_id)
                .values(generation=generation, **values)
            )
        conn.execute(
            insert(token_history).values(
                app_id=app_id,
                at=now,
                event="authorized",
                reason=f"{len(grant.advertiser_ids)} accounts granted",
                access_prefix=mask(grant.access_token),
                refresh_prefix=mask(grant.refresh_token),
                generation=generation,
                actor=actor(),
            )
        )

    def _discover(self, ids: tuple[str, ...]) -> dict[str, str]:
        """Turn the granted ids into accounts at once (adsync.sync.discovery: organisations and
        来客 accounts are expanded), best effort: a sync does it again. Returns the granted
        accounts' names."""
        from adsync.sync.discovery import discover, save  # not needed by `token status`

        try:
            found = discover(OceanEngineAPI(self.client, self))
        except (OceanEngineError, AuthorizationNeeded) as exc:
            log.warning("could not list the granted accounts yet: %s", exc.message)
            return {}
        except (TypeError, ValueError, AttributeError):  # an answer unlike the SDK's models
            log.exception("could not list the granted accounts yet: unexpected answer")
            return {}
        save(self.store, found)
        wanted = set(ids)
        return {g.id: g.name for g in found.grantees if g.id in wanted and g.name}

    # -- status -------------------------------------------------------------------------------

    def status(self) -> TokenStatus:
        self.settings.require("OCEANENGINE_APP_ID")
        app_id = self.settings.oceanengine_app_id or ""
        row = self._read()
        if row is None:
            return TokenStatus(
                authorized=False,
                health="reauthorize",
                app_id=app_id,
                message="not authorized yet: run `adsync auth url`, open the link, then "
                "`adsync auth code CODE`",
            )
        now = self.now()
        failures = (
            select(token_history.c.at, token_history.c.reason)
            .where(token_history.c.app_id == app_id)
            .where(token_history.c.event.in_(("failed", "dead")))
            .order_by(token_history.c.at.desc(), token_history.c.id.desc())
            .limit(1)
        )
        last_failure = self.store.read(lambda conn: conn.execute(failures).first())
        access_left = int((row.access_expires_at - now).total_seconds())
        refresh_left = int((row.refresh_expires_at - now).total_seconds())
        last_ok = row.refreshed_at or row.authorized_at
        if row.dead_at is not None or refresh_left <= 0:
            health = "reauthorize"
            message = row.dead_reason or "the refresh token has expired"
        elif refresh_left < EXPIRING_WITHIN.total_seconds() or (
            last_failure is not None and last_failure.at > last_ok
        ):
            health = "expiring"
            message = (
                f"last refresh failed: {last_failure.reason}"
                if last_failure is not None and last_failure.at > last_ok
                else "the refresh token expires within 3 days; a refresh renews it"
            )
        else:
            health = "ok"
            message = "the token chain is healthy"
        return TokenStatus(
            authorized=True,
            health=health,
            app_id=app_id,
            access_expires_at=row.access_expires_at,
            access_left_s=access_left,
            refresh_expires_at=row.refresh_expires_at,
            refresh_left_s=refresh_left,
            last_refresh_at=row.refreshed_at,
            last_failure_at=last_failure.at if last_failure else None,
            last_failure_reason=last_failure.reason if last_failure else None,
            dead_reason=row.dead_reason,
            generation=row.generation,
            account_ids=tuple(json.loads(row.advertiser_ids or "[]")),
            access_prefix=mask(row.access_token),
            message=message,
        )

    def granted_account_ids(self) -> tuple[str, ...]:
        row = self._read()
        return tuple(json.loads(row.advertiser_ids or "[]")) if row is not None else ()

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        query = (
            select(token_history)
            .where(token_history.c.app_id == (self.settings.oceanengine_app_id or ""))
            .order_by(token_history.c.id.desc())
            .limit(limit)
        )
        rows = self.store.read(lambda conn: conn.execute(query).all())
        return [dict(r._mapping) for r in rows]

    # -- helpers ------------------------------------------------------------------------------

    def _credentials(self) -> tuple[str, str]:
        self.settings.require("OCEANENGINE_APP_ID", "OCEANENGINE_APP_SECRET")
        assert self.settings.oceanengine_app_id and self.settings.oceanengine_app_secret
        return self.settings.oceanengine_app_id, self.settings.oceanengine_app_secret.reveal()

    def _read(self, conn: Connection | None = None, for_update: bool = False) -> Row[Any] | None:
        self.settings.require("OCEANENGINE_APP_ID")
        app_id = self.settings.oceanengine_app_id or ""
        query = select(tokens).where(tokens.c.app_id == app_id)
        if for_update:
            query = query.with_for_update()  # PostgreSQL row lock; SQLite already holds the db
        if conn is not None:
            return conn.execute(query).first()
        return self.store.read(lambda own: own.execute(query).first())

    def _problem(self, row: Row[Any] | None) -> str | None:
        """Why this chain cannot give a token without a person, or None."""
        if row is None:
            return "Ocean Engine is not authorized yet"
        if row.dead_at is not None:
            return f"the Ocean Engine authorization is gone: {row.dead_reason}"
        if row.refresh_expires_at <= self.now():
            return f"the refresh token expired at {row.refresh_expires_at:%Y-%m-%d %H:%M} UTC"
        return None

    def _raise_if_unusable(self, row: Row[Any] | None) -> None:
        problem = self._problem(row)
        if problem is not None:
            raise self._needed(problem)

    def _needed(self, message: str) -> AuthorizationNeeded:
        try:
            url = self.authorization_url(requested_by="token manager")
        except ConfigError:
            url = ""
        return AuthorizationNeeded(message, auth_url=url)

    def _mark_dead(self, conn: Connection, row: Row[Any], reason: str) -> None:
        now = self.now()
        conn.execute(
            update(tokens)
            .where(tokens.c.app_id == row.app_id)
            .values(dead_at=now, dead_reason=reason, updated_at=now)
        )
        self._history(conn, row, "dead", reason, row.generation)

    def _history(
        self, conn: Connection, row: Row[Any], event: str, reason: str, generation: int
    ) -> None:
        conn.execute(
            insert(token_history).values(
                app_id=row.app_id,
                at=self.now(),
                event=event,
                reason=reason[:500],
                access_prefix=mask(row.access_token),
                refresh_prefix=mask(row.refresh_token),
                generation=generation,
                actor=actor(),
            )
        )
