"""The durable command queue on both backends, and the spool the acknowledgement writes to.

The queue's rules, each as the incident it prevents: a re-delivered event stored twice; a
read answered before the command typed ahead of it, or stuck behind a sync; two syncs of one
chat at once; a job held for good by a process that died; a joined sync never answered; a job
that keeps failing retried forever. The spool: an acknowledged event lost with its process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from adsync.bot.spool import AckGate, Mover, Spool
from adsync.sync.queue import (
    ANSWERED,
    DONE,
    FAILED,
    JOINED,
    LONG,
    MAX_ATTEMPTS,
    QUEUED,
    QUICK,
    RUNNING,
    JobQueue,
    NewJob,
)
from adsync.sync.store import Store, jobs, utcnow

_seq = iter(range(1_000_000, 10_000_000))


def job(lane: str, weight: str = QUICK, text: str = "token status", **kw: Any) -> NewJob:
    n = next(_seq)
    return NewJob(
        kind="message",
        lane=lane,
        seq=kw.pop("seq", n),
        weight=weight,
        payload={"text": text},
        event_id=kw.pop("event_id", f"ev_{n}"),
        message_id=kw.pop("message_id", f"om_{n}"),
    )


def put(queue: JobQueue, *new: NewJob) -> list[int]:
    """Store ``new`` (all of it, none a duplicate) and return their ids, in order."""
    assert queue.enqueue(list(new)) == len(new)
    with queue.store.engine.connect() as conn:
        ids = dict(
            conn.execute(
                select(jobs.c.event_id, jobs.c.id).where(
                    jobs.c.event_id.in_([n.event_id for n in new])
                )
            ).all()
        )
    return [ids[n.event_id] for n in new]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.dispose()


def state_of(store: Store, job_id: int) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).scalar())


def test_a_redelivered_event_or_message_is_stored_once_across_processes(store: Store) -> None:
    first, second = JobQueue(store, "host:1"), JobQueue(Store(store.engine.url), "host:2")
    a = job("oc_a", event_id="ev_1", message_id="om_1")
    assert first.enqueue([a]) == 1
    assert second.enqueue([a]) == 0  # the platform's retry, through another process
    again = job("oc_a", event_id="ev_other", message_id="om_1")  # a new event id, same message
    card = NewJob("card_action", "oc_a", 1, QUICK, {}, event_id="ev_1")  # a known event id
    fresh = job("oc_a")
    assert second.enqueue([again, card, fresh]) == 1  # only the fresh one
    assert first.open_count() == 2
    second.store.dispose()


def test_a_chats_reads_answer_in_order_and_never_wait_behind_a_running_sync(
    store: Store,
) -> None:
    queue = JobQueue(store, "host:1")
    read1, sync1, read2, sync2, read3 = put(
        queue,
        job("oc_a"),
        job("oc_a", LONG, "sync yesterday"),
        job("oc_a"),
        job("oc_a", LONG, "verify"),
        job("oc_a"),
    )
    [other] = put(queue, job("oc_b"))
    first = queue.claim()
    assert first is not None and first.id == read1
    # Nothing else of oc_a may start while read1 is unanswered; oc_b goes on.
    nxt = queue.claim()
    assert nxt is not None and nxt.id == other
    assert queue.claim() is None
    assert queue.answer(first, {"card": {}}) and queue.claim() is None  # stored, not yet posted
    queue.done(first)
    sync = queue.claim()
    assert sync is not None and sync.id == sync1
    assert queue.claim() is None  # the sync has not posted its "working on it" card yet
    queue.release(sync, "om_working")
    read = queue.claim()
    assert read is not None and read.id == read2, "a read goes past a running sync"
    queue.done(read)
    # The verify may start (post its card, or join a run) behind the released sync, but does
    # its work only after it: a chat's long jobs run one at a time.
    verify = queue.claim()
    assert verify is not None and verify.id == sync2
    assert queue.long_ahead(verify)
    assert queue.claim() is None  # read3 waits for the verify's card
    queue.release(verify, "om_working2")
    last = queue.claim()
    assert last is not None and last.id == read3
    assert queue.answer(sync, {"card": {"sync": 1}})
    assert queue.long_ahead(verify)  # the sync's answer is stored, not posted: still ahead
    queue.done(sync)
    assert not queue.long_ahead(verify)


def test_a_job_held_by_a_dead_process_is_taken_over_at_once_a_live_ones_is_not(
    store: Store,
) -> None:
    import socket

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_holder = f"{socket.gethostname()}:{int(dead.stdout)}:queue"
    crashed = JobQueue(store, dead_holder)
    elsewhere = JobQueue(store, "another-host:4242:queue")  # cannot be seen: its lease decides
    mine = JobQueue(store)
    ids = put(crashed, job("oc_a"), job("oc_b"))
    a = crashed.claim()
    b = elsewhere.claim()
    assert a is not None and b is not None and {a.id, b.id} == set(ids)
    assert mine.recover() == 1  # the dead holder's job, at once (not after the 90 s lease)
    taken = mine.claim()
    assert taken is not None and taken.id == a.id and taken.attempts == 2
    assert mine.claim() is None  # the live (unknown) holder keeps its job until its lease ends
    with store.begin() as conn:
        conn.execute(
            update(jobs).where(jobs.c.id == b.id).values(lease_until=utcnow() - timedelta(1))
        )
    assert mine.recover() == 1
    late = mine.claim()
    assert late is not None and late.id == b.id
    # The freed owner's late answer is refused (it is no longer theirs).
    assert not elsewhere.answer(b, {"card": {}})
    assert mine.answer(late, {"card": {"late": True}}) and state_of(store, b.id) == ANSWERED


def test_a_job_that_keeps_dying_is_given_up_and_the_next_in_its_chat_runs(store: Store) -> None:
    import socket

    queue = JobQueue(store)
    first, second = put(queue, job("oc_a"), job("oc_a"))
    for _ in range(MAX_ATTEMPTS + 1):
        taken = queue.claim()
        assert taken is not None and taken.id == first
        # Its process dies under it every time (a holder on this host whose pid is gone).
        with store.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == first)
                .values(holder=f"{socket.gethostname()}:999999999:queue")
            )
        queue._hold(first, False)
        assert queue.recover() == 1
    taken = queue.claim()
    assert taken is not None and taken.exhausted
    assert queue.give_up(taken, "the process running it stopped")
    assert state_of(store, first) == FAILED
    nxt = queue.claim()
    assert nxt is not None and nxt.id == second


def test_a_sync_that_joined_a_running_one_gets_its_answer_or_runs_itself(store: Store) -> None:
    queue = JobQueue(store)
    lead_id, follow_id, late_id = put(
        queue, job("oc_a", LONG, "sync"), job("oc_b", LONG, "sync"), job("oc_c", LONG, "sync")
    )
    leader = queue.claim()
    follower = queue.claim()
    assert leader is not None and follower is not None and leader.id == lead_id
    queue.release(leader, "om_w1")
    assert queue.publish(leader, "sync|2026-02-01|2026-02-07|*")
    assert queue.running_topics("sync|") == [(lead_id, "sync|2026-02-01|2026-02-07|*")]
    assert queue.join(follower, lead_id, "om_w2") and state_of(store, follow_id) == JOINED
    assert queue.answer(leader, {"card": "en"}, lambda f: {"card": f"for {f.lane}"})
    assert state_of(store, follow_id) == ANSWERED
    posted = queue.claim()  # the follower's answer, ready to post
    assert posted is not None and posted.id == follow_id and posted.answer == {"card": "for oc_b"}
    queue.done(posted)
    queue.done(leader)
    # A sync that looks a moment after the leader finished runs itself.
    late = queue.claim()
    assert late is not None and late.id == late_id
    assert not queue.join(late, lead_id, None) and state_of(store, late_id) == RUNNING
    # A leader given up sends its followers back to run themselves.
    queue.publish(late, "sync|2026-02-01|2026-02-07|*")
    [waiting] = put(queue, job("oc_d", LONG, "sync"))
    follower2 = queue.claim()
    assert follower2 is not None and follower2.id == waiting
    assert queue.join(follower2, late_id, None)
    assert queue.give_up(late, "kept failing")
    assert state_of(store, waiting) == QUEUED
    again = queue.claim()
    assert again is not None and again.id == waiting


def test_a_stored_answer_is_posted_again_never_recomputed(store: Store) -> None:
    queue = JobQueue(store)
    [job_id] = put(queue, job("oc_a"))
    taken = queue.claim()
    assert taken is not None and queue.answer(taken, {"card": {"n": 1}})
    assert queue.retry_later(taken, "Feishu did not answer")  # posting failed
    assert queue.claim() is None  # not before its backoff
    with store.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(not_before=utcnow()))
    again = queue.claim()
    assert again is not None and again.state == ANSWERED and again.answer == {"card": {"n": 1}}
    assert queue.done(again) and state_of(store, job_id) == DONE
    assert queue.open_count() == 0


# -- the spool --------------------------------------------------------------------------------


def test_the_spool_is_owner_only_and_survives_its_process(tmp_path: Path) -> None:
    """A process acknowledges (appends) events and is killed -9 before anything moved them:
    another process finds its file, moves every complete line, drops a torn last one, and
    deletes the file."""
    directory = tmp_path / "spool"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from adsync.bot.spool import Spool\n"
            f"spool = Spool(Path({str(directory)!r}))\n"
            "for i in range(50):\n"
            "    spool.append({'n': i, 'text': '同步 昨天'})\n"
            "import os\n"
            'os.write(spool._segment.fd, b\'{"n": 50, "torn\')\n'  # dies mid-write
            "print('acknowledged', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "acknowledged"
        spool = Spool(directory)
        files = spool.orphans()
        assert len(files) == 1
        assert oct(directory.stat().st_mode & 0o777) == "0o700"
        assert oct(files[0].stat().st_mode & 0o777) == "0o600"
        moved: list[dict[str, Any]] = []
        assert spool.drain_orphan(files[0], moved.extend) == 0  # its writer is alive
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        assert spool.drain_orphan(files[0], moved.extend) == 50
        assert [r["n"] for r in moved] == list(range(50))
        assert moved[0]["text"] == "同步 昨天"
        assert not files[0].exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_a_spool_that_could_not_be_moved_keeps_its_lines_until_it_can(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", segment_bytes=200)
    failing = [True]
    moved: list[int] = []

    def deliver(records: list[dict[str, Any]]) -> None:
        if failing[0]:
            raise OSError("the database is locked")
        moved.extend(r["n"] for r in records)

    mover = Mover(spool, deliver).start()
    try:
        for i in range(20):
            spool.append({"n": i})
        time.sleep(0.3)
        assert moved == [] and spool.backlog() > 0 and mover.failures >= 1
        failing[0] = False
        deadline = time.monotonic() + 10
        while len(moved) < 20:
            assert time.monotonic() < deadline, moved
            time.sleep(0.02)
        assert moved == list(range(20)) and spool.backlog() == 0
        spool.append({"n": 20})  # the full file was replaced by a new one
        deadline = time.monotonic() + 10
        while len(moved) < 21:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert len(list((tmp_path / "spool").glob("*.spool"))) == 1
    finally:
        mover.stop()
        spool.close()


def test_the_mover_waits_for_acknowledgements_in_flight(tmp_path: Path) -> None:
    """Under a burst, acknowledgements (3 s deadline) go before moving events into the
    database (no deadline); the cap keeps the mover going when requests never pause."""
    spool = Spool(tmp_path / "spool")
    got = threading.Event()
    gate = AckGate(cap=30.0)
    mover = Mover(spool, lambda _records: got.set(), before_move=gate.wait).start()
    try:
        with gate.acknowledging():
            spool.append({"n": 1})
            assert not got.wait(0.3)
        assert got.wait(10), "moved once the acknowledgement is out"
    finally:
        mover.stop()
    capped = AckGate(cap=0.2)
    ran = threading.Event()
    mover = Mover(spool, lambda _records: ran.set(), before_move=capped.wait).start()
    try:
        with capped.acknowledging():
            spool.append({"n": 2})
            assert ran.wait(10), "a request that never ends does not hold the mover for good"
    finally:
        mover.stop()
        spool.close()


def test_spool_lines_are_json_one_per_event(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append({"kind": "message", "text": "a\nb"})
    spool.append({"kind": "message", "text": "c"})
    segment = next((tmp_path / "spool").glob("*.spool"))
    lines = segment.read_bytes().splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["a\nb", "c"]
    spool.close()
