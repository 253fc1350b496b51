"""Running queued jobs in one process: ``adsync worker``, the worker ``adsync serve`` starts, or
a test's own.

One thread claims jobs from the database queue (``adsync.sync.queue``) and hands them to a pool
of ``threads``; a long command's slow part (the sync itself, a verify) moves on to a pool of
its own (``long_threads``) once its "working on it" card is out, so reads are never stuck
behind syncs. A second thread keeps the leases of held jobs alive (a dead process's run out),
frees jobs whose holder died (at once when it was on this host), and purges finished jobs.

Claiming polls the database every ``poll`` seconds (0.1: an answer within the 1 s a read is
allowed, at one cheap indexed read per tick); a job stored by this process wakes it at once.
Several processes may run this against one database: the queue decides who takes what.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from adsync.bot.worker import Bot, _describe
from adsync.sync.queue import LONG, QUICK, Job

log = logging.getLogger("adsync.dispatch")

RECOVER_EVERY_S = 2.0
PURGE_EVERY_S = 3600.0
LONG_SPARE = 2  # long jobs claimed beyond the long pool's threads (their "working" card first)


class Dispatcher:
    def __init__(
        self, bot: Bot, *, threads: int = 8, long_threads: int = 4, poll: float = 0.1
    ) -> None:
        assert bot.queue is not None
        self.bot = bot
        self.queue = bot.queue
        self.threads = threads
        self.long_threads = long_threads
        self.poll = poll
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="job")
        self._long_pool = ThreadPoolExecutor(long_threads, thread_name_prefix="long-job")
        self._state = threading.Condition()
        self._busy = 0  # jobs in the pool
        self._long = 0  # slow parts submitted to the long pool, not finished
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> Dispatcher:
        self._recover()  # a restart picks up what the previous process left, before anything
        for target, name in ((self._claim_loop, "job-claim"), (self._keeper, "job-keeper")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop claiming, give running jobs up to ``timeout`` to finish, hand back the rest
        (another worker takes them at once). True if nothing was left running."""
        self._stop.set()
        self.bot.queued.set()
        finished = self._wait_local(timeout)
        try:
            handed = self.queue.let_go()
            if handed:
                log.warning("%d unfinished jobs handed back to the queue", handed)
        except Exception as exc:  # noqa: BLE001 - their leases run out instead
            log.error("could not hand back unfinished jobs: %s", _describe(exc))
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._long_pool.shutdown(wait=False, cancel_futures=True)
        return finished

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- claiming ------------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            with self._state:
                while self._busy >= self.threads and not self._stop.is_set():
                    self._state.wait(self.poll)
                long_ok = self._long < self.long_threads + LONG_SPARE
            if self._stop.is_set():
                break
            self.bot.queued.clear()
            try:
                job = self.queue.claim((QUICK, LONG) if long_ok else (QUICK,))
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the database comes back; jobs wait
                failures += 1
                pause = min(0.2 * 2 ** min(failures, 3), 1.0)  # after the store's own wait
                log.warning("could not claim a job (again in %.1f s): %s", pause, _describe(exc))
                self._stop.wait(pause)
                continue
            if job is None:
                self.bot.queued.wait(self.poll)
                continue
            with self._state:
                self._busy += 1
            self._pool.submit(self._run, job)

    def _run(self, job: Job) -> None:
        rest = None
        try:
            rest = self.bot.run_job(job)
        except Exception:  # noqa: BLE001 - run_job handles its own; this is a bug
            log.exception("job %s", job.id)
        finally:
            with self._state:
                if rest is not None:
                    self._long += 1
                self._busy -= 1
                self._state.notify_all()
            self.bot.queued.set()  # its chat's next command may go now: look at once
        if rest is not None:
            self._long_pool.submit(self._run_long, job, rest)

    def _run_long(self, job: Job, rest: object) -> None:
        try:
            rest()  # type: ignore[operator]
        except Exception:  # noqa: BLE001
            log.exception("job %s", job.id)
        finally:
            with self._state:
                self._long -= 1
                self._state.notify_all()
            self.bot.queued.set()

    # -- keeping leases, freeing the dead ------------------------------------------------------

    def _keeper(self) -> None:
        renew_every = self.queue.lease.total_seconds() / 6
        next_renew = time.monotonic() + renew_every
        next_recover = time.monotonic() + RECOVER_EVERY_S
        next_purge = time.monotonic() + 60.0
        while not self._stop.wait(0.5):
            now = time.monotonic()
            try:
                if now >= next_renew:
                    next_renew = now + renew_every
                    self.queue.renew()
                if now >= next_recover:
                    next_recover = now + RECOVER_EVERY_S
                    self._recover()
                if now >= next_purge:
                    next_purge = now + PURGE_EVERY_S
                    self.queue.purge()
                    self.bot.store.purge_expired()
            except Exception as exc:  # noqa: BLE001 - next tick
                log.warning("queue upkeep failed: %s", _describe(exc))

    def _recover(self) -> None:
        try:
            if self.queue.recover():
                self.bot.queued.set()
        except Exception as exc:  # noqa: BLE001 - next tick
            log.warning("could not look for abandoned jobs: %s", _describe(exc))

    # -- waiting (tests, shutdown) -------------------------------------------------------------

    def _wait_local(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._state:
            while self._busy or self._long:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._state.wait(left)
        return True

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Until nothing is spooled, queued, running or waiting to be posted (tests)."""
        deadline = time.monotonic() + timeout
        spool = self.bot.spool
        while time.monotonic() < deadline:
            spooled = spool.backlog() if spool is not None else 0
            if not spooled and not self._busy and not self._long:
                try:
                    if self.queue.open_count() == 0:
                        return True
                except Exception:  # noqa: BLE001 - the database cannot say: not idle
                    return False
            time.sleep(0.02)
        return False
