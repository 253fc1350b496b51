"""`adsync report [DATE] [--post]`: the daily report card of a day — printed as the text of the
card the clock posts, or posted to the report chats once per chat and day (adsync.bot.report)."""

from __future__ import annotations

import sys
from datetime import date, datetime
from typing import Any

from adsync.bot import cards
from adsync.cli.args import today, when_text
from adsync.cli.context import Context
from adsync.cli.fmt import print_json
from adsync.sync.dates import parse_when
from adsync.sync.errors import ConfigError


def report(ctx: Context) -> int:
    day = _one_day(ctx)
    lang = getattr(ctx.args, "lang", None) or "zh"
    if getattr(ctx.args, "post", False):
        if lang != "zh":
            raise ConfigError(
                "--post sends the clock's card, which is in Chinese; --lang is for printing",
                hint=f"run `adsync report {day} --post` without --lang",
            )
        return _post(ctx, day)
    from adsync.sync.dailyreport import daily_report

    found = daily_report(ctx.services, day)
    card = cards.report_card(found, lang)
    if ctx.json:
        print_json({**found.to_json(), "lang": lang, "text": cards.to_text(card)})
    else:
        ctx.out.write(cards.to_text(card) + "\n")
    return 0


def _one_day(ctx: Context) -> date:
    text = when_text(ctx)
    start, end = parse_when(text, today(ctx))
    if start != end:
        raise ConfigError(
            f"a report is of one day; {start}..{end} is {(end - start).days + 1} days",
            hint=f"`adsync summary {start}..{end}` sums a range; `adsync report {end}` shows "
            "one day",
        )
    return start


def _post(ctx: Context, day: date) -> int:
    settings = ctx.settings
    if not settings.feishu_report_chat_ids:
        raise ConfigError(
            "FEISHU_REPORT_CHAT_IDS is not set: there is no report chat to post to; nothing "
            "was posted",
            hint="set FEISHU_REPORT_CHAT_IDS to the oc_… chats that get the daily report (the "
            "bot must be in them), or leave out --post to print the report here",
        )
    settings.require("FEISHU_APP_ID", "FEISHU_APP_SECRET")
    from adsync.sync.dailyreport import daily_report

    services = ctx.services
    if not daily_report(services, day).synced:
        # A card saying "not synced" would take the chats' one report of the day.
        message = f"{day} is not synced yet: nothing was posted"
        hint = f"run `adsync sync {day}`, then `adsync report {day} --post`"
        if ctx.json:
            print_json({"date": day.isoformat(), "error": message, "hint": hint, "exit_code": 1})
        print(f"error: {message}\n  → {hint}", file=sys.stderr)
        return 1
    from adsync.bot.alerts import Notifier
    from adsync.bot.messenger import Messenger
    from adsync.bot.report import post_report

    notifier = Notifier(settings, services.store, Messenger(settings))
    posting = post_report(services, notifier, day, by="cli")
    code = 1 if posting.failed else 0
    if ctx.json:
        print_json({**posting.to_json(), "exit_code": code})
        return code
    ctx.say(f"The report of {day}:")
    for chat in posting.chats:
        ctx.say("  " + _line(chat, settings.tz, day))
    return code


def _line(chat: Any, tz: Any, day: date) -> str:
    if chat.outcome == "posted":
        return f"✓ posted to chat {chat.chat_id} (message {chat.message_id})"
    if chat.outcome == "webhook":
        return f"✓ posted through the alert webhook (the bot could not reach {chat.chat_id})"
    if chat.outcome == "failed":
        return (
            f"✗ not posted to chat {chat.chat_id}: {chat.error}; fix that, then run "
            f"`adsync report {day} --post` again"
        )
    at = _local(chat.at, tz)
    by = {"clock": "the clock", "cli": "`adsync report --post`"}.get(chat.by, chat.by or "")
    return (
        f"· already posted at {at} to chat {chat.chat_id}"
        + (f" (by {by})" if by else "")
        + ": nothing new posted"
    )


def _local(iso: str, tz: Any) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso or "an earlier time"
