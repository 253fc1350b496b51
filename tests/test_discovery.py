"""Whose accounts are "the accounts": discovery by account type, end to end against the sandbox
over real HTTP, on both storage backends. Each kind of authorization a real user grants — 本地推
accounts ticked directly, a 巨量工作台 organisation, a 抖音来客 account, an agent, an invalid
account, a company's 巨量广告 广告主 id — and what adsync syncs, skips and says for it."""

from __future__ import annotations

import json
import multiprocessing
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Column, MetaData, String, Table, Text, insert, inspect, select

from adsync.sync import discovery
from adsync.sync.errors import AuthorizationNeeded
from adsync.sync.reports import resolve_accounts
from adsync.sync.runner import Runner
from adsync.sync.store import Store, UTCDateTime, accounts, schema_version, utcnow

from .conftest import Sandbox

SH = ZoneInfo("Asia/Shanghai")
APP, TABLE = "bascnSandboxApp0001", "tblSandboxDaily01"
ORG_FILTER = '{"account_type":"LOCAL"}'


def yesterday() -> date:
    return datetime.now(SH).date() - timedelta(days=1)


def local_ids(sandbox: Sandbox) -> list[int]:
    """Every 本地推 account of the sandbox world, in order (account 0 always has data)."""
    day = yesterday().isoformat()
    doc = sandbox.get("/_sandbox/oceanengine/truth", start_date=day, end_date=day)
    return [a["local_account_id"] for a in doc["accounts"]]


def grant(services: Any, sandbox: Sandbox, **body: Any) -> list[dict[str, Any]]:
    """Mint an authorization of these kinds and authorize adsync with it."""
    minted = sandbox.post("/_sandbox/oceanengine/auth_code", body)
    services.tokens.authorize(minted["auth_code"])
    return minted["granted"]


def scope_ids(services: Any) -> list[str]:
    found = resolve_accounts(
        services.settings, services.store, services.tokens.granted_account_ids()
    )
    return sorted(a.id for a in found)


def synced_accounts(sandbox: Sandbox) -> set[str]:
    records = sandbox.get(f"/_sandbox/feishu/tables/{APP}/{TABLE}")["records"]
    return {r["fields"]["账户ID"] for r in records}


def view(services: Any) -> discovery.AccountsView:
    return discovery.account_view(
        services.settings, services.store, services.tokens.granted_account_ids()
    )


# -- each kind of authorization -----------------------------------------------------------------


def test_accounts_ticked_directly_are_synced_as_they_are(services: Any, sandbox: Sandbox) -> None:
    ids = local_ids(sandbox)[:3]
    grant(services, sandbox, account_ids=ids)
    assert scope_ids(services) == sorted(str(i) for i in ids)
    assert {a.via for a in view(services).accounts} == {"direct"}
    result = Runner(services).run(yesterday(), yesterday())
    assert result.status == "ok" and result.warnings == [], result.warnings
    assert str(ids[0]) in synced_accounts(sandbox)


def test_an_organisation_grant_syncs_its_local_accounts_not_its_own_id(
    services: Any, sandbox: Sandbox
) -> None:
    ids = local_ids(sandbox)
    [org] = grant(
        services,
        sandbox,
        grants=[{"type": "CUSTOMER_ADMIN", "account_ids": ids[:3], "name": "天后集团工作台"}],
    )
    # Before discovery, adsync reported on the organisation's own id (40002 every day).
    assert services.tokens.granted_account_ids() == (str(org["account_id"]),)
    assert scope_ids(services) == sorted(str(i) for i in ids[:3])
    listed = view(services)
    assert {a.via for a in listed.accounts} == {
        f"via organisation 天后集团工作台 ({org['account_id']})"
    }
    assert all(a.name for a in listed.accounts)  # the organisation's listing carries names
    [manager] = listed.managers
    assert manager.account_type == "CUSTOMER_ADMIN" and manager.note == "3 本地推 accounts"
    result = Runner(services).run(yesterday(), yesterday())
    assert result.status == "ok", (result.error, [a.reason for a in result.failed])
    assert sorted(a.account_id for a in result.accounts) == sorted(str(i) for i in ids[:3])
    assert str(ids[0]) in synced_accounts(sandbox)
    assert str(org["account_id"]) not in synced_accounts(sandbox)


def test_a_laike_grant_syncs_the_local_accounts_it_lists(services: Any, sandbox: Sandbox) -> None:
    ids = local_ids(sandbox)
    [life] = grant(
        services, sandbox, grants=[{"type": "PLATFORM_ROLE_LIFE", "account_ids": ids[:4]}]
    )
    assert scope_ids(services) == sorted(str(i) for i in ids[:4])
    listed = view(services)
    assert {a.via for a in listed.accounts} == {
        f"via 来客 {life['account_name']} ({life['account_id']})"
    }
    result = Runner(services).run(yesterday(), yesterday())
    assert result.status == "ok" and len(result.accounts) == 4
    assert str(ids[0]) in synced_accounts(sandbox)


def test_a_direct_account_also_in_an_organisation_counts_once_as_direct(
    services: Any, sandbox: Sandbox
) -> None:
    ids = local_ids(sandbox)
    grant(
        services,
        sandbox,
        account_ids=ids[:1],
        grants=[{"type": "CUSTOMER_OPERATOR", "account_ids": ids[:2]}],
    )
    listed = {a.id: a.via for a in view(services).accounts}
    assert listed[str(ids[0])] == "direct" and listed[str(ids[1])].startswith("via organisation")
    assert len(listed) == 2


def test_an_invalid_account_is_skipped_and_named_once_not_failed(
    services: Any, sandbox: Sandbox
) -> None:
    ids = local_ids(sandbox)[:3]
    grant(services, sandbox, account_ids=ids)
    sandbox.post("/_sandbox/oceanengine/accounts", {"invalidate": [ids[1]]})
    first = Runner(services).run(yesterday(), yesterday())
    # Before: the account stayed in scope and failed 40002 every day (a partial run, an alert).
    assert first.status == "ok" and str(ids[1]) not in {a.account_id for a in first.accounts}
    [said] = first.account_changes
    assert str(ids[1]) in said and "is_valid=false" in said
    [skipped] = view(services).skipped
    assert skipped.id == str(ids[1]) and "is_valid=false" in skipped.note and skipped.fix
    second = Runner(services).run(yesterday(), yesterday())
    assert second.status == "ok" and second.account_changes == [] and second.warnings == []


def test_an_agent_grant_is_named_with_the_fix_and_adsync_accounts_syncs_it(
    services: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    ids = local_ids(sandbox)
    [agent] = grant(services, sandbox, grants=[{"type": "AGENT", "account_ids": ids[:2]}])
    services.close()
    synced = cli(["sync", "yesterday"], env)
    said = synced.stdout + synced.stderr
    assert synced.returncode != 0 and "no accounts in scope" in said and "AGENT" in said
    # `adsync accounts` still shows what was granted, and why none of it is synced.
    listed = cli(["accounts"], env)
    assert listed.returncode == 2 and "no accounts in scope" in listed.stderr
    assert f"({agent['account_id']}) [AGENT]" in listed.stdout
    assert "fix: set ADSYNC_ACCOUNTS" in listed.stdout
    doc = json.loads(cli(["accounts", "--json"], env).stdout)
    assert doc["exit_code"] == 2 and "ADSYNC_ACCOUNTS" in doc["hint"]
    assert [s["account_type"] for s in doc["skipped"]] == ["AGENT"] and doc["accounts"] == []
    # The operator follows the fix: the agent's 本地推 accounts, named in ADSYNC_ACCOUNTS.
    configured = {**env, "ADSYNC_ACCOUNTS": f"{ids[0]}:一店,{ids[1]}"}
    shown = cli(["accounts", "--json"], configured)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert (
        doc["origin"] == "config" and [a["via"] for a in doc["accounts"]] == ["ADSYNC_ACCOUNTS"] * 2
    )
    assert cli(["sync", "yesterday"], configured).returncode == 0
    assert str(agent["account_id"]) not in synced_accounts(sandbox)


def test_other_types_beside_local_accounts_are_listed_as_skipped_with_the_fix(
    services: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    ids = local_ids(sandbox)
    granted = grant(
        services,
        sandbox,
        account_ids=ids[:2],
        grants=[{"type": "PLATFORM_ROLE_LOCAL_AGENT", "account_ids": ids[2:3]}],
    )
    services.close()
    text = cli(["accounts"], env)
    assert text.returncode == 0, text.stderr
    assert "Skipped (1 granted accounts not synced)" in text.stdout
    assert "PLATFORM_ROLE_LOCAL_AGENT" in text.stdout and "fix: set ADSYNC_ACCOUNTS" in text.stdout
    assert "2 accounts in scope (from discovered from the authorization" in text.stdout
    doc = json.loads(cli(["accounts", "--json"], env).stdout)
    assert [s["id"] for s in doc["skipped"]] == [str(granted[2]["account_id"])]
    assert doc["skipped"][0]["fix"].startswith("set ADSYNC_ACCOUNTS")
    doctor = json.loads(cli(["doctor", "--json"], env).stdout)
    [step] = [c for c in doctor["checks"] if c["name"] == "accounts"]
    assert not step["ok"] and "1 granted accounts skipped" in step["detail"]
    assert "PLATFORM_ROLE_LOCAL_AGENT" in step["detail"] and "ADSYNC_ACCOUNTS" in step["fix"]


def test_the_chat_accounts_card_shows_each_source_and_the_skipped_ones(
    services: Any, sandbox: Sandbox
) -> None:
    from adsync.bot.actions import Actions
    from adsync.bot.console import Console

    ids = local_ids(sandbox)
    granted = grant(
        services,
        sandbox,
        account_ids=ids[:1],
        grants=[
            {"type": "CUSTOMER_ADMIN", "account_ids": ids[1:2], "name": "天后集团工作台"},
            {"type": "PLATFORM_ROLE_LIFE", "account_ids": ids[2:3], "name": "天后来客"},
            {"type": "AGENT", "account_ids": ids[3:4]},
        ],
    )
    console = Console(Actions(services))
    english = console.answer("accounts")
    assert "via organisation 天后集团工作台" in english and "via 来客 天后来客" in english
    assert "direct" in english and "3 in scope" in english and "1 skipped" in english
    agent = granted[3]
    assert str(agent["account_id"]) in english and "AGENT" in english
    assert "set ADSYNC_ACCOUNTS" in english
    chinese = console.answer("账户")
    assert "工作台 天后集团工作台" in chinese and "来客 天后来客" in chinese and "已跳过" in chinese


# -- the list follows the platform --------------------------------------------------------------


def test_a_new_organisation_account_is_synced_without_authorizing_again(
    services: Any, sandbox: Sandbox
) -> None:
    ids = local_ids(sandbox)
    [org] = grant(services, sandbox, grants=[{"type": "CUSTOMER_ADMIN", "account_ids": ids[:2]}])
    assert Runner(services).run(yesterday(), yesterday()).status == "ok"
    grown = sandbox.post("/_sandbox/oceanengine/accounts", {"add": 1, "under": org["account_id"]})
    new = str(grown["all_account_ids"][-1])
    result = Runner(services).run(yesterday(), yesterday())
    assert result.status == "ok" and new in {a.account_id for a in result.accounts}
    [said] = result.account_changes
    assert said.startswith("new account found") and new in said and "via organisation" in said
    again = Runner(services).run(yesterday(), yesterday())
    assert again.account_changes == [] and len(again.accounts) == 3


def test_an_account_that_vanishes_is_reported_once_not_failed_every_day(
    services: Any, sandbox: Sandbox
) -> None:
    ids = local_ids(sandbox)
    [org] = grant(services, sandbox, grants=[{"type": "CUSTOMER_ADMIN", "account_ids": ids[:3]}])
    assert Runner(services).run(yesterday(), yesterday()).status == "ok"
    sandbox.post("/_sandbox/oceanengine/accounts", {"detach": [ids[1]], "from": org["account_id"]})
    first = Runner(services).run(yesterday(), yesterday())
    assert first.status == "ok", [a.reason for a in first.failed]  # not partial: not failed
    assert str(ids[1]) not in {a.account_id for a in first.accounts}
    [said] = first.account_changes
    assert "no longer found" in said and str(ids[1]) in said and "no longer lists it" in said
    second = Runner(services).run(yesterday(), yesterday())
    assert second.status == "ok" and second.account_changes == []
    [gone] = view(services).vanished
    assert gone.id == str(ids[1]) and gone.at is not None and "no longer lists it" in gone.note
    # The organisation lists it again: said once, and synced again.
    sandbox.post("/_sandbox/oceanengine/accounts", {"attach": [ids[1]], "to": org["account_id"]})
    back = Runner(services).run(yesterday(), yesterday())
    assert back.status == "ok" and str(ids[1]) in {a.account_id for a in back.accounts}
    [said] = back.account_changes
    assert said.startswith("account found again") and str(ids[1]) in said
    assert view(services).vanished == []


def test_a_failed_organisation_listing_keeps_its_accounts_and_says_so(
    services: Any, sandbox: Sandbox
) -> None:
    ids = local_ids(sandbox)
    grant(services, sandbox, grants=[{"type": "CUSTOMER_ADMIN", "account_ids": ids[:2]}])
    sandbox.faults(
        oceanengine={"scripted": [{"path": "customer_center", "code": 40002, "times": 1}]}
    )
    result = Runner(services).run(yesterday(), yesterday())
    assert result.status == "ok" and len(result.accounts) == 2  # nothing vanished
    assert result.account_changes == []
    assert any("could not list the accounts of organisation" in w for w in result.warnings)


def test_the_platform_unreachable_keeps_the_last_list(services: Any, sandbox: Sandbox) -> None:
    ids = local_ids(sandbox)
    grant(services, sandbox, grants=[{"type": "CUSTOMER_ADMIN", "account_ids": ids[:2]}])
    sandbox.faults(
        oceanengine={
            "scripted": [{"path": "advertiser/get", "code": 500, "http": True, "times": 9}]
        }
    )
    result = Runner(services).run(yesterday(), yesterday())
    assert result.status == "ok" and len(result.accounts) == 2
    assert any("could not be refreshed" in w for w in result.warnings)


def test_two_processes_saving_the_same_change_at_once_say_it_once(
    authorized: Any, sandbox: Sandbox, env: dict[str, str]
) -> None:
    ids = [str(i) for i in sandbox.get("/_sandbox/oceanengine/grant")["account_ids"]]
    sandbox.post("/_sandbox/oceanengine/accounts", {"invalidate": [int(ids[0])]})
    ctx = multiprocessing.get_context("fork")
    authorized.store.engine.dispose()
    out, ready = ctx.Queue(), ctx.Barrier(2)
    procs = [ctx.Process(target=_refresh_in_child, args=(env, ready, out)) for _ in range(2)]
    for p in procs:
        p.start()
    said = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sorted(len(s) for s in said) == [0, 1], said
    assert ids[0] in sum(said, [])[0]


def _refresh_in_child(env: dict[str, str], ready: Any, out: Any) -> None:
    """Two runs of two processes (two clocks, two gunicorn workers) that asked the platform at
    the same time and store what they found at the same moment."""
    from adsync.sync.config import load_settings
    from adsync.sync.services import open_services

    services = open_services(load_settings(env))
    try:
        found = discovery.discover(services.api())
        ready.wait(timeout=30)
        out.put([c.label for c in discovery.save(services.store, found)])
    except Exception as exc:  # noqa: BLE001 - the parent sees what went wrong
        out.put([f"{type(exc).__name__}: {exc}", "failed"])
    finally:
        services.close()


# -- adsync accounts --check and doctor ----------------------------------------------------------


def test_accounts_check_names_a_company_advertiser_id_with_the_fix_and_exits_1(
    services: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    ids = local_ids(sandbox)
    granted = grant(
        services,
        sandbox,
        account_ids=ids[:2],
        grants=[{"type": "ADVERTISER", "local": False}],
    )
    advertiser = str(granted[2]["account_id"])
    services.close()
    # The authorization cannot tell a 广告主 from a 本地推 account: it is in scope ...
    plain = cli(["accounts"], env)
    assert plain.returncode == 0 and advertiser in plain.stdout
    # ... and the check finds it, as the real report would ("账户ID错误").
    checked = cli(["accounts", "--check"], env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"✗ {granted[2]['account_name']} ({advertiser}): " in checked.stdout
    assert "40001" in checked.stdout and "账户ID错误" in checked.stdout
    assert "fix: this id is not a 本地推 account id" in checked.stdout
    assert "✗ 1 of 3 accounts fail a 1-day report" in checked.stdout
    doc = json.loads(cli(["accounts", "--check", "--json"], env).stdout)
    assert doc["check"]["failed"] == 1 and doc["check"]["checked"] == 3
    [bad] = [r for r in doc["check"]["results"] if not r["ok"]]
    assert bad["id"] == advertiser and bad["code"] == 40001 and "本地推账户ID" in bad["fix"]
    keys = {"FEISHU_ENCRYPT_KEY": "sandbox-encrypt-key", "FEISHU_VERIFICATION_TOKEN": "vt"}
    doctor = cli(["doctor"], {**env, **keys})  # the event keys set: only the accounts fail
    assert doctor.returncode == 1, doctor.stdout
    line = next(x for x in doctor.stdout.splitlines() if x.startswith("✗ accounts"))
    assert advertiser in line and "40001" in line
    assert "fix: this id is not a 本地推 account id" in doctor.stdout


def test_accounts_check_passes_when_every_account_answers(
    authorized: Any, env: dict[str, str], cli: Any, sandbox: Sandbox
) -> None:
    n = len(sandbox.get("/_sandbox/oceanengine/grant")["account_ids"])
    authorized.close()
    before = sandbox.stats()["calls"].get("/open_api/v3.0/local/report/promotion/get/", 0)
    checked = cli(["accounts", "--check"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"✓ all {n} accounts answer a 1-day report" in checked.stdout
    after = sandbox.stats()["calls"]["/open_api/v3.0/local/report/promotion/get/"]
    assert after - before == n  # one call per account
    doctor = cli(["doctor", "--json"], env)
    [step] = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "accounts"]
    assert step["ok"] and f"all {n} accounts answer" in step["detail"]


def test_accounts_check_with_a_revoked_authorization_exits_3(
    authorized: Any, env: dict[str, str], cli: Any, sandbox: Sandbox
) -> None:
    authorized.close()
    sandbox.post("/_sandbox/oceanengine/revoke")
    checked = cli(["accounts", "--check"], env)
    assert checked.returncode == 3, checked.stdout + checked.stderr
    assert "authoriz" in checked.stderr


def test_accounts_check_names_a_configured_account_outside_the_grant(
    authorized: Any, env: dict[str, str], cli: Any, sandbox: Sandbox
) -> None:
    granted = sandbox.get("/_sandbox/oceanengine/grant")["account_ids"]
    authorized.close()
    configured = {**env, "ADSYNC_ACCOUNTS": f"{granted[0]},1234567890123456"}
    checked = cli(["accounts", "--check"], configured)
    assert checked.returncode == 1
    assert "1234567890123456: " in checked.stdout and "40002" in checked.stdout
    assert "fix: the authorization does not reach this account" in checked.stdout


# -- what the client sends (official SDK request models) ----------------------------------------


def test_the_client_sends_exactly_the_official_sdks_parameters(
    services: Any, sandbox: Sandbox
) -> None:
    ids = local_ids(sandbox)
    grant(
        services,
        sandbox,
        grants=[
            {"type": "CUSTOMER_ADMIN", "account_ids": ids[:1]},
            {"type": "PLATFORM_ROLE_LIFE", "account_ids": ids[1:2]},
        ],
    )
    services.tokens.refresh()
    seen = sandbox.get("/_sandbox/oceanengine/requests")["requests"]
    # models/model_oauth2_access_token_request.go: app_id, auth_code, secret (no grant_type)
    assert seen["/open_api/oauth2/access_token/"]["body"] == ["app_id", "auth_code", "secret"]
    # models/model_oauth2_refresh_token_request.go: app_id, refresh_token, secret
    assert seen["/open_api/oauth2/refresh_token/"]["body"] == ["app_id", "refresh_token", "secret"]
    # api/api_oauth2_advertiser_get.go: access_token as a query parameter, nothing else (never
    # the app secret in a URL)
    assert seen["/open_api/oauth2/advertiser/get/"] == {
        "query": ["access_token"],
        "body": [],
        "access_token_header": False,
    }
    # api/api_customer_center_account_list_v30.go and api/api_local_life_advertiser_list_v30.go
    assert seen["/open_api/v3.0/customer_center/account/list/"] == {
        "query": ["account_id", "filter", "page", "page_size"],
        "body": [],
        "access_token_header": True,
    }
    assert seen["/open_api/v3.0/local/life/advertiser/list/"]["query"] == [
        "life_account_id",
        "page",
        "page_size",
    ]


def test_40110_is_rate_limiting_outside_oauth_and_an_authorization_failure_on_it(
    authorized: Any, sandbox: Sandbox
) -> None:
    sandbox.faults(oceanengine={"scripted": [{"path": "local/report", "code": 40110, "times": 2}]})
    result = Runner(authorized).run(yesterday(), yesterday())
    assert result.status == "ok" and result.auth_url == "", result.error
    assert sandbox.stats()["errors"].get("40110") == 2  # answered twice, retried, then fine
    # On the OAuth endpoints 40110 is "auth_code已过期": no retry, authorize again.
    code = sandbox.auth_code()
    sandbox.faults(
        oceanengine={"scripted": [{"path": "oauth2/access_token", "code": 40110, "times": 1}]}
    )
    with pytest.raises(AuthorizationNeeded) as caught:
        authorized.tokens.authorize(code)
    assert "40110" in caught.value.message
    assert sandbox.stats()["calls"]["/open_api/oauth2/access_token/"] == 2  # the first grant + 1


def test_the_daily_run_tells_the_chat_once_when_an_account_vanishes(
    services: Any, sandbox: Sandbox
) -> None:
    from .test_clock import Now, alerts_posted, at, make_clock

    day = datetime.now(SH).date()
    sandbox.post("/_sandbox/oceanengine/reset", {"today": day.isoformat()})
    ids = local_ids(sandbox)
    [org] = grant(services, sandbox, grants=[{"type": "CUSTOMER_ADMIN", "account_ids": ids[:3]}])
    sandbox.post("/_sandbox/oceanengine/accounts", {"detach": [ids[2]], "from": org["account_id"]})
    now = Now(at(day, 7))
    clock = make_clock(services, now)
    first = clock.daily()
    assert first is not None and first.status == "ok"
    [card] = [a for a in alerts_posted(sandbox) if "账户变化" in a.title]
    assert str(ids[2]) in card.text and "no longer found" in card.text
    now.at(day + timedelta(days=1), 7)
    assert clock.daily() is not None
    assert len([a for a in alerts_posted(sandbox) if "账户变化" in a.title]) == 1


# -- storage ------------------------------------------------------------------------------------


def test_a_database_from_before_discovery_gains_the_columns_and_keeps_its_accounts(
    db_url: str,
) -> None:
    old = MetaData()
    Table(
        "accounts",
        old,
        Column("account_id", String(32), primary_key=True),
        Column("name", Text, nullable=False),
        Column("source", String(16), nullable=False),
        Column("seen_at", UTCDateTime, nullable=False),
        Column("last_synced_at", UTCDateTime),
        Column("last_outcome", String(16)),
        Column("last_reason", Text),
    )
    first = Store(db_url)  # a fresh database at today's schema, then rolled back to step 1
    with first.begin() as conn:
        accounts.drop(conn)
        old.create_all(conn)
        conn.execute(schema_version.delete().where(schema_version.c.version == 4))
        conn.execute(
            insert(old.tables["accounts"]).values(
                account_id="1700000000000042", name="老账户", source="grant", seen_at=utcnow()
            )
        )
    first.dispose()
    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("accounts")}
            row = conn.execute(select(accounts)).one()
        assert {"scope", "parent_id", "valid", "vanished_at", "checked_at"} <= columns
        assert row.name == "老账户" and row.scope is None
        assert 4 in store.applied_steps()
    finally:
        store.dispose()
