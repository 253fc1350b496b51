"""What each chat command does: one call into ``adsync.sync`` and a card with the answer.

The webhook, the long connection and the console all end here, so a command behaves the same
wherever it is typed. Nothing in here raises: every failure becomes a card that says what
failed and what to do.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adsync.bot import cards
from adsync.bot.commands import (
    Accounts,
    Auth,
    Command,
    CommandError,
    Export,
    Help,
    History,
    Report,
    Summary,
    Sync,
    TokenRefresh,
    TokenStatus,
    Verify,
    help_text,
    match_account,
)
from adsync.sync.dates import period_label
from adsync.sync.errors import AdsyncError, AuthorizationNeeded
from adsync.sync.reports import resolve_accounts
from adsync.sync.runner import Runner, RunResult, recent_runs
from adsync.sync.services import Services
from adsync.sync.tokens import HEALTH_RANK

if TYPE_CHECKING:
    from adsync.sync.export import Export as ExportRows
    from adsync.sync.export import Written

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
    local: bool = False  # the terminal (`adsync chat`): whoever has the shell has the database

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
        return isinstance(command, Sync | Verify | Export)

    def working(self, command: Command) -> Card:
        lang = command.lang
        if isinstance(command, Sync):
            span = _span(command.start, command.end)
            text = f"正在同步 {span} …" if lang == "zh" else f"Syncing {span} …"
        elif isinstance(command, Export):
            span = period_label(command.start, command.end)  # "2026-02" for a whole month
            text = f"正在导出 {span} …" if lang == "zh" else f"Exporting {span} …"
        else:
            text = "正在校验 …" if lang == "zh" else "Verifying …"
        return cards.working_card(text, lang)

    def execute(
        self,
        command: Command,
        caller: Caller,
        trigger: str = "chat",
        *,
        transient: tuple[type[BaseException], ...] = (),
    ) -> Card:
        """Run ``command`` and return the answer card; never raises, except the ``transient``
        errors a caller that can try again later asks for (the queue: a locked or dropped
        database is worth another try, not an error card)."""
        handler: Callable[[Any, Caller, str], Card] = getattr(
            self, f"_do_{type(command).__name__.lower()}"
        )
        return self._guarded(command, caller, lambda: handler(command, caller, trigger), transient)

    def execute_sync(
        self,
        command: Sync,
        caller: Caller,
        trigger: str = "chat",
        *,
        account_ids: list[str] | None = None,
        wait: float = 0.0,
        transient: tuple[type[BaseException], ...] = (),
    ) -> tuple[Card, RunResult | None]:
        """A sync, and its result too (others who asked for the same get it in their
        language). ``account_ids`` instead of the command's account; ``wait``: seconds to wait
        for an overlapping run of other dates before answering "already running"."""
        results: list[RunResult] = []

        def run() -> Card:
            ids = account_ids or self.account_ids(command)
            result = self.sync(command.start, command.end, ids, caller, trigger, wait=wait)
            results.append(result)
            return cards.sync_card(result, command.lang)

        card = self._guarded(command, caller, run, transient)
        return card, (results[0] if results else None)

    def export_file(
        self,
        command: Export,
        caller: Caller,
        directory: Path,
        *,
        transient: tuple[type[BaseException], ...] = (),
    ) -> tuple[Card, ExportFile | None]:
        """An export written as xlsx into ``directory``, and the card that goes with it (or the
        card saying why there is none: no rows, no such account)."""
        made: list[ExportFile] = []

        def run() -> Card:
            rows, written = self._export(command, directory)
            made.append(ExportFile(rows, written))
            return cards.export_card(rows, written.path.name, written.bytes, command.lang)

        card = self._guarded(command, caller, run, transient)
        return card, (made[0] if made else None)

    def _export(self, command: Export, directory: Path) -> tuple[ExportRows, Written]:
        from adsync.sync import export as ex

        store = self.services.store
        account = None
        if command.account_query:
            known = ex.known_accounts(store, command.start, command.end)
            account = match_account(command.account_query, known, lang=command.lang)
        rows = ex.collect(
            store,
            command.start,
            command.end,
            tz=self.settings.tz,
            account=account,
            mapping=self.settings.bitable_fields,
        )
        return rows, ex.write(rows, "xlsx", directory)

    def account_ids(self, command: Sync) -> list[str] | None:
        """The one account a sync names (None: every account in scope)."""
        if not command.account_query:
            return None
        scope = resolve_accounts(
            self.settings, self.services.store, self.services.tokens.granted_account_ids()
        )
        account_id, _name = match_account(
            command.account_query, [(a.id, a.name) for a in scope], lang=command.lang
        )
        return [account_id]

    def _guarded(
        self,
        command: Command,
        caller: Caller,
        run: Callable[[], Card],
        transient: tuple[type[BaseException], ...] = (),
    ) -> Card:
        lang = command.lang
        try:
            return run()
        except transient:
            raise
        except CommandError as exc:
            return cards.message_card(TITLES["failed"][lang], str(exc), lang, "warning")
        except AuthorizationNeeded as exc:
            return self._auth_card(lang, exc.message, caller)
        except AdsyncError as exc:
            # A card is read by the whole group: what failed and what to do, never internals
            # (a StoreError's message names the database); the log has the rest.
            if exc.public_message != exc.message:
                log.error("command %s failed: %s", type(command).__name__, exc.message)
            return cards.message_card(TITLES["failed"][lang], exc.public_text(), lang, "error")
        except Exception as exc:  # noqa: BLE001 - the chat gets an answer whatever happens
            # No exception text of any kind reaches a card: it can carry values (a database
            # error once showed its statement's parameters: the new token pair). The log has
            # it, through the redactor, under a reference the card gives.
            ref = secrets.token_hex(3)
            log.exception("command %s failed [ref %s]", type(command).__name__, ref)
            return cards.message_card(
                TITLES["failed"][lang], _unexpected_text(exc, lang, ref), lang, "error"
            )

    # -- one method per command ---------------------------------------------------------------

    def _do_help(self, command: Help, caller: Caller, trigger: str) -> Card:
        text = help_text(command.lang, may_change=caller.may_change, topic=command.topic)
        return cards.message_card(TITLES["help"][command.lang], text, command.lang)

    def _do_sync(self, command: Sync, caller: Caller, trigger: str) -> Card:
        result = self.sync(command.start, command.end, self.account_ids(command), caller, trigger)
        return cards.sync_card(result, command.lang)

    def sync(
        self,
        start: date,
        end: date,
        account_ids: list[str] | None,
        caller: Caller,
        trigger: str,
        wait: float = 0.0,
    ) -> RunResult:
        # By default a chat does not wait behind another run: it answers "already running".
        return Runner(self.services).run(
            start,
            end,
            account_ids=account_ids,
            trigger=trigger,
            requested_by=caller.label,
            wait=wait,
        )

    def _do_tokenstatus(self, command: TokenStatus, caller: Caller, trigger: str) -> Card:
        return self._token_card(command.lang, caller)

    def _token_card(self, lang: str, caller: Caller) -> Card:
        """Every authorization (one per Ocean Engine login), the one needing a person first on
        top; a link only when one needs it and the caller may have one (``_link``)."""
        tokens = self.services.tokens
        chains = tokens.statuses()
        status = min(chains, key=lambda s: HEALTH_RANK.get(s.health, 0)) if chains else None
        status = status or tokens.status()
        if status.health == "ok":
            return cards.token_card(status, lang, tz=self.settings.tz, chains=chains)
        link = self._link(caller, lang)
        return cards.token_card(
            status,
            lang,
            auth_url=link.url,
            tz=self.settings.tz,
            note=link.note,
            admins=link.admins,
            chains=chains,
        )

    def _do_tokenrefresh(self, command: TokenRefresh, caller: Caller, trigger: str) -> Card:
        tokens = self.services.tokens
        reason = f"chat: {caller.label}"
        if len(tokens.chains()) <= 1:
            tokens.refresh(reason=reason)  # its failure is the answer (a card saying what to do)
            status = tokens.status()
            return cards.token_card(status, command.lang, tz=self.settings.tz, chains=[status])
        # Several authorizations: each refreshed on its own; the card shows how each one is.
        for chain, exc in tokens.refresh_all(reason):
            if exc is not None:
                log.warning("token refresh of %s from chat failed: %s", chain.who, exc.message)
        return self._token_card(command.lang, caller)

    def _do_summary(self, command: Summary, caller: Caller, trigger: str) -> Card:
        from adsync.sync.summary import summarize

        scope = resolve_accounts(
            self.settings, self.services.store, self.services.tokens.granted_account_ids()
        )
        summary = summarize(self.services.store, command.start, command.end, scope)
        return cards.summary_card(summary, command.lang)

    def _do_report(self, command: Report, caller: Caller, trigger: str) -> Card:
        from adsync.bot.report import report_card

        return report_card(self.services, command.day, command.lang)

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
        else:  # some authorizations answered; these could not be asked (their accounts stay)
            for _chain, exc in refreshed.refusals:
                view.problems.append(f"not refreshed for this authorization: {exc.message}")
        return cards.accounts_card(view, command.lang, tz=self.settings.tz)

    def _do_history(self, command: History, caller: Caller, trigger: str) -> Card:
        return cards.history_card(recent_runs(self.services, command.limit), command.lang)

    def _do_verify(self, command: Verify, caller: Caller, trigger: str) -> Card:
        from adsync.sync.verify import verify

        result = verify(self.services, command.start, command.end, fix=command.fix)
        return cards.verify_card(result, command.lang)

    def _do_export(self, command: Export, caller: Caller, trigger: str) -> Card:
        """Outside the worker (which posts the file in the chat): the terminal's export is
        written to the current directory, as `adsync export` does."""
        if not caller.local:
            text = (
                "导出文件由 adsync 的 worker 发到群里；这里无法发送文件。"
                if command.lang == "zh"
                else "Exports are posted in the chat by adsync's worker; not from here."
            )
            return cards.message_card(TITLES["failed"][command.lang], text, command.lang, "warning")
        rows, written = self._export(command, Path.cwd())
        return cards.export_card(
            rows, written.path.name, written.bytes, command.lang, where=str(written.path)
        )

    def _do_auth(self, command: Auth, caller: Caller, trigger: str) -> Card:
        text = (
            "在 15 分钟内打开链接，勾选全部本地推账户并确认；完成后我会在群里告诉大家。"
            "授权的是浏览器中已登录的巨量引擎账号：同一账号会替换它之前的授权，另一个账号则新增一个授权。"
            if command.lang == "zh"
            else "Open the link within 15 minutes, tick every local-push account and confirm; "
            "I will tell the group when it is done. It authorizes the Ocean Engine login "
            "signed in in that browser: that login's earlier authorization is replaced, "
            "another login's is added beside the others."
        )
        return self._auth_card(command.lang, text, caller)

    # -- helpers ------------------------------------------------------------------------------

    def _link(self, caller: Caller, lang: str) -> AuthLink:
        """An authorization link, only for someone who may have one where only they see it:
        an admin (ADSYNC_ADMINS) in a direct chat, or the terminal. A link in a group card
        could be opened by every member, and whoever opens it replaces the authorization;
        so admins in a group are sent to a direct chat, everyone else is told whom to ask,
        and with no admins configured chat hands out no link at all (the CLI does)."""
        zh = lang == "zh"
        admins = tuple(self.settings.admins)
        if not caller.local:
            if not admins:
                return AuthLink(
                    note="只有管理员可以在聊天中获取授权链接，但还没有配置 ADSYNC_ADMINS。请设置 "
                    "ADSYNC_ADMINS（管理员的 open_id），或在服务器上运行 `adsync auth url`。"
                    if zh
                    else "Authorization links are handed out in chat only to admins, and "
                    "ADSYNC_ADMINS is not set: set it (the admins' open_ids), or run "
                    "`adsync auth url` on the server."
                )
            if caller.user_id not in admins:
                return AuthLink(
                    note="只有管理员可以重新授权巨量引擎，请联系："
                    if zh
                    else "Only an admin can authorize Ocean Engine. Please ask:",
                    admins=admins,
                )
            if caller.chat_type != "p2p":
                return AuthLink(
                    note="授权链接只在单聊中发送（群里的每个人都能打开群消息里的链接）：请在与我的单聊中发送“授权”。"
                    if zh
                    else "I send authorization links only in a direct chat (anyone in a group "
                    "could open a link posted here): send me `auth` there.",
                    buttons=self._direct_chat_button(zh),
                )
        try:
            url = self.services.tokens.authorization_url(requested_by=caller.label)
        except AdsyncError as exc:
            return AuthLink(note=exc.public_text())
        return AuthLink(url=url)

    def _direct_chat_button(self, zh: bool) -> tuple[tuple[str, str], ...]:
        """Feishu's AppLink that opens the direct chat with this bot (``client/bot/open``)."""
        app_id = self.settings.feishu_app_id
        if not app_id:
            return ()
        host = (
            "applink.larksuite.com"
            if "larksuite" in self.settings.feishu_domain
            else ("applink.feishu.cn")
        )
        label = "打开与我的单聊" if zh else "Open a direct chat with me"
        return ((label, f"https://{host}/client/bot/open?appId={app_id}"),)

    def _auth_card(self, lang: str, text: str, caller: Caller) -> Card:
        link = self._link(caller, lang)
        if link.url:
            label = "去授权" if lang == "zh" else "Authorize"
            return cards.alert_card(
                TITLES["auth"][lang],
                [text],
                severity="warning",
                buttons=[(label, link.url)],
                lang=lang,
            )
        return cards.message_card(
            TITLES["auth"][lang],
            link.note,
            lang,
            "warning",
            people=link.admins,
            buttons=link.buttons,
        )


@dataclass(frozen=True)
class ExportFile:
    """An export and the file it was written to."""

    rows: ExportRows
    written: Written


@dataclass(frozen=True)
class AuthLink:
    """An authorization link for this caller, or why not and whom to ask."""

    url: str | None = None
    note: str = ""
    admins: tuple[str, ...] = ()
    buttons: tuple[tuple[str, str], ...] = ()


def _unexpected_text(exc: BaseException, lang: str, ref: str) -> str:
    database = type(exc).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "sqlite3")
    if lang == "zh":
        what = "数据库暂时无法访问" if database else "发生了意外错误"
        return (
            f"{what}，这次没有完成。请稍后再试；如果一直如此，请管理员在服务器上运行 "
            f"`adsync doctor` 并查看日志（编号 {ref}）。"
        )
    what = "the database is not reachable" if database else "an unexpected error stopped it"
    return (
        f"That did not finish: {what}. Try again in a minute; if it keeps failing, an admin "
        f"can run `adsync doctor` on the server and look for ref {ref} in adsync's log."
    )


def _span(start: date, end: date) -> str:
    return str(start) if start == end else f"{start}..{end}"


def yesterday(today: date) -> date:
    return today - timedelta(days=1)
