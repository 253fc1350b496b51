"""Honest outcomes when a Bitable write times out: the sandbox applies the write and answers
later than ADSYNC_HTTP_TIMEOUT (a slow platform). The run reads the rows back before calling
them failed: they are there, so the run is ok and says "written (confirmed after a timeout)" —
never "FAILED, 0 created". A write that really did not happen still fails, and says how many
rows are missing. Both storage backends."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from adsync.sync.runner import Runner

from .conftest import Sandbox
from .test_sync import assert_table_is_truth, table_records


def _yesterday() -> date:
    return datetime.now(ZoneInfo("Asia/Shanghai")).date() - timedelta(days=1)


def test_a_bitable_write_slower_than_the_timeout_is_confirmed_not_failed(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    day = _yesterday()
    # The platform writes at once and answers 1.5 s later; adsync waits 0.5 s per call.
    sandbox.faults(feishu={"answer_delay_ms": 1500, "paths": ["/records/batch_create"]})
    done = cli(["sync", str(day)], {**env, "ADSYNC_HTTP_TIMEOUT": "0.5"})
    sandbox.faults(feishu={})
    rows = assert_table_is_truth(sandbox, day, day)
    assert rows > 0
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Sync {day}: OK" in done.stdout and "FAILED" not in done.stdout
    assert f"{rows} created, 0 updated ({rows} written, confirmed after a timeout)" in done.stdout
    assert sandbox.stats("feishu")["faults_injected"] == 0  # answered late, never refused

    # The ledger (history, the card re-rendered from it) says the same.
    from adsync.bot import cards
    from adsync.sync.runner import AccountResult, RunResult, recent_runs

    (last,) = recent_runs(authorized, 1)
    assert last["status"] == "ok" and last["rows_created"] == rows
    detail = json.loads(last["detail"])
    assert detail["confirmed_after_timeout"] == rows
    assert any("confirmed after a timeout" in w for w in detail["warnings"])
    result = RunResult(day, day, "chat", status="ok", created=rows, confirmed_after_timeout=rows)
    result.accounts = [
        AccountResult(a["account_id"], a["name"], a["status"], rows=a["rows"])
        for a in detail["accounts"]
    ]
    for lang, words in (("en", "written (confirmed after a timeout)"), ("zh", "超时后回读确认")):
        assert words in json.dumps(cards.sync_card(result, lang), ensure_ascii=False)


def test_a_write_that_really_failed_is_still_a_failure_naming_the_missing_rows(
    authorized: Any, sandbox: Sandbox
) -> None:
    day = _yesterday()
    # A gateway error before the platform does anything: nothing is written.
    sandbox.faults(
        feishu={"error_rate": 1.0, "http_error_codes": [502], "paths": ["/records/batch_create"]}
    )
    result = Runner(authorized).run(day, day)
    sandbox.faults(feishu={})
    assert result.status == "failed"
    assert result.created == 0 and result.confirmed_after_timeout == 0
    assert "rows are not in" in result.error, result.error
    assert "sync the same dates again" in result.hint
    assert table_records(sandbox) == []
