"""The token manager against the sandbox over HTTP, on both storage backends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from adsync.sync.errors import AuthorizationNeeded
from adsync.sync.oceanengine import AuthorizationDead, TransientError
from adsync.sync.store import oauth_states, token_history, tokens, utcnow

from .conftest import OE_APP_ID, OE_SECRET, Sandbox


def _row(services: Any) -> Any:
    with services.store.engine.connect() as conn:
        return conn.execute(select(tokens)).one()


def _push_inside_margin(services: Any, seconds_left: int = 60) -> None:
    with services.store.begin() as conn:
        conn.execute(
            update(tokens).values(access_expires_at=utcnow() + timedelta(seconds=seconds_left))
        )


def _user_info(services: Any, token: str) -> dict[str, Any]:
    return services.new_client().request("GET", "/open_api/2/user/info/", access_token=token)


def test_authorize_stores_the_chain_and_the_grant(authorized: Any, sandbox: Sandbox) -> None:
    status = authorized.tokens.status()
    grant = sandbox.get("/_sandbox/oceanengine/grant")
    assert status.authorized and status.health == "ok"
    assert list(status.account_ids) == [str(i) for i in grant["account_ids"]]
    assert status.access_left_s > 86000 and status.refresh_left_s > 29 * 86400
    history = authorized.tokens.history()
    assert [h["event"] for h in history] == ["authorized"]
    row = _row(authorized)
    assert row.access_token not in str(history) and row.refresh_token not in str(history)


def test_fresh_token_is_returned_without_a_refresh(authorized: Any, sandbox: Sandbox) -> None:
    before = sandbox.stats()
    token = authorized.tokens.get_valid_token()
    assert token == _row(authorized).access_token
    assert sandbox.stats().get("refresh_ok", 0) == before.get("refresh_ok", 0)
    assert _user_info(authorized, token) is not None


def test_inside_margin_refreshes_once_and_rotation_kills_the_old_pair(
    authorized: Any, sandbox: Sandbox
) -> None:
    old = _row(authorized)
    _push_inside_margin(authorized)
    token = authorized.tokens.get_valid_token()
    new = _row(authorized)
    assert token == new.access_token != old.access_token
    assert new.refresh_token != old.refresh_token
    assert new.generation == old.generation + 1
    assert sandbox.stats()["refresh_ok"] == 1
    # Strict rotation: the old refresh token is dead, and so is the old access token.
    with pytest.raises(AuthorizationDead) as dead:
        authorized.new_client().refresh_token(OE_APP_ID, OE_SECRET, old.refresh_token)
    assert dead.value.code == 40107
    from adsync.sync.oceanengine import AccessTokenRejected

    with pytest.raises(AccessTokenRejected) as rejected:
        _user_info(authorized, old.access_token)
    assert rejected.value.code == 40105
    assert _user_info(authorized, token) is not None
    # The next call finds the fresh token: no second refresh.
    assert authorized.tokens.get_valid_token() == token
    assert sandbox.stats()["refresh_ok"] == 1
    events = [h["event"] for h in authorized.tokens.history()]
    assert events == ["refreshed", "authorized"]


def test_thirty_percent_transient_failures_are_absorbed_by_retries(
    authorized: Any, sandbox: Sandbox
) -> None:
    sandbox.faults(
        oceanengine={
            "error_rate": 0.3,
            "error_codes": [50000, 40100],
            "http_error_codes": [503],
            "paths": ["refresh_token"],
            "seed": 11,
        }
    )
    for _ in range(20):
        token = authorized.tokens.refresh(reason="test")
        assert _user_info(authorized, token) is not None
    injected = sandbox.get("/_sandbox/stats")["oceanengine"]
    faults = sandbox.faults()["oceanengine"]
    assert faults["injected"] >= 4, "the faults must really have happened"
    assert injected["refresh_ok"] == 20
    assert _row(authorized).generation == 21


def test_transient_failures_beyond_the_retries_raise_and_are_recorded(
    authorized: Any, sandbox: Sandbox
) -> None:
    sandbox.faults(
        oceanengine={"error_rate": 1.0, "error_codes": [50000], "paths": ["refresh_token"]}
    )
    old = _row(authorized)
    with pytest.raises(TransientError):
        authorized.tokens.refresh(reason="test")
    assert sandbox.faults()["oceanengine"]["injected"] == 4  # one try and three retries
    assert _row(authorized).access_token == old.access_token  # the chain is untouched
    status = authorized.tokens.status()
    assert status.health == "expiring" and "50000" in (status.last_failure_reason or "")


def test_refused_refresh_token_raises_authorization_needed_at_once(
    authorized: Any, sandbox: Sandbox
) -> None:
    sandbox.faults(oceanengine={"scripted": [{"path": "refresh_token", "code": 40107, "times": 5}]})
    _push_inside_margin(authorized)
    with pytest.raises(AuthorizationNeeded) as needed:
        authorized.tokens.get_valid_token()
    assert needed.value.exit_code == 3
    # No link rides on the error (it reaches group cards): links are minted where they are
    # shown, bound to who asked — so no authorization state was issued either.
    assert needed.value.auth_url == "" and "oauth.html" not in str(needed.value)
    with authorized.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(oauth_states)).scalar() == 0
    assert sandbox.faults()["oceanengine"]["injected"] == 1  # no retry storm
    # Later callers are told at once, without asking the platform again.
    calls = sum(sandbox.stats()["calls"].values())
    with pytest.raises(AuthorizationNeeded):
        authorized.tokens.get_valid_token()
    assert sum(sandbox.stats()["calls"].values()) == calls
    assert authorized.tokens.status().health == "reauthorize"
    # A new authorization revives the chain.
    authorized.tokens.authorize(sandbox.auth_code())
    assert authorized.tokens.status().health == "ok"


def test_a_refused_access_token_is_refreshed_once_and_the_call_retried(
    authorized: Any, sandbox: Sandbox
) -> None:
    sandbox.post("/_sandbox/oceanengine/expire", {"access": True})
    api = authorized.api()
    data = api.get("/open_api/2/user/info/", {})
    assert data
    assert sandbox.stats()["refresh_ok"] == 1
    assert api.client.stats.by_path["/open_api/2/user/info/"] == 2


def test_revoked_grant_ends_in_authorization_needed(authorized: Any, sandbox: Sandbox) -> None:
    sandbox.post("/_sandbox/oceanengine/revoke")
    with pytest.raises(AuthorizationNeeded) as needed:
        authorized.api().get("/open_api/2/user/info/", {})
    assert "authorization" in needed.value.message
    assert authorized.tokens.status().health == "reauthorize"


def test_expired_refresh_token_needs_a_person_without_calling(
    authorized: Any, sandbox: Sandbox
) -> None:
    with authorized.store.begin() as conn:
        conn.execute(update(tokens).values(refresh_expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(AuthorizationNeeded) as needed:
        authorized.tokens.get_valid_token()
    assert "expired" in needed.value.message
    assert sandbox.stats().get("refresh_ok", 0) == 0


def test_refresh_token_close_to_expiry_is_expiring(authorized: Any) -> None:
    with authorized.store.begin() as conn:
        conn.execute(update(tokens).values(refresh_expires_at=utcnow() + timedelta(days=2)))
    assert authorized.tokens.status().health == "expiring"


def test_not_authorized_yet(services: Any) -> None:
    status = services.tokens.status()
    assert not status.authorized and status.health == "reauthorize"
    with pytest.raises(AuthorizationNeeded) as needed:
        services.tokens.get_valid_token()
    assert "not authorized" in needed.value.message


def test_reused_auth_code_is_refused(services: Any, sandbox: Sandbox) -> None:
    code = sandbox.auth_code()
    services.tokens.authorize(code)
    with pytest.raises(AuthorizationNeeded) as needed:
        services.tokens.authorize(code)
    assert "already used or has expired" in needed.value.message
    # The chain from the first exchange is intact.
    assert services.tokens.status().health == "ok"


def test_history_is_atomic_with_the_pair(authorized: Any) -> None:
    for _ in range(3):
        authorized.tokens.refresh(reason="test")
    row = _row(authorized)
    with authorized.store.engine.connect() as conn:
        refreshed = conn.execute(
            select(func.count())
            .select_from(token_history)
            .where(token_history.c.event == "refreshed")
        ).scalar()
    assert row.generation == 1 + refreshed == 4
