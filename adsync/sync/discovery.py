"""Which 本地推 accounts an authorization reaches: discovery by account type.

An Ocean Engine authorization holds whatever the user ticked, and ``oauth2/advertiser/get``
says what each is (``account_type``, ``is_valid``; SDK ``oceanengine/ad_open_sdk_go``
models/model_oauth2_advertiser_get_response_data_list_inner.go and
models/model_oauth2_advertiser_get_data_list_account_type.go). The SDK's description of that
API: "获取账号下已授权的管理/业务账户，如果是管理账户可再通过相关管理账户接口查询管理账户下的具体业务账户".
So, by type:

* ``ADVERTISER`` — a business account, used as it is. A 本地推 account ticked directly is one;
  so is a company's 巨量广告 广告主, whose id is *not* a ``local_account_id`` (the local report
  answers "账户ID错误"): ``adsync accounts --check`` catches that one.
* ``CUSTOMER_ADMIN`` / ``CUSTOMER_OPERATOR`` (巨量工作台, an organisation) — expanded with
  ``GET /open_api/v3.0/customer_center/account/list/`` (api/api_customer_center_account_list_v30
  .go): ``account_id`` (required), ``filter`` (required, JSON; ``account_type`` required: AD,
  LOCAL or QIANCHUAN), ``page``, ``page_size`` (default 10, 1..100, and page*page_size ≤ 10,000:
  "仅支持查询前10000条数据"); answer ``data.accounts[]{account_id, account_name, account_type}`` +
  ``data.page_info`` (models/model_customer_center_account_list_v3_0_*.go).
* ``PLATFORM_ROLE_LIFE`` (抖音来客) — expanded with ``GET /open_api/v3.0/local/life/advertiser/
  list/`` (api/api_local_life_advertiser_list_v30.go): ``life_account_id`` (required, ≥ 1),
  ``filtering`` (optional, ``local_account_role`` ALL | DIRECT_ACCOUNT | VIRTUAL_ACCOUNT),
  ``page``, ``page_size`` (default 10, max 100); answer ``data.adv_list[]{local_account_id,
  local_account_role, account_main_copy_tag}`` + ``data.page_info`` — ids without names.
* anything else (AGENT, CHILD_AGENT, PLATFORM_ROLE_LOCAL_AGENT, PLATFORM_ROLE_AWEME, …) — named
  and skipped: adsync has no way to list the 本地推 accounts behind it; ``ADSYNC_ACCOUNTS`` does.
* ``is_valid: false`` ("账号与账户已无管理关系，无权限继续操作使用") — named and skipped.

Every sync refreshes the list (one call, plus the pages of each organisation and 来客 account),
so an account added to an organisation appears without authorizing again; one that disappears
is reported once (a change of the run, an alert after the daily run) and leaves the scope,
instead of failing every day. When the platform cannot be asked, the stored list stands: a
listing that failed never makes accounts vanish.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, text, update

from adsync.sync.errors import AdsyncError, AuthorizationNeeded
from adsync.sync.oceanengine import OceanEngineAPI, OceanEngineError, PermanentError
from adsync.sync.store import Store, accounts, utcnow

if TYPE_CHECKING:
    from adsync.sync.config import Settings
    from adsync.sync.services import Services

log = logging.getLogger("adsync.discovery")

CUSTOMER_CENTER_LIST = "/open_api/v3.0/customer_center/account/list/"
LIFE_ADVERTISER_LIST = "/open_api/v3.0/local/life/advertiser/list/"
PAGE_SIZE = 100  # the largest both listings accept
LISTING_LIMIT = 10_000
# PostgreSQL: one discovery writer at a time per schema (SQLite's BEGIN IMMEDIATE does it there).
DISCOVERY_LOCK = "SELECT pg_advisory_xact_lock(hashtext('adsync discovery ' || current_schema()))"  # customer_center: "仅支持查询前10000条数据，即page*page_size≤10000"

DIRECT = frozenset({"ADVERTISER"})
ORGANISATION = frozenset({"CUSTOMER_ADMIN", "CUSTOMER_OPERATOR"})
LIFE = frozenset({"PLATFORM_ROLE_LIFE"})

# source: how an account in scope was found. Before discovery, granted ids were "grant".
SOURCES = ("config", "direct", "organisation", "life", "grant")

SET_ACCOUNTS_FIX = (
    "set ADSYNC_ACCOUNTS=id[:name],... to the 本地推 account ids it manages "
    "(本地推 → 账户设置 → 账户信息), or authorize those accounts (or their 巨量工作台) instead"
)
INVALID_FIX = (
    "the platform says this account no longer belongs to the authorizing user (is_valid=false): "
    "restore the relationship where the account is managed, or authorize again without it"
)


@dataclass(frozen=True)
class Grantee:
    """One entry of ``oauth2/advertiser/get``."""

    id: str
    name: str
    type: str
    valid: bool

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})" if self.name else self.id


@dataclass(frozen=True)
class Found:
    """A 本地推 account the authorization reaches."""

    id: str
    name: str
    source: str  # direct | organisation | life
    parent_id: str = ""
    parent_name: str = ""
    account_type: str = "LOCAL"


@dataclass(frozen=True)
class Skipped:
    grantee: Grantee
    reason: str
    fix: str


@dataclass(frozen=True)
class Manager:
    """An organisation or 来客 account, and how many 本地推 accounts it listed (None: failed)."""

    grantee: Grantee
    children: int | None
    problem: str = ""


@dataclass
class Discovery:
    grantees: list[Grantee] = field(default_factory=list)
    found: list[Found] = field(default_factory=list)
    managers: list[Manager] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def failed_parents(self) -> set[str]:
        return {m.grantee.id for m in self.managers if m.children is None}


@dataclass(frozen=True)
class Change:
    """A difference from the previous discovery, said once."""

    kind: str  # added | back | vanished | skipped
    id: str
    name: str
    detail: str

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})" if self.name else self.id


# -- asking the platform -------------------------------------------------------------------------


def _id(value: Any) -> str:
    if isinstance(value, bool) or value in (None, ""):
        return ""
    text_ = str(value).strip()
    return text_ if text_.isascii() and text_.isdigit() else ""


def grantee(item: Any) -> Grantee | None:
    if not isinstance(item, dict):
        return None
    account_id = _id(item.get("account_id")) or _id(item.get("advertiser_id"))
    if not account_id:
        return None
    name = str(item.get("account_name") or item.get("advertiser_name") or "")
    # account_type is the field; older answers carried only the deprecated account_role (the
    # notes' real example: "account_role": "CUSTOMER_OPERATOR"). With neither, the id is used
    # directly, as adsync did before it read the type.
    kind = str(item.get("account_type") or item.get("account_role") or "ADVERTISER").upper()
    return Grantee(account_id, name, kind, item.get("is_valid") is not False)


def discover(api: OceanEngineAPI) -> Discovery:
    """What the authorization reaches now. Raises if ``oauth2/advertiser/get`` fails (then
    nothing is known); a failed expansion is a problem of that one manager."""
    result = Discovery()
    seen: set[str] = set()
    for item in api.authorized_accounts():
        g = grantee(item)
        if g is not None and g.id not in seen:
            seen.add(g.id)
            result.grantees.append(g)
    found: dict[str, Found] = {}
    # Direct accounts first: an account both ticked and reached through an organisation counts
    # as direct.
    for g in sorted(result.grantees, key=lambda g: g.type not in DIRECT):
        if not g.valid:
            result.skipped.append(
                Skipped(g, "the authorization no longer covers it (is_valid=false)", INVALID_FIX)
            )
        elif g.type in DIRECT:
            found.setdefault(g.id, Found(g.id, g.name, "direct", account_type=g.type))
        elif g.type in ORGANISATION or g.type in LIFE:
            _expand(api, g, found, result)
        else:
            result.skipped.append(
                Skipped(
                    g,
                    f"{g.type} is not a 本地推 account, and adsync has no way to list the "
                    "本地推 accounts behind it",
                    SET_ACCOUNTS_FIX,
                )
            )
    result.found = list(found.values())
    return result


def _expand(api: OceanEngineAPI, g: Grantee, found: dict[str, Found], result: Discovery) -> None:
    lister = _organisation if g.type in ORGANISATION else _life
    kind = "organisation" if g.type in ORGANISATION else "来客 account"
    children: list[Found] = []
    try:
        for child in lister(api, g, result):
            children.append(child)
    except AuthorizationNeeded:
        raise
    except OceanEngineError as exc:
        problem = f"could not list the accounts of {kind} {g.label}: {exc.message}"
        log.warning("%s", problem)
        result.managers.append(Manager(g, None, problem))
        result.problems.append(problem + " (its accounts from the last listing are kept)")
        return
    result.managers.append(Manager(g, len(children)))
    for child in children:
        known = found.get(child.id)
        if known is None:
            found[child.id] = child
        elif not known.name and child.name:
            found[child.id] = replace(known, name=child.name)


def _pages(api: OceanEngineAPI, path: str, params: dict[str, Any], key: str) -> Iterator[Any]:
    """Every item of a page-numbered listing, page_size 100, until ``page >= total_page``, an
    empty page, or the 10,000th item (page*page_size ≤ 10,000)."""
    page = 1
    while page * PAGE_SIZE <= LISTING_LIMIT:
        data = api.get(path, {**params, "page": page, "page_size": PAGE_SIZE})
        items = data.get(key)
        if items is not None and not isinstance(items, list):
            raise PermanentError(path, 0, f"the answer's {key} is not a list")
        yield from items or []
        total_page = int((data.get("page_info") or {}).get("total_page") or 0)
        if not items or page >= total_page:
            return
        page += 1


def _organisation(api: OceanEngineAPI, g: Grantee, result: Discovery) -> Iterator[Found]:
    params = {"account_id": g.id, "filter": {"account_type": "LOCAL"}}
    count = 0
    for item in _pages(api, CUSTOMER_CENTER_LIST, params, "accounts"):
        if not isinstance(item, dict):
            continue
        child = _id(item.get("account_id"))
        kind = str(item.get("account_type") or "LOCAL")
        if not child or kind != "LOCAL":  # the filter asked for LOCAL; anything else is not ours
            continue
        count += 1
        yield Found(child, str(item.get("account_name") or ""), "organisation", g.id, g.name)
    if count >= LISTING_LIMIT:
        result.problems.append(
            f"organisation {g.label} lists its first {LISTING_LIMIT:,} 本地推 accounts only (a "
            "platform limit); set ADSYNC_ACCOUNTS to sync the others"
        )


def _life(api: OceanEngineAPI, g: Grantee, result: Discovery) -> Iterator[Found]:
    # filtering left out: every local_account_role (DIRECT_ACCOUNT and VIRTUAL_ACCOUNT).
    for item in _pages(api, LIFE_ADVERTISER_LIST, {"life_account_id": g.id}, "adv_list"):
        child = _id(item.get("local_account_id")) if isinstance(item, dict) else ""
        if child:
            yield Found(child, "", "life", g.id, g.name)


# -- remembering it ------------------------------------------------------------------------------


def save(store: Store, found: Discovery, now: datetime | None = None) -> list[Change]:
    """Record a discovery and return what changed since the previous one. One writer at a
    time (so two runs finishing together report a change once, not twice).

    Idempotent, so it is rerun when the connection drops even during the commit: a rerun after
    a commit that did land finds the new list already stored and reports no change again."""
    now = now or utcnow()

    def record(conn: Any) -> list[Change]:
        if store.dialect == "postgresql":
            conn.execute(text(DISCOVERY_LOCK))
        before = {r.account_id: r for r in conn.execute(select(accounts))}
        had_discovery = any(r.scope is not None for r in before.values())
        changes: list[Change] = []

        def upsert(account_id: str, values: dict[str, Any]) -> None:
            if account_id in before:
                if not values.get("name"):
                    values.pop("name", None)  # keep a name we knew (来客 lists give none)
                conn.execute(
                    update(accounts).where(accounts.c.account_id == account_id).values(**values)
                )
            else:
                values.setdefault("name", "")
                conn.execute(insert(accounts).values(account_id=account_id, seen_at=now, **values))

        found_ids = {f.id for f in found.found}
        for f in found.found:
            old = before.get(f.id)
            if old is None or old.scope != "in":
                if old is not None and old.scope == "vanished":
                    changes.append(Change("back", f.id, f.name or old.name, _via(f)))
                elif had_discovery:
                    changes.append(Change("added", f.id, f.name, _via(f)))
            upsert(
                f.id,
                dict(
                    name=f.name,
                    source=f.source,
                    scope="in",
                    account_type=f.account_type,
                    parent_id=f.parent_id or None,
                    parent_name=f.parent_name or None,
                    valid=True,
                    note=None,
                    fix=None,
                    checked_at=now,
                    vanished_at=None,
                ),
            )
        for m in found.managers:
            g = m.grantee
            note = m.problem or f"{m.children:,} 本地推 accounts"
            if g.id in found_ids:
                continue  # ticked directly as well: it is a local account first
            upsert(
                g.id,
                dict(
                    name=g.name,
                    source="direct",
                    scope="manager",
                    account_type=g.type,
                    valid=True,
                    note=note,
                    fix=None,
                    checked_at=now,
                    vanished_at=None,
                ),
            )
        skipped_ids = set()
        for s in found.skipped:
            g = s.grantee
            if g.id in found_ids:
                continue  # e.g. ticked but invalid, yet reached through a valid organisation
            skipped_ids.add(g.id)
            old = before.get(g.id)
            if old is None or old.scope != "skipped" or old.note != s.reason:
                changes.append(Change("skipped", g.id, g.name, f"{g.type}: {s.reason}; {s.fix}"))
            upsert(
                g.id,
                dict(
                    name=g.name,
                    source="direct",
                    scope="skipped",
                    account_type=g.type,
                    valid=g.valid,
                    note=s.reason,
                    fix=s.fix,
                    checked_at=now,
                ),
            )
        managers = {m.grantee.id: m.grantee for m in found.managers}
        failed = found.failed_parents
        listed = found_ids | set(managers) | skipped_ids
        for account_id, old in before.items():
            if old.scope is None or old.scope == "vanished" or account_id in listed:
                continue
            if old.scope == "in" and old.parent_id and old.parent_id in failed:
                continue  # its organisation could not be listed this time: keep it
            reason = _gone(old, managers)
            if old.scope == "in":
                changes.append(Change("vanished", account_id, old.name, reason))
            conn.execute(
                update(accounts)
                .where(accounts.c.account_id == account_id)
                .values(scope="vanished", note=reason, fix=None, vanished_at=now)
            )
        return changes

    return store.transact(record, exclusive=True, idempotent=True)


def _via(f: Found) -> str:
    if f.source == "organisation":
        return f"via organisation {_label(f.parent_name, f.parent_id)}"
    if f.source == "life":
        return f"via 来客 {_label(f.parent_name, f.parent_id)}"
    return "authorized directly"


def _label(name: str | None, account_id: str | None) -> str:
    return f"{name} ({account_id})" if name else str(account_id or "")


def _gone(old: Any, managers: dict[str, Grantee]) -> str:
    if old.scope != "in":
        return "no longer in the authorization"
    parent = _label(old.parent_name, old.parent_id)
    if old.source == "organisation" and old.parent_id in managers:
        return f"organisation {parent} no longer lists it"
    if old.source == "life" and old.parent_id in managers:
        return f"来客 {parent} no longer lists it"
    if old.parent_id:
        return f"{parent}, through which it was found, is no longer in the authorization"
    return "no longer in the authorization"


def describe(changes: list[Change], limit: int = 5) -> list[str]:
    """One line per kind of change (names listed up to ``limit``): the run's warnings."""
    titles = {
        "added": "new account found",
        "back": "account found again",
        "vanished": "account no longer found, not synced any more",
        "skipped": "granted account skipped",
    }
    lines = []
    for kind, title in titles.items():
        these = [c for c in changes if c.kind == kind]
        if not these:
            continue
        if kind == "skipped" or len(these) == 1:
            lines += [f"{title}: {c.label} — {c.detail}" for c in these[:limit]]
            if len(these) > limit:
                lines.append(f"… and {len(these) - limit:,} more {title}s")
            continue
        shown = "; ".join(f"{c.label} ({c.detail})" for c in these[:limit])
        more = f" … and {len(these) - limit:,} more" if len(these) > limit else ""
        lines.append(f"{len(these):,} {title}s: {shown}{more}")
    return lines


# -- one call for the runner and the commands ------------------------------------------------------


@dataclass
class Refreshed:
    """A refresh of the stored list: what changed, what could not be asked, at what cost."""

    changes: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    api_calls: int = 0
    refused: AuthorizationNeeded | None = None  # the authorization itself is gone
    ok: bool = False  # the platform answered oauth2/advertiser/get

    @property
    def lines(self) -> list[str]:
        return describe(self.changes) + self.problems


def refresh(services: Services) -> Refreshed:
    """Ask the platform and store the answer; never raises for the platform's trouble (the
    stored list then stands, and the problem is said). ADSYNC_ACCOUNTS set: nothing to do."""
    out = Refreshed()
    if services.settings.accounts:
        return out
    client = services.new_client()
    try:
        found = discover(services.api(client))
    except AuthorizationNeeded as exc:
        out.refused = exc
        return out
    except OceanEngineError as exc:
        log.warning("the account list was not refreshed: %s", exc.message)
        out.problems.append(
            f"the account list could not be refreshed ({exc.message}); the last known list is used"
        )
        return out
    except (TypeError, ValueError, AttributeError):  # an answer unlike the SDK's models
        log.exception("the account list was not refreshed: unexpected answer")
        out.problems.append(
            "the account list could not be refreshed (Ocean Engine answered in an unexpected "
            "shape; see the log); the last known list is used"
        )
        return out
    finally:
        out.api_calls = client.stats.calls
        client.close()
    out.ok = True
    out.problems = found.problems
    out.changes = save(services.store, found)
    return out


# -- reading it ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedAccount:
    id: str
    name: str
    source: str  # config | direct | organisation | life | grant
    parent_id: str = ""
    parent_name: str = ""
    last_synced_at: datetime | None = None
    last_outcome: str | None = None
    last_reason: str | None = None

    @property
    def via(self) -> str:
        """Where it came from, as people read it."""
        if self.source == "config":
            return "ADSYNC_ACCOUNTS"
        if self.source in ("organisation", "life"):
            kind = "organisation" if self.source == "organisation" else "来客"
            return f"via {kind} {_label(self.parent_name, self.parent_id)}"
        return "direct"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "source": "direct" if self.source == "grant" else self.source,
            "via": self.via,
            "parent_id": self.parent_id or None,
            "parent_name": self.parent_name or None,
            "last_synced_at": _iso(self.last_synced_at),
            "last_outcome": self.last_outcome,
            "last_reason": self.last_reason,
        }


@dataclass(frozen=True)
class OtherAccount:
    """A granted account not synced: skipped (with the fix), a manager, or one that vanished."""

    id: str
    name: str
    account_type: str
    note: str
    fix: str = ""
    at: datetime | None = None  # vanished: when

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})" if self.name else self.id

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "account_type": self.account_type or None,
            "reason": self.note,
            "fix": self.fix or None,
            "at": _iso(self.at),
        }


@dataclass
class AccountsView:
    """Everything ``adsync accounts`` and the chat's accounts card show."""

    origin: str  # config | discovery | grant (authorized before discovery ran)
    accounts: list[ListedAccount]
    skipped: list[OtherAccount] = field(default_factory=list)
    managers: list[OtherAccount] = field(default_factory=list)
    vanished: list[OtherAccount] = field(default_factory=list)
    checked_at: datetime | None = None
    problems: list[str] = field(default_factory=list)
    empty: AdsyncError | None = None  # why nothing is in scope, when nothing is

    @property
    def origin_text(self) -> str:
        return {
            "config": "ADSYNC_ACCOUNTS",
            "discovery": "discovered from the authorization",
            "grant": "the authorization's ids (not checked by type yet: run `adsync sync`)",
        }[self.origin]

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "checked_at": _iso(self.checked_at),
            "accounts": [a.to_json() for a in self.accounts],
            "skipped": [a.to_json() for a in self.skipped],
            "managers": [a.to_json() for a in self.managers],
            "vanished": [a.to_json() for a in self.vanished],
            "problems": list(self.problems),
            **({"error": self.empty.message, "hint": self.empty.hint} if self.empty else {}),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def account_view(settings: Settings, store: Store, granted: tuple[str, ...]) -> AccountsView:
    """The stored list (no network): what is in scope and where it came from, what is skipped
    and why, what vanished. With nothing in scope, ``empty`` says why (the skipped ones are
    still listed); raises AccountsError only when there is nothing at all to show."""
    from adsync.sync.reports import AccountsError, resolve_accounts

    found = store.read(lambda conn: conn.execute(select(accounts)).all())
    rows = {r.account_id: r for r in found}
    discovered = any(r.scope is not None for r in rows.values())
    empty: AccountsError | None = None
    try:
        scope = resolve_accounts(settings, store, granted)
    except AccountsError as exc:
        if settings.accounts or not discovered:
            raise
        scope, empty = [], exc
    origin = "config" if settings.accounts else "discovery" if discovered else "grant"
    listed = []
    for a in scope:
        r = rows.get(a.id)
        source = "config" if origin == "config" else (r.source if r is not None else "grant")
        listed.append(
            ListedAccount(
                a.id,
                a.name,
                source,
                parent_id=(r.parent_id or "") if r is not None and origin != "config" else "",
                parent_name=(r.parent_name or "") if r is not None and origin != "config" else "",
                last_synced_at=r.last_synced_at if r is not None else None,
                last_outcome=r.last_outcome if r is not None else None,
                last_reason=r.last_reason if r is not None else None,
            )
        )
    view = AccountsView(origin, listed, empty=empty)
    if origin != "discovery":
        return view
    for r in sorted(rows.values(), key=lambda r: r.account_id):
        other = OtherAccount(
            r.account_id, r.name, r.account_type or "", r.note or "", r.fix or "", r.vanished_at
        )
        if r.scope == "skipped":
            view.skipped.append(other)
        elif r.scope == "manager":
            view.managers.append(other)
        elif r.scope == "vanished":
            view.vanished.append(other)
    checked = [r.checked_at for r in rows.values() if r.checked_at is not None]
    view.checked_at = max(checked) if checked else None
    return view
