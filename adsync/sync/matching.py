"""Which account a person means: an exact id, an exact name, or part of a name (or 4+ digits
of an id). The chat (``sync 门店A``) and the command line (``--account 门店A``) both ask here,
so the same words pick the same account everywhere."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

__all__ = ["account_candidates", "fold"]


def fold(text: str) -> str:
    """For comparing names: width, case, spaces and punctuation don't matter."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def account_candidates(query: str, accounts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (id, name) pairs ``query`` may mean, best kind of match only: one exact id, else the
    exact names, else every name containing it (and ids containing 4+ of its digits). One
    candidate is an answer; none or several need the person to say more."""
    query = query.strip()
    key = fold(query)
    for account in accounts:
        if query and account[0] == query:
            return [account]
    candidates = [a for a in accounts if key and fold(a[1]) == key]
    if not candidates and key:
        candidates = [
            a
            for a in accounts
            if key in fold(a[1])
            or (key.isascii() and key.isdigit() and len(key) >= 4 and key in a[0])
        ]
    return candidates
