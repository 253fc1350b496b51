"""``adsync accounts --check`` and doctor's account step: does each account in scope answer?

One call per account: the promotion report the sync uses (``v3.0/local/report/promotion/get``),
for one day, first page of 10 — the cheapest question that fails exactly as the sync would.
Each failure is named with the platform's code and the fix for that code. The reasons an
account fails here and nowhere earlier:

* 40001 "账户ID错误": the id is not a ``local_account_id``; usually the company's 巨量广告 广告主
  id, which the authorization lists as ADVERTISER like a 本地推 account (the ktao 本地推
  project hit exactly this, reference notes §1.5). The platform's code for it is not in any
  source found; it is a parameter error (40001 family) in the sandbox, and any 40001 here gets
  this fix, since the sync's own parameters are known good.
* 40002: the authorization does not reach the account (a configured id outside the grant, or
  an account whose relationship was removed).
* 40118: the app lacks the 本地推 report API.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from adsync.sync import discovery
from adsync.sync.errors import AuthorizationNeeded
from adsync.sync.oceanengine import OceanEngineError, TransientError
from adsync.sync.reports import PROMOTION_REPORT, Account
from adsync.sync.services import Services

FIXES = {
    40001: (
        "this id is not a 本地推 account id (a 巨量广告 广告主 id is refused like this): use the "
        "本地推账户ID (本地推 → 账户设置 → 账户信息) in ADSYNC_ACCOUNTS, or authorize the 本地推 "
        "account itself (or the 巨量工作台 / 来客 account that manages it)"
    ),
    40002: (
        "the authorization does not reach this account: authorize again ticking it (or its "
        "巨量工作台 / 来客 account), or take it out of ADSYNC_ACCOUNTS"
    ),
    40118: "the Ocean Engine app has no permission for the 本地推 report API: apply for it on "
    "open.oceanengine.com (应用管理 → 接口权限), then authorize again",
}
TRANSIENT_FIX = "Ocean Engine did not answer in time: run the check again in a few minutes"
OTHER_FIX = "see the platform's message; `adsync doctor` checks the rest of the setup"


@dataclass(frozen=True)
class ProbeResult:
    account: Account
    ok: bool
    code: int = 0
    error: str = ""
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.account.id,
            "name": self.account.name,
            "ok": self.ok,
            "code": self.code or None,
            "error": self.error or None,
            "fix": self.fix or None,
        }


@dataclass
class AccountCheck:
    day: date
    view: discovery.AccountsView
    results: list[ProbeResult] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # found by the refresh before the check

    @property
    def failed(self) -> list[ProbeResult]:
        return [r for r in self.results if not r.ok]

    @property
    def exit_code(self) -> int:
        """0 every account answers; 1 some fail (as a partly failed sync)."""
        return 1 if self.failed else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "checked": len(self.results),
            "failed": len(self.failed),
            "results": [r.to_json() for r in self.results],
        }


def fix_for(exc: OceanEngineError) -> str:
    if isinstance(exc, TransientError):
        return TRANSIENT_FIX
    return FIXES.get(exc.code, OTHER_FIX)


def probe_one(services: Services, account: Account, day: date) -> ProbeResult:
    client = services.new_client()
    params = {
        "local_account_id": account.id,
        "start_date": day.isoformat(),
        "end_date": day.isoformat(),
        "time_granularity": "TIME_GRANULARITY_DAILY",
        "metrics": ["stat_cost"],
        "page": 1,
        "page_size": 10,
    }
    try:
        services.api(client).get(PROMOTION_REPORT, params)
    except OceanEngineError as exc:
        return ProbeResult(account, False, exc.code, exc.message, fix_for(exc))
    finally:
        client.close()
    return ProbeResult(account, True)


def probe(services: Services, scope: list[Account], day: date) -> list[ProbeResult]:
    """Every account, a few at a time (ADSYNC_CONCURRENCY, under the shared rate limit), in
    ``scope`` order. A dead authorization stops the check: AuthorizationNeeded."""
    if not scope:
        return []
    results: dict[str, ProbeResult] = {}
    workers = min(services.settings.concurrency, len(scope))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool:
        futures = {pool.submit(probe_one, services, a, day): a for a in scope}
        try:
            for future in as_completed(futures):
                result = future.result()
                results[result.account.id] = result
        except AuthorizationNeeded:
            for other in futures:
                other.cancel()
            raise
    return [results[a.id] for a in scope]


def check_accounts(services: Services, day: date) -> AccountCheck:
    """Refresh the discovered list (unless ADSYNC_ACCOUNTS is set), then probe every account in
    scope. Raises AccountsError (nothing in scope) or AuthorizationNeeded."""
    refreshed = discovery.refresh(services)
    if refreshed.refused is not None:
        raise refreshed.refused
    view = discovery.account_view(
        services.settings, services.store, services.tokens.granted_account_ids()
    )
    view.problems = refreshed.problems
    if view.empty is not None:
        raise view.empty
    scope = [Account(a.id, a.name) for a in view.accounts]
    changes = discovery.describe(refreshed.changes)
    return AccountCheck(day, view, probe(services, scope, day), changes)


def summary_line(check: AccountCheck) -> str:
    n, bad = len(check.results), len(check.failed)
    if not bad:
        return f"all {n:,} accounts answer a 1-day report ({check.day})"
    return f"{bad:,} of {n:,} accounts fail a 1-day report ({check.day})"


def failure_lines(check: AccountCheck) -> list[str]:
    return [f"{r.account.label}: {r.error}" for r in check.failed]


__all__ = [
    "AccountCheck",
    "ProbeResult",
    "check_accounts",
    "probe",
    "summary_line",
]
