"""Telling the group about the Base's tables, once each: a new table started (its name and a
link), a table a person deleted and adsync recreated, and — a week ahead — the table new days
go into expected to fill at the current rate.

The sync side records the facts (adsync.sync.tables: the registry of tables, and the forecast
from the local copy's rows per day) and knows nothing about chat; this module speaks. Each
message is claimed in the registry before it is sent (``announced_at``, ``fill_warned_at``: a
conditional update, so two clocks never both speak), and given back when nobody received it
(bot and webhook both failed), so the next sweep tries again. The clock sweeps after each of
its runs and every few minutes, which also covers tables started by a chat or CLI sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date

from adsync.bot import cards
from adsync.bot.alerts import Notifier
from adsync.sync.services import Services
from adsync.sync.tables import (
    CONFIGURED,
    DELETED,
    FULL,
    Forecast,
    Registry,
    TableRecord,
    forecast,
    table_link,
)

log = logging.getLogger("adsync.table_notices")


class TableNotices:
    def __init__(self, services: Services, notifier: Notifier, today: Callable[[], date]) -> None:
        self.services = services
        self.settings = services.settings
        self.notifier = notifier
        self.today = today

    def send(self) -> list[str]:
        """Every message due; returns the titles sent (for logs and tests)."""
        app = self.settings.feishu_bitable_app_token
        if not app:
            return []
        registry = Registry(self.services.store, app)
        sent: list[str] = []
        for table in registry.tables():
            if table.origin == CONFIGURED or table.status == DELETED or table.announced_at:
                continue
            if table.replaces and table.rows is None:
                continue  # recreated, its rows not yet rewritten: told once they are
            at = registry.claim(table.table_id, "announced_at")
            if at is None:
                continue  # another process is telling them
            title, lines, severity = self._started(table, registry)
            if self._deliver(title, lines, severity, table.table_id, f"table:{table.table_id}"):
                sent.append(title)
            else:
                registry.unclaim(table.table_id, "announced_at", at)
        outlook = forecast(self.services.store, self.settings, self.today())
        if outlook is not None and outlook.warn:
            at = registry.claim(outlook.table_id, "fill_warned_at")
            if at is not None:
                title, lines = self._filling(outlook)
                key = f"table-fill:{outlook.table_id}"
                if self._deliver(title, lines, "warning", outlook.table_id, key):
                    sent.append(title)
                else:
                    registry.unclaim(outlook.table_id, "fill_warned_at", at)
        return sent

    # -- the messages -----------------------------------------------------------------------------

    def _started(self, table: TableRecord, registry: Registry) -> tuple[str, list[str], str]:
        spans = registry.spans()
        first, last, count = spans.get(table.table_id, (None, None, 0))
        held = f"{first}..{last} ({count} 天 · days)" if count else ""
        if table.replaces:
            rows = f"{table.rows:,}" if table.rows is not None else "all"
            return (
                "数据表被删除，已重建 · a deleted table was recreated",
                [
                    f"**{table.name}** 在多维表格中被删除；adsync 以同样的名称和字段重建了它，"
                    f"并从本地副本写回了 {rows} 行 · was deleted in the Base; adsync recreated it "
                    f"({table.table_id}) and rewrote {rows} rows from its local copy",
                    *([f"日期 · dates: {held}"] if held else []),
                    *self._configured_note(table),
                ],
                "warning",
            )
        if table.period == FULL:
            why = "上一张表已满 · the previous table is full"
        elif table.part > 1:
            why = f"{table.period} 的上一张表已满 · {table.period}'s previous table is full"
        else:
            why = f"{table.period} 的数据写入这张表 · rows of {table.period} go here"
        found = (
            " (在多维表格中按名称找到 · found by its name in the Base)"
            if table.origin == "found"
            else ""
        )
        return (
            "新数据表已启用 · a new table was started",
            [f"**{table.name}**{found}", why, *([f"日期 · dates: {held}"] if held else [])],
            "ok",
        )

    def _configured_note(self, table: TableRecord) -> list[str]:
        if table.replaces and table.replaces == self.settings.feishu_bitable_table_id:
            return [
                f"请把 FEISHU_BITABLE_TABLE_ID 改为 {table.table_id} · set "
                f"FEISHU_BITABLE_TABLE_ID={table.table_id} (adsync follows it meanwhile)"
            ]
        return []

    def _filling(self, f: Forecast) -> tuple[str, list[str]]:
        share = 100 * f.rows / f.max_rows if f.max_rows else 100.0
        then = "满后 adsync 会自动启用下一张表 · adsync starts the next table by itself then"
        return (
            "数据表即将写满 · a table fills within a week",
            [
                f"**{f.name}**: {f.rows:,} / {f.max_rows:,} 行 · rows ({share:.0f}%)",
                f"按每天约 {f.per_day:,.0f} 行，约 {f.days_to_full:.0f} 天后（{f.full_on}）写满 · "
                f"at ~{f.per_day:,.0f} rows a day it is full in about {f.days_to_full:.0f} days "
                f"({f.full_on})",
                then,
            ],
        )

    def _deliver(
        self, title: str, lines: list[str], severity: str, table_id: str, key: str
    ) -> bool:
        link = table_link(self.settings, table_id)
        card = cards.alert_card(
            title,
            lines,
            severity=severity,
            buttons=[("打开数据表 · Open the table", link)],
            lang="zh",
        )
        delivered = self.notifier.broadcast(card, key)
        if any(d.via != "failed" for d in delivered):
            log.info("told the group: %s (%s)", title, table_id)
            return True
        log.error("could not tell the group: %s (%s); will try again", title, table_id)
        return False


__all__ = ["TableNotices"]
