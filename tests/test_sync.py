"""Sync runs end to end: Ocean Engine sandbox → runner → Feishu sandbox Bitable, the local
copy and the ledger, on both storage backends, over real HTTP."""

from __future__ import annotations

import json
import multiprocessing
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from adsync.sync.leases import holding
from adsync.sync.runner import Progress, Runner
from adsync.sync.store import report_rows, runs
from adsync.sync.tables import day_lease

from .conftest import Sandbox

APP, TABLE = "bascnSandboxApp0001", "tblSandboxDaily01"


def today() -> date:
    return datetime.now(ZoneInfo("Asia/Shanghai")).date()


def truth(sandbox: Sandbox, start: date, end: date) -> dict[str, dict[str, Any]]:
    """key -> the platform's row (all metrics), for every granted account."""
    doc = sandbox.get(
        "/_sandbox/oceanengine/truth", start_date=start.isoformat(), end_date=end.isoformat()
    )
    granted = {str(i) for i in sandbox.get("/_sandbox/oceanengine/grant")["account_ids"]}
    out = {}
    for account in doc["accounts"]:
        account_id = str(account["local_account_id"])
        if account_id not in granted:
            continue
        for row in account["rows"]:
            key = f"{row['stat_time_day']}|{account_id}|{row['promotion_id']}"
            out[key] = {**row, "account_id": account_id, "account_name": account["account_name"]}
    return out


def table_records(sandbox: Sandbox, app: str = APP, table: str = TABLE) -> list[dict[str, Any]]:
    return [r["fields"] for r in sandbox.get(f"/_sandbox/feishu/tables/{app}/{table}")["records"]]


def refill_table(sandbox: Sandbox, snapshot: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Replace the table's records with ``rows``, keeping the fields of ``snapshot``: what a
    person editing the Bitable by hand (or the replaced scripts) can leave behind."""
    fields = [
        {k: f[k] for k in ("field_name", "type", "property") if f.get(k) is not None}
        for f in snapshot["fields"]
    ]
    sandbox.post(
        "/_sandbox/feishu/tables",
        {
            "app_token": APP,
            "table_id": TABLE,
            "fields": fields,
            "records": [{"fields": r} for r in rows],
        },
    )


def assert_table_is_truth(sandbox: Sandbox, start: date, end: date) -> int:
    expected = truth(sandbox, start, end)
    records = table_records(sandbox)
    keys = [r["同步键"] for r in records]
    assert len(keys) == len(set(keys)), "duplicate keys in the table"
    assert set(keys) == set(expected), "the table's keys differ from the platform's rows"
    for record in records:
        row = expected[record["同步键"]]
        assert record["单元ID"] == str(row["promotion_id"])  # exact, as text
        assert record["项目ID"] == str(row["project_id"])
        assert int(record["单元ID"]) > 2**53
        assert record["账户ID"] == row["account_id"]
        assert record["账户名称"] == row["account_name"]
        assert Decimal(str(record["消耗(元)"])) == Decimal(str(row["stat_cost"])).quantize(
            Decimal("0.01")
        )
        assert record["展示数"] == row["show_cnt"]
        assert record["点击数"] == row["click_cnt"]
        assert record.get("转化数", 0) == row["convert_cnt"]
        assert record.get("团购线索数", 0) == row["clue_pay_order_cnt"]
        if row["convert_cnt"]:
            expected_cc = (Decimal(str(row["stat_cost"])) / row["convert_cnt"]).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP
            )
            assert Decimal(str(record["转化成本(元)"])) == expected_cc
        else:
            assert "转化成本(元)" not in record
        day = date.fromisoformat(row["stat_time_day"])
        midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo("Asia/Shanghai"))
        assert record["日期"] == int(midnight.timestamp() * 1000)
    return len(records)


def _window(days: int = 3) -> tuple[date, date]:
    end = today() - timedelta(days=1)
    return end - timedelta(days=days - 1), end


def test_same_range_twice_is_exact_and_the_second_run_writes_nothing(
    authorized: Any, sandbox: Sandbox
) -> None:
    start, end = _window()
    first = Runner(authorized).run(start, end)
    assert first.status == "ok", first.error
    assert first.exit_code == 0
    n = assert_table_is_truth(sandbox, start, end)
    assert first.created == n > 0 and first.rows == n
    assert any(a.status == "no_data" for a in first.accounts)  # the sandbox's empty account
    writes = sandbox.stats("feishu")["writes"]
    second = Runner(authorized).run(start, end)
    assert second.status == "ok"
    assert (second.created, second.updated, second.deleted) == (0, 0, 0)
    assert second.unchanged == n
    assert sandbox.stats("feishu")["writes"] == writes  # not one write call
    assert assert_table_is_truth(sandbox, start, end) == n
    # The local copy holds every row, to the cent.
    with authorized.store.engine.connect() as conn:
        local = {r.sync_key: r for r in conn.execute(select(report_rows))}
    expected = truth(sandbox, start, end)
    assert set(local) == set(expected)
    for key, row in expected.items():
        assert Decimal(local[key].cost_cents) / 100 == Decimal(str(row["stat_cost"]))
        assert local[key].promotion_id == str(row["promotion_id"])


def test_one_account_refused_the_others_are_written(authorized: Any, sandbox: Sandbox) -> None:
    grant = sandbox.get("/_sandbox/oceanengine/grant")
    denied = str(grant["account_ids"][1])
    sandbox.post("/_sandbox/oceanengine/accounts", {"deny": [int(denied)]})
    start, end = _window(2)
    result = Runner(authorized).run(start, end)
    assert result.status == "partial" and result.exit_code == 1
    assert [a.account_id for a in result.failed] == [denied]
    assert "40002" in result.failed[0].reason
    written = {r["账户ID"] for r in table_records(sandbox)}
    assert denied not in written and len(written) >= 2
    expected = {k for k, v in truth(sandbox, start, end).items() if v["account_id"] != denied}
    assert {r["同步键"] for r in table_records(sandbox)} == expected
    with authorized.store.engine.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.id == result.run_id)).one()
    assert run.status == "partial" and denied in run.detail


def test_twenty_percent_transient_failures_on_both_platforms(
    services: Any, sandbox: Sandbox
) -> None:
    # Enough rows for many pages and write chunks on both platforms.
    sandbox.reset(oceanengine={"accounts": 10, "promotions_per_account": 20})
    services.tokens.authorize(sandbox.auth_code())
    authorized = services
    sandbox.faults(
        oceanengine={
            "error_rate": 0.2,
            "error_codes": [50000, 40100],
            "http_error_codes": [503],
            "paths": ["/open_api/v3.0/local/report"],
            "seed": 3,
        },
        feishu={
            "error_rate": 0.2,
            "error_codes": [1254291, 1254607, 1254290, 1255040],
            "http_error_codes": [429],
            "paths": ["/bitable/"],
            "seed": 5,
        },
    )
    start, end = _window(7)
    result = Runner(authorized).run(start, end)
    assert result.status == "ok", [a.reason for a in result.failed] + [result.error]
    faults = sandbox.faults()
    assert faults["oceanengine"]["injected"] > 0 and faults["feishu"]["injected"] > 0
    assert assert_table_is_truth(sandbox, start, end) == result.rows


def _sync_in_child(env: dict[str, str], start: date, end: date, out: Any) -> None:
    from adsync.sync.config import load_settings
    from adsync.sync.services import open_services

    services = open_services(load_settings(env, cwd=Path(env["ADSYNC_DATA_DIR"]).parent))
    result = Runner(services).run(start, end)
    out.put((result.status, result.error, [a.reason for a in result.failed]))


def test_overlapping_ranges_synced_by_two_processes_at_once(
    authorized: Any, sandbox: Sandbox, env: dict[str, str]
) -> None:
    # Latency makes the two runs really overlap in time.
    sandbox.faults(oceanengine={"latency_ms": 20}, feishu={"latency_ms": 10})
    end = today() - timedelta(days=1)
    ranges = [
        (end - timedelta(days=3), end - timedelta(days=1)),
        (end - timedelta(days=2), end),
    ]
    import adsync.sync.bitable  # noqa: F401 - imported once here, inherited by the children

    ctx = multiprocessing.get_context("fork")  # real processes, started in milliseconds
    authorized.store.engine.dispose()
    out = ctx.Queue()
    procs = [ctx.Process(target=_sync_in_child, args=(env, a, b, out)) for a, b in ranges]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert all(status == "ok" for status, _e, _f in results), results
    assert_table_is_truth(sandbox, end - timedelta(days=3), end)


def test_preexisting_duplicates_collapse_to_one_row(authorized: Any, sandbox: Sandbox) -> None:
    start, end = _window(1)
    Runner(authorized).run(start, end)
    snapshot = sandbox.get(f"/_sandbox/feishu/tables/{APP}/{TABLE}")
    records = [r["fields"] for r in snapshot["records"]]
    # What the replaced scripts left behind: the same day written again (twice, for some rows).
    doubled = records + records[:5] + records[:2]
    refill_table(sandbox, snapshot, doubled)
    result = Runner(authorized).run(start, end)
    assert result.status == "ok"
    assert result.deleted == len(records[:5]) + len(records[:2]) == 7
    assert result.created == 0
    assert_table_is_truth(sandbox, start, end)


def test_a_token_refused_mid_run_is_refreshed_once(authorized: Any, sandbox: Sandbox) -> None:
    sandbox.post("/_sandbox/oceanengine/expire", {"access": True})
    start, end = _window(1)
    result = Runner(authorized).run(start, end)
    assert result.status == "ok"
    assert sandbox.stats()["refresh_ok"] == 1
    assert_table_is_truth(sandbox, start, end)


def test_a_revoked_authorization_fails_the_run_with_the_link(
    authorized: Any, sandbox: Sandbox
) -> None:
    sandbox.post("/_sandbox/oceanengine/revoke")
    start, end = _window(1)
    result = Runner(authorized).run(start, end)
    assert result.status == "failed" and result.exit_code == 3
    # The result reaches chat cards: it says a person must authorize, and carries no link.
    assert result.needs_authorization and not result.auth_url
    assert table_records(sandbox) == []


def test_accounts_fetched_before_the_authorization_died_are_synced(
    authorized: Any, sandbox: Sandbox
) -> None:
    # Rows are written while the fetch goes on; when the grant is revoked mid-run, what was
    # fetched before is written and saved all the same: the run is partial (those accounts
    # synced), and still asks for the link.
    start, end = _window(3)
    everything = truth(sandbox, start, end)
    sandbox.faults(oceanengine={"latency_ms": 150})  # the first answer comes while others wait
    revoked: list[bool] = []

    def revoke_after_the_first_account(p: Progress) -> None:
        if p.last is not None and not revoked:
            revoked.append(True)
            sandbox.post("/_sandbox/oceanengine/revoke")

    result = Runner(authorized, progress=revoke_after_the_first_account).run(start, end)
    assert result.status == "partial" and result.needs_authorization and result.exit_code == 3
    [dead] = result.dead_chains
    assert "本地推运营（沙盒）" in dead.who and "authorization" in result.error
    assert sorted(dead.accounts) == sorted(a.label for a in result.accounts if a.status == "failed")
    ok = {a.account_id for a in result.accounts if a.status == "ok"}
    assert ok and any(a.status == "failed" for a in result.accounts)
    expected = {k for k, row in everything.items() if row["account_id"] in ok}
    records = table_records(sandbox)
    assert {r["同步键"] for r in records} == expected and len(records) == len(expected)
    assert result.created == len(expected)
    with authorized.store.engine.connect() as conn:
        assert {r.sync_key for r in conn.execute(select(report_rows))} == expected


def test_zero_accounts_is_a_failure_never_a_success(services: Any, sandbox: Sandbox) -> None:
    # A grant of 0 accounts is refused at the door; a grant can still reach no 本地推 account
    # (here a 巨量工作台 organisation that holds none), which is what this run finds.
    services.tokens.authorize(
        sandbox.auth_code(grants=[{"type": "CUSTOMER_ADMIN", "account_ids": []}])
    )
    result = Runner(services).run(*_window(1))
    assert result.status == "failed" and result.exit_code == 1
    assert "no accounts" in result.error
    with services.store.engine.connect() as conn:  # the morning that could not start is history
        run = conn.execute(select(runs).where(runs.c.id == result.run_id)).one()
    assert run.status == "failed" and "no accounts" in run.error


def test_an_overlapping_run_answers_already_running(authorized: Any, sandbox: Sandbox) -> None:
    start, end = _window(1)
    name = day_lease(authorized.settings, end)  # per Base, whichever table holds the date
    with holding(authorized.store, [name], "someone-else"):
        result = Runner(authorized).run(start, end, wait=0)
    assert result.status == "busy" and "already running" in result.error
    assert result.exit_code == 1


def test_single_account_sync(authorized: Any, sandbox: Sandbox) -> None:
    start, end = _window(1)
    only = next(iter(truth(sandbox, start, end).values()))["account_id"]
    result = Runner(authorized).run(start, end, account_ids=[only])
    assert [a.account_id for a in result.accounts] == [only]
    assert {r["账户ID"] for r in table_records(sandbox)} == {only}
    unknown = Runner(authorized).run(start, end, account_ids=["999"])
    assert unknown.status == "failed" and "not in scope" in unknown.error


def test_verify_finds_and_fixes_what_differs(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    start, end = _window(1)
    Runner(authorized).run(start, end)
    snapshot = sandbox.get(f"/_sandbox/feishu/tables/{APP}/{TABLE}")
    records = [r["fields"] for r in snapshot["records"]]
    damaged = [dict(r) for r in records[1:]]  # one row missing
    damaged[0]["消耗(元)"] = 1.0  # one row different
    damaged.append(dict(records[2]))  # one row duplicated
    refill_table(sandbox, snapshot, damaged)
    report = cli(["verify", str(end), "--json"], env)
    assert report.returncode == 1, report.stderr
    doc = json.loads(report.stdout)
    assert doc["missing"] == [records[0]["同步键"]]
    assert doc["different"] == [records[1]["同步键"]]
    assert doc["duplicated"] == [records[2]["同步键"]]
    fixed = cli(["verify", str(end), "--fix"], env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "repaired" in fixed.stdout
    assert_table_is_truth(sandbox, start, end)
    assert json.loads(cli(["verify", str(end), "--json"], env).stdout)["clean"]


def test_cli_sync_summary_accounts_records_fields(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    grant = sandbox.get("/_sandbox/oceanengine/grant")
    denied = str(grant["account_ids"][2])
    sandbox.post("/_sandbox/oceanengine/accounts", {"deny": [int(denied)]})
    result = cli(["sync", "yesterday"], env)
    assert result.returncode == 1, result.stderr
    assert "PARTIAL" in result.stdout and denied in result.stdout and "40002" in result.stdout
    assert f"/{len(grant['account_ids'])}]" in result.stderr  # plain progress lines, not a TTY
    yesterday = today() - timedelta(days=1)
    expected = [
        v for v in truth(sandbox, yesterday, yesterday).values() if v["account_id"] != denied
    ]
    summary = json.loads(cli(["summary", "--json"], env).stdout)
    total = sum(Decimal(str(v["stat_cost"])) for v in expected)
    assert Decimal(summary["totals"]["cost"]) == total.quantize(Decimal("0.01"))
    assert summary["totals"]["convert_cnt"] == sum(v["convert_cnt"] for v in expected)
    accounts = cli(["accounts"], env)
    assert accounts.returncode == 0 and denied in accounts.stdout and "failed" in accounts.stdout
    records = json.loads(cli(["records", "--json"], env).stdout)
    assert len(records["records"]) == len(expected)
    fields = cli(["fields"], env)
    assert "同步键" in fields.stdout and "消耗(元)" in fields.stdout
    text = cli(["summary"], env)
    assert "7-day spend" in text.stdout


def test_summary_figures_equal_the_platform_per_account_day_and_period(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    """The summary (summed by the database from the local copy) against the platform's own
    rows: totals, every account, the period before and each day of the 7-day trend."""
    yesterday = today() - timedelta(days=1)
    start, end = yesterday - timedelta(days=1), yesterday  # a 2-day period, 2 days before it
    first = yesterday - timedelta(days=7)
    synced = cli(["sync", f"{first}..{end}", "--json"], env)
    assert synced.returncode == 0, synced.stderr
    rows = truth(sandbox, first, end).values()

    def cost(keep: Any) -> Decimal:
        return sum((Decimal(str(v["stat_cost"])) for v in rows if keep(v)), Decimal(0)).quantize(
            Decimal("0.01")
        )

    def day_of(v: dict[str, Any]) -> date:
        return date.fromisoformat(str(v["stat_time_day"])[:10])

    summary = json.loads(cli(["summary", f"{start}..{end}", "--json"], env).stdout)
    assert Decimal(summary["totals"]["cost"]) == cost(lambda v: start <= day_of(v) <= end)
    assert summary["totals"]["rows"] == sum(1 for v in rows if start <= day_of(v) <= end)
    before = (start - timedelta(days=2), start - timedelta(days=1))
    assert Decimal(summary["previous"]["cost"]) == cost(
        lambda v: before[0] <= day_of(v) <= before[1]
    )
    assert summary["accounts"], "no accounts in the summary"
    for account in summary["accounts"]:
        mine = account["account_id"]
        assert Decimal(account["totals"]["cost"]) == cost(
            lambda v, a=mine: v["account_id"] == a and start <= day_of(v) <= end
        )
        assert account["totals"]["convert_cnt"] == sum(
            v["convert_cnt"] for v in rows if v["account_id"] == mine and start <= day_of(v) <= end
        )
        assert account["name"], "every account is named"
    assert [p["day"] for p in summary["trend"]] == [
        str(end - timedelta(days=n)) for n in range(6, -1, -1)
    ]
    for point in summary["trend"]:
        day = date.fromisoformat(point["day"])
        assert Decimal(point["cost"]) == cost(lambda v, d=day: day_of(v) == d)


@pytest.mark.parametrize("layout", ["legacy"])
def test_a_legacy_text_typed_table_is_mapped(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], layout: str, cli: Any
) -> None:
    legacy_fields = [
        {"field_name": "账户", "type": 1},
        {"field_name": "时间", "type": 1},
        {"field_name": "单元ID", "type": 1},
        {"field_name": "单元名称", "type": 1},
        {"field_name": "消耗(元)", "type": 1},
        {"field_name": "转化数", "type": 1},
        {"field_name": "转化成本", "type": 1},
        {"field_name": "团购线索数", "type": 1},
    ]
    sandbox.post(
        "/_sandbox/feishu/tables",
        {"app_token": APP, "table_id": TABLE, "fields": legacy_fields, "records": []},
    )
    env = {**env, "ADSYNC_BITABLE_FIELDS": "日期=时间,账户名称=账户,转化成本(元)=转化成本"}
    result = cli(["sync", "--json"], env)
    assert result.returncode == 0, result.stderr
    yesterday = today() - timedelta(days=1)
    expected = truth(sandbox, yesterday, yesterday)
    records = table_records(sandbox)
    assert len(records) == len(expected)
    for record in records:
        row = expected[record["同步键"]]
        assert record["时间"] == yesterday.isoformat()
        assert record["账户"] == row["account_name"]
        assert Decimal(record["消耗(元)"]) == Decimal(str(row["stat_cost"])).quantize(
            Decimal("0.01")
        )
        assert record.get("转化数", "0") == str(row["convert_cnt"])
    again = json.loads(cli(["sync", "--json"], env).stdout)
    assert again["created"] == 0 and again["updated"] == 0
