"""Feishu cards (JSON 2.0) for every answer and report the bot posts, and their plain text.

Every builder is a pure function from a result object to a card dict: no I/O, no lark-oapi (the
sender serialises the dict), no database (the result types are imported for annotations only,
because ``adsync.sync.*`` pulls SQLAlchemy). Each returns a card that is already ``fit`` under
the platform's 30 KB limit (error 230025), with ``update_multi`` on so a "working on it…" card
can be PATCHed into the answer later.

The limit is on the *request body* ("卡片消息、富文本消息请求体最大不能超过 30 KB", the create
and reply pages), where the card travels as a JSON string inside JSON: every quote and backslash
of the card is escaped once more. ``card_size`` counts exactly those bytes (lark-oapi 1.7.5
serialises the body with ``json.dumps(…, ensure_ascii=False)``, ``core/json.py``), and
``CARD_LIMIT`` leaves room for the rest of the body and a margin.

Component shapes follow the JSON 2.0 docs (open.feishu.cn → feishu-cards/card-json-v2-*):
``markdown``, ``hr``, ``table`` (text/options columns, ``page_size`` ≤ 10, at most 5 per card,
top level only), ``column_set``/``column``, ``chart`` (a VChart ``chart_spec``), and
``button`` with ``behaviors`` ``[{"type": "open_url", "default_url": …}]`` or
``[{"type": "callback", "value": {…}}]``. JSON 2.0 rejects unknown properties, so nothing here
carries private keys: the only bookkeeping rides in documented ``element_id`` values.

``to_text`` renders any card for the terminal (``adsync chat``): the console shows exactly that.

The package keeps the three jobs apart: ``parts`` (words, numbers, text hygiene, components),
the builders (``run``: the sync card, ``tokens``, ``summary``, ``lists``: verify / history /
accounts, ``answers``: alerts, authorization links, plain messages), ``fit`` (sizes and the
cutting) and ``text`` (the terminal rendering). Callers use the names below only.
"""

from adsync.bot.cards.answers import (
    alert_card,
    authorization_card,
    message_card,
    working_card,
)
from adsync.bot.cards.export import export_card, export_failed_card
from adsync.bot.cards.fit import card_content, card_size, fit
from adsync.bot.cards.lists import accounts_card, history_card, verify_card
from adsync.bot.cards.parts import (
    BODY_LIMIT,
    CARD_LIMIT,
    ENVELOPE_BYTES,
    MARGIN_BYTES,
    Card,
    count,
    duration,
    mentions,
    money,
    pct,
)
from adsync.bot.cards.run import sync_card
from adsync.bot.cards.summary import report_card, summary_card
from adsync.bot.cards.text import to_text
from adsync.bot.cards.tokens import token_card

__all__ = [
    "BODY_LIMIT",
    "CARD_LIMIT",
    "ENVELOPE_BYTES",
    "MARGIN_BYTES",
    "Card",
    "accounts_card",
    "alert_card",
    "authorization_card",
    "card_content",
    "card_size",
    "export_card",
    "export_failed_card",
    "count",
    "duration",
    "fit",
    "history_card",
    "mentions",
    "message_card",
    "money",
    "pct",
    "report_card",
    "summary_card",
    "sync_card",
    "to_text",
    "token_card",
    "verify_card",
    "working_card",
]
