"""What each chat command does: one call into ``adsync.sync`` and a card with the answer.

The webhook, the long connection and the console all end here, so a command behaves the same
wherever it is typed. Nothing in here raises: every failure becomes a card that says what
failed and what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from adsync.bot import cards
from adsync.bot.commands import (
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
    Verify,
    help_text,
    match_account,
)
from adsync.sync.errors import AdsyncError, AuthorizationNeeded
from adsync.sync.reports import resolve_accounts
from adsync.sync.runner import Runner, RunResult, recent_runs
from adsync.sync.services import Services

log = logging.getLogger("adsync.actions")

Card = dict[str, Any]

TITLES = {
    "failed": {"en": "Could not do that", "zh": "未能完成"},
    "auth": {"en": "Authorize Ocean Engine", "zh": "授权巨量引擎"},
    "help": {"en": "adsync commands", "zh": "adsync 指令"},
}


@dataclass(frozen=True)
class Caller:
    """Who asked, where: for access control, the ledger and the reply's language."""

    user_id: str
    chat_id: str
    chat_type: str = "group"
    may_change: bool = True

    @property
    def label(self) -> str:
        return self.user_id or "console"


class Actions:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings

    def today(self) -> date:
        return datetime.now(self.settings.tz).date()

    @staticmethod
    def is_long(command: Command) -> bool:
        """Commands that deserve a "working on it" card first."""
        return isinstance(command, Sync | Verify)

    def working(self, command: Command) -> Card:
        lang = command.lang
        if isinstance(command, Sync):
            span = _span(command.start, command.end)
            text = f"正在同步 {span} …" if lang == "zh" else f"Syncing {span} …"
        else:
            text = "正在校验 …" if lang == "zh" else "Verifying …"
        return cards.working_card(text, lang)

    def execute(self, command: Command, caller: Caller, trigger: str = "chat") -> Card:
        """Run ``command`` and return the answer card; never raises."""
        handler: Callable[[Any, Caller, str], Card] = getattr(
            self, f"_do_{type(command).__name__.lower()}"
        )
        try:
            return handler(command, caller, trigger)
        except CommandError as exc:
            return cards.message_card(
                TITLES["failed"][command.lang], str(exc), command.lang, "warning"
            )
        except AuthorizationNeeded as exc:
            return self._auth_card(command.lang, exc.message, exc.auth_url)
        except AdsyncError as exc:
            return cards.message_card(
                TITLES["failed"][command.lang], str(exc), command.lang, "error"
            )
        except Exception as exc:  # noqa: BLE001 - the chat gets an answer whatever happens
            log.exception("command %s failed", type(command).__name__)
            text = f"{type(exc).__name__}: {exc}"
            return cards.message_card(TITLES["failed"][command.lang], text, command.lang, "error")

    # -- one method per command ---------------------------------------------------------------

    def _do_help(self, command: Help, caller: Caller, trigger: str) -> Card:
        text = help_text(command.lang, may_change=caller.may_change, topic=command.topic)
        return cards.message_card(TITLES["help"][command.lang], text, command.lang)

    def _do_sync(self, command: Sync, caller: Caller, trigger: str) -> Card:
        account_ids = None
        if command.account_query:
            scope = resolve_accounts(
                self.settings, self.services.store, self.services.tokens.granted_account_ids()
            )
            account_id, _name = match_account(
                command.account_query, [(a.id, a.name) for a in scope], lang=command.lang
            )
            account_ids = [account_id]
        result = self.sync(command.start, command.end, account_ids, caller, trigger)
        return cards.sync_card(result, command.lang)

    def sync(
        self,
        start: date,
        end: date,
        account_ids: list[str] | None,
        caller: Caller,
        trigger: str,
    ) -> RunResult:
        # A chat must not wait behind another run: it answers "already running" at once.
        return Runner(self.services).run(
            start, end, account_ids=account_ids, trigger=trigger, requested_by=caller.label, wait=0
        )

    def _do_tokenstatus(self, command: TokenStatus, caller: Caller, trigger: str) -> Card:
        status = self.services.tokens.status()
        url = self._auth_url(caller) if status.health != "ok" else None
        return cards.token_card(status, command.lang, auth_url=url, tz=self.settings.tz)

    def _do_tokenrefresh(self, command: TokenRefresh, caller: Caller, trigger: str) -> Card:
        self.services.tokens.refresh(reason=f"chat: {caller.label}")
        status = self.services.tokens.status()
        return cards.token_card(status, command.lang, tz=self.settings.tz)

    def _do_summary(self, command: Summary, caller: Caller, trigger: str) -> Card:
        from adsync.sync.summary import summarize

        scope = resolve_accounts(
            self.settings, self.services.store, self.services.tokens.granted_account_ids()
        )
        summary = summarize(self.services.store, command.start, command.end, scope)
        return cards.summary_card(summary, command.lang)

    def _do_accounts(self, command: Accounts, caller: Caller, trigger: str) -> Card:
        from adsync.sync import discovery

        # The list is refreshed first (a call or a few); the stored one stands if that fails.
        refreshed = discovery.refresh(self.services)
        view = discovery.account_view(
            self.settings, self.services.store, self.services.tokens.granted_account_ids()
        )
        view.problems = refreshed.lines
        if refreshed.refused is not None:
            view.problems.append(f"the list was not refreshed: {refreshed.refused.message}")
        return cards.accounts_card(view, command.lang, tz=self.settings.tz)

    def _do_history(self, command: History, caller: Caller, trigger: str) -> Card:
        return cards.history_card(recent_runs(self.services, command.limit), command.lang)

    def _do_verify(self, command: Verify, caller: Caller, trigger: str) -> Card:
        from adsync.sync.verify import verify

        result = verify(self.services, command.start, command.end, fix=command.fix)
        return cards.verify_card(result, command.lang)

    def _do_auth(self, command: Auth, caller: Caller, trigger: str) -> Card:
        text = (
            "打开链接，勾选全部本地推账户并确认；完成后我会在群里告诉大家。"
            if command.lang == "zh"
            else "Open the link, tick every local-push account and confirm; "
            "I will tell the group when it is done."
        )
        return self._auth_card(command.lang, text, self._auth_url(caller))

    # -- helpers ------------------------------------------------------------------------------

    def _auth_url(self, caller: Caller) -> str | None:
        try:
            return self.services.tokens.authorization_url(requested_by=caller.label)
        except AdsyncError:
            return None

    def _auth_card(self, lang: str, text: str, url: str | None) -> Card:
        label = "去授权" if lang == "zh" else "Authorize"
        buttons = [(label, url)] if url else []
        return cards.alert_card(
            TITLES["auth"][lang], [text], severity="warning", buttons=buttons, lang=lang
        )


def _span(start: date, end: date) -> str:
    return str(start) if start == end else f"{start}..{end}"


def yesterday(today: date) -> date:
    return today - timedelta(days=1)
