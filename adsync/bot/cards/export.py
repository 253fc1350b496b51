"""The answers to ``export``: the one-line summary beside the posted file, and what to do when
the file could not be posted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adsync.bot.cards.answers import _plain_note
from adsync.bot.cards.fit import fit
from adsync.bot.cards.parts import (
    NAME_CHARS,
    TEXT_CHARS,
    Card,
    _card,
    _lang,
    _markdown,
    _md,
    _t,
    count,
    money,
)

if TYPE_CHECKING:  # annotations only: cards import nothing that reaches a database
    from adsync.sync.export import Export


def export_card(export: Export, file_name: str, size: int, lang: str, *, where: str = "") -> Card:
    """One line: which period, how many rows and accounts, the total spend; then the file's
    name (``where``: a path on this machine, for the terminal; else the file is in the chat)."""
    lg = _lang(lang)
    t = export.totals
    who = ""
    if export.account is not None:
        who = " · " + _md(export.account[1] or export.account[0], NAME_CHARS)
    line = _t(
        lg,
        f"**{export.label}**{who}: {count(t.rows)} rows · {export.account_count} accounts · "
        f"spend {money(t.cost)}",
        f"**{export.label}**{who}：{count(t.rows)} 行 · {export.account_count} 个账户 · "
        f"消耗 {money(t.cost)}",
    )
    kb = max(1, round(size / 1024))
    if where:
        place = _t(lg, f"Written to {_md(where)} ({kb:,} KB)", f"已写入 {_md(where)}（{kb:,} KB）")
    else:
        place = _t(
            lg,
            f"The file {_md(file_name)} ({kb:,} KB) is below.",
            f"文件 {_md(file_name)}（{kb:,} KB）见下方。",
        )
    title = _t(lg, f"Export {export.label}", f"导出 {export.label}")
    elements = [_markdown(line), _markdown(place, size="notation")]
    return fit(
        _card(title, "green", elements, summary=f"{title}: {count(t.rows)}"), note=_plain_note(lg)
    )


# Why an upload or a file message failed, in words (platform codes: im-v1 file/create and
# message/reply pages; 99991672: a missing permission scope).
_WHY = {
    234006: ("the file is over Feishu's 30 MB", "文件超过飞书 30 MB 的上限"),
    230002: ("I am not a member of this chat", "我不在这个群里"),
    99991672: (
        "the app lacks the permission to send files (im:resource)",
        "应用没有发送文件的权限（im:resource）",
    ),
}


def export_failed_card(label: str, lang: str, *, code: int = 0, too_large: bool = False) -> Card:
    """The file was made but could not be posted: what failed (in words and the platform's
    code, never exception text) and how to get the file anyway."""
    lg = _lang(lang)
    if too_large:
        code = 234006
    if code in _WHY:
        reason = _t(lg, *_WHY[code])
    elif code:
        reason = _t(lg, f"Feishu refused the file, code {code}", f"飞书拒绝了文件，错误码 {code}")
    else:
        reason = _t(lg, "Feishu did not answer", "飞书没有响应")
    if too_large or code == 234006:
        todo = _t(
            lg,
            "Export fewer months or one account at a time (`export 2026-02 门店A`); or an admin "
            f"can run `adsync export {label}` on the server.",
            f"请少导几个月，或按账户分别导出（“导出 2月 门店A”）；或请管理员在服务器上运行 "
            f"`adsync export {label}`。",
        )
    else:
        todo = _t(
            lg,
            f"Try again in a minute; or an admin can run `adsync export {label}` on the server "
            "and share the file.",
            f"请稍后再试；或请管理员在服务器上运行 `adsync export {label}` 后把文件发出来。",
        )
    text = _t(
        lg,
        f"The export of {label} was made, but I could not post it here: {reason}. {todo}",
        f"{label} 的导出文件已生成，但没能发到这里：{reason}。{todo}",
    )
    title = _t(lg, "Could not post the export", "导出文件未能发送")
    body = _markdown(_md(text, TEXT_CHARS, multiline=True))
    return fit(_card(title, "orange", [body], summary=title), note=_plain_note(lg))
