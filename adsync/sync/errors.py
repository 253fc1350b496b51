"""Errors every layer shares. Each carries the exit code the CLI uses and a hint saying what to do.

Exit codes (DESIGN.md): 0 done; 1 partly failed; 2 usage or configuration error (or the
database cannot be reached); 3 authorization needed; 4 an unexpected error (the CLI prints one
line and the path of a log file with the details).
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

    # What a chat card may say. The operator's terminal gets ``message`` and ``hint``; a card is
    # read by everyone in the group, so subclasses whose message names internals (a database
    # URL) say less here.
    @property
    def public_message(self) -> str:
        return self.message

    @property
    def public_hint(self) -> str:
        return self.hint

    def public_text(self) -> str:
        hint = self.public_hint
        return f"{self.public_message}\n→ {hint}" if hint else self.public_message


class ConfigError(AdsyncError):
    """A setting is missing or malformed."""

    exit_code = 2


class StoreError(AdsyncError):
    """The database cannot be opened, read or migrated. ``message`` names the database (for the
    operator's terminal); cards say only that it is not reachable and what to do."""

    exit_code = 2

    @property
    def public_message(self) -> str:
        return "the database is not reachable"

    @property
    def public_hint(self) -> str:
        return (
            "an admin can run `adsync doctor` on the server: it names the database and the fix; "
            "then try again"
        )


class TokenNotSaved(StoreError):
    """Ocean Engine rotated the token pair, and the new pair could not be written to the
    database (it is kept in memory and, when possible, in an owner-only rescue file)."""

    @property
    def public_message(self) -> str:
        return "the token was refreshed but not saved: the database is not reachable"

    @property
    def public_hint(self) -> str:
        return (
            "adsync saves it as soon as the database answers again; if `token status` still "
            "says “refreshed but not saved”, an admin must authorize again"
        )


class GrantRefused(AdsyncError):
    """An authorization was not taken (it grants no accounts, or it was cancelled)."""

    exit_code = 3


class AuthorizationNeeded(AdsyncError):
    """The Ocean Engine authorization is gone; a person must authorize again in a browser."""

    exit_code = 3

    def __init__(self, message: str, auth_url: str = "", hint: str = "") -> None:
        self.auth_url = auth_url
        super().__init__(message, hint or self._hint(auth_url))

    @staticmethod
    def _hint(auth_url: str) -> str:
        if auth_url:
            return f"open this link, tick every account, and finish: {auth_url}"
        return "run `adsync auth url`, open the link, then `adsync auth code CODE`"

    def with_link(self, auth_url: str) -> AuthorizationNeeded:
        """The same error with a link to fix it (minted where it is shown: the CLI)."""
        self.auth_url = auth_url
        self.hint = self._hint(auth_url)
        return self

    @property
    def public_hint(self) -> str:
        return "an admin authorizes again: send `auth` to the bot in a direct chat"


def mask(secret: object, keep: int = 4) -> str:
    """A masked prefix: enough to tell two tokens apart in a log, never enough to use one."""
    text = "" if secret is None else str(secret)
    if not text:
        return "(empty)"
    if len(text) <= keep * 2:
        return "****"
    return f"{text[:keep]}…"
