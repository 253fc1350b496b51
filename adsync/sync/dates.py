"""The one date grammar of adsync: what the CLI and the chat accept as a day or a range.

``yesterday``/``今天``/``前天``, ``2026-02-11``, ``02-11``, ``2月11日``, ``20260211``, ranges with
``..``, ``至``, ``到``, ``~`` or ``to`` (``2月1日至7日``), ``last 7 days``/``近7天``/``近一周`` and
``3 days ago``/``3天前``. ``adsync sync 2月1日至7日`` and ``@adsync 同步 2月1日至7日`` mean the same
days because both read them here. The module is pure (no clock: the caller passes ``today``,
the business day in ``ADSYNC_TIMEZONE``), so the webhook can parse inside its acknowledgement.

Every error is a ``DateError`` (a ``ConfigError``: exit code 2 on the command line) carrying the
message in English and in Chinese, each with the forms that work.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from datetime import date, timedelta

from adsync.sync.errors import ConfigError

__all__ = [
    "DATE_HINT_EN",
    "DATE_HINT_ZH",
    "DATEISH_CHARS",
    "MONTH_HINT_EN",
    "MONTH_HINT_ZH",
    "REPORT_WINDOW_DAYS",
    "DateError",
    "check_reportable",
    "check_span",
    "dateish",
    "dates_arg",
    "day_spans",
    "month_end",
    "not_a_date",
    "parse_period",
    "parse_when",
    "period_arg",
    "period_label",
    "shift",
    "span_at_end",
    "span_at_start",
    "spans_text",
    "take_months",
    "take_span",
]

# The local report answers only for the last 365 days: start_date >= today - 365 (Ocean Engine's
# /open_api/v3.0/local/report/promotion/get/, reference notes oceanengine.md §2).
REPORT_WINDOW_DAYS = 365


class DateError(ConfigError):
    """A date argument that cannot be used; ``en`` and ``zh`` are the message in each
    language (``message`` is the English one, for the command line)."""

    def __init__(self, en: str, zh: str = "", hint: str = "") -> None:
        super().__init__(en, hint)
        self.en = en
        self.zh = zh or en


def _is_word(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


DATE_HINT_EN = (
    "Dates: yesterday, today, 2026-02-11, 02-11 or 2月11日; "
    "ranges: 02-01..02-07, 2月1日至7日 or last 7 days."
)
DATE_HINT_ZH = "日期可以写：昨天、前天、今天、2026-02-11、02-11、2月11日；范围：2月1日至2月7日、02-01..02-07、近7天。"

_KEYWORD_OFFSETS = {
    "day before yesterday": -2,
    "yesterday": -1,
    "yesterdays": -1,
    "today": 0,
    "todays": 0,
    "tomorrow": 1,
    "tomorrows": 1,
    "大前天": -3,
    "前天": -2,
    "昨天": -1,
    "昨日": -1,
    "今天": 0,
    "今日": 0,
    "明天": 1,
    "明日": 1,
    "后天": 2,
}
_ZH_NUM = "零一二两三四五六七八九十百"
_NUMBER = rf"[0-9]{{1,4}}|[{_ZH_NUM}]{{1,4}}"

# One day. Digits are [0-9] (not \d) so exotic Unicode digits are never fed to int().
_DAY = re.compile(
    r"""
      (?P<kw>day\sbefore\syesterday|(?:yesterday|today|tomorrow)s?)(?![a-z0-9])
    | (?P<zkw>大前天|前天|昨天|昨日|今天|今日|明天|明日|后天)
    | (?P<y>[0-9]{4})(?P<sep>[-/.])(?P<m>[0-9]{1,2})(?P=sep)(?P<d>[0-9]{1,2})(?![0-9])
    | (?P<cy>[0-9]{4})\s?年\s?(?P<cm>[0-9]{1,2})\s?月\s?(?P<cd>[0-9]{1,2})\s?[日号]?
    | (?P<compact>[0-9]{8})(?![0-9])
    | (?P<sm>[0-9]{1,2})[-/](?P<sd>[0-9]{1,2})(?![0-9])
    | (?P<zm>[0-9]{1,2})\s?月\s?(?P<zd>[0-9]{1,2})\s?[日号]?
    """,
    re.IGNORECASE | re.VERBOSE,
)
_BARE_DAY = re.compile(r"(?P<d>[0-9]{1,2})\s?[日号]")  # "2月1日至7日": only as a range's end
_RANGE_SEP = re.compile(
    r"\s?(?:\.{2,3}|至|到|~|〜|—|–|-(?!-))\s?|\s(?:to|until|till|through)\s", re.IGNORECASE
)
_FROM = re.compile(r"(?:from\s|从\s?)", re.IGNORECASE)
_LAST_N = re.compile(
    rf"""
      (?:the\s)?(?:last|past)\s(?P<n>[0-9]{{1,4}})\s(?P<unit>days?|weeks?)(?![a-z0-9])
    | (?:最近|近|过去|前)\s?(?P<zn>{_NUMBER})\s?(?:个\s?)?(?P<zunit>天|日|周|星期|礼拜)
    """,
    re.IGNORECASE | re.VERBOSE,
)
_AGO = re.compile(
    rf"(?P<n>[0-9]{{1,4}})\sdays?\sago(?![a-z0-9])|(?P<zn>{_NUMBER})\s?(?:天|日)前",
    re.IGNORECASE,
)
DATEISH_CHARS = re.compile(r"[0-9./~年月日号天周-]+")
_DATE_WORDS_EN = ("yesterday", "today", "tomorrow")
_DATE_PREFIXES_ZH = (
    "昨",
    "前天",
    "大前天",
    "明天",
    "明日",
    "后天",
    "最近",
    "过去",
    "上周",
    "本周",
    "这周",
    "上个",
    "上月",
    "本月",
    "这个月",
)
_NEAR_N = re.compile(rf"近(?:{_NUMBER})")


def _zh_int(text: str) -> int:
    """'7' / '七' / '十五' / '两' -> int (small numbers only; the regex bounds the length)."""
    if text.isascii():
        return int(text)
    digits = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"两": 2}
    total, current = 0, 0
    for ch in text:
        if ch in digits:
            current = digits[ch]
        else:  # 十 or 百
            total += (current or 1) * (10 if ch == "十" else 100)
            current = 0
    return total + current


def shift(day: date, days: int) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        raise DateError("That date is out of range.", "日期超出范围。") from None


def _make_date(year: int, month: int, day: int, shown: str) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        raise DateError(
            f'There is no date "{shown}". {DATE_HINT_EN}', f"没有“{shown}”这一天。{DATE_HINT_ZH}"
        ) from None


def _recent(month: int, day: int, today: date, shown: str) -> date:
    """MM-DD without a year: the most recent such day not after today (January's 12-30 is
    last year's)."""
    _make_date(2000, month, day, shown)  # a leap year: 02-29 is a real day, 02-30 is not
    for year in range(today.year, max(today.year - 9, 0), -1):  # 02-29 may be 8 years back
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate <= today:
            return candidate
    raise DateError(f'"{shown}" is out of range.', f"“{shown}”超出范围。")


def _take_day(
    text: str, pos: int, today: date, anchor: date | None = None
) -> tuple[date, int] | None:
    """One day at ``text[pos:]`` -> (day, end position); None if it doesn't start with one."""
    ago = _AGO.match(text, pos)  # "3 days ago", "3天前"
    if ago:
        return shift(today, -_zh_int(ago["n"] or ago["zn"])), ago.end()
    m = _DAY.match(text, pos)
    if m is None:
        if anchor is None:
            return None
        bare = _BARE_DAY.match(text, pos)
        if bare is None:
            return None
        return _make_date(anchor.year, anchor.month, int(bare["d"]), bare.group()), bare.end()
    shown = m.group()
    if m["kw"] or m["zkw"]:
        key = " ".join((m["kw"] or m["zkw"]).lower().split())
        return shift(today, _KEYWORD_OFFSETS[key]), m.end()
    if m["y"]:
        return _make_date(int(m["y"]), int(m["m"]), int(m["d"]), shown), m.end()
    if m["cy"]:
        return _make_date(int(m["cy"]), int(m["cm"]), int(m["cd"]), shown), m.end()
    if m["compact"]:
        c = m["compact"]
        return _make_date(int(c[:4]), int(c[4:6]), int(c[6:]), shown), m.end()
    month, day = (m["sm"], m["sd"]) if m["sm"] else (m["zm"], m["zd"])
    return _recent(int(month), int(day), today, shown), m.end()


def _relative(text: str, today: date) -> tuple[date, date, int] | None:
    """'last 7 days' / '近7天' / '近一周': whole days ending yesterday."""
    m = _LAST_N.match(text)
    if m:
        count = _zh_int(m["n"] or m["zn"])
        unit = (m["unit"] or m["zunit"]).lower()
        days = count * (7 if unit.startswith("week") or unit in ("周", "星期", "礼拜") else 1)
        if days < 1:
            raise DateError("Count at least 1 day.", "天数至少为 1。")
        end = shift(today, -1)
        return shift(end, -(days - 1)), end, m.end()
    return None


def take_span(text: str, today: date) -> tuple[date, date, int] | None:
    """A day or a range at the start of ``text`` -> (start, end, end position), unchecked."""
    relative = _relative(text, today)
    if relative is not None:
        return relative
    opener = _FROM.match(text)
    first = _take_day(text, opener.end() if opener else 0, today)
    if first is None:
        return None
    start, pos = first
    sep = _RANGE_SEP.match(text, pos)
    if sep is None:
        return start, start, pos
    second = _take_day(text, sep.end(), today, anchor=start)
    if second is None:
        raise DateError(
            f"The range needs an end date. {DATE_HINT_EN}", f"范围缺少结束日期。{DATE_HINT_ZH}"
        )
    return start, second[0], second[1]


def check_span(start: date, end: date, today: date, max_days: int) -> None:
    if start > end:
        raise DateError(
            f"The range {start}..{end} ends before it starts; put the earlier date first "
            f"({end}..{start}).",
            f"范围 {start}..{end} 的结束早于开始；请把较早的日期写在前面（{end}..{start}）。",
        )
    if end > today:
        raise DateError(
            f"{end} is in the future (today is {today}); there are no numbers for it yet.",
            f"{end} 还没到（今天是 {today}），还没有数据。",
        )
    days = (end - start).days + 1
    if days > max_days:
        raise DateError(
            f"{start}..{end} is {days} days; at most {max_days} days at a time, "
            "so split it into smaller ranges.",
            f"{start}..{end} 共 {days} 天，一次最多 {max_days} 天，请分成几段。",
        )


def _first_word(text: str) -> str:
    return text.split(" ", 1)[0]


def dateish(word: str) -> bool:
    """Does this word look like an attempt at a date (so a misread date is an error, not an
    account name)? Pure digits never do: they are account ids or parts of them."""
    low = word.lower()
    if not low or (low.isascii() and low.isdigit()):
        return False
    if DATEISH_CHARS.fullmatch(low) and any(ch.isdigit() for ch in low):
        return True
    if low in ("last", "past") or difflib.get_close_matches(low, _DATE_WORDS_EN, 1, 0.75):
        return True
    return low.startswith(_DATE_PREFIXES_ZH) or bool(_NEAR_N.match(low))


def not_a_date(text: str) -> DateError:
    """The error for an argument that should have been a date; ``text`` starts with it."""
    words = text.split(" ")
    # "last week" / "past month": show the phrase and point at the form that exists.
    word = " ".join(words[:2]) if words[0].lower() in ("last", "past") else words[0]
    near = difflib.get_close_matches(words[0].lower(), _DATE_WORDS_EN, 1, 0.75)
    hint_en = f" Did you mean {near[0]}?" if near else ""
    if words[0].lower() in ("last", "past"):
        hint_en = ' Did you mean "last 7 days"?'
    return DateError(
        f'I couldn\'t read "{word}" as a date.{hint_en} {DATE_HINT_EN}',
        f"“{word}”不是能识别的日期。{DATE_HINT_ZH}",
    )


_FILLER = re.compile(r"(?:的\s?)?(?:广告\s?)?(?:数据|报表|报告)|(?:data|numbers)(?![a-z0-9])", re.I)


def span_at_start(args: str, today: date) -> tuple[date, date, str] | None:
    """A date argument at the start of ``args`` -> (start, end, what follows), else None."""
    span = take_span(args, today)
    if span is None:
        return None
    start, end, pos = span
    rest = args[pos:]
    # "2026-02-11abc": the date ran into something else; say so rather than guess.
    if rest and not rest[0].isspace() and (_is_word(rest[0]) or rest[0] in "-/.~"):
        raise not_a_date(args)
    rest = rest.strip()
    filler = _FILLER.match(rest)  # "同步昨天的数据", "sync yesterdays data"
    if filler:
        rest = rest[filler.end() :].strip()
    return start, end, rest


def span_at_end(args: str, today: date) -> tuple[date, date, str, str] | None:
    """'同步 门店A 昨天': a date after the account -> (start, end, account, date text)."""
    words = args.split(" ")
    for k in range(min(4, len(words) - 1), 0, -1):  # up to "from A to B"; keep one word
        tail = " ".join(words[-k:])
        try:
            span = take_span(tail, today)
        except DateError:
            if k == 1:
                raise  # "门店A 02-30": the last word is a bad date, say so
            continue
        if span is not None and span[2] == len(tail):
            return span[0], span[1], " ".join(words[:-k]), tail
    return None


def dates_arg(args: str, today: date, max_days: int) -> tuple[date, date, str]:
    """The date argument of summary/verify: a day or range, default yesterday; rest after."""
    found = span_at_start(args, today)
    if found is None:
        if args:
            raise not_a_date(args)
        yesterday = shift(today, -1)
        found = (yesterday, yesterday, "")
    start, end, rest = found
    check_span(start, end, today, max_days)
    return start, end, rest


# -- what the command line and the chat share beyond the grammar ---------------------------------


def check_reportable(start: date, today: date) -> None:
    """Ocean Engine's local report refuses a start date more than a year back (40001 for every
    account): say so once, with the limit, before any account is asked."""
    oldest = today - timedelta(days=REPORT_WINDOW_DAYS)
    if start < oldest:
        raise DateError(
            f"{start} is more than {REPORT_WINDOW_DAYS} days ago; Ocean Engine's local report "
            f"only goes back to {oldest}.",
            f"{start} 早于 {REPORT_WINDOW_DAYS} 天前；巨量本地推报表最早只能查到 {oldest}。",
            hint=f"choose dates from {oldest} on",
        )


def _clean(text: str) -> str:
    """Command-line words -> the text the grammar reads (as the chat's ``normalize`` does for
    messages: full-width forms folded, one space between words)."""
    text = unicodedata.normalize("NFKC", text.replace("…", " ").replace("⋯", " "))
    return " ".join(text.split())


def parse_when(text: str | None, today: date, max_days: int = 366) -> tuple[date, date]:
    """A whole command-line argument -> (start, end): one day or a range; yesterday when
    empty. Anything after the date is an error, not ignored."""
    args = _clean(text or "")
    start, end, rest = dates_arg(args, today, max_days)
    if rest:
        raise DateError(
            f'I couldn\'t read "{args}" as a date: "{rest}" is left over. {DATE_HINT_EN}',
            f"“{args}”不是能识别的日期：多出了“{rest}”。{DATE_HINT_ZH}",
        )
    return start, end


# -- lists of days -------------------------------------------------------------------------------


def day_spans(days: Sequence[date]) -> list[tuple[date, date]]:
    """Days -> runs of consecutive days: 02-05, 02-06, 02-09 -> (02-05, 02-06), (02-09, 02-09)."""
    spans: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if spans and day == spans[-1][1] + timedelta(days=1):
            spans[-1] = (spans[-1][0], day)
        else:
            spans.append((day, day))
    return spans


def spans_text(days: Sequence[date], sep: str = ", ") -> str:
    """'2026-02-05..2026-02-06, 2026-02-09': what to type to sync the missing days."""
    return sep.join(str(a) if a == b else f"{a}..{b}" for a, b in day_spans(days))


# -- months (export) -----------------------------------------------------------------------------
# A month is what a monthly export is asked for by: ``2026-02``, ``2026年2月``, ``2月``,
# ``feb``/``february 2026``, ``last month``/``上个月``, ``this month``/``本月``, and ranges of
# them (``2026-01..2026-02``, ``1月至3月``). Only ``period_arg`` reads them, after the day
# grammar has had its go, so ``2月1日至7日`` stays seven days and no other command changes.

MONTH_HINT_EN = "Months: 2026-02, 2月, feb, last month, this month; or 2026-01..2026-03."
MONTH_HINT_ZH = "月份可以写：2026-02、2月、上个月、本月；或范围 1月至3月、2026-01..2026-03。"
_MONTH_NAMES = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = re.compile(
    rf"""
      (?P<last>(?:last|previous)\smonth|上\s?个?\s?月)
    | (?P<this>this\smonth|本\s?月|这\s?个?\s?月|当\s?月)
    | (?P<y>[0-9]{{4}})\s?(?:[-/.]|年)\s?(?P<m>[0-9]{{1,2}})(?!\s?[-/.]\s?[0-9])(?![0-9])(?:\s?月份?)?
    | (?P<zm>[0-9]{{1,2}}|十[一二]?|[一二三四五六七八九])\s?月份?
    | (?P<name>{"|".join(sorted(_MONTH_NAMES, key=len, reverse=True))})\.?(?![a-z])
      (?:\s(?P<ny>[0-9]{{4}})(?![0-9]))?
    """,
    re.IGNORECASE | re.VERBOSE,
)


def month_end(year: int, month: int) -> date:
    """The last day of a month."""
    return (date(year + month // 12, month % 12 + 1, 1)) - timedelta(days=1)


def _month(year: int, month: int, shown: str) -> tuple[int, int]:
    if not 1 <= month <= 12 or not 1 <= year <= 9998:
        raise DateError(
            f'There is no month "{shown}". {MONTH_HINT_EN}', f"没有“{shown}”这个月。{MONTH_HINT_ZH}"
        )
    return year, month


def _take_month(
    text: str, pos: int, today: date, anchor: tuple[int, int] | None = None
) -> tuple[tuple[int, int], int] | None:
    """(year, month) at ``text[pos:]`` and where it ends. A month without a year is the most
    recent one that has begun (in January, ``12月`` is last December); after ``anchor`` (a
    range's start) it is the first one not before it (``2025年11月至2月`` ends in 2026)."""
    m = _MONTH.match(text, pos)
    if m is None:
        return None
    shown = m.group().strip()
    if m["last"]:
        last = today.replace(day=1) - timedelta(days=1)
        return (last.year, last.month), m.end()
    if m["this"]:
        return (today.year, today.month), m.end()
    if m["y"]:
        return _month(int(m["y"]), int(m["m"]), shown), m.end()
    if m["name"]:
        month = _MONTH_NAMES[m["name"].lower()]
        if m["ny"]:
            return _month(int(m["ny"]), month, shown), m.end()
    else:
        month = _zh_int(m["zm"])
        _month(2000, month, shown)
    if anchor is not None:
        year = anchor[0] + (1 if (anchor[0], month) < anchor else 0)
    else:
        year = today.year if month <= today.month else today.year - 1
    return _month(year, month, shown), m.end()


def take_months(text: str, today: date) -> tuple[date, date, int] | None:
    """A month or a range of months at the start of ``text`` -> (first day, last day, end
    position), unchecked (the last day may be after today)."""
    first = _take_month(text, 0, today)
    if first is None:
        return None
    (year, month), pos = first
    last = (year, month)
    sep = _RANGE_SEP.match(text, pos)
    if sep is not None:
        second = _take_month(text, sep.end(), today, anchor=(year, month))
        if second is None:
            raise DateError(
                f"The range needs an end month. {MONTH_HINT_EN}",
                f"范围缺少结束月份。{MONTH_HINT_ZH}",
            )
        last, pos = second
    return date(year, month, 1), month_end(*last), pos


def period_arg(args: str, today: date, max_days: int) -> tuple[date, date, str]:
    """The argument of export: a month or months (this month: so far), a day or a range of
    days; default last month. -> (start, end, what follows)."""
    found = span_at_start(args, today)
    if found is None and args:
        months = take_months(args, today)
        if months is None:
            raise DateError(
                f'I couldn\'t read "{args.split(" ")[0]}" as a month or a date. '
                f"{MONTH_HINT_EN} {DATE_HINT_EN}",
                f"“{args.split(' ')[0]}”不是能识别的月份或日期。{MONTH_HINT_ZH}{DATE_HINT_ZH}",
            )
        start, end, pos = months
        rest = args[pos:]
        if rest and not rest[0].isspace() and (_is_word(rest[0]) or rest[0] in "-/.~"):
            raise not_a_date(args)
        if start > today:
            raise DateError(
                f"{start:%Y-%m} has not begun (today is {today}); there are no numbers for it yet.",
                f"{start:%Y-%m} 还没开始（今天是 {today}），还没有数据。",
            )
        rest = rest.strip()
        filler = _FILLER.match(rest)  # "导出 2月的数据"
        if filler:
            rest = rest[filler.end() :].strip()
        found = (start, min(end, today), rest)  # this month: the days so far
    elif found is None:
        last = today.replace(day=1) - timedelta(days=1)
        found = (last.replace(day=1), last, "")
    start, end, rest = found
    check_span(start, end, today, max_days)
    return start, end, rest


def period_label(start: date, end: date) -> str:
    """``2026-02`` for a whole month, ``2026-01..2026-02`` for whole months, else the days."""
    whole_first = start.day == 1
    whole_last = end == month_end(end.year, end.month)
    if whole_first and whole_last:
        if (start.year, start.month) == (end.year, end.month):
            return f"{start:%Y-%m}"
        return f"{start:%Y-%m}..{end:%Y-%m}"
    return str(start) if start == end else f"{start}..{end}"


def parse_period(text: str | None, today: date, max_days: int = 366) -> tuple[date, date]:
    """A whole command-line argument of export -> (start, end); last month when empty."""
    args = _clean(text or "")
    start, end, rest = period_arg(args, today, max_days)
    if rest:
        raise DateError(
            f'I couldn\'t read "{args}" as a month or dates: "{rest}" is left over. '
            f"{MONTH_HINT_EN}",
            f"“{args}”不是能识别的月份或日期：多出了“{rest}”。{MONTH_HINT_ZH}",
        )
    return start, end
