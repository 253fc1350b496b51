"""The operator's first day, tried as a new user would: each item a CLI run with its exit code
and its message (issue 10, items 10-19), against the sandbox over real HTTP on both backends."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from adsync.bot.actions import Actions, Caller
from adsync.bot.cards import to_text
from adsync.bot.commands import History, Summary
from adsync.sync.causes import causes_line, collapse
from adsync.sync.config import load_settings, settings_fields
from adsync.sync.runner import Runner
from adsync.sync.store import Store, runs

from .conftest import Sandbox, run_cli

ROOT = Path(__file__).resolve().parent.parent
CALLER = Caller("ou_operator", "oc_sandbox_reports")


def today() -> date:
    return datetime.now(ZoneInfo("Asia/Shanghai")).date()


def run_count(db_url: str) -> int:
    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(runs)).scalar_one())
    finally:
        store.dispose()


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


# -- 10: the sandbox hands out its own .env ------------------------------------------------------


def test_the_sandbox_prints_a_ready_env_and_adsync_runs_on_it_without_reading_code(
    tmp_path: Path, cli: Any
) -> None:
    env_file = tmp_path / "sandbox.env"
    proc = subprocess.Popen(
        [sys.executable, "-m", "adsync", "sandbox", "--port", "0", "--write-env", str(env_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["sandbox"]
        printed = []
        while not (line := proc.stdout.readline()).startswith("# written to"):
            assert line, "the sandbox stopped before printing its .env"
            printed.append(line)
        block = "".join(printed).strip() + "\n"
        assert f"OCEANENGINE_API_BASE={url}" in block and f"FEISHU_DOMAIN={url}" in block
        assert env_file.read_text(encoding="utf-8") == block  # the same block, written
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # owner-only: it holds secrets
        # A new operator with nothing but that file: authorize, sync, check everything.
        env = {
            "ADSYNC_ENV_FILE": str(env_file),
            "ADSYNC_DATA_DIR": str(tmp_path / "data"),
            "ADSYNC_RATE_LIMIT": "200",
            "ADSYNC_BITABLE_WRITE_GAP": "0",
        }
        from adsync.cli.demo import browser_authorize

        link = json.loads(cli(["auth", "url", "--json"], env).stdout)["auth_url"]
        assert cli(["auth", "code", browser_authorize(link)], env).returncode == 0
        synced = cli(["sync", "yesterday"], env)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        doctor = cli(["doctor"], env)
        assert doctor.returncode == 0 and "all checks passed" in doctor.stdout, doctor.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_write_env_never_overwrites_an_operators_own_env(tmp_path: Path) -> None:
    mine = tmp_path / ".env"
    mine.write_text("OCEANENGINE_APP_SECRET=the-real-one\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "adsync", "sandbox", "--port", "0", "--write-env", str(mine)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not overwriting" in result.stderr and "Traceback" not in result.stderr
    assert mine.read_text(encoding="utf-8") == "OCEANENGINE_APP_SECRET=the-real-one\n"


def test_env_example_has_every_setting_each_with_a_comment_and_loads_clean() -> None:
    example = ROOT / ".env.example"
    lines = example.read_text(encoding="utf-8").splitlines()
    assigned = {}
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if m:
            assigned[m.group(1)] = i
            assert lines[i - 1].startswith("#"), f"{m.group(1)} has no comment above it"
    declared = {name for name, _default, _doc in settings_fields()}
    assert declared <= set(assigned), sorted(declared - set(assigned))
    for name in ("ADSYNC_TABLE_ROLL", "ADSYNC_TABLE_NAME", "ADSYNC_TABLE_MAX_ROWS"):
        assert name in assigned  # the contract's (DESIGN.md) names too
    settings = load_settings({"ADSYNC_ENV_FILE": str(example)}, cwd=ROOT)
    assert settings.unknown == ()  # copying it as it is breaks nothing


# -- 12: a day not synced is not a collapse ------------------------------------------------------


def test_summary_of_a_day_not_synced_says_so_and_never_shows_minus_100_percent(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    yesterday = today() - timedelta(days=1)
    before = yesterday - timedelta(days=1)
    Runner(authorized).run(before - timedelta(days=1), before)  # the two days before: synced
    text = cli(["summary", "yesterday"], env)
    assert text.returncode == 0
    assert "not synced yet" in text.stdout and "-100" not in text.stdout
    assert f"adsync sync {yesterday}" in text.stdout
    doc = json.loads(cli(["summary", "yesterday", "--json"], env).stdout)
    assert doc["synced"] is False and doc["not_synced"] == [str(yesterday)]
    assert doc["cost_change"] is None and doc["accounts"] == []  # no account "fell to zero"
    card = to_text(Actions(authorized).execute(Summary(yesterday, yesterday), CALLER))
    assert "not synced yet" in card and "-100" not in card
    # A range partly synced: the missing day is named, nothing is compared.
    span = f"{before - timedelta(days=1)}..{yesterday}"
    partial = json.loads(cli(["summary", span, "--json"], env).stdout)
    assert partial["synced"] is True and partial["not_synced"] == [str(yesterday)]
    assert partial["cost_change"] is None
    assert all(a["cost_change"] is None for a in partial["accounts"])
    shown = cli(["summary", span], env).stdout
    assert f"not synced yet: {yesterday} (1 of 3 days)" in shown and "-100" not in shown
    card = to_text(
        Actions(authorized).execute(Summary(before - timedelta(days=1), yesterday), CALLER)
    )
    assert f"Not synced yet: {yesterday}" in card and "-100" not in card
    # Once synced, the day is compared as before.
    Runner(authorized).run(yesterday, yesterday)
    done = json.loads(cli(["summary", "--json"], env).stdout)
    assert done["synced"] and done["comparable"] and done["not_synced"] == []
    assert done["cost_change"] is not None


# -- 13: exit codes as the README says -----------------------------------------------------------


def test_sync_without_configuration_exits_2_records_no_run_and_creates_no_data(
    env: dict[str, str], tmp_path: Path, cli: Any
) -> None:
    bare = without(env, "OCEANENGINE_APP_ID", "OCEANENGINE_APP_SECRET", "FEISHU_APP_ID")
    result = cli(["sync"], bare)
    assert result.returncode == 2
    assert "OCEANENGINE_APP_ID, OCEANENGINE_APP_SECRET and FEISHU_APP_ID are not set" in (
        result.stderr
    )
    assert run_count(env["ADSYNC_DATABASE_URL"]) == 0  # no "failed" run in the history
    nothing = {"ADSYNC_DATA_DIR": str(tmp_path / "data")}  # a new machine, nothing set
    for args in (["sync"], ["history"], ["token", "status"], ["summary"], ["doctor"]):
        assert cli(args, nothing).returncode == 2, args
    assert not (tmp_path / "data").exists()  # nothing created ./data


def test_an_account_not_in_scope_exits_2_with_the_candidates_and_syncs_nothing(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    grant = sandbox.get("/_sandbox/oceanengine/grant")
    unknown = cli(["sync", "--account", "门店不存在"], env)
    assert unknown.returncode == 2 and 'no account in scope matches "门店不存在"' in unknown.stderr
    assert str(grant["account_ids"][0]) in unknown.stderr  # what there is instead
    several = cli(["sync", "--account", "菲象"], env)  # part of several names
    assert several.returncode == 2 and "matches" in several.stderr
    assert len(re.findall(r"^\s+\d{16,19}\s+菲象", several.stderr, re.M)) >= 2
    assert run_count(env["ADSYNC_DATABASE_URL"]) == 0
    listed = json.loads(cli(["accounts", "--json"], env).stdout)["accounts"]
    names = {a["id"]: a["name"] for a in listed}
    only = next(i for i, n in names.items() if n.startswith("本地推-ka"))
    part = names[only].split("-")[-1]  # part of one name, as in chat
    one = cli(["sync", "--account", part, "--json"], env)
    assert one.returncode == 0, one.stderr
    assert [a["account_id"] for a in json.loads(one.stdout)["accounts"]] == [only]


def test_dates_the_platform_refuses_exit_2_with_the_limit_not_account_failures(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    oldest = today() - timedelta(days=365)
    too_old = oldest - timedelta(days=1)
    result = cli(["sync", f"{too_old}..{too_old + timedelta(days=6)}"], env)
    assert result.returncode == 2
    assert f"only goes back to {oldest}" in result.stderr and "365 days" in result.stderr
    assert "run the same command again" not in result.stderr + result.stdout
    assert run_count(env["ADSYNC_DATABASE_URL"]) == 0
    assert sandbox.stats().get("calls", {}).get("report_promotion", 0) == 0
    assert cli(["sync", str(oldest)], env).returncode == 0  # the limit itself is fine


def test_an_unsupported_database_scheme_exits_2_naming_the_supported_ones(
    env: dict[str, str], cli: Any
) -> None:
    for url in ("mysql://adsync:s3cretpw@db/adsync", "mongodb+srv://x:s3cretpw@h/db"):
        result = cli(["token", "status"], {**env, "ADSYNC_DATABASE_URL": url})
        assert result.returncode == 2, url
        assert "SQLite or PostgreSQL" in result.stderr and "sqlite:///" in result.stderr
        assert "Traceback" not in result.stderr and "s3cretpw" not in result.stderr


@pytest.mark.parametrize(
    ("args", "unbuffered"),
    [(["--help"], False), (["token", "status"], False), (["token", "status"], True)],
)
def test_output_into_a_closed_pipe_ends_quietly(
    env: dict[str, str], args: list[str], unbuffered: bool
) -> None:
    # `adsync … | head` where head has already gone: the read end is closed before adsync
    # writes a byte, so the first write meets EPIPE every time — at the last flush (buffered),
    # or inside the command itself (unbuffered, as any output larger than the buffer).
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.Popen(
        [sys.executable, "-m", "adsync", *args],
        stdout=write_end,
        stderr=subprocess.PIPE,
        env={
            "PATH": os.environ.get("PATH", ""),
            **env,
            **({"PYTHONUNBUFFERED": "1"} if unbuffered else {}),
        },
        cwd=Path(env["ADSYNC_DATA_DIR"]).parent,
        text=True,
    )
    os.close(write_end)
    _out, err = proc.communicate(timeout=60)
    assert "BrokenPipe" not in err and "Traceback" not in err and "Exception" not in err, err
    assert proc.returncode == 141


# -- 14: history says why ------------------------------------------------------------------------


def test_history_says_why_each_run_failed_or_was_partial(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    granted = sandbox.get("/_sandbox/oceanengine/grant")["account_ids"]
    sandbox.post("/_sandbox/oceanengine/accounts", {"deny": [granted[1], granted[4]]})
    yesterday = today() - timedelta(days=1)
    assert Runner(authorized).run(yesterday, yesterday).status == "partial"
    sandbox.post("/_sandbox/oceanengine/revoke")
    assert Runner(authorized).run(yesterday, yesterday).status == "failed"
    doc = json.loads(cli(["history", "--json"], env).stdout)
    dead, partial = doc["runs"][:2]
    assert partial["why"] == "2 accounts: 40002 no permission for this account"
    assert partial["causes"][0]["count"] == 2 and "ADSYNC_ACCOUNTS" in partial["causes"][0]["fix"]
    assert {f["account_id"] for f in partial["failures"]} == {str(granted[1]), str(granted[4])}
    # One cause per dead authorization, named after its Ocean Engine login (there may be several).
    gone = f"{len(granted)} accounts: authorization of 本地推运营（沙盒） gone"
    assert dead["why"] == gone
    text = cli(["history"], env).stdout
    assert "2 accounts: 40002 no permission for this account" in text
    assert gone in text
    card = to_text(Actions(authorized).execute(History(5), CALLER))
    assert "2 accounts: 40002 no permission for this account" in card
    assert gone in card


# -- 15: doctor and the report chats -------------------------------------------------------------


def test_doctor_fails_for_a_report_chat_the_bot_is_not_in(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": "oc_sandbox_reports", "bot_member": False})
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": "oc_disbanded", "dissolved": True})
    chats = "oc_sandbox_reports,oc_no_such_chat,oc_disbanded"
    env = {**env, "FEISHU_REPORT_CHAT_IDS": chats, "FEISHU_ENCRYPT_KEY": "doctor-test-key"}
    result = cli(["doctor"], env)
    assert result.returncode == 1 and "all checks passed" not in result.stdout
    assert "✗ bot in oc_sandbox_reports: the bot is not a member" in result.stdout
    assert "Add bot" in result.stdout
    checks = {c["name"]: c for c in json.loads(cli(["doctor", "--json"], env).stdout)["checks"]}
    assert "232006" in checks["bot in oc_no_such_chat"]["detail"]
    assert "FEISHU_REPORT_CHAT_IDS" in checks["bot in oc_no_such_chat"]["fix"]
    assert "232009" in checks["bot in oc_disbanded"]["detail"]
    assert checks["Bitable writable"]["ok"] and checks["token"]["ok"]  # the rest is fine


def test_doctor_without_an_app_id_asks_the_platform_nothing_and_creates_no_data(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path, cli: Any
) -> None:
    bare = without(env, "OCEANENGINE_APP_ID", "ADSYNC_DATABASE_URL")
    result = cli(["doctor", "--json"], bare)
    assert result.returncode == 2
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["Ocean Engine app"]["ok"]
    assert checks["Ocean Engine reachable"]["skipped"] and checks["token"]["skipped"]
    assert "does not exist yet" in checks["database"]["detail"]
    assert sandbox.stats()["calls"] == {}  # not one call, so not one retry
    assert not Path(bare["ADSYNC_DATA_DIR"]).exists()


# -- 16: configuration errors, all at once -------------------------------------------------------


def test_every_bad_setting_is_named_at_once_with_its_source_and_form(
    env: dict[str, str], tmp_path: Path, cli: Any
) -> None:
    dotenv = tmp_path / "site.env"
    dotenv.write_text("PORT=abc\nADSYNC_LOOKBACK_DAYS=0\n", encoding="utf-8")
    result = cli(
        ["token", "status"],
        {**env, "ADSYNC_ENV_FILE": str(dotenv), "FEISHU_DOMAIN": "open.feishu.cn"},
    )
    assert result.returncode == 2
    assert "3 settings are wrong" in result.stderr
    assert (
        f"PORT is malformed: expected a port number 0-65535, like 8000 (got 'abc' from {dotenv})"
        in result.stderr
    )
    assert "ADSYNC_LOOKBACK_DAYS is malformed" in result.stderr
    assert "like https://open.feishu.cn (got 'open.feishu.cn' from the environment)" in (
        result.stderr
    )
    nowhere = cli(["token", "status"], {**env, "ADSYNC_ENV_FILE": str(tmp_path / "nope.env")})
    assert nowhere.returncode == 2
    assert f"ADSYNC_ENV_FILE points to {tmp_path / 'nope.env'}, which does not exist" in (
        nowhere.stderr
    )


# -- 17: the demo is the demo, whatever the operator configured ----------------------------------


def test_demo_ignores_a_hostile_env_file_toml_and_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "PORT=abc\nOCEANENGINE_API_BASE=http://127.0.0.1:9\nADSYNC_DATABASE_URL=mysql://x@h/d\n"
        "FEISHU_APP_ID=cli_someone_elses\nADSYNC_ACCOUNTS=not,ids\n",
        encoding="utf-8",
    )
    (tmp_path / "adsync.toml").write_text("this is [not toml", encoding="utf-8")
    hostile = {
        "ADSYNC_ENV_FILE": str(tmp_path / "missing.env"),
        "ADSYNC_CONFIG": str(tmp_path / "adsync.toml"),
        "FEISHU_DOMAIN": "not a url",
        "ADSYNC_TIMEZONE": "Mars/Olympus",
        "ADSYNC_LOG_FILE": "/proc/adsync-cannot-write-here/log",
        "OCEANENGINE_APP_SECRET": "the-operators-real-secret",
        "HTTP_PROXY": "http://127.0.0.1:9",  # the office proxy: never for loopback
        "http_proxy": "http://127.0.0.1:9",
    }
    result = run_cli(["demo"], hostile, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "▸ sync" in result.stdout and "accounts granted" in result.stdout
    # The report card, as the clock would post it (its title, not the table's name).
    assert re.search(r"(?m)^. 广告日报 · \d{4}-\d{2}-\d{2}$", result.stdout), result.stdout[-3000:]
    assert "the-operators-real-secret" not in result.stdout + result.stderr
    assert not (tmp_path / "data").exists()  # its state lived in a temporary directory


# -- 18: one date grammar ------------------------------------------------------------------------


def test_the_cli_reads_dates_as_the_chat_does(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    t = today()
    synced = json.loads(cli(["sync", "last", "3", "days", "--json"], env).stdout)
    assert (synced["start"], synced["end"]) == (str(t - timedelta(days=3)), str(t - timedelta(1)))
    day = t - timedelta(days=2)
    for words in ([f"{day:%m-%d}"], [f"{day.month}月{day.day}日"], [str(day)]):
        doc = json.loads(cli(["summary", *words, "--json"], env).stdout)
        assert (doc["start"], doc["end"]) == (str(day), str(day)), words
    week = json.loads(cli(["summary", "近7天", "--json"], env).stdout)
    assert (week["start"], week["end"]) == (str(t - timedelta(days=7)), str(t - timedelta(1)))
    first = t - timedelta(days=3)
    for span in (f"{first}..{t - timedelta(1)}", f"{first:%m-%d}至{t - timedelta(1):%m-%d}"):
        records = json.loads(cli(["records", span, "--json"], env).stdout)
        days = {r["key"].split("|")[0] for r in records["records"]}
        assert days == {str(first + timedelta(n)) for n in range(3)}, span
    bad = cli(["summary", "yesteday"], env)
    assert bad.returncode == 2 and "Did you mean yesterday?" in bad.stderr
    assert "2月11日" in bad.stderr  # the forms that work
    future = cli(["sync", "tomorrow"], env)
    assert future.returncode == 2 and "in the future" in future.stderr


# -- 19: failures speak once ---------------------------------------------------------------------


def test_an_outage_is_one_line_per_cause_in_the_output_the_log_and_the_card(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], tmp_path: Path, cli: Any
) -> None:
    granted = sandbox.get("/_sandbox/oceanengine/grant")["account_ids"]
    sandbox.faults(
        oceanengine={"error_rate": 1.0, "error_codes": [50000], "paths": ["local/report"]}
    )
    log_file = tmp_path / "run.log"
    result = cli(["sync", "yesterday"], {**env, "ADSYNC_LOG_FILE": str(log_file)})
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if "✗" in line]
    assert len(failures) == 1, result.stdout  # not one per account
    assert f"{len(granted)} accounts" in failures[0] and "50000" in failures[0]
    assert result.stdout.count("run the same command again") == 1
    logged = log_file.read_text(encoding="utf-8").splitlines()
    said = [line for line in logged if "50000" in line]
    assert len(said) == 1, said  # the run's log: one line per cause, with the count
    assert f"{len(granted)} of {len(granted)} accounts failed" in said[0]
    # Not a WARNING per account and attempt (70 calls here): the retries are INFO, and the
    # terminal already showed the cause, so the log does not shout it a second time.
    assert [line for line in logged if " WARNING " in line] == []
    from adsync.bot.commands import Sync

    yesterday = today() - timedelta(days=1)
    card = to_text(Actions(authorized).execute(Sync(yesterday, yesterday), CALLER))
    assert card.count("50000") == 1, card  # said once, above the table
    assert f"{len(granted)} of {len(granted)} accounts" in card


def test_mixed_causes_are_one_line_each_with_their_count() -> None:
    report = "Ocean Engine /open_api/v3.0/local/report/promotion/get/ failed"
    reasons = [
        f"{report}: 40002 no permission for this account (local_account_id 1 not authorized) "
        "[request_id a1]",
        f"{report}: 40002 no permission for this account (local_account_id 2 not authorized) "
        "[request_id b2]",
        f"{report}: 0 (no answer within 20s)",
    ]
    assert causes_line(reasons) == (
        "3 accounts: 40002 no permission for this account (2), no answer within 20s (1)"
    )
    assert collapse(["table 90% full", "table 90% full", "x"]) == ["table 90% full (×2)", "x"]


def test_a_sync_card_of_twenty_accounts_gone_says_it_once() -> None:
    from adsync.bot.cards import sync_card
    from adsync.sync.runner import AccountResult, RunResult

    day = today() - timedelta(days=1)
    result = RunResult(day, day, "chat", status="failed", run_id=7)
    gone = "the Ocean Engine authorization is gone: refresh token invalid"
    result.accounts = [AccountResult(f"17{i:014d}", f"门店{i}", "failed", gone) for i in range(3)]
    result.accounts += [
        AccountResult(f"18{i:014d}", f"门店{i}", "failed", "not fetched: authorization needed")
        for i in range(17)
    ]
    result.accounts += [
        AccountResult(
            "1900000000000001", "门店X", "failed", "Ocean Engine /p/ failed: 0 (no answer)"
        )
    ]
    card = sync_card(result, "en")
    text = to_text(card)
    assert text.count("authorization gone") == 1, text  # one line for twenty accounts
    assert "#1 20 of 21 accounts" in text and "#2 1 of 21 accounts" in text
    table = next(e for e in card["body"]["elements"] if e.get("tag") == "table")
    causes = [row["reason"] for row in table["rows"]]
    assert causes.count("#1") == 20 and causes.count("#2") == 1  # each account's, by number
