"""`adsync serve` (gunicorn + the app, and a worker process with the scheduler unless
--no-clock), `adsync worker` (queued commands), `adsync clock` and `adsync chat` (the console)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from adsync.cli.context import Context

log = logging.getLogger("adsync.serve")


def chat(ctx: Context) -> int:
    from adsync.bot.actions import Actions
    from adsync.bot.console import Console
    from adsync.sync.recovery import recover_after_crash

    recover_after_crash(ctx.services.store)  # runs and leases a killed predecessor left behind
    console = Console(Actions(ctx.services), ctx.out)
    return console.run(sys.stdin, interactive=sys.stdin.isatty())


def serve(ctx: Context) -> int:
    from gunicorn.app.base import BaseApplication

    from adsync.bot.gate import webhook_key_problem

    settings = ctx.settings
    settings.require("FEISHU_APP_ID", "FEISHU_APP_SECRET")
    port = ctx.args.port or settings.port
    use_ws = bool(ctx.args.ws)
    if not use_ws:
        problem = webhook_key_problem(settings)
        if problem is not None:  # an open webhook would run anyone's events
            raise problem
    # The commands run in a process of their own, not on the interpreter that acknowledges:
    # they share no GIL with the 3-second answers (one in three bursts of 100 a second had a
    # 190 ms p99 while commands ran beside them). It also runs the scheduler.
    child = ChildWorker(
        [sys.executable, "-m", "adsync", "worker", "--parent", str(os.getpid())]
        + ([] if ctx.args.no_clock else ["--clock"])
        + (["--verbose"] if ctx.args.verbose else [])
    )

    class AdsyncServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            from adsync.bot import gunicorn_conf

            # The Procfile's settings (one place), then what this command line decides.
            for name, value in gunicorn_conf.settings().items():
                self.cfg.set(name, value)
            self.cfg.set("bind", f"0.0.0.0:{port}")
            # One web process with threads (gunicorn_conf): it only acknowledges (spool) and
            # moves events into the database queue; the worker process answers them.
            self.cfg.set("workers", ctx.args.workers)
            self.cfg.set("post_worker_init", _start_background(use_ws))
            self.cfg.set("when_ready", child.start)
            self.cfg.set("on_exit", child.stop)

        def load(self) -> Any:
            from adsync.bot.app import create_app

            return create_app(settings, webhook=not use_ws)

    AdsyncServer().run()
    return 0


class ChildWorker:
    """``adsync worker`` as a child of serve's gunicorn master: started when the master is
    ready, started again (after a pause) if it dies, stopped (SIGTERM, then its grace) when the
    master exits. It watches the master too (``--parent``) and leaves if the master is killed."""

    def __init__(self, argv: list[str], grace: float = 30.0) -> None:
        self.argv = argv
        self.grace = grace
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def start(self, _server: Any = None) -> None:
        threading.Thread(target=self._supervise, name="worker-child", daemon=True).start()

    def _supervise(self) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    return
                # A session of its own: where the kernel shares the CPU between sessions
                # (Linux autogroup, on by default), the web process keeps its whole share
                # instead of splitting it with the commands. It leaves with the master all
                # the same (--parent), and SIGTERM from on_exit stops it.
                self._proc = subprocess.Popen(self.argv, start_new_session=True)
            # gunicorn's master reaps every child it is signalled about; Popen.wait then sees
            # no status (and says 0), so the exit code is not to be trusted here.
            self._proc.wait()
            if self._stopping.is_set():
                return
            log.error("the worker process stopped; starting it again in %.0f s", pause)
            self._stopping.wait(pause)
            pause = min(pause * 2, 30.0)

    def stop(self, _server: Any = None) -> None:
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _start_background(use_ws: bool) -> Any:
    def post_worker_init(worker: Any) -> None:
        app = worker.wsgi
        bot = app.extensions["adsync_bot"]
        if use_ws:
            from adsync.bot.ws import LongConnection

            LongConnection(bot.actions.settings, bot).start()

    return post_worker_init


def worker(ctx: Context) -> int:
    """Run queued commands until SIGTERM (or, under serve, until the master is gone)."""
    from adsync.bot.app import build_bot, stop_bot
    from adsync.bot.dispatch import Dispatcher

    settings = ctx.settings
    settings.require("FEISHU_APP_ID", "FEISHU_APP_SECRET")
    if ctx.args.nice > 0:
        # Commands have no deadline; acknowledgements have 3 s. Where both share a machine
        # (adsync serve, or web and worker on one host) the web process gets the CPU first.
        os.nice(ctx.args.nice)
    bot = build_bot(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Files that stopped web processes on this host left behind; this process acknowledges
    # nothing itself.
    bot.start_mover(own=False)
    dispatcher = Dispatcher(bot, threads=max(2, ctx.args.threads)).start()
    scheduler = None
    if ctx.args.clock:
        from adsync.bot.clock import start_background_clock

        scheduler = start_background_clock(bot)
    log.info("worker started (%d threads%s)", ctx.args.threads, ", clock" if scheduler else "")
    parent = ctx.args.parent
    while not stop.wait(1.0):
        if parent and os.getppid() != parent:
            log.error("adsync serve (pid %d) is gone; the worker stops", parent)
            break
    if scheduler is not None:
        scheduler.shutdown(wait=False)
    clean = dispatcher.stop()
    stop_bot(bot)
    log.info("worker stopped%s", "" if clean else " (unfinished jobs handed back)")
    return 0


def clock(ctx: Context) -> int:
    from adsync.bot.clock import run_clock

    run_clock(ctx.services)
    return 0
