"""Failures grouped by cause: one line per cause, with its count, instead of one per account.

Twenty accounts that failed because the authorization is gone are one problem, not twenty; a
run's warnings, the CLI's output, the run's log, the history and the cards all say it once:
``3 accounts: 40002 no permission for this account (2), no answer within 20s (1)``. Reasons
are the stored text of each account's failure, so the history of old runs groups the same way.
Pure (no I/O, no SQLAlchemy): the cards import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Cause", "cause_lines", "cause_of", "causes_line", "collapse", "fix_for", "group"]

# Per-call identifiers that make two reports of one problem look different.
_CALL_IDS = re.compile(r"\s*\[(?:request_id|log_id)[^\]]*\]")
# "Ocean Engine /open_api/…/ failed: 40002 no permission for this account (detail)"
_FAILED = re.compile(r"^(?:Ocean Engine|Feishu) .+? failed: (?P<rest>.+)$", re.S)
_REFUSED = re.compile(r"^Ocean Engine \S+ refused the authorization: (?P<rest>.+)$", re.S)
# The chain died (one account saw it; the rest were not asked): one cause, whatever the words.
_AUTH_GONE = re.compile(
    r"^(?:the Ocean Engine authorization is gone|not fetched: authorization needed)"
)
_CODE_ONLY = re.compile(r"^0 \((?P<msg>.+)\)$", re.S)  # no code: the client's own words
_HTTP = re.compile(r"^(?P<code>[1-5]\d\d) \(HTTP (?P=code)\)$")
SHORT_CHARS = 90

# What to do, by the short cause's code (Ocean Engine's codes: oceanengine.md §1.3).
_FIXES = (
    (
        re.compile(r"^40002\b"),
        "the authorization does not cover this account: authorize again "
        "ticking it (`adsync auth url`), or remove it from ADSYNC_ACCOUNTS",
    ),
    (
        re.compile(r"^40001\b"),
        "the platform refused a parameter: check the account id (a "
        "广告主 id is not a local account id) and the dates",
    ),
    (
        re.compile(r"^40118\b"),
        "the app may not call the local report: enable the 本地推 report "
        "API for the app in the Ocean Engine developer console",
    ),
    (re.compile(r"^(?:authorization (?:refused|gone))"), "authorize again: `adsync auth url`"),
    (
        re.compile(r"^(?:40100|5\d{4}|HTTP \d|no answer|cannot connect|no readable)"),
        "temporary: run the same command again; only the failed accounts change",
    ),
)


@dataclass(frozen=True)
class Cause:
    short: str  # "40002 no permission for this account"
    text: str  # the first full reason with this cause (per-call ids removed)
    count: int
    labels: tuple[str, ...]  # whose failure it was (accounts), in order of appearance

    @property
    def fix(self) -> str:
        return fix_for(self.short)


def cause_of(reason: str) -> tuple[str, str]:
    """A failure reason -> (short cause, full text without per-call ids)."""
    text = _CALL_IDS.sub("", reason or "").strip() or "unknown reason"
    short = text
    if _AUTH_GONE.match(text):
        return "authorization gone", text
    refused = _REFUSED.match(text)
    failed = _FAILED.match(text)
    if refused:
        short = f"authorization refused: {refused['rest']}"
    elif failed:
        short = failed["rest"]
        bare = _CODE_ONLY.match(short)
        http = _HTTP.match(short)
        if bare:
            short = bare["msg"]
        elif http:
            short = f"HTTP {http['code']}"
        else:
            # "40002 no permission for this account (account 17… not in grant)": the meaning
            # names the cause; the platform's detail often names the account.
            coded = re.match(r"^(\d+ [^(]+?)\s*\((.*)\)$", short, re.S)
            if coded:
                short = coded.group(1)
    short = " ".join(short.split())
    if len(short) > SHORT_CHARS:
        short = short[: SHORT_CHARS - 1].rstrip() + "…"
    return short, text


def group(failures: Iterable[tuple[str, str]]) -> list[Cause]:
    """(label, reason) pairs -> causes, the most frequent first (ties: first seen first)."""
    order: dict[str, tuple[str, list[str]]] = {}
    for label, reason in failures:
        short, text = cause_of(reason)
        order.setdefault(short, (text, []))[1].append(label)
    causes = [
        Cause(short, text, len(labels), tuple(labels)) for short, (text, labels) in order.items()
    ]
    return sorted(causes, key=lambda c: -c.count)  # stable: ties keep their order


def causes_line(reasons: Sequence[str], noun: str = "account") -> str:
    """'3 accounts: 40002 no permission for this account (2), no answer within 20s (1)'."""
    if not reasons:
        return ""
    causes = group(("", r) for r in reasons)
    plural = noun if len(reasons) == 1 else f"{noun}s"
    if len(causes) == 1:
        return f"{len(reasons)} {plural}: {causes[0].short}"
    return f"{len(reasons)} {plural}: " + ", ".join(f"{c.short} ({c.count})" for c in causes)


def cause_lines(failures: Iterable[tuple[str, str]], shown: int = 3) -> list[str]:
    """(label, reason) pairs -> one line per cause for an alert: 'authorization gone — 20
    accounts: 门店A, 门店B, 门店C and 17 more'."""
    lines = []
    for cause in group(failures):
        who = ", ".join(cause.labels[:shown])
        if cause.count > shown:
            who += f" and {cause.count - shown} more"
        noun = "account" if cause.count == 1 else "accounts"
        lines.append(f"{cause.short} — {cause.count} {noun}: {who}")
    return lines


def collapse(lines: Sequence[str]) -> list[str]:
    """Repeated lines once each, with how often: 'x', 'x', 'y' -> 'x (×2)', 'y'."""
    counts: dict[str, int] = {}
    for line in lines:
        key = _CALL_IDS.sub("", line).strip()
        counts[key] = counts.get(key, 0) + 1
    return [line if n == 1 else f"{line} (×{n})" for line, n in counts.items()]


def fix_for(short: str) -> str:
    for pattern, fix in _FIXES:
        if pattern.search(short):
            return fix
    return ""
