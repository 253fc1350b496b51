"""The token manager: the only way any code obtains an Ocean Engine access token.

**Chains.** Ocean Engine authorizes per user ("API授权是以User为纬度的，Access Token记录了授权User
信息", reference notes §1.1): a token pair covers the accounts one Ocean Engine login ticked. A
team whose accounts sit under several logins has several authorizations, each its own chain of
token pairs, stored as one ``tokens`` row keyed by (app, chain). A chain's key is its user's id
(``2/user/info`` ``id``); a database's chain from before chains had keys is ``legacy`` and
learns its user at its next refresh or check. Each chain is refreshed, checked, marked dead and
rescued on its own: one dead chain never stops the others.

Ocean Engine rotates refresh tokens: every refresh returns a new pair and kills the old
refresh token (and the old access token). So, per chain:

* one refresh at a time per chain, and the stored pair re-read once it is ours: whoever waited
  finds the fresh pair and does not refresh again. On PostgreSQL the chain's row is locked
  (``SELECT ... FOR UPDATE``) while the platform is asked; other chains' rows are not, so they
  refresh at the same time. SQLite has one write lock for the whole database, and holding it
  while the platform answers (seconds, on a bad day a minute and a half of retries) would stop
  every other write — other chains' refreshes, webhook acknowledgements — for as long. There
  the chain's row is *claimed* instead (``refreshing_by``: this process and thread) in a short
  transaction, the platform is asked with no lock held, and the answer is committed in a
  second one; others wait for the claim to end. A claim whose holder is provably dead (same
  host, pid gone: ``processes.alive``) or older than ``CLAIM_LIFETIME`` is taken over;
* the new pair is written and committed right after the platform answers, before anything
  uses it, with nothing in between (no network, no logging to slow sinks);
* if that commit fails, the pair — now the only live one — is not lost: it is retried into the
  store, kept in an owner-only rescue file, and announced as "refreshed but not saved" by every
  process until it is stored (``adsync.sync.rescue`` says how);
* a refused chain (40103/40107/...) is recorded as dead and raises ``AuthorizationNeeded``
  naming its user; later callers get the same answer without calling the platform. The error
  carries no link: a link is minted where it is shown (the CLI; an admin's direct chat), bound
  to who asked.

Authorizations: a ``state`` lives 15 minutes, works once, and belongs to whoever asked for it
(a chat admin's open_id, or the local operator: the CLI, the console). Who consented is asked
of the platform with the new token (``2/user/info``): a user who already has a chain replaces
it — the platform already did ("重新授权会覆盖前一次授权") — and any other user's grant is added
beside the existing chains. A grant is judged after the exchange: one of 0 accounts is refused,
one that drops accounts its user's chain had waits for an admin to take or cancel it
(``pending_grants``), anything else is taken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import delete, insert, select, text, update
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
    chain_accounts,
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
# Which chain needs a person first: a pair not saved, then a dead chain, then an expiring one.
HEALTH_RANK = {"unsaved": 0, "reauthorize": 1, "expiring": 2, "ok": 3}
# SQLite claims (see the module docstring): longer than any refresh can take on the wire — four
# attempts of at most ADSYNC_HTTP_TIMEOUT (20 s) and their backoff — so only an abandoned one
# (its holder alive but wedged) is ever taken over by age.
CLAIM_LIFETIME = timedelta(minutes=5)
CLAIM_POLL = (0.005, 0.1)  # seconds between looks at a claimed chain: first, and at most
# PostgreSQL: one authorization at a time per schema (SQLite's BEGIN IMMEDIATE does it there),
# so two consents of one new user cannot both insert its chain.
AUTHORIZE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('adsync authorize ' || current_schema()))"


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
class ChainUser:
    """The Ocean Engine user behind a chain, as ``2/user/info`` names them."""

    id: str
    name: str = ""
    email: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})" if self.name else f"Ocean Engine user {self.id}"


def user_of(data: dict[str, Any]) -> ChainUser | None:
    """The user in a ``2/user/info`` answer (fields of the official SDK's
    model_user_info_v2_response_data.go: ``id`` int64, ``display_name``, ``email``)."""
    raw = data.get("id")
    if isinstance(raw, bool) or raw in (None, ""):
        return None
    user_id = str(raw).strip()
    if not (user_id.isascii() and user_id.isdigit()) or len(user_id) > 32:
        return None
    name = str(data.get("display_name") or "").strip()[:200]
    return ChainUser(user_id, name, str(data.get("email") or "").strip()[:200])


def describe_chain(chain_id: str, user_id: str | None, user_name: str | None) -> str:
    """Who a chain belongs to, as people read it: the display name, else what is known."""
    if user_name:
        return f"{user_name} ({user_id})" if user_id else user_name
    if user_id:
        return f"Ocean Engine user {user_id}"
    return f"the Ocean Engine login of authorization {chain_id} (name not looked up yet)"


@dataclass(frozen=True)
class Chain:
    """One authorization: whose, which accounts it granted, and whether it can give a token."""

    chain_id: str
    user: ChainUser | None
    account_ids: tuple[str, ...]  # granted (the exchange's advertiser_ids)
    problem: str | None  # why it cannot give a token without a person; None: usable
    authorized_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.problem is None

    @property
    def who(self) -> str:
        return describe_chain(
            self.chain_id,
            self.user.id if self.user else None,
            self.user.name if self.user else None,
        )


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
    chain_id: str = ""  # which authorization ("" when there is none)
    user_id: str = ""  # the Ocean Engine user who authorized it ("" until known)
    user_name: str = ""
    check_failed: str = ""  # --check could not ask the platform (transient): why

    @property
    def who(self) -> str:
        return describe_chain(self.chain_id, self.user_id or None, self.user_name or None)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        out["account_ids"] = list(self.account_ids)
        out["who"] = self.who if self.chain_id else None
        return out


@dataclass(frozen=True)
class AuthResult:
    """An authorization: what it grants, what its user's chain granted before, and whether it
    was taken (``pending_id`` set: it drops accounts and waits for an admin's decision;
    ``cancelled``: an admin refused it). ``replaced``: the user had a chain, which this one
    replaces; otherwise it was added beside the others."""

    account_ids: tuple[str, ...]
    names: dict[str, str]
    access_expires_at: datetime
    refresh_expires_at: datetime
    previous: tuple[str, ...] = ()
    pending_id: str = ""
    pending_until: datetime | None = None
    cancelled: bool = False
    requested_by: str = ""
    chain_id: str = ""
    user: ChainUser | None = None
    replaced: bool = False
    others: int = 0  # other chains stored beside this one

    @property
    def dropped(self) -> tuple[str, ...]:
        return tuple(i for i in self.previous if i not in set(self.account_ids))

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(i for i in self.account_ids if i not in set(self.previous))

    @property
    def pending(self) -> bool:
        return bool(self.pending_id)

    @property
    def who(self) -> str:
        return describe_chain(
            self.chain_id,
            self.user.id if self.user else None,
            self.user.name if self.user else None,
        )


@dataclass(frozen=True)
class Removed:
    """A chain removed (or, from ``removal``, about to be): whose, the accounts it reached,
    and those no other chain reaches (they leave the scope; their synced rows stay)."""

    chain_id: str
    who: str
    account_ids: tuple[str, ...]
    left_scope: tuple[str, ...]
    names: dict[str, str]


class ChainTokens:
    """One chain as the token source ``OceanEngineAPI`` takes."""

    def __init__(self, manager: TokenManager, chain_id: str) -> None:
        self.manager = manager
        self.chain_id = chain_id

    def get_valid_token(self) -> str:
        return self.manager.get_valid_token(self.chain_id)

    def replace_rejected(self, rejected_token: str, reason: str) -> str:
        return self.manager.replace_rejected(rejected_token, reason, chain_id=self.chain_id)


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
        # Pairs the platform issued that the database has not taken yet, per chain (rescue.py).
        self._unsaved: dict[str, rescue.UnsavedPair] = {}
        self._unsaved_lock = threading.Lock()
        self._retrier: threading.Thread | None = None
        self._closed = threading.Event()

    def close(self) -> None:
        """Stop the background retry of unsaved pairs (their rescue files stay)."""
        self._closed.set()

    # -- the chains ---------------------------------------------------------------------------

    def chains(self) -> list[Chain]:
        """Every chain of this app: usable ones first, then by key — the order a run picks a
        chain in for an account two chains grant."""
        return self._ordered(self._rows())

    def chain(self, chain_id: str) -> ChainTokens:
        return ChainTokens(self, chain_id)

    def _ordered(self, rows: Iterable[Row[Any]]) -> list[Chain]:
        found = [
            Chain(r.chain_id, _row_user(r), _ids(r), self._problem(r), r.authorized_at)
            for r in rows
        ]
        return sorted(found, key=lambda c: (not c.live, c.chain_id))

    def find(self, ref: str) -> Chain:
        """The chain ``ref`` names: its key, its user's id, or its user's display name."""
        ref = ref.strip()
        chains = self.chains()
        for test in (
            lambda c: c.chain_id == ref,
            lambda c: c.user is not None and c.user.id == ref,
            lambda c: c.user is not None and c.user.name == ref,
        ):
            hits = [c for c in chains if test(c)]
            if len(hits) == 1:
                return hits[0]
        known = ", ".join(f"{c.chain_id} ({c.who})" for c in chains) or "none"
        raise ConfigError(
            f"no single authorization is called {ref!r}",
            hint=f"`adsync auth list` shows them; authorizations: {known}",
        )

    # -- the one way to a token -------------------------------------------------------------

    def get_valid_token(self, chain_id: str | None = None) -> str:
        """A usable access token of ``chain_id`` (default: the first usable chain), refreshed
        first if less than the margin remains."""
        self._settle_unsaved(chain_id)
        row = self._read(chain_id=chain_id)
        self._raise_if_unusable(row, chain_id)
        if row.access_expires_at - self.now() > self.margin:
            return row.access_token
        return self._refresh(row.chain_id, reason="inside the refresh margin")

    def replace_rejected(
        self, rejected_token: str, reason: str, chain_id: str | None = None
    ) -> str:
        """The platform refused ``rejected_token``: refresh once (unless another process already
        did) and return the token to retry with."""
        chain = chain_id or self._chain_of(rejected_token)
        return self._refresh(
            chain, reason=f"access token refused ({reason})", rejected=rejected_token
        )

    def refresh(self, reason: str = "requested", chain_id: str | None = None) -> str:
        """Refresh now, whatever the time left (``adsync token refresh``, the watchdog)."""
        self._credentials()
        self._settle_unsaved(chain_id)
        row = self._read(chain_id=chain_id)
        self._raise_if_unusable(row, chain_id)
        return self._refresh(row.chain_id, reason=reason, force=True)

    def refresh_if_due(self, chain_id: str | None = None) -> bool:
        """For the watchdog: refresh inside the margin; True if a refresh happened."""
        self._settle_unsaved(chain_id)
        row = self._read(chain_id=chain_id)
        self._raise_if_unusable(row, chain_id)
        if row.access_expires_at - self.now() > self.margin:
            return False
        before = row.generation
        self._refresh(row.chain_id, reason="watchdog: inside the refresh margin")
        after = self._read(chain_id=row.chain_id)
        return after is not None and after.generation != before

    def check(self, chain_id: str | None = None) -> TokenStatus:
        """Ask the platform whether a chain is live (``token status --check``, the watchdog):
        one cheap authenticated call, whose answer also names the chain's user. A refused
        access token is refreshed once and the call retried; a chain the platform still refuses
        is recorded as dead."""
        row = self._read(chain_id=chain_id)
        self._raise_if_unusable(row, chain_id)
        chain = row.chain_id
        try:
            data = OceanEngineAPI(self.client, self.chain(chain)).get(USER_INFO, {})
        except TokenRevoked as exc:
            self._mark_current_dead(
                chain, f"the platform refused a freshly refreshed token ({exc.code})"
            )
            raise
        now = self.now()
        app_id = self._app_id()
        try:
            self.store.transact(
                lambda conn: conn.execute(
                    update(tokens)
                    .where(tokens.c.app_id == app_id, tokens.c.chain_id == chain)
                    .values(confirmed_at=now)
                ),
                idempotent=True,
            )
        except _DB_ERRORS as exc:
            raise self._store_error("could not record the check", exc) from None
        self._learn_user(chain, data)
        return self._status(chain, checked=True)

    def check_all(self) -> list[TokenStatus]:
        """``check`` every chain; one that cannot be asked says why in ``check_failed``."""
        checked: list[str] = []
        failed: dict[str, str] = {}
        for chain in self.chains():
            try:
                self.check(chain.chain_id)
                checked.append(chain.chain_id)
            except AuthorizationNeeded:
                pass  # recorded as dead: its status says so
            except OceanEngineError as exc:
                failed[chain.chain_id] = exc.message
        return [
            replace(s, checked=s.chain_id in checked, check_failed=failed.get(s.chain_id, ""))
            for s in self.statuses()
        ]

    def refresh_all(self, reason: str) -> list[tuple[Chain, AdsyncError | None]]:
        """Refresh every chain on its own (``token refresh``): each with what went wrong."""
        out: list[tuple[Chain, AdsyncError | None]] = []
        for chain in self.chains():
            try:
                self.refresh(reason=reason, chain_id=chain.chain_id)
            except AdsyncError as exc:
                out.append((chain, exc))
            else:
                out.append((chain, None))
        return out

    def _refresh(
        self, chain_id: str | None, reason: str, rejected: str | None = None, force: bool = False
    ) -> str:
        if self.store.dialect == "sqlite":
            return self._refresh_claiming(chain_id, reason, rejected, force)
        app_id, secret = self._credentials()
        answered: list[TokenGrant] = []  # the platform's answer, as soon as there is one
        base: list[Row[Any]] = []
        outcome: TokenGrant | OceanEngineError | AuthorizationDead | None = None
        problem: str | None = None
        try:
            # Waiting for the lock may mean waiting for another process's refresh on the wire.
            with self.store.exclusive(wait=TOKEN_LOCK_WAIT) as conn:
                row = self._read(conn, for_update=True, chain_id=chain_id)
                problem = self._problem(row, chain_id)
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
        row = base[0]
        if isinstance(outcome, AuthorizationDead):
            log.error(
                "Ocean Engine refused the refresh token of %s: %s", _who(row), outcome.message
            )
            raise self._needed(
                f"the Ocean Engine authorization of {_who(row)} is gone: {outcome.message}"
            )
        if isinstance(outcome, OceanEngineError):
            log.error("token refresh of %s failed after retries: %s", _who(row), outcome.message)
            raise outcome
        assert isinstance(outcome, TokenGrant)
        log.info("access token of %s refreshed (%s)", _who(row), reason)
        if row.user_id is None:
            # A chain from before chains had users (or whose user could not be asked when it
            # was authorized): ask now, with the new token.
            self._identify(row.chain_id, outcome.access_token)
        return outcome.access_token

    # -- SQLite: claim, ask, commit ------------------------------------------------------------

    def _refresh_claiming(
        self, chain_id: str | None, reason: str, rejected: str | None, force: bool
    ) -> str:
        """The SQLite refresh (module docstring): claim the chain in a short transaction, ask the
        platform with no lock held, commit its answer in another. The claim is what makes the
        refresh happen once across processes; the re-read after taking it is what makes a
        waiter use the pair its predecessor stored."""
        app_id, secret = self._credentials()
        holder = f"{actor()}:{threading.get_ident()}"
        deadline = time.monotonic() + TOKEN_LOCK_WAIT
        pause = CLAIM_POLL[0]
        problem: str | None = None
        while True:
            row = self._read(chain_id=chain_id)
            if row is not None and self._claimed_by_other(row, holder):
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"the token of {_who(row)} has been being refreshed by {row.refreshing_by} "
                        f"for more than {TOKEN_LOCK_WAIT:g} s",
                        hint="that process is waiting on Ocean Engine; try again in a minute",
                    )
                time.sleep(pause)  # polling a row another process is about to release
                pause = min(pause * 2, CLAIM_POLL[1])
                continue
            try:
                with self.store.exclusive(wait=TOKEN_LOCK_WAIT) as conn:
                    row = self._read(conn, chain_id=chain_id)
                    problem = self._problem(row, chain_id)
                    if problem is not None:
                        break
                    if self._claimed_by_other(row, holder):
                        continue  # taken a moment ago: wait for it
                    if rejected is not None and row.access_token != rejected:
                        return row.access_token  # someone else refreshed while we were refused
                    fresh = row.access_expires_at - self.now() > self.margin
                    if rejected is None and not force and fresh:
                        return row.access_token  # someone else refreshed while we waited
                    conn.execute(
                        update(tokens)
                        .where(tokens.c.app_id == row.app_id, tokens.c.chain_id == row.chain_id)
                        .values(refreshing_by=holder, refreshing_since=self.now())
                    )
                    break
            except _DB_ERRORS as exc:
                raise self._store_error("could not refresh the token", exc) from None
        if problem is not None:
            raise self._needed(problem)
        assert row is not None
        return self._ask_and_commit(row, app_id, secret, reason, holder)

    def _claimed_by_other(self, row: Row[Any], holder: str) -> bool:
        """Whether another live refresh holds this chain's claim (one whose holder is provably
        dead, or that is older than CLAIM_LIFETIME, no longer counts)."""
        from adsync.sync.processes import alive

        claim = row.refreshing_by
        if not claim or claim == holder:
            return False
        since = row.refreshing_since
        if since is not None and self.now() - since > CLAIM_LIFETIME:
            log.warning("taking over the token refresh %s left %s ago", claim, self.now() - since)
            return False
        if alive(claim) is False:
            log.warning("taking over the token refresh of %s: that process is gone", claim)
            return False
        return True

    def _ask_and_commit(
        self, row: Row[Any], app_id: str, secret: str, reason: str, holder: str
    ) -> str:
        """The claim is ours: ask the platform (no lock held), then store what it said."""
        try:
            grant = self.client.refresh_token(app_id, secret, row.refresh_token)
        except AuthorizationDead as exc:
            self._settle_claim(
                row, holder, dead=f"refresh refused: {exc.code} ({exc.platform_message})"
            )
            log.error("Ocean Engine refused the refresh token of %s: %s", _who(row), exc.message)
            raise self._needed(
                f"the Ocean Engine authorization of {_who(row)} is gone: {exc.message}"
            ) from None
        except OceanEngineError as exc:
            self._settle_claim(row, holder, failed=f"{reason}: {exc.message}")
            log.error("token refresh of %s failed after retries: %s", _who(row), exc.message)
            raise
        except BaseException:
            self._settle_claim(row, holder)  # Ctrl-C, a bug: nothing was stored, let others try
            raise
        protect(grant.access_token, grant.refresh_token)
        try:
            with self.store.exclusive(wait=TOKEN_LOCK_WAIT) as conn:
                current = self._read(conn, chain_id=row.chain_id)
                if current is None or current.generation != row.generation:
                    # Authorized again (or removed) while the platform answered: that replaced
                    # the grant this pair belongs to, so it is already dead. Nothing to store.
                    log.warning(
                        "a refreshed pair of %s was dropped: the authorization changed meanwhile",
                        _who(row),
                    )
                    return current.access_token if current is not None else grant.access_token
                conn.execute(
                    update(tokens)
                    .where(tokens.c.app_id == row.app_id, tokens.c.chain_id == row.chain_id)
                    .values(generation=row.generation + 1, **self._refreshed_values(grant))
                )
                self._history(conn, row, "refreshed", reason, row.generation)
        except _DB_ERRORS as exc:
            return self._save_late(grant, row, reason, exc)
        log.info("access token of %s refreshed (%s)", _who(row), reason)
        if row.user_id is None:
            self._identify(row.chain_id, grant.access_token)
        return grant.access_token

    def _settle_claim(
        self, row: Row[Any], holder: str, *, dead: str = "", failed: str = ""
    ) -> None:
        """Release our claim, recording a refusal (the chain is dead) or a failure."""
        try:
            with self.store.exclusive(wait=TOKEN_LOCK_WAIT) as conn:
                current = self._read(conn, chain_id=row.chain_id)
                if current is None or current.refreshing_by != holder:
                    return
                if dead:
                    self._mark_dead(conn, current, dead)
                    return
                if failed:
                    self._history(conn, current, "failed", failed, current.generation)
                conn.execute(
                    update(tokens)
                    .where(tokens.c.app_id == row.app_id, tokens.c.chain_id == row.chain_id)
                    .values(refreshing_by=None, refreshing_since=None)
                )
        except _DB_ERRORS as exc:
            # The claim runs out by itself (CLAIM_LIFETIME, or when this process ends).
            log.error("could not release the token refresh claim: %s", _short(exc))

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
            self._clear_on_the_wire(conn, row.chain_id)
            return exc
        answered.append(grant)
        protect(grant.access_token, grant.refresh_token)
        values = self._refreshed_values(grant)
        conn.execute(
            update(tokens)
            .where(tokens.c.app_id == row.app_id, tokens.c.chain_id == row.chain_id)
            .values(generation=row.generation + 1, **values)
        )
        self._history(conn, row, "refreshed", reason, row.generation)
        self._clear_on_the_wire(conn, row.chain_id)
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
            refreshing_by=None,
            refreshing_since=None,
        )

    # -- who authorized ---------------------------------------------------------------------------

    def _whoami(self, access_token: str) -> ChainUser | None:
        """The user a token belongs to (``2/user/info``), or None if the platform cannot say
        now (the chain then learns it later)."""
        try:
            data = self.client.request("GET", USER_INFO, access_token=access_token)
        except OceanEngineError as exc:
            log.warning("could not ask Ocean Engine who authorized: %s", exc.message)
            return None
        return user_of(data)

    def _identify(self, chain_id: str, access_token: str) -> None:
        user = self._whoami(access_token)
        if user is not None:
            self._learn_user(
                chain_id, {"id": user.id, "display_name": user.name, "email": user.email}
            )

    def _learn_user(self, chain_id: str, data: dict[str, Any]) -> None:
        """Record who a working chain belongs to (best effort). Another chain of the same user
        is older — the user authorized again, which replaced it at Ocean Engine — so it goes."""
        user = user_of(data)
        if user is None:
            return
        app_id = self._app_id()
        now = self.now()

        def learn(conn: Connection) -> list[str]:
            row = conn.execute(
                select(tokens).where(tokens.c.app_id == app_id, tokens.c.chain_id == chain_id)
            ).first()
            if row is None:
                return []
            if (row.user_id, row.user_name, row.user_email) != (user.id, user.name, user.email):
                conn.execute(
                    update(tokens)
                    .where(tokens.c.app_id == app_id, tokens.c.chain_id == chain_id)
                    .values(user_id=user.id, user_name=user.name, user_email=user.email)
                )
            older = conn.execute(
                select(tokens).where(
                    tokens.c.app_id == app_id,
                    tokens.c.user_id == user.id,
                    tokens.c.chain_id != chain_id,
                )
            ).all()
            for other in older:
                self._forget_chain(
                    conn,
                    other,
                    "superseded",
                    f"replaced: {user.label} authorized again (authorization {chain_id})",
                    now,
                )
            return [o.chain_id for o in older]

        try:
            gone = self.store.transact(learn, idempotent=True)
        except _DB_ERRORS as exc:
            log.warning("could not record who authorized %s: %s", chain_id, _short(exc))
            return
        for other in gone:
            log.warning("authorization %s was replaced by %s of the same user", other, chain_id)

    def _identify_unknown(self) -> None:
        """Before judging a new grant: ask who each usable chain of unknown user belongs to
        (a migrated chain), so a new grant of that user replaces it rather than sit beside."""
        try:
            unknown = [c for c in self.chains() if c.user is None and c.live]
        except _DB_ERRORS:
            return
        for chain in unknown:
            try:
                self.check(chain.chain_id)
            except AdsyncError as exc:
                log.info("could not ask who authorized %s: %s", chain.chain_id, exc.message)

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
            chain_id=row.chain_id,
        )
        with self._unsaved_lock:
            self._unsaved[pair.chain_id] = pair
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
                row = self._read(conn, for_update=True, chain_id=pair.chain_id)
                stored = self._store_unsaved(conn, row, pair)
        except _DB_ERRORS as exc:
            log.debug("an unsaved token pair could not be stored yet: %s", _short(exc))
            return False
        if not stored:
            log.warning(
                "a rescued token pair was dropped: the chain changed since (authorized again)"
            )
        with self._unsaved_lock:
            waiting = self._unsaved.get(pair.chain_id)
            if waiting is not None and waiting.refresh_token == pair.refresh_token:
                del self._unsaved[pair.chain_id]
        rescue.forget(pair)
        return True

    def _store_unsaved(
        self, conn: Connection, row: Row[Any] | None, pair: rescue.UnsavedPair
    ) -> bool:
        if pair.base_generation is None:
            if row is not None:
                return False
            conn.execute(
                insert(tokens).values(
                    app_id=pair.app_id, chain_id=pair.chain_id, generation=1, **pair.values
                )
            )
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
                .where(tokens.c.app_id == pair.app_id, tokens.c.chain_id == pair.chain_id)
                .values(generation=generation, dead_at=None, dead_reason=None, **pair.values)
            )
        conn.execute(
            insert(token_history).values(
                app_id=pair.app_id,
                chain_id=pair.chain_id,
                at=self.now(),
                event=pair.kind,
                reason=f"{pair.reason} (saved late: the database failed at the first commit)"[:500],
                access_prefix=mask(pair.values.get("access_token")),
                refresh_prefix=mask(pair.values.get("refresh_token")),
                generation=generation - 1 if pair.kind == "refreshed" else generation,
                actor=actor(),
            )
        )
        self._clear_on_the_wire(conn, pair.chain_id)
        return True

    def _pending_pairs(self, chain_id: str | None = None) -> list[rescue.UnsavedPair]:
        """Pairs waiting to be stored: this process's, and rescue files on this machine."""
        with self._unsaved_lock:
            mine = dict(self._unsaved)
        if chain_id is not None and chain_id in mine:
            return [mine[chain_id]]
        if not self.settings.oceanengine_app_id:
            return []
        database = rescue.fingerprint(self.store.url_for_humans)
        if chain_id is not None:
            found = rescue.load(
                self._rescue_dir(), self.settings.oceanengine_app_id, database, chain_id
            )
            return [found] if found is not None else []
        pairs = dict(mine)
        for pair in rescue.load_all(self._rescue_dir(), self.settings.oceanengine_app_id, database):
            pairs.setdefault(pair.chain_id, pair)
        return list(pairs.values())

    def _settle_unsaved(self, chain_id: str | None = None) -> None:
        """Before using a chain: store a pair left unsaved (here or by another process on this
        machine); if the database still refuses it, the stored chain is dead — say so."""
        for pair in self._pending_pairs(chain_id):
            if self._apply(pair):
                continue
            raise TokenNotSaved(
                f"a refreshed token pair (from {pair.at:%Y-%m-%d %H:%M} UTC) is still not "
                f"saved: the database {self.store.url_for_humans} does not take it",
                hint="check the database (`adsync doctor`); the pair is saved as soon as it "
                "answers",
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
                waiting = list(self._unsaved.values())
            if not waiting:
                return
            if all(self._apply(pair) for pair in waiting):
                log.warning("the refreshed token pair was saved after the database came back")
                return
            delay = min(delay * 2, rescue.BACKGROUND_MAX_DELAY)

    def _rescue_dir(self) -> Path:
        return rescue.directory(self.settings.db_url, self.settings.data_dir)

    def _mark_on_the_wire(self, row: Row[Any]) -> None:
        """PostgreSQL: record, in its own transaction, that generation ``row.generation`` of this
        chain is being refreshed (see rescue.py, point 3). Raises (and nothing is sent) if it
        cannot."""
        if self.store.dialect != "postgresql":
            return

        def mark(conn: Connection) -> None:
            conn.execute(
                delete(token_refreshes).where(
                    token_refreshes.c.app_id == row.app_id,
                    token_refreshes.c.chain_id == row.chain_id,
                )
            )
            conn.execute(
                insert(token_refreshes).values(
                    app_id=row.app_id,
                    chain_id=row.chain_id,
                    generation=row.generation,
                    holder=f"{actor()}:{threading.get_ident()}",
                    started_at=self.now(),
                )
            )

        # Another connection than the lock's (a separate, committed transaction); a rerun
        # after a lost commit answer writes the same row again.
        self.store.transact(mark, idempotent=True)

    def _clear_on_the_wire(self, conn: Connection, chain_id: str) -> None:
        if self.store.dialect == "postgresql":
            conn.execute(
                delete(token_refreshes).where(
                    token_refreshes.c.app_id == self._app_id(),
                    token_refreshes.c.chain_id == chain_id,
                )
            )

    def _lost_refresh(self, row: Row[Any]) -> Row[Any] | None:
        """A refresh of the stored generation that nobody is finishing: its answer was lost or
        is waiting in another machine's rescue file. None if there is none (or on SQLite)."""
        if self.store.dialect != "postgresql":
            return None

        def probe(conn: Connection) -> Row[Any] | None:
            marker = conn.execute(
                select(token_refreshes).where(
                    token_refreshes.c.app_id == row.app_id,
                    token_refreshes.c.chain_id == row.chain_id,
                    token_refreshes.c.generation == row.generation,
                )
            ).first()
            if marker is None:
                return None
            # A refresher in progress holds the token row; SKIP LOCKED finds it free only if
            # nobody does. The read's transaction is rolled back at once: a look, not a write.
            free = conn.execute(
                select(tokens.c.app_id)
                .where(tokens.c.app_id == row.app_id, tokens.c.chain_id == row.chain_id)
                .with_for_update(skip_locked=True)
            ).first()
            return marker if free is not None else None

        return self.store.read(probe)

    # -- authorization ------------------------------------------------------------------------

    def authorization_url(self, requested_by: str = "") -> str:
        """A link a person opens to authorize; its ``state`` is remembered for the callback,
        for 15 minutes, bound to ``requested_by`` (an admin's open_id, or the local operator).
        Whoever is logged in at Ocean Engine when it is opened is the user it authorizes."""
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
        """Exchange a one-time auth code, ask who granted it, and judge the grant: 0 accounts
        is refused (GrantRefused); one that drops accounts its user's chain had is kept pending
        for an admin (``result.pending``) unless ``confirm``; anything else is stored — as its
        user's chain, replacing the one they had, or beside the others for a new user.

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
        # Outside the lock (a check may refresh): learn whose a migrated chain is, so that a
        # new grant of the same user replaces it.
        self._identify_unknown()
        answered: list[TokenGrant] = []
        base: list[Row[Any] | None] = []
        refused: AuthorizationDead | None = None
        verdict = ""
        pending_id = ""
        chain_id = ""
        user: ChainUser | None = None
        others = 0
        now = self.now()
        try:
            with self.store.exclusive(wait=TOKEN_LOCK_WAIT) as conn:
                # The exchange happens inside the transaction: if the database cannot be had,
                # the code is not spent and can be pasted again within its 10 minutes.
                if self.store.dialect == "postgresql":
                    conn.execute(text(AUTHORIZE_LOCK))
                try:
                    grant = self.client.exchange_auth_code(app_id, secret, auth_code)
                except AuthorizationDead as exc:
                    refused = exc
                else:
                    answered.append(grant)
                    protect(grant.access_token, grant.refresh_token)
                    user = self._whoami(grant.access_token)
                    rows = self._rows(conn)
                    target = self._target(rows, user)
                    if target is not None:  # lock its row: a refresh of it waits for us
                        target = self._read(conn, for_update=True, chain_id=target.chain_id)
                    base.append(target)
                    others = len(
                        [r for r in rows if target is None or r.chain_id != target.chain_id]
                    )
                    chain_id = target.chain_id if target is not None else _new_chain_id(rows, user)
                    previous = _ids(target)
                    dropped = [i for i in previous if i not in set(grant.advertiser_ids)]
                    if not grant.advertiser_ids:
                        verdict = "empty"
                        if target is not None:
                            self._supersede(
                                conn,
                                target,
                                f"replaced at Ocean Engine by an authorization of 0 accounts "
                                f"({_by(requested_by)}, {now:%Y-%m-%d %H:%M} UTC), which "
                                "adsync refused",
                            )
                    elif dropped and target is not None and not confirm:
                        verdict = "pending"
                        pending_id = self._park(conn, target, grant, code_hash, requested_by, user)
                    else:
                        verdict = "taken"
                        self._store_grant(conn, app_id, chain_id, target, grant, user, requested_by)
        except _DB_ERRORS as exc:
            if verdict != "taken" or not answered:
                raise self._store_error("could not store the authorization", exc) from None
            self._save_authorization_late(answered[0], chain_id, base[0], user, requested_by, exc)
        if refused is not None:
            # Outside the transaction: nothing slow inside the lock.
            raise AuthorizationNeeded(
                "this authorization code was refused: it was already used or has expired "
                f"(codes work once, for 10 minutes) [{refused.code}]"
            )
        grant = answered[0]
        target = base[0]
        previous = _ids(target)
        if verdict == "empty":
            log.warning("an authorization of 0 accounts (%s) was refused", _by(requested_by))
            raise GrantRefused(
                "this authorization grants no accounts, so adsync did not take it"
                + (
                    f"; Ocean Engine replaced {_who(target)}'s previous authorization with it, "
                    f"so {_who(target)}'s accounts do not sync until they authorize again"
                    if target is not None
                    else ""
                ),
                hint="authorize again and tick every local-push account",
            )
        if verdict == "pending":  # not stored: name the accounts with the new token, no more
            names = self._lookup_names(grant.access_token, grant.advertiser_ids)
        else:
            names = self._discover(chain_id, grant.advertiser_ids)
        result = AuthResult(
            account_ids=grant.advertiser_ids,
            names=names,
            access_expires_at=now + timedelta(seconds=grant.expires_in),
            refresh_expires_at=now + timedelta(seconds=grant.refresh_expires_in),
            previous=previous,
            pending_id=pending_id,
            pending_until=now + PENDING_LIFETIME if pending_id else None,
            requested_by=requested_by,
            chain_id=chain_id,
            user=user or _row_user(target),
            replaced=target is not None,
            others=others,
        )
        if verdict == "pending":
            self._name_pending(pending_id, names)
            log.warning(
                "an authorization of %s (%s) would drop %d of %d accounts: waiting for "
                "confirmation",
                result.who,
                _by(requested_by),
                len(result.dropped),
                len(previous),
            )
            return result
        log.info(
            "authorized: %d accounts granted by %s (%s), %s",
            len(grant.advertiser_ids),
            result.who,
            _by(requested_by),
            "replacing their previous authorization" if target is not None else "a new chain",
        )
        return result

    def _target(self, rows: list[Row[Any]], user: ChainUser | None) -> Row[Any] | None:
        """The chain a new grant replaces: its user's, if they have one. A chain whose user is
        not known (a migrated one) that the platform no longer accepts is taken to be the same
        user's: a consent kills that user's previous tokens, which is how it died. With the
        user unknown (the platform did not say), a lone chain of unknown user is replaced, as
        before chains had users; anything else is a new chain, its user learned later."""
        if user is not None:
            for row in rows:
                if row.user_id == user.id:
                    return row
        unknown = [r for r in rows if r.user_id is None]
        if user is None:
            return unknown[0] if len(rows) == 1 and unknown else None
        dead = [r for r in unknown if self._problem(r) is not None]
        return dead[0] if len(dead) == 1 else None

    def _save_authorization_late(
        self,
        grant: TokenGrant,
        chain_id: str,
        existing: Row[Any] | None,
        user: ChainUser | None,
        requested_by: str,
        exc: BaseException,
    ) -> None:
        now = self.now()
        pair = rescue.UnsavedPair(
            app_id=self._app_id(),
            kind="authorized",
            base_generation=existing.generation if existing is not None else None,
            values=self._grant_values(grant, now, user),
            reason=f"{len(grant.advertiser_ids)} accounts granted ({_by(requested_by)})",
            at=now,
            database=rescue.fingerprint(self.store.url_for_humans),
            chain_id=chain_id,
        )
        with self._unsaved_lock:
            self._unsaved[chain_id] = pair
        for delay in rescue.RETRY_DELAYS:
            self.sleep(delay)
            if self._apply(pair):
                return
        raise self._keep(pair, exc)

    def decide(self, pending_id: str, decision: str, decided_by: str = "") -> AuthResult:
        """Take or cancel a pending grant, once. Taking it stores its pair in the chain it
        replaces (unless that chain changed since); cancelling leaves that chain as it is —
        dead at Ocean Engine, which replaced it when the new grant was made — and discards the
        new pair. ``decided_by`` defaults to whoever asked for the grant's link (the
        confirmation page is bound to that grant, so to them)."""
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
            chain_id = p.chain_id or ""
            existing = self._read(conn, for_update=True, chain_id=chain_id)
            previous = _ids(existing)
            current = existing.generation if existing is not None else None
            if decision == "take" and current != p.base_generation:
                raise GrantRefused(
                    "the authorization changed since this grant was made; it was not taken",
                    hint="look at `adsync auth list`; authorize again if accounts are missing",
                )
            user = _pending_user(p)
            if decision == "take":
                grant = TokenGrant(
                    access_token=p.access_token,
                    refresh_token=p.refresh_token,
                    expires_in=max(int((p.access_expires_at - now).total_seconds()), 0),
                    refresh_expires_in=max(int((p.refresh_expires_at - now).total_seconds()), 0),
                    advertiser_ids=tuple(json.loads(p.advertiser_ids or "[]")),
                )
                self._store_grant(
                    conn, p.app_id, chain_id, existing, grant, user, decided_by, confirmed=True
                )
            elif existing is not None:
                self._supersede(
                    conn,
                    existing,
                    f"replaced at Ocean Engine by an authorization that dropped accounts; "
                    f"{_by(decided_by)} cancelled it at {now:%Y-%m-%d %H:%M} UTC",
                )
        result = self._pending_result(
            p, previous, cancelled=decision == "cancel", decided_by=decided_by
        )
        if decision == "take":
            self._discover(chain_id, result.account_ids)
            log.warning(
                "a narrower authorization of %s was confirmed by %s: %d accounts dropped",
                result.who,
                _by(decided_by),
                len(result.dropped),
            )
        else:
            log.warning(
                "a narrower authorization of %s was cancelled by %s", result.who, _by(decided_by)
            )
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
                token_row = conn.execute(
                    select(tokens).where(
                        tokens.c.app_id == p.app_id, tokens.c.chain_id == (p.chain_id or "")
                    )
                ).first()
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
            chain_id=p.chain_id or "",
            user=_pending_user(p),
            replaced=True,
        )

    def _park(
        self,
        conn: Connection,
        existing: Row[Any],
        grant: TokenGrant,
        code_hash: str,
        requested_by: str,
        user: ChainUser | None,
    ) -> str:
        """Keep a narrowing grant for an admin's decision. The chain it would replace is
        recorded as replaced: Ocean Engine overwrote it with this grant
        ("重新授权会覆盖前一次授权")."""
        import secrets

        pending_id = secrets.token_urlsafe(24)
        now = self.now()
        conn.execute(
            insert(pending_grants).values(
                id=pending_id,
                app_id=existing.app_id,
                chain_id=existing.chain_id,
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
                user_id=user.id if user else existing.user_id,
                user_name=user.name if user else existing.user_name,
                user_email=user.email if user else existing.user_email,
            )
        )
        dropped = len([i for i in _ids(existing) if i not in set(grant.advertiser_ids)])
        self._supersede(
            conn,
            existing,
            f"replaced at Ocean Engine by a new authorization ({_by(requested_by)}) that drops "
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
            .where(tokens.c.app_id == existing.app_id, tokens.c.chain_id == existing.chain_id)
            .values(dead_at=existing.dead_at or now, dead_reason=reason[:500], updated_at=now)
        )
        self._history(conn, existing, "dead", reason, existing.generation)

    def _grant_values(
        self, grant: TokenGrant, now: datetime, user: ChainUser | None
    ) -> dict[str, Any]:
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
            confirmed_at=now,
            refreshing_by=None,  # a refresh of the grant this replaces stores nothing now
            refreshing_since=None,
        )
        if user is not None:  # unknown: a replaced chain keeps the user it had
            values.update(user_id=user.id, user_name=user.name, user_email=user.email)
        return values

    def _store_grant(
        self,
        conn: Connection,
        app_id: str,
        chain_id: str,
        existing: Row[Any] | None,
        grant: TokenGrant,
        user: ChainUser | None,
        requested_by: str = "cli",
        confirmed: bool = False,
    ) -> None:
        now = self.now()
        values = self._grant_values(grant, now, user)
        generation = (existing.generation + 1) if existing else 1
        if existing is None:
            conn.execute(
                insert(tokens).values(
                    app_id=app_id, chain_id=chain_id, generation=generation, **values
                )
            )
        else:
            conn.execute(
                update(tokens)
                .where(tokens.c.app_id == app_id, tokens.c.chain_id == chain_id)
                .values(generation=generation, **values)
            )
        how = "confirmed" if confirmed else "granted"
        whose = f" of {user.label}" if user is not None else ""
        conn.execute(
            insert(token_history).values(
                app_id=app_id,
                chain_id=chain_id,
                at=now,
                event="authorized",
                reason=f"{len(grant.advertiser_ids)} accounts{whose} {how} by {_by(requested_by)}"[
                    :500
                ],
                access_prefix=mask(grant.access_token),
                refresh_prefix=mask(grant.refresh_token),
                generation=generation,
                actor=actor(),
            )
        )
        self._clear_on_the_wire(conn, chain_id)
        # A new pair of this chain makes every waiting narrower grant of it moot.
        conn.execute(
            update(pending_grants)
            .where(
                pending_grants.c.app_id == app_id,
                pending_grants.c.chain_id == chain_id,
                pending_grants.c.decided_at.is_(None),
            )
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

    def _discover(self, chain_id: str, ids: tuple[str, ...]) -> dict[str, str]:
        """Turn a chain's granted ids into accounts at once (adsync.sync.discovery:
        organisations and 来客 accounts are expanded), best effort: a sync does it again.
        Returns the granted accounts' names."""
        from adsync.sync import discovery  # not needed by `token status`

        try:
            found = discovery.discover(OceanEngineAPI(self.client, self.chain(chain_id)))
        except (OceanEngineError, AuthorizationNeeded) as exc:
            log.warning("could not list the granted accounts yet: %s", exc.message)
            return {}
        except (TypeError, ValueError, AttributeError):  # an answer unlike the SDK's models
            log.exception("could not list the granted accounts yet: unexpected answer")
            return {}
        discovery.save_chains(self, {chain_id: found})
        wanted = set(ids)
        return {g.id: g.name for g in found.grantees if g.id in wanted and g.name}

    # -- removing a chain -----------------------------------------------------------------------

    def removal(self, ref: str) -> Removed:
        """What removing the chain ``ref`` names would do (nothing is changed)."""
        chain = self.find(ref)
        return self.store.read(lambda conn: self._removal(conn, chain))

    def remove(self, ref: str, removed_by: str = "cli") -> Removed:
        """Forget the chain ``ref`` names: its tokens, its pending grants, the accounts only it
        reached (they leave the scope; rows already synced stay). Ocean Engine keeps the grant
        itself until its user removes the app there."""
        chain = self.find(ref)
        now = self.now()
        reason = f"removed by {_by(removed_by)}"
        with self.store.exclusive() as conn:
            row = self._read(conn, for_update=True, chain_id=chain.chain_id)
            if row is None:
                raise ConfigError(
                    f"authorization {chain.chain_id} was removed a moment ago",
                    hint="`adsync auth list` shows what is left",
                )
            removed = self._removal(conn, chain)
            self._forget_chain(conn, row, "removed", reason, now)
            if removed.left_scope:
                conn.execute(
                    update(accounts)
                    .where(
                        accounts.c.account_id.in_(removed.left_scope),
                        accounts.c.scope.in_(("in", "manager", "skipped")),
                    )
                    .values(
                        scope="vanished",
                        note=f"its authorization ({chain.who}) was {reason}",
                        fix="authorize it again (an admin sends `auth` to the bot in a direct "
                        "chat), or `adsync auth list` for the others",
                        vanished_at=now,
                    )
                )
        for pair in self._pending_pairs(chain.chain_id):  # an unsaved pair of it is moot too
            with self._unsaved_lock:
                self._unsaved.pop(chain.chain_id, None)
            rescue.forget(pair)
        log.warning(
            "authorization %s (%s) %s; %d accounts left the scope",
            chain.chain_id,
            chain.who,
            reason,
            len(removed.left_scope),
        )
        return removed

    def _removal(self, conn: Connection, chain: Chain) -> Removed:
        app_id = self._app_id()
        rows = conn.execute(select(tokens).where(tokens.c.app_id == app_id)).all()
        reached: dict[str, set[str]] = {r.chain_id: set(_ids(r)) for r in rows}
        for r in conn.execute(select(chain_accounts).where(chain_accounts.c.app_id == app_id)):
            reached.setdefault(r.chain_id, set()).add(r.account_id)
        mine = reached.get(chain.chain_id, set())
        elsewhere = set().union(*(v for k, v in reached.items() if k != chain.chain_id))
        names = {
            r.account_id: r.name
            for r in conn.execute(
                select(accounts.c.account_id, accounts.c.name).where(
                    accounts.c.account_id.in_(sorted(mine))
                )
            )
            if r.name
        }
        return Removed(
            chain.chain_id,
            chain.who,
            tuple(sorted(mine)),
            tuple(sorted(mine - elsewhere)),
            names,
        )

    def _forget_chain(
        self, conn: Connection, row: Row[Any], event: str, reason: str, now: datetime
    ) -> None:
        """Delete a chain's row and what hangs on it; its history stays (masked prefixes)."""
        where_app = row.app_id
        conn.execute(
            delete(tokens).where(tokens.c.app_id == where_app, tokens.c.chain_id == row.chain_id)
        )
        conn.execute(
            delete(chain_accounts).where(
                chain_accounts.c.app_id == where_app, chain_accounts.c.chain_id == row.chain_id
            )
        )
        conn.execute(
            delete(token_refreshes).where(
                token_refreshes.c.app_id == where_app,
                token_refreshes.c.chain_id == row.chain_id,
            )
        )
        conn.execute(
            update(pending_grants)
            .where(
                pending_grants.c.app_id == where_app,
                pending_grants.c.chain_id == row.chain_id,
                pending_grants.c.decided_at.is_(None),
            )
            .values(decided_at=now, decision=event, access_token="", refresh_token="")
        )
        self._history(conn, row, event, reason, row.generation)

    # -- status -------------------------------------------------------------------------------

    def status(self, chain_id: str | None = None) -> TokenStatus:
        """The status of ``chain_id``; without one, of the chain that needs a person first (the
        only one, for a single authorization), or "not authorized yet"."""
        found = self.statuses()
        if chain_id is not None:
            found = [s for s in found if s.chain_id == chain_id]
        if not found:
            return self._not_authorized()
        return min(found, key=lambda s: HEALTH_RANK.get(s.health, 0))

    def statuses(self, checked: Iterable[str] = ()) -> list[TokenStatus]:
        """One status per chain, in the chains' order (usable first, then by key)."""
        self.settings.require("OCEANENGINE_APP_ID")
        unsaved = {p.chain_id: p for p in self._pending_pairs() if not self._apply(p)}
        try:
            found = self._rows()
        except StoreError:
            if unsaved:
                # The database still refuses the pairs: those chains are dead, and this is the
                # truth whether or not the database can be read at the moment.
                return [self._unsaved_status(p) for p in unsaved.values()]
            raise
        rows = {r.chain_id: r for r in found}
        checked = set(checked)
        out = []
        for chain in self._ordered(found):
            row = rows.get(chain.chain_id)
            if row is None:
                continue
            if chain.chain_id in unsaved:
                out.append(self._unsaved_status(unsaved.pop(chain.chain_id), row))
            else:
                out.append(self._row_status(row, checked=chain.chain_id in checked))
        out += [self._unsaved_status(p) for p in unsaved.values()]
        return out

    def _not_authorized(self) -> TokenStatus:
        return TokenStatus(
            authorized=False,
            health="reauthorize",
            app_id=self._app_id(),
            message="not authorized yet: run `adsync auth url`, open the link, then "
            "`adsync auth code CODE`",
        )

    def _unsaved_status(self, pair: rescue.UnsavedPair, row: Row[Any] | None = None) -> TokenStatus:
        user = _row_user(row)
        return TokenStatus(
            authorized=True,
            health="unsaved",
            app_id=pair.app_id,
            access_prefix=mask(pair.values.get("access_token")),
            message=(
                f"refreshed but not saved: authorize again if this lasts — Ocean Engine "
                f"issued a new pair at {pair.at:%Y-%m-%d %H:%M} UTC that the database has "
                "not taken yet (it is saved as soon as the database answers)"
            ),
            chain_id=pair.chain_id,
            user_id=user.id if user else str(pair.values.get("user_id") or ""),
            user_name=user.name if user else str(pair.values.get("user_name") or ""),
        )

    def _status(self, chain_id: str, checked: bool) -> TokenStatus:
        row = self._read(chain_id=chain_id)
        if row is None:
            return self._not_authorized()
        return self._row_status(row, checked)

    def _row_status(self, row: Row[Any], checked: bool) -> TokenStatus:
        now = self.now()
        failures = (
            select(token_history.c.at, token_history.c.reason)
            .where(token_history.c.app_id == row.app_id)
            .where(token_history.c.chain_id == row.chain_id)
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
            app_id=row.app_id,
            access_expires_at=row.access_expires_at,
            access_left_s=access_left,
            refresh_expires_at=row.refresh_expires_at,
            refresh_left_s=refresh_left,
            last_refresh_at=row.refreshed_at,
            last_failure_at=last_failure.at if last_failure else None,
            last_failure_reason=last_failure.reason if last_failure else None,
            dead_reason=row.dead_reason,
            generation=row.generation,
            account_ids=_ids(row),
            access_prefix=mask(row.access_token),
            message=message,
            last_confirmed_at=last_ok,
            checked=checked,
            chain_id=row.chain_id,
            user_id=row.user_id or "",
            user_name=row.user_name or "",
        )

    def granted_account_ids(self) -> tuple[str, ...]:
        """Every account any chain granted (in the chains' order, each once)."""
        seen: dict[str, None] = {}
        for chain in self.chains():
            seen.update(dict.fromkeys(chain.account_ids))
        return tuple(seen)

    def history(self, limit: int = 20, chain_id: str | None = None) -> list[dict[str, Any]]:
        query = select(token_history).where(
            token_history.c.app_id == (self.settings.oceanengine_app_id or "")
        )
        if chain_id is not None:
            query = query.where(token_history.c.chain_id == chain_id)
        query = query.order_by(token_history.c.id.desc()).limit(limit)
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

    def _rows(self, conn: Connection | None = None) -> list[Row[Any]]:
        """Every chain's row of this app, by key."""
        query = select(tokens).where(tokens.c.app_id == self._app_id()).order_by(tokens.c.chain_id)
        if conn is not None:
            rows = conn.execute(query).all()
        else:
            try:
                rows = self.store.read(lambda own: own.execute(query).all())
            except _DB_ERRORS as exc:
                raise self._store_error("cannot read the token", exc) from None
        for row in rows:
            protect(row.access_token, row.refresh_token)
        return list(rows)

    def _read(
        self,
        conn: Connection | None = None,
        for_update: bool = False,
        *,
        chain_id: str | None,
    ) -> Row[Any] | None:
        """The row of ``chain_id``, or of the default chain (the first usable one in the chains'
        order) when it is None."""
        if chain_id is None:
            ordered = self._ordered(self._rows(conn))
            if not ordered:
                return None
            chain_id = ordered[0].chain_id
        query = select(tokens).where(
            tokens.c.app_id == self._app_id(), tokens.c.chain_id == chain_id
        )
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

    def _chain_of(self, access_token: str) -> str | None:
        """The chain whose stored access token this is (the default chain if none is)."""
        for row in self._rows():
            if row.access_token == access_token:
                return str(row.chain_id)
        return None

    def _store_error(self, doing: str, exc: BaseException) -> StoreError:
        log.error("%s: %s", doing, _short(exc))
        if isinstance(exc, StoreError):  # the store already said what happened
            return exc
        return StoreError(
            f"database {self.store.url_for_humans} failed: {doing} ({_short(exc)})",
            hint="check that the database is reachable (`adsync doctor`), then try again",
        )

    def _problem(self, row: Row[Any] | None, chain_id: str | None = None) -> str | None:
        """Why this chain cannot give a token without a person, or None."""
        if row is None:
            if chain_id is not None:
                return f"the Ocean Engine authorization {chain_id} is no longer stored (removed)"
            return "Ocean Engine is not authorized yet"
        if row.dead_at is not None:
            return f"the Ocean Engine authorization of {_who(row)} is gone: {row.dead_reason}"
        if row.refresh_expires_at <= self.now():
            return (
                f"the refresh token of {_who(row)} expired at "
                f"{row.refresh_expires_at:%Y-%m-%d %H:%M} UTC"
            )
        return None

    def _raise_if_unusable(self, row: Row[Any] | None, chain_id: str | None = None) -> Row[Any]:
        problem = self._problem(row, chain_id)
        if problem is not None:
            raise self._needed(problem)
        assert row is not None
        return row

    @staticmethod
    def _needed(message: str) -> AuthorizationNeeded:
        # No link here: a link is a live state bound to who asked, so it is minted where it is
        # shown (the CLI; an admin's direct chat), never carried by an error into a group card.
        return AuthorizationNeeded(message)

    def _mark_dead(self, conn: Connection, row: Row[Any], reason: str) -> None:
        now = self.now()
        conn.execute(
            update(tokens)
            .where(tokens.c.app_id == row.app_id, tokens.c.chain_id == row.chain_id)
            .values(
                dead_at=now,
                dead_reason=reason,
                updated_at=now,
                refreshing_by=None,
                refreshing_since=None,
            )
        )
        self._history(conn, row, "dead", reason, row.generation)
        self._clear_on_the_wire(conn, row.chain_id)

    def _mark_current_dead(self, chain_id: str, reason: str) -> None:
        try:
            with self.store.exclusive() as conn:
                row = self._read(conn, for_update=True, chain_id=chain_id)
                if row is not None and row.dead_at is None:
                    self._mark_dead(conn, row, reason)
        except _DB_ERRORS as exc:
            log.error("could not record the dead chain: %s", _short(exc))

    def _history(
        self, conn: Connection, row: Row[Any], event: str, reason: str, generation: int
    ) -> None:
        conn.execute(
            insert(token_history).values(
                app_id=row.app_id,
                chain_id=row.chain_id,
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


def _row_user(row: Row[Any] | None) -> ChainUser | None:
    if row is None or not row.user_id:
        return None
    return ChainUser(row.user_id, row.user_name or "", row.user_email or "")


def _pending_user(p: Row[Any]) -> ChainUser | None:
    if not p.user_id:
        return None
    return ChainUser(p.user_id, p.user_name or "", p.user_email or "")


def _who(row: Row[Any] | None) -> str:
    if row is None:
        return "nobody"
    return describe_chain(row.chain_id, row.user_id, row.user_name)


def _new_chain_id(rows: list[Row[Any]], user: ChainUser | None) -> str:
    """A new chain's key: its user's id (a user has one chain); if the platform did not say
    who authorized, a generated key (the user is learned later)."""
    taken = {r.chain_id for r in rows}
    if user is not None and user.id not in taken:
        return user.id
    import secrets

    while True:
        candidate = f"u-{secrets.token_hex(4)}"
        if candidate not in taken:
            return candidate


def _by(requested_by: str) -> str:
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
