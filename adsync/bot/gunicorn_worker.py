"""A gunicorn gthread worker whose threads never wait for a client's bytes.

gunicorn 27's gthread worker (``gunicorn/workers/gthread.py``) waits on its poller for a new
connection's first byte (up to 5 s), then hands the connection to a pool thread that reads the
request line, headers and body with blocking reads and no overall deadline (``timeout`` is the
worker's heartbeat, not a read limit; no setting bounds the read). A client that sends one
byte every 2 s keeps its thread as long as it likes: eight of them — the pool's size — and
every Feishu delivery and ``/healthz`` queues behind them, past Feishu's 3-second deadline.
More threads only raise the number of slow clients needed; a per-request deadline alone still
lets clients that reconnect hold every thread most of the time.

So here the main loop (one selector, no threads) buffers each request until it is complete —
the header section, then the body by ``Content-Length`` or chunked framing — and only then
hands it to a pool thread, which parses it from memory and runs the app. A slow client costs
a socket and a buffer, never a thread. A request not complete within ``REQUEST_DEADLINE``
seconds of its first wait gets 408 and is closed; oversized headers get 431, bodies over
``MAX_BODY`` 413, framing that cannot be read unambiguously (two lengths, a length and
chunked, a transfer coding other than chunked) 400 — all answered from the loop. If gunicorn's
parser ever wanted a byte this framing did not count, its reads are bounded by the same
deadline (``DeadlineUnreader``), so no case holds a thread for long.

An async worker (gevent) would also keep slow clients off threads, but needs monkeypatching
of everything in this process: psycopg 3, SQLAlchemy's pool, the scheduler's and the chat
lanes' threads, and lark-oapi's long connection, which runs its own asyncio loop in a thread.
Buffering in the loop changes nothing the app sees.

TLS is not terminated here (the platform's router or a proxy does it); with ``certfile`` set
the worker falls back to gthread's own reading.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import ThreadWorker

REQUEST_DEADLINE = 10.0  # seconds to send a whole request; Feishu sends a few KB at once
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY = 1024 * 1024  # the app's own limit (adsync.bot.app.MAX_BODY)
RECV_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Framing:
    """What the bytes so far are: ``complete``, or ``refuse`` with a status, or neither (more
    bytes needed); ``expects_continue`` when the client waits for "100 Continue"."""

    complete: bool = False
    refuse: int = 0
    reason: str = ""
    expects_continue: bool = False


MORE = Framing()


def _refuse(status: int, reason: str) -> Framing:
    return Framing(refuse=status, reason=reason)


def frame(buf: bytes) -> Framing:
    """Is ``buf`` one whole HTTP/1.x request (plus, maybe, the start of the next)?"""
    start = len(buf) - len(buf.lstrip(b"\r\n"))  # empty lines before a request are ignored
    end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        if len(buf) - start > MAX_HEADER_BYTES:
            return _refuse(431, "request header fields too large")
        return MORE
    if end - start > MAX_HEADER_BYTES:
        return _refuse(431, "request header fields too large")
    lines = buf[start:end].split(b"\r\n")
    lengths: list[bytes] = []
    codings: list[bytes] = []
    expects = False
    http11 = lines[0].rstrip().endswith(b"HTTP/1.1")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            lengths.append(value.strip())
        elif name == b"transfer-encoding":
            codings.append(value.strip().lower())
        elif name == b"expect":
            expects = value.strip().lower() == b"100-continue"
    body_at = end + 4
    if codings:
        if lengths or codings != [b"chunked"]:
            return _refuse(400, "unsupported request framing")
        return _chunked(buf, body_at, expects and http11)
    if len(lengths) > 1:
        return _refuse(400, "more than one Content-Length")
    if not lengths:
        return Framing(complete=True)
    if not lengths[0].isdigit():
        return _refuse(400, "bad Content-Length")
    length = int(lengths[0])
    if length > MAX_BODY:
        return _refuse(413, "body too large")
    if len(buf) - body_at >= length:
        return Framing(complete=True)
    return Framing(expects_continue=expects and http11 and len(buf) == body_at)


def _chunked(buf: bytes, pos: int, expects: bool) -> Framing:
    """Walk the chunks (RFC 9112 §7.1): size line, data, CRLF, ..., a 0 size, trailers, CRLF."""
    waiting = Framing(expects_continue=expects and pos == len(buf))
    total = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return waiting if len(buf) - pos <= 1024 else _refuse(400, "bad chunk size line")
        size_text = buf[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16) if size_text else -1
        except ValueError:
            size = -1
        if size < 0:
            return _refuse(400, "bad chunk size")
        if size == 0:
            trailers = eol + 2
            if buf[trailers : trailers + 2] == b"\r\n":
                return Framing(complete=True)
            if buf.find(b"\r\n\r\n", trailers) >= 0:
                return Framing(complete=True)
            return waiting if len(buf) - trailers <= MAX_HEADER_BYTES else _refuse(431, "")
        total += size
        if total > MAX_BODY:
            return _refuse(413, "body too large")
        data_end = eol + 2 + size
        if len(buf) < data_end + 2:
            return waiting
        if buf[data_end : data_end + 2] != b"\r\n":
            return _refuse(400, "bad chunk")
        pos = data_end + 2
        waiting = MORE


class DeadlineUnreader(SocketUnreader):
    """gunicorn's socket reader, but no read outlives the request's deadline: past it, the
    connection reads as closed (gunicorn then drops it quietly)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__(sock)
        self.deadline = deadline

    def chunk(self, size_hint: int | None = None) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            return b""
        self.sock.settimeout(left)
        try:
            return super().chunk(size_hint)
        except (TimeoutError, BlockingIOError):
            return b""
        finally:
            self.sock.settimeout(None)


@dataclass
class _Reading:
    conn: Any  # gunicorn's TConn
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    continued: bool = False
    done: bool = False


class BufferingThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with the request read in the main loop (see the module's docstring)."""

    def init_process(self) -> None:
        self._reading: deque[_Reading] = deque()
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        """Called on the main thread for a new connection, a kept-alive one that became
        readable, and a pipelined next request: read it here first."""
        if getattr(conn, "adsync_buffered", False) or self.cfg.is_ssl:
            conn.adsync_buffered = False
            super().enqueue_req(conn)
            return
        reading = _Reading(conn, time.monotonic() + REQUEST_DEADLINE)
        if conn.parser is not None:  # a pipelined request already partly read by gunicorn
            reading.buf += conn.parser.unreader.take_buffered()
        conn.sock.setblocking(False)
        if self._advance(reading):
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, reading))
        self._reading.append(reading)

    def _readable(self, reading: _Reading, _sock: Any) -> None:
        try:
            data = reading.conn.sock.recv(RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(reading)
            return
        reading.buf += data
        self._advance(reading)

    def _advance(self, reading: _Reading) -> bool:
        """Act on the bytes so far; True when the connection has left the reading state (handed
        to a thread, or answered and closed)."""
        framing = frame(bytes(reading.buf))
        if framing.refuse:
            self._answer(reading, framing.refuse, framing.reason)
            return True
        if framing.expects_continue and not reading.continued:
            reading.continued = True
            self._send(reading.conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        if not framing.complete:
            return False
        reading.done = True
        conn = reading.conn
        self._forget(conn.sock)
        conn.sock.setblocking(True)
        conn.data_ready = True
        conn.init()  # the HTTP/1.x parser: no I/O without TLS
        parser = conn.parser
        parser.unreader = DeadlineUnreader(conn.sock, reading.deadline)
        parser.unreader.unread(bytes(reading.buf))
        conn.adsync_buffered = True
        super().enqueue_req(conn)
        return True

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self._reading and (self._reading[0].done or self._reading[0].deadline <= now):
            reading = self._reading.popleft()
            if reading.done:
                continue
            if reading.buf.strip(b"\r\n"):
                self._answer(reading, 408, "the request took too long to arrive")
            else:  # nothing sent at all (an idle or speculative connection): just close
                self._drop(reading)

    def _answer(self, reading: _Reading, status: int, reason: str) -> None:
        phrase = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large"}.get(
            status, "Request Header Fields Too Large"
        )
        body = json.dumps({"msg": reason or phrase}).encode()
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self._send(reading.conn.sock, head + body)
        self.log.debug("refused a request from %s: %d %s", reading.conn.client, status, reason)
        self._drop(reading)

    def _drop(self, reading: _Reading) -> None:
        reading.done = True
        self._forget(reading.conn.sock)
        self.nr_conns -= 1
        reading.conn.close()

    def _forget(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):  # not registered (any more)
            self.poller.unregister(sock)

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> None:
        """Best effort, never blocking: a client that does not read its answer loses it."""
        try:
            sock.send(data)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET):
                raise
