"""Only admins (re)authorize (issue 8 item 2; issue 10 items 9 and 11), over real HTTP against a
running app: who gets a link, which states the callback takes, which grants are taken.

Re-authorizing replaces the previous grant at Ocean Engine ("重新授权会覆盖前一次授权"): the
sandbox kills the old tokens at the consent, so every test here also checks what the old chain
is worth afterwards, not only what adsync stored.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from sqlalchemy import select

from adsync.sync.store import oauth_states, tokens, utcnow

from .conftest import Sandbox
from .leakscan import leaks
from .test_bot import CHAT, ENCRYPT_KEY, VERIFY_TOKEN, BotServer, card_text, messages, say

ADMIN = "ou_admin_alice"
OTHER = "ou_member_bob"
DIRECT = "oc_p2p_alice"
LINK = re.compile(r"https?://[^\s\"'\\]*oauth\.html\?[^\s\"'\\]*")


def _server(bot_env: dict[str, str], tmp_path: Any, admins: str) -> BotServer:
    from adsync.bot.app import create_app
    from adsync.sync.config import load_settings

    return BotServer(create_app(load_settings({**bot_env, "ADSYNC_ADMINS": admins}, cwd=tmp_path)))


@pytest.fixture
def bot_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY, "FEISHU_VERIFICATION_TOKEN": VERIFY_TOKEN}


@pytest.fixture
def server(bot_env: dict[str, str], authorized: Any, tmp_path: Any) -> Iterator[BotServer]:
    srv = _server(bot_env, tmp_path, ADMIN)
    yield srv
    srv.stop()
    srv.bot.actions.services.close()


def ask(srv: BotServer, sandbox: Sandbox, text: str, user: str, chat: str = CHAT) -> str:
    """``user`` says ``text`` in ``chat`` (a group, or the direct chat): the bot's answer."""
    p2p = chat != CHAT
    before = len(messages(sandbox, chat))
    event = say(sandbox, text, chat_id=chat, user_id=user, chat_type="p2p" if p2p else "group")
    assert srv.post_event(event).status_code == 200
    srv.idle()
    answers = messages(sandbox, chat)[before:]
    assert len(answers) == 1, answers
    return html.unescape(card_text(answers[0]))


def links(text: str) -> list[str]:
    """The distinct authorization links in a message (its versions repeat the card)."""
    return sorted(set(LINK.findall(text)))


def states(services: Any) -> list[Any]:
    with services.store.engine.connect() as conn:
        return conn.execute(select(oauth_states)).all()


def stored(services: Any) -> Any:
    with services.store.engine.connect() as conn:
        return conn.execute(select(tokens)).one()


def callback(srv: BotServer, **params: str) -> requests.Response:
    return requests.get(f"{srv.url}/oauth/oceanengine/callback", params=params, timeout=30)


def consent(sandbox: Sandbox, link: str, account_ids: list[int] | None = None) -> dict[str, str]:
    """The admin opens ``link`` and consents: the redirect's query (auth_code and state). With
    ``account_ids``, they ticked only those (the sandbox's page ticks every account)."""
    redirect = requests.get(link, allow_redirects=False, timeout=10).headers["Location"]
    query = {k: v[0] for k, v in parse_qs(urlparse(redirect).query).items()}
    if account_ids is not None:
        query["auth_code"] = sandbox.auth_code(account_ids=account_ids)
    return query


def works(services: Any, token: str) -> bool:
    from adsync.sync.oceanengine import AccessTokenRejected

    try:
        services.new_client().request("GET", "/open_api/2/user/info/", access_token=token)
    except AccessTokenRejected:
        return False
    return True


def told(sandbox: Sandbox) -> list[str]:
    """What the report chat was told about authorizations."""
    return [html.unescape(t) for t in map(card_text, messages(sandbox)) if "授权" in t]


# -- who gets a link ------------------------------------------------------------------------------


def test_only_an_admin_in_a_direct_chat_gets_an_authorization_link(
    server: BotServer, sandbox: Sandbox, authorized: Any
) -> None:
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": DIRECT, "bot_member": True})
    # A member asks: no link, told whom to ask, by name (Feishu renders <at id=…> as the name).
    member = ask(server, sandbox, "auth", OTHER)
    assert not links(member) and "oauth" not in member
    assert f"<at id={ADMIN}></at>" in member
    # The chain dies; a member's `token status` names the admins instead of a button.
    sandbox.post("/_sandbox/oceanengine/revoke")
    with pytest.raises(Exception, match="authorization"):
        authorized.api().get("/open_api/2/user/info/", {})
    status = ask(server, sandbox, "token status", OTHER)
    assert "需要重新授权" in status or "Authorize again" in status
    assert not links(status) and f"<at id={ADMIN}></at>" in status
    # The admin, in the group everyone reads: sent to the direct chat, still no link.
    in_group = ask(server, sandbox, "auth", ADMIN)
    assert not links(in_group) and "direct chat" in in_group
    assert "applink.feishu.cn/client/bot/open?appId=cli_sandbox_app" in in_group
    group_status = ask(server, sandbox, "token status", ADMIN)
    assert not links(group_status)
    assert states(authorized) == []  # nothing handed out so far: not even an unused state
    # The admin in the direct chat: the link, its state bound to them, for 15 minutes.
    direct = ask(server, sandbox, "token status", ADMIN, chat=DIRECT)
    [link] = links(direct)
    [state] = states(authorized)
    assert state.requested_by == ADMIN
    assert parse_qs(urlparse(link).query)["state"] == [state.state]
    assert timedelta(minutes=14) < state.expires_at - state.created_at <= timedelta(minutes=15)
    assert len(links(ask(server, sandbox, "授权", ADMIN, chat=DIRECT))) == 1


def test_with_no_admins_configured_chat_hands_out_no_link_and_doctor_says_so(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Any, cli: Any
) -> None:
    srv = _server(bot_env, tmp_path, "")
    try:
        sandbox.post("/_sandbox/feishu/chats", {"chat_id": DIRECT, "bot_member": True})
        for chat in (CHAT, DIRECT):
            answer = ask(srv, sandbox, "auth", OTHER, chat=chat)
            assert not links(answer) and "ADSYNC_ADMINS" in answer
    finally:
        srv.stop()
        srv.bot.actions.services.close()
    assert states(authorized) == []
    doctor = cli(["doctor"], bot_env)
    assert "ADSYNC_ADMINS" in doctor.stdout


# -- what the callback takes ----------------------------------------------------------------------


def test_the_callback_refuses_unknown_reused_expired_and_non_admin_states(
    server: BotServer, sandbox: Sandbox, bot_env: dict[str, str], tmp_path: Any
) -> None:
    from adsync.sync.config import load_settings
    from adsync.sync.services import open_services

    services = server.bot.actions.services
    before = stored(services)
    forged = callback(server, auth_code=sandbox.auth_code(), state="made-up-state")
    assert forged.status_code == 400 and "unknown" in forged.text
    # Expired: 15 minutes and a second later, on the token manager's clock.
    link = services.tokens.authorization_url(requested_by=ADMIN)
    query = consent(sandbox, link)
    services.tokens.now = lambda: utcnow() + timedelta(minutes=15, seconds=1)
    try:
        late = callback(server, **query)
    finally:
        services.tokens.now = utcnow
    assert late.status_code == 400 and "expired" in late.text
    # Asked for by someone who was an admin then and is not now.
    then = open_services(
        load_settings({**bot_env, "ADSYNC_ADMINS": f"{ADMIN},{OTHER}"}, cwd=tmp_path)
    )
    try:
        theirs = then.tokens.authorization_url(requested_by=OTHER)
    finally:
        then.close()
    refused = callback(server, **consent(sandbox, theirs))
    assert refused.status_code == 403 and "not an admin" in refused.text
    # None of these replaced the stored chain.
    assert stored(services).access_token == before.access_token
    # A good one works once; the same redirect again is refused.
    good = consent(sandbox, services.tokens.authorization_url(requested_by=ADMIN))
    assert callback(server, **good).status_code == 200
    again = callback(server, **good)
    assert again.status_code == 400 and "already used" in again.text
    [announced] = [t for t in told(sandbox) if "authorized" in t]
    assert f"<at id={ADMIN}></at>" in announced
    for page in (forged, late, refused, again):
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["X-Frame-Options"] == "DENY"


def test_a_grant_of_no_accounts_is_refused_and_the_group_is_told(
    server: BotServer, sandbox: Sandbox
) -> None:
    services = server.bot.actions.services
    before = stored(services)
    query = consent(sandbox, services.tokens.authorization_url(requested_by=ADMIN), [])
    page = callback(server, **query)
    assert page.status_code == 400 and "grants no accounts" in page.text
    after = stored(services)
    assert after.generation == before.generation and after.advertiser_ids == before.advertiser_ids
    # Ocean Engine replaced the old grant at the consent: the stored chain no longer works,
    # and adsync says so instead of "ok".
    assert not works(services, before.access_token)
    status = services.tokens.status()
    assert status.health == "reauthorize" and "0 accounts" in status.message
    [refusal] = told(sandbox)
    assert "未采用" in refusal and f"<at id={ADMIN}></at>" in refusal


def _narrowing(server: BotServer, sandbox: Sandbox) -> tuple[requests.Response, list[str]]:
    services = server.bot.actions.services
    granted = json.loads(stored(services).advertiser_ids)
    keep = [int(i) for i in granted[:2]]
    link = services.tokens.authorization_url(requested_by=ADMIN)
    page = callback(server, **consent(sandbox, link, keep))
    return page, granted


def test_a_grant_that_drops_accounts_waits_for_the_admin_to_confirm_it_on_the_page(
    server: BotServer, sandbox: Sandbox
) -> None:
    services = server.bot.actions.services
    before = stored(services)
    page, granted = _narrowing(server, sandbox)
    assert page.status_code == 200 and "drops accounts" in page.text
    for dropped in granted[2:]:
        assert dropped in page.text  # what would change, account by account
    assert page.headers["X-Frame-Options"] == "DENY"
    assert stored(services).generation == before.generation  # nothing taken yet
    assert not told(sandbox)
    pending = re.search(r'name=pending value="([^"]+)"', page.text)
    assert pending is not None
    confirm = f"{server.url}/oauth/oceanengine/confirm"
    taken = requests.post(confirm, data={"pending": pending[1], "decision": "take"}, timeout=30)
    assert taken.status_code == 200 and "authorized" in taken.text
    after = stored(services)
    assert json.loads(after.advertiser_ids) == granted[:2]
    assert works(services, after.access_token)
    again = requests.post(confirm, data={"pending": pending[1], "decision": "take"}, timeout=30)
    assert again.status_code == 400  # the form works once
    [confirmed] = told(sandbox)
    assert (
        f"<at id={ADMIN}></at>" in confirmed
        and f"confirmed dropping {len(granted) - 2}" in confirmed
    )
    assert (
        leaks(sandbox, page.text, taken.text, again.text, *map(card_text, messages(sandbox))) == []
    )


def test_cancelling_a_narrower_grant_keeps_the_stored_chain_and_says_it_no_longer_works(
    server: BotServer, sandbox: Sandbox
) -> None:
    services = server.bot.actions.services
    before = stored(services)
    page, _granted = _narrowing(server, sandbox)
    pending = re.search(r'name=pending value="([^"]+)"', page.text)
    assert pending is not None
    confirm = f"{server.url}/oauth/oceanengine/confirm"
    cancelled = requests.post(
        confirm, data={"pending": pending[1], "decision": "cancel"}, timeout=30
    )
    assert cancelled.status_code == 200 and "Cancelled" in cancelled.text
    after = stored(services)
    assert (after.generation, after.access_token, after.advertiser_ids) == (
        before.generation,
        before.access_token,
        before.advertiser_ids,
    )
    # The stored pair is untouched — and, as the platform replaced the grant, dead: said so.
    assert not works(services, before.access_token)
    assert services.tokens.status().health == "reauthorize"
    assert "cancelled" in (services.tokens.status().message or "")
    [said] = told(sandbox)
    assert "取消" in said and f"<at id={ADMIN}></at>" in said


# -- the CLI --------------------------------------------------------------------------------------


def test_auth_code_takes_the_pasted_redirect_url_and_checks_its_state(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    def redirect(link: str) -> str:
        return requests.get(link, allow_redirects=False, timeout=10).headers["Location"]

    pasted = redirect(authorized.tokens.authorization_url(requested_by="cli"))
    first = cli(["auth", "code", pasted], env)
    assert first.returncode == 0, first.stderr
    assert "accounts granted" in first.stdout
    again = cli(["auth", "code", pasted], env)
    assert again.returncode == 3 and "already used" in again.stderr
    foreign = redirect(authorized.tokens.authorization_url(requested_by="cli")).replace(
        "state=", "state=x"
    )
    assert "unknown" in cli(["auth", "code", foreign], env).stderr
    assert cli(["auth", "code", sandbox.auth_code()], env).returncode == 0  # a bare code
    nothing = cli(["auth", "code", "https://example.com/cb?state=abc"], env)
    assert nothing.returncode == 2 and "no auth_code" in nothing.stderr


def test_auth_code_with_a_grant_that_drops_accounts_shows_the_diff_and_needs_confirm(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    granted = json.loads(stored(authorized).advertiser_ids)
    code = sandbox.auth_code(account_ids=[int(granted[0])])
    shown = cli(["auth", "code", code], env)
    assert shown.returncode == 3 and "NOT TAKEN" in shown.stdout and "--confirm" in shown.stdout
    for dropped in granted[1:]:
        assert f"- {dropped}" in shown.stdout
    assert json.loads(stored(authorized).advertiser_ids) == granted
    assert not told(sandbox)
    taken = cli(["auth", "code", code, "--confirm"], env)
    assert taken.returncode == 0 and "(6, confirmed)" in taken.stdout, taken.stdout + taken.stderr
    assert json.loads(stored(authorized).advertiser_ids) == granted[:1]
    [said] = told(sandbox)  # the group hears it from the CLI too
    assert "the operator (cli)" in said and "confirmed dropping 6" in said


def test_token_status_check_asks_the_platform_and_says_when_the_chain_was_last_confirmed(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    from adsync.bot import cards

    checked = cli(["token", "status", "--check"], env)
    assert checked.returncode == 0 and "confirmed live" in checked.stdout
    assert "just now" in checked.stdout
    calls = sandbox.stats()["calls"].get("/open_api/2/user/info/", 0)
    assert calls == 1  # one cheap authenticated call
    # A failure is shown, then cleared by the next success (here a refresh).
    sandbox.faults(oceanengine={"error_rate": 1.0, "error_codes": [50000], "paths": ["refresh"]})
    assert cli(["token", "refresh"], env).returncode != 0
    assert "last failure" in cli(["token", "status"], env).stdout
    sandbox.faults(oceanengine={})
    assert cli(["token", "refresh"], env).returncode == 0
    healthy = cli(["token", "status"], env).stdout
    assert "last failure" not in healthy and ": OK" in healthy
    # The platform revoked the chain: plain status still trusts the local state, --check knows.
    sandbox.post("/_sandbox/oceanengine/revoke")
    assert cli(["token", "status"], env).returncode == 0
    dead = cli(["token", "status", "--check", "--json"], env)
    assert dead.returncode == 3
    assert json.loads(cli(["token", "status", "--json"], env).stdout)["health"] == "reauthorize"
    status = authorized.tokens.status()
    card = json.dumps(cards.token_card(status, "en"), ensure_ascii=False)
    assert "Confirmed live" in card
    assert status.last_confirmed_at is not None


def test_the_terminal_shows_a_mention_as_the_person_it_names() -> None:
    """Feishu renders ``<at id=ou_…></at>`` as the person's name; `adsync chat` and the demo
    have no directory, so they show the id it stands for — never a bare "@"."""
    from adsync.bot import cards

    card = cards.message_card("Not allowed", "Only admins can run this. Ask:", "en", people=[ADMIN])
    text = cards.to_text(card)
    assert f"@{ADMIN}" in text and "<at" not in text
    assert cards.mentions(["ou_ok_1", "ou_x></at><at id=all", "all"]) == "<at id=ou_ok_1></at>"
