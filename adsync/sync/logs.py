"""Logging set-up with a last line of defence: known secrets and token-shaped query values are
masked in every record before any handler writes it."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from adsync.sync.config import Secret, Settings
from adsync.sync.errors import mask

_QUERY_SECRET = re.compile(
    r"((?:access_token|refresh_token|secret|app_secret|auth_code|tenant_access_token)"
    r"[\"']?\s*[=:]\s*[\"']?)([^&\s\"',}]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(Bearer\s+)([A-Za-z0-9._\-]+)")


class Redactor(logging.Filter):
    """Masks registered secret values and ``token=...``-shaped fragments in log records."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, value: str | Secret | None) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if value and len(value) >= 6:
            self._secrets.add(value)

    def scrub(self, text: str) -> str:
        for value in self._secrets:
            if value in text:
                text = text.replace(value, mask(value))
        text = _QUERY_SECRET.sub(lambda m: m.group(1) + mask(m.group(2)), text)
        return _BEARER.sub(lambda m: m.group(1) + mask(m.group(2)), text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, scrubbed, so no handler formats the raw one.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.scrub(text)
            record.exc_info = None
        return True


def configure_logging(
    settings: Settings, verbose: bool = False, console_level: int | None = None
) -> Redactor:
    """Log to stderr (and ``ADSYNC_LOG_FILE``), every handler behind the redactor.

    One-shot commands keep the terminal for their own output (``console_level`` WARNING);
    servers log INFO. ``-v`` shows everything."""
    redactor = Redactor()
    for value in (
        settings.oceanengine_app_secret,
        settings.feishu_app_secret,
        settings.feishu_encrypt_key,
        settings.feishu_verification_token,
        settings.feishu_alert_webhook_url,
        settings.feishu_alert_webhook_secret,
    ):
        redactor.add(value)
    level = logging.DEBUG if verbose else getattr(logging, settings.log_level, logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.log_file is not None:
        Path(settings.log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(settings.log_file, encoding="utf-8"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if console_level is not None and not verbose:
        handlers[0].setLevel(console_level)
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(redactor)
        root.addHandler(handler)
    root.setLevel(level)
    # Third-party debug logs print full URLs (and so query tokens); keep them quiet.
    for noisy in ("urllib3", "requests", "werkzeug", "Lark", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return redactor
