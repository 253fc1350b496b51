"""The acknowledgement's own disk: an append-only, fsynced spool, drained into the database.

Feishu retries an event that is not answered within 3 s, and never again once it got its 200:
what we acknowledged must survive a crash, and the acknowledgement must not wait on the
database — an SQLite file locked by another process for 75 s, a PostgreSQL restart or a
dropped connection would otherwise hold the 200 past the deadline, or (answered anyway) lose
the command. So the webhook only appends the event as one JSON line to a file of its own
process under ``$ADSYNC_DATA_DIR/spool`` (owner-only), ``fdatasync``s it (about 0.1 ms here;
concurrent acknowledgements share one sync), and answers. A mover thread drains the file into
the database queue when the database lets it, retrying with a backoff while it does not.

Crash safety: a line is acknowledged only after it is on disk. A file whose process died is
found by any other process on this host (each live process holds an ``flock`` on its own file;
a file nobody holds is an orphan), drained and deleted. Draining twice is harmless: the queue
claims each delivery by event and message id, so a line moved before the crash is skipped.
A torn last line (the process died mid-write) was never acknowledged, and is dropped.

The spool is as durable as the data directory: keep ``ADSYNC_DATA_DIR`` on a persistent disk
(a container's throw-away layer loses what was acknowledged but not yet moved).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("adsync.spool")

SEGMENT_BYTES = 1 << 20  # start a new file once this one is moved and this large
MOVE_BATCH = 500  # lines moved in one database transaction
ORPHAN_SWEEP_S = 2.0  # how often other processes' abandoned files are looked for
SUFFIX = ".spool"


@dataclass
class _Segment:
    path: Path
    fd: int
    pid: int
    written: int = 0  # bytes appended (all of them complete lines)
    synced: int = 0  # bytes known to be on disk
    moved: int = 0  # bytes whose lines are in the database

    def __post_init__(self) -> None:
        self.sync_lock = threading.Lock()


class Spool:
    """This process's spool file (created on first use) and the directory of all of them."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segment: _Segment | None = None
        self._serial = 0
        self.appended = threading.Event()  # wakes the mover

    # -- the acknowledgement's side ------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` and return once it is on disk. Raises OSError if it cannot be
        (the caller must then not acknowledge)."""
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            segment = self._current()
            os.write(segment.fd, data)  # O_APPEND: one write, one line
            segment.written += len(data)
            end = segment.written
        self._sync(segment, end)
        self.appended.set()

    @staticmethod
    def _sync(segment: _Segment, end: int) -> None:
        # Group commit: whoever syncs covers every line written before it started, so under a
        # burst most acknowledgements find their line already synced by another thread's call.
        with segment.sync_lock:
            if segment.synced >= end:
                return
            target = segment.written
            os.fdatasync(segment.fd)
            segment.synced = max(segment.synced, target)

    def _current(self) -> _Segment:
        segment = self._segment
        if segment is not None and segment.pid == os.getpid():
            return segment
        # First use, or a forked child holding its parent's segment: a file of our own.
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)  # owner-only: these are people's messages
        self._serial += 1
        pid = os.getpid()
        name = f"{pid}-{uuid.uuid4().hex[:12]}-{self._serial}"
        # Created under a name no one looks for and locked before it gets its real name: no
        # other process can ever find it unlocked and take it for an orphan.
        hidden = self.directory / f".{name}.new"
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # "alive": other processes leave this file alone
        path = self.directory / f"{name}{SUFFIX}"
        os.rename(hidden, path)
        _sync_directory(self.directory)  # the new file's name is on disk too
        self._segment = _Segment(path, fd, pid)
        return self._segment

    # -- the mover's side ----------------------------------------------------------------------

    def pending(self, limit: int = MOVE_BATCH) -> tuple[list[dict[str, Any]], int]:
        """Lines of our file not yet moved (at most ``limit``), and the offset after them."""
        with self._lock:
            segment = self._segment
            if segment is None or segment.pid != os.getpid():
                return [], 0
            start, end = segment.moved, segment.written
        if start >= end:
            return [], end
        with open(segment.path, "rb") as f:
            f.seek(start)
            chunk = f.read(end - start)
        records, used = _parse(chunk, limit, segment.path)
        return records, start + used

    def moved(self, offset: int) -> None:
        """Everything before ``offset`` is in the database; start a new file once the current
        one is fully moved and large."""
        with self._lock:
            segment = self._segment
            if segment is None or segment.pid != os.getpid():
                return
            segment.moved = max(segment.moved, offset)
            if segment.moved >= segment.written and segment.written >= self.segment_bytes:
                self._segment = None
                os.close(segment.fd)
                with contextlib.suppress(OSError):
                    segment.path.unlink()

    def backlog(self) -> int:
        """Bytes of this process's spool not yet moved."""
        with self._lock:
            segment = self._segment
            return 0 if segment is None else segment.written - segment.moved

    def orphans(self) -> list[Path]:
        """Spool files of this directory that no live process holds."""
        own = self._segment.path if self._segment is not None else None
        try:
            paths = sorted(self.directory.glob(f"*{SUFFIX}"))
        except OSError:
            return []
        return [p for p in paths if p != own]

    def drain_orphan(self, path: Path, deliver: Callable[[list[dict[str, Any]]], None]) -> int:
        """Move an abandoned file's lines and delete it; 0 if its process is alive (or another
        process is draining it). Raises what ``deliver`` raises (the file stays)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its writer lives, or someone else drains it
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            moved = 0
            offset = 0
            while offset < len(data):
                records, used = _parse(data[offset:], MOVE_BATCH, path)
                if not used:
                    break  # a torn last line: never acknowledged
                if records:
                    deliver(records)
                moved += len(records)
                offset += used
            with contextlib.suppress(FileNotFoundError):  # a drainer that came first
                path.unlink()
            _sync_directory(self.directory)
            if moved:
                log.warning("moved %d acknowledged events left by a stopped process", moved)
            return moved
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            segment, self._segment = self._segment, None
        if segment is not None and segment.pid == os.getpid():
            os.close(segment.fd)
            if segment.moved >= segment.written:
                with contextlib.suppress(OSError):
                    segment.path.unlink()


def _parse(chunk: bytes, limit: int, path: Path) -> tuple[list[dict[str, Any]], int]:
    """Complete lines of ``chunk`` as records (at most ``limit``) and the bytes they span."""
    records: list[dict[str, Any]] = []
    used = 0
    while len(records) < limit:
        newline = chunk.find(b"\n", used)
        if newline < 0:
            break
        line = chunk[used:newline]
        used = newline + 1
        try:
            record = json.loads(line)
        except ValueError:
            log.error("an unreadable line in %s was skipped (%d bytes)", path.name, len(line))
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, used


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AckGate:
    """Acknowledgements first. Everything in a process shares one GIL, so under a burst the
    mover's database work would take CPU from requests still waiting for their 200 (a 3 s
    deadline); the mover has none, so it waits until no request is being acknowledged and
    none has been for ``quiet`` seconds (the gaps inside a burst are shorter than that) — at
    most ``cap`` seconds, so a stream of requests that never pauses does not hold it for
    good."""

    def __init__(self, cap: float = 0.2, quiet: float = 0.005) -> None:
        self.cap = cap
        self.quiet = quiet
        self._in_flight = 0
        self._last = 0.0  # when the last acknowledgement ended (monotonic)
        self._done = threading.Condition(threading.Lock())

    @contextlib.contextmanager
    def acknowledging(self) -> Iterator[None]:
        with self._done:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._done:
                self._in_flight -= 1
                self._last = time.monotonic()
                if not self._in_flight:
                    self._done.notify_all()

    def wait(self) -> None:
        deadline = time.monotonic() + self.cap
        with self._done:
            while True:
                now = time.monotonic()
                left = deadline - now
                if left <= 0:
                    return
                if self._in_flight:
                    self._done.wait(left)
                    continue
                calm = self._last + self.quiet - now
                if calm <= 0:
                    return
                self._done.wait(min(calm, left))


class Mover:
    """A thread that drains the spool into ``deliver`` (the database queue): as soon as a line
    is appended, after ``before_move`` lets it (acknowledgements in flight go first), in
    batches; on failure (the database locked or gone) it keeps the lines and tries again with a
    growing pause, so nothing is lost and nothing waits for it. Every ``ORPHAN_SWEEP_S`` it also
    drains files that stopped processes left behind."""

    def __init__(
        self,
        spool: Spool,
        deliver: Callable[[list[dict[str, Any]]], None],
        *,
        before_move: Callable[[], None] = lambda: None,
        own: bool = True,
        name: str = "spool-mover",
    ) -> None:
        self.spool = spool
        self.deliver = deliver
        self.before_move = before_move
        self.own = own  # False: only other processes' files (a worker that acknowledges nothing)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.failures = 0
        self.last_error = ""

    def start(self) -> Mover:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.spool.appended.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        next_sweep = 0.0
        pause = 0.0
        while not self._stop.is_set():
            if pause:
                self._stop.wait(pause)
            else:
                self.spool.appended.wait(ORPHAN_SWEEP_S / 2)
            if self._stop.is_set():
                break
            try:
                if self.own:
                    self.spool.appended.clear()
                    self.move_once()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + ORPHAN_SWEEP_S
                    for path in self.spool.orphans():
                        self.spool.drain_orphan(path, self.deliver)
                pause = 0.0
                self.failures = 0
            except Exception as exc:  # noqa: BLE001 - keep the lines, try again
                self.failures += 1
                self.last_error = _describe(exc)
                # Each try already waited out the store's own bound (ADSYNC_DB_WAIT); a short
                # pause more, so the events move within a moment of the database coming back.
                pause = min(0.25 * 2 ** min(self.failures, 3), 1.0)
                log.warning(
                    "could not move acknowledged events to the database (try %d, again in "
                    "%.1f s): %s",
                    self.failures,
                    pause,
                    self.last_error,
                )
                self.spool.appended.set()  # the lines are still there

    def move_once(self) -> int:
        """Move what is pending now; returns the lines moved."""
        moved = 0
        while True:
            records, offset = self.spool.pending()
            if not records:
                if offset:
                    self.spool.moved(offset)  # only unreadable lines were left
                return moved
            self.before_move()
            self.deliver(records)
            self.spool.moved(offset)
            moved += len(records)


def _describe(exc: BaseException) -> str:
    """What failed, without the exception's text (a database error can carry parameters)."""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    return type(exc).__name__
