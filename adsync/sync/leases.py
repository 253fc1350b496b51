"""Holding named leases for as long as some work runs: taken in a fixed order (so two runs
never deadlock), renewed by a heartbeat while held, released at the end. A holder that dies
stops renewing and its leases run out after ``ttl`` — or are taken over at once when it is
provably dead (same host, its pid gone or reused: ``Store.acquire_lease``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta

from adsync.sync.errors import AdsyncError
from adsync.sync.store import Store


class Busy(AdsyncError):
    """Someone else holds a lease we need (another run of the same dates)."""

    exit_code = 1

    def __init__(self, name: str, holder: str | None) -> None:
        super().__init__(
            f"already running: {name} is held by {holder or 'another run'}",
            hint="wait for that run to finish (`adsync history`), then try again",
        )
        self.name = name
        self.holder = holder


@contextlib.contextmanager
def holding(
    store: Store,
    names: Sequence[str],
    holder: str,
    *,
    ttl: timedelta = timedelta(seconds=90),
    wait: float = 0.0,
    poll: float = 0.25,
) -> Iterator[None]:
    """Hold every lease in ``names`` (sorted) or raise Busy after waiting up to ``wait`` s."""
    taken: list[str] = []
    stop = threading.Event()
    heartbeat: threading.Thread | None = None
    try:
        deadline = time.monotonic() + wait
        for name in sorted(set(names)):
            while not store.acquire_lease(name, holder, ttl):
                if time.monotonic() >= deadline:
                    raise Busy(name, store.lease_holder(name))
                # Polling a lease row: the other holder commits its release or its lease expires.
                time.sleep(poll)
            taken.append(name)
        heartbeat = threading.Thread(
            target=_renew, args=(store, taken, holder, ttl, stop), daemon=True, name="lease-beat"
        )
        heartbeat.start()
        yield
    finally:
        stop.set()
        if heartbeat is not None:
            heartbeat.join(timeout=5)
        for name in reversed(taken):
            with contextlib.suppress(Exception):  # an unreleased lease simply runs out
                store.release_lease(name, holder)


def _renew(
    store: Store, names: list[str], holder: str, ttl: timedelta, stop: threading.Event
) -> None:
    while not stop.wait(ttl.total_seconds() / 3):
        for name in names:
            with contextlib.suppress(Exception):
                store.renew_lease(name, holder, ttl)
