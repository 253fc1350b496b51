"""The bot over real HTTP: a running server, events encrypted and signed exactly as Feishu
does (checked by decrypting them back with lark-oapi's own AESCipher), replies reaching the
sandbox's IM, on both storage backends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

from adsync.sandbox import events as ev

from .conftest import Sandbox, free_port, wait_serving

ENCRYPT_KEY = "sandbox-encrypt-key-7f3a"
VERIFY_TOKEN = "sandbox-verification-token-91c2"
CHAT = "oc_sandbox_reports"


class BotServer:
    """The app on a real HTTP server, with a worker (the dispatcher) in the same process."""

    def __init__(self, app: Any, *, worker: bool = True) -> None:
        from adsync.bot.dispatch import Dispatcher

        self.app = app
        self.bot = app.extensions["adsync_bot"]
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.dispatcher = Dispatcher(self.bot) if worker else None
        if self.dispatcher is not None:
            self.dispatcher.start()

    def post_event(self, event: dict[str, Any], **seal: Any) -> requests.Response:
        delivery = ev.seal(event, seal.pop("key", ENCRYPT_KEY), **seal)
        return ev.deliver(self.url + "/feishu/events", delivery)

    def idle(self, timeout: float = 60) -> None:
        assert self.dispatcher is not None
        assert self.dispatcher.wait_idle(timeout), "background work did not finish"

    def stop(self) -> None:
        if self.dispatcher is not None:
            # Let work in flight finish (not asserted: a test may have broken the database).
            self.dispatcher.wait_idle(60)
            self.dispatcher.stop()
        self._server.shutdown()
        self.bot.stop_mover()


@pytest.fixture
def bot_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY, "FEISHU_VERIFICATION_TOKEN": VERIFY_TOKEN}


@pytest.fixture
def server(bot_env: dict[str, str], authorized: Any, tmp_path: Any) -> Iterator[BotServer]:
    from adsync.bot.app import create_app
    from adsync.sync.config import load_settings

    app = create_app(load_settings(bot_env, cwd=tmp_path))
    srv = BotServer(app)
    yield srv
    srv.stop()
    srv.bot.actions.services.close()


def messages(sandbox: Sandbox, chat_id: str = CHAT) -> list[dict[str, Any]]:
    """What the bot posted in ``chat_id`` (people's own messages left out)."""
    found = sandbox.get("/_sandbox/feishu/messages", chat_id=chat_id)["messages"]
    return [m for m in found if m["via"] != "user"]


def say(sandbox: Sandbox, text: str, chat_id: str = CHAT, **kw: Any) -> dict[str, Any]:
    """A person posts ``text`` in the sandbox chat; returns the event the platform delivers."""
    posted = sandbox.post("/_sandbox/feishu/user_message", {"chat_id": chat_id, "text": text})
    kw.setdefault("create_time_ms", posted["create_time"])
    return ev.message_event(
        text,
        token=kw.pop("token", VERIFY_TOKEN),
        chat_id=chat_id,
        message_id=posted["message_id"],
        **kw,
    )


def card_text(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False)


def test_sealed_events_decrypt_back_with_lark_oapis_own_cipher() -> None:
    from lark_oapi.core.utils import AESCipher

    event = ev.message_event("sync yesterday", token=VERIFY_TOKEN)
    delivery = ev.seal(event, ENCRYPT_KEY)
    encrypted = json.loads(delivery.body)["encrypt"]
    assert json.loads(AESCipher(ENCRYPT_KEY).decrypt_str(encrypted)) == event
    headers = delivery.headers
    assert headers["X-Lark-Signature"] == ev.sign(
        headers["X-Lark-Request-Timestamp"],
        headers["X-Lark-Request-Nonce"],
        ENCRYPT_KEY,
        delivery.body,
    )
    # The official test vector from the platform's docs.
    assert (
        AESCipher("test key").decrypt_str("P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=")
        == "hello world"
    )


def test_url_verification_challenge(server: BotServer) -> None:
    ok = server.post_event(ev.url_verification("ch-123", VERIFY_TOKEN))
    assert ok.status_code == 200 and ok.json() == {"challenge": "ch-123"}
    wrong = server.post_event(ev.url_verification("ch-123", "not-the-token"))
    assert wrong.status_code == 401


def test_a_command_is_acked_fast_and_answered_in_the_chat(
    server: BotServer, sandbox: Sandbox
) -> None:
    started = time.monotonic()
    response = server.post_event(say(sandbox, "sync yesterday"))
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 1.0  # the 3-second rule, with a wide margin
    server.idle()
    posted = messages(sandbox)
    assert len(posted) == 1, posted  # the working card, updated in place with the result
    versions = posted[0].get("versions") or []
    assert versions, "the working card was updated with the result"
    assert "2026" in card_text(posted[0]) or "sync" in card_text(posted[0]).lower()
    assert server.bot.handled == 1
    table = sandbox.get("/_sandbox/feishu/tables/bascnSandboxApp0001/tblSandboxDaily01")
    assert table["records"], "the sync wrote rows"


def test_the_retry_ladder_runs_once_and_replies_once(server: BotServer, sandbox: Sandbox) -> None:
    event = say(sandbox, "token status")
    delivery = ev.seal(event, ENCRYPT_KEY)
    statuses = [ev.deliver(server.url + "/feishu/events", delivery).status_code for _ in range(5)]
    assert statuses == [200] * 5
    server.idle()
    assert server.bot.handled == 1
    assert len(messages(sandbox)) == 1
    # A new event id for the same message (the platform's "special case") is a duplicate too.
    again = dict(event, header=dict(event["header"], event_id="another-event-id"))
    assert server.post_event(again).status_code == 200
    server.idle()
    assert server.bot.handled == 1


@pytest.mark.parametrize(
    "tamper",
    ["forged signature", "unsigned", "wrong token", "wrong key", "garbage", "not json", "huge"],
)
def test_forged_or_garbled_requests_are_refused_and_nothing_runs(
    server: BotServer, sandbox: Sandbox, tamper: str
) -> None:
    url = server.url + "/feishu/events"
    event = say(sandbox, "sync yesterday")
    if tamper == "forged signature":
        d = ev.seal(event, ENCRYPT_KEY)
        d.headers["X-Lark-Signature"] = "0" * 64
        response = ev.deliver(url, d)
    elif tamper == "unsigned":
        response = ev.deliver(url, ev.seal(event, ENCRYPT_KEY, signed=False))
    elif tamper == "wrong token":
        response = ev.deliver(url, ev.seal(say(sandbox, "sync yesterday", token="x"), ENCRYPT_KEY))
    elif tamper == "wrong key":
        response = ev.deliver(url, ev.seal(event, "another-key"))
    elif tamper == "garbage":
        response = requests.post(url, data=b'{"encrypt": "%%%not-base64%%%"}', timeout=5)
    elif tamper == "not json":
        response = requests.post(url, data=b"\x00\xff garbage", timeout=5)
    else:
        response = requests.post(
            url, data=b'{"encrypt": "' + b"A" * (2 * 1024 * 1024) + b'"}', timeout=10
        )
    assert 400 <= response.status_code < 500, (tamper, response.status_code, response.text)
    server.idle()
    assert server.bot.handled == 0
    assert messages(sandbox) == []


def test_a_stale_message_is_acknowledged_not_run(server: BotServer, sandbox: Sandbox) -> None:
    old = int((time.time() - 31 * 60) * 1000)
    response = server.post_event(say(sandbox, "sync yesterday", create_time_ms=old))
    assert response.status_code == 200
    server.idle()
    assert server.bot.handled == 0 and messages(sandbox) == []


def test_group_messages_without_a_mention_are_ignored(server: BotServer, sandbox: Sandbox) -> None:
    event = say(sandbox, "sync yesterday", mention_bot=False)
    assert server.post_event(event).status_code == 200
    server.idle()
    assert server.bot.handled == 0


def test_direct_chat_and_chinese(server: BotServer, sandbox: Sandbox) -> None:
    event = say(sandbox, "token 状态", chat_type="p2p", mention_bot=False)
    assert server.post_event(event).status_code == 200
    server.idle()
    assert server.bot.handled == 1
    assert "令牌" in card_text(messages(sandbox)[0]) or "token" in card_text(messages(sandbox)[0])


def test_non_admins_may_read_but_not_sync(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Any
) -> None:
    from adsync.bot.app import create_app
    from adsync.sync.config import load_settings

    settings = load_settings({**bot_env, "ADSYNC_ADMINS": "ou_the_admin"}, cwd=tmp_path)
    srv = BotServer(create_app(settings))
    try:
        srv.post_event(say(sandbox, "sync yesterday", user_id="ou_someone"))
        srv.idle()
        assert srv.bot.handled == 0
        table = sandbox.get("/_sandbox/feishu/tables/bascnSandboxApp0001/tblSandboxDaily01")
        assert table["records"] == []
        denial = card_text(messages(sandbox)[0])
        assert "admin" in denial.lower() or "管理员" in denial
        srv.post_event(say(sandbox, "summary", user_id="ou_someone"))
        srv.idle()
        assert srv.bot.handled == 1
    finally:
        srv.stop()
        srv.bot.actions.services.close()


def test_card_button_answers_at_once_and_queues_the_retry(
    server: BotServer, sandbox: Sandbox
) -> None:
    grant = sandbox.get("/_sandbox/oceanengine/grant")
    account = str(grant["account_ids"][0])
    sent = server.bot.messenger.send(
        CHAT, {"schema": "2.0", "body": {"elements": []}, "config": {"update_multi": True}}, "u1"
    )
    yesterday = server.bot.actions.today() - timedelta(days=1)
    value = {
        "action": "sync_retry",
        "start": str(yesterday),
        "end": str(yesterday),
        "accounts": [account],
    }
    started = time.monotonic()
    response = server.post_event(
        ev.card_action_event(value, token=VERIFY_TOKEN, message_id=sent.message_id)
    )
    assert time.monotonic() - started < 1.0
    assert response.status_code == 200
    assert response.json()["toast"]["type"] == "info"
    server.idle()
    assert server.bot.handled == 1
    card = messages(sandbox)[0]
    assert card.get("versions"), "the card was updated with the retry's result"


def test_bot_added_to_a_chat_says_hello(server: BotServer, sandbox: Sandbox) -> None:
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": "oc_new_team", "bot_member": True})
    event = ev.chat_event("im.chat.member.bot.added_v1", "oc_new_team", token=VERIFY_TOKEN)
    assert server.post_event(event).status_code == 200
    server.idle()
    assert len(messages(sandbox, "oc_new_team")) == 1
    read = ev.chat_event("im.message.message_read_v1", CHAT, token=VERIFY_TOKEN)
    assert server.post_event(read).status_code == 200  # subscribed, handled, never a 500


def test_healthz(server: BotServer) -> None:
    response = requests.get(server.url + "/healthz", timeout=5)
    assert response.status_code == 200 and response.json()["ok"]


def test_oauth_callback_finishes_the_authorization(
    server: BotServer, sandbox: Sandbox, bot_env: dict[str, str]
) -> None:
    tokens = server.bot.actions.services.tokens
    url = tokens.authorization_url(requested_by="test")
    # The sandbox's authorization page consents and redirects to our redirect URI; follow it
    # to this test server instead of the configured host.
    redirect = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]
    query = parse_qs(urlparse(redirect).query)
    callback = f"{server.url}/oauth/oceanengine/callback"
    done = requests.get(callback, params={k: v[0] for k, v in query.items()}, timeout=10)
    assert done.status_code == 200 and "authorized" in done.text
    assert any("授权" in card_text(m) for m in messages(sandbox))
    again = requests.get(callback, params={k: v[0] for k, v in query.items()}, timeout=10)
    assert again.status_code == 400  # a state works once
    forged = requests.get(callback, params={"auth_code": "x", "state": "made-up"}, timeout=10)
    assert forged.status_code == 400


def test_the_long_connection_handler_takes_sdk_event_objects(
    authorized: Any, sandbox: Sandbox, bot_env: dict[str, str], tmp_path: Any
) -> None:
    """The ws path: the SDK hands frames to the dispatcher's ``_do_without_validation``; our
    handlers must take its own event objects, answer card callbacks, and never block."""
    from adsync.bot.app import build_bot, build_dispatcher
    from adsync.bot.dispatch import Dispatcher
    from adsync.sync.config import load_settings

    settings = load_settings(bot_env, cwd=tmp_path)
    bot = build_bot(settings)
    handler = build_dispatcher(settings, bot, for_ws=True)
    event = say(sandbox, "summary", token="")
    started = time.monotonic()
    handler._do_without_validation(json.dumps(event).encode())
    assert time.monotonic() - started < 0.5  # queued, not run on the loop
    bot.start_mover()
    dispatcher = Dispatcher(bot).start()
    assert dispatcher.wait_idle(30)
    assert bot.handled == 1 and len(messages(sandbox)) == 1
    value = {"action": "token_refresh"}
    answer = handler._do_without_validation(
        json.dumps(ev.card_action_event(value, token="")).encode()
    )
    assert answer.toast.type == "info"
    assert dispatcher.wait_idle(30)
    dispatcher.stop()
    bot.stop_mover()
    bot.actions.services.close()


def test_the_watchdog_restarts_a_dead_connection(
    authorized: Any, bot_env: dict[str, str], tmp_path: Any
) -> None:
    from adsync.bot.app import build_bot
    from adsync.bot.ws import LongConnection
    from adsync.sync.config import load_settings

    class HungClient:
        """Stands in for a lark ws.Client stuck in endpoint discovery: never connects."""

        started = 0

        def __init__(self, _handler: Any) -> None:
            self._conn = None

        def start(self) -> None:
            HungClient.started += 1
            threading.Event().wait(5)

    settings = load_settings(bot_env, cwd=tmp_path)
    bot = build_bot(settings)
    conn = LongConnection(settings, bot, down_limit=0.05, client_factory=HungClient)
    conn._launch()
    assert not conn.check()  # down, but not for long
    deadline = time.monotonic() + 5
    while not conn.check():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert conn.restarts == 1 and HungClient.started >= 1
    bot.actions.services.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _nested(depth: int, opener: bytes, closer: bytes, closed: bool) -> bytes:
    """``depth`` levels of ``opener`` (``[`` or ``{"a":``), closed or left open."""
    return opener * depth + (b"1" + closer * depth if closed else b"")


# Deep enough that json.loads raises RecursionError (not ValueError) somewhere in the range.
deep_bodies = st.builds(
    _nested,
    st.integers(min_value=500, max_value=60_000),
    st.sampled_from([b"[", b'{"a":', b'{"encrypt": "x", "a": [']),
    st.sampled_from([b"]", b"}"]),
    st.booleans(),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.text(max_size=200).map(lambda t: json.dumps({"encrypt": t}).encode()),
        deep_bodies,
    )
)
def test_arbitrary_bodies_never_get_a_500(server: BotServer, body: bytes) -> None:
    response = requests.post(server.url + "/feishu/events", data=body, timeout=5)
    assert response.status_code < 500, (body[:80], response.status_code, response.text[:200])


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    event=st.dictionaries(
        st.sampled_from(["schema", "header", "event", "type", "uuid", "token", "challenge"]),
        json_values,
        max_size=5,
    )
)
def test_signed_and_encrypted_nonsense_never_gets_a_500(
    server: BotServer, event: dict[str, Any]
) -> None:
    """Correctly sealed (so it passes the signature) but structurally anything."""
    response = server.post_event(event)
    assert response.status_code < 500, (event, response.status_code, response.text[:200])


def test_adsync_serve_runs_the_app_under_gunicorn_with_the_clock(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Any
) -> None:
    """The real `adsync serve`: gunicorn, the app factory, the scheduler in-process. The clock
    catches up on today's daily run at start (its 07:00 has passed or not: both are checked)."""
    import os
    import signal
    import subprocess
    import sys
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from sqlalchemy import select

    from adsync.sync.store import runs

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "adsync", "serve", "--port", str(port)],
        env={"PATH": os.environ.get("PATH", ""), **bot_env},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, proc, lambda: proc.stderr.read() if proc.stderr else "")
        event = say(sandbox, "token status")
        assert ev.deliver(url + "/feishu/events", ev.seal(event, ENCRYPT_KEY)).status_code == 200
        asked = event["event"]["message"]["message_id"]
        deadline = time.monotonic() + 30
        # The reply to that message (the catch-up's report card may land in the chat first).
        while not [m for m in messages(sandbox) if m["parent_id"] == asked]:
            assert time.monotonic() < deadline, "no answer from the served bot"
            time.sleep(0.1)
        due_passed = datetime.now(ZoneInfo("Asia/Shanghai")).hour >= 7
        if due_passed:  # the catch-up ran the daily job in the served process
            deadline = time.monotonic() + 60
            while True:
                with authorized.store.engine.connect() as conn:
                    found = conn.execute(select(runs).where(runs.c.trigger == "schedule")).all()
                if found and found[0].status != "running":
                    break
                assert time.monotonic() < deadline, "the clock did not catch up"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_adsync_clock_catches_up_and_stops_on_sigterm(
    env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Any
) -> None:
    """The Procfile's clock process: `adsync clock` in a UTC process. With today's daily time in
    Asia/Shanghai already past (00:00 here, so the test means the same at any hour of the
    day), it runs the daily job at once and posts the report. SIGTERM stops it cleanly."""
    import os
    import signal
    import subprocess
    import sys

    from sqlalchemy import select

    from adsync.sync.store import runs

    proc = subprocess.Popen(
        [sys.executable, "-m", "adsync", "clock"],
        env={
            "PATH": os.environ.get("PATH", ""),
            "TZ": "UTC",
            **env,
            "ADSYNC_DAILY_SYNC_AT": "00:00",
        },
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            # The run is marked finished before the report card is posted: wait for both.
            with authorized.store.engine.connect() as conn:
                found = conn.execute(select(runs).where(runs.c.trigger == "schedule")).all()
            posted = [m for m in messages(sandbox) if m["msg_type"] == "interactive"]
            if found and found[0].status != "running" and posted:
                assert found[0].status == "ok"
                assert len(found) == 1
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the clock did not catch up and report"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, out[-2000:]
    assert "clock stopped" in out
