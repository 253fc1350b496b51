"""What every command gets: settings, services on demand, output mode, and one error path."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from adsync.cli.fmt import print_json
from adsync.sync.config import Settings, load_settings
from adsync.sync.errors import AdsyncError, AuthorizationNeeded


@dataclass
class Context:
    settings: Settings
    args: argparse.Namespace
    out: TextIO = field(default_factory=lambda: sys.stdout)
    _services: Any = None

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def services(self) -> Any:
        """The shared object graph, opened on first use (so commands that need no database
        never touch one)."""
        if self._services is None:
            from adsync.sync.services import open_services

            self._services = open_services(self.settings)
        return self._services

    def say(self, text: str = "") -> None:
        if not self.json:
            self.out.write(text + "\n")

    def close(self) -> None:
        if self._services is not None:
            self._services.close()


def run(handler: Callable[[Context], int | None], args: argparse.Namespace) -> int:
    """Run one command; every AdsyncError becomes its message, its hint and its exit code."""
    wants_json = bool(getattr(args, "json", False))
    ctx: Context | None = None
    try:
        settings = load_settings()
        from adsync.sync.logs import configure_logging

        quiet = args.command not in ("serve", "clock", "sandbox", "worker")
        configure_logging(
            settings, verbose=args.verbose, console_level=logging.WARNING if quiet else None
        )
        ctx = Context(settings, args)
        return int(handler(ctx) or 0)
    except AdsyncError as exc:
        _report(exc, wants_json)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if ctx is not None:
            ctx.close()


def _report(exc: AdsyncError, wants_json: bool) -> None:
    if wants_json:
        doc: dict[str, Any] = {"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
        if isinstance(exc, AuthorizationNeeded) and exc.auth_url:
            doc["auth_url"] = exc.auth_url
        print_json(doc)
    print(f"error: {exc}", file=sys.stderr)
