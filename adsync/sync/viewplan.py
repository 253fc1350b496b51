"""Which per-account views should exist, and what adsync remembers of those it made.

The rule (what a team lead expects to find): **every table holds a view for each account
whose rows it holds, and the table new days go into also holds one for every account in
scope** (a new account's rows land there from its first sync). A table adsync starts gets the
views of the table it follows as well (``follow``), so people find "their" account in the new
table as in the old. Old tables are not given views of accounts that appeared after them (they
hold none of their rows); views are never deleted (an account that left keeps its history).

The ledger (``bitable_views``) is what makes a sync cheap: deciding whether any view is
missing or must be renamed is a local question (``to_do``), and only the tables it names are
looked at on the platform. This module makes no Feishu call and imports no lark-oapi.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from adsync.sync.store import (
    BACKGROUND_WAIT_SECONDS,
    Store,
    accounts,
    bitable_views,
    report_rows,
    table_dates,
    utcnow,
)
from adsync.sync.tables import DELETED, TableRecord, current_table

PENDING, CREATING, OK, FAILED = "pending", "creating", "ok", "failed"
MAX_VIEW_NAME = 100  # characters (app-table-view create/patch: "长度不超过 100 个字符")
FORBIDDEN = str.maketrans({"[": "(", "]": ")"})  # "不包含这些特殊符号：[ ]"


@dataclass(frozen=True)
class LedgerRow:
    table_id: str
    account_id: str
    view_id: str | None
    view_name: str | None
    account_name: str | None
    state: str
    note: str | None


class Ledger:
    """The views of one Base as adsync last left them. Written only under the Base's writer
    lease; every write is an upsert, so rerunning it after a lost commit changes nothing."""

    def __init__(self, store: Store, app_token: str) -> None:
        self.store, self.app = store, app_token

    def rows(self, table_id: str | None = None) -> dict[tuple[str, str], LedgerRow]:
        query = select(bitable_views).where(bitable_views.c.app_token == self.app)
        if table_id is not None:
            query = query.where(bitable_views.c.table_id == table_id)
        found = self.store.read(lambda conn: conn.execute(query).all())
        return {
            (r.table_id, r.account_id): LedgerRow(
                r.table_id, r.account_id, r.view_id, r.view_name, r.account_name, r.state, r.note
            )
            for r in found
        }

    def put(self, table_id: str, account_id: str, **values: Any) -> None:
        """Set the row's columns named in ``values`` (the others keep theirs)."""
        insert = pg_insert if self.store.dialect == "postgresql" else sqlite_insert
        row = {"state": PENDING, **values, "updated_at": utcnow()}
        stmt = insert(bitable_views).values(
            app_token=self.app, table_id=table_id, account_id=account_id, **row
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[
                bitable_views.c.app_token,
                bitable_views.c.table_id,
                bitable_views.c.account_id,
            ],
            set_={k: stmt.excluded[k] for k in [*values, "updated_at"]},
        )
        self.store.transact(
            lambda conn: conn.execute(stmt), wait=BACKGROUND_WAIT_SECONDS, idempotent=True
        )

    def follow(self, table_id: str, source: str | None) -> int:
        """A table adsync just started: it is to get the views ``source`` has (as pending rows,
        so a crash before they are made leaves them wanted). Returns how many."""
        if source is None:
            return 0
        wanted = [r for r in self.rows(source).values() if r.view_id or r.state != FAILED]
        for row in wanted:
            self.put(table_id, row.account_id, account_name=row.account_name, state=PENDING)
        return len(wanted)


# -- what should exist ---------------------------------------------------------------------------


def held_accounts(store: Store, app_token: str) -> dict[str, set[str]]:
    """table_id -> the accounts whose rows the local copy says it holds (each date's rows are
    in its home table)."""
    query = (
        select(table_dates.c.table_id, report_rows.c.account_id)
        .select_from(
            report_rows.join(table_dates, report_rows.c.stat_date == table_dates.c.stat_date)
        )
        .where(table_dates.c.app_token == app_token)
        .distinct()
    )
    out: dict[str, set[str]] = {}
    for table_id, account_id in store.read(lambda conn: conn.execute(query).all()):
        out.setdefault(table_id, set()).add(account_id)
    return out


def known_names(store: Store) -> dict[str, str]:
    """Every account name adsync knows: the accounts table (kept current by discovery and
    ``ADSYNC_ACCOUNTS``)."""
    found = store.read(
        lambda conn: conn.execute(select(accounts.c.account_id, accounts.c.name)).all()
    )
    return {r.account_id: r.name for r in found if r.name}


def wanted_views(
    store: Store,
    app_token: str,
    tables: Iterable[TableRecord],
    roll: str,
    today: date,
    scope: Mapping[str, str],
) -> dict[str, dict[str, str]]:
    """table_id -> {account_id: account name} of the views each live table should hold.
    ``tables``: the registered tables the platform still lists; ``scope``: the accounts in
    scope, with names."""
    live = [t for t in tables if t.status != DELETED]
    current = current_table(live, roll, today)
    current_id = current.table_id if current is not None else None
    ids = [t.table_id for t in live]
    held = held_accounts(store, app_token)
    pending = Ledger(store, app_token).rows()
    names = {**known_names(store), **{k: v for k, v in scope.items() if v}}
    out: dict[str, dict[str, str]] = {}
    for table_id in ids:
        accounts_ = set(held.get(table_id, set()))
        if table_id == current_id:
            accounts_ |= set(scope)
        accounts_ |= {a for (t, a), r in pending.items() if t == table_id}
        out[table_id] = {a: names.get(a, "") for a in sorted(accounts_)}
    return out


def to_do(
    wanted: Mapping[str, Mapping[str, str]], ledger: Mapping[tuple[str, str], LedgerRow]
) -> list[str]:
    """The tables where a view is missing, unfinished, failed before, or named after an
    account name that changed: the only ones a sync looks at on the platform."""
    tables = []
    for table_id, accounts_ in wanted.items():
        for account_id, name in accounts_.items():
            row = ledger.get((table_id, account_id))
            if row is None or row.state != OK or (name and row.account_name != name):
                tables.append(table_id)
                break
    return tables


# -- names ---------------------------------------------------------------------------------------


def view_name(account_name: str, account_id: str) -> str:
    """The view's name: the account's name (its id when it has none), without the characters
    the platform refuses, at most 100 characters."""
    base = (account_name or "").translate(FORBIDDEN).strip() or account_id
    return base[:MAX_VIEW_NAME]


def free_name(wanted: str, account_id: str, taken: set[str]) -> str:
    """``wanted``, or — when another view of the table (a person's, or another account's of
    the same name) has it — ``wanted (account id)``, then ``… #2`` and so on."""
    if wanted not in taken:
        return wanted
    n = 1
    while True:
        suffix = f" ({account_id})" + (f" #{n}" if n > 1 else "")
        candidate = wanted[: MAX_VIEW_NAME - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        n += 1
