"""Events over lark-oapi's long connection (``adsync serve --ws``).

lark-oapi 1.7.5's ``ws.Client`` runs on a module-level asyncio loop and handles each frame
synchronously on it, so: the client gets its own thread and its own loop; our handlers only
claim and queue (the same ``Bot`` as the webhook), never blocking the loop; and a watchdog
restarts a connection that has been down too long — the SDK's endpoint discovery has no
timeout and can hang its reconnect loop forever (oapi-sdk-python#169).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from adsync.bot.app import build_dispatcher
from adsync.bot.worker import Bot
from adsync.sync.config import Settings

log = logging.getLogger("adsync.ws")


class LongConnection:
    def __init__(
        self,
        settings: Settings,
        bot: Bot,
        *,
        down_limit: float = 300.0,
        check_every: float = 15.0,
        client_factory: Callable[[Any], Any] | None = None,
    ) -> None:
        settings.require("FEISHU_APP_ID", "FEISHU_APP_SECRET")
        self.settings = settings
        self.bot = bot
        self.handler = build_dispatcher(settings, bot, for_ws=True)
        self.down_limit = down_limit
        self.check_every = check_every
        self._client_factory = client_factory or self._new_client
        self._stop = threading.Event()
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None
        self.restarts = 0

    def _new_client(self, handler: Any) -> Any:
        import lark_oapi as lark

        assert self.settings.feishu_app_secret is not None
        return lark.ws.Client(
            self.settings.feishu_app_id,
            self.settings.feishu_app_secret.reveal(),
            event_handler=handler,
            domain=self.settings.feishu_domain,
            log_level=lark.LogLevel.WARNING,
        )

    def start(self) -> None:
        self._launch()
        threading.Thread(target=self._watch, name="feishu-ws-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _launch(self) -> None:
        client = self._client_factory(self.handler)
        self._client = client
        self._down_since = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, args=(client,), name="feishu-ws", daemon=True
        )
        self._thread.start()

    @staticmethod
    def _run(client: Any) -> None:
        import lark_oapi.ws.client as ws_module

        # The SDK drives a module-level loop; this thread gets a loop of its own.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        ws_module.loop = loop
        try:
            client.start()
        except Exception:  # noqa: BLE001 - the watchdog starts a new client
            log.exception("the Feishu long connection stopped")

    def connected(self) -> bool:
        return getattr(self._client, "_conn", None) is not None

    def check(self) -> bool:
        """One watchdog look; returns True if it restarted the connection."""
        now = time.monotonic()
        if self.connected() and self._thread is not None and self._thread.is_alive():
            self._down_since = None
            return False
        if self._down_since is None:
            self._down_since = now
        if now - self._down_since < self.down_limit:
            return False
        # The old thread may be stuck inside the SDK; it is a daemon and is abandoned.
        log.error(
            "the Feishu long connection has been down %.0fs; starting a new one",
            now - self._down_since,
        )
        self.restarts += 1
        self._launch()
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.check_every):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watchdog must outlive its own mistakes
                log.exception("watchdog check failed")
