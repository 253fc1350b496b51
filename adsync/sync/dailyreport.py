"""The daily report of one day: what the clock posts at 07:00 and what `adsync report` and the
chat's `report` show — one result object, so the three can never tell different stories.

It is read from the local copy and the run ledger only, never from a run in hand: the
failures are the accounts whose latest outcome for that day (among the finished runs that
fetched them for it) is a failure. Right after the daily run that is the daily run's failed
accounts; after a retry, the ones still failing; after someone synced one account again,
that account's new outcome — the same answer whoever asks, whenever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select

from adsync.sync.errors import AdsyncError
from adsync.sync.reports import Account, resolve_accounts
from adsync.sync.runner import FAILED, AccountResult
from adsync.sync.services import Services
from adsync.sync.store import Store, accounts, run_accounts, runs
from adsync.sync.summary import Summary, Totals, seven_day_average, summarize


@dataclass
class DailyReport:
    day: date
    summary: Summary
    failures: list[AccountResult]
    average: Totals  # the per-day average of the 7 days before, as the copy holds them

    @property
    def synced(self) -> bool:
        """Some account's numbers for the day are known (else the card says "not synced")."""
        return self.summary.synced

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "synced": self.synced,
            "summary": self.summary.to_json(),
            "failures": [
                {"account_id": a.account_id, "name": a.name, "reason": a.reason}
                for a in self.failures
            ],
            "seven_day_average": self.average.to_json(),
        }


def report_scope(services: Services) -> list[Account]:
    """The accounts in scope, or none when that cannot be said (the report still shows the
    copy's numbers; an empty scope only loses the names of silent accounts)."""
    try:
        return resolve_accounts(
            services.settings, services.store, services.tokens.granted_account_ids()
        )
    except AdsyncError:
        return []


def daily_report(services: Services, day: date) -> DailyReport:
    scope = report_scope(services)
    store = services.store
    return DailyReport(
        day,
        summarize(store, day, day, scope),
        failures_on(store, day, {a.id: a.name for a in scope}),
        seven_day_average(store, day),
    )


def failures_on(store: Store, day: date, names: dict[str, str]) -> list[AccountResult]:
    """Accounts whose latest outcome for ``day`` is a failure, ordered as a run orders them
    (by name, then id). Latest by when the run finished: runs of one day take turns (day
    leases), but a run's id is taken before it waits for its turn."""
    query = (
        select(
            run_accounts.c.account_id,
            run_accounts.c.status,
            run_accounts.c.reason,
            accounts.c.name,
        )
        .join(runs, runs.c.id == run_accounts.c.run_id)
        .outerjoin(accounts, accounts.c.account_id == run_accounts.c.account_id)
        .where(runs.c.finished_at.is_not(None), runs.c.date_from <= day, runs.c.date_to >= day)
        .order_by(runs.c.finished_at, runs.c.id, run_accounts.c.id)
    )
    latest: dict[str, Any] = {}
    for row in store.read(lambda conn: conn.execute(query).all()):
        latest[row.account_id] = row  # later rows win
    failed = [
        AccountResult(r.account_id, names.get(r.account_id) or r.name or "", FAILED, r.reason or "")
        for r in latest.values()
        if r.status == FAILED
    ]
    return sorted(failed, key=lambda a: (a.name, a.account_id))


__all__ = ["DailyReport", "daily_report", "failures_on", "report_scope"]
