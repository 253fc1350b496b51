"""Owner-only files and directories for what adsync keeps on disk.

The data directory, the SQLite database (and its ``-wal``/``-shm`` companions), a token pair
rescued from a failed commit and the log file hold tokens, unused authorization states or
details of failures: nobody but the account running adsync may read them. Directories are
created 0700 and files 0600 whatever the umask; existing ones readable by others (an older
adsync created them 0755/0644) are repaired, and the caller says so in one warning line.

SQLite creates ``-wal``/``-shm`` with the permissions of the database file (the unix VFS's
``findCreateFileMode``), so creating the database file 0600 before SQLite opens it is what
keeps the companions private too.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True)
class Repair:
    """A path whose mode was too wide, and what it was."""

    path: Path
    before: int
    after: int

    def __str__(self) -> str:
        return f"{self.path} ({self.before:o}→{self.after:o})"


def _narrow(path: Path, mode: int) -> Repair | None:
    """Remove the group/other bits of an existing ``path``; the repair made, if any."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if not current & 0o077:
        return None
    wanted = current & ~0o077 | (mode & 0o700)
    os.chmod(path, wanted)
    return Repair(path, current, wanted)


def private_dir(path: Path, *, create: bool = True) -> Repair | None:
    """``path`` as an owner-only directory: created 0700 if missing (and ``create``), narrowed
    if it exists and others may read it."""
    if not path.exists():
        if not create:
            return None
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask; chmod is not
        return None
    return _narrow(path, DIR_MODE)


def private_file(path: Path, *, create: bool = False) -> Repair | None:
    """``path`` as an owner-only file: created empty 0600 if missing (and ``create``), narrowed
    if it exists and others may read it."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
            return None
    return _narrow(path, FILE_MODE)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (temp file, fsync, rename), owner-only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def describe(repairs: list[Repair | None]) -> str:
    """One line for the warning: every path repaired, with its old and new mode."""
    return ", ".join(str(r) for r in repairs if r is not None)
