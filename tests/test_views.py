"""Per-account views against the sandbox (its view APIs, over HTTP), real runs end to end, on
both storage backends.

The contract: each account's view is found by its filter (``账户ID`` is <id>), made once
across repeated syncs, racing processes and renames; a person's own views are never touched;
a view deleted by hand is made again by ``adsync views``; a table adsync starts gets the views
of the table it follows; the platform's limits are met with a warning, never a failed sync.
"""

from __future__ import annotations

import json
import multiprocessing
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from lark_oapi.api.bitable.v1 import (
    CreateAppTableViewRequest,
    ListAppTableViewRequest,
    PatchAppTableViewRequest,
    PatchAppTableViewRequestBody,
    ReqView,
)

from adsync.sync.config import load_settings
from adsync.sync.runner import Runner
from adsync.sync.services import Services, open_services

from .conftest import Sandbox, report

APP, TABLE = "bascnSandboxApp0001", "tblSandboxDaily01"
SH = ZoneInfo("Asia/Shanghai")


def yesterday() -> date:
    return datetime.now(SH).date() - timedelta(days=1)


def views_of(sandbox: Sandbox, table: str = TABLE) -> list[dict[str, Any]]:
    return sandbox.get(f"/_sandbox/feishu/views/{APP}/{table}")["views"]


def account_views(sandbox: Sandbox, table: str = TABLE) -> dict[str, list[str]]:
    """account id -> names of the views whose filter is exactly ``账户ID`` is <that id>."""
    fields = sandbox.get(f"/_sandbox/feishu/tables/{APP}/{table}")["fields"]
    account_field = next(f["field_id"] for f in fields if f["field_name"] == "账户ID")
    out: dict[str, list[str]] = {}
    for view in views_of(sandbox, table):
        flt = (view["property"] or {}).get("filter_info") or {}
        conditions = flt.get("conditions") or []
        if len(conditions) == 1 and conditions[0]["field_id"] == account_field:
            [account] = json.loads(conditions[0]["value"])
            out.setdefault(account, []).append(view["view_name"])
    return out


def granted(sandbox: Sandbox) -> dict[str, str]:
    """account id -> name, for the accounts the sandbox grants."""
    doc = sandbox.get(
        "/_sandbox/oceanengine/truth",
        start_date=yesterday().isoformat(),
        end_date=yesterday().isoformat(),
    )
    ids = {str(i) for i in sandbox.get("/_sandbox/oceanengine/grant")["account_ids"]}
    return {
        str(a["local_account_id"]): a["account_name"]
        for a in doc["accounts"]
        if str(a["local_account_id"]) in ids
    }


def sync(services: Services, day: date | None = None) -> Any:
    day = day or yesterday()
    result = Runner(services).run(day, day)
    assert result.status == "ok", (result.error, result.warnings)
    return result


def view_writes(sandbox: Sandbox) -> int:
    calls = sandbox.stats("feishu")["calls"]
    return sum(n for route, n in calls.items() if "/views" in route and not route.startswith("GET"))


def view_calls(sandbox: Sandbox) -> int:
    calls = sandbox.stats("feishu")["calls"]
    return sum(n for route, n in calls.items() if "/views" in route)


def control(method: str, sandbox: Sandbox, path: str, body: dict[str, Any] | None = None) -> Any:
    response = requests.request(
        method, f"{sandbox.url}/_sandbox/feishu/{path}", json=body or {}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


# -- made once ----------------------------------------------------------------------------------


def test_views_are_made_once_across_repeated_syncs_and_a_rename(
    authorized: Services, sandbox: Sandbox
) -> None:
    accounts = granted(sandbox)
    first = sync(authorized)
    made = account_views(sandbox)
    calls = sandbox.stats("feishu")["calls"]
    view_calls = sum(n for route, n in calls.items() if "/views" in route)
    report(
        f"views: the first sync made {len(accounts)} views in {view_calls} view calls "
        f"(of {first.feishu_calls} Feishu calls); a sync after it: 0"
    )
    assert made == {a: [name] for a, name in accounts.items()}
    assert len(first.view_changes) == len(accounts)
    assert all(" created in " in line for line in first.view_changes)
    # Again and again: nothing asked of the platform's views, nothing made twice.
    before = sandbox.stats("feishu")["calls"]
    for _ in range(2):
        again = sync(authorized)
        assert again.view_changes == [] and not any("view" in w for w in again.warnings)
    after = sandbox.stats("feishu")["calls"]
    assert {r: n for r, n in after.items() if "/views" in r} == {
        r: n for r, n in before.items() if "/views" in r
    }
    assert account_views(sandbox) == made

    # The account is renamed at Ocean Engine: its view is renamed, not made again.
    renamed_id = sorted(accounts)[0]
    sandbox.post("/_sandbox/oceanengine/accounts", {"rename": {renamed_id: "菲象_郑州新店_99"}})
    renamed = sync(authorized)
    assert [line.split(" in ")[0] for line in renamed.view_changes] == [
        f"view 菲象_郑州新店_99 ({renamed_id}) renamed"
    ]
    now = account_views(sandbox)
    assert now[renamed_id] == ["菲象_郑州新店_99"]
    assert {a: v for a, v in now.items() if a != renamed_id} == {
        a: v for a, v in made.items() if a != renamed_id
    }
    assert sync(authorized).view_changes == []
    # One view per account, plus the table's own default view: nothing else.
    assert len(views_of(sandbox)) == len(accounts) + 1


# -- people's views -----------------------------------------------------------------------------


def test_a_persons_view_of_the_same_name_is_left_alone_and_adsyncs_is_named_apart(
    authorized: Services, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    accounts = granted(sandbox)
    target = sorted(accounts)[1]
    name = accounts[target]
    # Before adsync's first sync, someone made a view of that account's name (a filter of
    # their own, or none).
    theirs = control("POST", sandbox, f"views/{APP}/{TABLE}", {"view_name": name})["view"]
    first = sync(authorized)
    assert any(f"view {name} ({target}) ({target}) name clash" in c for c in first.view_changes)
    # A person's view filtered exactly like adsync's, under a name of their own: it is that
    # account's view (found by its filter), kept with their name.
    other = sorted(accounts)[2]
    adsyncs = next(v for v in views_of(sandbox) if v["view_name"] == accounts[other])
    control(
        "PATCH", sandbox, f"views/{APP}/{TABLE}/{adsyncs['view_id']}", {"view_name": "我的门店"}
    )

    result = run_views(cli, env)
    states = {v["account_id"]: v for v in result["views"]}
    assert states[target]["state"] == "ok"  # made by the sync already, under another name
    assert states[target]["view_name"] == f"{name} ({target})"
    assert "is taken by another view" in states[target]["note"]
    assert states[other]["state"] == "ok" and states[other]["view_name"] == "我的门店"
    assert states[other]["note"] == "renamed in the Base: kept"
    after = {v["view_id"]: v for v in views_of(sandbox)}
    assert after[theirs["view_id"]] == theirs  # untouched: name, filter, everything
    assert account_views(sandbox)[target] == [f"{name} ({target})"]
    assert account_views(sandbox)[other] == ["我的门店"]

    # The person's renamed view stays theirs even when the account is renamed at the platform.
    sandbox.post("/_sandbox/oceanengine/accounts", {"rename": {other: "菲象_改名_01"}})
    renamed = sync(authorized)
    assert renamed.view_changes == []
    assert account_views(sandbox)[other] == ["我的门店"]
    assert len(views_of(sandbox)) == len(accounts) + 2  # default + theirs + one per account


def run_views(cli: Any, env: dict[str, str]) -> dict[str, Any]:
    """``adsync views --json`` through the real command line (in this process)."""
    done = cli(["views", "--json"], env)
    doc = json.loads(done.stdout)
    assert doc["exit_code"] == done.returncode, done.stderr
    return doc


def test_adsync_views_makes_again_a_view_deleted_by_hand(
    authorized: Services, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    sync(authorized)
    accounts = granted(sandbox)
    gone = sorted(accounts)[0]
    [view] = [v for v in views_of(sandbox) if v["view_name"] == accounts[gone]]
    control("DELETE", sandbox, f"views/{APP}/{TABLE}/{view['view_id']}")
    # A sync does not look (nothing changed that it knows of): `adsync views` does, and so
    # does the scheduled morning run (below).
    assert sync(authorized).view_changes == []
    assert gone not in account_views(sandbox)
    doc = run_views(cli, env)
    assert doc["exit_code"] == 0 and doc["tables_checked"] == 1
    states = {v["account_id"]: v["state"] for v in doc["views"]}
    assert states == {a: ("missing-and-created" if a == gone else "ok") for a in accounts}
    assert account_views(sandbox)[gone] == [accounts[gone]]
    again = run_views(cli, env)
    assert {v["state"] for v in again["views"]} == {"ok"}
    # The text form: a table per Base table, the sort said honestly.
    text = cli(["views"], env)
    assert text.returncode == 0, text.stderr
    assert f"广告日报 ({TABLE})" in text.stdout and accounts[gone] in text.stdout
    assert "cannot sort a view" in text.stdout
    assert len(views_of(sandbox)) == len(accounts) + 1


def test_a_view_left_without_its_filter_is_finished_not_made_twice(
    authorized: Services, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    """What a process that dies between creating a view and setting its filter leaves: the
    ledger's intent (``creating``) and an unfiltered view of that name."""
    from adsync.sync.viewplan import CREATING, Ledger

    sync(authorized)
    accounts = granted(sandbox)
    victim = sorted(accounts)[-1]
    [view] = [v for v in views_of(sandbox) if v["view_name"] == accounts[victim]]
    control("DELETE", sandbox, f"views/{APP}/{TABLE}/{view['view_id']}")
    half = control("POST", sandbox, f"views/{APP}/{TABLE}", {"view_name": accounts[victim]})
    Ledger(authorized.store, APP).put(
        TABLE, victim, view_id=None, view_name=accounts[victim], state=CREATING
    )
    result = sync(authorized)  # the ledger says a view is unfinished: the sync finishes it
    assert [c.split(" in ")[0] for c in result.view_changes] == [
        f"view {accounts[victim]} ({victim}) created"
    ]
    assert account_views(sandbox)[victim] == [accounts[victim]]
    assert {v["view_id"] for v in views_of(sandbox)} >= {half["view"]["view_id"]}
    assert len(views_of(sandbox)) == len(accounts) + 1
    assert {v["state"] for v in run_views(cli, env)["views"]} == {"ok"}


# -- rolling tables -----------------------------------------------------------------------------

DENSE = {"accounts": 3, "promotions_per_account": 2, "dense": True}  # 6 rows a day


def test_a_table_adsync_starts_gets_the_views_of_the_table_it_follows(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.reset(oceanengine=DENSE, feishu={"max_rows": 12})
    settings = load_settings({**env, "ADSYNC_TABLE_MAX_ROWS": "12"}, cwd=tmp_path)
    services = open_services(settings)
    try:
        services.tokens.authorize(sandbox.auth_code())
        end = yesterday()
        sync(services, end - timedelta(days=2))
        sync(services, end - timedelta(days=1))  # 12 rows: the configured table is full
        # A person's own view in the old table: not copied (only per-account views follow).
        control("POST", sandbox, f"views/{APP}/{TABLE}", {"view_name": "本周重点"})
        rolled = sync(services, end)
        [event] = rolled.table_events
        assert event.kind == "started" and event.name == "本地推日报 #2"
        old, new = account_views(sandbox), account_views(sandbox, event.table_id)
        assert new == old and len(new) == len(granted(sandbox))
        assert [v["view_name"] for v in views_of(sandbox, event.table_id)][0] == "表格"
        assert "本周重点" not in {v["view_name"] for v in views_of(sandbox, event.table_id)}
        assert all("in 本地推日报 #2" in c for c in rolled.view_changes)
        # The old table is not given views again, nor the new one twice.
        assert sync(services, end).view_changes == []

        # A person deletes the new table: it is recreated, with its views.
        requests.delete(
            f"{sandbox.url}/_sandbox/feishu/tables/{APP}/{event.table_id}", timeout=10
        ).raise_for_status()
        again = sync(services, end)
        [recreated] = again.table_events
        assert recreated.kind == "recreated"
        assert account_views(sandbox, recreated.table_id) == old
    finally:
        services.close()


# -- eight processes ----------------------------------------------------------------------------


def _keep_views(env: dict[str, str], day: date | None, barrier: Any, out: Any) -> None:
    from adsync.cli import main

    services = open_services(load_settings(env, cwd=Path(env["ADSYNC_DATA_DIR"]).parent))
    try:
        barrier.wait(timeout=60)
        if day is None:  # `adsync views`, the real command, in this process
            import os

            os.environ.update(env)
            os.chdir(Path(env["ADSYNC_DATA_DIR"]).parent)  # no stray .env read
            out.put(("views", main(["views", "--json"])))
        else:
            result = Runner(services).run(day, day)
            out.put(("sync", result.status))
    finally:
        services.close()


def test_eight_processes_at_once_make_one_view_per_account(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    services = open_services(load_settings(env, cwd=tmp_path))
    services.tokens.authorize(sandbox.auth_code())
    end = yesterday()
    assert Runner(services).run(end, end).status == "ok"  # fields, and a local copy
    accounts = granted(sandbox)
    # Every view gone, and the ledger empty: each of the eight finds every view missing.
    for view in views_of(sandbox)[1:]:
        control("DELETE", sandbox, f"views/{APP}/{TABLE}/{view['view_id']}")
    from adsync.sync.store import bitable_views

    with services.store.begin() as conn:
        conn.execute(bitable_views.delete())
    services.store.engine.dispose()
    import adsync.cli.views  # noqa: F401 - imported once here, inherited by the children
    import adsync.sync.views  # noqa: F401

    ctx = multiprocessing.get_context("fork")
    out, barrier = ctx.Queue(), ctx.Barrier(8)
    days = [end - timedelta(days=n) for n in range(4)]
    jobs = [*days, None, None, None, None]  # four syncs of four dates, four `adsync views`
    procs = [ctx.Process(target=_keep_views, args=(env, d, barrier, out)) for d in jobs]
    for p in procs:
        p.start()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    services.close()
    assert sorted(results) == sorted([("sync", "ok")] * 4 + [("views", 0)] * 4), results
    assert account_views(sandbox) == {a: [n] for a, n in accounts.items()}
    assert sandbox.stats("feishu")["views_created"] == 2 * len(accounts)  # before, and once now
    report(
        f"views: 8 processes at once (4 syncs, 4 `adsync views`): {len(accounts)} views made once"
    )


# -- the platform's limits ----------------------------------------------------------------------


def _caller(settings: Any) -> Any:
    from adsync.sync.feishu import FeishuCaller, make_client

    return FeishuCaller(make_client(settings), base_delay=0.01)


def _refused(caller: Any, fn: Any, request: Any) -> int:
    from adsync.sync.feishu import FeishuError

    with pytest.raises(FeishuError) as caught:
        caller.call("a view call", fn, request)
    return caught.value.code


def test_the_sandbox_refuses_views_the_platform_refuses(sandbox: Sandbox, settings: Any) -> None:
    from lark_oapi.api.bitable.v1 import (
        AppTableViewProperty,
        AppTableViewPropertyFilterInfo,
        AppTableViewPropertyFilterInfoCondition,
        DeleteAppTableViewRequest,
        GetAppTableViewRequest,
    )

    sandbox.reset(feishu={"max_views": 3, "table_fields": [
        {"field_name": "账户ID", "type": 1}, {"field_name": "日期", "type": 5}]})  # fmt: skip
    caller = _caller(settings)
    api = caller.client.bitable.v1.app_table_view

    def create(name: str, kind: str = "grid") -> Any:
        body = ReqView.builder().view_name(name).view_type(kind).build()
        return (
            CreateAppTableViewRequest.builder()
            .app_token(APP)
            .table_id(TABLE)
            .request_body(body)
            .build()
        )

    assert _refused(caller, api.create, create("x" * 101)) == 1254022  # 100 characters at most
    assert _refused(caller, api.create, create("门店[A]")) == 1254022  # no [ ]
    assert _refused(caller, api.create, create(" ")) == 1254021
    assert _refused(caller, api.create, create("表格")) == 1254020  # the default view's name
    assert _refused(caller, api.create, create("甘特", "timeline")) == 1254019
    made = caller.call("create", api.create, create("x" * 100)).data.view
    assert made.view_type == "grid" and len(made.view_name) == 100
    caller.call("create", api.create, create("第三个"))
    assert _refused(caller, api.create, create("第四个")) == 1254101  # 3 a table here (200 live)

    fields = sandbox.get(f"/_sandbox/feishu/tables/{APP}/{TABLE}")["fields"]
    ids = {f["field_name"]: f["field_id"] for f in fields}

    def patch(view_id: str, field_id: str, operator: str, value: str) -> Any:
        cond = AppTableViewPropertyFilterInfoCondition.builder().field_id(field_id)
        flt = (
            AppTableViewPropertyFilterInfo.builder()
            .conjunction("and")
            .conditions([cond.operator(operator).value(value).build()])
        )
        body = PatchAppTableViewRequestBody.builder().property(
            AppTableViewProperty.builder().filter_info(flt.build()).build()
        )
        return (
            PatchAppTableViewRequest.builder()
            .app_token(APP)
            .table_id(TABLE)
            .view_id(view_id)
            .request_body(body.build())
            .build()
        )

    view = made.view_id
    assert _refused(caller, api.patch, patch(view, "fldNoSuchField", "is", '["1"]')) == 1254044
    assert _refused(caller, api.patch, patch(view, ids["账户ID"], "matches", '["1"]')) == 1254018
    assert _refused(caller, api.patch, patch(view, ids["账户ID"], "is", "1")) == 1254018
    assert _refused(caller, api.patch, patch(view, ids["日期"], "isNot", '["Today"]')) == 1254018
    assert (
        _refused(caller, api.patch, patch("vewNoSuchView", ids["账户ID"], "is", '["1"]')) == 1254042
    )
    caller.call("patch", api.patch, patch(view, ids["账户ID"], "is", '["1700000000000000001"]'))
    got = caller.call(
        "get",
        api.get,
        GetAppTableViewRequest.builder().app_token(APP).table_id(TABLE).view_id(view).build(),
    ).data.view
    [cond] = got.property.filter_info.conditions
    assert (cond.field_id, cond.operator, cond.field_type) == (ids["账户ID"], "is", 1)
    assert json.loads(cond.value) == ["1700000000000000001"] and cond.condition_id

    def listing(size: int) -> Any:
        builder = ListAppTableViewRequest.builder().app_token(APP).table_id(TABLE)
        return builder.page_size(size).build()

    assert _refused(caller, api.list, listing(101)) == 99992402  # 100 a page at most
    page = caller.call("list", api.list, listing(2)).data
    assert page.has_more and page.total == 3 and len(page.items) == 2
    assert all(item.property is None for item in page.items)  # list answers no property

    def delete(view_id: str) -> Any:
        return (
            DeleteAppTableViewRequest.builder().app_token(APP).table_id(TABLE).view_id(view_id)
        ).build()

    for item in views_of(sandbox)[:-1]:
        caller.call("delete", api.delete, delete(item["view_id"]))
    assert _refused(caller, api.delete, delete(views_of(sandbox)[0]["view_id"])) == 1254008


def test_a_long_account_name_and_a_full_table_are_met_without_failing_the_sync(
    services: Services, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    services.tokens.authorize(sandbox.auth_code())  # what the default user grants (again below)
    accounts = granted(sandbox)
    # Room for every view but one (the table's default view counts).
    sandbox.reset(feishu={"max_views": len(accounts)})
    services.tokens.authorize(sandbox.auth_code())
    assert granted(sandbox) == accounts
    first = sorted(accounts)[0]
    long_name = "01门店[旗舰]" + "很长的名字" * 24  # 128 characters, and brackets
    sandbox.post("/_sandbox/oceanengine/accounts", {"rename": {first: long_name}})
    result = sync(services)  # ok: the rows are written, the views are a warning
    [warning] = [w for w in result.warnings if "views" in w]
    assert "1254101" in warning and "delete views nobody uses" in warning
    made = account_views(sandbox)
    assert len(made) == len(accounts) - 1
    expected = ("01门店(旗舰)" + "很长的名字" * 24)[:100]  # [ ] replaced, cut at 100 characters
    assert made[first] == [expected]

    doc = run_views(cli, env)
    assert doc["exit_code"] == 1  # partly failed
    failed = [v for v in doc["views"] if v["state"] == "failed"]
    assert len(failed) == 1 and "200, 1254101" in failed[0]["note"]
    # Someone deletes the default view: there is room, and `adsync views` makes the last one.
    control("DELETE", sandbox, f"views/{APP}/{TABLE}/{views_of(sandbox)[0]['view_id']}")
    doc = run_views(cli, env)
    assert doc["exit_code"] == 0
    assert sorted(v["state"] for v in doc["views"]) == ["created"] + ["ok"] * (len(accounts) - 1)
    assert len(account_views(sandbox)) == len(accounts)
    assert not any("views" in w for w in sync(services).warnings)


def test_adsync_views_before_the_first_sync_says_the_sync_makes_them(
    authorized: Services, env: dict[str, str], cli: Any
) -> None:
    done = cli(["views"], env)
    assert done.returncode == 0, done.stderr
    assert "the first sync makes the views" in done.stdout
    bare = {k: v for k, v in env.items() if k != "FEISHU_BITABLE_APP_TOKEN"}
    refused = cli(["views"], bare)
    assert refused.returncode == 2 and "FEISHU_BITABLE_APP_TOKEN" in refused.stderr


def test_a_view_call_that_fails_is_a_warning_and_the_next_sync_makes_the_views(
    authorized: Services, sandbox: Sandbox
) -> None:
    sandbox.faults(feishu={"scripted": [{"path": "/views", "code": 1254002, "times": 1}]})
    first = sync(authorized)  # the rows are written: the run is ok
    assert first.created > 0 and first.view_changes == []
    [warning] = [w for w in first.warnings if "views" in w]
    assert "1254002" in warning and "run `adsync views` to try again" in warning
    assert account_views(sandbox) == {}
    second = sync(authorized)  # the ledger knows they are missing: made now
    assert len(second.view_changes) == len(granted(sandbox))
    assert not any("views" in w for w in second.warnings)
    assert account_views(sandbox) == {a: [n] for a, n in granted(sandbox).items()}


def test_a_create_retried_after_its_answer_was_lost_finds_the_view_it_made(
    authorized: Services, sandbox: Sandbox
) -> None:
    """The caller retries a create that got no answer; the platform made the view the first
    time and answers the retry 1254020: the unfiltered view of that name is ours."""
    from adsync.sync.routing import TableSet
    from adsync.sync.views import ViewKeeper, _TableWork

    sync(authorized)
    made = control("POST", sandbox, f"views/{APP}/{TABLE}", {"view_name": "新门店"})["view"]
    keeper = ViewKeeper(TableSet(authorized.settings, authorized.store))
    field_id = keeper._account_field(TABLE)
    work = _TableWork(TABLE, "广告日报", field_id, {}, [], {}, set())
    assert keeper._create_view(work, "新门店", "新门店", "1700000000000000009") == (
        made["view_id"],
        "新门店",
    )
    # A person's view of that name (filtered on something of theirs) is not ours: another name.
    theirs = control(
        "POST",
        sandbox,
        f"views/{APP}/{TABLE}",
        {"view_name": "老门店", "filter": {"账户名称": "x"}},
    )["view"]
    view_id, name = keeper._create_view(work, "老门店", "老门店", "1700000000000000009")
    assert view_id != theirs["view_id"] and name == "老门店 (1700000000000000009)"


def test_the_morning_run_makes_again_a_view_deleted_by_hand_with_one_list_a_table(
    authorized: Services, sandbox: Sandbox
) -> None:
    sync(authorized)
    accounts = granted(sandbox)
    gone = sorted(accounts)[0]
    [view] = [v for v in views_of(sandbox) if v["view_name"] == accounts[gone]]
    control("DELETE", sandbox, f"views/{APP}/{TABLE}/{view['view_id']}")
    before = view_calls(sandbox)
    morning = Runner(authorized).run(yesterday(), yesterday(), trigger="schedule")
    assert morning.status == "ok", (morning.error, morning.warnings)
    assert any(gone in line and "created" in line for line in morning.view_changes)
    assert account_views(sandbox)[gone] == [accounts[gone]]
    assert len(views_of(sandbox)) == len(accounts) + 1  # nothing else made twice
    # One listing, one read of the table's default view (not adsync's), the create and its
    # filter: adsync's own views are trusted by id, not read again.
    assert view_calls(sandbox) - before == 4
    again = Runner(authorized).run(yesterday(), yesterday(), trigger="schedule")
    assert again.view_changes == []
