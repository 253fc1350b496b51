"""Errors every layer shares. Each carries the exit code the CLI uses and a hint saying what to do.

Exit codes (DESIGN.md): 0 done; 1 partly failed; 2 usage or configuration error;
3 authorization needed.
"""

from __future__ import annotations


class AdsyncError(Exception):
    """Base of every error adsync raises on purpose. ``str(err)`` is safe to show a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  → {self.hint}" if self.hint else self.message


class ConfigError(AdsyncError):
    """A setting is missing or malformed."""

    exit_code = 2


class StoreError(AdsyncError):
    """The database cannot be opened, read or migrated."""

    exit_code = 2


class AuthorizationNeeded(AdsyncError):
    """The Ocean Engine authorization is gone; a person must authorize again in a browser."""

    exit_code = 3

    def __init__(self, message: str, auth_url: str = "", hint: str = "") -> None:
        self.auth_url = auth_url
        if not hint:
            hint = (
                f"open this link, tick every account, and finish: {auth_url}"
                if auth_url
                else "run `adsync auth url`, open the link, then `adsync auth code CODE`"
            )
        super().__init__(message, hint)


def mask(secret: object, keep: int = 4) -> str:
    """A masked prefix: enough to tell two tokens apart in a log, never enough to use one."""
    text = "" if secret is None else str(secret)
    if not text:
        return "(empty)"
    if len(text) <= keep * 2:
        return "****"
    return f"{text[:keep]}…"
