"""Chat grammar: every command in both languages, every date form, help from the table,
access control, and hypothesis properties (no input string raises anything but CommandError;
dates written in any supported form parse back to themselves)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsync.bot.access import check_access, is_admin
from adsync.bot.commands import (
    COMMANDS,
    HISTORY_DEFAULT,
    SUMMARY_MAX_DAYS,
    SYNC_MAX_DAYS,
    VERIFY_MAX_DAYS,
    AccountMatchError,
    Accounts,
    Auth,
    Command,
    CommandError,
    Help,
    History,
    Summary,
    Sync,
    TokenRefresh,
    TokenStatus,
    UnknownCommand,
    UsageError,
    Verify,
    help_text,
    match_account,
    normalize,
    parse,
    spec_for,
)
from adsync.sync.config import Settings
from adsync.sync.dates import REPORT_WINDOW_DAYS

TODAY = date(2026, 2, 15)
YESTERDAY = TODAY - timedelta(days=1)
NEW_YEAR = date(2026, 1, 5)  # "12-30" must mean last year


def d(text: str) -> date:
    return date.fromisoformat(text)


def usage_error(text: str, today: date = TODAY) -> UsageError:
    with pytest.raises(UsageError) as caught:
        parse(text, today)
    return caught.value


# -- every command, English and Chinese -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("help", Help(None)),
        ("帮助", Help(None, lang="zh")),
        ("sync yesterday", Sync(YESTERDAY, YESTERDAY)),
        ("sync", Sync(YESTERDAY, YESTERDAY)),
        ("同步 昨天", Sync(YESTERDAY, YESTERDAY, lang="zh")),
        ("同步昨天", Sync(YESTERDAY, YESTERDAY, lang="zh")),
        ("同步", Sync(YESTERDAY, YESTERDAY, lang="zh")),
        ("token status", TokenStatus()),
        ("token 状态", TokenStatus(lang="zh")),
        ("token状态", TokenStatus(lang="zh")),
        ("token", TokenStatus()),
        ("令牌", TokenStatus(lang="zh")),
        ("状态", TokenStatus(lang="zh")),
        ("token refresh", TokenRefresh()),
        ("refresh token", TokenRefresh()),
        ("刷新 token", TokenRefresh(lang="zh")),
        ("刷新token", TokenRefresh(lang="zh")),
        ("刷新令牌", TokenRefresh(lang="zh")),
        ("summary", Summary(YESTERDAY, YESTERDAY)),
        ("汇总", Summary(YESTERDAY, YESTERDAY, lang="zh")),
        ("日报", Summary(YESTERDAY, YESTERDAY, lang="zh")),
        ("summary 2026-02-10", Summary(d("2026-02-10"), d("2026-02-10"))),
        ("汇总 2月1日至2月7日", Summary(d("2026-02-01"), d("2026-02-07"), lang="zh")),
        ("accounts", Accounts()),
        ("账户", Accounts(lang="zh")),
        ("history", History(HISTORY_DEFAULT)),
        ("history 20", History(20)),
        ("同步记录", History(HISTORY_DEFAULT, lang="zh")),
        ("同步记录 5", History(5, lang="zh")),
        ("同步 记录", History(HISTORY_DEFAULT, lang="zh")),
        ("verify", Verify(YESTERDAY, YESTERDAY)),
        ("verify 2026-02-11", Verify(d("2026-02-11"), d("2026-02-11"))),
        ("verify 2026-02-11 fix", Verify(d("2026-02-11"), d("2026-02-11"), True)),
        ("verify fix", Verify(YESTERDAY, YESTERDAY, True)),
        ("校验", Verify(YESTERDAY, YESTERDAY, lang="zh")),
        ("校验 2月11日 修复", Verify(d("2026-02-11"), d("2026-02-11"), True, lang="zh")),
        ("校验昨天并修复", Verify(YESTERDAY, YESTERDAY, True, lang="zh")),
        ("auth", Auth()),
        ("授权", Auth(lang="zh")),
    ],
)
def test_every_command_in_both_languages(text: str, expected: Command) -> None:
    assert parse(text, TODAY) == expected


@pytest.mark.parametrize(
    "text",
    ["Token   Status", "TOKEN STATUS", "  token\tstatus  ", "token　status", "Token Status."],
)
def test_case_and_space_tolerant(text: str) -> None:
    assert parse(text, TODAY) == TokenStatus()


def test_help_topics() -> None:
    assert parse("help sync", TODAY) == Help("sync")
    assert parse("help token status", TODAY) == Help("token status")
    assert parse("帮助 同步", TODAY) == Help("sync", lang="zh")
    assert parse("帮助 汇总", TODAY) == Help("summary", lang="zh")
    assert parse("sync help", TODAY) == Help("sync")  # Errbot/argparse habit
    assert parse("同步 帮助", TODAY) == Help("sync", lang="zh")
    err = usage_error("help snyc")
    assert "sync" in err.message  # did you mean


def test_empty_message_or_greeting_is_help() -> None:
    assert parse("", TODAY) == Help(None)
    assert parse("@_user_1", TODAY) == Help(None)
    assert parse("你好", TODAY) == Help(None, lang="zh")
    assert parse("hi", TODAY) == Help(None)


def test_mutating_flags() -> None:
    day = YESTERDAY
    assert Sync(day, day).mutating and TokenRefresh().mutating and Auth().mutating
    assert Verify(day, day, fix=True).mutating and not Verify(day, day).mutating
    for read in (Help(None), TokenStatus(), Summary(day, day), Accounts(), History()):
        assert not read.mutating


def test_command_objects_are_frozen() -> None:
    cmd = Sync(YESTERDAY, YESTERDAY)
    with pytest.raises(AttributeError):
        cmd.start = TODAY  # type: ignore[misc]


# -- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "start", "end"),
    [
        ("yesterday", "2026-02-14", "2026-02-14"),
        ("昨天", "2026-02-14", "2026-02-14"),
        ("昨日", "2026-02-14", "2026-02-14"),
        ("today", "2026-02-15", "2026-02-15"),
        ("今天", "2026-02-15", "2026-02-15"),
        ("今日", "2026-02-15", "2026-02-15"),
        ("前天", "2026-02-13", "2026-02-13"),
        ("day before yesterday", "2026-02-13", "2026-02-13"),
        ("大前天", "2026-02-12", "2026-02-12"),
        ("3 days ago", "2026-02-12", "2026-02-12"),
        ("3天前", "2026-02-12", "2026-02-12"),
        ("2026-02-11", "2026-02-11", "2026-02-11"),
        ("2026/02/11", "2026-02-11", "2026-02-11"),
        ("2026/2/11", "2026-02-11", "2026-02-11"),
        ("2026.02.11", "2026-02-11", "2026-02-11"),
        ("20260211", "2026-02-11", "2026-02-11"),
        ("2026年2月11日", "2026-02-11", "2026-02-11"),
        ("02-11", "2026-02-11", "2026-02-11"),
        ("2-11", "2026-02-11", "2026-02-11"),
        ("02/11", "2026-02-11", "2026-02-11"),
        ("2月11日", "2026-02-11", "2026-02-11"),
        ("02月11日", "2026-02-11", "2026-02-11"),
        ("2月11号", "2026-02-11", "2026-02-11"),
        ("2026-02-01..2026-02-07", "2026-02-01", "2026-02-07"),
        ("02-01..02-07", "2026-02-01", "2026-02-07"),
        ("2月1日至2月7日", "2026-02-01", "2026-02-07"),
        ("2月1日至7日", "2026-02-01", "2026-02-07"),
        ("2月1日到2月7日", "2026-02-01", "2026-02-07"),
        ("02-01~02-07", "2026-02-01", "2026-02-07"),
        ("02-01～02-07", "2026-02-01", "2026-02-07"),
        ("02-01 - 02-07", "2026-02-01", "2026-02-07"),
        ("2026-02-01 - 2026-02-07", "2026-02-01", "2026-02-07"),
        ("02-01 to 02-07", "2026-02-01", "2026-02-07"),
        ("from 02-01 to 02-07", "2026-02-01", "2026-02-07"),
        ("从2月1日到2月7日", "2026-02-01", "2026-02-07"),
        ("2026-02-01..yesterday", "2026-02-01", "2026-02-14"),
        ("前天至昨天", "2026-02-13", "2026-02-14"),
        ("last 7 days", "2026-02-08", "2026-02-14"),
        ("past 7 days", "2026-02-08", "2026-02-14"),
        ("近7天", "2026-02-08", "2026-02-14"),
        ("最近7天", "2026-02-08", "2026-02-14"),
        ("最近七天", "2026-02-08", "2026-02-14"),
        ("近一周", "2026-02-08", "2026-02-14"),
        ("last 2 weeks", "2026-02-01", "2026-02-14"),
    ],
)
def test_date_forms(arg: str, start: str, end: str) -> None:
    got = parse(f"summary {arg}", TODAY)
    assert isinstance(got, Summary)
    assert (got.start, got.end) == (d(start), d(end))
    synced = parse(f"sync {arg}", TODAY)
    assert isinstance(synced, Sync)
    assert (synced.start, synced.end) == (d(start), d(end))


@pytest.mark.parametrize(
    ("arg", "start", "end"),
    [
        ("12-30", "2025-12-30", "2025-12-30"),
        ("12/30", "2025-12-30", "2025-12-30"),
        ("12月30日", "2025-12-30", "2025-12-30"),
        ("01-03", "2026-01-03", "2026-01-03"),
        ("12-30..01-03", "2025-12-30", "2026-01-03"),
        ("12月28日至1月2日", "2025-12-28", "2026-01-02"),
        ("前天", "2026-01-03", "2026-01-03"),
        ("last 7 days", "2025-12-29", "2026-01-04"),
    ],
)
def test_month_day_without_year_across_new_year(arg: str, start: str, end: str) -> None:
    got = parse(f"sync {arg}", NEW_YEAR)
    assert isinstance(got, Sync)
    assert (got.start, got.end) == (d(start), d(end))


def test_february_29_means_the_last_leap_day() -> None:
    got = parse("summary 02-29", date(2026, 3, 1))
    assert isinstance(got, Summary) and got.start == date(2024, 2, 29)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("sync tomorrow", "future"),
        ("sync 2026-02-16", "future"),
        ("summary 02-10..2026-03-01", "future"),
        ("同步 明天", "还没到"),
        ("sync 02-07..02-01", "ends before it starts"),
        ("同步 2月7日至2月1日", "结束早于开始"),
        ("sync 2025-01-01..2025-12-31", f"at most {SYNC_MAX_DAYS} days"),
        ("sync last 100 days", f"at most {SYNC_MAX_DAYS} days"),
        ("summary 2024-01-01..2025-12-31", f"at most {SUMMARY_MAX_DAYS} days"),
        ("verify 2025-01-01..2025-12-31", "at most 92 days"),
        ("sync 02-30", '"02-30"'),
        ("同步 2月30日", "没有“2月30日”这一天"),
        ("sync 2026-13-01", '"2026-13-01"'),
        ("sync 2025-02-29", '"2025-02-29"'),
        ("sync 2026-02", "couldn't read"),
        ("sync 2026-02-11abc", "couldn't read"),
        ("sync yesterdy", "Did you mean yesterday"),
        ("sync last week", "last 7 days"),
        ("sync 02-01 02-07", "second date"),
        ("sync 02-01..", "needs an end date"),
        ("summary store", "couldn't read"),
        ("summary last 0 days", "at least 1"),
    ],
)
def test_bad_dates_say_what_is_expected(text: str, words: str) -> None:
    err = usage_error(text)
    assert words in err.message
    assert err.command in {"sync", "summary", "verify"}
    assert err.usage and spec_for(err.command).usage(err.lang) in err.usage
    assert words in str(err) and err.usage in str(err)


def test_impossible_date_error_names_the_formats() -> None:
    err = usage_error("sync 02-30")
    assert "2026-02-11" in err.message and "02-01..02-07" in err.message
    assert err.usage.startswith("Usage: sync")
    zh = usage_error("同步 02-30")
    assert zh.lang == "zh" and zh.usage.startswith("用法：同步")
    assert "日期可以写" in zh.message


def test_overflow_near_the_ends_of_the_calendar_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        parse("sync yesterday", date.min)
    with pytest.raises(UsageError):
        parse("sync last 50 days", date(1, 1, 20))
    assert parse("sync 12-31", date.max) == Sync(date.max, date.max)


# -- normalisation, mentions, accounts ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "@_user_1 sync yesterday",
        "@_user_1 @_user_2 sync yesterday",
        "sync yesterday @_user_3",
        "@adsync sync yesterday",
        "@_user_1\u3000sync\u3000yesterday",
        "@_user_1，sync yesterday。",
        "/sync yesterday",
        "please sync yesterday",
        "sync\u200b yesterday",
        "ｓｙｎｃ ｙｅｓｔｅｒｄａｙ",
    ],
)
def test_mentions_punctuation_and_width_are_ignored(text: str) -> None:
    assert parse(text, TODAY) == Sync(YESTERDAY, YESTERDAY)


@pytest.mark.parametrize(
    "text",
    ["@_user_1 同步　昨天。", "请同步一下昨天的数据", "同步：昨天！", "@_user_1，同步，昨天"],
)
def test_chinese_politeness_and_punctuation(text: str) -> None:
    assert parse(text, TODAY) == Sync(YESTERDAY, YESTERDAY, lang="zh")


def test_normalize() -> None:
    assert normalize("@_user_1\u3000Token：Status。") == "Token Status"
    assert normalize("sync 02-01..02-07") == "sync 02-01..02-07"  # the range survives
    assert normalize("sync yesterday…") == "sync yesterday"  # an ellipsis is not a range


@pytest.mark.parametrize(
    ("text", "start", "account", "lang"),
    [
        ("sync yesterday 门店A", YESTERDAY, "门店A", "en"),
        ("sync 2026-02-11 Store C", d("2026-02-11"), "Store C", "en"),
        ("sync yesterday 1700000000000001", YESTERDAY, "1700000000000001", "en"),
        ("sync 门店A", YESTERDAY, "门店A", "en"),
        ("同步 昨天 门店A", YESTERDAY, "门店A", "zh"),
        ("同步昨天门店A", YESTERDAY, "门店A", "zh"),
        ("同步 门店A 前天", d("2026-02-13"), "门店A", "zh"),
        ("sync yesterday for Store C", YESTERDAY, "Store C", "en"),
        ("sync yesterday --account=1700000000000001", YESTERDAY, "1700000000000001", "en"),
        ("sync yesterday --account 1700000000000001", YESTERDAY, "1700000000000001", "en"),
        ("同步 昨天 账户 门店A", YESTERDAY, "门店A", "zh"),
        ("sync yesterday all", YESTERDAY, None, "en"),
        ("同步 昨天 全部账户", YESTERDAY, None, "zh"),
    ],
)
def test_account_query_is_kept(text: str, start: date, account: str | None, lang: str) -> None:
    got = parse(text, TODAY)
    assert isinstance(got, Sync)
    assert (got.start, got.account_query, got.lang) == (start, account, lang)


def test_account_range_with_account() -> None:
    got = parse("sync 02-01..02-07 Store C", TODAY)
    assert got == Sync(d("2026-02-01"), d("2026-02-07"), "Store C")


ACCOUNTS = [
    ("1700000000000001", "门店A 朝阳"),
    ("1700000000000002", "门店B 海淀"),
    ("1700000000000003", "Store C"),
    ("1700000000000004", "Store C Outlet"),
]


def test_match_account() -> None:
    assert match_account("1700000000000002", ACCOUNTS) == ACCOUNTS[1]  # exact id
    assert match_account("朝阳", ACCOUNTS) == ACCOUNTS[0]  # part of a name
    assert match_account("门店a", ACCOUNTS) == ACCOUNTS[0]  # case / width
    assert match_account("门店A(朝阳)", ACCOUNTS) == ACCOUNTS[0]  # punctuation
    assert match_account("store c", ACCOUNTS) == ACCOUNTS[2]  # exact name beats a longer one
    assert match_account("0004", ACCOUNTS) == ACCOUNTS[3]  # digits of an id


def test_match_account_ambiguous_lists_candidates() -> None:
    with pytest.raises(AccountMatchError) as caught:
        match_account("门店", ACCOUNTS)
    err = caught.value
    assert err.candidates == (ACCOUNTS[0], ACCOUNTS[1])
    assert "门店A 朝阳 (1700000000000001)" in err.message and "2 accounts" in err.message
    many = [(str(1700000000000100 + i), f"Shop {i}") for i in range(8)]
    with pytest.raises(AccountMatchError) as caught:
        match_account("shop", many, lang="zh")
    assert len(caught.value.candidates) == 5 and "另外 3 个" in caught.value.message


def test_match_account_none() -> None:
    for query in ("xyz", "", "   "):
        with pytest.raises(AccountMatchError) as caught:
            match_account(query, ACCOUNTS)
        assert "accounts" in caught.value.message and caught.value.candidates == ()
    with pytest.raises(CommandError):  # the executor can catch CommandError for all of them
        match_account("xyz", [], lang="zh")


# -- help -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_help_lists_every_command_from_the_table(lang: str) -> None:
    text = help_text(lang, may_change=True)  # type: ignore[arg-type]
    for spec in COMMANDS:
        assert spec.usage(lang) in text  # type: ignore[arg-type]
        assert spec.summary(lang) in text  # type: ignore[arg-type]
    assert "need an admin" not in text and "需要管理员" not in text


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_help_hides_admin_commands_from_others(lang: str) -> None:
    text = help_text(lang, may_change=False)  # type: ignore[arg-type]
    for spec in COMMANDS:
        usage = spec.usage(lang)  # type: ignore[arg-type]
        if spec.mutating:
            assert f"• {usage} " not in text
        else:
            assert spec.usage(lang, may_change=False) in text  # type: ignore[arg-type]
    assert ("need an admin" if lang == "en" else "需要管理员") in text
    assert "fix" not in text and "修复" not in text  # verify's admin-only argument


def test_help_topic_shows_usage_and_examples() -> None:
    text = help_text("en", True, topic="sync")
    assert text.startswith(spec_for("sync").usage_en)
    for example in spec_for("sync").examples_en:
        assert example in text
    assert "同步" in text  # its other spellings
    zh = help_text("zh", True, topic="同步")  # an alias works as a topic
    assert zh.startswith("同步") and "示例" in zh
    assert "Only admins" in help_text("en", False, topic="auth")
    assert "fix" not in help_text("en", False, topic="verify").split("\n")[0]
    assert help_text("en", True, topic="nonsense") == help_text("en", True)


@pytest.mark.parametrize("spec", COMMANDS, ids=lambda s: s.name)
def test_every_example_parses_to_its_command(spec) -> None:  # noqa: ANN001
    for lang, examples in (("en", spec.examples_en), ("zh", spec.examples_zh)):
        assert examples, f"{spec.name} has no {lang} examples"
        for example in examples:
            got = parse(example, date(2026, 3, 1))
            assert got.name == spec.name, example
            assert got.lang == lang, example


def test_table_is_consistent() -> None:
    aliases = [a.lower() for spec in COMMANDS for a in spec.aliases]
    assert len(aliases) == len(set(aliases)), "an alias names two commands"
    assert [s.name for s in COMMANDS] == [
        "help",
        "sync",
        "token status",
        "token refresh",
        "summary",
        "report",
        "accounts",
        "history",
        "verify",
        "export",
        "auth",
    ]
    for spec in COMMANDS:
        assert spec.aliases_en[0] == spec.name  # the canonical name is typeable
        # Every alias parses to its own command (longest alias wins over a shorter prefix).
        for alias in spec.aliases:
            assert parse(alias, TODAY).name == spec.name, alias
    mutating = {s.name for s in COMMANDS if s.mutating}
    assert mutating == {"sync", "token refresh", "auth"}  # plus verify … fix, per command


# -- unknown commands -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("snyc yesterday", "sync yesterday"),
        ("summery", "summary"),
        ("acounts", "accounts"),
        ("histroy", "history"),
        ("tokne status", "token status"),
        ("同步纪录 ", None),  # parsed as sync for the account "纪录": not an unknown command
    ],
)
def test_unknown_command_suggests(text: str, suggestion: str | None) -> None:
    if suggestion is None:
        assert isinstance(parse(text, TODAY), Sync)
        return
    with pytest.raises(UnknownCommand) as caught:
        parse(text, TODAY)
    err = caught.value
    assert err.suggestion == suggestion
    assert f'Did you mean "{suggestion}"?' in err.message
    assert "help" in err.usage and "sync" in err.usage  # short help


def test_unknown_command_short_help_in_the_users_language() -> None:
    with pytest.raises(UnknownCommand) as caught:
        parse("blah blah", TODAY)
    assert caught.value.suggestion is None
    assert caught.value.usage.startswith("Commands:") and "send `help`" in str(caught.value).lower()
    with pytest.raises(UnknownCommand) as caught:
        parse("天气怎么样", TODAY)
    assert caught.value.lang == "zh" and "发送“帮助”" in caught.value.usage


def test_extra_words_on_a_plain_command_suggest_the_longer_one() -> None:
    err = usage_error("token refesh")
    assert err.command == "token status"
    assert 'Did you mean "token refresh"?' in err.message
    assert usage_error("accounts please").command == "accounts"


def test_too_long_message_is_unknown() -> None:
    with pytest.raises(UnknownCommand):
        parse("sync " + "x" * 5000, TODAY)


# -- access control -------------------------------------------------------------------------------

ADMIN, OTHER = "ou_admin", "ou_other"
TEAM, ELSEWHERE = "oc_team", "oc_elsewhere"


def _expected(admins_set: bool, chats_set: bool, user: str, mutating: bool, chat: str, kind: str):  # noqa: ANN202
    # The contract (DESIGN.md): ADSYNC_ALLOWED_CHAT_IDS = chats whose commands are obeyed,
    # direct chats with (listed) admins always are; ADSYNC_ADMINS = who may change things,
    # empty = everyone.
    listed_admin = admins_set and user == ADMIN
    if chats_set and chat != TEAM and not (kind == "p2p" and listed_admin):
        return "chat_not_allowed"
    if mutating and admins_set and not listed_admin:
        return "admin_only"
    return None


@pytest.mark.parametrize("admins_set", [True, False], ids=["admins", "no-admins"])
@pytest.mark.parametrize("chats_set", [True, False], ids=["allowlist", "any-chat"])
@pytest.mark.parametrize("user", [ADMIN, OTHER])
@pytest.mark.parametrize("mutating", [True, False], ids=["mutating", "read"])
@pytest.mark.parametrize("chat", [TEAM, ELSEWHERE])
@pytest.mark.parametrize("kind", ["group", "p2p"])
def test_access_matrix(
    admins_set: bool, chats_set: bool, user: str, mutating: bool, chat: str, kind: str
) -> None:
    config = Settings(
        admins=(ADMIN,) if admins_set else (), allowed_chat_ids=(TEAM,) if chats_set else ()
    )
    command: Command = Sync(YESTERDAY, YESTERDAY) if mutating else Summary(YESTERDAY, YESTERDAY)
    denial = check_access(command, user_id=user, chat_id=chat, chat_type=kind, settings=config)
    expected = _expected(admins_set, chats_set, user, mutating, chat, kind)
    assert (denial.reason if denial else None) == expected


def test_denials_are_polite_and_say_what_to_do() -> None:
    config = Settings(admins=(ADMIN,), allowed_chat_ids=(TEAM,))
    refused = check_access(
        Sync(YESTERDAY, YESTERDAY), user_id=OTHER, chat_id=TEAM, chat_type="group", settings=config
    )
    assert refused is not None and refused.reason == "admin_only"
    assert "ask an admin" in refused.message and "ADSYNC_ADMINS" in refused.message
    assert refused.admins == (ADMIN,) and str(refused) == refused.message
    zh = check_access(
        Verify(YESTERDAY, YESTERDAY, fix=True, lang="zh"),
        user_id=OTHER,
        chat_id=TEAM,
        chat_type="group",
        settings=config,
    )
    assert zh is not None and zh.lang == "zh" and "管理员" in zh.message and "修复" in zh.message
    elsewhere = check_access(
        Help(None), user_id=ADMIN, chat_id=ELSEWHERE, chat_type="group", settings=config
    )
    assert elsewhere is not None and "not configured for adsync" in elsewhere.message
    assert ELSEWHERE in elsewhere.message and "ADSYNC_ALLOWED_CHAT_IDS" in elsewhere.message


def test_verify_without_fix_is_for_everyone() -> None:
    config = Settings(admins=(ADMIN,))
    for fix, reason in ((False, None), (True, "admin_only")):
        denial = check_access(
            Verify(YESTERDAY, YESTERDAY, fix),
            user_id=OTHER,
            chat_id=TEAM,
            chat_type="group",
            settings=config,
        )
        assert (denial.reason if denial else None) == reason


def test_is_admin() -> None:
    assert is_admin(OTHER, Settings())  # empty = everyone
    assert is_admin(ADMIN, Settings(admins=(ADMIN,)))
    assert not is_admin(OTHER, Settings(admins=(ADMIN,)))
    assert not is_admin("", Settings(admins=(ADMIN,)))


def test_module_is_pure_and_imports_fast() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import adsync.bot.commands; "
        "print(time.perf_counter() - t); "
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    seconds, modules = float(out[0]), set(out[1].split(","))
    heavy = {"lark_oapi", "flask", "sqlalchemy", "requests", "apscheduler", "psycopg", "dotenv"}
    assert not modules & heavy
    assert seconds < 0.5


# -- properties -----------------------------------------------------------------------------------

FRAGMENTS = [alias for spec in COMMANDS for alias in spec.aliases] + [
    "@_user_1",
    "@bot",
    "\u3000",
    "，",
    "。",
    "..",
    "...",
    "至",
    "到",
    "~",
    " - ",
    "-",
    "/",
    "yesterday",
    "昨天",
    "前天",
    "tomorrow",
    "02-30",
    "2026-13-01",
    "9999-12-31",
    "0000-01-01",
    "00000000",
    "2月30日",
    "12-30",
    "2026-02-11",
    "last 99999 days",
    "last 0 days",
    "近一百天",
    "近十五天",
    "近零天",
    "9999天前",
    "fix",
    "修复",
    "--account=",
    "account",
    "all",
    "门店A",
    "1700000000000001",
    "日",
    "月",
    "年",
    "号",
    "history 999999",
    "帮助",
    "from",
    "to",
    "help",
    "…",
    "\u200b",
    "ｓｙｎｃ",
]
TEXTS = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=8).flatmap(
        lambda parts: st.sampled_from([" ", "", "\u3000"]).map(lambda sep: sep.join(parts))
    ),
)
ANY_DAY = st.one_of(st.dates(date(2000, 1, 1), date(2100, 12, 31)), st.dates())


def _check_well_formed(command: Command, today: date) -> None:
    assert isinstance(command, Command) and command.lang in ("en", "zh")
    if isinstance(command, (Sync, Summary, Verify)):
        limits = {Sync: SYNC_MAX_DAYS, Summary: SUMMARY_MAX_DAYS, Verify: VERIFY_MAX_DAYS}
        assert command.start <= command.end <= today
        assert (command.end - command.start).days < limits[type(command)]
    if isinstance(command, History):
        assert 1 <= command.limit <= 50


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, today=ANY_DAY)
def test_parse_raises_only_command_errors(text: str, today: date) -> None:
    try:
        command = parse(text, today)
    except CommandError as err:
        assert err.message and err.lang in ("en", "zh") and str(err)
        return
    _check_well_formed(command, today)


@settings(max_examples=100, deadline=None)
@given(text=st.text(min_size=1, max_size=2000), today=ANY_DAY)
def test_parse_raises_only_command_errors_on_any_text(text: str, today: date) -> None:
    with contextlib.suppress(CommandError):
        _check_well_formed(parse(text, today), today)


def _forms(day: date, today: date) -> list[str]:
    """Every way to write ``day`` that must parse back to it, given ``today``."""
    y, m, dd = day.year, day.month, day.day
    forms = [
        day.isoformat(),
        f"{y}/{m:02}/{dd:02}",
        f"{y}/{m}/{dd}",
        f"{y}.{m:02}.{dd:02}",
        f"{y}{m:02}{dd:02}",
        f"{y}年{m}月{dd}日",
        f"{y}-{m}-{dd}",
    ]
    if (today - day).days < 365:  # without a year it means the most recent such day
        forms += [
            f"{m:02}-{dd:02}",
            f"{m}-{dd}",
            f"{m:02}/{dd:02}",
            f"{m}/{dd}",
            f"{m}月{dd}日",
            f"{m:02}月{dd:02}日",
            f"{m}月{dd}号",
        ]
    back = (today - day).days
    words = {0: ["today", "今天", "今日"], 1: ["yesterday", "昨天", "昨日"]}
    words[2] = ["前天", "day before yesterday"]
    words[3] = ["大前天"]
    forms += words.get(back, [])
    forms += [f"{back} days ago", f"{back}天前"] if back else []
    return forms


TODAYS = st.dates(date(2001, 1, 1), date(2100, 12, 31))


@settings(max_examples=200, deadline=None)
@given(today=TODAYS, back=st.integers(0, 4000), data=st.data())
def test_round_trip_single_day(today: date, back: int, data: st.DataObject) -> None:
    day = today - timedelta(days=back)
    form = data.draw(st.sampled_from(_forms(day, today)))
    command = data.draw(st.sampled_from(["summary", "汇总", "sync", "同步", "verify", "校验"]))
    if command in ("sync", "同步") and back > REPORT_WINDOW_DAYS:
        with pytest.raises(UsageError) as refused:  # the platform's window, said once
            parse(f"{command} {form}", today)
        assert str(today - timedelta(days=REPORT_WINDOW_DAYS)) in refused.value.message
        return
    got = parse(f"{command} {form}", today)
    assert isinstance(got, (Summary, Sync, Verify))
    assert (got.start, got.end) == (day, day), form


SEPARATORS = ["..", "...", "至", "到", " 至 ", "~", " ~ ", "～", " - ", "-", " to ", "—"]


@settings(max_examples=200, deadline=None)
@given(
    today=TODAYS,
    gap=st.integers(0, 400),
    length=st.integers(0, SUMMARY_MAX_DAYS - 1),
    data=st.data(),
)
def test_round_trip_range(today: date, gap: int, length: int, data: st.DataObject) -> None:
    end = today - timedelta(days=gap)
    start = end - timedelta(days=length)
    left = data.draw(st.sampled_from(_forms(start, today)), label="start")
    right_forms = _forms(end, today)
    if (start.year, start.month) == (end.year, end.month):
        right_forms.append(f"{end.day}日")  # "2月1日至7日"
    right = data.draw(st.sampled_from(right_forms), label="end")
    sep = data.draw(st.sampled_from(SEPARATORS), label="sep")
    got = parse(f"summary {left}{sep}{right}", today)
    assert isinstance(got, Summary)
    assert (got.start, got.end) == (start, end)
    assert got.start <= got.end


@settings(max_examples=100, deadline=None)
@given(
    today=TODAYS,
    a=st.integers(-30, 500),
    b=st.integers(-30, 500),
    cmd=st.sampled_from(["sync", "summary"]),
)
def test_any_range_parses_in_order_or_is_refused(today: date, a: int, b: int, cmd: str) -> None:
    first, second = today - timedelta(days=a), today - timedelta(days=b)
    limit = SYNC_MAX_DAYS if cmd == "sync" else SUMMARY_MAX_DAYS
    ok = first <= second <= today and (second - first).days + 1 <= limit
    if cmd == "sync":
        ok = ok and a <= REPORT_WINDOW_DAYS
    try:
        got = parse(f"{cmd} {first}..{second}", today)
    except UsageError:
        assert not ok
        return
    assert ok and (got.start, got.end) == (first, second)  # type: ignore[attr-defined]


@settings(max_examples=100, deadline=None)
@given(
    today=TODAYS,
    back=st.integers(0, 60),
    account=st.sampled_from(["门店A", "Store C", "1700000000000001", "朝阳 旗舰店", "Shop_7"]),
    data=st.data(),
)
def test_round_trip_sync_with_account(
    today: date, back: int, account: str, data: st.DataObject
) -> None:
    day = today - timedelta(days=back)
    form = data.draw(st.sampled_from(_forms(day, today)))
    got = parse(f"sync {form} {account}", today)
    assert got == Sync(day, day, account, lang=got.lang)


@settings(max_examples=100, deadline=None)
@given(
    text=st.sampled_from(
        [e for spec in COMMANDS for e in spec.examples_en + spec.examples_zh]
        + ["token status", "history 20", "verify last 7 days fix"]
    ),
    prefix=st.sampled_from(["", "@_user_1 ", "@_user_1\u3000", "@adsync ", "/"]),
    suffix=st.sampled_from(["", "。", "!", " ", "\u3000", "？"]),
    upper=st.booleans(),
)
def test_decoration_does_not_change_the_command(
    text: str, prefix: str, suffix: str, upper: bool
) -> None:
    today = date(2026, 3, 1)
    plain = parse(text, today)
    decorated = prefix + (text.upper() if upper else text).replace(" ", "  ") + suffix
    assert parse(decorated, today) == plain
