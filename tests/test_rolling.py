"""Rolling tables against the sandbox: its tables created through the API, its row limit set
small, real runs end to end, on both storage backends.

Each date's rows must be in exactly one table — the table of its period (``month``) or the
one it was placed in when it fitted (``full``) — and together the tables must hold exactly
the platform's rows.
"""

from __future__ import annotations

import json
import multiprocessing
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete

from adsync.bot.alerts import Notifier
from adsync.bot.clock import Clock
from adsync.bot.messenger import Messenger
from adsync.sync.config import load_settings
from adsync.sync.runner import Runner
from adsync.sync.services import Services, open_services
from adsync.sync.store import bitable_tables, table_dates
from adsync.sync.tables import Registry, current_table, period_end, period_of, table_name

from .conftest import Sandbox
from .test_sync import truth

APP, CONFIGURED = "bascnSandboxApp0001", "tblSandboxDaily01"
SH = ZoneInfo("Asia/Shanghai")
# A dense world: every account has every promotion every day (exactly 10 rows a day).
DENSE = {"accounts": 2, "promotions_per_account": 5, "dense": True}


def today() -> date:
    return datetime.now(SH).date()


def month_boundary() -> date:
    """The last day of the month before last: it and the next days are always in the past."""
    first_of_last_month = today().replace(day=1) - timedelta(days=1)
    return first_of_last_month.replace(day=1) - timedelta(days=1)


def base_tables(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    """name -> {table_id, name, records} for every table of the Base."""
    return {t["name"]: t for t in sandbox.get(f"/_sandbox/feishu/tables/{APP}")["tables"]}


def keys_in(sandbox: Sandbox, table_id: str) -> list[str]:
    records = sandbox.get(f"/_sandbox/feishu/tables/{APP}/{table_id}")["records"]
    return [r["fields"].get("同步键", "") for r in records]


def assert_one_home_per_date(sandbox: Sandbox, expected: set[str]) -> dict[str, list[str]]:
    """Every expected key once, in one table; no date split across tables. Returns the keys
    of each table (by name)."""
    by_table = {name: keys_in(sandbox, t["table_id"]) for name, t in base_tables(sandbox).items()}
    everything = [k for keys in by_table.values() for k in keys if k]
    assert len(everything) == len(set(everything)), "a key is stored twice"
    assert set(everything) == expected
    homes: dict[str, set[str]] = {}
    for name, keys in by_table.items():
        for key in keys:
            homes.setdefault(key.split("|")[0], set()).add(name)
    split = {d: sorted(t) for d, t in homes.items() if len(t) > 1}
    assert not split, f"dates split across tables: {split}"
    return by_table


def rolling_services(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path, **extra: str | None
) -> Services:
    values = {**env, **{k: v for k, v in extra.items() if v is not None}}
    for key in [k for k, v in extra.items() if v is None]:
        values.pop(key, None)
    services = open_services(load_settings(values, cwd=tmp_path))
    services.tokens.authorize(sandbox.auth_code())
    return services


def rolling_env(env: dict[str, str], **extra: str | None) -> dict[str, str]:
    values = {**env, **{k: v for k, v in extra.items() if v is not None}}
    for key in [k for k, v in extra.items() if v is None]:
        values.pop(key, None)
    return values


def day_keys(keys: set[str], *days: date) -> set[str]:
    wanted = {d.isoformat() for d in days}
    return {k for k in keys if k.split("|")[0] in wanted}


# -- periods and names --------------------------------------------------------------------------


def test_periods_and_names_of_rolled_tables() -> None:
    day = date(2026, 2, 11)
    assert [period_of(day, r) for r in ("month", "quarter", "year", "full")] == [
        "2026-02",
        "2026-Q1",
        "2026",
        "full",
    ]
    assert period_end("2026-02") == date(2026, 2, 28)
    assert period_end("2026-12") == date(2026, 12, 31)
    assert period_end("2026-Q4") == date(2026, 12, 31)
    assert period_end("2026") == date(2026, 12, 31)
    assert period_end("full") is None
    template = "本地推日报 {period}"
    assert table_name(template, "2026-02", 1) == "本地推日报 2026-02"
    assert table_name(template, "2026-02", 2) == "本地推日报 2026-02 #2"
    assert table_name(template, "full", 3) == "本地推日报 #3"


# -- month ------------------------------------------------------------------------------------


def test_a_backfill_across_a_month_boundary_lands_each_date_in_its_months_table(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.reset(oceanengine=DENSE)
    services = rolling_services(
        env, sandbox, tmp_path, ADSYNC_TABLE_ROLL="month", FEISHU_BITABLE_TABLE_ID=None
    )
    boundary = month_boundary()
    start, end = boundary - timedelta(days=1), boundary + timedelta(days=2)
    older, newer = f"本地推日报 {start:%Y-%m}", f"本地推日报 {end:%Y-%m}"
    try:
        result = Runner(services).run(start, end)
        assert result.status == "ok", result.error
        expected = set(truth(sandbox, start, end))
        by_table = assert_one_home_per_date(sandbox, expected)
        assert set(by_table[older]) == day_keys(expected, start, boundary)
        assert set(by_table[newer]) == day_keys(
            expected, *(end - timedelta(days=n) for n in (0, 1))
        )
        assert by_table["广告日报"] == []  # the Base's own table: not configured, not touched
        assert sorted(e.name for e in result.table_events) == [older, newer]
        assert {e.kind for e in result.table_events} == {"started"}
        assert all(e.link.endswith(f"?table={e.table_id}") for e in result.table_events)
        stats = sandbox.stats("feishu")
        assert stats["tables_created"] == 2
        assert stats["calls"].get("POST /open-apis/bitable/v1/apps/<app_token>/tables/<table_id>/fields", 0) == 0  # fmt: skip

        # Last year's (well, an earlier month's) date goes to its own month's table, never to
        # the newest one; the same range again writes nothing.
        before = boundary - timedelta(days=5)
        again = Runner(services).run(before, before)
        assert again.status == "ok" and again.table_events == []
        expected |= set(truth(sandbox, before, before))
        by_table = assert_one_home_per_date(sandbox, expected)
        assert day_keys(expected, before) <= set(by_table[older])
        writes = sandbox.stats("feishu")["writes"]
        same = Runner(services).run(start, end)
        assert (same.created, same.updated, same.deleted) == (0, 0, 0)
        assert sandbox.stats("feishu")["writes"] == writes
        homes = Registry(services.store, APP).homes()
        ids = {n: t["table_id"] for n, t in base_tables(sandbox).items()}
        assert {d: h.table_id for d, h in homes.items()} == {
            **{d: ids[older] for d in (before, start, boundary)},
            **{d: ids[newer] for d in (end - timedelta(days=1), end)},
        }
    finally:
        services.close()


def test_after_upgrading_dates_synced_before_stay_in_the_configured_table(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.reset(oceanengine=DENSE)
    boundary = month_boundary()
    start, end = boundary, boundary + timedelta(days=1)  # two months, one table before
    services = rolling_services(env, sandbox, tmp_path)
    try:
        assert Runner(services).run(start, end).status == "ok"
        with services.store.begin() as conn:  # the database as it was before rolling tables
            conn.execute(delete(table_dates))
            conn.execute(delete(bitable_tables))
    finally:
        services.close()
    month = rolling_services(env, sandbox, tmp_path, ADSYNC_TABLE_ROLL="month")
    try:
        again = Runner(month).run(start, end)
        assert again.status == "ok", again.error
        assert (again.created, again.updated, again.deleted) == (0, 0, 0)
        assert again.table_events == [] and sandbox.stats("feishu")["tables_created"] == 0
        assert_one_home_per_date(sandbox, set(truth(sandbox, start, end)))
        homes = Registry(month.store, APP).homes([start, end])
        assert {h.table_id for h in homes.values()} == {CONFIGURED}
    finally:
        month.close()


def test_a_table_made_by_a_person_is_used_only_if_its_fields_map(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path, cli: Any
) -> None:
    sandbox.reset(oceanengine=DENSE)
    day = month_boundary()
    name = f"本地推日报 {day:%Y-%m}"
    # A person made the month's table with 日期 as a number: adsync must not write into it.
    sandbox.post(
        "/_sandbox/feishu/tables",
        {
            "app_token": APP,
            "table_id": "tblMadeByHand01",
            "name": name,
            "fields": [{"field_name": "同步键", "type": 1}, {"field_name": "日期", "type": 2}],
        },
    )
    month = rolling_env(env, ADSYNC_TABLE_ROLL="month", FEISHU_BITABLE_TABLE_ID=None)
    authorize = cli(["auth", "code", sandbox.auth_code()], month)
    assert authorize.returncode == 0, authorize.stderr
    refused = cli(["sync", str(day)], month)
    assert refused.returncode == 1
    text = refused.stdout + refused.stderr
    assert name in text and "tblMadeByHand01" in text and "日期" in text and "number" in text
    assert keys_in(sandbox, "tblMadeByHand01") == []
    assert name in base_tables(sandbox) and len(base_tables(sandbox)) == 2  # nothing created

    # Its fields fixed (日期 a date field): it is used as it is, its missing fields created.
    sandbox.post(
        "/_sandbox/feishu/tables",
        {
            "app_token": APP,
            "table_id": "tblMadeByHand01",
            "name": name,
            "fields": [{"field_name": "同步键", "type": 1}, {"field_name": "日期", "type": 5}],
        },
    )
    synced = cli(["sync", str(day), "--json"], month)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    events = json.loads(synced.stdout)["table_events"]
    assert [(e["kind"], e["table_id"]) for e in events] == [("found", "tblMadeByHand01")]
    assert set(keys_in(sandbox, "tblMadeByHand01")) == set(truth(sandbox, day, day))
    assert len(base_tables(sandbox)) == 2


# -- full -------------------------------------------------------------------------------------


def test_full_rolls_exactly_when_the_next_date_would_overflow_and_never_splits_a_date(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.reset(oceanengine=DENSE, feishu={"max_rows": 100})
    services = rolling_services(env, sandbox, tmp_path, ADSYNC_TABLE_MAX_ROWS="100")
    end = today() - timedelta(days=1)
    start = end - timedelta(days=10)  # 11 days x 10 rows: 100 fit the first table
    tenth = end - timedelta(days=1)
    try:
        result = Runner(services).run(start, end)
        assert result.status == "ok", result.error
        expected = set(truth(sandbox, start, end))
        assert len(expected) == 110
        by_table = assert_one_home_per_date(sandbox, expected)
        assert len(by_table["广告日报"]) == 100  # filled to exactly its limit, not before
        assert set(by_table["本地推日报 #2"]) == day_keys(expected, end)
        assert [(e.kind, e.name) for e in result.table_events] == [("started", "本地推日报 #2")]
        assert "1254103" not in sandbox.stats("feishu")["errors"]  # never asked to overflow

        # A new account makes a date of the full table grow: the date moves whole.
        sandbox.post("/_sandbox/oceanengine/accounts", {"add": 1})
        services.tokens.authorize(sandbox.auth_code())
        grown = Runner(services).run(tenth, tenth)
        assert grown.status == "ok", grown.error
        expected = (expected - day_keys(expected, tenth)) | set(truth(sandbox, tenth, tenth))
        by_table = assert_one_home_per_date(sandbox, expected)
        assert len(day_keys(expected, tenth)) == 15
        assert len(by_table["广告日报"]) == 90
        assert set(by_table["本地推日报 #2"]) == day_keys(expected, tenth, end)
        registry = Registry(services.store, APP)
        homes = registry.homes([tenth])
        assert homes[tenth].moving_from is None
        assert homes[tenth].table_id == base_tables(sandbox)["本地推日报 #2"]["table_id"]
        assert "1254103" not in sandbox.stats("feishu")["errors"]
        current = current_table(registry.tables(), "full", today())
        assert current is not None and current.name == "本地推日报 #2" and current.rows == 25
    finally:
        services.close()


def test_a_date_larger_than_a_whole_table_is_refused_with_what_to_do(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.reset(oceanengine=DENSE, feishu={"max_rows": 5})
    services = rolling_services(env, sandbox, tmp_path, ADSYNC_TABLE_MAX_ROWS="5")
    day = today() - timedelta(days=1)
    try:
        result = Runner(services).run(day, day)  # 10 rows; a table holds 5
        assert result.status == "failed" and result.exit_code == 1
        assert "10 rows, more than one table holds" in result.error
        assert "ADSYNC_TABLE_MAX_ROWS" in result.error + result.hint
        assert keys_in(sandbox, CONFIGURED) == [] and len(base_tables(sandbox)) == 1
        assert sandbox.stats("feishu")["tables_created"] == 0
        assert Registry(services.store, APP).homes([day]) == {}
    finally:
        services.close()


# -- verify, deleted tables ---------------------------------------------------------------------


def _remove_record(sandbox: Sandbox, table_id: str, key: str) -> None:
    """A person deletes one row by hand (the table keeps its id and fields)."""
    snapshot = sandbox.get(f"/_sandbox/feishu/tables/{APP}/{table_id}")
    fields = [
        {k: f[k] for k in ("field_name", "type", "property") if f.get(k) is not None}
        for f in snapshot["fields"]
    ]
    records = [
        {"fields": r["fields"], "record_id": r["record_id"]}
        for r in snapshot["records"]
        if r["fields"].get("同步键") != key
    ]
    sandbox.post(
        "/_sandbox/feishu/tables",
        {
            "app_token": APP,
            "table_id": table_id,
            "name": snapshot["name"],
            "fields": fields,
            "records": records,
        },
    )


def test_verify_finds_a_row_deleted_by_hand_in_an_older_table(
    env: dict[str, str], sandbox: Sandbox, cli: Any
) -> None:
    sandbox.reset(oceanengine=DENSE)
    month = rolling_env(env, ADSYNC_TABLE_ROLL="month", FEISHU_BITABLE_TABLE_ID=None)
    assert cli(["auth", "code", sandbox.auth_code()], month).returncode == 0
    boundary = month_boundary()
    start, end = boundary - timedelta(days=1), boundary + timedelta(days=1)
    span = f"{start}..{end}"
    assert cli(["sync", span], month).returncode == 0
    older = base_tables(sandbox)[f"本地推日报 {start:%Y-%m}"]["table_id"]
    gone = sorted(day_keys(set(keys_in(sandbox, older)), start))[3]
    _remove_record(sandbox, older, gone)

    report = cli(["verify", span, "--json"], month)
    assert report.returncode == 1, report.stderr
    doc = json.loads(report.stdout)
    assert doc["missing"] == [gone] and not doc["different"] and not doc["duplicated"]
    assert len(doc["tables"]) == 2
    fixed = cli(["verify", span, "--fix"], month)
    assert fixed.returncode == 0 and "repaired" in fixed.stdout, fixed.stdout + fixed.stderr
    assert gone in keys_in(sandbox, older)
    assert_one_home_per_date(sandbox, set(truth(sandbox, start, end)))
    assert json.loads(cli(["verify", span, "--json"], month).stdout)["clean"]


def test_a_table_deleted_by_a_person_is_recreated_with_its_rows_and_the_group_is_told(
    env: dict[str, str], sandbox: Sandbox, cli: Any
) -> None:
    sandbox.reset(oceanengine=DENSE)
    month = rolling_env(env, ADSYNC_TABLE_ROLL="month", FEISHU_BITABLE_TABLE_ID=None)
    assert cli(["auth", "code", sandbox.auth_code()], month).returncode == 0
    boundary = month_boundary()
    start, end = boundary - timedelta(days=2), boundary + timedelta(days=1)
    assert cli(["sync", f"{start}..{end}"], month).returncode == 0
    name = f"本地推日报 {start:%Y-%m}"
    deleted = base_tables(sandbox)[name]["table_id"]
    kept = day_keys(set(truth(sandbox, start, end)), start, start + timedelta(days=1), boundary)
    started = [m for m in _cards(sandbox) if "new table" in m]
    assert len(started) == 2  # one message per table started, with its name
    assert any(name in m and deleted in m for m in started)

    assert sandbox.http.delete(f"{sandbox.url}/_sandbox/feishu/tables/{APP}/{deleted}").ok
    listing = json.loads(cli(["tables", "--json"], month).stdout)
    assert {t["table_id"]: t["status"] for t in listing["tables"]}[deleted] == "missing"
    doctor = json.loads(cli(["doctor", "--json"], month).stdout)
    check = next(c for c in doctor["checks"] if c["name"] == "Bitable tables")
    assert not check["ok"] and name in check["detail"] and "recreates" in check["fix"]

    # The next sync, of another date, notices it and writes the table again.
    synced = cli(["sync", str(end), "--json"], month)
    assert synced.returncode == 0, synced.stderr
    events = json.loads(synced.stdout)["table_events"]
    assert [(e["kind"], e["name"], e["replaces"]) for e in events] == [("recreated", name, deleted)]
    assert events[0]["rows"] == len(kept) and events[0]["dates"] == 3
    again = base_tables(sandbox)[name]["table_id"]
    assert again != deleted and set(keys_in(sandbox, again)) == kept
    assert_one_home_per_date(sandbox, set(truth(sandbox, start, end)))
    told = [m for m in _cards(sandbox) if "recreated" in m]
    assert len(told) == 1 and name in told[0] and again in told[0]
    cli(["sync", str(end)], month)
    assert len([m for m in _cards(sandbox) if "recreated" in m]) == 1  # once
    text = cli(["tables"], month).stdout
    assert name in text and again in text and f"→ {again}" in text  # the deleted one, replaced
    assert f"{boundary + timedelta(days=1)}..{end}" in text and "new days go here" not in text
    doctor = json.loads(cli(["doctor", "--json"], month).stdout)
    assert next(c for c in doctor["checks"] if c["name"] == "Bitable tables")["ok"]


def _cards(sandbox: Sandbox) -> list[str]:
    messages = sandbox.get("/_sandbox/feishu/messages", chat_id="oc_sandbox_reports")["messages"]
    return [json.dumps(m["content"], ensure_ascii=False) for m in messages if m["via"] != "user"]


# -- eight processes, one new period ------------------------------------------------------------


def _sync_one_day(env: dict[str, str], day: date, out: Any) -> None:
    services = open_services(load_settings(env, cwd=Path(env["ADSYNC_DATA_DIR"]).parent))
    try:
        result = Runner(services).run(day, day)
        out.put((str(day), result.status, result.error))
    finally:
        services.close()


def test_eight_processes_starting_the_same_new_period_create_one_table(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.reset(oceanengine=DENSE)
    month = rolling_env(env, ADSYNC_TABLE_ROLL="month", FEISHU_BITABLE_TABLE_ID=None)
    services = rolling_services(month, sandbox, tmp_path)
    first = month_boundary() + timedelta(days=1)  # the 1st of last month
    days = [first + timedelta(days=n) for n in range(8)]
    services.store.engine.dispose()
    import adsync.sync.routing  # noqa: F401 - imported once here, inherited by the children

    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_sync_one_day, args=(month, d, out)) for d in days]
    for p in procs:
        p.start()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    services.close()
    assert all(status == "ok" for _d, status, _e in results), results
    name = f"本地推日报 {first:%Y-%m}"
    assert sorted(base_tables(sandbox)) == sorted(["广告日报", name])
    assert sandbox.stats("feishu")["tables_created"] == 1
    assert_one_home_per_date(sandbox, set(truth(sandbox, days[0], days[-1])))


# -- told, not surprised ------------------------------------------------------------------------


def test_the_group_hears_once_of_a_new_table_and_once_a_week_before_a_table_fills(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.reset(oceanengine=DENSE, feishu={"max_rows": 100})
    services = rolling_services(env, sandbox, tmp_path, ADSYNC_TABLE_MAX_ROWS="100")
    settings = services.settings
    noon = datetime.combine(today(), datetime.min.time().replace(hour=12), SH)
    notifier = Notifier(settings, services.store, Messenger(settings), now=lambda: noon)
    clock = Clock(services, notifier, now=lambda: noon)
    end = today() - timedelta(days=1)

    def sync(first: int, last: int) -> None:
        result = Runner(services).run(end - timedelta(days=first), end - timedelta(days=last))
        assert result.status == "ok", result.error

    try:
        sync(11, 10)  # 20 of 100 rows at 10 a day: full in 8 days, nothing to say yet
        assert clock.table_notices() == []
        sync(9, 9)  # 30 rows: full in 7 days
        assert clock.table_notices() == ["数据表即将写满 · a table fills within a week"]
        assert clock.table_notices() == []
        sync(8, 8)  # 40 rows, 6 days: still the same table, warned once already
        assert clock.table_notices() == []
        warning = [m for m in _cards(sandbox) if "fills within a week" in m]
        assert len(warning) == 1 and "广告日报" in warning[0] and "30 / 100" in warning[0]
        assert f"?table={CONFIGURED}" in warning[0]  # a button to the table

        sync(7, 0)  # 8 more days: 6 fill the table, the last 2 start the next one
        assert clock.table_notices() == ["新数据表已启用 · a new table was started"]
        assert clock.table_notices() == []
        started = [m for m in _cards(sandbox) if "a new table was started" in m]
        second = base_tables(sandbox)["本地推日报 #2"]["table_id"]
        assert len(started) == 1 and "本地推日报 #2" in started[0]
        assert f"?table={second}" in started[0]
    finally:
        services.close()


pytestmark = pytest.mark.timeout(300)
