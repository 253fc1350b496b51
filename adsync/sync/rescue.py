"""A token pair the platform issued but the database did not take.

Ocean Engine rotates on every refresh: once it has answered, the new pair is the only live one
and the stored pair is dead. If the commit then fails (the connection dropped, the disk is
full), losing the answer means a person must authorize again. So the pair is kept, in three
places, each covering what the one before cannot:

1. **In memory, retried at once** with a new connection, within a bound (``RETRY_DELAYS``,
   about 3 s): a dropped connection or a database restart is over by then, and the caller gets
   its token as if nothing happened.
2. **An owner-only rescue file** next to the SQLite database, or in ``ADSYNC_DATA_DIR`` for
   other databases (0600 in a 0700 directory: the same protection as the SQLite file that
   normally holds the pair), written atomically. Any adsync process on this machine applies it
   at its next use of the token manager; a long-running process also retries in the background
   (``TokenManager``'s retry thread). So a one-shot `adsync token refresh` that gives up still
   loses nothing.
3. **A marker row** (``token_refreshes``, PostgreSQL only) written before the platform is asked,
   deleted in the transaction that stores the answer. Processes on other machines cannot see
   the file; they see the marker of a refresh whose generation is still the stored one while no
   one holds the token row's lock, and report "refreshed but not saved: authorize again" at
   once instead of "ok". (SQLite lives on one machine, where the file is visible to every
   process, and its single writer could not write the marker while holding the lock.)

Applying is a compare-and-set on the generation the pair replaced: if someone authorized again
in the meantime, the rescued pair is obsolete and dropped, never written over a newer chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from adsync.sync.private import private_dir, write_private

log = logging.getLogger("adsync.tokens")

RETRY_DELAYS = (0.1, 0.3, 0.6, 1.0, 1.0)  # seconds: the bounded retry with a new connection
BACKGROUND_MAX_DELAY = 30.0  # seconds between background attempts, at most
_DATETIMES = (
    "access_expires_at",
    "refresh_expires_at",
    "authorized_at",
    "refreshed_at",
    "updated_at",
    "confirmed_at",
)


@dataclass
class UnsavedPair:
    """The row values a refresh (or an authorization) meant to write, and what they replace."""

    app_id: str
    kind: str  # refreshed | authorized
    base_generation: int | None  # the stored generation this pair replaces (None: no row yet)
    values: dict[str, Any]  # column -> value for the tokens row (without app_id/generation)
    reason: str
    at: datetime
    database: str  # fingerprint of the database it belongs to
    path: Path | None = field(default=None, compare=False)

    @property
    def refresh_token(self) -> str:
        return str(self.values.get("refresh_token", ""))

    def to_json(self) -> str:
        values = {
            k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.values.items()
        }
        return json.dumps(
            {
                "version": 1,
                "app_id": self.app_id,
                "kind": self.kind,
                "base_generation": self.base_generation,
                "values": values,
                "reason": self.reason,
                "at": self.at.isoformat(),
                "database": self.database,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str, path: Path) -> UnsavedPair:
        doc = json.loads(text)
        if doc.get("version") != 1:
            raise ValueError("unknown rescue record version")
        values = dict(doc["values"])
        for key in _DATETIMES:
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        return cls(
            app_id=str(doc["app_id"]),
            kind=str(doc["kind"]),
            base_generation=doc["base_generation"],
            values=values,
            reason=str(doc.get("reason", "")),
            at=datetime.fromisoformat(doc["at"]),
            database=str(doc["database"]),
            path=path,
        )


def fingerprint(database_description: str) -> str:
    """Which database a rescue record belongs to (a pair is never applied to another one)."""
    return hashlib.sha256(database_description.encode()).hexdigest()[:16]


def directory(db_url: str, data_dir: Path) -> Path:
    """Next to a SQLite database file (every process using it sees it), else the data dir."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent
    return data_dir


def rescue_path(directory: Path, app_id: str) -> Path:
    return directory / f"token-rescue-{app_id}.json"


def write(pair: UnsavedPair, directory: Path) -> Path | None:
    """Keep ``pair`` in the owner-only rescue file; its path, or None if even that failed."""
    path = rescue_path(directory, pair.app_id)
    try:
        private_dir(directory)
        write_private(path, pair.to_json())
    except OSError as exc:
        log.error("could not write the token rescue file %s: %s", path, exc.strerror)
        return None
    pair.path = path
    return path


def load(directory: Path, app_id: str, database: str) -> UnsavedPair | None:
    """The rescue record for this app and database, if one is waiting."""
    path = rescue_path(directory, app_id)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read the token rescue file %s: %s", path, exc.strerror)
        return None
    try:
        pair = UnsavedPair.from_json(text, path)
    except (ValueError, KeyError, TypeError):
        log.error(
            "the token rescue file %s is unreadable; it is left for a person to look at", path
        )
        return None
    if pair.app_id != app_id or pair.database != database:
        return None  # another app's or another database's pair: not ours to apply
    return pair


def forget(pair: UnsavedPair) -> None:
    """Remove the rescue file of ``pair`` (only if it still holds this very pair)."""
    if pair.path is None:
        return
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        current = UnsavedPair.from_json(pair.path.read_text(encoding="utf-8"), pair.path)
        if current.refresh_token == pair.refresh_token:
            pair.path.unlink()
