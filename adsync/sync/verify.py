"""Reconcile the Bitable against the local copy: rows missing, duplicated or different, and
(with ``fix``) repair them with the same routed upsert a sync uses.

Each date is checked in its home table (rolling tables: adsync.sync.tables); a date whose
table was deleted by a person, or that has no table yet, has every row missing, and ``fix``
recreates the table and rewrites it as the next sync would."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from adsync.sync import localcopy
from adsync.sync.leases import holding
from adsync.sync.reports import dates_between
from adsync.sync.services import Services
from adsync.sync.store import actor, utcnow
from adsync.sync.tables import Registry, write_lease


@dataclass
class VerifyResult:
    start: date
    end: date
    local_rows: int
    table_rows: int
    missing: list[str] = field(default_factory=list)  # keys in the local copy, not in the table
    duplicated: list[str] = field(default_factory=list)  # keys with more than one record
    different: list[str] = field(default_factory=list)  # keys whose values differ
    extra: list[str] = field(default_factory=list)  # keys in the table only (left alone)
    fixed: bool = False
    tables: list[str] = field(default_factory=list)  # the tables checked ("name (tbl…)")

    @property
    def clean(self) -> bool:
        return not (self.missing or self.duplicated or self.different)

    @property
    def exit_code(self) -> int:
        return 0 if self.clean or self.fixed else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "local_rows": self.local_rows,
            "table_rows": self.table_rows,
            "missing": self.missing,
            "duplicated": self.duplicated,
            "different": self.different,
            "extra": self.extra,
            "clean": self.clean,
            "fixed": self.fixed,
            "tables": self.tables,
        }


def verify(services: Services, start: date, end: date, fix: bool = False) -> VerifyResult:
    from adsync.sync.routing import RoutedUpsert, TableSet

    settings, store = services.settings, services.store
    if settings.feishu_bitable_table_id:  # before the first sync since upgrading
        Registry(store, str(settings.feishu_bitable_app_token)).remember_legacy(
            settings.feishu_bitable_table_id
        )
    local = localcopy.load(store, start, end)
    tables = TableSet(settings, store)
    names = {r.account_name: r.account_id for r in local if r.account_name}
    where = tables.where_dates(dates_between(start, end))
    live = tables.live()
    by_table: dict[str | None, list[date]] = defaultdict(list)
    for day, table_id in where.items():
        by_table[table_id if table_id in live else None].append(day)
    result = VerifyResult(start, end, local_rows=len(local), table_rows=0)
    by_id = {t.table_id: t for t in tables.registry.tables()}
    for table_id, days in sorted(by_table.items(), key=lambda kv: str(kv[0])):
        wanted = set(days)
        rows = [r for r in local if r.stat_date in wanted]
        if table_id is None:  # no table (yet, or any more): every row is missing
            result.missing += [r.sync_key for r in rows]
            continue
        sink = tables.sink(table_id)
        sink.prepare(create_missing=fix)
        stored = sink.read(sorted(days), account_names=names)
        plan = sink.plan(rows, stored)
        record_keys = {r.record_id: r.key for r in stored}
        local_keys = {r.sync_key for r in rows}
        result.table_rows += len(stored)
        result.missing += [r.sync_key for r in plan.creates]
        result.duplicated += sorted({record_keys[i] for i in plan.deletes})
        result.different += [u.row.sync_key for u in plan.updates]
        result.extra += sorted({r.key for r in stored if r.key not in local_keys})
        known = by_id.get(table_id)
        result.tables.append(f"{known.name} ({table_id})" if known else table_id)
    for name in ("missing", "duplicated", "different", "extra"):
        setattr(result, name, sorted(set(getattr(result, name))))
    if fix and not result.clean:
        # The local copy again, through the routed upsert under the Base's writer lease:
        # what is missing is created, what differs updated, duplicates removed, a deleted
        # table recreated, each date in its own table.
        with holding(store, [write_lease(settings)], f"{actor()}:verify", wait=600):
            routed = RoutedUpsert(
                TableSet(settings, store),
                dates_between(start, end),
                run_tag=f"verify-{utcnow():%Y%m%dT%H%M%S%f}",
                synced_at=utcnow(),
                account_names=names,
            )
            routed.open()
            routed.add(local)
            routed.finish()
        result.fixed = True
    return result
