"""Arguments several commands share: the date words, today, and ``--account``.

Dates follow the chat's grammar (``adsync.sync.dates``), accounts the chat's matching
(``adsync.sync.matching``): what works after ``@adsync`` works on the command line.
"""

from __future__ import annotations

from datetime import date, datetime

from adsync.cli.context import Context
from adsync.sync.errors import ConfigError
from adsync.sync.matching import account_candidates

SHOWN_CANDIDATES = 8


def when_text(ctx: Context) -> str:
    """The date words as typed (``last 7 days`` arrives as three arguments)."""
    words = getattr(ctx.args, "when", None) or []
    return " ".join(words) if isinstance(words, list) else str(words)


def today(ctx: Context) -> date:
    """The business day in ADSYNC_TIMEZONE."""
    return datetime.now(ctx.settings.tz).date()


def resolve_account(query: str, scope: list[tuple[str, str]]) -> str:
    """The id of the one account in ``scope`` (id, name) that ``query`` means; ConfigError
    (exit 2) naming the candidates when it means none or several."""
    found = account_candidates(query, scope)
    if len(found) == 1:
        return found[0][0]
    if not found:
        listed = ", ".join(f"{name or '—'} ({i})" for i, name in scope[:SHOWN_CANDIDATES])
        more = f" and {len(scope) - SHOWN_CANDIDATES} more" if len(scope) > SHOWN_CANDIDATES else ""
        raise ConfigError(
            f'no account in scope matches "{query}"',
            hint=f"use an id or part of a name; in scope: {listed or 'none'}{more} "
            "(`adsync accounts`)",
        )
    listed = "\n".join(f"    {i}  {name or '—'}" for i, name in found[:SHOWN_CANDIDATES])
    more = len(found) - SHOWN_CANDIDATES
    if more > 0:
        listed += f"\n    … and {more} more"
    raise ConfigError(
        f'"{query}" matches {len(found)} accounts:\n{listed}',
        hint="give the id, or more of the name",
    )
