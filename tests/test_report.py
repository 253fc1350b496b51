"""The report on demand: `adsync report [DATE] [--post]` and the chat's `report [DATE]`.

Each test is the incident it prevents: the printed report telling another story than the card
the clock posted (failures included, and after a retry); a second `--post`, or the 07:00 clock
after one, posting the day's report twice; the clock and an operator posting at the same
moment (real processes, both backends); a read answered only after the chat's sync; a bad
date or a missing setting that posts something anyway.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adsync.bot import cards
from adsync.sync.runner import Runner

from .conftest import Sandbox, report, run_cli
from .test_bot import BotServer, say
from .test_clock import (
    CHAT,
    SECOND_CHAT,
    Now,
    at,
    authorize,
    make_clock,
    posted,
    record,
    reports,
)
from .test_durable import is_working, replies_to, slow_reports, wait_until


def add_chat(sandbox: Sandbox, chat_id: str) -> None:
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": chat_id, "bot_member": True})


def text_of(card: dict[str, Any]) -> str:
    return cards.to_text(card) + "\n"


@pytest.fixture
def day(sandbox: Sandbox, services: Any) -> date:
    """Today in the business zone, pinned in the sandbox; Ocean Engine authorized."""
    today = datetime.now(services.settings.tz).date()
    authorize(services, sandbox, today)
    return today


def broadcasts(sandbox: Sandbox, chat_id: str = CHAT) -> list[Any]:
    """The report cards posted in ``chat_id`` (answers to people's messages left out)."""
    roots = {
        m["message_id"]
        for m in sandbox.get("/_sandbox/feishu/messages", chat_id=chat_id)["messages"]
        if not m.get("parent_id")
    }
    return [p for p in reports(sandbox, chat_id) if p.message_id in roots]


# -- the text is the clock's card -------------------------------------------------------------


def test_report_prints_the_card_the_clock_posted_failures_and_retry_included(
    services: Any, sandbox: Sandbox, env: dict[str, str], day: date, cli: Any
) -> None:
    granted = [str(i) for i in sandbox.get("/_sandbox/oceanengine/grant")["account_ids"]]
    denied = granted[0]
    sandbox.post("/_sandbox/oceanengine/accounts", {"deny": [int(denied)]})
    now = Now(at(day, 7))
    clock = make_clock(services, now)
    result = clock.daily()
    assert result is not None and result.status == "partial"
    [card] = reports(sandbox)
    assert "同步失败" in card.text  # the morning's card names the failed account
    yesterday = day - timedelta(days=1)
    printed = run_cli(["report"], env)  # the real command, its own process
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == text_of(card.content)
    for words in (["昨天"], [str(yesterday)], [f"{yesterday.month}月{yesterday.day}日"]):
        again = cli(["report", *words], env)
        assert (again.returncode, again.stdout) == (0, printed.stdout), words

    # The account comes back; the 07:30 retry updates the morning's card: the report follows.
    sandbox.post("/_sandbox/oceanengine/accounts", {"allow": [int(denied)]})
    now.at(day, 7, 30)
    retried = clock.retries()
    assert retried is not None and retried.status == "ok"
    [card] = reports(sandbox)
    assert card.versions == 2 and "同步失败" not in card.text
    after = cli(["report"], env)
    assert after.stdout == text_of(card.content)
    english = cli(["report", "--lang", "en", "--json"], env)
    doc = json.loads(english.stdout)
    assert english.returncode == 0 and doc["text"].startswith(f"• Ad report · {yesterday}\n")
    assert doc["failures"] == [] and doc["synced"] is True


def test_a_date_not_synced_says_so_and_how_and_post_posts_nothing(
    services: Any, sandbox: Sandbox, env: dict[str, str], day: date, cli: Any
) -> None:
    old = day - timedelta(days=20)
    shown = cli(["report", str(old)], env)
    assert shown.returncode == 0
    assert f"{old} 还没有同步" in shown.stdout and f"同步 {old}" in shown.stdout
    refused = cli(["report", str(old), "--post"], env)
    assert refused.returncode == 1
    assert "not synced yet: nothing was posted" in refused.stderr
    assert f"adsync sync {old}" in refused.stderr
    assert posted(sandbox) == []


def test_bad_dates_and_missing_chats_are_clear_and_post_nothing(
    services: Any, sandbox: Sandbox, env: dict[str, str], day: date, cli: Any
) -> None:
    Runner(services).run(day - timedelta(days=1), day - timedelta(days=1), trigger="cli")
    cases = [
        (["report", "tomorrow", "--post"], "is in the future"),
        (["report", "2月30日", "--post"], "There is no date"),
        (["report", "last 7 days", "--post"], "a report is of one day"),
        (["report", "--post", "--lang", "en"], "--post sends the clock's card"),
    ]
    for args, words in cases:
        answer = cli(args, env)
        assert answer.returncode == 2, (args, answer.stderr)
        assert words in answer.stderr, (args, answer.stderr)
    no_chats = cli(["report", "--post"], {**env, "FEISHU_REPORT_CHAT_IDS": ""})
    assert no_chats.returncode == 2
    assert "FEISHU_REPORT_CHAT_IDS is not set" in no_chats.stderr
    assert "nothing was posted" in no_chats.stderr
    assert posted(sandbox) == []
    assert record(services.store, f"report:{day - timedelta(days=1)}") is None


# -- once per chat and day ----------------------------------------------------------------------


def test_post_posts_once_per_chat_says_already_and_the_clock_then_updates_not_reposts(
    services: Any, sandbox: Sandbox, env: dict[str, str], day: date, cli: Any
) -> None:
    add_chat(sandbox, SECOND_CHAT)
    env = {**env, "FEISHU_REPORT_CHAT_IDS": f"{CHAT},{SECOND_CHAT}"}
    yesterday = day - timedelta(days=1)
    Runner(services).run(yesterday, yesterday, trigger="cli")  # someone synced before 07:00
    first = cli(["report", "--post"], env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("✓ posted to chat") == 2
    mine = {chat: reports(sandbox, chat) for chat in (CHAT, SECOND_CHAT)}
    assert all(len(found) == 1 for found in mine.values())
    assert text_of(mine[CHAT][0].content) == cli(["report"], env).stdout

    second = cli(["report", "昨天", "--post"], env)
    assert second.returncode == 0
    for chat in (CHAT, SECOND_CHAT):
        line = (
            r"· already posted at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d to chat "
            + re.escape(chat)
            + r" \(by `adsync report --post`\): nothing new posted"
        )
        assert re.search(line, second.stdout), second.stdout
    assert [len(reports(sandbox, c)) for c in (CHAT, SECOND_CHAT)] == [1, 1]

    # 07:00: the clock syncs and reports — into the cards already there, not new ones.
    from adsync.sync.config import load_settings
    from adsync.sync.services import open_services

    two_chats = open_services(load_settings(env, cwd=Path(env["ADSYNC_DATA_DIR"]).parent))
    try:
        clock = make_clock(two_chats, Now(at(day, 7)))
        assert clock.daily() is not None
    finally:
        two_chats.close()
    for chat in (CHAT, SECOND_CHAT):
        [card] = reports(sandbox, chat)
        assert card.message_id == mine[chat][0].message_id and card.versions == 2
    done = record(services.store, f"daily:{day}")
    assert done is not None
    assert done["reports"] == {c: mine[c][0].message_id for c in (CHAT, SECOND_CHAT)}
    third = cli(["report", "--post"], env)
    assert third.stdout.count("nothing new posted") == 2
    assert [len(reports(sandbox, c)) for c in (CHAT, SECOND_CHAT)] == [1, 1]
    # A chat added later gets the day's report from the next --post; the others nothing.
    add_chat(sandbox, "oc_third_team")
    three = {**env, "FEISHU_REPORT_CHAT_IDS": f"{CHAT},{SECOND_CHAT},oc_third_team"}
    fourth = cli(["report", "--post"], three)
    assert "✓ posted to chat oc_third_team" in fourth.stdout
    assert fourth.stdout.count("nothing new posted") == 2
    assert len(reports(sandbox, "oc_third_team")) == 1


def _racer(env: dict[str, str], role: str, today: date, barrier: Any, out: Any) -> None:
    """One process: the clock's report step, or what `adsync report --post` calls, each with
    its own settings, store and bot, set up before the barrier so that the posts themselves
    start at the same moment."""
    from adsync.bot.alerts import Notifier
    from adsync.bot.messenger import Messenger
    from adsync.bot.report import post_report
    from adsync.sync.config import load_settings
    from adsync.sync.services import open_services

    services = open_services(load_settings(env, cwd=Path(env["ADSYNC_DATA_DIR"]).parent))
    yesterday = today - timedelta(days=1)
    try:
        clock = make_clock(services, Now(at(today, 7)))
        notifier = Notifier(services.settings, services.store, Messenger(services.settings))
        barrier.wait(timeout=60)
        if role == "clock":
            out.put((role, [], sorted(clock._report(yesterday))))
            return
        posting = post_report(services, notifier, yesterday, by=role)
        out.put((role, [(c.chat_id, c.outcome) for c in posting.chats], []))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, not lost
        out.put((role, "crashed", repr(exc)))
    finally:
        services.close()


def test_the_clock_and_two_report_posts_racing_post_once_per_chat(
    services: Any, sandbox: Sandbox, env: dict[str, str], day: date
) -> None:
    add_chat(sandbox, SECOND_CHAT)
    env = {**env, "FEISHU_REPORT_CHAT_IDS": f"{CHAT},{SECOND_CHAT}"}
    yesterday = day - timedelta(days=1)
    Runner(services).run(yesterday, yesterday, trigger="cli")
    roles = ["clock", "cli-1", "cli-2"]
    ctx = multiprocessing.get_context("fork")  # as test_clock's racing clocks
    barrier, out = ctx.Barrier(len(roles)), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(env, r, day, barrier, out)) for r in roles]
    for p in procs:
        p.start()
    try:
        answers = [out.get(timeout=120) for _ in roles]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs)
    assert not [a for a in answers if a[1] == "crashed"], answers
    [clock_saw] = [chats for role, _o, chats in answers if role == "clock"]
    assert clock_saw == sorted([CHAT, SECOND_CHAT])  # its daily record names both messages
    posted_by = record(services.store, f"report:{yesterday}")
    assert posted_by is not None and set(posted_by) == {CHAT, SECOND_CHAT}
    for chat in (CHAT, SECOND_CHAT):
        assert len(broadcasts(sandbox, chat)) == 1, chat
        # Exactly one process posted it; the ones after it found it there (the clock, which
        # updates rather than reposts, may have come second).
        claims = [(role, dict(o).get(chat)) for role, o, _ in answers if role != "clock"]
        winner = posted_by[chat]["by"]
        for role, outcome in claims:
            assert outcome == ("posted" if role == winner else "already"), (chat, answers)
    report(
        "report race (clock + 2 × report --post, real processes): each chat's one post came "
        f"from {sorted({v['by'] for v in posted_by.values()})}"
    )


# -- in the chat --------------------------------------------------------------------------------


def test_the_chat_grammar_reads_one_day_and_sends_ranges_to_summary() -> None:
    from adsync.bot.access import check_access
    from adsync.bot.commands import Report, UsageError, parse
    from adsync.sync.config import Settings

    today = date(2026, 2, 17)
    assert parse("报告 昨天", today) == Report(date(2026, 2, 16), lang="zh")
    assert parse("@_user_1 报告", today) == Report(date(2026, 2, 16), lang="zh")
    assert parse("report 2026-02-11", today) == Report(date(2026, 2, 11), lang="en")
    assert parse("daily report 2月10日", today) == Report(date(2026, 2, 10), lang="zh")
    for text, words in (
        ("报告 2月1日至7日", "多天请用“汇总 2月1日至7日”"),
        ("report last 7 days", 'for a range use "summary last 7 days"'),
        ("report tomorrow", "is in the future"),
        ("报告 2月30日", "没有“2月30日”这一天"),
    ):
        with pytest.raises(UsageError) as err:
            parse(text, today)
        assert words in str(err.value), text
    # A read: anyone in an allowed chat may ask, as for summary.
    settings = Settings().with_overrides(admins=("ou_admin",))
    asked = parse("报告", today)
    assert (
        check_access(asked, user_id="ou_x", chat_id="oc_a", chat_type="group", settings=settings)
        is None
    )


@pytest.fixture
def served(env: dict[str, str], services: Any, day: date, tmp_path: Path) -> Iterator[BotServer]:
    from adsync.bot.app import create_app
    from adsync.sync.config import load_settings

    from .test_bot import ENCRYPT_KEY, VERIFY_TOKEN

    bot_env = {**env, "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY, "FEISHU_VERIFICATION_TOKEN": VERIFY_TOKEN}
    srv = BotServer(create_app(load_settings(bot_env, cwd=tmp_path)))
    yield srv
    srv.stop()
    srv.bot.actions.services.close()


def test_chat_report_answers_with_the_clocks_card_and_never_waits_behind_a_sync(
    served: BotServer, services: Any, sandbox: Sandbox, day: date
) -> None:
    assert make_clock(services, Now(at(day, 7))).daily() is not None
    [clock_card] = reports(sandbox)
    slow_reports(sandbox, 1500)
    sync = say(sandbox, f"sync {day - timedelta(days=7)}..{day - timedelta(days=1)}")
    assert served.post_event(sync).status_code == 200
    sync_id = sync["event"]["message"]["message_id"]
    wait_until(lambda: replies_to(sandbox, sync_id), 10, "the sync's working card")
    asked = say(sandbox, "@adsync 报告 昨天")
    asked_id = asked["event"]["message"]["message_id"]
    started = time.monotonic()
    assert served.post_event(asked).status_code == 200
    [answer] = wait_until(lambda: replies_to(sandbox, asked_id), 5, "the report's answer")
    took = time.monotonic() - started
    assert is_working(replies_to(sandbox, sync_id)[0]), "the sync was still running"
    assert cards.to_text(answer["content"]) == cards.to_text(clock_card.content)
    report(f"chat report: answered in {took * 1000:.0f} ms while the chat's sync ran")
    assert took < 2.0
    # A bad date: the format, nothing else.
    bad = say(sandbox, "报告 2月30日")
    served.post_event(bad)
    [refusal] = wait_until(
        lambda: replies_to(sandbox, bad["event"]["message"]["message_id"]), 5, "the refusal"
    )
    assert "没有“2月30日”这一天" in cards.to_text(refusal["content"])
    served.idle(120)
    assert len(broadcasts(sandbox)) == 1  # answers in the chat are replies, not broadcasts
