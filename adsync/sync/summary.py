"""Totals, per-account figures, change against the previous period and a daily trend — all
from the local copy, never from the Bitable (fast, and right even when Feishu is down).

A day nobody has synced yet is not a day of zero spend: counted as zero it would show every
account at −100 %. The summary knows which days (and which accounts' days) were synced — the
ledger's finished runs and the rows of the local copy say so — names the rest as "not synced
yet", and gives no change against a period it cannot compare.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from adsync.sync.reports import CENT, Account, cost_per, dates_between
from adsync.sync.store import Store, report_rows, run_accounts, runs


@dataclass
class Totals:
    cost: Decimal = Decimal("0.00")
    show_cnt: int = 0
    click_cnt: int = 0
    convert_cnt: int = 0
    clue_cnt: int = 0
    rows: int = 0

    def merge(self, other: Totals) -> None:
        self.cost += other.cost
        self.show_cnt += other.show_cnt
        self.click_cnt += other.click_cnt
        self.convert_cnt += other.convert_cnt
        self.clue_cnt += other.clue_cnt
        self.rows += other.rows

    @property
    def conversion_cost(self) -> Decimal | None:
        return cost_per(self.cost, self.convert_cnt)

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
    # False when a day of either period was never synced for this account: no change is shown.
    comparable: bool = True

    @property
    def cost_change(self) -> float | None:
        return change(self.totals.cost, self.previous.cost) if self.comparable else None


@dataclass
class DayPoint:
    day: date
    cost: Decimal
    convert_cnt: int
    rows: int
    synced: bool = True  # False: no sync has covered this day yet (its 0 is unknown, not zero)


@dataclass
class Summary:
    start: date
    end: date
    totals: Totals
    previous: Totals  # the same number of days right before ``start``
    accounts: list[AccountSummary]
    trend: list[DayPoint]  # the 7 days ending at ``end``
    silent_accounts: list[Account] = field(default_factory=list)  # synced, no rows
    not_synced: list[date] = field(default_factory=list)  # days of the period nobody synced
    previous_not_synced: list[date] = field(default_factory=list)  # same, previous period
    unsynced_accounts: list[Account] = field(default_factory=list)  # in scope, a day missing

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def synced(self) -> bool:
        """Some day of the period has been synced (else there is nothing to show)."""
        return len(self.not_synced) < self.days

    @property
    def comparable(self) -> bool:
        """Both periods fully synced: only then is a change against the previous one true."""
        return not self.not_synced and not self.previous_not_synced

    @property
    def cost_change(self) -> float | None:
        return change(self.totals.cost, self.previous.cost) if self.comparable else None

    @property
    def convert_change(self) -> float | None:
        if not self.comparable:
            return None
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
            "synced": self.synced,
            "comparable": self.comparable,
            "not_synced": [d.isoformat() for d in self.not_synced],
            "previous_not_synced": [d.isoformat() for d in self.previous_not_synced],
            "accounts": [
                {
                    "account_id": a.account_id,
                    "name": a.name,
                    "totals": a.totals.to_json(),
                    "previous": a.previous.to_json(),
                    "cost_change": a.cost_change,
                    "comparable": a.comparable,
                }
                for a in self.accounts
            ],
            "trend": [
                {
                    "day": p.day.isoformat(),
                    "cost": str(p.cost) if p.synced else None,
                    "convert_cnt": p.convert_cnt if p.synced else None,
                    "synced": p.synced,
                }
                for p in self.trend
            ],
            "silent_accounts": [{"account_id": a.id, "name": a.name} for a in self.silent_accounts],
            "unsynced_accounts": [
                {"account_id": a.id, "name": a.name} for a in self.unsynced_accounts
            ],
        }


def synced_days(store: Store, start: date, end: date) -> dict[str, set[date]]:
    """The days of ``start..end`` each account has been synced: covered by a finished run that
    fetched the account (ok, or no data), or present in the local copy."""
    query = (
        select(run_accounts.c.account_id, runs.c.date_from, runs.c.date_to)
        .join(runs, runs.c.id == run_accounts.c.run_id)
        .where(
            runs.c.finished_at.is_not(None),
            run_accounts.c.status.in_(("ok", "no_data")),
            runs.c.date_from <= end,
            runs.c.date_to >= start,
        )
        .distinct()
    )
    out: dict[str, set[date]] = defaultdict(set)
    for account_id, first, last in store.read(lambda conn: conn.execute(query).all()):
        out[account_id].update(dates_between(max(first, start), min(last, end)))
    return out


def summarize(store: Store, start: date, end: date, scope: Sequence[Account] = ()) -> Summary:
    days = (end - start).days + 1
    prev_start, prev_end = start - timedelta(days=days), start - timedelta(days=1)
    trend_start = min(end - timedelta(days=6), prev_start)
    names: dict[str, str] = {a.id: a.name for a in scope}
    cells = account_days(store, trend_start, end, names)
    covered = synced_days(store, trend_start, end)
    for account_id, day in cells:  # rows in the local copy: that day was synced
        covered[account_id].add(day)
    any_account = set().union(*covered.values()) if covered else set()
    period, previous_period = dates_between(start, end), dates_between(prev_start, prev_end)
    totals, previous = Totals(), Totals()
    per_account: dict[str, tuple[Totals, Totals]] = defaultdict(lambda: (Totals(), Totals()))
    by_day: dict[date, Totals] = defaultdict(Totals)
    for (account_id, day), cell in cells.items():
        if start <= day <= end:
            totals.merge(cell)
            per_account[account_id][0].merge(cell)
        elif prev_start <= day <= prev_end:
            previous.merge(cell)
            per_account[account_id][1].merge(cell)
        if day >= end - timedelta(days=6):
            by_day[day].merge(cell)

    def complete(account_id: str, wanted: list[date]) -> bool:
        return covered.get(account_id, set()).issuperset(wanted)

    accounts = sorted(
        (
            AccountSummary(
                aid,
                names.get(aid, ""),
                now,
                before,
                comparable=complete(aid, period) and complete(aid, previous_period),
            )
            for aid, (now, before) in per_account.items()
            if now.rows or complete(aid, period)  # not "−100 %": not synced yet
        ),
        key=lambda a: (-a.totals.cost, a.account_id),
    )
    trend = [
        DayPoint(d, by_day[d].cost, by_day[d].convert_cnt, by_day[d].rows, d in any_account)
        for d in (end - timedelta(days=n) for n in range(6, -1, -1))
    ]
    with_rows = {a.account_id for a in accounts if a.totals.rows}
    # An account is behind when it lacks a day others have; days nobody synced are said once
    # for the whole summary (``not_synced``), not once per account.
    others_have = [d for d in period if d in any_account]
    unsynced = [a for a in scope if not complete(a.id, others_have)]
    silent = [a for a in scope if a.id not in with_rows and complete(a.id, others_have)]
    return Summary(
        start,
        end,
        totals,
        previous,
        accounts,
        trend,
        silent,
        not_synced=[d for d in period if d not in any_account],
        previous_not_synced=[d for d in previous_period if d not in any_account],
        unsynced_accounts=unsynced,
    )


def daily_totals(store: Store, start: date, end: date) -> dict[date, Totals]:
    """Per-day totals (used by alerts: 7-day averages, zero-row days)."""
    out: dict[date, Totals] = defaultdict(Totals)
    for (_account_id, day), cell in account_days(store, start, end).items():
        out[day].merge(cell)
    return dict(out)


def account_days(
    store: Store, start: date, end: date, names: dict[str, str] | None = None
) -> dict[tuple[str, date], Totals]:
    """Totals per (account, day) of ``start..end``, summed by the database: a summary of a
    week of 80 accounts is some 600 groups, not 11,000 rows turned into Python objects (that
    work would run on the web process's GIL, between webhook acknowledgements). Account names
    seen in the rows fill in ``names`` where it has none."""
    c = report_rows.c
    query = (
        select(
            c.account_id,
            c.stat_date,
            func.max(c.account_name),
            func.sum(c.cost_cents),
            func.sum(c.show_cnt),
            func.sum(c.click_cnt),
            func.sum(c.convert_cnt),
            func.sum(c.clue_cnt),
            func.count(),
        )
        .where(c.stat_date >= start, c.stat_date <= end)
        .group_by(c.account_id, c.stat_date)
    )
    found = store.read(lambda conn: conn.execute(query).all())
    out: dict[tuple[str, date], Totals] = {}
    for account_id, day, name, cents, shows, clicks, converts, clues, count in found:
        out[(account_id, day)] = Totals(
            cost=(Decimal(int(cents or 0)) / 100).quantize(CENT),
            show_cnt=int(shows or 0),
            click_cnt=int(clicks or 0),
            convert_cnt=int(converts or 0),
            clue_cnt=int(clues or 0),
            rows=int(count),
        )
        if names is not None and name and not names.get(account_id):
            names[account_id] = name
    return out


@dataclass(frozen=True)
class Anomaly:
    """Something in a day's numbers a person should look at."""

    rule: str  # went_silent | spend_jump | spend_drop | no_conversions | no_rows
    account_id: str
    name: str
    day: date
    detail: str

    @property
    def key(self) -> str:
        return f"data:{self.rule}:{self.account_id}:{self.day.isoformat()}"


def anomalies(
    store: Store, day: date, scope: Sequence[Account], spend_change_pct: float = 50.0
) -> list[Anomaly]:
    """The data alert rules for ``day`` (normally yesterday), read from the local copy:

    * an account that spent the day before and shows nothing (went_silent);
    * spend up or down more than ``spend_change_pct`` % against its 7-day average
      (spend_jump / spend_drop; the average over the 7 days before ``day`` that the local
      copy holds — a day the account had no rows while others did counts as 0, a day with no
      rows at all was never synced and is left out — only when that average is above 0);
    * conversions at 0 while spend continued (no_conversions: spend on ``day`` and on the
      day before, and conversions on neither);
    * zero rows in total where the day before had rows (no_rows, account_id "*").
    """
    cells = account_days(store, day - timedelta(days=7), day)
    # The days before that the copy holds: right after installing it holds only the lookback
    # days, and counting the rest as zero spend would say "spend jumped" for every account.
    known = {d for (_aid, d) in cells if d < day}
    names = {a.id: a.name for a in scope}
    found: list[Anomaly] = []
    before = day - timedelta(days=1)
    total_today = sum(t.rows for (aid, d), t in cells.items() if d == day)
    total_before = sum(t.rows for (aid, d), t in cells.items() if d == before)
    if total_today == 0 and total_before > 0:
        found.append(
            Anomaly("no_rows", "*", "", day, f"0 rows on {day}, {total_before} the day before")
        )
    for account in scope:
        today_t = cells.get((account.id, day), Totals())
        before_t = cells.get((account.id, before), Totals())
        name = names.get(account.id, "")
        if before_t.cost > 0 and today_t.rows == 0:
            found.append(
                Anomaly(
                    "went_silent",
                    account.id,
                    name,
                    day,
                    f"spent ¥{before_t.cost:,.2f} on {before}, nothing on {day}",
                )
            )
            continue
        week = [cells.get((account.id, d), Totals()).cost for d in known]
        average = sum(week, Decimal(0)) / len(known) if known else Decimal(0)
        if average > 0 and today_t.rows:
            moved = float((today_t.cost - average) / average * 100)
            if abs(moved) > spend_change_pct:
                rule = "spend_jump" if moved > 0 else "spend_drop"
                found.append(
                    Anomaly(
                        rule,
                        account.id,
                        name,
                        day,
                        f"spend ¥{today_t.cost:,.2f} is {moved:+.0f}% against the 7-day "
                        f"average ¥{average:,.2f}",
                    )
                )
        if (
            today_t.cost > 0
            and before_t.cost > 0
            and today_t.convert_cnt == 0
            and before_t.convert_cnt == 0
        ):
            found.append(
                Anomaly(
                    "no_conversions",
                    account.id,
                    name,
                    day,
                    f"¥{today_t.cost + before_t.cost:,.2f} spent over two days with 0 conversions",
                )
            )
    return found


def seven_day_average(store: Store, day: date) -> Totals:
    """Per-day average of the 7 days before ``day`` that the local copy holds (a day with no
    rows at all was never synced: unknown, not zero — see ``anomalies``)."""
    days = daily_totals(store, day - timedelta(days=7), day - timedelta(days=1))
    known = len(days)
    if not known:
        return Totals()
    total = Totals()
    for t in days.values():
        total.merge(t)
    return Totals(
        cost=(total.cost / known).quantize(CENT),
        show_cnt=round(total.show_cnt / known),
        click_cnt=round(total.click_cnt / known),
        convert_cnt=round(total.convert_cnt / known),
        clue_cnt=round(total.clue_cnt / known),
        rows=round(total.rows / known),
    )
