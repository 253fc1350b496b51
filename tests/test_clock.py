"""The clock and the alerts, with time travelled honestly.

* "When is 07:00": a real BackgroundScheduler from ``build_scheduler`` in a process whose zone
  is UTC, under time-machine (ticking), running the real daily job against the sandbox.
* Everything hours or days apart (catch-up, retries, settle, 6-hour alert windows): the
  ``now`` seam of Clock and Notifier, every job run for real against the sandbox.
* Races: real processes (fork) and threads released together by a barrier.

Every test that takes the database runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
import tzlocal
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import insert, select

from adsync.bot import cards
from adsync.bot.alerts import Notifier, webhook_sign
from adsync.bot.clock import Clock, build_clock, build_scheduler
from adsync.bot.messenger import Messenger
from adsync.sandbox.feishu import hook_sign
from adsync.sync.config import load_settings
from adsync.sync.discovery import AccountsView, ListedAccount
from adsync.sync.feishu import TOKEN_CACHE
from adsync.sync.reports import Account
from adsync.sync.services import Services, open_services
from adsync.sync.store import Store, notifications, report_rows, runs, utcnow
from adsync.sync.summary import Anomaly, anomalies, seven_day_average

from .conftest import Sandbox, report

SH = ZoneInfo("Asia/Shanghai")
CHAT = "oc_sandbox_reports"
SECOND_CHAT = "oc_sandbox_second_team"


# -- the clock seam -----------------------------------------------------------------------------


class Now:
    """A settable "now" for Clock and Notifier (both read time only through it)."""

    def __init__(self, value: datetime) -> None:
        self.value = value

    def __call__(self) -> datetime:
        return self.value

    def at(self, day: date, hh: int, mm: int = 0) -> Now:
        self.value = datetime.combine(day, dtime(hh, mm), SH)
        return self

    def advance(self, **delta: float) -> Now:
        self.value += timedelta(**delta)
        return self


def at(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime.combine(day, dtime(hh, mm, ss), SH)


def make_clock(services: Any, now: Now | None = None, *, bot: bool = True) -> Clock:
    """What `adsync clock` builds, with the seam wired into both the clock and its notifier."""
    settings = services.settings
    messenger = Messenger(settings) if bot else None
    if now is None:
        return build_clock(services, messenger)
    return Clock(services, Notifier(settings, services.store, messenger, now=now), now=now)


# -- what reached the chat ----------------------------------------------------------------------


@dataclass
class Posted:
    message_id: str
    title: str
    template: str
    text: str  # the whole card, for "contains" checks
    versions: int
    content: dict[str, Any]


def posted(sandbox: Sandbox, chat_id: str = CHAT) -> list[Posted]:
    """Cards the bot posted in ``chat_id``, oldest first, as they look now (after updates)."""
    out = []
    for m in sandbox.get("/_sandbox/feishu/messages", chat_id=chat_id)["messages"]:
        if m["via"] == "user":
            continue
        header = (m["content"] or {}).get("header") or {}
        out.append(
            Posted(
                m["message_id"],
                header.get("title", {}).get("content", ""),
                header.get("template", ""),
                json.dumps(m["content"], ensure_ascii=False),
                len(m["versions"]),
                m["content"],
            )
        )
    return out


def reports(sandbox: Sandbox, chat_id: str = CHAT) -> list[Posted]:
    return [p for p in posted(sandbox, chat_id) if p.title.startswith("广告日报")]


def alerts_posted(sandbox: Sandbox, chat_id: str = CHAT) -> list[Posted]:
    return [p for p in posted(sandbox, chat_id) if not p.title.startswith("广告日报")]


def buttons(card: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("tag") == "button":
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return found


def button_urls(card: dict[str, Any]) -> list[str]:
    urls = []
    for b in buttons(card):
        behaviors = b.get("behaviors") or []
        urls += [x.get("default_url", "") for x in behaviors if x.get("type") == "open_url"]
        if b.get("url"):
            urls.append(b["url"])
    return urls


def all_runs(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return conn.execute(select(runs).order_by(runs.c.id)).all()


def record(store: Store, key: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(notifications).where(notifications.c.key == key)).first()
    return None if row is None else json.loads(row.detail)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def day(sandbox: Sandbox) -> date:
    """The business day of this test: today in Shanghai, pinned in the Ocean Engine sandbox so
    its "today" cannot move under the test at midnight."""
    today = datetime.now(SH).date()
    sandbox.post("/_sandbox/oceanengine/reset", {"today": today.isoformat()})
    return today


def authorize(services: Any, sandbox: Sandbox, day: date, **options: Any) -> list[str]:
    """A fresh Ocean Engine world (``options`` as the sandbox's reset takes) and a grant."""
    sandbox.post("/_sandbox/oceanengine/reset", {"today": day.isoformat(), **options})
    services.tokens.authorize(sandbox.auth_code())
    return [str(i) for i in sandbox.get("/_sandbox/oceanengine/grant")["account_ids"]]


@pytest.fixture
def world(services: Any, sandbox: Sandbox, day: date) -> Any:
    authorize(services, sandbox, day)
    return services


# -- the scheduler ------------------------------------------------------------------------------


def test_every_job_coalesces_runs_alone_has_hours_of_grace_and_the_explicit_zone(
    services: Any,
) -> None:
    scheduler = build_scheduler(make_clock(services, bot=False), blocking=False)
    scheduler.start(paused=True)  # job defaults are applied when jobs reach the job store
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
    assert set(jobs) == {
        "daily",
        "retries",
        "token_watchdog",
        "settle",
        "catch_up",
        "table_notices",
    }
    assert str(scheduler.timezone) == "Asia/Shanghai"
    for job in jobs.values():
        assert job.coalesce is True, job.id
        assert job.max_instances == 1, job.id
        # The 3.x default is 1 s: a 07:00 job is skipped if the process is busy at 07:00:01.
        assert job.misfire_grace_time is not None and job.misfire_grace_time >= 3600, job.id
    for job_id in ("daily", "retries", "token_watchdog", "settle", "table_notices"):
        assert str(jobs[job_id].trigger.timezone) == "Asia/Shanghai", job_id
    # 22:00 UTC is 06:00 in Shanghai: the next daily run is an hour away, not nine.
    evening = datetime(2026, 2, 15, 22, 0, tzinfo=UTC)
    first = jobs["daily"].trigger.get_next_fire_time(None, evening)
    assert first == datetime(2026, 2, 16, 7, 0, tzinfo=SH)
    assert first.astimezone(UTC) == datetime(2026, 2, 15, 23, 0, tzinfo=UTC)
    settle = jobs["settle"].trigger.get_next_fire_time(None, evening)
    assert settle == datetime(2026, 2, 16, 10, 30, tzinfo=SH)
    # The pitfall the explicit zone avoids: a bare trigger in a UTC process means 07:00 UTC.
    bare = CronTrigger(hour=7, minute=0, timezone="UTC").get_next_fire_time(None, evening)
    assert bare.astimezone(SH).hour == 15


def test_the_daily_job_fires_at_0700_shanghai_while_the_process_runs_in_utc(
    world: Any, sandbox: Sandbox, day: date
) -> None:
    """A real BackgroundScheduler and the real daily job, the machine zone forced to UTC, the
    clock travelled to 06:59:59 Shanghai and ticking: the job runs at 07:00 Shanghai
    (23:00 UTC the evening before), syncs, posts the report and records the day."""

    class Recording(Clock):
        """The real clock; it only notes when each job body started."""

        started: dict[str, datetime]

        def daily(self) -> Any:
            self.started.setdefault("daily", self.now())
            return super().daily()

        def catch_up(self) -> Any:
            self.started.setdefault("catch_up", self.now())
            return super().catch_up()

    settings = world.settings
    clock = Recording(world, Notifier(settings, world.store, Messenger(settings)))
    clock.started = {}
    events: list[Any] = []
    daily_done = threading.Event()

    def listen(event: Any) -> None:
        events.append(event)
        if event.job_id == "daily":
            daily_done.set()

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "UTC")
        time.tzset()
        try:
            tzlocal.reload_localzone()
            assert tzlocal.get_localzone_name() in ("UTC", "Etc/UTC")
            assert time.localtime().tm_gmtoff == 0
            with time_machine.travel(at(day, 6, 59, 59), tick=True):
                scheduler = build_scheduler(clock, blocking=False)
                scheduler.add_listener(
                    listen, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
                )
                scheduler.start()
                try:
                    assert daily_done.wait(60), "the daily job did not run"
                    next_daily = scheduler.get_job("daily").next_run_time
                finally:
                    scheduler.shutdown(wait=True)
        finally:
            mp.undo()
            time.tzset()
            tzlocal.reload_localzone()

    by_job = {e.job_id: e for e in events}
    assert set(by_job) == {"catch_up", "daily"}, [(e.job_id, e.code) for e in events]
    assert all(e.code == EVENT_JOB_EXECUTED for e in events), [e.exception for e in events]
    # catch_up ran at start, before 07:00, and had nothing to catch up.
    assert clock.started["catch_up"] < at(day, 7)
    assert by_job["catch_up"].retval is None
    # The daily job: scheduled for and started at 07:00 Shanghai = 23:00 UTC the day before.
    assert by_job["daily"].scheduled_run_time == at(day, 7)
    started = clock.started["daily"]
    assert at(day, 7) <= started < at(day, 7, 0, 10)
    late_ms = (started - at(day, 7)).total_seconds() * 1000
    report(f"clock: the daily job started {late_ms:.0f} ms after 07:00 Shanghai")
    assert started.astimezone(UTC).hour == 23
    assert started.astimezone(UTC).date() == day - timedelta(days=1)
    assert next_daily == at(day + timedelta(days=1), 7)
    # And it did the whole job: one scheduled sync, the report in the chat, the day's record.
    result = by_job["daily"].retval
    assert result is not None and result.status == "ok", result.error
    yesterday = day - timedelta(days=1)
    assert (result.start, result.end) == (yesterday - timedelta(days=2), yesterday)
    [run] = all_runs(world.store)
    assert (run.trigger, run.status, run.date_to) == ("schedule", "ok", yesterday)
    [card] = reports(sandbox)
    assert str(yesterday) in card.title
    done = record(world.store, f"daily:{day}")
    assert done is not None and done["run_id"] == run.id and done["failed"] == []
    assert done["reports"] == {CHAT: card.message_id}
    table = sandbox.get("/_sandbox/feishu/tables/bascnSandboxApp0001/tblSandboxDaily01")
    assert len(table["records"]) == result.rows > 0


def test_a_scheduled_job_that_fails_is_said_in_the_chat(services: Any, sandbox: Sandbox) -> None:
    class Broken(Clock):
        def token_watchdog(self) -> None:
            raise RuntimeError("the database went away [parameters: 'tok-live-pair-9f8e7d']")

    clock = Broken(
        services, Notifier(services.settings, services.store, Messenger(services.settings))
    )
    scheduler = build_scheduler(clock, blocking=False)
    scheduler.remove_job("catch_up")  # only the broken job runs
    failed = threading.Event()
    scheduler.add_listener(lambda e: e.job_id == "token_watchdog" and failed.set(), EVENT_JOB_ERROR)
    scheduler.start(paused=True)
    try:
        scheduler.modify_job("token_watchdog", next_run_time=datetime.now(UTC))
        scheduler.resume()
        assert failed.wait(30)
    finally:
        scheduler.shutdown(wait=True)
    [alert] = alerts_posted(sandbox)
    assert alert.title == "定时任务异常 · scheduled job token_watchdog failed"
    # What failed and what to do; the exception's text (which can carry values) stays in the log.
    assert "RuntimeError" in alert.text and "adsync doctor" in alert.text
    assert "went away" not in alert.text and "tok-live" not in json.dumps(alert.content)


# -- the daily job: once per day, across restarts -----------------------------------------------


def test_a_restart_at_0900_catches_up_once_and_a_second_clock_posts_nothing_new(
    world: Any, sandbox: Sandbox, day: date
) -> None:
    early = make_clock(world, Now(at(day, 6, 30)))
    assert early.catch_up() is None  # not due yet: the 07:00 job will do it
    assert all_runs(world.store) == [] and posted(sandbox) == []

    now = Now(at(day, 9))
    clock = make_clock(world, now)
    result = clock.catch_up()
    assert result is not None and result.status == "ok", result and result.error
    yesterday = day - timedelta(days=1)
    assert result.end == yesterday and result.start == yesterday - timedelta(days=2)
    [card] = reports(sandbox)
    assert str(yesterday) in card.title
    before = posted(sandbox)
    # Catch-up again, the 07:00 job itself, a new process at 09:05: nothing runs, nothing posts.
    assert clock.catch_up() is None
    assert clock.daily() is None
    restarted = make_clock(world, now.advance(minutes=5))
    assert restarted.catch_up() is None
    assert restarted.daily() is None
    assert posted(sandbox) == before
    assert [r.trigger for r in all_runs(world.store)] == ["schedule"]
    # The next day's 07:00 is a new day.
    tomorrow = make_clock(world, Now(at(day + timedelta(days=1), 7)))
    assert tomorrow.catch_up() is not None
    assert len(reports(sandbox)) == 2


def _clock_process(
    env: dict[str, str],
    days: list[date],
    barrier: Any,
    out: Any,
) -> None:
    """One clock process: its own settings, store, token manager and bot, one daily run per
    round, started at the same moment as the other process's (the barrier)."""
    services = open_services(load_settings(env, cwd=Path(env["ADSYNC_DATA_DIR"]).parent))
    try:
        now = Now(at(days[0], 7))
        clock = make_clock(services, now)
        for d in days:
            now.at(d, 7)
            barrier.wait(timeout=60)
            try:
                result = clock.daily()
                out.put((d, os.getpid(), None if result is None else result.status))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, not lost
                out.put((d, os.getpid(), f"crashed: {exc!r}"))
    finally:
        services.close()


def test_two_clock_processes_racing_run_one_sync(
    world: Any, sandbox: Sandbox, env: dict[str, str], day: date
) -> None:
    rounds = [day - timedelta(days=n) for n in range(3)]
    # Two report chats: the report is once per chat and day, whoever wins.
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": SECOND_CHAT, "bot_member": True})
    env = {**env, "FEISHU_REPORT_CHAT_IDS": f"{CHAT},{SECOND_CHAT}"}
    # fork: this process has no threads holding locks here, and lark-oapi is already imported.
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_clock_process, args=(env, rounds, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        answers = [out.get(timeout=120) for _ in range(2 * len(rounds))]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs)
    for d in rounds:
        outcomes = sorted((str(status) for dd, _pid, status in answers if dd == d))
        # One process ran the day's sync; the other got None (the lease, or the day's record).
        assert outcomes == ["None", "ok"], (d, outcomes)
    scheduled = [r for r in all_runs(world.store) if r.trigger == "schedule"]
    assert sorted(r.date_to for r in scheduled) == sorted(d - timedelta(days=1) for d in rounds)
    expected = sorted(f"广告日报 · {d - timedelta(days=1)}" for d in rounds)
    for chat in (CHAT, SECOND_CHAT):
        assert sorted(c.title for c in reports(sandbox, chat)) == expected, chat
    for d in rounds:
        done = record(world.store, f"daily:{d}")
        assert done is not None and set(done["reports"]) == {CHAT, SECOND_CHAT}
    winners = Counter(pid for _d, pid, status in answers if status == "ok")
    report(f"clock race: {len(rounds)} rounds, wins per process {sorted(winners.values())}")


def test_two_threads_of_one_clock_process_run_one_sync(
    world: Any, sandbox: Sandbox, day: date
) -> None:
    """The catch-up job and the 07:00 job can overlap on the scheduler's threads (a start at
    07:00:00): one process, one holder name — still one sync."""
    clock = make_clock(world, Now(at(day, 7)))
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def run() -> None:
        barrier.wait(timeout=30)
        results.append(clock.daily())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(str(r and r.status) for r in results) == ["None", "ok"]
    assert [r.trigger for r in all_runs(world.store)] == ["schedule"]
    assert len(reports(sandbox)) == 1


# -- retries of failed accounts -----------------------------------------------------------------


def _deny_one(sandbox: Sandbox, granted: list[str]) -> str:
    """Refuse the first account that has rows (40002), as when its manager removes the app."""
    denied = granted[0]  # the sandbox's account 0 always has data
    sandbox.post("/_sandbox/oceanengine/accounts", {"deny": [int(denied)]})
    return denied


def test_a_failed_account_is_retried_at_30_min_and_2_h_and_the_report_card_catches_up(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    granted = authorize(services, sandbox, day)
    denied = _deny_one(sandbox, granted)
    now = Now(at(day, 7))
    clock = make_clock(services, now)
    first = clock.daily()
    assert first is not None and first.status == "partial"
    assert [a.account_id for a in first.failed] == [denied]
    [card] = reports(sandbox)
    assert "同步失败" in card.text and card.versions == 1
    alerts_before = len(alerts_posted(sandbox))

    assert clock.retries() is None  # 07:00: nothing due
    now.at(day, 7, 29)
    assert clock.retries() is None
    now.at(day, 7, 30)
    second = clock.retries()
    assert second is not None and [a.account_id for a in second.failed] == [denied]
    assert clock.retries() is None  # the +30 min retry happened; the next is at +2 h
    now.at(day, 8, 59)
    assert clock.retries() is None
    sandbox.post("/_sandbox/oceanengine/accounts", {"allow": [int(denied)]})
    now.at(day, 9, 0)
    third = clock.retries()
    assert third is not None and third.status == "ok" and third.failed == []
    assert [a.account_id for a in third.accounts] == [denied]
    now.at(day, 12)
    assert clock.retries() is None  # nothing left to retry
    retried = [r for r in all_runs(services.store) if r.trigger == "retry"]
    assert [(r.account_filter, r.status) for r in retried] == [
        (denied, "failed"),
        (denied, "ok"),
    ]
    # The morning's card now shows everyone, and no failures; no alert was needed.
    [card] = reports(sandbox)
    assert card.versions == 3  # posted, updated after each retry
    assert "同步失败" not in card.text
    assert len(alerts_posted(sandbox)) == alerts_before
    done = record(services.store, f"daily:{day}")
    assert done is not None and done["failed"] == [] and done["retries"] == 2


def test_an_account_still_failing_after_the_last_retry_gets_one_final_alert(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    granted = authorize(services, sandbox, day)
    denied = _deny_one(sandbox, granted)
    now = Now(at(day, 7))
    clock = make_clock(services, now)
    assert clock.daily() is not None
    alerts_before = len(alerts_posted(sandbox))
    now.at(day, 7, 30)
    assert clock.retries() is not None
    assert len(alerts_posted(sandbox)) == alerts_before  # not yet: one more retry to go
    now.at(day, 9)
    assert clock.retries() is not None
    final = alerts_posted(sandbox)[alerts_before:]
    assert [a.title for a in final] == ["同步失败 · sync failed after retries"]
    assert denied in final[0].text and "40002" in final[0].text
    assert "已重试 2 次" in final[0].text
    for hh in (9, 10, 15, 23):
        now.at(day, hh, 5)
        assert clock.retries() is None
    assert len(alerts_posted(sandbox)) == alerts_before + 1
    [card] = reports(sandbox)
    assert card.versions == 3 and "同步失败" in card.text


def test_a_retry_that_cannot_reach_the_account_is_not_a_recovery(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    """Someone re-authorized without ticking the failing account: the retry is refused before
    it fetches anything. The account's numbers are still missing, and the chat must hear so."""
    granted = authorize(services, sandbox, day)
    denied = _deny_one(sandbox, granted)
    now = Now(at(day, 7))
    clock = make_clock(services, now)
    assert clock.daily() is not None
    others = [int(i) for i in granted if i != denied]
    services.tokens.authorize(sandbox.auth_code(account_ids=others), confirm=True)
    alerts_before = len(alerts_posted(sandbox))
    now.at(day, 7, 30)
    first = clock.retries()
    assert first is not None and first.status == "failed" and "not in scope" in first.error
    done = record(services.store, f"daily:{day}")
    assert done is not None and done["failed"] == [denied]
    [card] = reports(sandbox)
    assert "同步失败" in card.text  # the updated card still says who is missing
    now.at(day, 9)
    assert clock.retries() is not None
    final = alerts_posted(sandbox)[alerts_before:]
    assert [a.title for a in final] == ["同步失败 · sync failed after retries"]
    assert denied in final[0].text and "not in scope" in final[0].text


# -- the settle re-sync -------------------------------------------------------------------------


def test_the_settle_resync_is_silent_when_nothing_moved_and_speaks_when_it_did(
    world: Any, sandbox: Sandbox, day: date
) -> None:
    now = Now(at(day, 7))
    clock = make_clock(world, now)
    assert clock.daily() is not None
    before = posted(sandbox)
    now.at(day, 10, 30)
    settled = clock.settle()
    assert settled is not None and settled.status == "ok"
    assert settled.unchanged == settled.rows > 0 and settled.updated == 0
    assert posted(sandbox) == before  # nothing moved: nothing said, no card touched
    assert clock.settle() is None  # once a day, even if called again
    assert make_clock(world, now).settle() is None  # or by another process

    # Another day: its yesterday is revised upwards after its 07:00 report went out.
    other, revised = day - timedelta(days=1), day - timedelta(days=2)
    now.at(other, 7)
    assert clock.daily() is not None
    quiet = posted(sandbox)
    morning = reports(sandbox)[-1]  # the report of ``revised``, posted at 07:00
    assert str(revised) in morning.text
    account = sandbox.get("/_sandbox/oceanengine/grant")["account_ids"][0]
    sandbox.post(
        "/_sandbox/oceanengine/adjust",
        {"account_id": account, "date": str(revised), "factor": 1.5},
    )
    now.at(other, 10, 30)
    moved = clock.settle()
    assert moved is not None and moved.updated > 0
    new = posted(sandbox)[len(quiet) :]
    assert [p.title for p in new] == ["昨日数据已更新 · yesterday's numbers settled"]
    assert str(revised) in new[0].text and "→" in new[0].text
    # The morning's report card now shows the settled numbers: the spend the alert names.
    settled_card = next(p for p in reports(sandbox) if p.message_id == morning.message_id)
    assert settled_card.versions == morning.versions + 1
    after_spend = new[0].text.split("→ ¥", 1)[1].split(" ", 1)[0]
    assert after_spend in settled_card.text and after_spend not in morning.text
    assert [r.trigger for r in all_runs(world.store)].count("settle") == 2


# -- the token watchdog -------------------------------------------------------------------------


def _watch(clock: Clock, now: Now, sandbox: Sandbox, *hours: float) -> list[list[str]]:
    """Run the watchdog at each of ``hours`` after the current time; the titles each run
    posted."""
    start, said = now.value, []
    for h in hours:
        now.value = start + timedelta(hours=h)
        seen = len(posted(sandbox))
        clock.token_watchdog()
        said.append([p.title for p in posted(sandbox)[seen:]])
    return said


def test_watchdog_refresh_failure_alerts_once_per_6_hours_then_all_clear(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    # Access tokens that live 30 minutes: every watchdog run is inside the refresh margin.
    authorize(services, sandbox, day, access_lifetime=1800)
    now = Now(at(day, 8))
    clock = make_clock(services, now)
    assert _watch(clock, now, sandbox, 0) == [[]]  # refreshed, healthy, silent
    refresh = "/open_api/oauth2/refresh_token/"
    sandbox.faults(oceanengine={"error_rate": 1.0, "error_codes": [50000], "paths": [refresh]})
    said = _watch(clock, now, sandbox, 0.5, 1, 3, 6.49, 6.5, 7)
    failed = ["Token 刷新失败 · token refresh failed"]
    assert said == [failed, [], [], [], failed, []]  # once, and again only 6 h later
    assert "50000" in posted(sandbox)[-1].text
    sandbox.faults(oceanengine={})
    said = _watch(clock, now, sandbox, 0.5, 1)
    assert said == [["Token 刷新恢复 · token refresh works again"], []]
    assert posted(sandbox)[-1].template == "green"


def assert_no_link_but_how_to_authorize(card: Any) -> None:
    """Alerts go to report chats that everyone in them reads: no authorization link (whoever
    opens one replaces the authorization), but what an admin does instead."""
    assert button_urls(card.content) == []
    assert "oauth.html" not in json.dumps(card.content) and "state=" not in card.text
    assert "auth" in card.text and "direct chat" in card.text


def test_watchdog_warns_when_the_refresh_token_expires_within_3_days(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    # Just over 3 days left: no warning.
    authorize(services, sandbox, day, refresh_lifetime=3 * 86400 + 600)
    now = Now(at(day, 8))
    clock = make_clock(services, now)
    assert _watch(clock, now, sandbox, 0) == [[]]
    # Just under: a warning with the authorization link, as a button.
    authorize(services, sandbox, day, refresh_lifetime=3 * 86400 - 600)
    said = _watch(clock, now, sandbox, 0, 0.5, 5.9, 6.5)
    expiring = ["授权即将过期 · authorization expires soon"]
    assert said == [expiring, [], [], expiring]
    card = posted(sandbox)[-1]
    assert_no_link_but_how_to_authorize(card)
    assert "71 h" in card.text or "70 h" in card.text
    # Fixed by authorizing again (a full 30-day chain): one all clear.
    authorize(services, sandbox, day)
    said = _watch(clock, now, sandbox, 0.5, 1)
    assert said == [["授权有效期已恢复 · authorization renewed"], []]


def test_watchdog_says_when_reauthorization_is_needed_then_all_clear(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    now = Now(at(day, 8))
    clock = make_clock(services, now)
    reauthorize = ["需要重新授权 · re-authorization needed"]
    # Never authorized.
    assert _watch(clock, now, sandbox, 0, 0.5) == [reauthorize, []]
    authorize(services, sandbox, day, access_lifetime=1800)
    assert _watch(clock, now, sandbox, 1, 1.5) == [["授权已恢复 · authorization restored"], []]
    # The refresh token ran out on the platform's side: the next refresh is refused (40103).
    sandbox.post("/_sandbox/oceanengine/expire", {"access": False, "refresh": True})
    said = _watch(clock, now, sandbox, 2, 2.5, 8.5)
    assert said == [reauthorize, [], reauthorize]
    assert_no_link_but_how_to_authorize(posted(sandbox)[-1])
    authorize(services, sandbox, day, access_lifetime=1800)
    assert _watch(clock, now, sandbox, 9, 9.5) == [["授权已恢复 · authorization restored"], []]


def test_watchdog_calls_a_working_token_that_is_now_refused_revoked_then_all_clear(
    world: Any, sandbox: Sandbox, day: date
) -> None:
    now = Now(at(day, 8))
    clock = make_clock(world, now)
    assert _watch(clock, now, sandbox, 0) == [[]]  # it works
    sandbox.post("/_sandbox/oceanengine/revoke")  # someone removed the app's authorization
    revoked = ["Token 被拒绝 · the token was refused"]
    said = _watch(clock, now, sandbox, 0.5, 1, 3, 6.5)
    # One problem, said once per 6 hours — not re-announced as something else next time.
    assert said == [revoked, [], [], revoked]
    assert_no_link_but_how_to_authorize(posted(sandbox)[-1])
    authorize(world, sandbox, day)
    said = _watch(clock, now, sandbox, 7, 7.5)
    assert said == [["Token 已恢复 · the token works again"], []]


# -- alerts: once per 6 hours, all clear, delivery whatever state Feishu is in -------------------


def test_an_alert_is_sent_once_per_6_hours_and_resolved_with_one_all_clear(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    now = Now(at(day, 8))
    notifier = Notifier(services.settings, services.store, Messenger(services.settings), now=now)

    def say(problem: str = "sync:failed") -> bool:
        return notifier.alert(problem, "同步失败 · sync failed", ["account 1: 40002"])

    assert say() is True
    assert [say() for _ in range(3)] == [False] * 3
    now.advance(hours=5, minutes=59)
    assert say() is False
    assert say("another problem") is True  # problems are counted separately
    now.advance(minutes=1)  # 6 h after the first
    assert say() is True
    assert sorted(notifier.open_problems()) == ["another problem", "sync:failed"]
    assert notifier.resolve("sync:failed", "同步已恢复 · sync recovered") is True
    assert notifier.resolve("sync:failed", "同步已恢复 · sync recovered") is False
    assert notifier.resolve("never seen", "x") is False
    assert notifier.open_problems() == ["another problem"]
    # Back ten minutes after its all clear: a new occurrence, said at once (and posted, not
    # swallowed by the platform's one-hour uuid dedup).
    now.advance(minutes=10)
    assert say() is True
    titles = [p.title for p in posted(sandbox)]
    assert titles == [
        "同步失败 · sync failed",
        "同步失败 · sync failed",  # "another problem"
        "同步失败 · sync failed",
        "同步已恢复 · sync recovered",
        "同步失败 · sync failed",
    ]
    assert [p.template for p in posted(sandbox)][3] == "green"


def test_concurrent_notifiers_send_a_problem_once(services: Any, sandbox: Sandbox) -> None:
    """Every process that sees the problem calls alert(); the database picks one sender."""
    settings, store = services.settings, services.store
    notifiers = [Notifier(settings, store, Messenger(settings)) for _ in range(6)]
    sent: list[bool] = []
    barrier = threading.Barrier(len(notifiers))

    def run(n: Notifier) -> None:
        barrier.wait(timeout=30)
        sent.append(n.alert("token:refresh_failed", "t", ["x"]))

    threads = [threading.Thread(target=run, args=(n,)) for n in notifiers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(sent) == [False] * 5 + [True]
    assert len(posted(sandbox)) == 1


@pytest.fixture
def hook(sandbox: Sandbox) -> dict[str, str]:
    made = sandbox.post("/_sandbox/feishu/hooks", {"secret": "hook-secret-6d1e"})
    return {"id": made["hook_id"], "url": sandbox.url + made["path"], "secret": "hook-secret-6d1e"}


def _notifier(env: dict[str, str], tmp_path: Path, store: Store, **extra: str) -> Notifier:
    settings = load_settings({**env, **extra}, cwd=tmp_path)
    return Notifier(settings, store, Messenger(settings))


def hook_messages(sandbox: Sandbox, hook_id: str) -> list[dict[str, Any]]:
    return sandbox.get(f"/_sandbox/feishu/hooks/{hook_id}/messages")["messages"]


def test_the_webhook_signature_is_feishus_recipe() -> None:
    # Spelled out from the platform's docs: HMAC-SHA256 keyed by "timestamp\nsecret" over an
    # empty message, base64. (The sandbox checks deliveries with its own copy of the recipe.)
    key = b"1599360473\nhook-secret-6d1e"
    expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert webhook_sign(1599360473, "hook-secret-6d1e") == expected
    assert hook_sign("1599360473", "hook-secret-6d1e") == expected


def test_alerts_fall_back_to_the_signed_webhook_when_the_bot_was_removed(
    services: Any, sandbox: Sandbox, env: dict[str, str], tmp_path: Path, hook: dict[str, str]
) -> None:
    notifier = _notifier(
        env,
        tmp_path,
        services.store,
        FEISHU_ALERT_WEBHOOK_URL=hook["url"],
        FEISHU_ALERT_WEBHOOK_SECRET=hook["secret"],
    )
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": CHAT, "bot_member": False})
    assert notifier.alert("token:revoked", "Token 被拒绝 · the token was refused", ["40105"])
    [got] = hook_messages(sandbox, hook["id"])  # the sandbox checked the signature (19021)
    assert got["msg_type"] == "interactive"
    assert got["card"]["header"]["title"]["content"] == "Token 被拒绝 · the token was refused"
    assert posted(sandbox) == []
    assert sandbox.stats("feishu")["errors"].get("230002", 0) >= 1
    # The broadcast says how each chat was reached.
    card = {"schema": "2.0", "config": {"update_multi": True}, "body": {"elements": []}}
    assert [(d.chat_id, d.via) for d in notifier.broadcast(card, "t")] == [(CHAT, "webhook")]


def test_alerts_fall_back_to_the_webhook_when_the_app_secret_is_broken(
    services: Any, sandbox: Sandbox, env: dict[str, str], tmp_path: Path, hook: dict[str, str]
) -> None:
    TOKEN_CACHE.drop(f"self_tenant_token:{env['FEISHU_APP_ID']}")  # as in a fresh process
    notifier = _notifier(
        env,
        tmp_path,
        services.store,
        FEISHU_APP_SECRET="rotated-in-the-console",
        FEISHU_ALERT_WEBHOOK_URL=hook["url"],
        FEISHU_ALERT_WEBHOOK_SECRET=hook["secret"],
    )
    assert notifier.alert("sync:failed", "同步失败 · sync failed", ["every account failed"])
    assert len(hook_messages(sandbox, hook["id"])) == 1
    assert posted(sandbox) == []


def test_a_big_chinese_report_reaches_the_webhook_within_its_20_kb_as_sent(
    services: Any, sandbox: Sandbox, env: dict[str, str], tmp_path: Path, hook: dict[str, str]
) -> None:
    # The custom bot refuses a request body above 20 KB. The body used to be measured with 中文
    # as UTF-8 and sent by requests' json= with every character as a 6-byte \\uXXXX escape:
    # a report that measured 19 KB went out at ~30 KB and was refused (9499).
    notifier = _notifier(
        env,
        tmp_path,
        services.store,
        FEISHU_ALERT_WEBHOOK_URL=hook["url"],
        FEISHU_ALERT_WEBHOOK_SECRET=hook["secret"],
    )
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": CHAT, "bot_member": False})
    rows = [
        ListedAccount(str(1800000000000000000 + i), f"杭州市西湖区文三路美食城第{i}分店", "direct",
                      last_outcome="failed", last_reason="40002 没有权限进行相关操作，请检查账户授权")
        for i in range(300)
    ]  # fmt: skip
    card = cards.accounts_card(AccountsView("discovery", rows), "zh")
    assert [d.via for d in notifier.broadcast(card, "big")] == ["webhook"]
    [got] = hook_messages(sandbox, hook["id"])
    assert got["msg_type"] == "interactive" and got["body_bytes"] <= 20 * 1024
    assert got["card"]["header"]["title"]["content"] == "广告账户"
    assert "另有" in json.dumps(got["card"], ensure_ascii=False)  # cut to fit, and says so


def test_a_wrong_webhook_secret_is_refused_and_reported_not_raised(
    services: Any, sandbox: Sandbox, env: dict[str, str], tmp_path: Path, hook: dict[str, str]
) -> None:
    wrong = _notifier(
        env,
        tmp_path,
        services.store,
        FEISHU_ALERT_WEBHOOK_URL=hook["url"],
        FEISHU_ALERT_WEBHOOK_SECRET="not-the-hook-secret",
    )
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": CHAT, "bot_member": False})
    card = {"schema": "2.0", "config": {"update_multi": True}, "body": {"elements": []}}
    [delivery] = wrong.broadcast(card, "t")
    assert (delivery.chat_id, delivery.via) == (CHAT, "failed")
    assert "230002" in delivery.error
    assert hook_messages(sandbox, hook["id"]) == []
    assert sandbox.stats("feishu")["errors"].get("19021") == 1
    # Nobody heard the alert, so it is not "sent": once the bot is back it goes out at once,
    # not six hours later.
    assert wrong.alert("token:revoked", "Token 被拒绝 · the token was refused", ["40105"]) is False
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": CHAT, "bot_member": True})
    assert wrong.alert("token:revoked", "Token 被拒绝 · the token was refused", ["40105"]) is True
    assert [p.title for p in posted(sandbox)] == ["Token 被拒绝 · the token was refused"]


# -- data alert rules ---------------------------------------------------------------------------

D = date(2026, 2, 16)  # the day the rules look at ("yesterday" for the 07:00 job)
A, B = Account("1700000000000101", "门店 A"), Account("1700000000000102", "门店 B")


def put(store: Store, account: Account, day: date, cost: str, conversions: int = 0) -> None:
    """One promotion row of the local copy, as a sync would have saved it."""
    with store.begin() as conn:
        conn.execute(
            insert(report_rows).values(
                sync_key=f"{day}|{account.id}|7{account.id[-3:]}000",
                stat_date=day,
                account_id=account.id,
                account_name=account.name,
                promotion_id=f"7{account.id[-3:]}000",
                cost_cents=int(Decimal(cost) * 100),
                show_cnt=1000,
                click_cnt=50,
                convert_cnt=conversions,
                synced_at=utcnow(),
            )
        )


def week(store: Store, account: Account, cost: str, conversions: int = 5) -> None:
    """``cost`` on each of the 7 days before D."""
    for n in range(1, 8):
        put(store, account, D - timedelta(days=n), cost, conversions)


def rules(store: Store, scope: tuple[Account, ...] = (A, B)) -> list[tuple[str, str]]:
    return sorted((a.rule, a.account_id) for a in anomalies(store, D, scope, 50.0))


@pytest.fixture
def store(services: Any) -> Store:
    return services.store


def test_no_rows_fires_only_when_the_day_before_had_rows(store: Store) -> None:
    assert rules(store) == []  # nothing ever synced: nothing to compare
    put(store, A, D - timedelta(days=1), "0.00", 1)
    assert ("no_rows", "*") in rules(store)
    put(store, B, D, "0.00")  # one all-zero row is a row
    assert ("no_rows", "*") not in rules(store)


def test_no_rows_needs_rows_the_day_before(store: Store) -> None:
    put(store, A, D - timedelta(days=2), "80.00", 3)  # two days ago, not the day before
    assert ("no_rows", "*") not in rules(store)


def test_went_silent_fires_for_an_account_that_spent_the_day_before(store: Store) -> None:
    put(store, A, D - timedelta(days=1), "0.01", 1)  # the smallest spend
    put(store, B, D - timedelta(days=1), "0.00", 0)  # a row, but no spend
    put(store, B, D, "12.00", 1)
    assert rules(store) == [("went_silent", A.id)]
    put(store, A, D, "0.00", 0)  # A shows up, even with nothing spent: not silent
    assert ("went_silent", A.id) not in rules(store)


def test_spend_jump_fires_above_the_threshold_not_at_it(store: Store) -> None:
    week(store, A, "100.00")
    put(store, A, D, "150.00", 5)  # +50.00 %: at the threshold
    assert rules(store, (A,)) == []
    with store.begin() as conn:
        conn.execute(report_rows.delete().where(report_rows.c.stat_date == D))
    put(store, A, D, "150.01", 5)
    [found] = anomalies(store, D, (A,), 50.0)
    assert (found.rule, found.account_id, found.name) == ("spend_jump", A.id, A.name)
    assert "¥150.01" in found.detail and "¥100.00" in found.detail


def test_spend_drop_fires_below_the_threshold_not_at_it(store: Store) -> None:
    week(store, A, "100.00")
    put(store, A, D, "50.00", 5)  # -50.00 %
    assert rules(store, (A,)) == []
    with store.begin() as conn:
        conn.execute(report_rows.delete().where(report_rows.c.stat_date == D))
    put(store, A, D, "49.99", 5)
    assert rules(store, (A,)) == [("spend_drop", A.id)]


def test_days_an_account_was_paused_count_as_zero_in_its_average(store: Store) -> None:
    week(store, B, "100.00")  # the copy holds all 7 days: B ran every day
    for n in (1, 2, 3):
        put(store, A, D - timedelta(days=n), "100.00", 5)  # A paused on 4 of the 7 days
    put(store, A, D, "100.00", 5)  # against an average of 300/7 = 42.86: +133 %
    assert ("spend_jump", A.id) in rules(store)


def test_days_never_synced_are_not_zero_spend(store: Store) -> None:
    """The first 07:00 run after installing: the copy holds only the lookback days. Days it
    never synced are unknown, not days without spend — no "spend jumped" for everyone."""
    for n in (1, 2):
        put(store, A, D - timedelta(days=n), "100.00", 5)
    put(store, A, D, "150.00", 5)  # +50 % against the two days it knows
    assert rules(store, (A,)) == []
    with store.begin() as conn:
        conn.execute(report_rows.delete().where(report_rows.c.stat_date == D))
    put(store, A, D, "150.01", 5)
    assert rules(store, (A,)) == [("spend_jump", A.id)]


def test_the_seven_day_average_is_over_the_days_the_copy_holds(store: Store) -> None:
    for n in (1, 2):
        put(store, A, D - timedelta(days=n), "100.00", 4)
    first = seven_day_average(store, D)  # two days known: their average, not 2/7 of it
    assert (first.cost, first.convert_cnt, first.rows) == (Decimal("100.00"), 4, 1)
    week(store, B, "70.00", 1)  # now all 7 days are known; A had no rows on 5 of them
    full = seven_day_average(store, D)
    assert full.cost == Decimal("98.57")  # (2 × 100 + 7 × 70) / 7
    assert seven_day_average(store, D - timedelta(days=30)).cost == Decimal("0.00")


def test_no_conversions_needs_spend_without_conversions_on_both_days(store: Store) -> None:
    cases = [
        (("30.00", 0), ("0.01", 0), True),  # spend on both days, no conversions on either
        (("30.00", 1), ("30.00", 0), False),  # a conversion the day before
        (("30.00", 0), ("30.00", 1), False),  # a conversion on the day
        (("0.00", 0), ("30.00", 0), False),  # no spend the day before
        (("30.00", 0), ("0.00", 0), False),  # no spend on the day
    ]
    for before, today, fires in cases:
        with store.begin() as conn:
            conn.execute(report_rows.delete())
        put(store, A, D - timedelta(days=1), *before)
        put(store, A, D, *today)
        assert (("no_conversions", A.id) in rules(store, (A,))) is fires, (before, today)


def test_an_anomaly_key_names_the_rule_the_account_and_the_day() -> None:
    found = Anomaly("spend_jump", A.id, A.name, D, "x")
    assert found.key == f"data:spend_jump:{A.id}:2026-02-16"


# -- never "success" with nothing ---------------------------------------------------------------


def test_zero_accounts_is_an_alert_never_a_success(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    # A grant of 0 accounts is refused at the door; a grant can still reach no 本地推 account
    # (here a 巨量工作台 organisation that holds none).
    services.tokens.authorize(
        sandbox.auth_code(grants=[{"type": "CUSTOMER_ADMIN", "account_ids": []}])
    )
    clock = make_clock(services, Now(at(day, 7)))
    result = clock.daily()
    assert result is not None and result.status == "failed"
    assert "no accounts" in result.error
    [alert] = alerts_posted(sandbox)
    assert alert.title == "同步失败 · the daily sync failed" and alert.template == "red"
    assert "no accounts" in alert.text
    [card] = reports(sandbox)
    assert card.template == "orange" and "还没有同步" in card.text  # not a blue "all fine"
    done = record(services.store, f"daily:{day}")
    assert done is not None and done["status"] == "failed"


def test_zero_rows_where_the_day_before_had_rows_is_an_alert(
    services: Any, sandbox: Sandbox, day: date
) -> None:
    # Every promotion gone on the platform: yesterday comes back empty for every account.
    granted = authorize(services, sandbox, day, promotions_per_account=0)
    yesterday, before = day - timedelta(days=1), day - timedelta(days=2)
    spent = [Account(granted[0], "老店"), Account(granted[1], "新店")]
    for account in spent:
        put(services.store, account, before, "88.00", 2)
    one_day = Services(
        services.settings.with_overrides(lookback_days=1),
        services.store,
        services.limiter,
        services.tokens,
    )
    result = make_clock(one_day, Now(at(day, 7))).daily()
    assert result is not None and result.rows == 0 and result.failed == []
    titles = sorted(a.title for a in alerts_posted(sandbox))
    assert titles == sorted(
        ["没有数据 · no rows at all"] + ["账户无数据 · an account went silent"] * len(spent)
    )
    silent = " ".join(a.text for a in alerts_posted(sandbox))
    assert all(a.id in silent for a in spent)
    assert f"0 rows on {yesterday}" in silent
    [card] = reports(sandbox)
    assert card.template == "orange" and "没有数据" in card.text


def test_a_failed_settle_re_sync_is_an_alert(authorized: Any, sandbox: Sandbox) -> None:
    """At 10:30 yesterday is synced again; if that fails, the group hears about it once."""
    from adsync.bot.clock import build_clock
    from adsync.bot.messenger import Messenger

    sandbox.post("/_sandbox/oceanengine/revoke")
    clock = build_clock(authorized, Messenger(authorized.settings))
    result = clock.settle()
    assert result is not None and result.status == "failed"
    posted = sandbox.get("/_sandbox/feishu/messages", chat_id="oc_sandbox_reports")["messages"]
    assert ["结算同步失败" in json.dumps(m, ensure_ascii=False) for m in posted] == [True]
    assert clock.settle() is None  # once a day
