"""Date arguments of the CLI: ``yesterday``, ``today``, ``YYYY-MM-DD``, ``A..B``."""

from __future__ import annotations

from datetime import date, timedelta

from adsync.sync.errors import ConfigError

FORMAT = "yesterday, today, YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"


class DateError(ConfigError):
    """Bad date input: exit code 2 with the expected format."""


def parse_day(text: str, today: date) -> date:
    word = text.strip().lower()
    if word == "yesterday":
        return today - timedelta(days=1)
    if word == "today":
        return today
    try:
        return date.fromisoformat(word)
    except ValueError:
        raise DateError(f"{text!r} is not a date", hint=f"use {FORMAT}") from None


def parse_when(text: str | None, today: date, max_days: int = 366) -> tuple[date, date]:
    """A day or an inclusive range; the default is yesterday."""
    if not text:
        day = today - timedelta(days=1)
        return day, day
    first, sep, last = text.partition("..")
    start = parse_day(first, today)
    end = parse_day(last, today) if sep else start
    if start > end:
        raise DateError(f"{text!r} starts after it ends", hint=f"use {FORMAT}")
    if end > today:
        raise DateError(f"{end} is in the future", hint="the report has no numbers for it yet")
    if (end - start).days + 1 > max_days:
        raise DateError(f"{text!r} spans more than {max_days} days", hint="sync it in parts")
    return start, end
