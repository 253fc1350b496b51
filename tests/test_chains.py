"""Several authorizations (issue 11 item 4): one token chain per Ocean Engine login, over real
HTTP against the sandbox (whose users each hold their own grant), on both storage backends.

The incidents these prevent: an agency whose accounts sit under two logins could sync only
one of them; a second authorization replaced the first; one login revoking its grant stopped
every account's sync (and the alert did not say whose authorization to renew); an account
both logins grant was fetched twice; a database from before chains had to be re-authorized.
"""

from __future__ import annotations

import json
import os
import pty
import select as select_
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)

from adsync.sync import discovery
from adsync.sync.runner import Runner
from adsync.sync.store import (
    LEGACY_CHAIN,
    Store,
    UTCDateTime,
    accounts,
    alerts,
    report_rows,
    schema_version,
    token_history,
    tokens,
    utcnow,
)

from .conftest import OE_APP_ID, OE_SECRET, Sandbox
from .test_bot import BotServer, card_text, messages
from .test_clock import SH, Now, alerts_posted, at, make_clock, posted
from .test_sync import APP, TABLE, table_records

ALICE_NAME = "本地推运营（沙盒）"  # the sandbox's default user
BOB = "bob"
BOB_NAME = "bob（沙盒）"
PROMOTIONS = "/open_api/v3.0/local/report/promotion/get/"
REAUTHORIZE = "需要重新授权 · re-authorization needed"


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def day(sandbox: Sandbox) -> date:
    """Today in Shanghai, pinned in the Ocean Engine sandbox (as test_clock's ``day``)."""
    from datetime import datetime

    today = datetime.now(SH).date()
    sandbox.post("/_sandbox/oceanengine/reset", {"today": today.isoformat()})
    return today


def everyone(sandbox: Sandbox) -> list[str]:
    return [str(i) for i in sandbox.get("/_sandbox/oceanengine/grant")["all_account_ids"]]


def authorize(services: Any, sandbox: Sandbox, ids: list[str], user: str | None = None) -> Any:
    """``user`` (the default one if None) ticks ``ids`` and consents; adsync takes the code."""
    body: dict[str, Any] = {"account_ids": [int(i) for i in ids]}
    if user is not None:
        body["user"] = user
    code = sandbox.post("/_sandbox/oceanengine/auth_code", body)["auth_code"]
    return services.tokens.authorize(code)


def rows(services: Any) -> dict[str, Any]:
    with services.store.engine.connect() as conn:
        return {r.chain_id: r for r in conn.execute(select(tokens))}


def works(services: Any, token: str) -> bool:
    from adsync.sync.oceanengine import AccessTokenRejected

    try:
        services.new_client().request("GET", "/open_api/2/user/info/", access_token=token)
    except AccessTokenRejected:
        return False
    return True


def keys_of(sandbox: Sandbox, day: date, ids: set[str]) -> set[str]:
    """The platform's sync keys of ``ids`` on ``day`` (every account, whoever granted it)."""
    doc = sandbox.get(
        "/_sandbox/oceanengine/truth", start_date=day.isoformat(), end_date=day.isoformat()
    )
    return {
        f"{row['stat_time_day']}|{a['local_account_id']}|{row['promotion_id']}"
        for a in doc["accounts"]
        if str(a["local_account_id"]) in ids
        for row in a["rows"]
    }


def report_calls(sandbox: Sandbox) -> tuple[int, int]:
    """(calls to the promotion report, of them refused as a dead access token)."""
    stats = sandbox.stats()
    return stats["calls"].get(PROMOTIONS, 0), stats["errors"].get("40105", 0)


# -- two logins, one revoked ----------------------------------------------------------------------


def test_two_logins_one_revoked_the_others_accounts_still_sync_and_the_alert_names_the_dead_one(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    ids = everyone(sandbox)
    alice_ids, bob_ids = ids[:4], ids[3:]  # ids[3] is granted by both logins
    alice = authorize(services, sandbox, alice_ids)
    bob = authorize(services, sandbox, bob_ids, user=BOB)
    assert not bob.replaced and bob.others == 1 and bob.user.name == BOB_NAME
    assert len(services.tokens.chains()) == 2 and alice.chain_id != bob.chain_id
    # Bob removes the app's authorization at Ocean Engine; Alice's grant is untouched.
    sandbox.post("/_sandbox/oceanengine/revoke", {"user": BOB})
    now = Now(at(day, 7, 0))
    clock = make_clock(services, now)
    result = clock.daily()
    assert result is not None
    assert result.status == "partial" and result.needs_authorization and result.exit_code == 3
    synced = {a.account_id for a in result.accounts if a.status != "failed"}
    failed = {a.account_id for a in result.accounts if a.status == "failed"}
    assert synced == set(alice_ids)  # the shared account too, through Alice's chain
    assert failed == set(bob_ids) - set(alice_ids)
    [dead] = result.dead_chains
    assert dead.chain_id == bob.chain_id and BOB_NAME in dead.who
    assert sorted(dead.accounts) == sorted(a.label for a in result.accounts if a.status == "failed")
    start, end = result.start, result.end
    expected = set().union(*(keys_of(sandbox, start + timedelta(days=n), synced) for n in range(3)))
    assert end == start + timedelta(days=2)
    assert {r["同步键"] for r in table_records(sandbox, APP, TABLE)} == expected
    # One alert, for Bob's authorization: his name, the accounts that stopped, what to do.
    [alert] = [p for p in alerts_posted(sandbox) if p.title == REAUTHORIZE]
    assert BOB_NAME in alert.text and bob.chain_id in alert.text
    assert all(account_id in alert.text for account_id in failed)
    assert ALICE_NAME not in alert.text and "oauth.html" not in alert.text
    # The watchdog half an hour later: Alice's chain is fine, Bob's problem is not said again.
    before = len(posted(sandbox))
    now.advance(minutes=30)
    clock.token_watchdog()
    assert len(posted(sandbox)) == before
    # Bob authorizes again: his chain comes back, with one all clear that names him.
    again = authorize(services, sandbox, bob_ids, user=BOB)
    assert again.replaced and again.chain_id == bob.chain_id
    now.advance(minutes=30)
    clock.token_watchdog()
    [clear] = posted(sandbox)[before:]
    assert clear.title == "授权已恢复 · authorization restored" and BOB_NAME in clear.text
    rerun = Runner(services).run(start, end)
    assert rerun.status == "ok" and not rerun.dead_chains


def test_each_dead_login_gets_its_own_alert_and_its_own_all_clear(
    services: Any, sandbox: Sandbox, day: date, env: dict[str, str], cli: Any
) -> None:
    ids = everyone(sandbox)
    alice = authorize(services, sandbox, ids[:4])
    bob = authorize(services, sandbox, ids[4:], user=BOB)
    now = Now(at(day, 9))
    clock = make_clock(services, now)
    clock.token_watchdog()
    assert posted(sandbox) == []  # both live: nothing to say
    sandbox.post("/_sandbox/oceanengine/revoke")  # both logins removed the app
    now.advance(minutes=30)
    clock.token_watchdog()
    refused = [p for p in posted(sandbox) if p.title == "Token 被拒绝 · the token was refused"]
    assert len(refused) == 2
    assert {ALICE_NAME in p.text for p in refused} == {True, False}
    assert {BOB_NAME in p.text for p in refused} == {True, False}
    # Alice authorizes again: her all clear, and only hers; Bob's problem stays open.
    authorize(services, sandbox, ids[:4])
    now.advance(minutes=30)
    before = len(posted(sandbox))
    clock.token_watchdog()
    [clear] = posted(sandbox)[before:]
    assert clear.title == "Token 已恢复 · the token works again"
    assert ALICE_NAME in clear.text and BOB_NAME not in clear.text
    # Bob's authorization is removed instead of renewed: its alert is closed too.
    assert cli(["auth", "remove", bob.chain_id, "--yes"], env).returncode == 0
    now.advance(minutes=30)
    before = len(posted(sandbox))
    clock.token_watchdog()
    closed = [p for p in posted(sandbox)[before:] if p.title.startswith("授权已移除")]
    assert len(closed) == 1 and bob.chain_id in closed[0].text
    assert [c.chain_id for c in services.tokens.chains()] == [alice.chain_id]


# -- one fetch per account ------------------------------------------------------------------------


def test_an_account_granted_by_both_logins_is_fetched_once_and_by_the_other_if_its_chain_dies(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    from adsync.sync.runner import Progress

    ids = everyone(sandbox)
    authorize(services, sandbox, ids)
    authorize(services, sandbox, ids, user=BOB)
    chains = services.tokens.chains()
    routes = discovery.routes(chains, services.store, OE_APP_ID, ids)
    assert {r.chains for r in routes.values()} == {tuple(c.chain_id for c in chains)}
    yesterday = day - timedelta(days=1)
    calls, _ = report_calls(sandbox)
    result = Runner(services).run(yesterday, yesterday)
    assert result.status == "ok" and len(result.accounts) == len(ids)
    # One day fits one page: one report call per account, not one per login.
    assert report_calls(sandbox)[0] - calls == len(ids)
    assert {r["同步键"] for r in table_records(sandbox)} == keys_of(sandbox, yesterday, set(ids))
    # The chain every account is fetched with dies in the middle of a run (its user removes
    # the app): the accounts not fetched yet are fetched with the other chain — each still
    # answered once — and the run says whose authorization is gone.
    first = chains[0]
    user = "default" if first.user is not None and first.user.name == ALICE_NAME else BOB
    sandbox.faults(oceanengine={"latency_ms": 100, "paths": ["report"]})
    revoked: list[bool] = []

    def revoke_after_the_first_account(p: Progress) -> None:
        if p.last is not None and not revoked:
            revoked.append(True)
            sandbox.post("/_sandbox/oceanengine/revoke", {"user": user})

    calls, refused = report_calls(sandbox)
    result = Runner(services, progress=revoke_after_the_first_account).run(yesterday, yesterday)
    assert result.status == "ok" and all(a.status != "failed" for a in result.accounts)
    now_calls, now_refused = report_calls(sandbox)
    assert now_refused > refused  # some fetches met the dead chain
    assert (now_calls - calls) - (now_refused - refused) == len(ids)  # answered: once each
    [dead] = result.dead_chains
    assert dead.chain_id == first.chain_id and dead.accounts == []
    assert any("should authorize again" in w for w in result.warnings)
    assert {r["同步键"] for r in table_records(sandbox)} == keys_of(sandbox, yesterday, set(ids))


def test_configured_accounts_under_two_agents_are_each_fetched_with_the_login_that_may_read_them(
    env: dict[str, str], sandbox: Sandbox, day: date, tmp_path: Path
) -> None:
    """Each login granted an agent (代理: adsync cannot list the 本地推 accounts behind one), so
    ADSYNC_ACCOUNTS names them and nothing says which login reaches which: each account is
    asked with the logins in order until one may read it (40002 from the other)."""
    from adsync.sync.config import load_settings
    from adsync.sync.services import open_services

    ids = everyone(sandbox)
    configured = {**env, "ADSYNC_ACCOUNTS": ",".join(ids)}
    services = open_services(load_settings(configured, cwd=tmp_path))
    try:
        for user, theirs in ((None, ids[:4]), (BOB, ids[4:])):
            body: dict[str, Any] = {"grants": [{"type": "AGENT", "account_ids": theirs}]}
            if user:
                body["user"] = user
            code = sandbox.post("/_sandbox/oceanengine/auth_code", body)["auth_code"]
            services.tokens.authorize(code)
        chains = services.tokens.chains()
        routes = discovery.routes(chains, services.store, OE_APP_ID, ids)
        assert all(r.guessed and len(r.chains) == 2 for r in routes.values())
        yesterday = day - timedelta(days=1)
        denied = sandbox.stats()["errors"].get("40002", 0)
        result = Runner(services).run(yesterday, yesterday)
        assert result.status == "ok", [a.reason for a in result.failed]
        assert {a.account_id for a in result.accounts} == set(ids)
        assert sandbox.stats()["errors"].get("40002", 0) > denied  # the other login said no
        assert {r["同步键"] for r in table_records(sandbox)} == keys_of(
            sandbox, yesterday, set(ids)
        )
    finally:
        services.close()


def test_accounts_check_with_one_login_dead_names_its_accounts_and_exits_3(
    services: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    ids = everyone(sandbox)
    authorize(services, sandbox, ids[:4])
    authorize(services, sandbox, ids[4:], user=BOB)
    sandbox.post("/_sandbox/oceanengine/revoke", {"user": BOB})
    checked = cli(["accounts", "--check", "--json"], env)
    assert checked.returncode == 3, checked.stdout + checked.stderr
    results = {r["id"]: r for r in json.loads(checked.stdout)["check"]["results"]}
    assert {i for i, r in results.items() if r["ok"]} == set(ids[:4])
    for account_id in ids[4:]:
        assert BOB_NAME in results[account_id]["error"]
        assert "authorizes again" in results[account_id]["fix"]


# -- who replaces what ----------------------------------------------------------------------------


def test_a_login_authorizing_again_replaces_only_its_own_chain_and_a_narrower_grant_waits(
    services: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    ids = everyone(sandbox)
    alice = authorize(services, sandbox, ids[:4])
    bob = authorize(services, sandbox, ids[4:], user=BOB)
    alice_token = rows(services)[alice.chain_id].access_token
    again = authorize(services, sandbox, ids[4:], user=BOB)
    assert again.replaced and again.chain_id == bob.chain_id
    assert sorted(rows(services)) == sorted([alice.chain_id, bob.chain_id])
    assert rows(services)[alice.chain_id].access_token == alice_token
    assert works(services, alice_token)
    # Bob again, dropping one of his accounts: shown, not taken; Alice's chain is not involved.
    code = sandbox.post(
        "/_sandbox/oceanengine/auth_code",
        {"account_ids": [int(i) for i in ids[4:-1]], "user": BOB},
    )["auth_code"]
    shown = cli(["auth", "code", code], env)
    assert shown.returncode == 3 and "NOT TAKEN" in shown.stdout and BOB_NAME in shown.stdout
    assert f"- {ids[-1]}" in shown.stdout and f"- {ids[0]}" not in shown.stdout
    statuses = {s.chain_id: s.health for s in services.tokens.statuses()}
    assert statuses == {alice.chain_id: "ok", bob.chain_id: "reauthorize"}
    taken = cli(["auth", "code", code, "--confirm"], env)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert json.loads(rows(services)[bob.chain_id].advertiser_ids) == ids[4:-1]
    assert rows(services)[alice.chain_id].access_token == alice_token
    assert {s.health for s in services.tokens.statuses()} == {"ok"}


def test_the_callback_adds_a_second_logins_authorization_beside_the_first(
    env: dict[str, str], services: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    from adsync.bot.app import create_app
    from adsync.sync.config import load_settings

    from .test_bot import ENCRYPT_KEY, VERIFY_TOKEN

    admin = "ou_admin_alice"
    authorize(services, sandbox, everyone(sandbox))
    settings = load_settings(
        {
            **env,
            "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY,
            "FEISHU_VERIFICATION_TOKEN": VERIFY_TOKEN,
            "ADSYNC_ADMINS": admin,
        },
        cwd=tmp_path,
    )
    server = BotServer(create_app(settings))
    try:
        link = server.bot.actions.services.tokens.authorization_url(requested_by=admin)
        # Bob is logged in at Ocean Engine in the browser that opens the admin's link.
        consent = requests.get(
            link, cookies={"oe_sandbox_user": BOB}, allow_redirects=False, timeout=10
        )
        query = dict(parse_qsl(urlsplit(consent.headers["Location"]).query))
        page = requests.get(f"{server.url}/oauth/oceanengine/callback", params=query, timeout=30)
        assert page.status_code == 200, page.text
        assert BOB_NAME in page.text and "Added beside the 1 other authorization" in page.text
        server.idle()
    finally:
        server.stop()
        server.bot.actions.services.close()
    names = {c.user.name for c in services.tokens.chains()}
    assert names == {ALICE_NAME, BOB_NAME}
    [told] = [card_text(m) for m in messages(sandbox) if "授权" in card_text(m)]
    assert BOB_NAME in told and "新增授权" in told


# -- auth list, auth remove, token status ---------------------------------------------------------


def test_auth_list_shows_each_login_and_auth_remove_forgets_one_keeping_its_synced_rows(
    services: Any, sandbox: Sandbox, env: dict[str, str], cli: Any, day: date
) -> None:
    ids = everyone(sandbox)
    alice = authorize(services, sandbox, ids[:4])
    bob = authorize(services, sandbox, ids[3:], user=BOB)
    day = day - timedelta(days=1)
    assert Runner(services).run(day, day).status == "ok"
    listed = cli(["auth", "list"], env)
    assert listed.returncode == 0, listed.stderr
    for chain in (alice, bob):
        assert chain.chain_id in listed.stdout
    assert ALICE_NAME in listed.stdout and BOB_NAME in listed.stdout
    assert listed.stdout.count("(also another authorization)") == 2  # ids[3], in each list
    doc = json.loads(cli(["auth", "list", "--json"], env).stdout)
    by_id = {c["id"]: c for c in doc["chains"]}
    assert by_id[bob.chain_id]["user_name"] == BOB_NAME and by_id[bob.chain_id]["health"] == "ok"
    assert [a["id"] for a in by_id[bob.chain_id]["accounts"]] == sorted(ids[3:])
    assert [a["id"] for a in by_id[alice.chain_id]["accounts"] if a["shared"]] == [ids[3]]
    # No terminal to ask in, no --yes: nothing is removed.
    refused = cli(["auth", "remove", bob.chain_id], env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(services.tokens.chains()) == 2
    unknown = cli(["auth", "remove", "nobody", "--yes"], env)
    assert unknown.returncode == 2 and bob.chain_id in unknown.stderr
    synced_before = _local_rows(services)
    removed = cli(["auth", "remove", BOB_NAME, "--yes"], env)  # by the user's name
    assert removed.returncode == 0, removed.stderr
    assert "3 no other authorization reaches left the scope" in removed.stdout
    assert [c.chain_id for c in services.tokens.chains()] == [alice.chain_id]
    # Its accounts leave the scope (the shared one stays, through Alice); rows stay.
    with services.store.engine.connect() as conn:
        scope = {r.account_id: r.scope for r in conn.execute(select(accounts))}
    assert {i for i, s in scope.items() if s == "in"} == set(ids[:4])
    assert {i for i, s in scope.items() if s == "vanished"} == set(ids[4:])
    assert _local_rows(services) == synced_before
    assert {r["同步键"] for r in table_records(sandbox)} == keys_of(sandbox, day, set(ids))
    after = Runner(services).run(day, day)
    assert after.status == "ok" and {a.account_id for a in after.accounts} == set(ids[:4])
    [told] = [card_text(m) for m in messages(sandbox) if "授权已移除" in card_text(m)]
    assert BOB_NAME in told and "the operator (cli)" in told


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_auth_remove_in_a_terminal_asks_first(
    services: Any, sandbox: Sandbox, env: dict[str, str]
) -> None:
    ids = everyone(sandbox)
    authorize(services, sandbox, ids[:4])
    bob = authorize(services, sandbox, ids[4:], user=BOB)

    def answer(reply: str) -> tuple[int, str]:
        """`adsync auth remove` in a real terminal, answered with ``reply``."""
        controller, terminal = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "adsync", "auth", "remove", bob.chain_id],
            env={"PATH": os.environ.get("PATH", ""), **env},
            cwd=Path(env["ADSYNC_DATA_DIR"]).parent,
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
        )
        os.close(terminal)
        seen, sent = b"", False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select_.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the process closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not sent and b"Type yes" in seen:
                os.write(controller, reply.encode() + b"\n")
                sent = True
            if proc.poll() is not None and not ready:
                break
        os.close(controller)
        return proc.wait(timeout=30), seen.decode(errors="replace")

    code, shown = answer("no")
    assert code == 1 and "Not removed." in shown and BOB_NAME in shown
    assert len(services.tokens.chains()) == 2
    code, shown = answer("yes")
    assert code == 0 and f"Removed the authorization of {BOB_NAME}" in shown
    assert len(services.tokens.chains()) == 1


def test_token_status_shows_every_login_in_the_terminal_json_and_chat_card(
    services: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    from adsync.bot import cards
    from adsync.bot.actions import Actions, Caller
    from adsync.bot.commands import TokenStatus

    ids = everyone(sandbox)
    alice = authorize(services, sandbox, ids[:4])
    bob = authorize(services, sandbox, ids[4:], user=BOB)
    plain = cli(["token", "status"], env)
    assert plain.returncode == 0 and plain.stdout.count(": OK") == 2
    assert ALICE_NAME in plain.stdout and BOB_NAME in plain.stdout
    sandbox.post("/_sandbox/oceanengine/revoke", {"user": BOB})
    checked = cli(["token", "status", "--check", "--json"], env)
    assert checked.returncode == 3
    doc = json.loads(checked.stdout)
    assert doc["health"] == "reauthorize" and doc["chain_id"] == bob.chain_id
    health = {c["chain_id"]: (c["health"], c["checked"]) for c in doc["chains"]}
    assert health == {alice.chain_id: ("ok", True), bob.chain_id: ("reauthorize", False)}
    card = Actions(services).execute(TokenStatus(), Caller("ou_someone", "oc_team", "group"))
    shown = cards.to_text(card)
    assert ALICE_NAME in shown and BOB_NAME in shown
    assert "1 of 2 authorizations need a person" in shown
    assert "Authorize again: " + BOB_NAME in shown


# -- the database from before chains --------------------------------------------------------------


def _schema_1_with_a_live_chain(db_url: str, sandbox: Sandbox) -> str:
    """A database as schema 1 left it — ``tokens`` keyed by ``app_id`` alone, history without
    chains, no later token tables — holding a live chain; returns its access token."""
    from adsync.sync.oceanengine import OceanEngineClient

    first = Store(db_url)  # today's schema, then rolled back to schema 1's token tables
    old = MetaData()
    Table(
        "tokens",
        old,
        Column("app_id", String(32), primary_key=True),
        Column("access_token", Text, nullable=False),
        Column("refresh_token", Text, nullable=False),
        Column("access_expires_at", UTCDateTime, nullable=False),
        Column("refresh_expires_at", UTCDateTime, nullable=False),
        Column("advertiser_ids", Text, nullable=False),
        Column("generation", Integer, nullable=False),
        Column("authorized_at", UTCDateTime, nullable=False),
        Column("refreshed_at", UTCDateTime),
        Column("dead_at", UTCDateTime),
        Column("dead_reason", Text),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    Table(
        "token_history",
        old,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("app_id", String(32), nullable=False),
        Column("at", UTCDateTime, nullable=False),
        Column("event", String(24), nullable=False),
        Column("reason", Text, nullable=False),
        Column("access_prefix", String(16), nullable=False),
        Column("refresh_prefix", String(16), nullable=False),
        Column("generation", Integer),
        Column("actor", String(120), nullable=False),
        Index("ix_token_history_app_at", "app_id", "at"),
    )
    grant = OceanEngineClient(sandbox.url).exchange_auth_code(
        OE_APP_ID, OE_SECRET, sandbox.auth_code()
    )
    now = utcnow()
    with first.begin() as conn:
        for name in ("chain_accounts", "pending_grants", "token_refreshes", "token_history"):
            conn.execute(text(f"DROP TABLE {name}"))
        conn.execute(text("DROP TABLE tokens"))
        old.create_all(conn)
        conn.execute(schema_version.delete().where(schema_version.c.version != 1))
        conn.execute(
            insert(old.tables["tokens"]).values(
                app_id=OE_APP_ID,
                access_token=grant.access_token,
                refresh_token=grant.refresh_token,
                access_expires_at=now + timedelta(seconds=grant.expires_in),
                refresh_expires_at=now + timedelta(seconds=grant.refresh_expires_in),
                advertiser_ids=json.dumps(list(grant.advertiser_ids)),
                generation=1,
                authorized_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            insert(old.tables["token_history"]).values(
                app_id=OE_APP_ID,
                at=now,
                event="authorized",
                reason="7 accounts granted",
                access_prefix="abcd…",
                refresh_prefix="efgh…",
                generation=1,
                actor="old",
            )
        )
        # The watchdog's open problem, named as it was before chains.
        conn.execute(
            insert(alerts).values(
                problem="token:refresh_failed", first_seen=now, last_seen=now, last_sent=now
            )
        )
    first.dispose()
    return grant.access_token


def test_a_schema_1_database_with_a_live_chain_upgrades_in_place_and_syncs_without_authorizing(
    db_url: str, settings: Any, sandbox: Sandbox, day: date
) -> None:
    from adsync.sync.services import open_services

    access_token = _schema_1_with_a_live_chain(db_url, sandbox)
    exchanges = sandbox.stats()["exchanges"]
    services = open_services(settings)  # opening the store migrates it
    try:
        assert {1, 2, 4, 9, 10} <= services.store.applied_steps()
        with services.store.engine.connect() as conn:
            key = inspect(conn).get_pk_constraint("tokens")["constrained_columns"]
            [row] = conn.execute(select(tokens)).all()
            history = conn.execute(select(token_history.c.chain_id)).scalars().all()
            problems = conn.execute(select(alerts.c.problem)).scalars().all()
        assert key == ["app_id", "chain_id"]
        assert (row.chain_id, row.access_token, row.user_id) == (LEGACY_CHAIN, access_token, None)
        assert history == [LEGACY_CHAIN] and problems == [f"token:refresh_failed:{LEGACY_CHAIN}"]
        end = day - timedelta(days=1)
        result = Runner(services).run(end, end)
        assert result.status == "ok" and len(result.accounts) == 7, result.error
        assert sandbox.stats()["exchanges"] == exchanges  # nobody authorized again
        # Its user is looked up at the next refresh, with the new token.
        services.tokens.refresh(reason="the first refresh after the upgrade")
        [chain] = services.tokens.chains()
        assert chain.chain_id == LEGACY_CHAIN and chain.user.name == ALICE_NAME
        # The old open problem is the legacy chain's now: the watchdog's all clear closes it.
        now = Now(at(day, 9))
        clock = make_clock(services, now)
        clock.token_watchdog()
        assert [p.title for p in posted(sandbox)] == ["Token 刷新恢复 · token refresh works again"]
    finally:
        services.close()


def test_a_migrated_chain_is_replaced_by_its_own_login_and_joined_by_another(
    db_url: str, settings: Any, sandbox: Sandbox
) -> None:
    from adsync.sync.services import open_services

    _schema_1_with_a_live_chain(db_url, sandbox)
    services = open_services(settings)
    try:
        # The same login authorizes again before anyone looked its user up: the consent killed
        # the migrated chain's tokens, so it is that login's chain — replaced, not doubled.
        again = authorize(services, sandbox, everyone(sandbox))
        assert again.replaced and again.chain_id == LEGACY_CHAIN
        [chain] = services.tokens.chains()
        assert chain.live and chain.user.name == ALICE_NAME
        bob = authorize(services, sandbox, everyone(sandbox)[:2], user=BOB)
        assert not bob.replaced and bob.chain_id != LEGACY_CHAIN
        assert {c.chain_id for c in services.tokens.chains()} == {LEGACY_CHAIN, bob.chain_id}
        with services.store.engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(tokens)).scalar()
        assert count == 2
    finally:
        services.close()


# -- SQLite: a refresh holds a claim, not the database --------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_refresh_claim_of_a_dead_or_wedged_process_is_taken_over_and_a_live_one_waited(
    authorized: Any, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adsync.sync import tokens as token_module
    from adsync.sync.errors import StoreError

    [chain] = authorized.tokens.chains()

    def claim(holder: str, since: Any) -> None:
        with authorized.store.begin() as conn:
            conn.execute(update(tokens).values(refreshing_by=holder, refreshing_since=since))

    def holder_of(args: list[str]) -> tuple[str, subprocess.Popen[bytes]]:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from adsync.sync.processes import actor; print(actor(), "
             "flush=True); import sys; sys.stdin.read()", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        return proc.stdout.readline().decode().strip() + ":1", proc

    # A process that claimed the chain and was killed: taken over at once.
    dead, proc = holder_of([])
    proc.kill()
    proc.wait()
    claim(dead, utcnow())
    before = sandbox.stats().get("refresh_ok", 0)
    authorized.tokens.refresh(reason="after a killed refresher")
    assert sandbox.stats()["refresh_ok"] == before + 1
    assert rows(authorized)[chain.chain_id].refreshing_by is None
    # A live one: waited for (here, until the wait runs out, asking the platform nothing).
    live, proc = holder_of([])
    try:
        claim(live, utcnow())
        monkeypatch.setattr(token_module, "TOKEN_LOCK_WAIT", 0.5)
        with pytest.raises(StoreError, match="being refreshed by"):
            authorized.tokens.refresh(reason="while another process refreshes")
        assert sandbox.stats()["refresh_ok"] == before + 1
        # The same live holder, wedged for longer than any refresh takes: taken over.
        claim(live, utcnow() - token_module.CLAIM_LIFETIME - timedelta(seconds=1))
        authorized.tokens.refresh(reason="after a wedged refresher")
        assert sandbox.stats()["refresh_ok"] == before + 2
    finally:
        proc.kill()
        proc.wait()
    assert works(authorized, rows(authorized)[chain.chain_id].access_token)


def _local_rows(services: Any) -> set[str]:
    with services.store.engine.connect() as conn:
        return set(conn.execute(select(report_rows.c.sync_key)).scalars())
