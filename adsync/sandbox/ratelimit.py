"""Sliding-window rate limits for the simulated platforms.

A limit is "at most N admissions per period, per key" (5 messages a second per chat, 1,000 a
minute per app). Refused requests do not consume the window, so a caller that waits as told is
admitted. Real (monotonic) time, not the simulator's replaceable clock: a test that travels the
clock days ahead must not empty or fill the windows.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class Window:
    """Thread-safe; one per limit."""

    def __init__(self, limit: int, period: float, now: Callable[[], float] = time.monotonic):
        if limit < 1 or period <= 0:
            raise ValueError("a rate limit needs limit >= 1 and period > 0")
        self.limit = limit
        self.period = period
        self._now = now
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}

    def admit(self, key: str) -> float:
        """0.0 if a request for ``key`` is admitted now (and counted); otherwise the seconds
        until the window has room again (nothing counted)."""
        now = self._now()
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and now - seen[0] >= self.period:
                seen.popleft()
            if len(seen) >= self.limit:
                return max(self.period - (now - seen[0]), 1e-3)
            seen.append(now)
            return 0.0


def reset_header(wait: float) -> str:
    """``x-ogw-ratelimit-reset``: whole seconds, at least 1 (the 频控策略 page's example is "52")."""
    return str(max(1, math.ceil(wait)))
