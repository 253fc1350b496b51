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

            # Without the Ocean Engine app nothing stored can be used: say what to set rather
            # than create ./data and a database for a configuration that is not there.
            self.settings.require("OCEANENGINE_APP_ID")

            self._services = open_services(self.settings)
        return self._services

    def say(self, text: str = "") -> None:
        if not self.json:
            self.out.write(text + "\n")

    def close(self) -> None:
        if self._services is not None:
            self._services.close()


def run(handler: Callable[[Context], int | None], args: argparse.Namespace) -> int:
    """Run one command; every AdsyncError becomes its message, its hint and its exit code, and
    anything else one line naming the file with the (redacted) details — never a traceback."""
    wants_json = bool(getattr(args, "json", False))
    ctx: Context | None = None
    settings: Settings | None = None
    try:
        # The demo and the sandbox bring their own configuration: the operator's is not read.
        settings = Settings() if getattr(args, "own_configuration", False) else load_settings()
        from adsync.sync.logs import configure_logging

        quiet = args.command not in ("serve", "clock", "sandbox", "worker")
        configure_logging(
            settings, verbose=args.verbose, console_level=logging.WARNING if quiet else None
        )
        ctx = Context(settings, args)
        return int(handler(ctx) or 0)
    except AdsyncError as exc:
        if isinstance(exc, AuthorizationNeeded) and not exc.auth_url and ctx is not None:
            _add_link(ctx, exc)
        _report(exc, wants_json)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise  # the reader left (`| head`): not an error; `adsync.cli.main` ends quietly
    except Exception as exc:  # noqa: BLE001 - one line and a file, never a traceback with values
        return _unexpected(exc, settings, args, wants_json)
    finally:
        if ctx is not None:
            try:
                ctx.close()
            except Exception:  # noqa: BLE001 - closing must not turn success into a traceback
                logging.getLogger("adsync.cli").warning("could not close cleanly", exc_info=True)


def _add_link(ctx: Context, exc: AuthorizationNeeded) -> None:
    """The operator at this terminal may authorize: mint a link bound to the CLI."""
    try:
        exc.with_link(ctx.services.tokens.authorization_url(requested_by="cli"))
    except Exception:  # noqa: BLE001 - no link (no redirect URI, no database): the hint stays
        return


def _unexpected(
    exc: BaseException, settings: Settings | None, args: argparse.Namespace, wants_json: bool
) -> int:
    from adsync.sync.logs import record_failure

    command = " ".join(p for p in (args.command, getattr(args, "action", None)) if p)
    kind = type(getattr(exc, "orig", None) or exc).__name__
    database = type(exc).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "sqlite3")
    try:
        path: Any = record_failure(exc, settings, f"unexpected {kind} in `adsync {command}`")
    except Exception:  # noqa: BLE001 - even the details file failed: say so, in one line
        path = "(none: the details file could not be written)"
    if database:
        code = 2
        text = (
            f"the database failed ({kind}) during `adsync {command}`: is it reachable? "
            f"`adsync doctor` checks it. Details: {path}"
        )
    else:
        code = 4
        text = (
            f"unexpected {kind} during `adsync {command}` (a bug, or an outage adsync does not "
            f"name). Details: {path}"
        )
    if wants_json:
        print_json({"error": text, "details": str(path), "exit_code": code})
    print(f"error: {text}", file=sys.stderr)
    return code


def _report(exc: AdsyncError, wants_json: bool) -> None:
    if wants_json:
        doc: dict[str, Any] = {"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
        if isinstance(exc, AuthorizationNeeded) and exc.auth_url:
            doc["auth_url"] = exc.auth_url
        print_json(doc)
    print(f"error: {exc}", file=sys.stderr)
