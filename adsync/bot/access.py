"""Who may run what, where: ADSYNC_ALLOWED_CHAT_IDS for chats, ADSYNC_ADMINS for commands
that change data. A refusal is a ``Denial``: polite, in the asker's language, saying what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from adsync.bot.commands import Command, Lang, Verify, spec_for

if TYPE_CHECKING:
    from adsync.sync.config import Settings


@dataclass(frozen=True)
class Denial:
    """Why a command is refused, politely, in the user's language, saying what to do."""

    reason: Literal["chat_not_allowed", "admin_only"]
    message: str
    lang: Lang = "en"
    admins: tuple[str, ...] = ()  # open_ids a card may @-mention

    def __str__(self) -> str:
        return self.message


def is_admin(user_id: str, settings: Settings) -> bool:
    """May this user run mutating commands? Everyone may while ADSYNC_ADMINS is empty."""
    return not settings.admins or user_id in settings.admins


def _command_word(command: Command, lang: Lang) -> str:
    try:
        word = spec_for(command).word(lang)
    except KeyError:
        word = command.name
    if isinstance(command, Verify) and command.fix:
        word += " … 修复" if lang == "zh" else " … fix"
    return word


def check_access(
    command: Command, *, user_id: str, chat_id: str, chat_type: str, settings: Settings
) -> Denial | None:
    """None if the command may run here for this user, else the Denial to reply with.

    ADSYNC_ALLOWED_CHAT_IDS, when set, lists the chats whose commands are obeyed; a direct
    chat with a listed admin is always obeyed (so admins can operate from anywhere), other
    direct chats only if listed (otherwise a DM would bypass the list). Any chat_type but
    "p2p" counts as a group. ADSYNC_ADMINS, when set, limits mutating commands to its open_ids.
    """
    lang = command.lang
    zh = lang == "zh"
    admins = tuple(settings.admins)
    listed_admin = bool(user_id) and user_id in admins
    allowed_chats = tuple(settings.allowed_chat_ids)
    if allowed_chats and chat_id not in allowed_chats and not (chat_type == "p2p" and listed_admin):
        if chat_type == "p2p":
            message = (
                f"我只在团队配置好的群里执行命令。请在那个群里 @我，或请管理员把这个会话（{chat_id}）"
                "加入 ADSYNC_ALLOWED_CHAT_IDS。"
                if zh
                else "I only take commands in the team's adsync group chat. Please ask there, "
                f"or ask an admin to add this chat ({chat_id}) to ADSYNC_ALLOWED_CHAT_IDS."
            )
        else:
            message = (
                f"这个群还没有配置使用 adsync，我不能在这里执行命令。管理员可以把本群（{chat_id}）"
                "加入 ADSYNC_ALLOWED_CHAT_IDS。"
                if zh
                else "This chat is not configured for adsync, so I can't take commands here. "
                f"An admin can add it ({chat_id}) to ADSYNC_ALLOWED_CHAT_IDS."
            )
        return Denial("chat_not_allowed", message, lang, admins)
    if command.mutating and admins and not listed_admin:
        word = _command_word(command, lang)
        message = (
            f"“{word}”会改动数据，只有管理员可以执行。请找管理员帮你执行；"
            f"如果你应该是管理员，请让管理员把你的 ID（{user_id}）加入 ADSYNC_ADMINS。"
            if zh
            else f'"{word}" changes data, so only admins can run it. Please ask an admin to '
            f"run it for you; if you should be one, ask them to add your id ({user_id}) "
            "to ADSYNC_ADMINS."
        )
        return Denial("admin_only", message, lang, admins)
    return None
