"""Who holds something, and whether that process is provably dead.

Leases and runs name their process as ``host:pid@started`` (``actor()``): the host name, the
process id, and the process's start time (seconds since the epoch, to the 1/100 s the kernel
keeps). The start time is what makes "pid gone" a proof: process ids are reused — after a
restart in a container the new adsync is often given the very pid the dead one had — but a
reused pid comes with a later start time.

``alive(holder)`` answers True, False, or None when it cannot tell: a holder on another host
(its lease runs out by its TTL instead), or one written before the start time was recorded
whose pid is in use again. Only False ever leads to taking something over.

psutil (imported on first use, ~12 ms) reads the start time portably: ``/proc`` on Linux, the
kernel's process table on macOS and Windows.
"""

from __future__ import annotations

import functools
import os
import re
import socket

HOLDER_RE = re.compile(r"^(?P<host>[^:]+):(?P<pid>\d+)(?:@(?P<started>\d+(?:\.\d+)?))?(?::|$)")


@functools.lru_cache(maxsize=8)
def _started(pid: int) -> str:
    """The start time of process ``pid`` as text ("" if it cannot be read). Cached per pid: a
    forked child has its own pid, so it never inherits its parent's answer."""
    import psutil

    try:
        return _format(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return ""


def _format(started: float) -> str:
    return f"{started:.2f}"


def actor() -> str:
    """This process, as leases, runs and history rows name it: ``host:pid@started``."""
    pid = os.getpid()
    started = _started(pid)
    return f"{socket.gethostname()}:{pid}@{started}" if started else f"{socket.gethostname()}:{pid}"


def alive(holder: str) -> bool | None:
    """Whether the process named at the start of ``holder`` still runs: False only when that
    is certain (same host, and its pid is gone, or taken by a later process, or a zombie)."""
    found = HOLDER_RE.match(holder or "")
    if found is None or found["host"] != socket.gethostname():
        return None
    import psutil

    pid = int(found["pid"])
    try:
        process = psutil.Process(pid)
        started = _format(process.create_time())
        zombie = process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):
        return None  # not ours to inspect (another user's process): cannot tell
    if found["started"] is None:
        # Written before start times were recorded: the pid is in use, maybe by someone else.
        return False if zombie else None
    # False: the pid now belongs to a later process, or the holder died and is not reaped.
    return started == found["started"] and not zombie


__all__ = ["HOLDER_RE", "actor", "alive"]
