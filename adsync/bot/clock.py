"""The clock: the 07:00 sync and report, retries of failed accounts, the token watchdog, the
settle re-sync, and a catch-up after downtime — each run by exactly one process.

APScheduler 3.x only fires the jobs (``BlockingScheduler`` in ``adsync clock``,
``BackgroundScheduler`` inside ``adsync serve``), always in ``ADSYNC_TIMEZONE`` whatever the
machine's zone, with coalescing, one instance and a generous misfire grace. Who actually runs
a job is decided in the database: a lease per job occurrence (two clocks, or gunicorn workers
each with a scheduler, never run it twice; a dead holder's lease runs out), and a record per
day ("daily:2026-02-16") that makes the daily job, its report and its retries happen once even
across restarts. Every job takes its time from ``self.now()`` — the seam tests travel with.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from adsync.bot import cards
from adsync.bot.alerts import Notifier
from adsync.bot.messenger import Messenger
from adsync.bot.report import post_report, refresh_reports
from adsync.sync.causes import cause_lines
from adsync.sync.dailyreport import report_scope
from adsync.sync.errors import AdsyncError, AuthorizationNeeded, TokenNotSaved
from adsync.sync.oceanengine import OceanEngineError
from adsync.sync.runner import FAILED, AccountResult, Runner, RunResult
from adsync.sync.services import Services
from adsync.sync.store import actor, notifications
from adsync.sync.summary import anomalies, summarize
from adsync.sync.tokens import Chain

log = logging.getLogger("adsync.clock")

_REAUTHORIZE = (
    "管理员请在与机器人的单聊中发送“授权”，勾选全部账户 · an admin: send `auth` to the bot in a "
    "direct chat and tick every account (or run `adsync auth url` on the server)"
)

JOB_LEASE = timedelta(minutes=5)  # renewed while the job runs; a dead holder's lapses


@dataclass
class Clock:
    services: Services
    notifier: Notifier
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    holder: str = field(default_factory=lambda: f"{actor()}:clock")

    @property
    def settings(self) -> Any:
        return self.services.settings

    def today(self) -> date:
        return self.now().astimezone(self.settings.tz).date()

    def daily_due(self) -> datetime:
        """Today's daily run time, in the business time zone."""
        at = self.settings.daily_sync_at
        return datetime.combine(self.today(), at, tzinfo=self.settings.tz)

    # -- the jobs -----------------------------------------------------------------------------

    def daily(self) -> RunResult | None:
        """Sync yesterday and the lookback days before it, then report and alert. Once a day."""
        today = self.today()
        key = f"daily:{today}"
        with self._once(key) as mine:
            if not mine:
                return None
            end = today - timedelta(days=1)
            start = end - timedelta(days=self.settings.lookback_days - 1)
            result = Runner(self.services).run(start, end, trigger="schedule", requested_by="clock")
            record = {
                "run_id": result.run_id,
                "status": result.status,
                "finished_at": self.now().isoformat(),
                "failed": [a.account_id for a in result.failed],
                "retries": 0,
                "reports": {},
            }
            record["reports"] = self._report(end)
            self._alerts_after(result, end)
            self._account_changes(result)
            self._save(key, record)
            self.table_notices()
            return result

    def catch_up(self) -> RunResult | None:
        """At start: if today's daily run has not happened and its time has passed, run now."""
        if self.now() < self.daily_due() or self._load(f"daily:{self.today()}") is not None:
            return None
        log.info("catching up: today's daily run (due %s) has not happened", self.daily_due())
        return self.daily()

    def retries(self) -> RunResult | None:
        """Every few minutes: retry today's failed accounts when a retry is due; after the
        last one, the final alert for whatever still fails."""
        today = self.today()
        key = f"daily:{today}"
        record = self._load(key)
        if not record or not record.get("failed"):
            return None
        done = int(record.get("retries", 0))
        plan = self.settings.retry_after
        if done >= len(plan):
            return None
        finished = datetime.fromisoformat(record["finished_at"])
        if self.now() < finished + timedelta(minutes=plan[done]):
            return None
        with self._lease(f"job:retry:{today}:{done}") as mine:
            record = self._load(key) or {}
            if not mine or int(record.get("retries", 0)) != done:
                return None
            end = today - timedelta(days=1)
            start = end - timedelta(days=self.settings.lookback_days - 1)
            result = Runner(self.services).run(
                start, end, account_ids=record["failed"], trigger="retry", requested_by="clock"
            )
            self._account_changes(result)
            failures = result.failed
            if not result.accounts:
                # The retry never reached the accounts (one left the scope, another run held
                # the dates): they are still missing — not "recovered".
                reason = result.error or result.status
                failures = [AccountResult(i, "", FAILED, reason) for i in record["failed"]]
            still = [a.account_id for a in failures]
            record.update(retries=done + 1, failed=still)
            self._save(key, record)
            self._refresh_reports(end)
            if still and done + 1 == len(plan):
                lines = cause_lines((a.label, a.reason) for a in failures)  # once per cause
                lines.append(
                    f"已重试 {done + 1} 次 · retried {done + 1} times; `sync` again when fixed"
                )
                self.notifier.alert(
                    f"sync:failed:{today}", "同步失败 · sync failed after retries", lines
                )
            elif not still:
                self.notifier.resolve(f"sync:failed:{today}", "同步已恢复 · sync recovered")
            self.table_notices()
            return result

    def table_notices(self) -> list[str]:
        """Tell the group about tables started, recreated or filling (each once); after each
        run here, and every few minutes for runs started in chat or on the command line."""
        from adsync.bot.table_notices import TableNotices

        try:
            return TableNotices(self.services, self.notifier, self.today).send()
        except Exception:  # noqa: BLE001 - a notice must never break the job it follows
            log.exception("table notices failed; the next sweep tries again")
            return []

    def token_watchdog(self) -> None:
        """Every 30 minutes, for each authorization (one per Ocean Engine login) on its own:
        refresh inside the margin, prove the token works with a cheap call, alert on trouble
        (each problem of each chain at most once per 6 h, naming its user and accounts), all
        clear after. One dead chain never keeps the others from being refreshed."""
        tokens = self.services.tokens
        chains = tokens.chains()
        self._forget_gone_chains({c.chain_id for c in chains})
        if not chains:
            self._authorization_alert(
                None, AuthorizationNeeded("Ocean Engine is not authorized yet")
            )
            return
        for chain in chains:
            try:
                self._watch_chain(chain)
            except AdsyncError as exc:  # e.g. the database: the next chain still gets its turn
                log.error("token watchdog for %s: %s", chain.chain_id, exc.message)

    def _watch_chain(self, chain: Chain) -> None:
        tokens = self.services.tokens
        cid = chain.chain_id

        def key(kind: str) -> str:
            return f"token:{kind}:{cid}"

        whose = _whose(chain)
        try:
            tokens.refresh_if_due(cid)
        except AuthorizationNeeded as exc:
            self._authorization_alert(chain, exc)
            return
        except TokenNotSaved as exc:
            log.error("%s", exc.message)
            self.notifier.alert(
                key("unsaved"),
                "Token 已刷新但未保存 · refreshed but not saved",
                [*whose, exc.public_message, exc.public_hint],
                people=self._admins(),
            )
            return
        except OceanEngineError as exc:
            self.notifier.alert(
                key("refresh_failed"),
                "Token 刷新失败 · token refresh failed",
                [
                    *whose,
                    exc.message,
                    "will retry in 30 minutes; if it persists, run `adsync doctor`",
                ],
                severity="warning",
            )
            return
        self.notifier.resolve(key("refresh_failed"), "Token 刷新恢复 · token refresh works again")
        try:
            tokens.check(cid)  # one cheap call; records when the chain was last confirmed live
        except AuthorizationNeeded as exc:
            # The chain was usable a moment ago (refresh_if_due said so); now the platform
            # refuses the token, and the refresh that followed: the grant was revoked.
            self.notifier.alert(
                key("revoked"),
                "Token 被拒绝 · the token was refused",
                [
                    *self._chain_lines(chain, exc),
                    "the authorization was probably revoked: " + _REAUTHORIZE,
                ],
                people=self._admins(),
            )
            return
        except OceanEngineError:
            return  # the platform is having trouble; the sync's own alerts will say so
        # Only a token the platform accepted proves the authorization is back.
        self.notifier.resolve("token:reauthorize", "授权已恢复 · authorization restored")
        self.notifier.resolve(key("reauthorize"), "授权已恢复 · authorization restored", whose)
        self.notifier.resolve(key("revoked"), "Token 已恢复 · the token works again", whose)
        self.notifier.resolve(key("unsaved"), "Token 已保存 · the refreshed token is saved", whose)
        status = tokens.status(cid)
        if status.refresh_left_s is not None and status.refresh_left_s < 3 * 86400:
            self.notifier.alert(
                key("refresh_expiring"),
                "授权即将过期 · authorization expires soon",
                [
                    *whose,
                    f"refresh token expires in {status.refresh_left_s // 3600} h",
                    "a refresh renews it; if refreshing fails, " + _REAUTHORIZE,
                ],
                people=self._admins(),
                severity="warning",
            )
        else:
            self.notifier.resolve(
                key("refresh_expiring"), "授权有效期已恢复 · authorization renewed", whose
            )

    def _authorization_alert(self, chain: Chain | None, exc: AuthorizationNeeded) -> None:
        """A chain cannot give a token without a person (``chain`` None: there is no
        authorization at all). A revocation already announced stays that one problem
        (repeated under its own name every 6 h), not a second one."""
        if chain is None:
            self.notifier.alert(
                "token:reauthorize",
                "需要重新授权 · re-authorization needed",
                [exc.message, _REAUTHORIZE],
                people=self._admins(),
            )
            return
        revoked = f"token:revoked:{chain.chain_id}"
        if revoked in self.notifier.open_problems():
            self.notifier.alert(
                revoked,
                "Token 被拒绝 · the token was refused",
                [
                    *self._chain_lines(chain, exc),
                    "the authorization was probably revoked: " + _REAUTHORIZE,
                ],
                people=self._admins(),
            )
            return
        self.notifier.alert(
            f"token:reauthorize:{chain.chain_id}",
            "需要重新授权 · re-authorization needed",
            [*self._chain_lines(chain, exc), _REAUTHORIZE],
            people=self._admins(),
        )

    def _chain_lines(self, chain: Chain, exc: AuthorizationNeeded | None) -> list[str]:
        """Whose authorization it is, why it is gone, and the accounts that stop syncing
        because no other authorization reaches them."""
        from adsync.sync.discovery import reach_by_chain

        lines = _whose(chain)
        if exc is not None:
            lines.append(exc.message)
        try:
            stranded = self._stranded(chain, reach_by_chain)
        except AdsyncError:
            stranded = None
        if stranded:
            shown = "、".join(stranded[:10]) + (
                f" …（+{len(stranded) - 10}）" if len(stranded) > 10 else ""
            )
            lines.append(
                f"不再同步的账户 · accounts not synced until then ({len(stranded)}): {shown}"
            )
        elif stranded is not None and len(self.services.tokens.chains()) > 1:
            lines.append(
                "其账户由其他授权继续同步 · its accounts are still synced through other "
                "authorizations"
            )
        return lines

    def _stranded(self, chain: Chain, reach_by_chain: Any) -> list[str]:
        """Labels of the accounts in scope this chain reaches and no other usable chain does."""
        chains = self.services.tokens.chains()
        reach = reach_by_chain(self.services.store, self.settings.oceanengine_app_id or "")

        def reached(c: Chain) -> set[str]:
            return set(reach.get(c.chain_id, set())) | set(c.account_ids)

        mine = reached(chain)
        others = [reached(c) for c in chains if c.live and c.chain_id != chain.chain_id]
        covered = set().union(*others)
        return [a.label for a in self._scope() if a.id in mine and a.id not in covered]

    def _forget_gone_chains(self, current: set[str]) -> None:
        """Problems of a chain that no longer exists (removed, or replaced by its user's new
        authorization) end with an all clear."""
        try:
            problems = self.notifier.open_problems()
        except AdsyncError:
            return
        for problem in problems:
            parts = problem.split(":", 2)
            if len(parts) == 3 and parts[0] == "token" and parts[2] not in current:
                self.notifier.resolve(
                    problem,
                    "授权已移除 · authorization no longer in use",
                    [f"authorization {parts[2]} was removed or replaced; its alert is closed"],
                )

    def _admins(self) -> tuple[str, ...]:
        """Alerts go to the report chats, which everyone in them reads: they carry no
        authorization link (whoever opens one replaces the authorization). They name the
        admins instead, who get a link bound to them in a direct chat with the bot."""
        return tuple(self.settings.admins)

    def settle(self) -> RunResult | None:
        """Re-sync yesterday once its numbers are final (after 10:00); speak only if the totals
        moved more than the threshold."""
        today = self.today()
        yesterday = today - timedelta(days=1)
        with self._once(f"settle:{today}") as mine:
            if not mine:
                return None
            before = summarize(self.services.store, yesterday, yesterday).totals
            result = Runner(self.services).run(yesterday, yesterday, trigger="settle")
            self._account_changes(result)
            after = summarize(self.services.store, yesterday, yesterday).totals
            moved = _moved_pct(before.cost, after.cost)
            conv_moved = _moved_pct(before.convert_cnt, after.convert_cnt)
            threshold = self.settings.settle_threshold_pct
            spoke = max(abs(moved), abs(conv_moved)) > threshold
            # Recorded before speaking: the lease alone would let a second process (or a
            # second call) settle again once this one let go of it.
            self._save(
                f"settle:{today}",
                {"run_id": result.run_id, "status": result.status, "moved_pct": moved},
            )
            if result.created or result.updated or result.deleted:
                # The morning's report cards show the settled numbers, as after a retry.
                self._refresh_reports(yesterday)
            if spoke:
                lines = [
                    f"{yesterday} 消耗 ¥{before.cost:,.2f} → ¥{after.cost:,.2f} ({moved:+.1f}%)",
                    f"转化 {before.convert_cnt} → {after.convert_cnt} ({conv_moved:+.1f}%)",
                    "the Bitable has the final numbers",
                ]
                card = cards.alert_card(
                    "昨日数据已更新 · yesterday's numbers settled",
                    lines,
                    severity="warning",
                    lang="zh",
                )
                self.notifier.broadcast(card, f"settle:{today}")
            if result.status in ("failed", "partial"):
                # Yesterday may still hold this morning's (not yet final) numbers: say so.
                lines = [result.error] if result.error else []
                lines += cause_lines((a.label, a.reason) for a in result.failed)
                lines.append("yesterday's rows keep the morning's numbers; run `sync` again")
                self.notifier.alert(
                    f"settle:failed:{today}", "结算同步失败 · the settle re-sync failed", lines
                )
            self.table_notices()
            return result

    # -- report and alerts after the daily run ------------------------------------------------

    def _report(self, day: date) -> dict[str, str]:
        """The day's report to every report chat that has not got it (one an operator posted
        with `adsync report --post` is updated in place); chat -> message id of each."""
        try:
            posting = post_report(
                self.services, self.notifier, day, by="clock", update_existing=True, now=self.now
            )
        except AdsyncError as exc:  # the lease stuck elsewhere: the day's run is still recorded
            log.error("the report of %s was not posted: %s", day, exc.message)
            return {}
        return posting.messages

    def _refresh_reports(self, day: date) -> None:
        """After a retry, the morning's report cards show the new numbers."""
        refresh_reports(self.services, self.notifier, day)

    def _alerts_after(self, result: RunResult, day: date) -> None:
        if result.dead_chains:
            # One alert per dead authorization, naming its user and what it left unsynced.
            chains = {c.chain_id: c for c in self.services.tokens.chains()}
            for dead in result.dead_chains:
                chain = chains.get(dead.chain_id)
                if chain is not None:
                    self._authorization_alert(chain, AuthorizationNeeded(dead.reason))
        elif result.needs_authorization:
            self._authorization_alert(None, AuthorizationNeeded(result.error))
        if result.status == "failed" and not result.needs_authorization:
            self.notifier.alert(
                f"sync:failed:{self.today()}",
                "同步失败 · the daily sync failed",
                [result.error or "every account failed"]
                + cause_lines((a.label, a.reason) for a in result.failed),
            )
        if not result.accounts:
            return
        for anomaly in anomalies(
            self.services.store, day, self._scope(), self.settings.spend_alert_pct
        ):
            title = {
                "no_rows": "没有数据 · no rows at all",
                "went_silent": "账户无数据 · an account went silent",
                "spend_jump": "消耗异常上升 · spend jumped",
                "spend_drop": "消耗异常下降 · spend dropped",
                "no_conversions": "有消耗无转化 · spend without conversions",
            }[anomaly.rule]
            who = f"{anomaly.name} ({anomaly.account_id})" if anomaly.name else anomaly.account_id
            self.notifier.alert(anomaly.key, title, [who, anomaly.detail], severity="warning")

    def _account_changes(self, result: RunResult) -> None:
        """Accounts that appeared, vanished or were skipped since the last run (discovery
        says each change once): one card to the report chats, once per run."""
        if not result.account_changes or result.run_id is None:
            return
        card = cards.alert_card(
            "账户变化 · the accounts changed",
            [*result.account_changes, "`adsync accounts` / 账户 lists them all"],
            severity="warning",
            lang="zh",
        )
        self.notifier.broadcast(card, f"accounts:{result.run_id}")

    # -- helpers ------------------------------------------------------------------------------

    def _scope(self) -> list[Any]:
        return report_scope(self.services)

    def _load(self, key: str) -> dict[str, Any] | None:
        query = select(notifications).where(notifications.c.key == key)
        row = self.services.store.read(lambda conn: conn.execute(query).first())
        return json.loads(row.detail) if row is not None and row.detail else None

    def _save(self, key: str, record: dict[str, Any]) -> None:
        detail = json.dumps(record, ensure_ascii=False, default=str)
        with self.services.store.begin() as conn:
            changed = conn.execute(
                update(notifications).where(notifications.c.key == key).values(detail=detail)
            ).rowcount
            if not changed:
                conn.execute(
                    insert(notifications).values(key=key, sent_at=self.now(), detail=detail)
                )

    def _lease(self, name: str) -> _Held:
        return _Held(self, name)

    def _once(self, key: str) -> _Held:
        """Hold the job's lease, and only if ``key`` has not been done yet."""
        return _Held(self, f"job:{key}", done_key=key)


class _Held:
    """Context manager: ``True`` if this process holds the lease (and the job is not done)."""

    def __init__(self, clock: Clock, name: str, done_key: str | None = None) -> None:
        self.clock = clock
        self.name = name
        # Per thread: the catch-up job and the 07:00 job may overlap on the scheduler's
        # threads, and a holder that is "already ours" would let both in.
        self.holder = f"{clock.holder}:{threading.get_ident()}"
        self.done_key = done_key
        self.mine = False
        self._stop = threading.Event()

    def __enter__(self) -> bool:
        store = self.clock.services.store
        if self.done_key and self.clock._load(self.done_key) is not None:
            return False
        self.mine = store.acquire_lease(self.name, self.holder, JOB_LEASE)
        if not self.mine:
            log.info("%s is being run by %s", self.name, store.lease_holder(self.name))
            return False
        # Re-check under the lease: another process may have finished it a moment ago.
        if self.done_key and self.clock._load(self.done_key) is not None:
            return False
        threading.Thread(target=self._renew, daemon=True).start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(JOB_LEASE.total_seconds() / 3):
            self.clock.services.store.renew_lease(self.name, self.holder, JOB_LEASE)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.mine:
            self.clock.services.store.release_lease(self.name, self.holder)


def _whose(chain: Chain) -> list[str]:
    return [f"授权人 · authorized by: {chain.who} (ID {chain.chain_id})"]


def _moved_pct(before: Any, after: Any) -> float:
    if not before:
        return 0.0 if not after else 100.0
    return float((after - before) / before * 100)


# -- the scheduler ----------------------------------------------------------------------------


def build_scheduler(clock: Clock, blocking: bool) -> Any:
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    settings = clock.settings
    tz = settings.timezone  # explicit: containers often run in UTC
    kind = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = kind(
        timezone=tz,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3 * 3600},
    )
    at, settle = settings.daily_sync_at, settings.settle_at
    scheduler.add_job(
        clock.daily, CronTrigger(hour=at.hour, minute=at.minute, timezone=tz), id="daily"
    )
    scheduler.add_job(clock.retries, IntervalTrigger(minutes=5, timezone=tz), id="retries")
    scheduler.add_job(
        clock.token_watchdog, IntervalTrigger(minutes=30, timezone=tz), id="token_watchdog"
    )
    scheduler.add_job(
        clock.table_notices, IntervalTrigger(minutes=5, timezone=tz), id="table_notices"
    )
    scheduler.add_job(
        clock.settle, CronTrigger(hour=settle.hour, minute=settle.minute, timezone=tz), id="settle"
    )
    # Catch up once at start (a date job, so it runs on the scheduler's own threads).
    scheduler.add_job(clock.catch_up, "date", run_date=clock.now(), id="catch_up")

    def on_trouble(event: Any) -> None:
        exc = getattr(event, "exception", None)
        what = "failed" if exc else "missed its time"
        # The alert says what and what to do; the exception (whose text can carry values,
        # e.g. a database statement's) goes to the log only, through the redactor.
        if exc is not None:
            log.error("scheduled job %s failed", event.job_id, exc_info=exc)
        else:
            log.error("scheduled job %s missed its time", event.job_id)
        if isinstance(exc, AdsyncError):
            detail = exc.public_message
        elif exc is not None:
            database = type(exc).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "sqlite3")
            detail = (
                "数据库无法访问 · the database is not reachable"
                if database
                else f"意外错误 · an unexpected {type(exc).__name__} (details in the clock's log)"
            )
        else:
            detail = "the process was busy or stopped at the job's time"
        clock.notifier.alert(
            f"job:{event.job_id}:{what}",
            f"定时任务异常 · scheduled job {event.job_id} {what}",
            [detail, "the next run will try again; if it keeps failing, run `adsync doctor`"],
        )

    scheduler.add_listener(on_trouble, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    return scheduler


def build_clock(services: Services, messenger: Messenger | None) -> Clock:
    return Clock(services, Notifier(services.settings, services.store, messenger))


def start_background_clock(bot: Any) -> Any:
    """Inside `adsync serve`: the same jobs on a BackgroundScheduler (leases keep one runner
    even with several workers or instances)."""
    clock = build_clock(bot.actions.services, bot.messenger)
    scheduler = build_scheduler(clock, blocking=False)
    scheduler.start()
    return scheduler


def run_clock(services: Services) -> None:
    """`adsync clock`: the scheduler alone, in the foreground."""
    from adsync.sync.recovery import recover_after_crash

    def on_sigterm(*_: object) -> None:
        # A platform stopping the process (SIGTERM) ends what the main thread is doing, as
        # Ctrl-C does: start-up, or the scheduler's loop; the shutdown below then runs outside
        # the handler. (Calling shutdown inside it deadlocked when the signal landed in the
        # executor's submit, which holds the lock shutdown takes.) A running job's transaction
        # ends cleanly — the interpreter waits for its thread — and an interrupted sync is
        # simply repeated by the next run (every write is an upsert).
        raise SystemExit(0)

    # Taken first, so a SIGTERM during start-up also ends the process cleanly.
    signal.signal(signal.SIGTERM, on_sigterm)
    scheduler: Any = None
    try:
        recover_after_crash(services.store)  # runs and leases a killed predecessor left behind
        messenger = None
        settings = services.settings
        if settings.feishu_app_id and settings.feishu_app_secret:
            messenger = Messenger(settings)
        else:
            log.warning("FEISHU_APP_ID/SECRET not set: reports and alerts go to the webhook only")
        clock = build_clock(services, messenger)
        scheduler = build_scheduler(clock, blocking=True)
        log.info(
            "clock started: daily at %s, settle at %s (%s)",
            settings.daily_sync_at.strftime("%H:%M"),
            settings.settle_at.strftime("%H:%M"),
            settings.timezone,
        )
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)
    log.info("clock stopped")


__all__ = ["Clock", "build_clock", "build_scheduler", "run_clock", "start_background_clock"]
