"""Accounts in scope, and their daily promotion rows from the local-push report, normalised.

Normalised means: ids as text (they are 19-digit integers, above 2^53, so never floats), money
as ``Decimal`` to the cent (the client parses JSON numbers as ``Decimal``, never float), dates
as ``date`` objects in the business time zone (the platform reports Beijing dates).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update

from adsync.sync.config import Settings
from adsync.sync.errors import AdsyncError
from adsync.sync.oceanengine import OceanEngineAPI, PermanentError
from adsync.sync.store import Store, accounts, utcnow

PROMOTION_REPORT = "/open_api/v3.0/local/report/promotion/get/"
METRICS = ("stat_cost", "show_cnt", "click_cnt", "convert_cnt", "clue_pay_order_cnt")
PAGE_SIZE = 100  # the largest the endpoint accepts (10, 20, 50, 100)
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Account:
    id: str
    name: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})" if self.name else self.id


@dataclass(frozen=True)
class ReportRow:
    """One row per (date, local account, promotion): the unit of the Bitable and the local copy."""

    stat_date: date
    account_id: str
    account_name: str
    project_id: str
    project_name: str
    promotion_id: str
    promotion_name: str
    cost: Decimal  # yuan, two decimals
    show_cnt: int
    click_cnt: int
    convert_cnt: int
    clue_cnt: int

    @property
    def sync_key(self) -> str:
        return sync_key(self.stat_date, self.account_id, self.promotion_id)

    @property
    def conversion_cost(self) -> Decimal | None:
        return cost_per(self.cost, self.convert_cnt)

    @property
    def cost_cents(self) -> int:
        return int(self.cost * 100)


def row_values(row: ReportRow) -> dict[str, Any]:
    """A row's values by column key, normalised the way ``read`` normalises stored ones."""
    return {
        "date": row.stat_date,
        "account_id": row.account_id,
        "account_name": row.account_name,
        "project_id": row.project_id,
        "project_name": row.project_name,
        "promotion_id": row.promotion_id,
        "promotion_name": row.promotion_name,
        "cost": row.cost.quantize(CENT, rounding=ROUND_HALF_UP),
        "show_cnt": row.show_cnt,
        "click_cnt": row.click_cnt,
        "convert_cnt": row.convert_cnt,
        "conversion_cost": row.conversion_cost,
        "clue_cnt": row.clue_cnt,
        "sync_key": row.sync_key,
    }


def cost_per(cost: Decimal, count: int) -> Decimal | None:
    """Cost per conversion to the cent (half up); None — an empty cell — without conversions."""
    if not count:
        return None
    return (cost / count).quantize(CENT, rounding=ROUND_HALF_UP)


def sync_key(stat_date: date, account_id: str, promotion_id: str) -> str:
    return f"{stat_date.isoformat()}|{account_id}|{promotion_id}"


def to_cents(value: Any) -> Decimal:
    """A yuan amount from the platform (Decimal, int or numeric string) to the cent."""
    try:
        return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)
    except ArithmeticError:
        raise ValueError(f"not an amount: {value!r}") from None


def _count(value: Any) -> int:
    if value in (None, ""):
        return 0
    number = Decimal(str(value))
    if number != number.to_integral_value():
        raise ValueError(f"not a whole count: {value!r}")
    return int(number)


def normalise(raw: dict[str, Any], account: Account) -> ReportRow:
    """One platform row into a ``ReportRow``; raises ValueError naming what is malformed."""
    try:
        return ReportRow(
            stat_date=date.fromisoformat(str(raw["stat_time_day"])[:10]),
            account_id=account.id,
            account_name=account.name,
            project_id=str(raw.get("project_id") or ""),
            project_name=str(raw.get("project_name") or ""),
            promotion_id=str(raw["promotion_id"]),
            promotion_name=str(raw.get("promotion_name") or ""),
            cost=to_cents(raw.get("stat_cost") or 0),
            show_cnt=_count(raw.get("show_cnt")),
            click_cnt=_count(raw.get("click_cnt")),
            convert_cnt=_count(raw.get("convert_cnt")),
            clue_cnt=_count(raw.get("clue_pay_order_cnt")),
        )
    except KeyError as exc:
        raise ValueError(f"report row without {exc.args[0]}") from None


def fetch_rows(api: OceanEngineAPI, account: Account, start: date, end: date) -> list[ReportRow]:
    """Every promotion row of ``account`` from ``start`` to ``end`` (one call per page covers
    the whole range at daily granularity)."""
    params = {
        "local_account_id": account.id,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "time_granularity": "TIME_GRANULARITY_DAILY",
        "metrics": list(METRICS),
    }
    rows: dict[str, ReportRow] = {}
    for page in api.pages(PROMOTION_REPORT, params, "promotion_list", page_size=PAGE_SIZE):
        for raw in page:
            try:
                row = normalise(raw, account)
            except ValueError as exc:
                raise PermanentError(PROMOTION_REPORT, 0, f"malformed row: {exc}") from None
            if start <= row.stat_date <= end:
                rows[row.sync_key] = row  # a row repeated across pages counts once
    return sorted(rows.values(), key=lambda r: (r.stat_date, r.promotion_id))


# -- accounts ----------------------------------------------------------------------------------


class AccountsError(AdsyncError):
    exit_code = 2


def resolve_accounts(settings: Settings, store: Store, granted: tuple[str, ...]) -> list[Account]:
    """Accounts in scope: ``ADSYNC_ACCOUNTS`` if set; else the 本地推 accounts discovery found
    (``adsync.sync.discovery``: direct ones, those of organisations and 来客 accounts); before
    any discovery ran, the authorization's granted ids. Names: configured, else cached."""
    cached = _cached_names(store)
    if settings.accounts:
        result = [Account(a.id, a.name or cached.get(a.id, "")) for a in settings.accounts]
        remember(store, result, source="config")
        return result
    query = (
        select(accounts.c.account_id, accounts.c.name, accounts.c.scope, accounts.c.note)
        .where(accounts.c.scope.is_not(None))
        .order_by(accounts.c.account_id)
    )
    rows = store.read(lambda conn: conn.execute(query).all())
    if rows:
        found = [Account(r.account_id, r.name or "") for r in rows if r.scope == "in"]
        if found:
            return found
        skipped = [f"{r.name or r.account_id}: {r.note}" for r in rows if r.scope == "skipped"]
        raise AccountsError(
            "no accounts in scope: the authorization reaches no 本地推 account"
            + (f" ({'; '.join(skipped[:5])})" if skipped else ""),
            hint="`adsync accounts` says why each granted account is skipped; set "
            "ADSYNC_ACCOUNTS=id[:name],... or authorize the 本地推 accounts (or their 巨量工作台)",
        )
    if not granted:
        raise AccountsError(
            "no accounts in scope: ADSYNC_ACCOUNTS is empty and the authorization granted none",
            hint="set ADSYNC_ACCOUNTS=id[:name],... or authorize again ticking the accounts",
        )
    return [Account(i, cached.get(i, "")) for i in granted]


def _cached_names(store: Store) -> dict[str, str]:
    found = store.read(lambda conn: conn.execute(select(accounts)).all())
    return {r.account_id: r.name for r in found if r.name}


def remember(store: Store, found: list[Account], source: str) -> None:
    """Cache accounts and their names (a configured name wins over a cached one)."""
    now = utcnow()
    with store.begin() as conn:
        known = {r.account_id: r for r in conn.execute(select(accounts))}
        for account in found:
            if account.id not in known:
                conn.execute(
                    insert(accounts).values(
                        account_id=account.id, name=account.name, source=source, seen_at=now
                    )
                )
            elif account.name and account.name != known[account.id].name:
                conn.execute(
                    update(accounts)
                    .where(accounts.c.account_id == account.id)
                    .values(name=account.name, seen_at=now)
                )


@dataclass(frozen=True)
class AccountState:
    id: str
    name: str
    source: str
    last_synced_at: datetime | None
    last_outcome: str | None
    last_reason: str | None


def account_states(store: Store) -> dict[str, AccountState]:
    found = store.read(
        lambda conn: conn.execute(select(accounts).order_by(accounts.c.account_id)).all()
    )
    return {
        r.account_id: AccountState(
            r.account_id, r.name, r.source, r.last_synced_at, r.last_outcome, r.last_reason
        )
        for r in found
    }


# The platform's business day: report dates and its 365-day window are Beijing dates.
REPORT_ZONE = ZoneInfo("Asia/Shanghai")


def report_today() -> date:
    """Today as Ocean Engine counts it (its report window is measured from this day)."""
    return datetime.now(REPORT_ZONE).date()


def dates_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]
