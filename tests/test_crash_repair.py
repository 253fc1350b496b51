"""Crashed runs never cost the next one: a real `adsync sync` killed -9 mid-run leaves its run
`running` and its leases held; the next sync marks it `interrupted`, takes the leases over at
once (their holder is provably dead) and finishes in seconds, not after the 90 s lease TTL. A
holder on another host, or a live one, is never taken over. Both storage backends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from adsync.sync import processes
from adsync.sync.recovery import recover_after_crash
from adsync.sync.store import Store, leases, runs

from .conftest import Sandbox, report
from .test_sync import assert_table_is_truth


def _yesterday() -> date:
    return datetime.now(ZoneInfo("Asia/Shanghai")).date() - timedelta(days=1)


def _wait_for(what: str, check: Any, proc: subprocess.Popen[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the sync ended first: {proc.stderr.read()}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def test_a_sync_killed_mid_run_costs_the_rerun_nothing_and_shows_interrupted(
    authorized: Any, sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    start, end = _yesterday() - timedelta(days=2), _yesterday()
    # Slow report calls keep the first sync busy long after it took its leases.
    sandbox.faults(oceanengine={"latency_ms": 1500, "paths": ["/report/"]})
    proc = subprocess.Popen(
        [sys.executable, "-m", "adsync", "sync", f"{start}..{end}"],
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=os.path.dirname(env["ADSYNC_DATA_DIR"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    store: Store = authorized.store
    mark = f":{proc.pid}@"

    def held() -> bool:  # all three dates taken (one at a time, in order)
        with store.connect() as conn:
            rows = conn.execute(select(leases.c.name, leases.c.holder)).all()
        return len([r for r in rows if mark in r.holder and r.name.startswith("sync:")]) == 3

    try:
        _wait_for("the first sync's date leases", held, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with store.connect() as conn:
        (killed,) = conn.execute(select(runs)).all()
    assert killed.status == "running" and mark in killed.holder

    sandbox.faults(oceanengine={})
    began = time.monotonic()
    done = cli(["sync", f"{start}..{end}", "--json"], env)
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "ok"
    # Without the repair this waits out the dead run's 90 s leases.
    assert took < 30, f"the rerun took {took:.1f} s"
    report(f"kill -9 mid-sync ({store.dialect}): the rerun finished in {took:.1f} s")
    assert_table_is_truth(sandbox, start, end)

    shown = cli(["history", "--json"], env)
    by_id = {r["id"]: r for r in json.loads(shown.stdout)["runs"]}
    assert by_id[killed.id]["status"] == "interrupted"
    assert "interrupted" in by_id[killed.id]["error"]
    assert by_id[killed.id]["finished_at"] is not None
    table = cli(["history"], env).stdout
    assert "interrupted" in table

    from adsync.bot.actions import Actions, Caller
    from adsync.bot.commands import parse

    actions = Actions(authorized)
    for text, word in (("history", "interrupted"), ("同步记录", "已中断")):
        card = json.dumps(
            actions.execute(parse(text, _yesterday()), Caller("ou_x", "oc_x")), ensure_ascii=False
        )
        assert word in card, card
    with store.connect() as conn:
        assert not conn.execute(select(leases).where(leases.c.holder.contains(mark))).all()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_provably_dead_holders_lose_their_leases(db_url: str) -> None:
    """Same host and pid gone, or the pid reused by a later process (another start time):
    taken over at once. Another host, or this live process: left to the TTL."""
    store = Store(db_url)
    ttl = timedelta(seconds=90)
    host = socket.gethostname()
    me = processes.actor()
    reused = f"{host}:{os.getpid()}@1.00"  # this pid, but a process started in 1970
    gone = f"{host}:{_dead_pid()}@{time.time():.2f}"
    remote = f"elsewhere.example:{os.getpid()}@1.00"
    assert processes.alive(me) is True
    assert processes.alive(reused) is False
    assert processes.alive(gone) is False
    assert processes.alive(remote) is None
    for name, holder in (("a", reused), ("b", gone), ("c", remote), ("d", f"{me}:other")):
        assert store.acquire_lease(name, f"{holder}:run1:1", ttl)
    assert store.acquire_lease("a", f"{me}:run2:1", ttl)
    assert store.acquire_lease("b", f"{me}:run2:1", ttl)
    assert not store.acquire_lease("c", f"{me}:run2:1", ttl)
    assert not store.acquire_lease("d", f"{me}:run2:1", ttl)
    store.dispose()


def test_recovery_marks_only_runs_whose_process_is_gone(db_url: str) -> None:
    from sqlalchemy import insert

    store = Store(db_url)
    host = socket.gethostname()
    now = datetime.now(ZoneInfo("UTC"))
    old = now - timedelta(minutes=10)
    day = date(2026, 2, 1)
    cases = {
        "dead here": (f"{host}:{_dead_pid()}@{time.time():.2f}", now),
        "alive here": (processes.actor(), old),
        "remote, lease lapsed": ("elsewhere.example:7@1.00", old),
        "remote, lease renewed": ("elsewhere.example:8@1.00", old),
        "remote, just started": ("elsewhere.example:9@1.00", now),
        "no holder recorded": (None, old),
    }
    ids: dict[str, int] = {}
    with store.begin() as conn:
        for label, (holder, started) in cases.items():
            ids[label] = conn.execute(
                insert(runs)
                .values(
                    started_at=started,
                    trigger="cli",
                    date_from=day,
                    date_to=day,
                    status="running",
                    holder=holder,
                )
                .returning(runs.c.id)
            ).scalar_one()
    renewed = ids["remote, lease renewed"]
    assert store.acquire_lease(f"run:{renewed}", "elsewhere.example:8@1.00:x", timedelta(60))
    done = recover_after_crash(store, strict=True)
    assert recover_after_crash(store, strict=True).interrupted == []  # twice is once
    with store.connect() as conn:
        status = dict(conn.execute(select(runs.c.id, runs.c.status)).all())
    got = {label: status[i] for label, i in ids.items()}
    assert got == {
        "dead here": "interrupted",
        "alive here": "running",
        "remote, lease lapsed": "interrupted",
        "remote, lease renewed": "running",
        "remote, just started": "running",
        "no holder recorded": "interrupted",
    }
    assert sorted(done.interrupted) == sorted(ids[k] for k, v in got.items() if v == "interrupted")
    store.dispose()
