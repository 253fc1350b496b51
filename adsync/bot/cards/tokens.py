"""The token card: every authorization chain's health, and what to do about it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from adsync.bot.cards.fit import _note_for, fit
from adsync.bot.cards.parts import (
    HEALTH_TEMPLATES,
    NAME_CHARS,
    REASON_CHARS,
    TEXT_CHARS,
    Card,
    Lang,
    TzLike,
    _button,
    _buttons,
    _card,
    _hr,
    _lang,
    _markdown,
    _md,
    _t,
    _when,
    _zone,
    _zone_name,
    duration,
    mentions,
)

if TYPE_CHECKING:  # annotations only: these modules import SQLAlchemy
    from adsync.sync.tokens import TokenStatus


def token_card(
    status: TokenStatus,
    lang: str,
    auth_url: str | None = None,
    *,
    tz: TzLike = None,
    note: str = "",
    admins: Sequence[str] = (),
    chains: Sequence[TokenStatus] = (),
) -> Card:
    """The Ocean Engine authorization as a traffic light, with lifetimes and what to do.

    ``status`` is the authorization that needs a person first; with several authorizations
    (one per Ocean Engine login), ``chains`` holds them all and each gets its own block, named
    after its user. ``auth_url`` (a re-authorize button) is given only to an admin in a direct
    chat; everyone else gets ``note`` (who can authorize, and how) and the ``admins``
    @-mentioned."""
    lg = _lang(lang)
    zone = _zone(tz)
    template = HEALTH_TEMPLATES.get(status.health, "red")
    title = _t(lg, "Ocean Engine authorization", "巨量引擎授权")
    subtitle = _t(lg, f"app {status.app_id}", f"应用 {status.app_id}") if status.app_id else ""
    elements: list[dict[str, Any]] = []
    if len(chains) > 1:
        subtitle += _t(lg, f" · {len(chains)} authorizations", f" · {len(chains)} 个授权")
        elements.append(_markdown(_chains_headline(chains, lg)))
        for chain in chains:
            lines = [f"**{_md(chain.who, NAME_CHARS)}** · ID {_md(chain.chain_id, 40)}"]
            lines.append(_token_headline(chain, lg))
            if chain.authorized and chain.access_expires_at is not None:
                lines += _token_lines(chain, lg, zone, who=False)
            elements.append(_hr())
            elements.append(_markdown("\n".join(lines)))
    else:
        lines = [_token_headline(status, lg)]
        if status.authorized and status.access_expires_at is not None:
            lines += _token_lines(status, lg, zone)
        elements.append(_markdown("\n".join(lines)))
    if status.health != "ok" and not auth_url and (note or admins):
        advice = _md(note, TEXT_CHARS, multiline=True)
        if mentions(admins):
            advice = (advice + "\n" if advice else "") + mentions(admins)
        elements.append(_markdown(advice))
    buttons = []
    if status.health != "ok" and auth_url:
        label = _t(lg, "Authorize again", "重新授权")
        buttons.append(_button(label, url=auth_url, kind="primary_filled"))
    refreshable = [c for c in (chains or [status]) if c.authorized]
    if any(c.health not in ("reauthorize", "unsaved") for c in refreshable):
        # A dead chain cannot be refreshed; offering it would only produce a second failure.
        value = {"action": "token_refresh", "lang": lg}
        buttons.append(_button(_t(lg, "Refresh now", "立即刷新"), value=value))
    if buttons:
        elements.append(_hr())
        elements.extend(_buttons(buttons))
    preview = f"{title}: {_health_word(status.health, lg)}"
    return fit(
        _card(title, template, elements, subtitle=subtitle, summary=preview),
        note=_note_for("accounts", "账户", "adsync token status", lg),
    )


def _chains_headline(chains: Sequence[TokenStatus], lang: Lang) -> str:
    bad = [c for c in chains if c.health != "ok"]
    n = len(chains)
    if not bad:
        return _t(
            lang,
            f"🟢 **All {n} authorizations are healthy.** The tokens renew themselves.",
            f"🟢 **{n} 个授权全部正常。** token 会自动续期。",
        )
    dead = [c for c in bad if c.health in ("reauthorize", "unsaved")]
    names = "、".join(_md(c.user_name or c.user_id or c.chain_id, NAME_CHARS) for c in bad)
    if dead:
        return _t(
            lang,
            f"🔴 **{len(dead)} of {n} authorizations need a person** ({names}); the others go "
            "on syncing their accounts.",
            f"🔴 **{n} 个授权中有 {len(dead)} 个需要处理**（{names}）；其他授权的账户照常同步。",
        )
    return _t(
        lang,
        f"🟠 **{len(bad)} of {n} authorizations need attention** ({names}).",
        f"🟠 **{n} 个授权中有 {len(bad)} 个需要关注**（{names}）。",
    )


def _health_word(health: str, lang: Lang) -> str:
    words = {
        "ok": ("healthy", "正常"),
        "expiring": ("needs attention", "需要关注"),
        "reauthorize": ("authorize again", "需要重新授权"),
        "unsaved": ("refreshed but not saved", "已刷新但未保存"),
    }
    en, zh = words.get(health, (health, health))
    return _t(lang, en, zh)


def _token_headline(status: TokenStatus, lang: Lang) -> str:
    if not status.authorized:
        return _t(
            lang,
            "🔴 **Not authorized yet.** Someone with the Ocean Engine account has to authorize "
            "adsync once: send `auth`.",
            "🔴 **尚未授权。** 需要有巨量引擎账号的同事授权一次：发送“授权”。",
        )
    if status.health == "ok":
        return _t(
            lang,
            "🟢 **Healthy.** The tokens renew themselves; nothing to do.",
            "🟢 **正常。** token 会自动续期，无需操作。",
        )
    failed_last = status.last_failure_at is not None and (
        status.last_refresh_at is None or status.last_failure_at > status.last_refresh_at
    )
    if status.health == "expiring":
        if failed_last:
            reason = _md(status.last_failure_reason or "", REASON_CHARS)
            return _t(
                lang,
                f"🟠 **The last refresh failed**: {reason}. It is retried automatically; "
                "press **Refresh now** to try at once.",
                f"🟠 **上次刷新失败**：{reason}。系统会自动重试，也可以点击**立即刷新**。",
            )
        return _t(
            lang,
            "🟠 **The refresh token expires soon.** A refresh renews it (automatic, or press "
            "**Refresh now**).",
            "🟠 **refresh token 即将过期。** 刷新一次即可续期（会自动刷新，也可以点击**立即刷新**）。",
        )
    if status.health == "unsaved":
        reason = _md(status.message or "", TEXT_CHARS)
        return _t(
            lang,
            f"🔴 **Refreshed but not saved.** {reason}",
            f"🔴 **token 已刷新但未保存。** 新的 token 还没有写进数据库；如果一直如此，需要重新授权。"
            f"（{reason}）",
        )
    reason = _md(status.dead_reason or status.message or "", REASON_CHARS)
    if status.user_name or status.user_id:
        who = _md(status.user_name or status.user_id, NAME_CHARS)
        return _t(
            lang,
            f"🔴 **Authorize again: {who}.** {reason}\nTheir accounts do not sync until an "
            f"admin's link is opened logged in at Ocean Engine as {who}.",
            f"🔴 **需要重新授权：{who}。** {reason}\n在用 {who} 的巨量引擎账号打开管理员的授权"
            "链接之前，其账户不会同步。",
        )
    return _t(
        lang,
        f"🔴 **Authorize again.** {reason}\nSyncs stop until an admin authorizes adsync again.",
        f"🔴 **需要重新授权。** {reason}\n管理员重新授权之前同步会停止。",
    )


def _lifetime(label: str, left_s: int | None, at: object, lang: Lang, zone: tzinfo) -> str:
    """ "**Access token** 5h 12m left · until …" / "… 剩余 5小时12分 · … 到期"."""
    when = _when(at, zone)
    if left_s is not None and left_s < 0:
        span = duration(-left_s, lang)
        return _t(
            lang, f"{label} expired {span} ago · at {when}", f"{label} 已过期 {span} · {when}"
        )
    span = duration(left_s, lang)
    return _t(lang, f"{label} {span} left · until {when}", f"{label} 剩余 {span} · {when} 到期")


def _token_lines(status: TokenStatus, lang: Lang, zone: tzinfo, *, who: bool = True) -> list[str]:
    access = _t(lang, "**Access token**", "**access token**")
    if status.access_prefix:
        access += f" {_md(status.access_prefix, 16)}"  # masked: tells two tokens apart, no more
    lines = [
        _lifetime(access, status.access_left_s, status.access_expires_at, lang, zone),
        _lifetime(
            _t(lang, "**Refresh token**", "**refresh token**"),
            status.refresh_left_s,
            status.refresh_expires_at,
            lang,
            zone,
        ),
        _t(lang, "**Last refresh** ", "**上次刷新** ") + _when(status.last_refresh_at, zone),
        _t(lang, "**Confirmed live** ", "**最近确认有效** ")
        + _when(status.last_confirmed_at, zone)
        + (_t(lang, " (just checked)", "（刚刚检查）") if status.checked else ""),
    ]
    if status.last_failure_at is not None:
        lines.append(
            _t(lang, "**Last failure** ", "**上次失败** ")
            + _when(status.last_failure_at, zone)
            + (
                f" · {_md(status.last_failure_reason, REASON_CHARS)}"
                if status.last_failure_reason
                else ""
            )
        )
    granted = len(status.account_ids)
    lines.append(_t(lang, f"**Accounts** {granted:,} granted", f"**账户** 已授权 {granted:,} 个"))
    if who and status.chain_id:
        whose = _md(status.who, NAME_CHARS * 2)
        lines.append(_t(lang, f"**Authorized by** {whose}", f"**授权人** {whose}"))
    zone_name = _md(_zone_name(zone), 40)
    lines.append(_markdown_note(_t(lang, f"Times in {zone_name}", f"时间为 {zone_name}")))
    return lines


def _markdown_note(text: str) -> str:
    return f"<font color='grey'>{text}</font>"
