"""Chat commands: what people type to the bot (English or 中文) -> typed command objects.

One table, ``COMMANDS``, drives parsing, ``help`` and the admin marking, so a command added
there is parsed, documented and access-checked (``adsync.bot.access`` reads its ``mutating``
mark) in one place. The module is pure (no I/O, no
Feishu, no database; the stdlib and the date grammar it shares with the command line,
``adsync.sync.dates``) so the webhook can parse inside its 3-second acknowledgement and the
console and tests need nothing running::

    command = parse(text, today)        # raises CommandError: UsageError / UnknownCommand
    denial = access.check_access(command, user_id=..., chat_id=..., chat_type=..., settings=...)
    reply(denial.message) if denial else run(command)

``today`` is the business day in ``ADSYNC_TIMEZONE``; the caller computes it, which keeps
this module free of clocks. Every command and every error carries ``lang`` ("zh" when the
user wrote Chinese, else "en") and every message here is written in that language.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, ClassVar, Literal

# The date grammar is shared with the command line (adsync.sync.dates: pure, stdlib only);
# these are its names in this module.
from adsync.sync.dates import DATE_HINT_EN as _DATE_HINT_EN
from adsync.sync.dates import DATE_HINT_ZH as _DATE_HINT_ZH
from adsync.sync.dates import DATEISH_CHARS as _DATEISH_CHARS
from adsync.sync.dates import MONTH_HINT_EN as _MONTH_HINT_EN
from adsync.sync.dates import MONTH_HINT_ZH as _MONTH_HINT_ZH
from adsync.sync.dates import DateError, check_reportable
from adsync.sync.dates import check_span as _check_span
from adsync.sync.dates import dateish as _dateish
from adsync.sync.dates import dates_arg as _dates
from adsync.sync.dates import not_a_date as _not_a_date
from adsync.sync.dates import period_arg as _period
from adsync.sync.dates import shift as _shift
from adsync.sync.dates import span_at_end as _span_at_end
from adsync.sync.dates import span_at_start as _span_at_start
from adsync.sync.dates import take_span as _take_span
from adsync.sync.matching import account_candidates

if TYPE_CHECKING:  # only for the annotation: the module stays importable without settings
    pass

__all__ = [
    "COMMANDS",
    "EXPORT_MAX_DAYS",
    "HISTORY_DEFAULT",
    "HISTORY_MAX",
    "SUMMARY_MAX_DAYS",
    "SYNC_MAX_DAYS",
    "VERIFY_MAX_DAYS",
    "AccountMatchError",
    "Accounts",
    "Auth",
    "Command",
    "CommandError",
    "CommandSpec",
    "Export",
    "Help",
    "History",
    "Lang",
    "ParseContext",
    "Report",
    "Summary",
    "Sync",
    "TokenRefresh",
    "TokenStatus",
    "UnknownCommand",
    "UsageError",
    "Verify",
    "help_text",
    "match_account",
    "normalize",
    "parse",
    "spec_for",
]

Lang = Literal["en", "zh"]

SYNC_MAX_DAYS = 92  # a quarter: more is a backfill job, not a chat command
VERIFY_MAX_DAYS = 92  # reads the whole Bitable range, same order of cost as a sync
SUMMARY_MAX_DAYS = 366  # local data only, a year is cheap
EXPORT_MAX_DAYS = 366  # local data only; a year of rows is a file of a few MB
HISTORY_DEFAULT = 10
HISTORY_MAX = 50  # a chat message, not a log viewer
MAX_INPUT_CHARS = 1000  # no command is longer; bounds the work done on pasted essays


# -- errors ---------------------------------------------------------------------------------------


class CommandError(Exception):
    """Bad input. ``str(err)`` is the whole reply (message, then usage or short help)."""

    def __init__(self, message: str, *, lang: Lang = "en", usage: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.lang: Lang = lang
        self.usage = usage

    def __str__(self) -> str:
        return f"{self.message}\n{self.usage}" if self.usage else self.message


class UsageError(CommandError):
    """A known command with a bad argument; ``usage`` is that command's usage line."""

    def __init__(
        self, message: str, *, command: str = "", lang: Lang = "en", usage: str = ""
    ) -> None:
        super().__init__(message, lang=lang, usage=usage)
        self.command = command


class UnknownCommand(CommandError):
    """Not a command; ``usage`` is a short help, ``suggestion`` the near miss if any."""

    def __init__(
        self, message: str, *, lang: Lang = "en", usage: str = "", suggestion: str | None = None
    ) -> None:
        super().__init__(message, lang=lang, usage=usage)
        self.suggestion = suggestion


class AccountMatchError(CommandError):
    """``match_account`` found no account, or several (``candidates``, at most 5)."""

    def __init__(
        self,
        message: str,
        *,
        lang: Lang = "en",
        candidates: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message, lang=lang)
        self.candidates = candidates


class _ArgError(Exception):
    """Raised by argument parsers with both languages; ``parse`` picks one and adds usage."""

    def __init__(self, en: str, zh: str, *, unexpected: bool = False) -> None:
        super().__init__(en)
        self.en = en
        self.zh = zh
        self.unexpected = unexpected  # arguments given to a command that takes none


# -- command objects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """Base of every parsed command. ``name`` is the canonical English name."""

    name: ClassVar[str] = ""
    lang: Lang = field(default="en", kw_only=True)

    @property
    def mutating(self) -> bool:
        """Changes data or credentials: admins only (when ADSYNC_ADMINS is set)."""
        return False


@dataclass(frozen=True)
class Help(Command):
    name: ClassVar[str] = "help"
    topic: str | None = None  # a canonical command name, or None for the list


@dataclass(frozen=True)
class Sync(Command):
    name: ClassVar[str] = "sync"
    start: date
    end: date
    account_query: str | None = None  # raw text; resolve with match_account

    @property
    def mutating(self) -> bool:
        return True


@dataclass(frozen=True)
class TokenStatus(Command):
    name: ClassVar[str] = "token status"


@dataclass(frozen=True)
class TokenRefresh(Command):
    name: ClassVar[str] = "token refresh"

    @property
    def mutating(self) -> bool:
        return True


@dataclass(frozen=True)
class Summary(Command):
    name: ClassVar[str] = "summary"
    start: date
    end: date


@dataclass(frozen=True)
class Report(Command):
    """The daily report card of one day, as the clock posts it, answered in this chat."""

    name: ClassVar[str] = "report"
    day: date


@dataclass(frozen=True)
class Accounts(Command):
    name: ClassVar[str] = "accounts"


@dataclass(frozen=True)
class History(Command):
    name: ClassVar[str] = "history"
    limit: int = HISTORY_DEFAULT


@dataclass(frozen=True)
class Verify(Command):
    name: ClassVar[str] = "verify"
    start: date
    end: date
    fix: bool = False

    @property
    def mutating(self) -> bool:
        return self.fix  # reading the comparison is harmless; repairing writes


@dataclass(frozen=True)
class Export(Command):
    """Rows of the local copy as an xlsx file in the chat. Not mutating: the numbers are the
    Bitable's, which the group already reads."""

    name: ClassVar[str] = "export"
    start: date
    end: date
    account_query: str | None = None  # raw text; resolve with match_account


@dataclass(frozen=True)
class Auth(Command):
    name: ClassVar[str] = "auth"

    @property
    def mutating(self) -> bool:
        return True  # a new authorization replaces the stored tokens


# -- the command table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParseContext:
    """What an argument parser gets besides the argument text."""

    today: date
    lang: Lang  # "zh" if the command word or its arguments are Chinese
    alias_zh: bool  # the command word alone was Chinese


Parser = Callable[[str, ParseContext], Command]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    aliases_en: tuple[str, ...]
    aliases_zh: tuple[str, ...]
    usage_en: str
    usage_zh: str
    summary_en: str
    summary_zh: str
    mutating: bool  # the whole command changes things; hidden from non-admins in help
    parser: Parser
    examples_en: tuple[str, ...] = ()
    examples_zh: tuple[str, ...] = ()
    # Usage shown to people who may not change things, when an argument is admin-only
    # (``verify … fix``); empty means the same as the full usage.
    public_usage_en: str = ""
    public_usage_zh: str = ""

    def word(self, lang: Lang) -> str:
        """The command as a user of ``lang`` would type it."""
        return self.aliases_zh[0] if lang == "zh" else self.aliases_en[0]

    def usage(self, lang: Lang, may_change: bool = True) -> str:
        if not may_change and (self.public_usage_zh if lang == "zh" else self.public_usage_en):
            return self.public_usage_zh if lang == "zh" else self.public_usage_en
        return self.usage_zh if lang == "zh" else self.usage_en

    def summary(self, lang: Lang) -> str:
        return self.summary_zh if lang == "zh" else self.summary_en

    def examples(self, lang: Lang) -> tuple[str, ...]:
        return self.examples_zh if lang == "zh" else self.examples_en

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.aliases_en + self.aliases_zh


# -- text normalisation ---------------------------------------------------------------------------

_MENTION = re.compile(r"@_user_[0-9]+|@_all")
_LEADING_AT = re.compile(r"^(?:@\S*\s*)+")
# Punctuation people add around commands; NFKC has already folded the full-width forms
# (，：！？～) to ASCII. Kept: - / . ~ (dates and ranges), _ = (names, --account=).
_PUNCT = re.compile(r"[,;:!?。｡、\"“”`「」『』【】〔〕()\[\]{}<>《》〈〉|*#]+")
_APOSTROPHES = re.compile(r"['‘’]")  # "yesterday's" -> "yesterdays", not two words
_ELLIPSIS = str.maketrans({"…": " ", "⋯": " "})  # NFKC would turn them into a ".." range


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"


def _has_cjk(text: str) -> bool:
    return any(_is_cjk(ch) for ch in text)


def _is_word(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _visible(text: str) -> str:
    # Zero-width characters (Cf) vanish; control characters (Cc) become spaces.
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cf":
            continue
        out.append(" " if category in ("Cc", "Zl", "Zp") else ch)
    return "".join(out)


def normalize(text: str) -> str:
    """Message text -> command text: mentions, punctuation and extra spaces gone, case kept."""
    text = unicodedata.normalize("NFKC", text.translate(_ELLIPSIS))
    text = _MENTION.sub(" ", _visible(text))
    text = _PUNCT.sub(" ", _APOSTROPHES.sub("", text))
    text = " ".join(text.split())
    text = _LEADING_AT.sub("", text)  # "@adsync sync …" typed by hand
    text = text.lstrip("/").strip()  # "/sync", a Slack habit
    if text.endswith(".") and not text.endswith(".."):  # a sentence's full stop, not a range
        text = text[:-1].rstrip()
    return text


# -- dates ----------------------------------------------------------------------------------------
# The grammar itself lives in adsync.sync.dates, shared with the command line (imported above).


def _first_word(text: str) -> str:
    return text.split(" ", 1)[0]


# -- argument parsers -----------------------------------------------------------------------------

_ALL_ACCOUNTS = {
    "all",
    "all accounts",
    "全部",
    "所有",
    "全部账户",
    "所有账户",
    "全部账号",
    "所有账号",
}
_ACCOUNT_PREFIX = re.compile(
    r"(?:(?:for|account|acct|--account)(?:\s?=\s?|\s)|(?:广告账户|账户|账号)\s?=?\s?)", re.I
)
_HELP_ARGS = {"help", "-h", "--help", "帮助", "用法"}


def _lang(ctx: ParseContext, arg_text: str) -> Lang:
    return "zh" if ctx.alias_zh or _has_cjk(arg_text) else "en"


def _parse_help(args: str, ctx: ParseContext) -> Command:
    if not args:
        return Help(None, lang=ctx.lang)
    found = _match_alias(args)
    if found is None:
        near = _suggest(args)
        hint_en = f' Did you mean "{near}"?' if near else ""
        raise _ArgError(
            f'There is no command "{args}".{hint_en}',
            f"没有“{args}”这个命令。" + (f"你是想用“{near}”吗？" if near else ""),
        )
    return Help(found[0].name, lang=ctx.lang)


def _account_query(text: str) -> str | None:
    prefix = _ACCOUNT_PREFIX.match(text)
    if prefix:
        text = text[prefix.end() :].strip()
    if not text or text.lower() in _ALL_ACCOUNTS:
        return None
    first = _first_word(text)
    # "sync 02-01 02-07": a second date, not an account. Only what really reads as a date
    # counts here, so an account called "Last Chance" still works after a date.
    try:
        reads_as_date = _take_span(text, date(2000, 6, 15)) is not None  # any day will do
    except DateError:
        reads_as_date = True  # a date, if a wrong one ("02-30")
    if reads_as_date or (_DATEISH_CHARS.fullmatch(first) and not first.isdigit()):
        raise _ArgError(
            f'"{text}" looks like a second date; give one day or one range like 02-01..02-07.',
            f"“{text}”像是第二个日期；请只写一天或一个范围，例如 2月1日至2月7日。",
        )
    return text


def _parse_sync(args: str, ctx: ParseContext) -> Command:
    today = ctx.today
    found = _span_at_start(args, today)
    if found is not None:
        start, end, account_text = found
        date_text = args[: len(args) - len(account_text)]
    else:
        tail = _span_at_end(args, today) if args else None
        if tail is not None:
            start, end, account_text, date_text = tail
        else:
            if args and _dateish(_first_word(args)):
                raise _not_a_date(args)
            start = end = _shift(today, -1)  # no date: yesterday, as the daily job does
            account_text, date_text = args, ""
    _check_span(start, end, today, SYNC_MAX_DAYS)
    check_reportable(start, today)  # the platform's window: say so once, not once per account
    account = _account_query(account_text)
    # The reply language follows the command and dates, not a Chinese account name.
    return Sync(start, end, account, lang=_lang(ctx, date_text))


def _parse_summary(args: str, ctx: ParseContext) -> Command:
    start, end, rest = _dates(args, ctx.today, SUMMARY_MAX_DAYS)
    if rest:
        raise _ArgError(
            f'summary takes only a date or range, not "{rest}".',
            f"汇总只接受日期或范围，不认识“{rest}”。",
        )
    return Summary(start, end, lang=ctx.lang)


def _parse_report(args: str, ctx: ParseContext) -> Command:
    start, end, rest = _dates(args, ctx.today, SUMMARY_MAX_DAYS)
    if rest or start != end:
        raise _ArgError(
            f'report takes one day, like "report 02-11"; for a range use "summary {args}".',
            f"报告只接受一天，例如“报告 2月11日”；多天请用“汇总 {args}”。",
        )
    return Report(start, lang=ctx.lang)


_FIX_END = re.compile(
    r"(?:^|\s|(?<=[\u3400-\u9fff]))(?:(?:and|then|并|并且|然后)\s?)?(?:--fix|fix|修复|修正)$", re.I
)
_FIX_START = re.compile(r"(?:--fix|fix|修复|修正)(?:\s|$|(?=[\u3400-\u9fff0-9]))", re.I)


def _parse_verify(args: str, ctx: ParseContext) -> Command:
    fix = False
    end_fix = _FIX_END.search(args)
    if end_fix:
        fix, args = True, args[: end_fix.start()].strip()
    else:
        start_fix = _FIX_START.match(args)
        if start_fix:
            fix, args = True, args[start_fix.end() :].strip()
    start, end, rest = _dates(args, ctx.today, VERIFY_MAX_DAYS)
    if rest:
        raise _ArgError(
            f'verify takes a date or range and optionally "fix", not "{rest}".',
            f"校验只接受日期或范围，以及可选的“修复”，不认识“{rest}”。",
        )
    return Verify(start, end, fix, lang=ctx.lang)


def _parse_export(args: str, ctx: ParseContext) -> Command:
    start, end, rest = _period(args, ctx.today, EXPORT_MAX_DAYS)  # default: last month
    account = _account_query(rest)
    # The reply language follows the command and dates, not a Chinese account name.
    return Export(start, end, account, lang=_lang(ctx, args[: len(args) - len(rest)]))


_COUNT = re.compile(
    r"(?:(?:last|latest|recent|最近|近)\s?)?(?P<n>[0-9]{1,6})\s?(?:条|次|个|runs?|entries)?",
    re.IGNORECASE,
)


def _parse_history(args: str, ctx: ParseContext) -> Command:
    if not args:
        return History(lang=ctx.lang)
    m = _COUNT.fullmatch(args)
    if m is None:
        raise _ArgError(
            f'history takes a number of runs, like "history 20", not "{args}".',
            f"同步记录只接受条数，例如“同步记录 20”，不认识“{args}”。",
        )
    limit = int(m["n"])
    if not 1 <= limit <= HISTORY_MAX:
        raise _ArgError(
            f"Ask for 1 to {HISTORY_MAX} runs (got {limit}).",
            f"条数请在 1 到 {HISTORY_MAX} 之间（收到 {limit}）。",
        )
    return History(limit, lang=ctx.lang)


def _parse_auth(args: str, ctx: ParseContext) -> Command:
    if args.lower() not in ("", "url", "link", "链接", "授权链接"):
        raise _no_args_error(args)
    return Auth(lang=ctx.lang)


def _no_args_error(args: str) -> _ArgError:
    return _ArgError(
        f'This command takes no arguments (got "{args}").',
        f"这个命令不需要参数（收到“{args}”）。",
        unexpected=True,
    )


def _no_args(factory: Callable[[Lang], Command]) -> Parser:
    def parse_no_args(args: str, ctx: ParseContext) -> Command:
        if args:
            raise _no_args_error(args)
        return factory(ctx.lang)

    return parse_no_args


# The one table: parsing, help and the admin marking all read it. Order = order in help.
# Aliases: longer ones win ("同步记录" before "同步"), English words need a word boundary,
# Chinese may be typed with or without spaces. Scripts are separated by a space in an alias.
COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        name="help",
        aliases_en=("help", "commands", "usage", "menu"),
        aliases_zh=("帮助", "菜单", "命令", "指令", "使用说明", "怎么用"),
        usage_en="help [command]",
        usage_zh="帮助 [命令]",
        summary_en="this list, or one command's usage and examples",
        summary_zh="显示本列表，或某个命令的用法和示例",
        mutating=False,
        parser=_parse_help,
        examples_en=("help", "help sync", "help token status"),
        examples_zh=("帮助", "帮助 同步", "帮助 汇总"),
    ),
    CommandSpec(
        name="sync",
        aliases_en=("sync", "resync"),
        aliases_zh=("同步", "重新同步", "补同步"),
        usage_en="sync [yesterday|today|DATE|RANGE] [account]",
        usage_zh="同步 [昨天|今天|日期|范围] [账户]",
        summary_en="pull the ad reports for those days into the Bitable "
        "(default yesterday; safe to re-run)",
        summary_zh="把这些天的广告数据同步到多维表格（默认昨天；可重复执行）",
        mutating=True,
        parser=_parse_sync,
        examples_en=(
            "sync yesterday",
            "sync 02-11",
            "sync 2026-02-01..2026-02-07",
            "sync last 7 days",
            "sync yesterday 1700000000000001",
        ),
        examples_zh=(
            "同步 昨天",
            "同步 前天",
            "同步 2月11日",
            "同步 2月1日至7日",
            "同步 近7天 门店A",
        ),
    ),
    CommandSpec(
        name="token status",
        aliases_en=("token status", "token", "status"),
        aliases_zh=("token 状态", "令牌 状态", "令牌", "状态"),
        usage_en="token status",
        usage_zh="token 状态",
        summary_en="how long the Ocean Engine tokens stay valid, and the last refresh",
        summary_zh="巨量引擎 token 的剩余有效期和最近一次刷新",
        mutating=False,
        parser=_no_args(lambda lang: TokenStatus(lang=lang)),
        examples_en=("token status",),
        examples_zh=("token 状态",),
    ),
    CommandSpec(
        name="token refresh",
        aliases_en=("token refresh", "refresh token", "refresh"),
        aliases_zh=("刷新 token", "token 刷新", "刷新令牌", "令牌刷新", "刷新"),
        usage_en="token refresh",
        usage_zh="刷新 token",
        summary_en="refresh the Ocean Engine access token now",
        summary_zh="立即刷新巨量引擎 access token",
        mutating=True,
        parser=_no_args(lambda lang: TokenRefresh(lang=lang)),
        examples_en=("token refresh",),
        examples_zh=("刷新 token",),
    ),
    CommandSpec(
        name="summary",
        aliases_en=("summary", "totals"),
        aliases_zh=("汇总", "日报", "报表", "数据汇总"),
        usage_en="summary [DATE|RANGE]",
        usage_zh="汇总 [日期|范围]",
        summary_en="spend, conversions, per account and change vs the period before "
        "(default yesterday)",
        summary_zh="消耗、转化、分账户数据和环比（默认昨天）",
        mutating=False,
        parser=_parse_summary,
        examples_en=("summary", "summary 02-11", "summary last 7 days", "summary 02-01..02-07"),
        examples_zh=("汇总", "日报", "汇总 前天", "汇总 最近7天", "汇总 2月1日至2月7日"),
    ),
    CommandSpec(
        name="report",
        aliases_en=("report", "daily report"),
        aliases_zh=("报告", "每日报告"),
        usage_en="report [DATE]",
        usage_zh="报告 [日期]",
        summary_en="that day's daily report card, as posted every morning (default yesterday)",
        summary_zh="某一天的日报卡片，与每天早上发的一样（默认昨天）",
        mutating=False,
        parser=_parse_report,
        examples_en=("report", "report 02-11", "report 2026-02-16"),
        examples_zh=("报告", "报告 昨天", "报告 2月16日"),
    ),
    CommandSpec(
        name="accounts",
        aliases_en=("accounts", "account", "accts"),
        aliases_zh=("账户", "账号", "账户列表", "账号列表", "广告账户"),
        usage_en="accounts",
        usage_zh="账户",
        summary_en="the accounts in scope, with names and last sync",
        summary_zh="同步范围内的账户、名称和最近同步情况",
        mutating=False,
        parser=_no_args(lambda lang: Accounts(lang=lang)),
        examples_en=("accounts",),
        examples_zh=("账户",),
    ),
    CommandSpec(
        name="history",
        aliases_en=("history", "sync history", "sync status", "last sync", "runs", "log", "logs"),
        aliases_zh=("同步记录", "同步历史", "同步状态", "历史", "记录"),
        usage_en="history [N]",
        usage_zh="同步记录 [条数]",
        summary_en=f"the last N sync runs (default {HISTORY_DEFAULT}, at most {HISTORY_MAX}): "
        "when, who started them, rows written, errors",
        summary_zh=f"最近 N 次同步（默认 {HISTORY_DEFAULT}，最多 {HISTORY_MAX}）：时间、触发方式、写入行数、错误",
        mutating=False,
        parser=_parse_history,
        examples_en=("history", "history 20"),
        examples_zh=("同步记录", "同步记录 20"),
    ),
    CommandSpec(
        name="verify",
        aliases_en=("verify", "check", "reconcile"),
        aliases_zh=("校验", "核对", "对账", "检查"),
        usage_en="verify [DATE|RANGE] [fix]",
        usage_zh="校验 [日期|范围] [修复]",
        summary_en="compare the Bitable with the local copy (default yesterday)",
        summary_zh="核对多维表格与本地数据（默认昨天）",
        mutating=False,  # only "fix" changes things: Verify.mutating says so per command
        parser=_parse_verify,
        examples_en=("verify", "verify 02-11", "verify last 7 days fix"),
        examples_zh=("校验", "校验 2月11日", "校验 近7天 修复"),
        public_usage_en="verify [DATE|RANGE]",
        public_usage_zh="校验 [日期|范围]",
    ),
    CommandSpec(
        name="export",
        aliases_en=("export", "download"),
        aliases_zh=("导出", "导出数据", "导出表格", "下载"),
        usage_en="export [MONTH|RANGE] [account]",
        usage_zh="导出 [月份|范围] [账户]",
        summary_en="the rows of a month (default last month) as an Excel file in this chat",
        summary_zh="把某个月（默认上个月）的数据行导出为 Excel 文件发到群里",
        mutating=False,
        parser=_parse_export,
        examples_en=("export", "export 2026-02", "export feb 门店A", "export 2026-01..2026-03"),
        examples_zh=("导出", "导出 2月", "导出 上个月 门店A", "导出 1月至3月"),
    ),
    CommandSpec(
        name="auth",
        aliases_en=("auth", "authorize", "authorise", "login", "reauth"),
        aliases_zh=("授权", "重新授权", "登录"),
        usage_en="auth",
        usage_zh="授权",
        summary_en="a link to (re)authorize adsync with Ocean Engine",
        summary_zh="获取巨量引擎（重新）授权链接",
        mutating=True,
        parser=_parse_auth,
        examples_en=("auth",),
        examples_zh=("授权",),
    ),
)

_BY_NAME = {spec.name: spec for spec in COMMANDS}


def spec_for(command: Command | str) -> CommandSpec:
    """The table row of a command object or canonical name (KeyError if there is none)."""
    return _BY_NAME[command if isinstance(command, str) else command.name]


def _alias_regex(alias: str) -> re.Pattern[str]:
    parts: list[str] = []
    previous = ""
    for word in alias.split():
        if previous:
            # Two English words need a space between them; next to Chinese it's optional.
            parts.append(r"\s" if _is_word(previous) and _is_word(word[0]) else r"\s?")
        if all(_is_cjk(ch) for ch in word):
            parts.append(r"\s?".join(re.escape(ch) for ch in word))  # "同步 记录"
        else:
            parts.append(re.escape(word))
        previous = word[-1]
    if _is_word(previous):
        parts.append(r"(?![a-z0-9])")  # "sync" must not match "syncs"
    return re.compile("".join(parts), re.IGNORECASE)


_ALIASES: tuple[tuple[re.Pattern[str], str, CommandSpec], ...] = tuple(
    sorted(
        ((_alias_regex(alias), alias, spec) for spec in COMMANDS for alias in spec.aliases),
        key=lambda item: -len(item[1].replace(" ", "")),
    )
)


def _match_alias(text: str) -> tuple[CommandSpec, str, str] | None:
    """(spec, alias, arguments) for the longest alias at the start of ``text``."""
    for pattern, alias, spec in _ALIASES:
        m = pattern.match(text)
        if m:
            return spec, alias, text[m.end() :].strip()
    return None


_NEAR_MISS = 0.75  # "snyc"/"sync" and "auht"/"auth" pass; "sink"/"sync" doesn't


@dataclass(frozen=True)
class _Target:
    """An alias prepared for did-you-mean (built once: this runs on every unknown message)."""

    text: str  # Chinese without spaces, English lower-case
    width: int  # words of English text the alias spans
    zh: bool
    spec: CommandSpec
    letters: Counter[str]


_TARGETS = tuple(
    _Target(
        alias.replace(" ", "") if _has_cjk(alias) else alias.lower(),
        len(alias.split()),
        _has_cjk(alias),
        spec,
        Counter(alias.replace(" ", "") if _has_cjk(alias) else alias.lower()),
    )
    for _, alias, spec in _ALIASES
)


def _suggest(text: str, longer_than: str = "") -> str | None:
    """'snyc yesterday' -> 'sync yesterday': the closest command word, keeping the rest."""
    words = text.lower().split(" ")
    original = text.split(" ")
    heads: dict[tuple[bool, int], tuple[str, str, Counter[str]]] = {}
    best, best_ratio = None, _NEAR_MISS
    minimum = len(longer_than.split()) if longer_than else 0
    for target in _TARGETS:
        if target.width <= minimum:
            continue
        key = (target.zh, len(target.text) if target.zh else target.width)
        if key not in heads:
            if target.zh:
                head, rest = text.replace(" ", "")[: len(target.text)], ""
            else:
                head, rest = " ".join(words[: target.width]), " ".join(original[target.width :])
            heads[key] = (head, rest, Counter(head))
        head, rest, letters = heads[key]
        # Cheap upper bounds on the ratio (length, shared letters) before the quadratic one.
        size = len(head) + len(target.text)
        if 2 * min(len(head), len(target.text)) < best_ratio * size:
            continue
        shared = sum(
            min(n, target.letters[ch]) for ch, n in letters.items() if ch in target.letters
        )
        if 2 * shared < best_ratio * size:
            continue
        ratio = difflib.SequenceMatcher(None, head, target.text).ratio()
        if ratio >= best_ratio and (best is None or ratio > best_ratio):
            word = target.spec.word("zh" if target.zh else "en")
            best, best_ratio = f"{word} {rest}".strip(), ratio
    return best


# -- parse ----------------------------------------------------------------------------------------


def _usage_line(spec: CommandSpec, lang: Lang) -> str:
    if lang == "zh":
        return f"用法：{spec.usage('zh')}（发送“帮助 {spec.word('zh')}”查看示例）"
    return f"Usage: {spec.usage('en')}  (send `help {spec.name}` for examples)"


def _short_help(lang: Lang) -> str:
    if lang == "zh":
        words = "、".join(spec.word("zh") for spec in COMMANDS)
        return f"可用命令：{words}。发送“帮助”查看详情。"
    words = ", ".join(spec.name for spec in COMMANDS)
    return f"Commands: {words}. Send `help` for details."


def _unknown(text: str, lang: Lang) -> UnknownCommand:
    suggestion = _suggest(text)
    head = " ".join(text.split(" ")[:2])[:30]
    if lang == "zh":
        message = f"我不认识“{head}”这个命令。" + (
            f"你是想用“{suggestion}”吗？" if suggestion else ""
        )
    else:
        message = f'I don\'t know the command "{head}".' + (
            f' Did you mean "{suggestion}"?' if suggestion else ""
        )
    return UnknownCommand(message, lang=lang, usage=_short_help(lang), suggestion=suggestion)


# Politeness and filler around the command word: "请同步昨天", "hi, sync yesterday",
# "同步一下昨天". Stripped before matching so they never become an argument.
_POLITE = re.compile(
    r"(?:(?:hi|hello|hey|please|pls|bot)(?:\s|$)|(?:你好|您好|请|帮我|麻烦|劳驾)\s?)+",
    re.IGNORECASE,
)
_FILLER_ARGS = re.compile(r"一下\s?")


def _too_long(text: str) -> UnknownCommand:
    lang: Lang = "zh" if _has_cjk(text[:MAX_INPUT_CHARS]) else "en"
    message = (
        "这条消息太长，不像是命令。"
        if lang == "zh"
        else "That message is too long to be a command."
    )
    return UnknownCommand(message, lang=lang, usage=_short_help(lang))


def parse(text: str, today: date) -> Command:
    """Message text -> a command, with dates resolved against ``today``.

    Raises UsageError (a known command, a bad argument: the message says which format is
    expected, ``usage`` is the command's usage line) or UnknownCommand (anything else, with a
    short help and a did-you-mean). Nothing else, for any string. An empty message (just a
    mention, or a greeting) is ``Help()``.
    """
    if len(text) > MAX_INPUT_CHARS:
        raise _too_long(text)
    clean = normalize(text)
    polite = _POLITE.match(clean)
    if polite:
        clean = clean[polite.end() :].strip()
    if not clean:
        return Help(None, lang="zh" if _has_cjk(text) else "en")
    found = _match_alias(clean)
    if found is None:
        raise _unknown(clean, "zh" if _has_cjk(clean) else "en")
    spec, alias, args = found
    filler = _FILLER_ARGS.match(args) if _has_cjk(alias) else None
    if filler:
        args = args[filler.end() :].strip()
    alias_zh = _has_cjk(alias)
    lang: Lang = "zh" if alias_zh or _has_cjk(args) else "en"
    if spec.name != "help" and args.lower() in _HELP_ARGS:  # "sync help", "同步 帮助"
        return Help(spec.name, lang=lang)
    try:
        return spec.parser(args, ParseContext(today=today, lang=lang, alias_zh=alias_zh))
    except (_ArgError, DateError) as err:
        message = err.zh if lang == "zh" else err.en
        if getattr(
            err, "unexpected", False
        ):  # "token refesh": matched "token", but meant a longer command
            near = _suggest(clean, longer_than=alias)
            if near:
                message += f"你是想用“{near}”吗？" if lang == "zh" else f' Did you mean "{near}"?'
        raise UsageError(
            message, command=spec.name, lang=lang, usage=_usage_line(spec, lang)
        ) from None


# -- help -----------------------------------------------------------------------------------------


def _find_spec(topic: str) -> CommandSpec | None:
    if topic in _BY_NAME:
        return _BY_NAME[topic]
    found = _match_alias(normalize(topic)) if len(topic) <= MAX_INPUT_CHARS else None
    return found[0] if found else None


def _topic_help(spec: CommandSpec, lang: Lang, may_change: bool) -> str:
    zh = lang == "zh"
    summary = spec.summary(lang)
    lines = [spec.usage(lang, may_change), summary[:1].upper() + summary[1:]]
    examples = spec.examples(lang)
    if spec.name == "verify" and not may_change:
        examples = tuple(e for e in examples if "fix" not in e and "修复" not in e)
    if examples:
        lines.append("示例：" if zh else "Examples:")
        lines.extend(f"  {example}" for example in examples)
    others = [a for a in spec.aliases if a != spec.word(lang)]
    if others:
        lines.append(("也可以写：" if zh else "Also: ") + ("、" if zh else ", ").join(others))
    if "MONTH" in spec.usage_en:
        lines.append(_MONTH_HINT_ZH if zh else _MONTH_HINT_EN)
    if "DATE" in spec.usage_en or "RANGE" in spec.usage_en:
        lines.append(_DATE_HINT_ZH if zh else _DATE_HINT_EN)
    if not may_change and spec.mutating:
        lines.append(
            "这个命令会改动数据，只有管理员可以执行。" if zh else "Only admins can run this."
        )
    elif not may_change and spec.public_usage_en:
        lines.append("“修复”需要管理员执行。" if zh else '"fix" needs an admin.')
    return "\n".join(lines)


def help_text(lang: Lang = "en", may_change: bool = True, topic: str | None = None) -> str:
    """Help generated from ``COMMANDS``: the list, or one command's usage and examples.

    ``may_change`` is False for callers who may not run mutating commands (see ``is_admin``):
    those commands are left out, with a line saying some need an admin.
    """
    zh = lang == "zh"
    wanted = _find_spec(topic) if topic else None
    if wanted is not None:
        return _topic_help(wanted, lang, may_change)
    lines = ["adsync 命令：" if zh else "adsync commands:"]
    hidden = False
    for spec in COMMANDS:
        if spec.mutating and not may_change:
            hidden = True
            continue
        lines.append(f"• {spec.usage(lang, may_change)} — {spec.summary(lang)}")
    lines.append(_DATE_HINT_ZH if zh else _DATE_HINT_EN)
    if hidden:
        lines.append(
            "会改动数据的命令需要管理员执行，这里没有列出；需要时请找管理员。"
            if zh
            else "Commands that change data need an admin and aren't listed; ask an admin."
        )
    lines.append(
        "发送“帮助 命令”查看示例。English works too: send `help`."
        if zh
        else "Send `help COMMAND` for examples. 中文也可以：发送“帮助”。"
    )
    return "\n".join(lines)


# -- accounts -------------------------------------------------------------------------------------


def match_account(
    query: str, accounts: Sequence[tuple[str, str]], lang: Lang = "en"
) -> tuple[str, str]:
    """The one (id, name) that ``query`` means: an exact id, an exact name, or part of a name
    (or 4+ digits of an id; the rules of ``adsync.sync.matching``, shared with the command
    line). Raises AccountMatchError for none or several."""
    query = query.strip()
    candidates = account_candidates(query, accounts)
    if len(candidates) == 1:
        return candidates[0]
    zh = lang == "zh"
    if not candidates:
        raise AccountMatchError(
            f"没有与“{query}”匹配的账户。发送“账户”查看列表，再用账户 ID 或名称的一部分。"
            if zh
            else f'No account matches "{query}". Send `accounts` for the list, then use an id '
            "or part of a name.",
            lang=lang,
        )
    shown = tuple(candidates[:5])
    listed = ("、" if zh else ", ").join(
        f"{name or '—'} ({account_id})" for account_id, name in shown
    )
    more = len(candidates) - len(shown)
    if more:
        listed += f" 等另外 {more} 个" if zh else f" and {more} more"
    raise AccountMatchError(
        f"“{query}”匹配到 {len(candidates)} 个账户：{listed}。请用账户 ID 或更完整的名称。"
        if zh
        else f'"{query}" matches {len(candidates)} accounts: {listed}. Use the id or more of '
        "the name.",
        lang=lang,
        candidates=shown,
    )
