"""Is the bot in the chats it must post to? Asked through lark-oapi's
``im.v1.chat_members.is_in_chat`` (GET /open-apis/im/v1/chats/:chat_id/members/is_in_chat),
which answers for the caller: with the app's tenant token, the bot.

A report chat the bot is not in fails every daily report (230002) on the first morning; this
check finds it the day the operator sets adsync up (`adsync doctor`). Imports lark-oapi: only
commands that talk to Feishu import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lark_oapi.api.im.v1 import IsInChatChatMembersRequest

from adsync.sync.feishu import FeishuCaller, FeishuError

# The chat-member API's error codes (its error table in the Feishu docs) and what to do.
_FIXES = {
    232006: "no chat has this id (or the app cannot see it): copy the chat id again "
    "(group settings → the chat's id, oc_…) and correct FEISHU_REPORT_CHAT_IDS",
    232009: "this group was dissolved: remove it from FEISHU_REPORT_CHAT_IDS",
    232010: "the chat belongs to another organisation (tenant) than the app",
    232025: "the app's bot is not enabled: open the app in the Feishu developer console, "
    "add the Bot capability and publish a version",
    232034: "the app is disabled or not installed in this organisation",
    99991672: "the app lacks the permission to read chat membership: add im:chat:readonly "
    "(获取群组信息) in the developer console and publish a version",
}


@dataclass(frozen=True)
class Membership:
    chat_id: str
    member: bool | None  # None: the platform did not say (see ``problem``)
    problem: str = ""  # what went wrong, with the platform's code
    fix: str = ""


def memberships(caller: FeishuCaller, chat_ids: Sequence[str]) -> list[Membership]:
    """The bot's membership of each chat, in order; a failed question is a Membership with a
    problem, never an exception (a doctor lists every chat, not the first bad one)."""
    api = caller.client.im.v1.chat_members
    found = []
    for chat_id in chat_ids:
        request = IsInChatChatMembersRequest.builder().chat_id(chat_id).build()
        try:
            response = caller.call(f"membership of {chat_id}", api.is_in_chat, request)
        except FeishuError as exc:
            fix = _FIXES.get(exc.code, exc.hint)
            found.append(Membership(chat_id, None, exc.message, fix))
            continue
        found.append(Membership(chat_id, bool(response.data and response.data.is_in_chat)))
    return found
