"""The webhook attacked the way the security review did it: over real HTTP, against a running
server (the in-process app on a real socket, or the real ``adsync serve`` under gunicorn where
the claim is about the server), checking what the attacker sees — status, body — and what the
server wrote to its log."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from adsync.sandbox import events as ev

from .conftest import Sandbox, free_port, report, stop_gently, wait_serving
from .test_bot import CHAT, ENCRYPT_KEY, VERIFY_TOKEN, BotServer, messages, say

# -- a real `adsync serve` -------------------------------------------------------------------


class Served:
    """``adsync serve`` in its own process (gunicorn, the production settings)."""

    def __init__(self, proc: subprocess.Popen[str], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def adsync_serve(env: dict[str, str], cwd: Path, *args: str) -> Iterator[Served]:
    port = free_port()
    log = cwd / f"serve-{port}.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "adsync", "serve", "--port", str(port), "--no-clock", *args],
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), **env},
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_serving(served.url, proc, served.log_text)
        yield served
    finally:
        stop_gently(proc)


@pytest.fixture
def bot_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY, "FEISHU_VERIFICATION_TOKEN": VERIFY_TOKEN}


# -- slow bodies ------------------------------------------------------------------------------


class Trickler:
    """``n`` connections that send a request one byte every ``every`` seconds (slowloris)."""

    REQUEST = (
        b"POST /feishu/events HTTP/1.1\r\nHost: adsync\r\nContent-Type: application/json\r\n"
        b"Content-Length: 64\r\n\r\n" + b"{" * 64
    )

    def __init__(self, url: str, n: int, every: float) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.socks = [socket.create_connection((host, int(port)), timeout=30) for _ in range(n)]
        self.every = every
        self.answers: list[bytes] = [b""] * n
        self.sent = [0] * n
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, sock in enumerate(self.socks):
                if self.answers[i] or self.sent[i] >= len(self.REQUEST):
                    continue
                try:
                    sock.sendall(self.REQUEST[self.sent[i] : self.sent[i] + 1])
                    self.sent[i] += 1
                except OSError:
                    self.answers[i] = self.answers[i] or b"(closed)"
            self._stop.wait(self.every)

    def read_answers(self, timeout: float) -> list[bytes]:
        """Whatever each connection got back (the server's refusal) within ``timeout``."""
        deadline = time.monotonic() + timeout
        for i, sock in enumerate(self.socks):
            if self.answers[i]:
                continue
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(OSError):
                self.answers[i] = sock.recv(4096) or b"(closed)"
        return self.answers

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


@pytest.mark.storage_neutral
def test_slow_clients_trickling_bytes_do_not_starve_acknowledgements(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Ten connections sending a request one byte every 2 s (more than the 8 threads) while
    Feishu delivers events and a health checker polls: every delivery and /healthz is answered
    within 1 s, and each trickler is cut off with 408 once its 10-second read deadline ends."""
    with adsync_serve(bot_env, tmp_path) as srv:
        trickle = Trickler(srv.url, n=10, every=2.0)
        try:
            time.sleep(2.5)  # every trickler has sent bytes: each would hold a gthread thread
            slowest = 0.0
            asked = []
            for text in ("token status", "summary", "token status"):
                started = time.monotonic()
                health = requests.get(srv.url + "/healthz", timeout=5)
                slowest = max(slowest, time.monotonic() - started)
                assert health.status_code == 200
                event = say(sandbox, text)
                started = time.monotonic()
                answer = ev.deliver(srv.url + "/feishu/events", ev.seal(event, ENCRYPT_KEY), 5)
                slowest = max(slowest, time.monotonic() - started)
                assert answer.status_code == 200
                asked.append(event["event"]["message"]["message_id"])
                time.sleep(1.0)
            assert slowest < 1.0, f"an answer took {slowest:.2f} s while clients trickled"
            report(
                f"slow clients: 10 connections trickling a byte every 2 s; the slowest of 3 "
                f"deliveries and 3 health checks took {slowest * 1000:.0f} ms (limit 1,000)"
            )
            answers = trickle.read_answers(timeout=12)
        finally:
            trickle.close()
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        assert all(n < len(Trickler.REQUEST) for n in trickle.sent)  # cut off mid-request
        deadline = time.monotonic() + 30
        while {m["parent_id"] for m in messages(sandbox)} < set(asked):
            assert time.monotonic() < deadline, "the delivered commands were not answered"
            time.sleep(0.1)


# -- an open webhook without keys ----------------------------------------------------------------


def _app_server(env: dict[str, str], tmp_path: Path, **overrides: str) -> BotServer:
    from adsync.bot.app import create_app
    from adsync.sync.config import load_settings

    settings = load_settings({**env, **overrides}, cwd=tmp_path)
    return BotServer(create_app(settings))


@contextlib.contextmanager
def app_server(env: dict[str, str], tmp_path: Path, **overrides: str) -> Iterator[BotServer]:
    srv = _app_server(env, tmp_path, **overrides)
    try:
        yield srv
    finally:
        srv.stop()
        srv.bot.actions.services.close()


def test_adsync_serve_will_not_open_the_webhook_without_an_encrypt_key(
    env: dict[str, str], cli: Any
) -> None:
    result = cli(["serve", "--port", str(free_port()), "--no-clock"], env)
    assert result.returncode == 2
    assert "FEISHU_ENCRYPT_KEY is not set" in result.stderr
    assert "adsync serve --ws" in result.stderr  # the way that needs no key


def test_an_unsigned_event_claiming_an_admin_runs_nothing_when_no_key_is_set(
    env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The Procfile's gunicorn builds ``create_app()`` without the keys: the endpoint refuses
    everything (503, Feishu keeps the event until the key is set) and /healthz names the
    missing setting."""
    with app_server(env, tmp_path, ADSYNC_ADMINS="ou_the_admin") as srv:
        event = say(sandbox, "sync yesterday", user_id="ou_the_admin", token="")
        forged = ev.deliver(srv.url + "/feishu/events", ev.seal(event, ""))
        assert forged.status_code == 503
        assert forged.json() == {"msg": "webhook not configured"}
        srv.idle()
        assert srv.bot.handled == 0 and messages(sandbox) == []
        table = sandbox.get("/_sandbox/feishu/tables/bascnSandboxApp0001/tblSandboxDaily01")
        assert table["records"] == []
        health = requests.get(srv.url + "/healthz", timeout=5)
        assert health.status_code == 503
        assert "FEISHU_ENCRYPT_KEY" in health.json()["configuration"]


@pytest.mark.storage_neutral
def test_the_long_connection_needs_no_keys_and_opens_no_webhook(
    env: dict[str, str], tmp_path: Path
) -> None:
    with adsync_serve(env, tmp_path, "--ws") as srv:
        assert requests.get(srv.url + "/healthz", timeout=5).json()["ok"]
        posted = requests.post(srv.url + "/feishu/events", data=b"{}", timeout=5)
        assert posted.status_code == 404


def test_doctor_names_the_missing_event_keys(env: dict[str, str], cli: Any) -> None:
    result = cli(["doctor", "--json"], env)
    by_name = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    keys = by_name["Feishu event keys"]
    assert not keys["ok"] and "FEISHU_ENCRYPT_KEY" in keys["detail"]
    assert "adsync serve --ws" in keys["fix"]
    assert by_name["Feishu bot"]["ok"] and "ou_" in by_name["Feishu bot"]["detail"]
    keyed = cli(["doctor", "--json"], {**env, "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY})
    by_name = {c["name"]: c for c in json.loads(keyed.stdout)["checks"]}
    assert by_name["Feishu event keys"]["ok"]
    assert "FEISHU_VERIFICATION_TOKEN" in by_name["Feishu event keys"]["detail"]
    assert ENCRYPT_KEY not in keyed.stdout + keyed.stderr


# -- bodies that are not events -------------------------------------------------------------------


@pytest.fixture
def server(bot_env: dict[str, str], authorized: Any, tmp_path: Path) -> Iterator[BotServer]:
    with app_server(bot_env, tmp_path) as srv:
        yield srv


FIXED_REASONS = {
    "body is not a JSON object",
    "body is not an encrypted event",
    "bad signature",
    "unsigned request",
    "bad verification token",
    "not a valid event",
    "body too large",
}


def _deep_signed_event() -> ev.Delivery:
    """Correctly encrypted and signed (so only lark-oapi's own parser meets it), 50,000 deep."""
    plaintext = '{"schema": "2.0", "a": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001
    body = json.dumps({"encrypt": ev.encrypt(plaintext, ENCRYPT_KEY)}).encode()
    stamp, nonce = str(int(time.time())), "n0nce"
    return ev.Delivery(
        body,
        {
            "Content-Type": "application/json",
            "X-Lark-Request-Timestamp": stamp,
            "X-Lark-Request-Nonce": nonce,
            "X-Lark-Signature": ev.sign(stamp, nonce, ENCRYPT_KEY, body),
        },
    )


@pytest.mark.parametrize(
    "body",
    ["100k [", '50k {"a":', "deep beside encrypt", "deep inside the signed event"],
)
def test_deeply_nested_bodies_get_a_4xx_not_a_500_with_a_traceback(
    server: BotServer, sandbox: Sandbox, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.url + "/feishu/events"
    caplog.set_level(logging.INFO)
    if body == "100k [":
        answer = requests.post(url, data=b"[" * 100_000, timeout=10)
    elif body == '50k {"a":':
        answer = requests.post(url, data=b'{"a":' * 50_000, timeout=10)
    elif body == "deep beside encrypt":
        nested = b"[" * 60_000 + b"]" * 60_000
        answer = requests.post(url, data=b'{"encrypt": "x", "a": ' + nested + b"}", timeout=10)
    else:
        answer = ev.deliver(url, _deep_signed_event(), 10)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:200])
    assert answer.json()["msg"] in FIXED_REASONS
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "Traceback" not in logged and "RecursionError" not in logged
    assert not [r for r in caplog.records if r.exc_info]
    server.idle()
    assert server.bot.handled == 0


def test_a_flood_of_garbage_logs_one_line_and_then_a_count(
    server: BotServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = server.url + "/feishu/events"
    http = requests.Session()
    garbage = [b"", b"[" * 5000, b"\x00\xff", b'{"encrypt": "%%%"}', b'{"a": 1}', b"null"]
    statuses = {
        http.post(url, data=garbage[i % len(garbage)], timeout=5).status_code for i in range(300)
    }
    assert statuses <= {400, 401}

    def app_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name.startswith("adsync")]

    assert len(app_lines()) == 1, app_lines()  # the first refusal only
    server.app.extensions["adsync_refusals"].flush()  # the minute is over
    lines = app_lines()
    assert len(lines) == 2 and "refused 299 more" in lines[1], lines
    assert not [r for r in caplog.records if r.exc_info or r.name == "Lark"]


# -- disclosure -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper", ["no nonce", "signature of another body", "unsigned garbage", "wrong token"]
)
def test_refusals_say_a_fixed_reason_and_never_exception_text(
    server: BotServer, sandbox: Sandbox, tamper: str
) -> None:
    url = server.url + "/feishu/events"
    event = say(sandbox, "sync yesterday")
    if tamper == "no nonce":  # lark-oapi itself would fail concatenating None: TypeError
        delivery = ev.seal(event, ENCRYPT_KEY)
        del delivery.headers["X-Lark-Request-Nonce"]
    elif tamper == "signature of another body":
        delivery = ev.seal(event, ENCRYPT_KEY)
        delivery.headers.update(ev.seal(event, ENCRYPT_KEY).headers)
    elif tamper == "unsigned garbage":
        delivery = ev.Delivery(b'{"encrypt": "QUJDREVGR0hJSktMTU5PUA=="}', {})
    else:
        delivery = ev.seal(say(sandbox, "sync yesterday", token="not-the-token"), ENCRYPT_KEY)
    answer = ev.deliver(url, delivery)
    assert answer.status_code in (400, 401)
    assert set(answer.json()) == {"msg"} and answer.json()["msg"] in FIXED_REASONS
    for leak in ("Error", "Exception", "NoneType", "concatenate", "padding", "Traceback"):
        assert leak not in answer.text
    server.idle()
    assert server.bot.handled == 0


def test_healthz_names_the_failed_check_and_not_where_the_database_is(
    server: BotServer, db_url: str, tmp_path: Path
) -> None:
    healthy = requests.get(server.url + "/healthz", timeout=5)
    assert healthy.json() == {
        "ok": True,
        "database": "ok",
        "commands": "ok",
        "configuration": "ok",
    }
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        server.bot.store.dispose()
        for stale in path.parent.glob(path.name + "*"):  # the file, its WAL and index
            stale.unlink()
        path.write_bytes(b"this is not a database" * 100)
    else:
        import psycopg

        schema = db_url.rsplit("search_path%3D", 1)[1]
        plain = db_url.split("?")[0].replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # nowhere left to even recreate
    broken = requests.get(server.url + "/healthz", timeout=10)
    assert broken.status_code == 503
    assert broken.json() == {"ok": False, "database": "failed", "configuration": "ok"}
    for leak in ("sqlite", "postgres", "127.0.0.1", str(tmp_path), "adsync.db", "test"):
        assert leak not in broken.text


# -- card actions: fresh, identified, in the chat they came from --------------------------------


def _wait_until_it_knows_itself(srv: BotServer) -> None:
    """Until the start-up lookup of the bot's identity (and so its tenant token) is done, as
    it is long before a real button press; then a chat lookup is one call."""
    identity = srv.app.extensions["adsync_intake"].identity
    deadline = time.monotonic() + 30
    while identity.open_id() is None:
        assert time.monotonic() < deadline, identity.problem
        time.sleep(0.1)


def _press(
    srv: BotServer,
    value: dict[str, Any],
    *,
    sent_at: float | None = None,
    event_id: str | None = None,
    **kw: Any,
) -> requests.Response:
    """A signed button press; ``sent_at`` (epoch seconds) dates both its signed request
    timestamp and its header, as a captured-and-replayed press would be."""
    when = time.time() if sent_at is None else sent_at
    event = ev.card_action_event(
        value, token=VERIFY_TOKEN, event_id=event_id, create_time_ms=int(when * 1000), **kw
    )
    return ev.deliver(srv.url + "/feishu/events", ev.seal(event, ENCRYPT_KEY, timestamp=int(when)))


def test_a_day_old_signed_card_action_runs_nothing(server: BotServer, sandbox: Sandbox) -> None:
    answer = _press(server, {"action": "token_refresh"}, sent_at=time.time() - 86400)
    assert answer.status_code == 200
    assert answer.json()["toast"]["type"] == "error"
    assert "too old" in answer.json()["toast"]["content"]
    server.idle()
    assert server.bot.handled == 0


def test_a_card_action_replayed_after_its_dedup_claim_expired_runs_nothing(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The attacker keeps the exact bytes of a press and sends them again once the 12-hour
    claim is gone (here: the claim is expired by hand, and the window is 30 s)."""
    from sqlalchemy import update

    from adsync.sync.store import dedup, utcnow

    with app_server(bot_env, tmp_path, ADSYNC_CALLBACK_MAX_AGE="30") as srv:
        sent_at = time.time() - 27  # inside the window when it first arrives
        event = ev.card_action_event(
            {"action": "token_refresh"}, token=VERIFY_TOKEN, create_time_ms=int(sent_at * 1000)
        )
        captured = ev.seal(event, ENCRYPT_KEY, timestamp=int(sent_at))
        first = ev.deliver(srv.url + "/feishu/events", captured)
        assert first.json()["toast"]["type"] == "info"
        srv.idle()
        assert srv.bot.handled == 1
        with authorized.store.engine.begin() as conn:  # twelve hours later
            conn.execute(update(dedup).values(expires_at=utcnow()))
        while time.time() - int(sent_at) <= 31:
            time.sleep(0.2)
        replay = ev.deliver(srv.url + "/feishu/events", captured)
        assert replay.status_code == 200 and replay.json()["toast"]["type"] == "error"
        srv.idle()
        assert srv.bot.handled == 1


def test_a_card_action_without_an_event_id_is_refused_every_time(
    server: BotServer, sandbox: Sandbox
) -> None:
    for _ in range(3):
        answer = _press(server, {"action": "token_refresh"}, event_id="")
        assert answer.json()["toast"]["type"] == "error"
    server.idle()
    assert server.bot.handled == 0


def test_a_stale_card_action_over_the_long_connection_is_refused(
    bot_env: dict[str, str], authorized: Any, tmp_path: Path
) -> None:
    """No headers there: the event header's create_time dates the press."""
    from adsync.bot.app import build_bot, build_dispatcher
    from adsync.bot.dispatch import Dispatcher
    from adsync.sync.config import load_settings

    settings = load_settings(bot_env, cwd=tmp_path)
    bot = build_bot(settings)
    handler = build_dispatcher(settings, bot, for_ws=True)
    old = int((time.time() - 3600) * 1000)
    stale = ev.card_action_event({"action": "token_refresh"}, token="", create_time_ms=old)
    assert handler._do_without_validation(json.dumps(stale).encode()).toast.type == "error"
    fresh = ev.card_action_event({"action": "token_refresh"}, token="")
    assert handler._do_without_validation(json.dumps(fresh).encode()).toast.type == "info"
    bot.start_mover()
    dispatcher = Dispatcher(bot).start()
    assert dispatcher.wait_idle(30)
    assert bot.handled == 1
    dispatcher.stop()
    bot.stop_mover()
    bot.actions.services.close()


def test_the_callback_window_is_shorter_than_the_replay_memory(
    env: dict[str, str], tmp_path: Path
) -> None:
    from adsync.bot.worker import DEDUP_TTL
    from adsync.sync.config import CALLBACK_MAX_AGE_RANGE, load_settings
    from adsync.sync.errors import ConfigError

    assert CALLBACK_MAX_AGE_RANGE[1] < DEDUP_TTL.total_seconds()
    assert load_settings(env, cwd=tmp_path).callback_max_age == 300
    with pytest.raises(ConfigError, match="ADSYNC_CALLBACK_MAX_AGE"):
        load_settings({**env, "ADSYNC_CALLBACK_MAX_AGE": str(13 * 3600)}, cwd=tmp_path)


def test_an_admins_button_in_their_own_direct_chat_runs(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    """ADSYNC_ALLOWED_CHAT_IDS lists only the team group; admins' direct chats always work
    (README). The press carries only the chat id: its type comes from the chat info API."""
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": "oc_admin_dm", "chat_mode": "p2p"})
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": "oc_other_team"})
    limits = {"ADSYNC_ADMINS": "ou_the_admin", "ADSYNC_ALLOWED_CHAT_IDS": CHAT}
    with app_server(bot_env, tmp_path, **limits) as srv:
        _wait_until_it_knows_itself(srv)
        value = {"action": "token_refresh"}
        for _ in range(2):
            mine = _press(srv, value, user_id="ou_the_admin", chat_id="oc_admin_dm")
            assert mine.json()["toast"]["type"] == "info", mine.json()
        elsewhere = _press(srv, value, user_id="ou_the_admin", chat_id="oc_other_team")
        assert elsewhere.json()["toast"]["type"] == "error"
        assert "not configured" in elsewhere.json()["toast"]["content"]
        srv.idle()
        assert srv.bot.handled == 2
        calls = sandbox.stats("feishu")["calls"]
        assert calls.get("GET /open-apis/im/v1/chats/<chat_id>") == 2  # once per chat: cached


# -- addressed to the bot -------------------------------------------------------------------------


def test_a_group_message_for_someone_else_gets_no_reply(
    server: BotServer, sandbox: Sandbox
) -> None:
    alice = ("Alice", "ou_0a11ce0a11ce0a11ce0a11ce0a11ce0a")
    for_alice = say(sandbox, "token status", mention_bot=False, mention_others=[alice])
    assert server.post_event(for_alice).status_code == 200
    server.idle()
    assert server.bot.handled == 0 and messages(sandbox) == []
    both = say(sandbox, "token status", mention_others=[alice])
    assert server.post_event(both).status_code == 200
    server.idle()
    assert server.bot.handled == 1


def test_without_the_bots_open_id_group_messages_are_not_taken_and_the_log_says_why(
    bot_env: dict[str, str],
    authorized: Any,
    sandbox: Sandbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sandbox.faults(feishu={"scripted": [{"path": "/bot/v3/info", "code": 99991672, "times": 99}]})
    with app_server(bot_env, tmp_path) as srv:
        assert srv.post_event(say(sandbox, "token status")).status_code == 200
        srv.idle()
        assert srv.bot.handled == 0 and messages(sandbox) == []
        loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("open_id is unknown" in r.getMessage() for r in loud), loud
        direct = say(sandbox, "token status", chat_type="p2p", mention_bot=False)
        assert srv.post_event(direct).status_code == 200
        srv.idle()
        assert srv.bot.handled == 1  # direct chats need no mention


# -- the access log -------------------------------------------------------------------------------


@pytest.mark.storage_neutral
def test_the_access_log_never_writes_the_oauth_callbacks_auth_code_or_state(
    bot_env: dict[str, str], authorized: Any, tmp_path: Path
) -> None:
    code, state = "ac-SECRET-CODE-7f31c9", "st-SECRET-STATE-2be8"
    with adsync_serve(bot_env, tmp_path) as srv:
        page = requests.get(
            srv.url + "/oauth/oceanengine/callback",
            params={"auth_code": code, "state": state},
            headers={"Referer": f"https://open.oceanengine.com/audit/oauth.html?state={state}"},
            timeout=10,
        )
        assert page.status_code == 400  # an unknown state
        assert code not in page.text and state not in page.text
    logged = srv.log_text()
    assert "GET /oauth/oceanengine/callback HTTP/1.1" in logged  # the access log is on
    assert code not in logged and state not in logged
    assert ENCRYPT_KEY not in logged and VERIFY_TOKEN not in logged


# -- the buffering worker speaks HTTP/1.1 as gunicorn does ------------------------------------


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gunicorn with the Procfile's settings (``-c python:adsync.bot.gunicorn_conf``) serving
    an app that echoes what it received."""
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    home = tmp_path_factory.mktemp("echo")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:adsync.bot.gunicorn_conf"]
        + ["--bind", f"127.0.0.1:{port}", "--access-logfile", "/dev/null", "tests.echo_app:app"],
        cwd=root,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(requests.RequestException):
            requests.get(url + "/", timeout=1)
            break
        assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
        time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _responses(data: bytes) -> list[bytes]:
    """The complete HTTP/1.1 responses at the start of ``data`` (by Content-Length)."""
    found = []
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            return found
        head = data[:head_end].lower()
        length = 0
        if b"content-length:" in head:
            length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        end = head_end + 4 + length
        if len(data) < end:
            return found
        found.append(data[:end])
        data = data[end:]


def _exchange(url: str, raw: bytes, responses: int = 1, pause_after: int = 0) -> list[bytes]:
    """Send ``raw`` (the first ``pause_after`` bytes, a pause, then the rest) on one connection
    and read ``responses`` complete HTTP responses."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        if pause_after:
            sock.sendall(raw[:pause_after])
            time.sleep(0.3)
            raw = raw[pause_after:]
        sock.sendall(raw)
        data = b""
        while len(_responses(data)) < responses:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return _responses(data)


def _echo(answer: bytes) -> dict[str, Any]:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_the_buffering_worker_reads_chunked_pipelined_and_kept_alive_requests(
    echo_server: str,
) -> None:
    from adsync.bot import app, gunicorn_worker

    assert gunicorn_worker.MAX_BODY == app.MAX_BODY  # one limit, the worker's copy in step
    body = b'{"encrypt": "' + b"A" * 20_000 + b'"}'
    post = b"POST /feishu/events HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
    chunked = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (body[:7], body[7:]))
    chunked += b"0\r\nX-Trailer: 1\r\n\r\n"
    get = b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
    # Three requests pipelined on one connection, the first arriving in two parts.
    answers = _exchange(echo_server, post + body + chunked + get, responses=3, pause_after=40)
    echoes = [_echo(a) for a in answers]
    assert [e["path"] for e in echoes] == ["/feishu/events", "/c", "/healthz"]
    assert echoes[0]["length"] == echoes[1]["length"] == len(body)
    assert echoes[0]["sha256"] == echoes[1]["sha256"]
    # A client waiting for "100 Continue" before it sends the body gets it.
    expect = post.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n", 1)
    host, port = echo_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(expect)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        got = b""
        while b'"sha256"' not in got:
            got += sock.recv(65536)
        assert b"HTTP/1.1 200" in got


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999\r\n\r\n", b"413"),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", b"400"),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    ],
    ids=["huge length", "two lengths", "length and chunked", "gzip", "bad chunk", "huge header"],
)
def test_the_buffering_worker_refuses_what_it_cannot_frame(
    echo_server: str, request_bytes: bytes, status: bytes
) -> None:
    answer = _exchange(echo_server, request_bytes)
    assert answer and answer[0].startswith(b"HTTP/1.1 " + status), answer
    assert b"Connection: close" in answer[0]
