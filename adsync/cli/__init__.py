"""The ``adsync`` command line.

Each command's module is imported only when that command runs, so ``adsync --help`` and
``adsync token status`` never pay for lark-oapi (seconds and 175 MB) or Flask.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from adsync import __version__

# command path -> "module:function"; the module is imported only when the command runs.
COMMANDS = {
    ("auth", "url"): "adsync.cli.auth:auth_url",
    ("auth", "code"): "adsync.cli.auth:auth_code",
    ("auth", "list"): "adsync.cli.auth:auth_list",
    ("auth", "remove"): "adsync.cli.auth:auth_remove",
    ("token", "status"): "adsync.cli.auth:token_status",
    ("token", "refresh"): "adsync.cli.auth:token_refresh",
    ("sandbox",): "adsync.cli.ops:sandbox",
    ("doctor",): "adsync.cli.ops:doctor",
    ("demo",): "adsync.cli.demo:demo",
    ("sync",): "adsync.cli.sync:sync",
    ("accounts",): "adsync.cli.data:accounts",
    ("summary",): "adsync.cli.data:summary",
    ("report",): "adsync.cli.report:report",
    ("fields",): "adsync.cli.data:fields",
    ("records",): "adsync.cli.data:records",
    ("tables",): "adsync.cli.data:tables",
    ("views",): "adsync.cli.views:views",
    ("verify",): "adsync.cli.data:verify",
    ("history",): "adsync.cli.data:history",
    ("export",): "adsync.cli.export:export",
    ("chat",): "adsync.cli.serve:chat",
    ("serve",): "adsync.cli.serve:serve",
    ("clock",): "adsync.cli.serve:clock",
    ("worker",): "adsync.cli.serve:worker",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adsync",
        description="Ocean Engine local-push reports into a Feishu Bitable, with a Feishu bot.",
        epilog="Exit codes: 0 done, 1 partly failed, 2 usage or configuration error (or the "
        "database is unreachable), 3 authorization needed, 4 unexpected error (details in the "
        "log file named).",
    )
    parser.add_argument("--version", action="version", version=f"adsync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print one JSON document")

    demo = sub.add_parser("demo", help="the whole system on the sandbox, no credentials needed")
    demo.add_argument("--keep", action="store_true", help="keep the demo's data directory")

    sandbox = sub.add_parser("sandbox", help="serve the simulated Ocean Engine + Feishu APIs")
    sandbox.add_argument("--port", type=int, default=8100)
    sandbox.add_argument("--seed", type=int, default=1)
    sandbox.add_argument(
        "--write-env",
        metavar="PATH",
        help="also write the printed .env block to PATH (owner-only; never over another file)",
    )

    auth = sub.add_parser("auth", help="authorize adsync at Ocean Engine")
    auth_sub = auth.add_subparsers(dest="action", metavar="ACTION", required=True)
    auth_sub.add_parser("url", parents=[json_flag], help="print the authorization link")
    code = auth_sub.add_parser(
        "code", parents=[json_flag], help="exchange an auth_code and store the tokens"
    )
    code.add_argument(
        "code",
        metavar="URL_OR_CODE",
        help="the address bar's URL after authorizing (its auth_code and state are used), "
        "or the bare auth_code",
    )
    code.add_argument(
        "--confirm",
        action="store_true",
        help="take the grant even though it drops accounts its user's authorization granted",
    )
    auth_sub.add_parser(
        "list",
        parents=[json_flag],
        help="the authorizations (one per Ocean Engine login): whose, health, accounts",
    )
    remove = auth_sub.add_parser(
        "remove", parents=[json_flag], help="forget one authorization (synced rows stay)"
    )
    remove.add_argument("id", metavar="ID", help="its ID in `adsync auth list` (or user id/name)")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    token = sub.add_parser("token", help="the Ocean Engine token chains (one per authorization)")
    token_sub = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = token_sub.add_parser("status", parents=[json_flag], help="lifetimes and health")
    status.add_argument(
        "--check", action="store_true", help="ask the platform whether each chain is live"
    )
    token_sub.add_parser("refresh", parents=[json_flag], help="refresh every chain now")

    # The date grammar of the chat (adsync.sync.dates): several words make one argument.
    when_help = (
        "yesterday (default), today, 2026-02-11, 02-11, 2月11日, last 7 days, 近7天, "
        "or a range: 2026-02-01..2026-02-07, 2月1日至7日"
    )
    sync = sub.add_parser("sync", parents=[json_flag], help="sync reports into the Bitable")
    sync.add_argument("when", nargs="*", help=when_help)
    sync.add_argument(
        "--account",
        metavar="ID_OR_NAME",
        help="only this local account: its id or part of its name",
    )
    sync.add_argument(
        "--no-wait", action="store_true", help="if these dates are being synced, stop at once"
    )
    accounts = sub.add_parser(
        "accounts", parents=[json_flag], help="accounts in scope, where each came from"
    )
    accounts.add_argument(
        "--check",
        action="store_true",
        help="one 1-day report call per account; exit 1 if any fails (3: authorize again)",
    )
    summary = sub.add_parser("summary", parents=[json_flag], help="totals and change per account")
    summary.add_argument("when", nargs="*", help=when_help)
    report = sub.add_parser(
        "report", parents=[json_flag], help="the daily report card of a day (or post it)"
    )
    report.add_argument("when", nargs="*", help="one day: yesterday (default), 2026-02-16, 2月16日")
    report.add_argument(
        "--post",
        action="store_true",
        help="post it to FEISHU_REPORT_CHAT_IDS, once per chat and day (as the clock does)",
    )
    report.add_argument(
        "--lang", choices=("zh", "en"), default="zh", help="printed language (zh: the clock's)"
    )
    sub.add_parser("fields", parents=[json_flag], help="the Bitable's fields and their mapping")
    records = sub.add_parser(
        "records", parents=[json_flag], help="the Bitable's rows of a day or a range"
    )
    records.add_argument("when", nargs="*", help=when_help)
    sub.add_parser(
        "tables", parents=[json_flag], help="the Bitable tables in use: periods, rows, room left"
    )
    sub.add_parser(
        "views",
        parents=[json_flag],
        help="the per-account Bitable views (filtered on 账户ID); makes the missing ones",
    )
    verify = sub.add_parser(
        "verify", parents=[json_flag], help="reconcile the Bitable against the local copy"
    )
    verify.add_argument("when", nargs="*", help=when_help)
    verify.add_argument("--fix", action="store_true", help="repair what differs")
    history = sub.add_parser("history", parents=[json_flag], help="recent sync runs")
    history.add_argument("--limit", type=int, default=15)
    export = sub.add_parser(
        "export", parents=[json_flag], help="rows of the local copy to an xlsx or csv file"
    )
    export.add_argument(
        "when",
        nargs="*",
        help="last month (default), 2026-02, 2月, this month, 2026-01..2026-03, "
        "or days as for sync: 2026-02-01..2026-02-07, last 7 days",
    )
    export.add_argument(
        "--account", metavar="ID_OR_NAME", help="only this account: its id or part of its name"
    )
    export.add_argument(
        "--format", choices=("xlsx", "csv"), help="default: the --output suffix, else xlsx"
    )
    export.add_argument(
        "--output",
        metavar="PATH",
        help="file or directory (default: ./adsync-export-<months>.xlsx)",
    )
    export.add_argument("--force", action="store_true", help="replace an existing file")
    sub.add_parser("chat", help="the bot's commands in this terminal")
    sub.add_parser("clock", help="the scheduler alone (the Procfile's clock process)")
    worker = sub.add_parser(
        "worker", help="run queued chat commands (the Procfile's worker process)"
    )
    worker.add_argument("--threads", type=int, default=8, help="commands run at once")
    worker.add_argument("--clock", action="store_true", help="also run the scheduler")
    worker.add_argument(
        "--nice",
        type=int,
        default=5,
        help="lower this process's CPU priority by N (default 5: on a shared machine the "
        "webhook's 3-second acknowledgements go first; 0 to keep it)",
    )
    worker.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # serve's: exit with it
    serve = sub.add_parser("serve", help="the webhook server (and the scheduler)")
    serve.add_argument("--port", type=int, help="default: $PORT or 8000")
    serve.add_argument("--ws", action="store_true", help="take events over the long connection")
    serve.add_argument("--no-clock", action="store_true", help="no scheduler in this process")
    serve.add_argument("--workers", type=int, default=1, help="gunicorn worker processes")
    sub.add_parser("doctor", parents=[json_flag], help="check everything a new operator needs")
    return parser


# Commands that must not read the operator's configuration: the demo runs on the sandbox with
# its own (the README promises a hostile .env cannot break it), the sandbox needs none.
OWN_CONFIGURATION = {("demo",), ("sandbox",)}

# The exit status of a process whose reader went away (128 + SIGPIPE), as `| head` expects.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            # A reader that left shows here (also after --help's SystemExit), not in the
            # interpreter's last flush, where it could only be printed as an ignored exception.
            sys.stdout.flush()
    except BrokenPipeError:
        # `adsync history | head`: the reader has what it wanted. Point stdout at /dev/null so
        # the interpreter's last flush finds no pipe either, and end without a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    key = tuple(p for p in (args.command, getattr(args, "action", None)) if p)
    module_name, func_name = COMMANDS[key].split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    args.own_configuration = key in OWN_CONFIGURATION

    from adsync.cli.context import run

    return run(handler, args)


if __name__ == "__main__":
    sys.exit(main())
