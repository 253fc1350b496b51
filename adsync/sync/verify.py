"""Reconcile the Bitable against the local copy: rows missing, duplicated or different, and
(with ``fix``) repair them with the same upsert a sync uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from adsync.sync import localcopy
from adsync.sync.leases import holding
from adsync.sync.reports import dates_between
from adsync.sync.services import Services
from adsync.sync.store import actor, utcnow


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
        }


def verify(services: Services, start: date, end: date, fix: bool = False) -> VerifyResult:
    from adsync.sync.bitable import BitableSink

    settings = services.settings
    local = localcopy.load(services.store, start, end)
    sink = BitableSink(settings)
    sink.prepare(create_missing=fix)
    names = {r.account_name: r.account_id for r in local if r.account_name}
    dates = dates_between(start, end)
    stored = sink.read(dates, account_names=names)
    plan = sink.plan(local, stored)
    by_id = {r.record_id: r.key for r in stored}
    local_keys = {r.sync_key for r in local}
    result = VerifyResult(
        start,
        end,
        local_rows=len(local),
        table_rows=len(stored),
        missing=sorted(r.sync_key for r in plan.creates),
        duplicated=sorted({by_id[i] for i in plan.deletes}),
        different=sorted(u.row.sync_key for u in plan.updates),
        extra=sorted({r.key for r in stored if r.key not in local_keys}),
    )
    if fix and not result.clean:
        table = f"{settings.feishu_bitable_app_token}:{settings.feishu_bitable_table_id}"
        with holding(services.store, [f"write:{table}"], f"{actor()}:verify", wait=600):
            sink.apply(plan, run_tag=f"verify-{utcnow():%Y%m%dT%H%M%S%f}", synced_at=utcnow())
        result.fixed = True
    return result
