"""Totals, per-account figures, change against the previous period and a daily trend — all
from the local copy, never from the Bitable (fast, and right even when Feishu is down)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, select

from adsync.sync.reports import Account, ReportRow
from adsync.sync.store import Store, report_rows

CENT = Decimal("0.01")


@dataclass
class Totals:
    cost: Decimal = Decimal("0.00")
    show_cnt: int = 0
    click_cnt: int = 0
    convert_cnt: int = 0
    clue_cnt: int = 0
    rows: int = 0

    def add(self, row: ReportRow) -> None:
        self.cost += row.cost
        self.show_cnt += row.show_cnt
        self.click_cnt += row.click_cnt
        self.convert_cnt += row.convert_cnt
        self.clue_cnt += row.clue_cnt
        self.rows += 1

    @property
    def conversion_cost(self) -> Decimal | None:
        if not self.convert_cnt:
            return None
        return (self.cost / self.convert_cnt).quantize(CENT, rounding=ROUND_HALF_UP)

    @property
    def ctr(self) -> float | None:
        return self.click_cnt / self.show_cnt if self.show_cnt else None

    def to_json(self) -> dict[str, Any]:
        cc = self.conversion_cost
        return {
            "cost": str(self.cost.quantize(CENT)),
            "show_cnt": self.show_cnt,
            "click_cnt": self.click_cnt,
            "convert_cnt": self.convert_cnt,
            "clue_cnt": self.clue_cnt,
            "conversion_cost": None if cc is None else str(cc),
            "rows": self.rows,
        }


def change(now: Decimal | int, before: Decimal | int) -> float | None:
    """Relative change; None when there is nothing to compare against."""
    if not before:
        return None
    return float((Decimal(now) - Decimal(before)) / Decimal(before))


@dataclass
class AccountSummary:
    account_id: str
    name: str
    totals: Totals
    previous: Totals

    @property
    def cost_change(self) -> float | None:
        return change(self.totals.cost, self.previous.cost)


@dataclass
class DayPoint:
    day: date
    cost: Decimal
    convert_cnt: int
    rows: int


@dataclass
class Summary:
    start: date
    end: date
    totals: Totals
    previous: Totals  # the same number of days right before ``start``
    accounts: list[AccountSummary]
    trend: list[DayPoint]  # the 7 days ending at ``end``
    silent_accounts: list[Account] = field(default_factory=list)  # in scope, no rows

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def cost_change(self) -> float | None:
        return change(self.totals.cost, self.previous.cost)

    @property
    def convert_change(self) -> float | None:
        return change(self.totals.convert_cnt, self.previous.convert_cnt)

    @property
    def label(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}..{self.end}"

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "totals": self.totals.to_json(),
            "previous": self.previous.to_json(),
            "cost_change": self.cost_change,
            "accounts": [
                {
                    "account_id": a.account_id,
                    "name": a.name,
                    "totals": a.totals.to_json(),
                    "previous": a.previous.to_json(),
                    "cost_change": a.cost_change,
                }
                for a in self.accounts
            ],
            "trend": [
                {"day": p.day.isoformat(), "cost": str(p.cost), "convert_cnt": p.convert_cnt}
                for p in self.trend
            ],
            "silent_accounts": [{"account_id": a.id, "name": a.name} for a in self.silent_accounts],
        }


def load_rows(store: Store, start: date, end: date) -> list[ReportRow]:
    with store.engine.connect() as conn:
        found = conn.execute(
            select(report_rows).where(
                report_rows.c.stat_date >= start, report_rows.c.stat_date <= end
            )
        ).all()
    return [
        ReportRow(
            stat_date=r.stat_date,
            account_id=r.account_id,
            account_name=r.account_name,
            project_id=r.project_id,
            project_name=r.project_name,
            promotion_id=r.promotion_id,
            promotion_name=r.promotion_name,
            cost=(Decimal(r.cost_cents) / 100).quantize(CENT),
            show_cnt=r.show_cnt,
            click_cnt=r.click_cnt,
            convert_cnt=r.convert_cnt,
            clue_cnt=r.clue_cnt,
        )
        for r in found
    ]


def summarize(store: Store, start: date, end: date, scope: Sequence[Account] = ()) -> Summary:
    days = (end - start).days + 1
    prev_start, prev_end = start - timedelta(days=days), start - timedelta(days=1)
    trend_start = min(end - timedelta(days=6), prev_start)
    rows = load_rows(store, trend_start, end)
    totals, previous = Totals(), Totals()
    per_account: dict[str, tuple[Totals, Totals]] = defaultdict(lambda: (Totals(), Totals()))
    names: dict[str, str] = {a.id: a.name for a in scope}
    by_day: dict[date, Totals] = defaultdict(Totals)
    for row in rows:
        if start <= row.stat_date <= end:
            totals.add(row)
            per_account[row.account_id][0].add(row)
        elif prev_start <= row.stat_date <= prev_end:
            previous.add(row)
            per_account[row.account_id][1].add(row)
        if row.stat_date >= end - timedelta(days=6):
            by_day[row.stat_date].add(row)
        names.setdefault(row.account_id, row.account_name)
    accounts = sorted(
        (
            AccountSummary(aid, names.get(aid, ""), now, before)
            for aid, (now, before) in per_account.items()
        ),
        key=lambda a: (-a.totals.cost, a.account_id),
    )
    trend = [
        DayPoint(d, by_day[d].cost, by_day[d].convert_cnt, by_day[d].rows)
        for d in (end - timedelta(days=n) for n in range(6, -1, -1))
    ]
    with_rows = {a.account_id for a in accounts if a.totals.rows}
    silent = [a for a in scope if a.id not in with_rows]
    return Summary(start, end, totals, previous, accounts, trend, silent)


def daily_totals(store: Store, start: date, end: date) -> dict[date, Totals]:
    """Per-day totals (used by alerts: 7-day averages, zero-row days)."""
    out: dict[date, Totals] = defaultdict(Totals)
    for row in load_rows(store, start, end):
        out[row.stat_date].add(row)
    return dict(out)


def account_days(store: Store, start: date, end: date) -> dict[tuple[str, date], Totals]:
    out: dict[tuple[str, date], Totals] = defaultdict(Totals)
    for row in load_rows(store, start, end):
        out[(row.account_id, row.stat_date)].add(row)
    return dict(out)


def row_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(report_rows)).scalar() or 0)


def group(rows: Iterable[ReportRow]) -> Totals:
    totals = Totals()
    for row in rows:
        totals.add(row)
    return totals
