"""Small text helpers for terminal output."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo


def duration(seconds: int | float | None) -> str:
    """3d 4h, 5h 12m, 12m, 'expired 2h ago'."""
    if seconds is None:
        return "—"
    if seconds < 0:
        return f"expired {duration(-seconds)} ago"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


def when(value: datetime | None, tz: ZoneInfo) -> str:
    if value is None:
        return "—"
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def print_json(doc: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(doc, ensure_ascii=False, indent=2, default=str) + "\n")


def table(rows: list[list[str]], out: TextIO | None = None) -> None:
    """Left-aligned columns; wide characters (中文) count as two cells."""
    out = out or sys.stdout
    if not rows:
        return
    widths = [max(_cells(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        parts = [cell + " " * (widths[i] - _cells(cell)) for i, cell in enumerate(row)]
        out.write("  ".join(parts).rstrip() + "\n")


def _cells(text: str) -> int:
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)
