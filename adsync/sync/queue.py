"""The durable command queue: every acknowledged chat event, in the database, until answered.

A job goes ``queued`` → ``running`` (claimed: a holder and a lease, renewed while it runs) →
``answered`` (the answer stored, *before* it is posted) → ``done``. A crash anywhere leaves a
row that says what is left: a ``running`` job whose holder died is queued again and run again
(every command is safe to repeat: syncs are upserts, replies carry a uuid derived from the
message); an ``answered`` one is only posted again, never re-run. "Finished" therefore means
*posted*, and the gap between posting and marking is covered by the platform's uuid, which
Feishu honours for an hour — so a job whose answer was stored is re-posted, never recomputed.

Order: jobs of one lane (a chat) start in the order they were said. A job waits for every
earlier job of its chat to be answered, except long ones (sync, verify) that have already
posted their "working on it" card and ``released`` the lane: reads never wait behind a sync,
and answers to quick commands keep their order. A long job may start (post its card, join a
run that covers it) behind a released one, but does its work only after it (``long_ahead``):
a chat's long jobs run one at a time.

Joining: a running job may publish a ``topic`` (what it does, e.g. the dates it syncs); a later
job doing the same ``join``s it and is answered with the leader's answer when it is stored —
one set of platform calls for every asker.

Jobs that keep failing (their process died under them, or posting the answer kept failing)
stop after ``MAX_ATTEMPTS`` and end ``failed``; the caller tells the chat. A delivery is stored
once: ``event_id`` and ``message_id`` are unique, and finished jobs are kept two days (Feishu
re-delivers for 7.1 h), so a retried delivery, a new event id for a known message, or a spool
drained twice finds its job and is skipped — across processes and restarts.

Nothing in here knows about chat: the payload and the answer are JSON for the caller.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Row

from adsync.sync import processes
from adsync.sync.store import Store, UTCDateTime, jobs, utcnow

log = logging.getLogger("adsync.queue")

QUEUED, RUNNING, JOINED, ANSWERED, DONE, FAILED = (
    "queued",
    "running",
    "joined",
    "answered",
    "done",
    "failed",
)
OPEN = (QUEUED, RUNNING, JOINED, ANSWERED)
QUICK, LONG = "quick", "long"

LEASE = timedelta(seconds=90)  # renewed every LEASE/6 while held; a dead holder's runs out
MAX_ATTEMPTS = 4  # runs of one job (a crash of its process counts) before it is given up
MAX_DELIVERIES = 10  # tries to post a stored answer (Feishu down) before it is given up
BACKOFF_S = (2, 10, 30, 60, 120, 300)  # before the next try, by attempts so far
KEEP_FINISHED = timedelta(days=2)  # also how long deliveries are recognised: > Feishu's 7.1 h
# A job due this long and still not taken means no worker is taking jobs (only `web` deployed,
# the worker crashed): a quick command is taken in well under a second by a live one.
STALLED_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class NewJob:
    """An acknowledged event, as the queue stores it."""

    kind: str
    lane: str
    seq: int  # ms when it was said: the order within its lane
    weight: str  # QUICK | LONG
    payload: dict[str, Any]
    event_id: str = ""
    message_id: str = ""


@dataclass(frozen=True)
class Backlog:
    """Jobs due and not taken: what says whether anything is answering the chat."""

    waiting: int
    oldest_due: datetime | None

    def age(self, now: datetime | None = None) -> timedelta:
        if self.oldest_due is None:
            return timedelta(0)
        return max((now or utcnow()) - self.oldest_due, timedelta(0))

    def stalled(self, now: datetime | None = None) -> bool:
        return self.waiting > 0 and self.age(now) >= STALLED_AFTER


@dataclass
class Job:
    id: int
    kind: str
    lane: str
    seq: int
    weight: str
    state: str
    attempts: int
    payload: dict[str, Any]
    event_id: str = ""
    message_id: str = ""
    released: bool = False
    working_id: str | None = None
    answer: dict[str, Any] | None = None
    leader_id: int | None = None
    topic: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Row[Any]) -> Job:
        return cls(
            id=row.id,
            kind=row.kind,
            lane=row.lane,
            seq=row.seq,
            weight=row.weight,
            state=row.state,
            attempts=row.attempts,
            payload=json.loads(row.payload or "{}"),
            event_id=row.event_id or "",
            message_id=row.message_id or "",
            released=bool(row.released),
            working_id=row.working_id,
            answer=json.loads(row.answer) if row.answer else None,
            leader_id=row.leader_id,
            topic=row.topic,
            error=row.error,
            created_at=row.created_at,
        )

    @property
    def exhausted(self) -> bool:
        """Claimed more often than a job may be: give it up instead of running it again."""
        limit = MAX_DELIVERIES if self.state == ANSWERED else MAX_ATTEMPTS
        return self.attempts > limit


# ON CONFLICT DO NOTHING (no target): either unique index, event id or message id, means
# "already stored". The same text on SQLite and PostgreSQL.
_INSERT = text(
    "INSERT INTO jobs (lane, seq, kind, weight, event_id, message_id, payload, state, "
    "released, attempts, not_before, created_at, updated_at) VALUES (:lane, :seq, :kind, "
    f":weight, :event_id, :message_id, :payload, '{QUEUED}', :released, 0, :now, :now, :now) "
    "ON CONFLICT DO NOTHING"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("released", value=False))


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=BACKOFF_S[min(max(attempts - 1, 0), len(BACKOFF_S) - 1)])


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


class JobQueue:
    """The queue, as one process sees it: every claim it makes is held as ``holder``."""

    def __init__(self, store: Store, holder: str | None = None, lease: timedelta = LEASE) -> None:
        self.store = store
        self.holder = holder or f"{processes.actor()}:queue"
        self.lease = lease
        # The jobs this object holds: only these are renewed. A claim whose commit landed but
        # whose answer was lost is held without our knowing; its lease runs out and it is freed.
        self._held: set[int] = set()
        self._held_lock = threading.Lock()

    def _hold(self, job_id: int, held: bool) -> None:
        with self._held_lock:
            if held:
                self._held.add(job_id)
            else:
                self._held.discard(job_id)

    @property
    def held(self) -> set[int]:
        with self._held_lock:
            return set(self._held)

    def _read(self, query: Any) -> list[Any]:
        """Rows of ``query``, retried on a lost connection within the store's bound."""
        return self.store.read(lambda conn: conn.execute(query).all())

    def _write(self, statement: Any) -> int:
        """Run one conditional write; rows changed. Every write here is conditional on the
        row's holder or state, so running it again after a commit whose answer was lost
        changes nothing (``idempotent``)."""
        return int(
            self.store.transact(lambda conn: conn.execute(statement).rowcount, idempotent=True) or 0
        )

    # -- in ------------------------------------------------------------------------------------

    def enqueue(self, new: Sequence[NewJob]) -> int:
        """Store ``new`` in one transaction; a delivery already stored (by its event id or its
        message id: the platform's retry, a new event id for a known message, a spool drained
        twice) is skipped. Returns how many were stored.

        One prepared statement run for every job (``executemany``): building an ``insert()``
        per row cost SQLAlchemy ~0.5 ms a job, on the interpreter that acknowledges."""
        if not new:
            return 0
        now = utcnow()
        rows = [
            {
                "lane": job.lane,
                "seq": job.seq,
                "kind": job.kind,
                "weight": job.weight,
                "event_id": job.event_id[:100] or None,
                "message_id": job.message_id[:100] or None,
                "payload": _dump(job.payload),
                "now": now,
            }
            for job in new
        ]
        # A rerun after a lost commit inserts nothing new (ON CONFLICT DO NOTHING).
        return int(
            self.store.transact(lambda conn: conn.execute(_INSERT, rows).rowcount, idempotent=True)
            or 0
        )

    # -- claiming ------------------------------------------------------------------------------

    def claim(self, weights: Sequence[str] = (QUICK, LONG)) -> Job | None:
        """The next job this process may take, held as ours: a queued job whose chat has
        nothing ahead of it (see the module docstring), or a stored answer waiting to be
        posted. None when there is nothing to do. The search is a plain read (no write lock);
        only the take is a write, and the first taker wins."""
        if not weights:
            return None
        now = utcnow()
        j, k = jobs.alias("j"), jobs.alias("k")
        earlier = or_(k.c.seq < j.c.seq, and_(k.c.seq == j.c.seq, k.c.id < j.c.id))
        in_the_way = or_(
            k.c.state == QUEUED,
            and_(k.c.state.in_((RUNNING, ANSWERED)), k.c.released == false()),
        )
        blocked = exists().where(k.c.lane == j.c.lane, earlier, in_the_way)
        runnable = and_(
            j.c.state == QUEUED,
            j.c.holder.is_(None),
            j.c.not_before <= now,
            j.c.weight.in_(list(weights)),
            ~blocked,
        )
        to_post = and_(j.c.state == ANSWERED, j.c.holder.is_(None), j.c.not_before <= now)
        query = (
            select(j.c.id, j.c.state)
            .where(or_(runnable, to_post))
            .order_by(j.c.seq, j.c.id)
            .limit(8)
        )
        for candidate in self._read(query):
            taken = self._write(
                update(jobs)
                .where(
                    jobs.c.id == candidate.id,
                    jobs.c.state == candidate.state,
                    jobs.c.holder.is_(None),
                )
                .values(
                    state=RUNNING if candidate.state == QUEUED else ANSWERED,
                    holder=self.holder,
                    lease_until=now + self.lease,
                    attempts=jobs.c.attempts + 1,
                    updated_at=now,
                )
            )
            if taken:
                self._hold(candidate.id, True)
                return self.get(candidate.id)
        return None

    def get(self, job_id: int) -> Job | None:
        rows = self._read(select(jobs).where(jobs.c.id == job_id))
        return Job.from_row(rows[0]) if rows else None

    def renew(self) -> int:
        """Heartbeat: extend the lease of every job this object holds."""
        held = self.held
        if not held:
            return 0
        return self._write(
            update(jobs)
            .where(jobs.c.id.in_(held), jobs.c.holder == self.holder)
            .values(lease_until=utcnow() + self.lease)
        )

    def recover(self) -> int:
        """Free what dead holders left: a job whose holder is provably dead (same host, pid
        gone) at once, any other when its lease has run out; joined jobs whose leader can no
        longer answer them get its answer or run themselves. Returns the jobs freed."""
        now = utcnow()
        taken = self._read(
            select(jobs.c.id, jobs.c.holder, jobs.c.state, jobs.c.lease_until).where(
                jobs.c.state.in_((RUNNING, ANSWERED)), jobs.c.holder.is_not(None)
            )
        )
        held = self.held
        freed = 0
        for row in taken:
            if row.holder == self.holder and row.id in held:
                continue
            expired = row.lease_until is None or row.lease_until < now
            if not expired and processes.alive(row.holder) is not False:
                continue
            freed += self._write(
                update(jobs)
                .where(jobs.c.id == row.id, jobs.c.holder == row.holder)
                .values(
                    state=QUEUED if row.state == RUNNING else ANSWERED,
                    holder=None,
                    lease_until=None,
                    not_before=now,
                    error="the process running it stopped",
                    updated_at=now,
                )
            )
            log.warning("job %s was held by %s, which stopped: freed", row.id, row.holder)
        return freed + self._orphans(now)

    def _orphans(self, now: datetime) -> int:
        """Joined jobs whose leader is finished without answering them (it was given up, or it
        joined another run itself after a restart): its answer if it has one, else run."""
        leader = jobs.alias("leader")
        rows = self._read(
            select(jobs.c.id, leader.c.answer, leader.c.state)
            .select_from(jobs.outerjoin(leader, leader.c.id == jobs.c.leader_id))
            .where(
                jobs.c.state == JOINED,
                or_(leader.c.id.is_(None), leader.c.state.in_((ANSWERED, DONE, FAILED))),
            )
        )
        for row in rows:
            values: dict[str, Any] = {"holder": None, "not_before": now, "updated_at": now}
            if row.answer:
                values.update(state=ANSWERED, answer=row.answer)
            else:
                values.update(state=QUEUED, leader_id=None)
            self._write(
                update(jobs).where(jobs.c.id == row.id, jobs.c.state == JOINED).values(values)
            )
        return len(rows)

    # -- while running -------------------------------------------------------------------------

    def release(self, job: Job, working_id: str | None) -> bool:
        """A long job posted its "working on it" card: later quick commands may go ahead."""
        job.released, job.working_id = True, working_id
        return self._update_mine(job, released=True, working_id=working_id)

    def publish(self, job: Job, topic: str) -> bool:
        """Say what this running job does, for others to join."""
        job.topic = topic
        return self._update_mine(job, topic=topic[:200])

    def long_ahead(self, job: Job) -> bool:
        """Is an earlier long job of this chat still unfinished? A long job starts (and may
        join a run) once the ones before it released the chat, but does its work only after
        them: a chat's syncs and verifies run one at a time, in order."""
        query = select(jobs.c.id).where(
            jobs.c.lane == job.lane,
            jobs.c.weight == LONG,
            jobs.c.state.in_((QUEUED, RUNNING, ANSWERED)),
            or_(jobs.c.seq < job.seq, and_(jobs.c.seq == job.seq, jobs.c.id < job.id)),
        )
        return bool(self._read(query.limit(1)))

    def running_topics(self, prefix: str) -> list[tuple[int, str]]:
        rows = self._read(
            select(jobs.c.id, jobs.c.topic).where(
                jobs.c.state == RUNNING, jobs.c.topic.like(f"{prefix}%")
            )
        )
        return [(r.id, r.topic) for r in rows]

    def join(self, job: Job, leader_id: int, working_id: str | None) -> bool:
        """Wait for ``leader_id``'s answer instead of running. False if the leader is no
        longer running (it finished a moment ago: run yourself). The leader's row is locked
        while we look, so its answer cannot be stored between our look and our join."""
        now = utcnow()
        if leader_id == job.id:
            return False

        def join(conn: Connection) -> int:
            leader = conn.execute(
                select(jobs.c.state).where(jobs.c.id == leader_id).with_for_update()
            ).first()
            if leader is None or leader.state != RUNNING:
                return 0
            return int(
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job.id, jobs.c.holder == self.holder)
                    .values(
                        state=JOINED,
                        leader_id=leader_id,
                        holder=None,
                        lease_until=None,
                        released=True,
                        working_id=working_id,
                        updated_at=now,
                    )
                ).rowcount
            )

        # Not rerun after a lost commit: the join may have landed (then this job is the
        # leader's, and whatever this process does with it next is refused by its holder).
        joined = self.store.transact(join, exclusive=True)
        if joined:
            job.state, job.leader_id = JOINED, leader_id
            self._hold(job.id, False)
        return bool(joined)

    def answer(
        self,
        job: Job,
        answer: dict[str, Any],
        for_follower: Callable[[Job], dict[str, Any]] | None = None,
    ) -> bool:
        """Store the answer (before it is posted). Jobs that joined this one get theirs in the
        same transaction (``for_follower(job)``, default the same). False if the job is no
        longer ours (its lease ran out and someone else took it)."""
        now = utcnow()

        def store(conn: Connection) -> bool:
            stored = conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.holder == self.holder, jobs.c.state == RUNNING)
                .values(state=ANSWERED, answer=_dump(answer), updated_at=now)
            ).rowcount
            if not stored:
                return False
            followers = conn.execute(
                select(jobs).where(jobs.c.leader_id == job.id, jobs.c.state == JOINED)
            ).all()
            for row in followers:
                follower = Job.from_row(row)
                theirs = for_follower(follower) if for_follower else answer
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == follower.id, jobs.c.state == JOINED)
                    .values(
                        state=ANSWERED,
                        answer=_dump(theirs),
                        holder=None,
                        not_before=now,
                        updated_at=now,
                    )
                )
            return True

        # Exclusive: a follower joining locks this row (join), so none can join between our
        # answer and our look for followers. Not rerun after a lost commit (it may have landed;
        # then the job is answered and ours, and its lease running out frees it for posting).
        if not self.store.transact(store, exclusive=True):
            self._hold(job.id, False)
            return False
        job.state, job.answer = ANSWERED, answer
        return True

    def done(self, job: Job) -> bool:
        now = utcnow()
        job.state = DONE
        mine = self._update_mine(
            job, state=DONE, holder=None, lease_until=None, finished_at=now, error=None
        )
        self._hold(job.id, False)
        return mine

    def retry_later(self, job: Job, error: str) -> bool:
        """Let go of ``job`` after a failure; it is tried again after a backoff: run again if
        it had no answer yet, posted again if it had (as the database says: an answer whose
        commit landed without our knowing is not thrown away)."""
        mine = self._update_mine(
            job,
            state=case((jobs.c.state == ANSWERED, ANSWERED), else_=QUEUED),
            holder=None,
            lease_until=None,
            not_before=utcnow() + backoff(job.attempts),
            error=error[:500],
        )
        self._hold(job.id, False)
        return mine

    def give_up(self, job: Job, error: str) -> bool:
        """``job`` failed for good. Jobs waiting on it run themselves."""
        now = utcnow()

        def fail(conn: Connection) -> bool:
            mine = conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.holder == self.holder)
                .values(
                    state=FAILED,
                    holder=None,
                    lease_until=None,
                    finished_at=now,
                    error=error[:500],
                    updated_at=now,
                )
            ).rowcount
            if mine:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.leader_id == job.id, jobs.c.state == JOINED)
                    .values(state=QUEUED, leader_id=None, not_before=now, updated_at=now)
                )
            return bool(mine)

        mine = self.store.transact(fail, idempotent=True)
        job.state = FAILED
        self._hold(job.id, False)
        return mine

    def let_go(self) -> int:
        """On a clean shutdown: everything this process holds goes back for others at once."""
        now = utcnow()
        n = self._write(
            update(jobs)
            .where(jobs.c.holder == self.holder, jobs.c.state == RUNNING)
            .values(state=QUEUED, holder=None, lease_until=None, not_before=now)
        )
        n += self._write(
            update(jobs)
            .where(jobs.c.holder == self.holder, jobs.c.state == ANSWERED)
            .values(holder=None, lease_until=None, not_before=now)
        )
        with self._held_lock:
            self._held.clear()
        return n

    def _update_mine(self, job: Job, **values: Any) -> bool:
        values.setdefault("updated_at", utcnow())
        return bool(
            self._write(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.holder == self.holder)
                .values(**values)
            )
        )

    # -- looking -------------------------------------------------------------------------------

    def open_count(self) -> int:
        """Jobs not finished: queued, running, waiting on another, or answered but not posted."""
        rows = self._read(select(func.count()).select_from(jobs).where(jobs.c.state.in_(OPEN)))
        return int(rows[0][0] or 0)

    def backlog(self) -> Backlog:
        """Queued jobs that are due (not waiting out a backoff), and the oldest one's due time."""
        rows = self._read(
            select(func.count(), func.min(jobs.c.not_before)).where(
                jobs.c.state == QUEUED, jobs.c.not_before <= utcnow()
            )
        )
        waiting, oldest = rows[0]
        if isinstance(oldest, str):  # SQLite returns the aggregate as text, not a datetime
            oldest = datetime.fromisoformat(oldest)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return Backlog(int(waiting or 0), oldest)

    def purge(self, keep: timedelta = KEEP_FINISHED) -> int:
        return self._write(
            delete(jobs).where(
                jobs.c.state.in_((DONE, FAILED)), jobs.c.finished_at < utcnow() - keep
            )
        )


__all__ = [
    "ANSWERED",
    "Backlog",
    "DONE",
    "FAILED",
    "JOINED",
    "LONG",
    "QUEUED",
    "QUICK",
    "RUNNING",
    "Job",
    "JobQueue",
    "NewJob",
]
