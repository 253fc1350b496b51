"""Telling the report chats who authorized what: the callback page's outcomes and the CLI's
(`adsync auth code`) all post the same card, through the bot with the webhook as fallback."""

from __future__ import annotations

import time
from typing import Any

from adsync.bot import cards
from adsync.sync.config import Settings
from adsync.sync.store import Store
from adsync.sync.tokens import AuthResult


def announce(
    settings: Settings, store: Store, card: dict[str, Any], key: str, messenger: Any = None
) -> None:
    from adsync.bot.alerts import Notifier

    if messenger is None and settings.feishu_app_id and settings.feishu_app_secret:
        from adsync.bot.messenger import Messenger

        messenger = Messenger(settings)
    Notifier(settings, store, messenger).broadcast(card, key)


def announce_authorization(
    settings: Settings, store: Store, result: AuthResult, messenger: Any = None
) -> None:
    kind = "cancelled" if result.cancelled else ("confirmed" if result.dropped else "authorized")
    card = cards.authorization_card(
        kind, result.requested_by, result.account_ids, result.names, result.dropped
    )
    announce(settings, store, card, f"auth:{kind}:{time.time_ns()}", messenger)


def announce_refusal(settings: Settings, store: Store, by: str, messenger: Any = None) -> None:
    card = cards.authorization_card("refused", by, (), {})
    announce(settings, store, card, f"auth:refused:{time.time_ns()}", messenger)
