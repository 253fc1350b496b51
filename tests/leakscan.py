"""Scan text for any token or auth code the sandbox ever issued (not only the current ones).

The sandbox never reveals a token; ``/_sandbox/oceanengine/issued`` gives salted SHA-256 hashes
of every prefix (8 characters and longer) of everything it issued. Each run of lowercase hex in
the text is hashed the same way, window by window, so a whole token, a truncated one, or one
inside a longer string is found; a masked 4-character prefix is not a leak.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

_HEX_RUN = re.compile(r"[0-9a-f]{8,}")
TOKEN_CHARS = 40  # token_hex(20)


def leaks(sandbox: Any, *texts: str) -> list[str]:
    """Masked prefixes of every issued secret found in ``texts`` (empty: nothing leaked)."""
    issued = sandbox.get("/_sandbox/oceanengine/issued")
    assert issued["issued"] > 0, "the sandbox issued nothing: the scan would prove nothing"
    salt, shortest, hashes = issued["salt"], issued["min_prefix"], set(issued["hashes"])
    found: list[str] = []
    for text in texts:
        for run in _HEX_RUN.findall(text or ""):
            for start in range(len(run) - shortest + 1):
                for end in range(start + shortest, min(len(run), start + TOKEN_CHARS) + 1):
                    piece = run[start:end]
                    if hashlib.sha256(f"{salt}{piece}".encode()).hexdigest() in hashes:
                        found.append(f"{piece[:4]}… ({len(piece)} chars)")
                        break
    return found
