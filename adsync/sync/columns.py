"""The Bitable row contract (DESIGN.md): field names, their kinds, and how an existing table's
columns map onto them. No Feishu code here, so configuration can validate a mapping cheaply."""

from __future__ import annotations

from dataclasses import dataclass

# Feishu field types used here (bitable v1 `type`).
TEXT, NUMBER, DATE = 1, 2, 5


@dataclass(frozen=True)
class Column:
    key: str  # the logical name used in code
    name: str  # the default field name in the Bitable
    type: int  # the type created when the field is missing
    formatter: str = ""  # number / date display format when created

    @property
    def property(self) -> dict[str, str] | None:
        if self.type == NUMBER:
            return {"formatter": self.formatter or "0"}
        if self.type == DATE:
            return {"date_formatter": self.formatter or "yyyy/MM/dd"}
        return None


COLUMNS: tuple[Column, ...] = (
    Column("date", "日期", DATE, "yyyy/MM/dd"),
    Column("account_id", "账户ID", TEXT),
    Column("account_name", "账户名称", TEXT),
    Column("project_id", "项目ID", TEXT),
    Column("project_name", "项目名称", TEXT),
    Column("promotion_id", "单元ID", TEXT),
    Column("promotion_name", "单元名称", TEXT),
    Column("cost", "消耗(元)", NUMBER, "0.00"),
    Column("show_cnt", "展示数", NUMBER, "0"),
    Column("click_cnt", "点击数", NUMBER, "0"),
    Column("convert_cnt", "转化数", NUMBER, "0"),
    Column("conversion_cost", "转化成本(元)", NUMBER, "0.00"),
    Column("clue_cnt", "团购线索数", NUMBER, "0"),
    Column("sync_key", "同步键", TEXT),
    Column("synced_at", "同步时间", DATE, "yyyy/MM/dd HH:mm"),
)
DEFAULT_NAMES = {c.name for c in COLUMNS}
BY_NAME = {c.name: c for c in COLUMNS}


def parse_field_map(raw: str) -> tuple[tuple[str, str], ...]:
    """``日期=时间,账户名称=账户`` -> ((default name, existing name), ...).

    The left side is a default field name from DESIGN.md; the right side the column of an
    existing table that holds it. Unmapped fields keep their default names."""
    pairs = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        default, sep, actual = (s.strip() for s in item.partition("="))
        if not sep or not actual:
            raise ValueError(f"expected 默认字段=现有字段 pairs, got {item!r}")
        if default not in DEFAULT_NAMES:
            known = "、".join(c.name for c in COLUMNS)
            raise ValueError(f"{default!r} is not one of the fields: {known}")
        pairs.append((default, actual))
    return tuple(pairs)
