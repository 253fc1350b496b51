"""Repair after a crash: what a process killed mid-work (``kill -9``, a lost machine, an OOM
kill) left behind — runs still marked ``running`` and leases nobody will release.

``recover_after_crash(store)`` is called once by every process that starts work (``adsync
serve``, ``worker``, ``clock``, ``chat``) and by every sync before it takes its leases. It:

* releases the leases whose holder is provably dead (same host, and its pid gone or reused —
  ``processes.alive``), so the next run starts at once instead of waiting out a 90 s TTL; a
  holder on another host is left to its TTL, since nothing here can see its processes;
* marks ``interrupted`` the runs left ``running`` by a process that is gone: provably dead on
  this host, or (another host, or a run written before holders were recorded) one whose run
  lease lapsed — a live run renews it every 30 s for as long as it lasts, waiting included.

It changes nothing that is alive, and running it twice, or in two processes at once, is the
same as once (every update is conditional on what it read). A run it marked that was only
stalled, not dead, still records its real ending when it finishes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from adsync.sync import processes
from adsync.sync.errors import AdsyncError
from adsync.sync.store import Store, leases, runs, utcnow

log = logging.getLogger("adsync.recovery")

RUN_LEASE_TTL = timedelta(seconds=90)  # the run's own lease (runner.py), renewed every 30 s
INTERRUPTED = "interrupted"


def run_lease(run_id: int) -> str:
    """The lease a run holds from its first moment to its last."""
    return f"run:{run_id}"


@dataclass
class Recovery:
    """What a recovery did: the runs marked interrupted and the leases released."""

    interrupted: list[int] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(self.interrupted or self.released)


def recover_after_crash(store: Store, *, strict: bool = False) -> Recovery:
    """Release dead holders' leases and mark their runs ``interrupted`` (see the module).
    A database that cannot be reached right now is logged and skipped (the caller's own work
    will meet it and say so), unless ``strict``."""
    try:
        return _recover(store)
    except AdsyncError as exc:
        if strict:
            raise
        log.warning("crash recovery skipped: %s", exc.message)
        return Recovery()


def _recover(store: Store) -> Recovery:
    done = Recovery()
    now = utcnow()
    held = store.read(
        lambda conn: conn.execute(select(leases.c.name, leases.c.holder, leases.c.expires_at)).all()
    )
    stuck = store.read(
        lambda conn: conn.execute(
            select(runs.c.id, runs.c.holder, runs.c.started_at).where(runs.c.status == "running")
        ).all()
    )
    verdicts: dict[str, bool | None] = {}

    def alive(holder: str) -> bool | None:
        if holder not in verdicts:
            verdicts[holder] = processes.alive(holder)
        return verdicts[holder]

    dead_leases = [(name, holder) for name, holder, _ in held if alive(holder) is False]
    live_leases = [(name, holder) for name, holder, until in held if until >= now]
    for run_id, holder, started_at in stuck:
        verdict = alive(holder) if holder else None
        if verdict is True:
            continue
        if verdict is None:
            # Nothing on this host can see that process: the run is gone if its lease lapsed
            # (and it is older than one TTL, so a run between its ledger row and its first
            # lease is not mistaken for a dead one).
            renewed = any(
                name == run_lease(run_id) or f":run{run_id}:" in f"{lease_holder}:"
                for name, lease_holder in live_leases
                if (name, lease_holder) not in dead_leases
            )
            if renewed or now - started_at < RUN_LEASE_TTL:
                continue
        done.interrupted.append(run_id)
    for name, holder in dead_leases:
        store.transact(
            lambda conn, name=name, holder=holder: conn.execute(
                delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            ),
            idempotent=True,
        )
        done.released.append(name)
    for run_id in done.interrupted:
        holder = next((h for i, h, _ in stuck if i == run_id), None)
        store.transact(
            lambda conn, run_id=run_id, holder=holder: _mark(conn, run_id, holder),
            idempotent=True,
        )
    if done.anything:
        log.warning(
            "after a crash: marked %d run(s) interrupted (%s), released %d lease(s) of dead "
            "processes",
            len(done.interrupted),
            ", ".join(map(str, done.interrupted)) or "none",
            len(done.released),
        )
    return done


def _mark(conn: Connection, run_id: int, holder: str | None) -> None:
    who = f" ({holder.split('@')[0]})" if holder else ""
    conn.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.status == "running")
        .values(
            status=INTERRUPTED,
            finished_at=utcnow(),
            error=f"interrupted: its process{who} stopped before it finished; sync these "
            "dates again to complete it",
        )
    )


__all__ = ["INTERRUPTED", "RUN_LEASE_TTL", "Recovery", "recover_after_crash", "run_lease"]
