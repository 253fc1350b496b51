"""`adsync serve` (gunicorn + the app, scheduler in-process unless --no-clock) and
`adsync chat` (the console)."""

from __future__ import annotations

import sys
from typing import Any

from adsync.cli.context import Context


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
    use_clock = not ctx.args.no_clock
    if not use_ws:
        problem = webhook_key_problem(settings)
        if problem is not None:  # an open webhook would run anyone's events
            raise problem

    class AdsyncServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            from adsync.bot import gunicorn_conf

            # The Procfile's settings (one place), then what this command line decides.
            for name, value in gunicorn_conf.settings().items():
                self.cfg.set(name, value)
            self.cfg.set("bind", f"0.0.0.0:{port}")
            self.cfg.set("workers", ctx.args.workers)
            self.cfg.set("post_worker_init", _start_background(use_ws, use_clock))

        def load(self) -> Any:
            from adsync.bot.app import create_app

            return create_app(settings, webhook=not use_ws)

    AdsyncServer().run()
    return 0


def _start_background(use_ws: bool, use_clock: bool) -> Any:
    def post_worker_init(worker: Any) -> None:
        app = worker.wsgi
        bot = app.extensions["adsync_bot"]
        if use_ws:
            from adsync.bot.ws import LongConnection

            LongConnection(bot.actions.settings, bot).start()
        if use_clock:
            try:
                from adsync.bot.clock import start_background_clock
            except ImportError:  # the clock arrives with its own issue
                return
            start_background_clock(bot)

    return post_worker_init


def clock(ctx: Context) -> int:
    from adsync.bot.clock import run_clock

    run_clock(ctx.services)
    return 0
