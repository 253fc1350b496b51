"""Gunicorn settings for adsync's web process — the one place they live.

The Procfile's ``web:`` line loads this module
(``gunicorn -c python:adsync.bot.gunicorn_conf 'adsync.bot.app:create_app()'``) and
``adsync serve`` applies the same names (``settings()``), overriding only the port, the number
of processes and the start-up hook that starts the scheduler and the long connection.
"""

from __future__ import annotations

import os
from typing import Any

bind = f"0.0.0.0:{os.environ.get('PORT') or '8000'}"
# One process with threads: it acknowledges (each event written to disk, then moved into the
# database queue; the worker answers) and holds the long connection; more processes are safe
# (the queue and leases live in the database) but buy nothing at this size.
workers = 1
threads = 8
# Requests are read whole by the worker's main loop before a thread sees them, under a
# deadline: a client trickling its bytes cannot hold a thread (see gunicorn_worker).
worker_class = "adsync.bot.gunicorn_worker.BufferingThreadWorker"
timeout = 60  # the worker's heartbeat (a hung process is restarted), not a read limit
graceful_timeout = 30
keepalive = 5
http_protocols = "h1"  # HTTP/1.1 only: Feishu posts HTTP/1.1, and the buffering is HTTP/1
# Paths only, never query strings: the OAuth callback's query carries auth_code and state
# (and no referer: it can be the authorization page's URL, state included).
accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
# adsync has no use for gunicornc; its default socket path is shared by every instance.
control_socket_disable = True


def settings() -> dict[str, Any]:
    """The settings above, by name (what ``gunicorn -c`` reads from this module)."""
    from gunicorn.config import Config

    known = Config().settings
    return {name: value for name, value in globals().items() if name in known}
