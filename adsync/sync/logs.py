"""Logging set-up with a last line of defence: known secrets, the live token pair and
token-shaped query values are masked in every record before any handler writes it —
lark-oapi's own ``Lark`` logger (which brings its own stdout handler) included.

One-shot commands keep the terminal for their own output: a log record with a traceback shows
there as its first line plus the path of an owner-only file that holds the whole (redacted)
record — ``ADSYNC_LOG_FILE`` if set, else ``adsync-errors.log`` in the data directory if that
directory exists, else a new temporary file. Nothing creates a directory for it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from pathlib import Path

from adsync.sync.config import Secret, Settings
from adsync.sync.errors import mask
from adsync.sync.private import private_file

_QUERY_SECRET = re.compile(
    r"((?:access_token|refresh_token|secret|app_secret|auth_code|tenant_access_token)"
    r"[\"']?\s*[=:]\s*[\"']?)([^&\s\"',}]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(Bearer\s+)([A-Za-z0-9._\-]+)")
LARK_LOGGER = "Lark"  # lark_oapi/core/log.py: logging.getLogger("Lark") + a stdout handler
DETAILS_NAME = "adsync-errors.log"


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
        elif record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


def _redactors() -> list[Redactor]:
    found: list[Redactor] = []
    owners: list[logging.Filterer] = [logging.getLogger(LARK_LOGGER)]
    owners.extend(logging.getLogger().handlers)
    for owner in owners:
        found.extend(f for f in owner.filters if isinstance(f, Redactor))
    return found


def protect(*values: str | None) -> None:
    """Teach the installed redactors these values (the live token pair): any log line that
    would carry one shows its masked prefix. A no-op where logging was not configured."""
    for redactor in _redactors():
        for value in values:
            redactor.add(value)


def details_path(settings: Settings | None) -> Path:
    """Where a failure's whole (redacted) record goes: see the module docstring."""
    if settings is not None and settings.log_file is not None:
        return Path(settings.log_file)
    if settings is not None and settings.data_dir.is_dir():
        return settings.data_dir / DETAILS_NAME
    fd, name = tempfile.mkstemp(prefix="adsync-error-", suffix=".log")  # created 0600
    os.close(fd)
    return Path(name)


class DetailsFile(logging.Handler):
    """Records with a traceback, whole, into the owner-only details file (opened on first use,
    so a command that never fails creates nothing)."""

    def __init__(self, settings: Settings | None) -> None:
        super().__init__(level=logging.WARNING)
        self._settings = settings
        self.path: Path | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if not record.exc_text:
            return
        try:
            if self.path is None:
                self.path = details_path(self._settings)
            private_file(self.path, create=True)
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class OneLine(logging.Formatter):
    """For the terminal of one-shot commands: the record's line without its traceback, and
    where the traceback went."""

    def __init__(self, fmt: str, details: DetailsFile | _PathOnly | None) -> None:
        super().__init__(fmt)
        self._details = details

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        if saved[1] and self._details is not None and self._details.path is not None:
            line += f" (details in {self._details.path})"
        return line.splitlines()[0] if line else line


class _NotForTerminal(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "terminal", True)


def configure_logging(
    settings: Settings, verbose: bool = False, console_level: int | None = None
) -> Redactor:
    """Log to stderr (and ``ADSYNC_LOG_FILE``), every handler behind the redactor.

    One-shot commands keep the terminal for their own output (``console_level`` WARNING, one
    line per record, tracebacks to the details file); servers log INFO with tracebacks (their
    stderr is their log). ``-v`` shows everything."""
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
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    one_shot = console_level is not None and not verbose
    handlers: list[logging.Handler] = []
    details: DetailsFile | None = None
    if settings.log_file is not None:
        path = Path(settings.log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        repaired = private_file(path, create=True)
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
        handlers[-1].setFormatter(logging.Formatter(fmt))
        if repaired is not None:
            logging.getLogger("adsync.logs").warning("made owner-only: %s", repaired)
    elif one_shot:
        details = DetailsFile(settings)
        details.setFormatter(logging.Formatter(fmt))
        handlers.append(details)
    console = logging.StreamHandler(sys.stderr)
    if one_shot:
        console.setLevel(console_level or logging.WARNING)
        file_handler = handlers[0] if settings.log_file is not None else None
        console.setFormatter(OneLine(fmt, details or _PathOnly(file_handler)))
    else:
        console.setFormatter(logging.Formatter(fmt))
    console.addFilter(_NotForTerminal())
    handlers.append(console)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.addFilter(redactor)
        root.addHandler(handler)
    root.setLevel(level)
    # lark-oapi logs through its own logger and its own stdout handler: a filter on the logger
    # scrubs each record before any of its handlers (or ours, by propagation) sees it.
    lark = logging.getLogger(LARK_LOGGER)
    for old in [f for f in lark.filters if isinstance(f, Redactor)]:
        lark.removeFilter(old)
    lark.addFilter(redactor)
    # Third-party debug logs print full URLs (and so query tokens); keep them quiet.
    for noisy in ("urllib3", "requests", "werkzeug", LARK_LOGGER, "apscheduler"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return redactor


class _PathOnly:
    """Stands in for ``DetailsFile`` when ``ADSYNC_LOG_FILE`` already holds every record."""

    def __init__(self, handler: logging.Handler | None) -> None:
        self.path = Path(handler.baseFilename) if isinstance(handler, logging.FileHandler) else None


def details_file() -> Path | None:
    """The file the current configuration writes tracebacks to, once it has (for the CLI's
    one-line error)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, DetailsFile) and handler.path is not None:
            return handler.path
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def record_failure(exc: BaseException, settings: Settings | None, what: str) -> Path:
    """The whole (redacted) record of an unexpected failure, in the details file; its path.
    Nothing of it goes to the terminal."""
    logging.getLogger("adsync.cli").error(what, exc_info=exc, extra={"terminal": False})
    path = details_file()
    if path is not None:
        return path
    # Logging is not configured (the settings did not load), or a server logs to stderr only.
    redactors = _redactors()
    redactor = redactors[0] if redactors else Redactor()
    if settings is not None and not redactors:
        for value in (settings.oceanengine_app_secret, settings.feishu_app_secret):
            redactor.add(value)
    trace = logging.Formatter().formatException((type(exc), exc, exc.__traceback__))
    path = details_path(settings)
    private_file(path, create=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(redactor.scrub(f"ERROR adsync.cli: {what}\n{trace}\n"))
    return path
