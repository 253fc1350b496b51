"""Is the process behind a holder name still alive?

Leases and claimed jobs name their holder ``host:pid:…``. A holder that died (kill -9, OOM, a
lost machine) cannot say so; its claim runs out after its lease. On the *same host* death can
be proved at once: the pid is gone, or it now belongs to another process — containers restart
their one process under the same pid, so the pid alone proves nothing; its start time (clock
ticks since boot, ``/proc/PID/stat`` field 22) tells the two apart. Elsewhere, or where there is
no ``/proc``, nothing is proved and the lease decides.
"""

from __future__ import annotations

import os
import re
import socket

_START = re.compile(r"^t(\d+)$")


def start_ticks(pid: int) -> str:
    """The process's start time since boot in clock ticks, or "" when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    # After "pid (comm)": state is field 3, so field 22 (starttime) is index 19.
    return fields[19] if len(fields) > 19 else ""


def this_process() -> str:
    """``host:pid:tTICKS`` for this process (``host:pid`` where the start time is unknown)."""
    pid = os.getpid()
    ticks = start_ticks(pid)
    name = f"{socket.gethostname()}:{pid}"
    return f"{name}:t{ticks}" if ticks else name


def holder_is_dead(holder: str) -> bool:
    """True only when ``holder`` (``host:pid[:tTICKS][:…]``) is provably gone: same host, and
    the pid is free or belongs to a process started at another time."""
    parts = holder.split(":")
    if len(parts) < 2 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    recorded = next((m.group(1) for p in parts[2:] if (m := _START.match(p))), "")
    if pid == os.getpid():
        # Our own pid: it is us unless the holder was an earlier process that had this pid.
        return bool(recorded) and recorded != start_ticks(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    if not recorded:
        return False
    now = start_ticks(pid)
    return bool(now) and now != recorded
