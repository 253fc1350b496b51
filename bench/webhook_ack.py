"""Webhook acknowledgement latency under a burst, beside lark-oapi's run-it-inline sample.

The requirement this benchmark checks:

    "Webhook acknowledgement latency p50 and p99 for 200 concurrent deliveries while a sync
    runs: p99 under 50 ms on this 2-core machine; and, side by side, the same load against a
    handler that runs the command inline as lark-oapi's sample does."

How it is measured:

* The sandbox runs in its own process (``python -m adsync.sandbox.server --port 0``), at the
  lowest CPU priority (it simulates remote servers, whose CPU is not ours), with
  ``latency_ms`` on every call of both platforms (Feishu is not instant either), a world of
  ``--accounts`` local-push accounts, and the chats the load comes from. adsync is authorized
  the way an operator does it (an auth code from the sandbox, ``TokenManager.authorize``).
* Four gunicorn processes, each started with the Procfile's ``web:`` command (its settings
  module ``adsync.bot.gunicorn_conf``: the buffering worker, threads, access log; bound to
  loopback), with FEISHU_ENCRYPT_KEY and
  FEISHU_VERIFICATION_TOKEN set, on one database (an SQLite file by default;
  ``--database-url`` for PostgreSQL, in a fresh schema dropped afterwards):
  - adsync: ``adsync.bot.app:create_app()``, the production app (verify, queue on the
    chat's lane, answer 200; the lane's job claims the delivery in the database first);
  - inline: ``webhook_ack:create_inline_app()`` below, lark-oapi's Flask sample
    (``handler.do(parse_req())``) whose message handler runs the command before returning:
    parse -> Actions.execute -> Messenger.reply, adsync's own code doing the work, so only
    the architecture differs;
  - stack: ``webhook_ack:create_dispatch_app()``, the production app with a queue that runs
    nothing: what gunicorn, Flask and lark-oapi's dispatcher (decrypt, verify, build the
    event objects) cost, the bound for any app built on that stack;
  - floor: ``webhook_ack:floor_app``, which reads the body and answers 200: what the HTTP
    stack alone costs at this concurrency on this machine, the bound for any app under it.
* ``--with-gthread`` adds a fifth, ``gthread``: the production app on gunicorn's own gthread
  worker (what the Procfile ran before the buffering worker), to show what reading whole
  requests in the worker's main loop costs under a burst.
* "While a sync runs": each measurement first delivers ``sync <7 days>`` through a webhook
  (the server's own; adsync's for the stack and the floor), a new week each time so rows really are
  fetched and written, Ocean Engine paced at the shipped 5 req/s; it waits until the run is
  in the ledger and under way, then fires the burst. Whether the sync was still running when
  the burst's last answer came back is printed.
* The burst: ``--deliveries`` distinct ``im.message.receive_v1`` events (own event_id and
  message_id, each posted in its sandbox chat first like a person's message), spread over
  ``--chats`` chats, cheap commands (``token status`` / ``summary``: the point is the
  acknowledgement), encrypted and signed as the platform does (``adsync.sandbox.events.seal``)
  before the clock starts. All are sent at once, each on a new connection (the platform's
  concurrent deliveries cannot share one), from one non-blocking socket loop. Latency =
  connect + send until the whole response is read. A thread-per-request client would charge
  its own GIL contention (200 threads, 2 cores) to the server; asyncio streams measured
  ~30 ms slower at the p99 than this loop against a server that does nothing.
* After each burst the bench waits until every message has exactly one answer in the
  sandbox (the inline server answered before acknowledging, adsync from its lanes) and the
  sync has finished, so no measurement inherits the previous one's work.
* ``--rounds`` rounds; the servers' order rotates round by round so drift hits all alike.
  Medians across rounds; target: adsync's p99 < 50 ms, every delivery 200, every message
  answered once.

Run: ``.venv/bin/python bench/webhook_ack.py [--rounds 3] [--deliveries 200]
[--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests
from sandbox_process import SandboxProcess

DELIVERIES = 200
CHATS = 8
ACCOUNTS = 80  # at 5 req/s: a sync of ~20 s, longer than any burst
LATENCY_MS = 30
TARGET_P99_MS = 50.0
ENCRYPT_KEY = "bench-encrypt-key-5d1e"
VERIFY_TOKEN = "bench-verification-token-0b7a"
SYNC_CHAT = "oc_sandbox_reports"  # the reports chat of the demo settings
CHEAP = ("token status", "summary")
IDLE = ("stack", "floor")  # servers that answer no message; adsync runs the sync for them
ROOT = Path(__file__).resolve().parent.parent
SHANGHAI = ZoneInfo("Asia/Shanghai")


# -- the inline baseline: lark-oapi's Flask sample, with the command run in the handler ----------


def create_inline_app() -> Any:
    """BASELINE, not adsync's server: what lark-oapi's ``samples/event/flask_sample.py`` does,
    with the message handler doing the whole command before the request is answered. No
    claim, no lanes; the command code is adsync's own so only the architecture differs."""
    import lark_oapi as lark
    from flask import Flask
    from lark_oapi.adapter.flask import parse_req, parse_resp
    from lark_oapi.api.im.v1 import P2ImMessageReceiveV1

    from adsync.bot import cards
    from adsync.bot.actions import Actions, Caller
    from adsync.bot.commands import CommandError, parse
    from adsync.bot.messenger import Messenger, message_uuid
    from adsync.bot.worker import message_text
    from adsync.sync.config import load_settings
    from adsync.sync.services import open_services

    settings = load_settings()
    services = open_services(settings)
    actions, messenger = Actions(services), Messenger(settings)

    def do_p2_im_message_receive_v1(data: P2ImMessageReceiveV1) -> None:
        msg = data.event.message
        sender = data.event.sender.sender_id
        text = message_text(msg.message_type or "", msg.content or "", msg.mentions)
        try:
            command = parse(text, actions.today())
            caller = Caller(sender.open_id or "", msg.chat_id or "", msg.chat_type or "group")
            card = actions.execute(command, caller)
        except CommandError as exc:
            card = cards.message_card("?", str(exc), exc.lang, "info")
        messenger.reply(msg.message_id or "", card, message_uuid("reply", msg.message_id or ""))

    assert settings.feishu_encrypt_key and settings.feishu_verification_token
    handler = (
        lark.EventDispatcherHandler.builder(
            settings.feishu_encrypt_key.reveal(), settings.feishu_verification_token.reveal()
        )
        .register_p2_im_message_receive_v1(do_p2_im_message_receive_v1)
        .build()
    )
    app = Flask("inline")

    @app.route("/feishu/events", methods=["POST"])
    def event() -> Any:
        return parse_resp(handler.do(parse_req()))

    @app.get("/healthz")
    def healthz() -> Any:
        return {"ok": True}

    return app


class _NoLanes:
    """Chat lanes that run nothing: for ``create_dispatch_app``."""

    @contextlib.contextmanager
    def acknowledging(self) -> Iterator[None]:
        yield

    def submit(self, lane: str, job: Callable[[], None]) -> None:
        return None


def create_dispatch_app() -> Any:
    """STACK, not a bot: adsync's production app (Flask, lark-oapi's EventDispatcherHandler
    decrypting, verifying and building its event objects, adsync's handlers filtering and
    queueing) with a queue that runs nothing. The difference to ``floor`` is what verifying and
    routing an event costs; the difference to ``adsync`` is what running the commands and the
    sync in the same process costs."""
    from adsync.bot.app import build_bot, create_app
    from adsync.sync.config import load_settings

    settings = load_settings()
    bot = build_bot(settings)
    bot.lanes = _NoLanes()  # type: ignore[assignment]
    return create_app(settings, bot)


def floor_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """FLOOR, not a bot: reads the body and answers 200 at once. Served by the same gunicorn
    settings, it shows what the HTTP stack alone costs at this concurrency on this machine."""
    environ["wsgi.input"].read()
    body = b'{"msg":"success"}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "17")])
    return [body]


# -- the sandbox process ---------------------------------------------------------------------


class Sandbox(SandboxProcess):
    """The sandbox process, at the lowest CPU priority: it simulates Feishu's and Ocean
    Engine's servers, whose CPU is not ours in production, so it must not take the two cores
    from the server under test."""

    def __init__(self) -> None:
        super().__init__(niceness=19, timeout=60)

    def replies(self, chat_ids: list[str]) -> dict[str, int]:
        """Bot replies per user message id, in ``chat_ids``."""
        counts: dict[str, int] = {}
        for chat_id in chat_ids:
            for m in self.get("/_sandbox/feishu/messages", chat_id=chat_id)["messages"]:
                if m["via"] != "user" and m["parent_id"]:
                    counts[m["parent_id"]] = counts.get(m["parent_id"], 0) + 1
        return counts


# -- the database ----------------------------------------------------------------------------


class Database:
    """SQLite in the run's directory, or a fresh schema on the given PostgreSQL server."""

    def __init__(self, url: str | None, data_dir: Path) -> None:
        self.schema: str | None = None
        self.admin_url = ""
        if not url:
            self.url = f"sqlite:///{data_dir / 'adsync.db'}"
            return
        import psycopg

        self.admin_url = url.replace("postgresql+psycopg://", "postgresql://")
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        sep = "&" if "?" in url else "?"
        self.url = f"{url}{sep}options=-csearch_path%3D{self.schema}"

    def describe(self) -> str:
        return f"PostgreSQL schema {self.schema}" if self.schema else "SQLite (WAL)"

    def unfinished_runs(self) -> int:
        from sqlalchemy import func, select

        from adsync.sync.store import runs

        with self.engine.connect() as conn:
            query = select(func.count()).select_from(runs).where(runs.c.finished_at.is_(None))
            return int(conn.execute(query).scalar() or 0)

    @property
    def engine(self) -> Any:
        if not hasattr(self, "_engine"):
            from sqlalchemy import create_engine

            self._engine = create_engine(self.url)
        return self._engine

    def drop(self) -> None:
        if hasattr(self, "_engine"):
            self._engine.dispose()
        if self.schema:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


# -- the servers under test ------------------------------------------------------------------


def procfile_web() -> list[str]:
    """The Procfile's ``web:`` command, split, with ``gunicorn`` run by this interpreter."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            argv = shlex.split(line.removeprefix("web:"))
            if argv[0] != "gunicorn":
                raise RuntimeError(f"the Procfile's web process is not gunicorn: {line}")
            return [sys.executable, "-m", "gunicorn", *argv[1:]]
    raise RuntimeError("no web: line in the Procfile")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gunicorn:
    """One gunicorn master (and its worker) in a process group of its own."""

    def __init__(
        self,
        name: str,
        app_spec: str,
        env: dict[str, str],
        cwd: Path,
        extra: list[str] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        # The production settings; loopback instead of every interface, our app instead of
        # the Procfile's (its last word), and no control socket (gunicorn's default is one
        # path in $HOME shared by every instance).
        # (The command line's --bind overrides the config module's $PORT.)
        argv = procfile_web()[:-1]
        argv += ["--bind", f"127.0.0.1:{self.port}"]
        argv += ["--no-control-socket", "--pythonpath", str(ROOT / "bench"), *(extra or [])]
        argv.append(app_spec)
        self.argv = argv
        self.log = cwd / f"{name}.log"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} server did not start; see {self.log}")
            time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group we started: master, worker
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log_file.close()


# -- the burst -------------------------------------------------------------------------------


def http_request(port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = ["POST /feishu/events HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("ascii") + body


@dataclass
class _Exchange:
    sock: socket.socket
    raw: bytes
    started: float
    sent: int = 0
    received: bytearray = field(default_factory=bytearray)


def _answered(data: bytearray) -> bool:
    """Whether ``data`` holds a whole HTTP response (headers and Content-Length bytes)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    for line in bytes(data[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(data) - end - 4 >= int(value)
    return False  # no length: the body ends when the server closes


def burst(
    port: int, raws: list[bytes], timeout: float, spread: float = 0.0
) -> list[tuple[float, int]]:
    """Send every request at once (or, with ``spread``, at even intervals over that many
    seconds), each on a new connection, from one non-blocking loop; returns (seconds from
    connect to the last byte of the response, HTTP status or 0) each.

    Plain sockets and a selector rather than a thread per request or asyncio streams: with
    200 requests on 2 cores, a heavier client's own scheduling shows up in the latencies
    (asyncio streams added ~40 ms to the p99 against a server that does nothing)."""
    selector = selectors.DefaultSelector()
    results: list[tuple[float, int]] = [(timeout, 0)] * len(raws)
    begun = time.perf_counter()
    due = [begun + spread * i / len(raws) for i in range(len(raws))]
    opened = 0

    def open_due() -> None:
        nonlocal opened
        while opened < len(raws) and due[opened] <= time.perf_counter():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            exchange = _Exchange(sock, raws[opened], time.perf_counter())
            sock.connect_ex(("127.0.0.1", port))
            selector.register(sock, selectors.EVENT_WRITE, (opened, exchange))
            opened += 1

    open_due()
    deadline = time.perf_counter() + spread + timeout
    pending = len(raws)
    while pending and time.perf_counter() < deadline:
        wait = 0.5 if opened == len(raws) else max(0.0, due[opened] - time.perf_counter())
        ready = selector.select(wait)  # epoll waits out the timeout with nothing registered
        open_due()
        for key, _events in ready:
            i, ex = key.data
            done = False
            try:
                if ex.sent < len(ex.raw):
                    ex.sent += ex.sock.send(ex.raw[ex.sent :])
                    if ex.sent == len(ex.raw):
                        selector.modify(ex.sock, selectors.EVENT_READ, key.data)
                    continue
                chunk = ex.sock.recv(65536)
                ex.received += chunk
                done = not chunk or _answered(ex.received)
            except OSError:
                done = True
            if done:
                elapsed = time.perf_counter() - ex.started
                head = bytes(ex.received[:12])
                status = int(head[9:12]) if head.startswith(b"HTTP/") else 0
                results[i] = (elapsed, status)
                selector.unregister(ex.sock)
                ex.sock.close()
                pending -= 1
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()
    return results


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 200 is the 198th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


@dataclass
class Measurement:
    server: str
    latencies: list[float]
    statuses: list[int]
    sync_throughout: bool
    answered: int | None  # None: the floor answers nothing
    double_answers: int
    sync_seconds: float

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    @property
    def non_200(self) -> int:
        return sum(1 for s in self.statuses if s != 200)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.week = 0  # each measurement syncs a week of its own, further back each time
        self.chats = [f"oc_bench_{i:02d}" for i in range(args.chats)]
        self.sandbox: Sandbox
        self.db: Database

    def say(self, chat_id: str, text: str) -> dict[str, Any]:
        """A person posts ``text`` in ``chat_id``; returns the event the platform delivers."""
        from adsync.sandbox import events as ev

        posted = self.sandbox.post(
            "/_sandbox/feishu/user_message", {"chat_id": chat_id, "text": text}
        )
        return ev.message_event(
            text,
            token=VERIFY_TOKEN,
            chat_id=chat_id,
            user_id=f"ou_bench_{chat_id[-2:]}",
            message_id=posted["message_id"],
            create_time_ms=posted["create_time"],
        )

    def measure(self, server: Gunicorn, sync_via: Gunicorn) -> Measurement:
        """One burst at ``server`` while a sync delivered to ``sync_via`` runs."""
        from adsync.sandbox import events as ev

        # The burst's events: posted in their chats, then sealed and signed, before any clock.
        events = [
            self.say(self.chats[i % len(self.chats)], CHEAP[i % len(CHEAP)])
            for i in range(self.args.deliveries)
        ]
        raws = []
        for event in events:
            sealed = ev.seal(event, ENCRYPT_KEY)
            raws.append(http_request(server.port, sealed.body, sealed.headers))
        ids = {e["event"]["message"]["message_id"] for e in events}

        # The sync, through the webhook, as someone in the reports chat would ask for it.
        end = datetime.now(SHANGHAI).date() - timedelta(days=1 + 7 * self.week)
        start = end - timedelta(days=6)
        self.week += 1
        sync_event = self.say(SYNC_CHAT, f"sync {start}..{end}")
        sync_id = sync_event["event"]["message"]["message_id"]
        sync_sealed = ev.seal(sync_event, ENCRYPT_KEY)
        sync_started = time.monotonic()

        def deliver_sync() -> None:
            # The inline server holds this request for the whole sync (the platform would
            # have given up after 3 s and re-delivered); adsync answers it at once.
            try:
                ev.deliver(sync_via.url + "/feishu/events", sync_sealed, timeout=600)
            except requests.RequestException as exc:
                print(f"  the sync delivery to {sync_via.name} failed: {exc}", file=sys.stderr)

        sync_thread = threading.Thread(target=deliver_sync, daemon=True)
        sync_thread.start()
        wait_for(lambda: self.db.unfinished_runs() > 0, 60, "the sync to start")
        time.sleep(self.args.sync_head_start)  # into the fetching, not at its first call

        results = burst(server.port, raws, self.args.timeout, self.args.spread)
        sync_throughout = self.db.unfinished_runs() > 0

        # Drain: the sync over and every message answered, before the next measurement.
        wait_for(lambda: self.db.unfinished_runs() == 0, 900, "the sync to finish")
        sync_seconds = time.monotonic() - sync_started
        sync_thread.join(60)
        answerable = server.name not in IDLE
        expect = (ids if answerable else set()) | {sync_id}
        chats = [*self.chats, SYNC_CHAT]
        try:
            wait_for(lambda: expect <= set(self.sandbox.replies(chats)), 300, "every answer")
        except RuntimeError as exc:  # reported below as answered < deliveries
            print(f"  {server.name}: {exc}", file=sys.stderr)
        replies = self.sandbox.replies(chats)
        return Measurement(
            server=server.name,
            latencies=[r[0] for r in results],
            statuses=[r[1] for r in results],
            sync_throughout=sync_throughout,
            answered=sum(1 for i in ids if replies.get(i)) if answerable else None,
            double_answers=sum(1 for i in ids if replies.get(i, 0) > 1),
            sync_seconds=sync_seconds,
        )

    def run(self) -> int:
        args = self.args
        workdir = Path(tempfile.mkdtemp(prefix="adsync-webhook-bench-"))
        self.sandbox = Sandbox()
        servers: list[Gunicorn] = []
        try:
            self.db = Database(args.database_url, workdir)
            env = self.environment(workdir)
            self.prepare(env, workdir)
            servers = [
                Gunicorn("adsync", "adsync.bot.app:create_app()", env, workdir),
                Gunicorn("inline", "webhook_ack:create_inline_app()", env, workdir),
                Gunicorn("stack", "webhook_ack:create_dispatch_app()", env, workdir),
                Gunicorn("floor", "webhook_ack:floor_app", env, workdir),
            ]
            if args.with_gthread:
                gthread = ["--worker-class", "gthread"]
                app = "adsync.bot.app:create_app()"
                servers.append(Gunicorn("gthread", app, env, workdir, gthread))
            adsync = servers[0]
            when = f"spread evenly over {args.spread:g} s" if args.spread else "all at once"
            print(
                f"{args.deliveries} deliveries ({when}) over {args.chats} chats, each on a new "
                f"connection, while a 7-day sync of {args.accounts} accounts runs (Ocean Engine "
                f"at {env['ADSYNC_RATE_LIMIT']} req/s); sandbox latency {LATENCY_MS} ms a call; "
                f"{self.db.describe()}; {os.cpu_count()} CPUs"
            )
            print("gunicorn " + " ".join(shlex.quote(a) for a in adsync.argv[3:-1]) + " APP")
            print(
                "  adsync = adsync.bot.app:create_app()   inline = lark-oapi's Flask sample, "
                "command run in the handler\n  stack = adsync's app with a queue that runs "
                "nothing (gunicorn + Flask + lark-oapi's dispatcher + our handlers)   "
                "floor = an app that answers at once, doing nothing"
            )
            rows: dict[str, list[Measurement]] = {s.name: [] for s in servers}
            print(
                f"{'round':<6}{'server':<8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
                f"{'non-200':>9}{'answered':>10}{'sync s':>8}  sync ran throughout"
            )
            for rnd in range(1, args.rounds + 1):
                shift = (rnd - 1) % len(servers)  # rotate the order: drift hits all alike
                for server in servers[shift:] + servers[:shift]:
                    sync_via = adsync if server.name in IDLE else server
                    m = self.measure(server, sync_via)
                    rows[server.name].append(m)
                    answered = "-" if m.answered is None else f"{m.answered}/{args.deliveries}"
                    extra = f"  ({m.double_answers} answered twice)" if m.double_answers else ""
                    print(
                        f"{rnd:<6}{m.server:<8}{m.p(50):>9.1f}{m.p(95):>9.1f}{m.p(99):>9.1f}"
                        f"{m.p(100):>9.1f}{m.non_200:>9}{answered:>10}{m.sync_seconds:>8.1f}"
                        f"  {'yes' if m.sync_throughout else 'NO'}{extra}",
                        flush=True,
                    )
            return self.report(rows)
        finally:
            for server in servers:
                server.close()
            self.sandbox.close()
            if hasattr(self, "db"):
                self.db.drop()
            if args.keep:
                print(f"(logs and data kept in {workdir})")
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    def report(self, rows: dict[str, list[Measurement]]) -> int:
        def med(name: str, q: float) -> float:
            return statistics.median(m.p(q) for m in rows[name])

        print()
        print(f"median of {self.args.rounds} rounds, interleaved")
        print(f"{'server':<8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'non-200':>9}")
        for name in rows:
            non_200 = sum(m.non_200 for m in rows[name])
            print(
                f"{name:<8}{med(name, 50):>9.1f}{med(name, 95):>9.1f}{med(name, 99):>9.1f}"
                f"{med(name, 100):>9.1f}{non_200:>9}"
            )
        p99, inline, floor = med("adsync", 99), med("inline", 99), med("floor", 99)
        stack = med("stack", 99)
        print(
            f"p99 inline / adsync = {inline / p99:.1f}x;  adsync / stack = {p99 / stack:.1f}x;  "
            f"stack / floor = {stack / floor:.1f}x"
        )
        if "gthread" in rows:
            plain = med("gthread", 99)
            print(f"p99 adsync (buffering worker) / adsync on gthread = {p99 / plain:.2f}x")
        adsync = rows["adsync"]
        problems = []
        if any(m.non_200 for m in adsync):
            problems.append("adsync answered some deliveries with other than 200")
        if not all(m.sync_throughout for m in adsync):
            problems.append("the sync ended before some adsync burst did")
        if any(m.answered != self.args.deliveries or m.double_answers for m in adsync):
            problems.append("adsync did not answer every message exactly once")
        ok = p99 < TARGET_P99_MS and not problems
        print(
            f"{'PASS' if ok else 'FAIL'}: adsync p99 {p99:.1f} ms (target < {TARGET_P99_MS:.0f} ms)"
        )
        for problem in problems:
            print(f"  {problem}")
        if floor >= TARGET_P99_MS:
            print(
                f"  the floor's p99 is {floor:.1f} ms: with these gunicorn settings on this "
                f"machine, {self.args.deliveries} requests on new connections miss the target "
                "before any application code runs"
            )
        elif stack >= TARGET_P99_MS:
            print(
                f"  the stack's p99 is {stack:.1f} ms: gunicorn, Flask and lark-oapi's "
                "dispatcher miss the target before any command is run"
            )
        return 0 if ok else 1

    def environment(self, workdir: Path) -> dict[str, str]:
        from adsync.cli.demo import demo_environment

        env = {
            **demo_environment(self.sandbox.url, workdir / "data"),
            "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY,
            "FEISHU_VERIFICATION_TOKEN": VERIFY_TOKEN,
            "ADSYNC_DATABASE_URL": self.db.url,
            "ADSYNC_RATE_LIMIT": "5",  # the shipped default: a sync of realistic length
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(workdir),  # nothing of the operator's (no ~/.gunicorn, no .env)
        }
        if "PYTHONPATH" in os.environ:  # e.g. to measure another checkout against this one
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        env.pop("ADSYNC_BITABLE_WRITE_GAP", None)  # the shipped default as well
        return env

    def prepare(self, env: dict[str, str], workdir: Path) -> None:
        """The sandbox's world and chats, then an authorization, as an operator does it."""
        from adsync.sync.config import load_settings
        from adsync.sync.services import open_services

        chats = [{"chat_id": SYNC_CHAT, "name": "广告日报群"}]
        chats += [{"chat_id": c, "name": c} for c in self.chats]
        self.sandbox.post(
            "/_sandbox/reset",
            {"oceanengine": {"accounts": self.args.accounts}, "feishu": {"chats": chats}},
        )
        latency = {"latency_ms": LATENCY_MS}
        self.sandbox.post("/_sandbox/faults", {"oceanengine": latency, "feishu": latency})
        services = open_services(load_settings(env, cwd=workdir))
        try:
            code = self.sandbox.post("/_sandbox/oceanengine/auth_code", {})["auth_code"]
            services.tokens.authorize(code)
        finally:
            services.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deliveries", type=int, default=DELIVERIES)
    parser.add_argument("--chats", type=int, default=CHATS)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS, help="in the sync")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test "
        "(a fresh schema, dropped afterwards); default: SQLite in a temporary directory",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a delivery")
    parser.add_argument(
        "--spread",
        type=float,
        default=0.0,
        help="seconds over which the deliveries start, evenly (default 0: all at once)",
    )
    parser.add_argument("--sync-head-start", type=float, default=1.0, help="seconds")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the database")
    parser.add_argument(
        "--with-gthread",
        action="store_true",
        help="also measure the app on gunicorn's own gthread worker",
    )
    return Bench(parser.parse_args()).run()


if __name__ == "__main__":
    raise SystemExit(main())
