"""Databases that come and go, on both backends: a database locked by another process fails a
call within ADSYNC_DB_WAIT (a card action is acknowledged within Feishu's 3 s, never the 60 s
it took), with a message naming the lock, and works again once the lock is released; a served
bot rides out PostgreSQL dropping its connections during a burst (pg_terminate_backend of that
server's own sessions: the shared server is never restarted) and answers every message once;
tables dropped under a running server are created again by it; a commit whose answer is lost is
rerun only when the transaction is idempotent."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from sqlalchemy import event, insert, select, text

from adsync.sandbox import events as ev
from adsync.sync.errors import StoreError
from adsync.sync.store import Store, dedup, oauth_states

from .conftest import PG_URL, Sandbox, _pg_available, free_port, report, stop_gently, wait_serving
from .test_bot import (  # noqa: F401 - fixtures
    ENCRYPT_KEY,
    VERIFY_TOKEN,
    BotServer,
    bot_env,
    messages,
    say,
    server,
)

LOCKER = {
    # Another program holding the write lock: a sqlite3 shell in a transaction, a backup.
    "sqlite": """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
""",
    # Another session locking the tables adsync writes on the way to an answer (reads go on).
    "postgresql": """
import psycopg, sys
with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("LOCK TABLE dedup, oauth_states IN SHARE ROW EXCLUSIVE MODE")
    print("locked", flush=True)
    sys.stdin.readline()
""",
}


def _plain(db_url: str) -> str:
    return db_url.replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def locked_by_another_process(db_url: str) -> Iterator[None]:
    """The database's write lock held by another process until the block ends."""
    if db_url.startswith("sqlite"):
        target, script = db_url.removeprefix("sqlite:///"), LOCKER["sqlite"]
    else:
        target, script = _plain(db_url), LOCKER["postgresql"]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, target],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield
    finally:
        if proc.stdin is not None:
            proc.stdin.write("go\n")
            proc.stdin.close()
        proc.wait(timeout=30)


def test_a_database_locked_by_another_process_fails_fast_naming_the_lock_then_works(
    db_url: str, env: dict[str, str], cli: Any
) -> None:
    store = Store(db_url)
    ttl = timedelta(hours=1)
    with locked_by_another_process(db_url):
        began = time.monotonic()
        with pytest.raises(StoreError) as err:
            store.claim("evt:locked", ttl)
        took = time.monotonic() - began
        assert took < 3.0, f"a claim on a locked database took {took:.1f} s"
        assert "lock" in err.value.message and store.url_for_humans in err.value.message
        assert "try again" in err.value.hint
        if db_url.startswith("sqlite"):
            assert "locked by another process" in err.value.message
            assert "sqlite3 shell" in err.value.hint
        assert store.lease_holder("anything") is None  # reads go on meanwhile
        began = time.monotonic()
        refused = cli(["auth", "url"], env)
        took_cli = time.monotonic() - began
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "lock" in refused.stderr and took_cli < 6.0
        report(
            f"locked {store.dialect}: a claim failed after {took:.2f} s, the CLI in {took_cli:.2f} s"
        )
    assert store.claim("evt:locked", ttl)  # released: works, and nothing half-done remains
    assert not store.claim("evt:locked", ttl)
    done = cli(["auth", "url"], env)
    assert done.returncode == 0, done.stderr
    store.dispose()


def test_a_card_action_on_a_locked_database_is_answered_within_feishus_3_seconds(
    server: BotServer,  # noqa: F811 - the fixture imported above
    sandbox: Sandbox,
    db_url: str,
) -> None:
    """The press is written to disk and answered at once (the durable queue needs no database
    to acknowledge), and runs once the lock is gone."""
    value = {"action": "token_refresh", "lang": "en"}
    with locked_by_another_process(db_url):
        began = time.monotonic()
        response = server.post_event(ev.card_action_event(value, token=VERIFY_TOKEN))
        took = time.monotonic() - began
        assert response.status_code == 200
        assert took < 3.0, f"the card action was answered after {took:.1f} s"
        assert response.json()["toast"]["type"] == "info"
        assert server.bot.handled == 0
    server.idle()
    assert server.bot.handled == 1  # the lock is gone: it ran, once


# -- PostgreSQL dropping connections and tables under a running `adsync serve` -----------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A schema of its own on the shared PostgreSQL (as ``db_url``'s PostgreSQL lane)."""
    problem = _pg_available()
    if problem:
        if os.environ.get("ADSYNC_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but not reachable at {PG_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {problem}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_plain(PG_URL), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(_plain(PG_URL), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _schema(url: str) -> str:
    return url.rsplit("search_path%3D", 1)[1]


def _terminate(app_name: str) -> int:
    """End every session of the server under test (only those: by its application_name)."""
    with psycopg.connect(_plain(PG_URL), autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (app_name,),
        ).fetchone()
    return int(killed[0]) if killed else 0


@contextlib.contextmanager
def served(env: dict[str, str], cwd: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "adsync", "serve", "--no-clock", "--port", str(port)],
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, proc, lambda: proc.stderr.read() if proc.stderr else "")
        yield url
    finally:
        stop_gently(proc)


def _answers(sandbox: Sandbox, asked: dict[str, str], timeout: float = 90) -> dict[str, list[Any]]:
    """Every asked message's replies, once each has at least one (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        replies: dict[str, list[Any]] = {m: [] for m in asked}
        for chat in set(asked.values()):
            for message in messages(sandbox, chat):
                if message["parent_id"] in replies:
                    replies[message["parent_id"]].append(message)
        if all(replies.values()) or time.monotonic() > deadline:
            return replies
        time.sleep(0.2)


def test_a_served_bot_rides_out_postgresql_dropping_its_connections_and_tables(
    pg_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    from adsync.sync.config import load_settings
    from adsync.sync.services import open_services

    from .conftest import FEISHU_APP_ID, FEISHU_SECRET, OE_APP_ID, OE_SECRET

    app_name = f"adsync-test-{uuid.uuid4().hex[:8]}"
    base = {
        "OCEANENGINE_APP_ID": OE_APP_ID,
        "OCEANENGINE_APP_SECRET": OE_SECRET,
        "OCEANENGINE_API_BASE": sandbox.url,
        "OCEANENGINE_REDIRECT_URI": "http://127.0.0.1:8000/oauth/oceanengine/callback",
        "FEISHU_APP_ID": FEISHU_APP_ID,
        "FEISHU_APP_SECRET": FEISHU_SECRET,
        "FEISHU_DOMAIN": sandbox.url,
        "FEISHU_BITABLE_APP_TOKEN": "bascnSandboxApp0001",
        "FEISHU_BITABLE_TABLE_ID": "tblSandboxDaily01",
        "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY,
        "FEISHU_VERIFICATION_TOKEN": VERIFY_TOKEN,
        "ADSYNC_DATA_DIR": str(tmp_path / "data"),
        "ADSYNC_DATABASE_URL": pg_url,
    }
    services = open_services(load_settings(base, cwd=tmp_path))
    services.tokens.authorize(sandbox.auth_code())
    services.close()
    chats = [f"oc_outage_{i}" for i in range(4)]
    for chat in chats:
        sandbox.post("/_sandbox/feishu/chats", {"chat_id": chat, "bot_member": True})
    served_env = {**base, "ADSYNC_DATABASE_URL": f"{pg_url}&application_name={app_name}"}
    with served(served_env, tmp_path) as url:
        # A burst of commands while every session of the server is killed, ten times a second.
        asked: dict[str, str] = {}
        commands = ["token status", "history", "summary", "accounts"]
        killed: list[int] = []

        def burst() -> None:
            for i in range(24):
                chat = chats[i % len(chats)]
                event = say(sandbox, commands[i % len(commands)], chat)
                asked[event["event"]["message"]["message_id"]] = chat
                answer = ev.deliver(url + "/feishu/events", ev.seal(event, ENCRYPT_KEY))
                assert answer.status_code == 200
                time.sleep(0.06)

        sender = threading.Thread(target=burst)
        sender.start()
        while sender.is_alive():  # and on, while the answers are being worked out
            killed.append(_terminate(app_name))
            time.sleep(0.1)
        sender.join(timeout=60)
        replies = _answers(sandbox, asked)
        counts = [len(r) for r in replies.values()]
        assert counts == [1] * 24, f"answers per message: {counts}"
        for found in replies.values():
            assert "database" not in str(found[0]), found[0]  # answered, not an outage notice
        assert sum(killed) > 0, "no session of the server was ever killed"
        report(
            f"postgresql: {sum(killed)} server sessions killed during 24 commands, each answered once"
        )

        # The schema dropped and recreated (a database restored empty): the running server
        # creates its tables again and answers (the authorization went with the data).
        schema = _schema(pg_url)
        with psycopg.connect(_plain(PG_URL), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{schema}"')
        event = say(sandbox, "token status", chats[0])
        asked = {event["event"]["message"]["message_id"]: chats[0]}
        assert ev.deliver(url + "/feishu/events", ev.seal(event, ENCRYPT_KEY)).status_code == 200
        (reply,) = _answers(sandbox, asked, timeout=30)[event["event"]["message"]["message_id"]]
        assert "auth" in str(reply).lower()  # "not authorized yet", with what to do
        health = requests.get(url + "/healthz", timeout=5)
        assert health.status_code == 200, health.text
    with psycopg.connect(_plain(pg_url), autocommit=True) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        }
    assert {"tokens", "dedup", "runs", "schema_version"} <= tables


def test_a_commit_whose_answer_is_lost_is_rerun_only_when_idempotent(pg_url: str) -> None:
    """The commit reaches the server, then the connection dies before its answer: the one
    case where the outcome is unknown to adsync. A claim (idempotent by its owner token) is
    rerun and still wins, once; a plain insert is not rerun, and says so."""
    store = Store(pg_url)
    lose_next = {"n": 0}

    @event.listens_for(store.engine, "commit")
    def _lose_the_answer(conn: Any) -> None:
        if lose_next["n"] <= 0:
            return
        lose_next["n"] -= 1
        dbapi = conn.connection.dbapi_connection
        commit = dbapi.commit

        def commit_then_drop() -> None:
            commit()  # applied on the server
            dbapi.commit = commit
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        dbapi.commit = commit_then_drop

    ttl = timedelta(hours=1)
    lose_next["n"] = 1
    assert store.claim_all(["evt:lost-answer", "msg:lost-answer"], ttl)  # rerun: still ours
    assert not store.claim_all(["evt:lost-answer"], ttl)  # and claimed exactly once
    with store.connect() as conn:
        keys = sorted(conn.execute(select(dedup.c.key)).scalars())
    assert keys == ["evt:lost-answer", "msg:lost-answer"]
    lose_next["n"] = 1
    now = datetime.now(UTC)
    with pytest.raises(StoreError) as err:
        store.transact(
            lambda conn: conn.execute(
                insert(oauth_states).values(state="s1", created_at=now, expires_at=now + ttl)
            )
        )
    assert "whether the change was saved is unknown" in err.value.message
    with store.connect() as conn:  # it did land: a blind rerun would have hit the duplicate
        assert conn.execute(text("SELECT count(*) FROM oauth_states")).scalar() == 1
    store.dispose()


def test_tables_that_cannot_be_created_again_are_a_clear_error_on_every_call(pg_url: str) -> None:
    """The schema itself is gone (dropped, not recreated): nothing to create tables in. Every
    call says so and what to do; nothing is created anywhere else (no other schema)."""
    store = Store(pg_url)
    schema = _schema(pg_url)
    with psycopg.connect(_plain(PG_URL), autocommit=True) as conn:
        in_public = "SELECT to_regclass('public.dedup') IS NOT NULL"
        before = conn.execute(in_public).fetchone()
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    for _ in range(2):
        with pytest.raises(StoreError) as err:
            store.claim("evt:gone", timedelta(hours=1))
        assert "lost adsync's tables and they cannot be created again" in err.value.message
        assert "restart adsync" in err.value.hint
    with psycopg.connect(_plain(PG_URL), autocommit=True) as conn:
        assert conn.execute(in_public).fetchone() == before  # nothing created elsewhere
        conn.execute(f'CREATE SCHEMA "{schema}"')  # back (empty): the next call recreates
    assert store.claim("evt:gone", timedelta(hours=1))
    store.dispose()
