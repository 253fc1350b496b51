"""The token manager: the only way any code obtains an Ocean Engine access token.

Ocean Engine rotates refresh tokens: every refresh returns a new pair and kills the old
refresh token (and the old access token). So:

* a refresh happens inside ``Store.exclusive()`` — SQLite ``BEGIN IMMEDIATE``, PostgreSQL
  ``SELECT ... FOR UPDATE`` on the token row — and the stored pair is re-read after the lock is
  taken: whoever waited finds the fresh pair and does not refresh again;
* the new pair is written and committed right after the platform answers, before anything
  uses it, with nothing in between (no network, no logging to slow sinks);
* if that commit fails, the pair — now the only live one — is not lost: it is retried into the
  store, kept in an owner-only rescue file, and announced as "refreshed but not saved" by every
  process until it is stored (``adsync.sync.rescue`` says how);
* a refused chain (40103/40107/...) is recorded as dead and raises ``AuthorizationNeeded``;
  later callers get the same answer without calling the platform. The error carries no link:
  a link is minted where it is shown (the CLI; an admin's direct chat), bound to who asked.

Authorizations: a ``state`` lives 15 minutes, works once, and belongs to whoever asked for it
(a chat admin's open_id, or the local operator: the CLI, the console). Re-authorizing replaces
the previous grant at Ocean Engine ("重新授权会覆盖前一次授权"), so a grant is judged after the
exchange: one of 0 accounts is refused, one that drops accounts already granted waits for an
admin to take or cancel it (``pending_grants``), anything else is taken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import SQLAlchemyError

from adsync.sync import rescue
from adsync.sync.config import Settings
from adsync.sync.errors import (
    AdsyncError,
    AuthorizationNeeded,
    ConfigError,
    GrantRefused,
    StoreError,
    TokenNotSaved,
    mask,
)
from adsync.sync.logs import protect
from adsync.sync.oceanengine import (
    AuthorizationDead,
    OceanEngineAPI,
    OceanEngineClient,
    OceanEngineError,
    TokenGrant,
    TokenRevoked,
)
from adsync.sync.store import (
    BACKGROUND_WAIT_SECONDS,
    Store,
    accounts,
    actor,
    oauth_states,
    pending_grants,
    token_history,
    token_refreshes,
    tokens,
    utcnow,
)

log = logging.getLogger("adsync.tokens")

EXPIRING_WITHIN = timedelta(days=3)  # refresh-token lifetime left that deserves a warning
STATE_LIFETIME = timedelta(minutes=15)  # an authorization link: opened and finished at once
PENDING_LIFETIME = timedelta(minutes=10)  # a narrowing grant waiting for an admin's decision
USER_INFO = "/open_api/2/user/info/"  # the cheapest authenticated call (official SDK UserInfoV2Api)
_DB_ERRORS = (SQLAlchemyError, StoreError)
# How long a caller waits for the token lock: its holder may be a refresh on the wire (one
# call and its retries), not a stuck transaction. Not on any acknowledgement path.
TOKEN_LOCK_WAIT = BACKGROUND_WAIT_SECONDS


def is_chat_user(requested_by: str) -> bool:
    """A Feishu open_id (a person in chat), as opposed to the local operator ("cli",
    "console", "demo"), who has the database already and may always authorize."""
    return requested_by.startswith("ou_")


class StateRefused(AdsyncError):
    """The callback's (or a pasted URL's) ``state`` cannot be used; ``reason`` says why."""

    exit_code = 3

    def __init__(self, reason: str, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.reason = reason  # unknown | used | expired | not_admin


@dataclass(frozen=True)
class TokenStatus:
    authorized: bool
    health: str  # ok | expiring | reauthorize | unsaved
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
    last_confirmed_at: datetime | None = None  # the platform last accepted this chain
    checked: bool = False  # this status asked the platform (`token status --check`)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        out["account_ids"] = list(self.account_ids)
        return out


@dataclass(frozen=True)
class AuthResult:
    """An authorization: what it grants, what was granted before, and whether it was taken
    (``pending_id`` set: it drops accounts and waits for an admin's decision; ``cancelled``:
    an admin refused it)."""

    account_ids: tuple[str, ...]
    names: dict[str, str]
    access_expires_at: datetime
    refresh_expires_at: datetime
    previous: tuple[str, ...] = ()
    pending_id: str = ""
    pending_until: datetime | None = None
    cancelled: bool = False
    requested_by: str = ""

    @property
    def dropped(self) -> tuple[str, ...]:
        return tuple(i for i in self.previous if i not in set(self.account_ids))

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(i for i in self.account_ids if i not in set(self.previous))

    @property
    def pending(self) -> bool:
        return bool(self.pending_id)


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
        self.sleep: Callable[[float], None] = time.sleep
        # A pair the platform issued that the database has not taken yet (see rescue.py).
        self._unsaved: rescue.UnsavedPair | None = None
        self._unsaved_lock = threading.Lock()
        self._retrier: threading.Thread | None = None
        self._closed = threading.Event()

    def close(self) -> None:
        """Stop the background retry of an unsaved pair (its rescue file stays)."""
        self._closed.set()

    # -- the one way to a token -------------------------------------------------------------

    def get_valid_token(self) -> str:
        """A usable access token, refreshed first if less than the margin remains."""
        self._settle_unsaved()
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
        self._settle_unsaved()
        self._raise_if_unusable(self._read())
        return self._refresh(reason=reason, force=True)

    def refresh_if_due(self) -> bool:
        """For the watchdog: refresh inside the margin; True if a refresh happened."""
        self._settle_unsaved()
        row = self._read()
        self._raise_if_unusable(row)
        if row.access_expires_at - self.now() > self.margin:
            return False
        before = row.generation
        self._refresh(reason="watchdog: inside the refresh margin")
        return self._read().generation != before

    def check(self) -> TokenStatus:
        """Ask the platform whether the chain is live (``token status --check``, the watchdog):
        one cheap authenticated call. A refused access token is refreshed once and the call
        retried; a chain the platform still refuses is recorded as dead."""
        try:
            OceanEngineAPI(self.client, self).get(USER_INFO, {})
        except TokenRevoked as exc:
            self._mark_current_dead(f"the platform refused a freshly refreshed token ({exc.code})")
            raise
        now = self.now()
        app_id = self._app_id()
        try:
            self.store.transact(
                lambda conn: conn.execute(
                    update(tokens).where(tokens.c.app_id == app_id).values(confirmed_at=now)
                ),
                idempotent=True,
            )
        except _DB_ERRORS as exc:
            raise self._store_error("could not record the check", exc) from None
        return self._status(checked=True)

    def _refresh(self, reason: str, rejected: str | None = None, force: bool = False) -> str:
        app_id, secret = self._credentials()
        answered: list[TokenGrant] = []  # the platform's answer, as soon as there is one
        base: list[Row[Any]] = []
        outcome: TokenGrant | OceanEngineError | AuthorizationDead | None = None
        problem: str | None = None
        try:
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
                    base.append(row)
                    outcome = self._call_refresh(conn, row, app_id, secret, reason, answered)
        except _DB_ERRORS as exc:
            if not answered:  # nothing reached the platform, or it refused: the chain is as it was
                raise self._store_error("could not refresh the token", exc) from None
            return self._save_late(answered[0], base[0], reason, exc)
        # Raised only after the transaction ended (nothing slow inside the lock).
        if problem is not None:
            raise self._needed(problem)
        if isinstance(outcome, AuthorizationDead):
            log.error("Ocean Engine refused the refresh token: %s", outcome.message)
            raise self._needed(f"the Ocean Engine authorization is gone: {outcome.message}")
        if isinstance(outcome, OceanEngineError):
            log.error("token refresh failed after retries: %s", outcome.message)
            raise outcome
        assert isinstance(outcome, TokenGrant)
        log.info("access token refreshed (%s)", reason)
        return outcome.access_token

    def _call_refresh(
        self,
        conn: Connection,
        row: Row[Any],
        app_id: str,
        secret: str,
        reason: str,
        answered: list[TokenGrant],
    ) -> TokenGrant | OceanEngineError | AuthorizationDead:
        """Inside the lock: ask the platform, then record what it said. The rotated pair is
        committed before anyone can use it, with nothing slow between answer and commit."""
        self._mark_on_the_wire(row)
        try:
            grant = self.client.refresh_token(app_id, secret, row.refresh_token)
        except AuthorizationDead as exc:
            self._mark_dead(conn, row, f"refresh refused: {exc.code} ({exc.platform_message})")
            return exc
        except OceanEngineError as exc:
            self._history(conn, row, "failed", f"{reason}: {exc.message}", row.generation)
            self._clear_on_the_wire(conn)
            return exc
        answered.append(grant)
        protect(grant.access_token, grant.refresh_token)
        values = self._refreshed_values(grant)
        conn.execute(
            update(tokens)
            .where(tokens.c.app_id == row.app_id)
            .values(generation=row.generation + 1, **values)
        )
        self._history(conn, row, "refreshed", reason, row.generation)
        self._clear_on_the_wire(conn)
        return grant

    def _refreshed_values(self, grant: TokenGrant) -> dict[str, Any]:
        now = self.now()
        return dict(
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            access_expires_at=now + timedelta(seconds=grant.expires_in),
            refresh_expires_at=now + timedelta(seconds=grant.refresh_expires_in),
            refreshed_at=now,
            updated_at=now,
            confirmed_at=now,
        )

    # -- a pair the database did not take (see adsync.sync.rescue) ------------------------------

    def _save_late(self, grant: TokenGrant, row: Row[Any], reason: str, exc: BaseException) -> str:
        """The platform rotated the pair and the commit failed: the new pair is the only live
        one. Retry it into the store with a new connection (bounded); failing that, keep it in
        the rescue file and in memory, retry in the background, and say so."""
        log.error(
            "the refreshed token pair could not be saved (%s); retrying with a new connection",
            _short(exc),
        )
        pair = rescue.UnsavedPair(
            app_id=row.app_id,
            kind="refreshed",
            base_generation=row.generation,
            values=self._refreshed_values(grant),
            reason=reason,
            at=self.now(),
            database=rescue.fingerprint(self.store.url_for_humans),
        )
        with self._unsaved_lock:
            self._unsaved = pair
        for delay in rescue.RETRY_DELAYS:
            self.sleep(delay)
            if self._apply(pair):
                log.warning("the refreshed token pair was saved on a retry (%s)", reason)
                return grant.access_token
        raise self._keep(pair, exc)

    def _keep(self, pair: rescue.UnsavedPair, exc: BaseException) -> TokenNotSaved:
        path = rescue.write(pair, self._rescue_dir())
        self._start_background_retry()
        where = (
            f"it is kept in {path} (owner-only) and saved by the next adsync that reaches the "
            "database"
            if path is not None
            else "it is kept only in this process's memory: if this process stops before the "
            "database is back, authorize again"
        )
        return TokenNotSaved(
            f"Ocean Engine refreshed the token, but the database {self.store.url_for_humans} "
            f"did not take the new pair ({_short(exc)}); {where}",
            hint="check the database (`adsync doctor`); `adsync token status` says when the "
            "pair is saved. If it says “refreshed but not saved” for long, authorize again",
        )

    def _apply(self, pair: rescue.UnsavedPair) -> bool:
        """Store ``pair`` if the chain it replaces is still the stored one. True when the pair is
        settled (stored, or obsolete and dropped); False when the database still fails."""
        try:
            with self.store.exclusive() as conn:
                row = self._read(conn, for_update=True)
                stored = self._store_unsaved(conn, row, pair)
        except _DB_ERRORS as exc:
            log.debug("an unsaved token pair could not be stored yet: %s", _short(exc))
            return False
        if not stored:
            log.warning(
                "a rescued token pair was dropped: the chain changed since (authorized again)"
            )
        with self._unsaved_lock:
            if self._unsaved is not None and self._unsaved.refresh_token == pair.refresh_token:
                self._unsaved = None
        rescue.forget(pair)
        return True

    def _store_unsaved(
        self, conn: Connection, row: Row[Any] | None, pair: rescue.UnsavedPair
    ) -> bool:
        if pair.base_generation is None:
            if row is not None:
                return False
            conn.execute(insert(tokens).values(app_id=pair.app_id, generation=1, **pair.values))
            generation = 1
        else:
            if row is not None and row.refresh_token == pair.refresh_token:
                return True  # another process stored it a moment ago
            if row is None or row.generation != pair.base_generation:
                return False
            generation = pair.base_generation + 1
            # Also revives a chain marked dead meanwhile: someone tried the old refresh token
            # (40107), but this pair is newer than the one that was refused.
            conn.execute(
                update(tokens)
                .where(tokens.c.app_id == pair.app_id)
                .values(generation=generation, dead_at=None, dead_reason=None, **pair.values)
            )
        conn.execute(
            insert(token_history).values(
                app_id=pair.app_id,
                at=self.now(),
                event=pair.kind,
                reason=f"{pair.reason} (saved late: the database failed at the first commit)"[:500],
                access_prefix=mask(pair.values.get("access_token")),
                refresh_prefix=mask(pair.values.get("refresh_token")),
                generation=generation - 1 if pair.kind == "refreshed" else generation,
                actor=actor(),
            )
        )
        self._clear_on_the_wire(conn)
        return True

    def _pending_pair(self) -> rescue.UnsavedPair | None:
        with self._unsaved_lock:
            if self._unsaved is not None:
                return self._unsaved
        if not self.settings.oceanengine_app_id:
            return None
        return rescue.load(
            self._rescue_dir(),
            self.settings.oceanengine_app_id,
            rescue.fingerprint(self.store.url_for_humans),
        )

    def _settle_unsaved(self) -> None:
        """Before using the stored chain: store a pair left unsaved (here or by another process
        on this machine); if the database still refuses it, the stored chain is dead — say so."""
        pair = self._pending_pair()
        if pair is None or self._apply(pair):
            return
        raise TokenNotSaved(
            f"a refreshed token pair (from {pair.at:%Y-%m-%d %H:%M} UTC) is still not saved: "
            f"the database {self.store.url_for_humans} does not take it",
            hint="check the database (`adsync doctor`); the pair is saved as soon as it answers",
        )

    def _start_background_retry(self) -> None:
        with self._unsaved_lock:
            if self._retrier is not None and self._retrier.is_alive():
                return
            self._retrier = threading.Thread(
                target=self._retry_in_background, name="adsync-token-save", daemon=True
            )
            self._retrier.start()

    def _retry_in_background(self) -> None:
        delay = 1.0
        while not self._closed.wait(delay):
            with self._unsaved_lock:
                pair = self._unsaved
            if pair is None:
                return
            if self._apply(pair):
                log.warning("the refreshed token pair was saved after the database came back")
                return
            delay = min(delay * 2, rescue.BACKGROUND_MAX_DELAY)

    def _rescue_dir(self) -> Path:
        return rescue.directory(self.settings.db_url, self.settings.data_dir)

    def _mark_on_the_wire(self, row: Row[Any]) -> None:
        """PostgreSQL: record, in its own transaction, that generation ``row.generation`` is
        being refreshed (see rescue.py, point 3). Raises (and nothing is sent) if it cannot."""
        if self.store.dialect != "postgresql":
            return

        def mark(conn: Connection) -> None:
            conn.execute(delete(token_refreshes).where(token_refreshes.c.app_id == row.app_id))
            conn.execute(
                insert(token_refreshes).values(
                    app_id=row.app_id,
                    generation=row.generation,
                    holder=f"{actor()}:{threading.get_ident()}",
                    started_at=self.now(),
                )
            )

        # Another connection than the lock's (a separate, committed transaction); a rerun
        # after a lost commit answer writes the same row again.
        self.store.transact(mark, idempotent=True)

    def _clear_on_the_wire(self, conn: Connection) -> None:
        if self.store.dialect == "postgresql":
            conn.execute(delete(token_refreshes).where(token_refreshes.c.app_id == self._app_id()))

    def _lost_refresh(self, row: Row[Any]) -> Row[Any] | None:
        """A refresh of the stored generation that nobody is finishing: its answer was lost or
        is waiting in another machine's rescue file. None if there is none (or on SQLite)."""
        if self.store.dialect != "postgresql":
            return None

        def probe(conn: Connection) -> Row[Any] | None:
            marker = conn.execute(
                select(token_refreshes).where(
                    token_refreshes.c.app_id == row.app_id,
                    token_refreshes.c.generation == row.generation,
                )
            ).first()
            if marker is None:
                return None
            # A refresher in progress holds the token row; SKIP LOCKED finds it free only if
            # nobody does. The read's transaction is rolled back at once: a look, not a write.
            free = conn.execute(
                select(tokens.c.app_id)
                .where(tokens.c.app_id == row.app_id)
                .with_for_update(skip_locked=True)
            ).first()
            return marker if free is not None else None

        return self.store.read(probe)

    # -- authorization ------------------------------------------------------------------------

    def authorization_url(self, requested_by: str = "") -> str:
        """A link a person opens to authorize; its ``state`` is remembered for the callback,
        for 15 minutes, bound to ``requested_by`` (an admin's open_id, or the local operator)."""
        self.settings.require("OCEANENGINE_APP_ID", "OCEANENGINE_REDIRECT_URI")
        if is_chat_user(requested_by) and requested_by not in self.settings.admins:
            raise AdsyncError(
                "only admins may get an authorization link",
                hint="ask one of the admins named in ADSYNC_ADMINS",
            )
        import secrets  # here, not at the top: `adsync token status` never needs it

        state = secrets.token_urlsafe(16)
        now = self.now()
        with self.store.begin() as conn:
            conn.execute(delete(oauth_states).where(oauth_states.c.expires_at < now))
            # An undecided grant past its time still holds a live pair: nothing keeps it.
            conn.execute(delete(pending_grants).where(pending_grants.c.expires_at < now))
            conn.execute(
                insert(oauth_states).values(
                    state=state,
                    created_at=now,
                    expires_at=now + STATE_LIFETIME,
                    requested_by=requested_by or "cli",
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

    def consume_state(self, state: str) -> str:
        """Use ``state`` once: who asked for it. Raises StateRefused when it is unknown, used,
        older than 15 minutes, or was asked for by someone who is not an admin (now)."""
        now = self.now()
        with self.store.begin() as conn:
            row = conn.execute(select(oauth_states).where(oauth_states.c.state == state)).first()
            if row is None:
                raise _state_refused("unknown")
            if row.used_at is not None:
                raise _state_refused("used")
            if row.expires_at <= now:
                raise _state_refused("expired")
            requester = row.requested_by or "cli"
            if is_chat_user(requester) and requester not in self.settings.admins:
                raise _state_refused("not_admin")
            taken = conn.execute(
                update(oauth_states)
                .where(oauth_states.c.state == state, oauth_states.c.used_at.is_(None))
                .values(used_at=now)
            ).rowcount
            if not taken:  # used a moment ago by a concurrent callback
                raise _state_refused("used")
        return requester

    def authorize(
        self, auth_code: str, *, requested_by: str = "cli", confirm: bool = False
    ) -> AuthResult:
        """Exchange a one-time auth code and judge the grant: 0 accounts is refused
        (GrantRefused); one that drops accounts already granted is kept pending for an admin
        (``result.pending``) unless ``confirm``; anything else is stored and returned.

        ``confirm`` with the code of a pending grant takes that grant (the code itself works
        only once: `adsync auth code CODE --confirm` after a first run without it)."""
        app_id, secret = self._credentials()
        auth_code = auth_code.strip()
        if not auth_code or any(c.isspace() for c in auth_code):
            raise ConfigError(
                "the authorization code is empty or malformed",
                hint="copy the auth_code value from the redirect URL after authorizing",
            )
        self._settle_unsaved()
        code_hash = hashlib.sha256(auth_code.encode()).hexdigest()
        if confirm:
            waiting = self._pending_by_code(code_hash)
            if waiting is not None:
                return self.decide(waiting, "take", decided_by=requested_by)
        answered: list[TokenGrant] = []
        base: list[Row[Any] | None] = []
        refused: AuthorizationDead | None = None
        verdict = ""
        pending_id = ""
        now = self.now()
        try:
            with self.store.exclusive(wait=TOKEN_LOCK_WAIT) as conn:
                # Hold the lock: a refresh of the old chain must not overwrite the new one.
                existing = self._read(conn, for_update=True)
                base.append(existing)
                try:
                    grant = self.client.exchange_auth_code(app_id, secret, auth_code)
                except AuthorizationDead as exc:
                    refused = exc
                else:
                    answered.append(grant)
                    protect(grant.access_token, grant.refresh_token)
                    previous = _ids(existing)
                    dropped = [i for i in previous if i not in set(grant.advertiser_ids)]
                    if not grant.advertiser_ids:
                        verdict = "empty"
                        if existing is not None:
                            self._supersede(
                                conn,
                                existing,
                                f"replaced at Ocean Engine by an authorization of 0 accounts "
                                f"({_who(requested_by)}, {now:%Y-%m-%d %H:%M} UTC), which "
                                "adsync refused",
                            )
                    elif dropped and existing is not None and not confirm:
                        verdict = "pending"
                        pending_id = self._park(conn, existing, grant, code_hash, requested_by)
                    else:
                        verdict = "taken"
                        self._store_grant(conn, app_id, existing, grant, requested_by)
        except _DB_ERRORS as exc:
            if verdict != "taken" or not answered:
                raise self._store_error("could not store the authorization", exc) from None
            self._save_authorization_late(answered[0], base[0], requested_by, exc)
        if refused is not None:
            # Outside the transaction: nothing slow inside the lock.
            raise AuthorizationNeeded(
                "this authorization code was refused: it was already used or has expired "
                f"(codes work once, for 10 minutes) [{refused.code}]"
            )
        grant = answered[0]
        previous = _ids(base[0])
        if verdict == "empty":
            log.warning("an authorization of 0 accounts (%s) was refused", _who(requested_by))
            raise GrantRefused(
                "this authorization grants no accounts, so adsync did not take it"
                + (
                    "; Ocean Engine replaced the previous authorization with it, so nothing "
                    "syncs until someone authorizes again"
                    if base[0] is not None
                    else ""
                ),
                hint="authorize again and tick every local-push account",
            )
        if verdict == "pending":  # not stored: name the accounts with the new token, no more
            names = self._lookup_names(grant.access_token, grant.advertiser_ids)
        else:
            names = self._discover(grant.advertiser_ids)
        result = AuthResult(
            account_ids=grant.advertiser_ids,
            names=names,
            access_expires_at=now + timedelta(seconds=grant.expires_in),
            refresh_expires_at=now + timedelta(seconds=grant.refresh_expires_in),
            previous=previous,
            pending_id=pending_id,
            pending_until=now + PENDING_LIFETIME if pending_id else None,
            requested_by=requested_by,
        )
        if verdict == "pending":
            self._name_pending(pending_id, names)
            log.warning(
                "an authorization (%s) would drop %d of %d accounts: waiting for confirmation",
                _who(requested_by),
                len(result.dropped),
                len(previous),
            )
            return result
        log.info(
            "authorized: %d accounts granted (%s)", len(grant.advertiser_ids), _who(requested_by)
        )
        return result

    def _save_authorization_late(
        self, grant: TokenGrant, existing: Row[Any] | None, requested_by: str, exc: BaseException
    ) -> None:
        now = self.now()
        pair = rescue.UnsavedPair(
            app_id=self._app_id(),
            kind="authorized",
            base_generation=existing.generation if existing is not None else None,
            values=self._grant_values(grant, now),
            reason=f"{len(grant.advertiser_ids)} accounts granted ({_who(requested_by)})",
            at=now,
            database=rescue.fingerprint(self.store.url_for_humans),
        )
        with self._unsaved_lock:
            self._unsaved = pair
        for delay in rescue.RETRY_DELAYS:
            self.sleep(delay)
            if self._apply(pair):
                return
        raise self._keep(pair, exc)

    def decide(self, pending_id: str, decision: str, decided_by: str = "") -> AuthResult:
        """Take or cancel a pending grant, once. Taking it stores its pair (unless the chain
        changed since); cancelling leaves the stored chain as it is — dead at Ocean Engine,
        which replaced it when the new grant was made — and discards the new pair.
        ``decided_by`` defaults to whoever asked for the grant's link (the confirmation page
        is bound to that grant, so to them)."""
        if decision not in ("take", "cancel"):
            raise ConfigError("the decision must be take or cancel")
        now = self.now()
        with self.store.exclusive() as conn:
            p = conn.execute(
                select(pending_grants).where(pending_grants.c.id == pending_id).with_for_update()
            ).first()
            if p is not None and not decided_by:
                decided_by = p.requested_by
            if p is None or p.decided_at is not None or p.expires_at <= now:
                raise GrantRefused(
                    "this confirmation is unknown, was already used or has expired "
                    f"(it lives {int(PENDING_LIFETIME.total_seconds() // 60)} minutes)",
                    hint="authorize again, and tick every local-push account",
                )
            conn.execute(
                update(pending_grants)
                .where(pending_grants.c.id == pending_id)
                .values(
                    decided_at=now,
                    decision="taken" if decision == "take" else "cancelled",
                    # The pair is no longer needed here: taken into `tokens`, or discarded.
                    access_token="",
                    refresh_token="",
                )
            )
            existing = self._read(conn, for_update=True)
            previous = _ids(existing)
            current = existing.generation if existing is not None else None
            if decision == "take" and current != p.base_generation:
                raise GrantRefused(
                    "the authorization changed since this grant was made; it was not taken",
                    hint="look at `token status`; authorize again if accounts are missing",
                )
            if decision == "take":
                grant = TokenGrant(
                    access_token=p.access_token,
                    refresh_token=p.refresh_token,
                    expires_in=max(int((p.access_expires_at - now).total_seconds()), 0),
                    refresh_expires_in=max(int((p.refresh_expires_at - now).total_seconds()), 0),
                    advertiser_ids=tuple(json.loads(p.advertiser_ids or "[]")),
                )
                self._store_grant(conn, p.app_id, existing, grant, decided_by, confirmed=True)
            elif existing is not None:
                self._supersede(
                    conn,
                    existing,
                    f"replaced at Ocean Engine by an authorization that dropped accounts; "
                    f"{_who(decided_by)} cancelled it at {now:%Y-%m-%d %H:%M} UTC",
                )
        result = self._pending_result(
            p, previous, cancelled=decision == "cancel", decided_by=decided_by
        )
        if decision == "take":
            self._discover(result.account_ids)
            log.warning(
                "a narrower authorization was confirmed by %s: %d accounts dropped",
                _who(decided_by),
                len(result.dropped),
            )
        else:
            log.warning("a narrower authorization was cancelled by %s", _who(decided_by))
        return result

    def has_pending_code(self, auth_code: str) -> bool:
        """Whether ``auth_code`` produced a grant that waits for a decision."""
        return (
            self._pending_by_code(hashlib.sha256(auth_code.strip().encode()).hexdigest())
            is not None
        )

    def _pending_by_code(self, code_hash: str) -> str | None:
        now = self.now()
        with self.store.connect() as conn:
            row = conn.execute(
                select(pending_grants.c.id).where(
                    pending_grants.c.code_hash == code_hash,
                    pending_grants.c.decided_at.is_(None),
                    pending_grants.c.expires_at > now,
                )
            ).first()
        return row.id if row is not None else None

    def _pending_result(
        self,
        p: Row[Any],
        previous: tuple[str, ...] | None = None,
        cancelled: bool = False,
        decided_by: str = "",
    ) -> AuthResult:
        names = json.loads(p.names or "{}")
        with self.store.connect() as conn:
            if previous is None:  # still pending: the stored (superseded) chain's accounts
                token_row = conn.execute(select(tokens).where(tokens.c.app_id == p.app_id)).first()
                previous = _ids(token_row)
            known = {
                r.account_id: r.name
                for r in conn.execute(select(accounts.c.account_id, accounts.c.name))
            }
        for account_id in previous:
            if account_id not in names and known.get(account_id):
                names[account_id] = known[account_id]
        return AuthResult(
            account_ids=tuple(json.loads(p.advertiser_ids or "[]")),
            names=names,
            access_expires_at=p.access_expires_at,
            refresh_expires_at=p.refresh_expires_at,
            previous=previous,
            pending_id="" if cancelled or decided_by else p.id,
            pending_until=p.expires_at,
            cancelled=cancelled,
            requested_by=decided_by or p.requested_by,
        )

    def _park(
        self,
        conn: Connection,
        existing: Row[Any],
        grant: TokenGrant,
        code_hash: str,
        requested_by: str,
    ) -> str:
        """Keep a narrowing grant for an admin's decision. The stored chain is recorded as
        replaced: Ocean Engine overwrote it with this grant ("重新授权会覆盖前一次授权")."""
        import secrets

        pending_id = secrets.token_urlsafe(24)
        now = self.now()
        conn.execute(
            insert(pending_grants).values(
                id=pending_id,
                app_id=existing.app_id,
                code_hash=code_hash,
                requested_by=requested_by,
                created_at=now,
                expires_at=now + PENDING_LIFETIME,
                base_generation=existing.generation,
                access_token=grant.access_token,
                refresh_token=grant.refresh_token,
                access_expires_at=now + timedelta(seconds=grant.expires_in),
                refresh_expires_at=now + timedelta(seconds=grant.refresh_expires_in),
                advertiser_ids=json.dumps(list(grant.advertiser_ids)),
                names="{}",
            )
        )
        dropped = len([i for i in _ids(existing) if i not in set(grant.advertiser_ids)])
        self._supersede(
            conn,
            existing,
            f"replaced at Ocean Engine by a new authorization ({_who(requested_by)}) that drops "
            f"{dropped} accounts and waits for an admin to confirm it",
        )
        return pending_id

    def _name_pending(self, pending_id: str, names: dict[str, str]) -> None:
        self.store.transact(
            lambda conn: conn.execute(
                update(pending_grants)
                .where(pending_grants.c.id == pending_id)
                .values(names=json.dumps(names, ensure_ascii=False))
            ),
            idempotent=True,
        )

    def _supersede(self, conn: Connection, existing: Row[Any], reason: str) -> None:
        """The stored chain no longer works because Ocean Engine replaced the grant; its pair
        stays as it was (history, masked prefixes), the status says why."""
        now = self.now()
        conn.execute(
            update(tokens)
            .where(tokens.c.app_id == existing.app_id)
            .values(dead_at=existing.dead_at or now, dead_reason=reason[:500], updated_at=now)
        )
        self._history(conn, existing, "dead", reason, existing.generation)

    def _grant_values(self, grant: TokenGrant, now: datetime) -> dict[str, Any]:
        return dict(
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
            confirmed_at=now,
        )

    def _store_grant(
        self,
        conn: Connection,
        app_id: str,
        existing: Row[Any] | None,
        grant: TokenGrant,
        requested_by: str = "cli",
        confirmed: bool = False,
    ) -> None:
        now = self.now()
        values = self._grant_values(grant, now)
        generation = (existing.generation + 1) if existing else 1
        if existing is None:
            conn.execute(insert(tokens).values(app_id=app_id, generation=generation, **values))
        else:
            conn.execute(
                update(tokens)
                .where(tokens.c.app_id == app_id)
                .values(generation=generation, **values)
            )
        how = "confirmed" if confirmed else "granted"
        conn.execute(
            insert(token_history).values(
                app_id=app_id,
                at=now,
                event="authorized",
                reason=f"{len(grant.advertiser_ids)} accounts {how} by {_who(requested_by)}"[:500],
                access_prefix=mask(grant.access_token),
                refresh_prefix=mask(grant.refresh_token),
                generation=generation,
                actor=actor(),
            )
        )
        self._clear_on_the_wire(conn)
        # A new chain makes every waiting narrower grant moot.
        conn.execute(
            update(pending_grants)
            .where(pending_grants.c.app_id == app_id, pending_grants.c.decided_at.is_(None))
            .values(decided_at=now, decision="superseded", access_token="", refresh_token="")
        )

    def _lookup_names(self, access_token: str, ids: tuple[str, ...]) -> dict[str, str]:
        """The names of ``ids`` as the grant lists them, asked with that grant's own token
        (a grant waiting for confirmation is not stored, so discovery cannot use it)."""
        try:
            listed = self.client.authorized_accounts(access_token)
        except OceanEngineError as exc:
            log.warning("could not look up account names: %s", exc.message)
            return {}
        wanted = set(ids)
        names = {}
        for item in listed:
            account_id = str(item.get("account_id") or item.get("advertiser_id") or "")
            name = str(item.get("account_name") or item.get("advertiser_name") or "")
            if account_id in wanted and name:
                names[account_id] = name
        return names

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
        return self._status(checked=False)

    def _status(self, checked: bool) -> TokenStatus:
        self.settings.require("OCEANENGINE_APP_ID")
        app_id = self.settings.oceanengine_app_id or ""
        pair = self._pending_pair()
        if pair is not None and not self._apply(pair):
            # The database still refuses the pair: the stored chain is dead, and this is the
            # truth whether or not the database can be read at the moment.
            return TokenStatus(
                authorized=True,
                health="unsaved",
                app_id=app_id,
                access_prefix=mask(pair.values.get("access_token")),
                message=(
                    f"refreshed but not saved: authorize again if this lasts — Ocean Engine "
                    f"issued a new pair at {pair.at:%Y-%m-%d %H:%M} UTC that the database has "
                    "not taken yet (it is saved as soon as the database answers)"
                ),
            )
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
        try:
            last_failure = self.store.read(lambda conn: conn.execute(failures).first())
            lost = self._lost_refresh(row)
        except _DB_ERRORS as exc:
            raise self._store_error("cannot read the token status", exc) from None
        access_left = int((row.access_expires_at - now).total_seconds())
        refresh_left = int((row.refresh_expires_at - now).total_seconds())
        confirmed = [t for t in (row.authorized_at, row.refreshed_at, row.confirmed_at) if t]
        last_ok = max(confirmed)
        if last_failure is not None and last_failure.at <= last_ok:
            last_failure = None  # a later success made it history, not news
        if lost is not None and row.dead_at is None:
            health = "unsaved"
            message = (
                f"refreshed but not saved: authorize again — a token refresh at "
                f"{lost.started_at:%Y-%m-%d %H:%M} UTC ({lost.holder}) never stored its answer, "
                "so the stored pair is probably dead (unless that machine saves it; "
                "`adsync token refresh` settles it: it works only if the stored pair is alive)"
            )
        elif row.dead_at is not None or refresh_left <= 0:
            health = "reauthorize"
            message = row.dead_reason or "the refresh token has expired"
        elif refresh_left < EXPIRING_WITHIN.total_seconds() or last_failure is not None:
            health = "expiring"
            message = (
                f"last refresh failed: {last_failure.reason}"
                if last_failure is not None
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
            last_confirmed_at=last_ok,
            checked=checked,
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

    def _app_id(self) -> str:
        self.settings.require("OCEANENGINE_APP_ID")
        return self.settings.oceanengine_app_id or ""

    def _credentials(self) -> tuple[str, str]:
        self.settings.require("OCEANENGINE_APP_ID", "OCEANENGINE_APP_SECRET")
        assert self.settings.oceanengine_app_id and self.settings.oceanengine_app_secret
        return self.settings.oceanengine_app_id, self.settings.oceanengine_app_secret.reveal()

    def _read(self, conn: Connection | None = None, for_update: bool = False) -> Row[Any] | None:
        app_id = self._app_id()
        query = select(tokens).where(tokens.c.app_id == app_id)
        if for_update:
            query = query.with_for_update()  # PostgreSQL row lock; SQLite already holds the db
        if conn is not None:
            row = conn.execute(query).first()
        else:
            try:
                row = self.store.read(lambda own: own.execute(query).first())
            except _DB_ERRORS as exc:
                raise self._store_error("cannot read the token", exc) from None
        if row is not None:
            protect(row.access_token, row.refresh_token)
        return row

    def _store_error(self, doing: str, exc: BaseException) -> StoreError:
        log.error("%s: %s", doing, _short(exc))
        if isinstance(exc, StoreError):  # the store already said what happened
            return exc
        return StoreError(
            f"database {self.store.url_for_humans} failed: {doing} ({_short(exc)})",
            hint="check that the database is reachable (`adsync doctor`), then try again",
        )

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

    @staticmethod
    def _needed(message: str) -> AuthorizationNeeded:
        # No link here: a link is a live state bound to who asked, so it is minted where it is
        # shown (the CLI; an admin's direct chat), never carried by an error into a group card.
        return AuthorizationNeeded(message)

    def _mark_dead(self, conn: Connection, row: Row[Any], reason: str) -> None:
        now = self.now()
        conn.execute(
            update(tokens)
            .where(tokens.c.app_id == row.app_id)
            .values(dead_at=now, dead_reason=reason, updated_at=now)
        )
        self._history(conn, row, "dead", reason, row.generation)
        self._clear_on_the_wire(conn)

    def _mark_current_dead(self, reason: str) -> None:
        try:
            with self.store.exclusive() as conn:
                row = self._read(conn, for_update=True)
                if row is not None and row.dead_at is None:
                    self._mark_dead(conn, row, reason)
        except SQLAlchemyError as exc:
            log.error("could not record the dead chain: %s", _short(exc))

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


def _ids(row: Row[Any] | None) -> tuple[str, ...]:
    return tuple(json.loads(row.advertiser_ids or "[]")) if row is not None else ()


def _who(requested_by: str) -> str:
    return requested_by if is_chat_user(requested_by) else f"the operator ({requested_by or 'cli'})"


def _short(exc: BaseException) -> str:
    """An exception as one short line without values: its class and the driver's first line
    (SQLAlchemy hides statement parameters; the driver's message is the server's words)."""
    inner = getattr(exc, "orig", None) or exc
    if isinstance(exc, StoreError):
        return exc.message[:200]
    first = str(inner).strip().splitlines()[0][:160] if str(inner).strip() else ""
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__


_STATE_WORDS = {
    "unknown": "this authorization link is unknown (it was not issued by this adsync)",
    "used": "this authorization link was already used (links work once)",
    "expired": "this authorization link has expired (links live 15 minutes)",
    "not_admin": "this authorization link was asked for by someone who is not an admin",
}


def _state_refused(reason: str) -> StateRefused:
    return StateRefused(
        reason,
        _STATE_WORDS[reason],
        hint="an admin asks the bot for a new link (`auth` in a direct chat), or runs "
        "`adsync auth url` on the server",
    )
