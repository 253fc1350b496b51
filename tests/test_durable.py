"""A chat that never waits, and commands that survive their process: a running server, real
HTTP, on both backends — in this process where the claim is about the worker, in real
processes (``adsync serve``, ``adsync worker``, ``kill -9``) where it is about processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from adsync.sandbox import events as ev
from adsync.sync.store import runs, utcnow

from .conftest import Sandbox, report
from .test_bot import CHAT, ENCRYPT_KEY, VERIFY_TOKEN, BotServer, messages, say

REPORT_PATHS = ("/open_api/v3.0/local/report/",)


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def replies_to(sandbox: Sandbox, message_id: str, chat_id: str = CHAT) -> list[dict[str, Any]]:
    return [m for m in messages(sandbox, chat_id) if m["parent_id"] == message_id]


def final_text(message: dict[str, Any]) -> str:
    return json.dumps(message["versions"][-1]["content"], ensure_ascii=False)


def is_working(message: dict[str, Any]) -> bool:
    text = final_text(message)
    return "Working on it" in text or "正在处理" in text


def report_calls(sandbox: Sandbox) -> int:
    calls = sandbox.stats()["calls"]
    return sum(n for path, n in calls.items() if any(p in path for p in REPORT_PATHS))


def add_chat(sandbox: Sandbox, chat_id: str) -> None:
    sandbox.post("/_sandbox/feishu/chats", {"chat_id": chat_id, "bot_member": True})


@pytest.fixture
def bot_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY, "FEISHU_VERIFICATION_TOKEN": VERIFY_TOKEN}


@pytest.fixture
def served(bot_env: dict[str, str], authorized: Any, tmp_path: Path) -> Iterator[BotServer]:
    from adsync.bot.app import create_app
    from adsync.sync.config import load_settings

    srv = BotServer(create_app(load_settings(bot_env, cwd=tmp_path)))
    yield srv
    srv.stop()
    srv.bot.actions.services.close()


def slow_reports(sandbox: Sandbox, ms: int) -> None:
    """Every Ocean Engine report call takes ``ms``: a sync of the sandbox's accounts takes a
    few seconds, as a real one of a week does."""
    sandbox.faults(oceanengine={"latency_ms": ms, "paths": list(REPORT_PATHS)})


# -- a chat that never waits ------------------------------------------------------------------


def test_a_read_in_a_chat_whose_sync_is_running_is_answered_within_a_second(
    served: BotServer, sandbox: Sandbox
) -> None:
    """The incident: "sync" (~8 s) then "token status" in one chat; the token status answer
    came after 7.8 s, behind the sync."""
    slow_reports(sandbox, 1500)
    today = served.bot.actions.today()
    sync = say(sandbox, f"sync {today - timedelta(days=7)}..{today - timedelta(days=1)}")
    assert served.post_event(sync).status_code == 200
    sync_id = sync["event"]["message"]["message_id"]
    wait_until(lambda: replies_to(sandbox, sync_id), 10, "the sync's working card")
    timings = []
    for text in ("token status", "help", "history"):
        read = say(sandbox, text)
        read_id = read["event"]["message"]["message_id"]
        asked = time.monotonic()
        assert served.post_event(read).status_code == 200
        wait_until(lambda rid=read_id: replies_to(sandbox, rid), 5, f"the answer to {text}")
        timings.append(time.monotonic() - asked)
        assert is_working(replies_to(sandbox, sync_id)[0]), "the sync was still running"
    report(
        "busy chat: reads answered in "
        + ", ".join(f"{t * 1000:.0f} ms" for t in timings)
        + " while the chat's sync ran"
    )
    assert max(timings) < 1.0, timings
    served.idle(120)
    assert not is_working(replies_to(sandbox, sync_id)[0]), "the sync's card got its result"
    # The reads were answered in the order they were asked.
    order = [m["parent_id"] for m in messages(sandbox) if m["parent_id"] != sync_id]
    assert len(order) == 3 and order == sorted(order, key=order.index)


def test_the_same_sync_asked_twice_makes_one_set_of_report_calls_and_one_result(
    served: BotServer, sandbox: Sandbox
) -> None:
    """The incident: the same sync asked while the first ran made 56 report calls where one
    sync makes 40. Now the second asker joins the first: "already running, I will update this
    card" at once, then the same result."""
    other = "oc_second_team"
    add_chat(sandbox, other)
    today = served.bot.actions.today()
    dates = f"{today - timedelta(days=3)}..{today - timedelta(days=1)}"
    before = report_calls(sandbox)
    alone = say(sandbox, f"sync {dates}")
    served.post_event(alone)
    served.idle(120)
    one_sync = report_calls(sandbox) - before
    assert one_sync > 0

    slow_reports(sandbox, 1000)
    before = report_calls(sandbox)
    first = say(sandbox, f"sync {dates}")
    again = say(sandbox, f"sync {dates}")  # the same chat: the incident's 56 calls
    second = say(sandbox, f"同步 {dates}", chat_id=other)
    assert served.post_event(first).status_code == 200
    first_id = first["event"]["message"]["message_id"]
    wait_until(lambda: replies_to(sandbox, first_id), 10, "the first sync to start")
    answered_in = []
    for event, chat in ((again, CHAT), (second, other)):
        asked = time.monotonic()
        assert served.post_event(event).status_code == 200
        event_id = event["event"]["message"]["message_id"]
        joined = wait_until(
            lambda e=event_id, c=chat: replies_to(sandbox, e, c), 5, "the joiner's answer"
        )
        answered_in.append(time.monotonic() - asked)
        text = final_text(joined[0])
        assert "already running" in text or "正在进行" in text, text
    served.idle(120)
    two_syncs = report_calls(sandbox) - before
    report(
        f"overlapping syncs: {two_syncs} report calls for three identical syncs (two chats), "
        f"{one_sync} for one; the joiners answered in "
        + ", ".join(f"{t * 1000:.0f} ms" for t in answered_in)
    )
    assert two_syncs == one_sync
    [mine] = replies_to(sandbox, first_id)
    [mine_again] = replies_to(sandbox, again["event"]["message"]["message_id"])
    [theirs] = replies_to(sandbox, second["event"]["message"]["message_id"], other)
    assert not is_working(mine) and not is_working(theirs)
    assert final_text(mine_again) == final_text(mine)
    # One run, shown to both askers (each in their language).
    with served.bot.store.engine.connect() as conn:
        chat_runs = conn.execute(select(runs.c.id).where(runs.c.trigger == "chat")).all()
    assert len(chat_runs) == 2  # the one alone, and the one both askers share
    run_id = str(chat_runs[-1].id)
    assert run_id in final_text(mine) and run_id in final_text(theirs)
    assert "同步" in final_text(theirs)


def test_an_event_that_cannot_be_written_down_is_not_acknowledged(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The disk under the spool refuses (here: its directory's name is taken by a file). A
    200 would lose the command — Feishu never re-delivers what it got a 200 for — so the
    answer is 503, and the platform's re-delivery, once the disk is fixed, is answered."""
    from adsync.bot.app import create_app
    from adsync.sync.config import load_settings

    settings = load_settings(bot_env, cwd=tmp_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    blocker = settings.data_dir / "spool"
    blocker.write_text("not a directory")
    srv = BotServer(create_app(settings))
    try:
        event = say(sandbox, "token status")
        first = srv.post_event(event)
        assert first.status_code == 503, first.text
        srv.idle()
        assert messages(sandbox) == [] and srv.bot.handled == 0
        blocker.unlink()
        again = srv.post_event(event)  # the platform's re-delivery
        assert again.status_code == 200
        srv.idle()
        assert len(replies_to(sandbox, event["event"]["message"]["message_id"])) == 1
    finally:
        srv.stop()
        srv.bot.actions.services.close()


def test_a_command_whose_process_keeps_dying_is_given_up_and_the_chat_told(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A command that took its process down every time it ran (the state the queue holds after
    the fourth crash: running, held by a process that is gone) is not run a fifth time: the
    chat gets "I tried 4 times", and the chat's next command runs."""
    from sqlalchemy import update

    from adsync.bot.app import create_app
    from adsync.bot.dispatch import Dispatcher
    from adsync.sync.config import load_settings
    from adsync.sync.queue import FAILED, MAX_ATTEMPTS, RUNNING
    from adsync.sync.store import jobs

    srv = BotServer(create_app(load_settings(bot_env, cwd=tmp_path)), worker=False)
    try:
        poison, after = say(sandbox, "summary"), say(sandbox, "help")
        assert srv.post_event(poison).status_code == 200
        assert srv.post_event(after).status_code == 200
        poison_id = poison["event"]["message"]["message_id"]
        store = srv.bot.store
        wait_until(lambda: srv.bot.queue.open_count() == 2, 10, "both commands queued")
        with store.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.message_id == poison_id)
                .values(
                    state=RUNNING,
                    holder=f"{socket.gethostname()}:999999999:queue",  # no such process
                    attempts=MAX_ATTEMPTS,
                    lease_until=utcnow() + timedelta(minutes=1),
                )
            )
        srv.dispatcher = Dispatcher(srv.bot).start()
        srv.idle()
        [told] = replies_to(sandbox, poison_id)
        assert "tried 4 times" in final_text(told), final_text(told)
        assert replies_to(sandbox, after["event"]["message"]["message_id"])
        with store.engine.connect() as conn:
            state = conn.execute(select(jobs.c.state).where(jobs.c.message_id == poison_id))
            assert state.scalar() == FAILED
        assert srv.bot.handled == 1  # the help; the summary was not run a fifth time
    finally:
        srv.stop()
        srv.bot.actions.services.close()


# -- commands that survive their process --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A real adsync process (``adsync serve`` unless ``argv`` says otherwise), in a process
    group of its own so a kill takes it whole, as a crashed machine or container would be."""

    def __init__(
        self, env: dict[str, str], cwd: Path, argv: list[str] | None = None, port: int = 0
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if argv is None:
            argv = ["-m", "adsync", "serve", "--port", str(self.port)]
        self.log = (cwd / f"process-{self.port}-{time.monotonic_ns()}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            env={"PATH": os.environ.get("PATH", ""), **env},
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self, timeout: float = 90) -> Served:
        def up() -> bool:
            assert self.proc.poll() is None, f"the server exited: {self.output()[-3000:]}"
            try:
                return requests.get(self.url + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout, "the server to come up", every=0.1)
        return self

    def deliver(self, delivery: ev.Delivery) -> int | None:
        try:
            return ev.deliver(self.url + "/feishu/events", delivery, timeout=5).status_code
        except requests.RequestException:
            return None

    def kill9(self) -> None:
        """The whole tree at once (the worker `serve` starts has a session of its own), as a
        machine or container dies."""
        import psutil

        tree = psutil.Process(self.proc.pid).children(recursive=True)
        with_group(self.proc, signal.SIGKILL)
        for child in tree:
            with contextlib.suppress(psutil.Error):
                child.kill()
        self.proc.wait(30)

    def stop(self) -> int:
        with_group(self.proc, signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            with_group(self.proc, signal.SIGKILL)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")


def with_group(proc: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def test_kill_9_of_the_server_around_20_commands_answers_each_exactly_once(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path, db_url: str
) -> None:
    """The incident: `kill -9` right after a "sync" was acknowledged — never answered after
    the restart (Feishu got its 200 and does not re-deliver); killed 18 ms later, the "working
    on it" card was never updated and the run stayed `running` for good. Here the whole server
    (web, worker, clock) is killed at random moments while 20 commands are delivered and
    answered, and restarted; a delivery that got no 200 is delivered again, as Feishu does."""
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    slow_reports(sandbox, 300)
    env = {**bot_env, "ADSYNC_DAILY_SYNC_AT": "23:59"}  # no catch-up run in the way
    texts = ["sync yesterday", "token status", "summary", "history", "help", "accounts"]
    asked = [say(sandbox, texts[i % len(texts)]) for i in range(20)]
    ids = [e["event"]["message"]["message_id"] for e in asked]
    kills_at = sorted(rng.sample(range(1, 21), 3))  # after that many acknowledgements
    server = Served(env, tmp_path).ready()
    kills = 0
    try:
        for n, event in enumerate(asked, start=1):
            delivery = ev.seal(event, ENCRYPT_KEY)
            while server.deliver(delivery) != 200:  # the platform's retry
                time.sleep(0.2)
            if n in kills_at:
                time.sleep(rng.uniform(0, 1.5))  # somewhere in the work that follows
                server.kill9()
                kills += 1
                server = Served(env, tmp_path, port=server.port).ready()
        time.sleep(rng.uniform(0, 1.0))
        server.kill9()  # once more, with the last commands in flight
        kills += 1
        server = Served(env, tmp_path, port=server.port).ready()

        def all_answered() -> bool:
            found = [replies_to(sandbox, i) for i in ids]
            return all(f and not is_working(f[-1]) for f in found)

        wait_until(all_answered, 180, "every command's answer", every=0.2)
    finally:
        code = server.stop()
    counts = [len(replies_to(sandbox, i)) for i in ids]
    dedups = sandbox.stats("feishu").get("message_dedups", 0)
    report(
        f"kill -9 around 20 commands ({db_url.split(':')[0]}, seed {seed}): {kills} kills, "
        f"every command answered once; {dedups} repeated posts dropped by their uuid"
    )
    assert counts == [1] * 20, (seed, counts)
    assert code == 0, server.output()[-3000:]
    with authorized.store.engine.connect() as conn:
        left = conn.execute(select(runs.c.id).where(runs.c.status == "running")).all()
    assert not left, f"runs left running: {left} (seed {seed})"


def test_a_locked_database_delays_no_acknowledgement_and_loses_nothing(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path, db_url: str
) -> None:
    """The incident: SQLite held locked by another process for 75 s — the message was
    acknowledged, its job failed "database is locked" and was never answered; a card action
    took 60 s to acknowledge. Here another process holds the database (SQLite: the file's
    write lock; PostgreSQL: the queue's table) through a burst of 30 messages and a button
    press: every acknowledgement under a second, every message answered once after."""
    env = {**bot_env, "ADSYNC_DAILY_SYNC_AT": "23:59"}
    server = Served(env, tmp_path).ready()
    for chat in ("oc_locked_b", "oc_locked_c"):
        add_chat(sandbox, chat)
    hold = 6.0  # three times the database wait (ADSYNC_DB_WAIT): the mover's tries fail
    if db_url.startswith("sqlite"):
        database = db_url.removeprefix("sqlite:///")
        take = (
            "import sqlite3\n"
            f"conn = sqlite3.connect({database!r}, isolation_level=None)\n"
            "conn.execute('BEGIN EXCLUSIVE')\n"
        )
    else:
        conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
        take = (
            "import psycopg\n"
            f"conn = psycopg.connect({conninfo!r})\n"
            "conn.execute('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE')\n"
        )
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            take + "import time\n"
            "print('locked', flush=True)\n"
            f"time.sleep({hold})\n"
            "conn.commit() if hasattr(conn, 'commit') else None\n"
            "conn.close()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()
        # Three chats: Feishu takes 5 messages a second in one chat, and the answers are due
        # when the lock ends.
        chats = [CHAT, "oc_locked_b", "oc_locked_c"]
        texts = ["token status", "summary", "history", "help", "accounts"]
        asked = [say(sandbox, texts[i % 5], chat_id=chats[i % 3]) for i in range(29)]
        asked.insert(10, say(sandbox, "sync yesterday"))
        acks = []
        for event in asked:
            started = time.monotonic()
            assert server.deliver(ev.seal(event, ENCRYPT_KEY)) == 200
            acks.append(time.monotonic() - started)
        from adsync.bot.messenger import Messenger

        blank = {"schema": "2.0", "body": {"elements": []}, "config": {"update_multi": True}}
        sent = Messenger(authorized.settings).send(CHAT, blank, "locked-card").message_id
        started = time.monotonic()
        value = {"action": "token_refresh"}
        card = ev.card_action_event(value, token=VERIFY_TOKEN, message_id=sent)
        response = ev.deliver(server.url + "/feishu/events", ev.seal(card, ENCRYPT_KEY))
        card_ack = time.monotonic() - started
        assert response.status_code == 200 and response.json()["toast"]["type"] == "info"
        still_locked = time.monotonic() - locked_at < hold
        assert still_locked, "the burst outlasted the lock: make the lock longer"
        assert locker.wait(hold + 30) == 0
        ids = [
            (e["event"]["message"]["message_id"], e["event"]["message"]["chat_id"]) for e in asked
        ]

        def all_answered() -> bool:
            found = [replies_to(sandbox, i, chat) for i, chat in ids]
            return all(f and not is_working(f[-1]) for f in found)

        wait_until(all_answered, 120, "every answer after the lock", every=0.2)
        counts = [len(replies_to(sandbox, i, chat)) for i, chat in ids]
        report(
            f"{db_url.split(':')[0]} locked {hold:.0f} s by another process: 30 "
            "acknowledgements, slowest "
            f"{max(acks) * 1000:.0f} ms; a button {card_ack * 1000:.0f} ms; all answered once"
        )
        assert max(acks) < 1.0 and card_ack < 1.0, (acks, card_ack)
        assert counts == [1] * 30
    finally:
        if locker.poll() is None:
            locker.kill()
        server.stop()


def test_two_servers_on_one_database_answer_200_messages_in_20_chats_once_and_in_order(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path, db_url: str
) -> None:
    """Two `adsync serve` processes (each with its worker) on one database, the platform
    delivering to either: every message answered exactly once, each chat's answers in the
    order its messages were written."""
    env = {**bot_env, "ADSYNC_DAILY_SYNC_AT": "23:59"}
    servers = []
    for i in range(2):
        home = tmp_path / f"instance{i}"
        home.mkdir()
        port = free_port()
        argv = ["-m", "adsync", "serve", "--no-clock", "--port", str(port)]
        servers.append(Served({**env, "ADSYNC_DATA_DIR": str(home / "data")}, home, argv, port))
    chats = [f"oc_team_{i:02d}" for i in range(20)]
    for chat in chats:
        add_chat(sandbox, chat)
    texts = ["token status", "help", "history", "accounts", "帮助"]
    asked: dict[str, list[str]] = {c: [] for c in chats}
    deliveries = []
    for n in range(200):
        chat = chats[n % len(chats)]
        event = say(sandbox, texts[n % len(texts)], chat_id=chat)
        asked[chat].append(event["event"]["message"]["message_id"])
        deliveries.append(ev.seal(event, ENCRYPT_KEY))
    try:
        for server in servers:
            server.ready()
        rng = random.Random(7)
        started = time.monotonic()
        for delivery in deliveries:
            target = servers[rng.randrange(2)]
            assert target.deliver(delivery) == 200
            if rng.random() < 0.3:  # and the platform's duplicate, to the other one
                assert servers[1 - servers.index(target)].deliver(delivery) == 200

        def all_answered() -> bool:
            return all(
                len([m for m in messages(sandbox, c) if m["parent_id"]]) >= len(asked[c])
                for c in chats
            )

        wait_until(all_answered, 180, "every answer", every=0.2)
        took = time.monotonic() - started
        for chat in chats:
            answers = [m["parent_id"] for m in messages(sandbox, chat) if m["parent_id"]]
            assert answers == asked[chat], chat
        report(
            f"two adsync serve on {db_url.split(':')[0]}: 200 messages in 20 chats answered "
            f"once each, in order, in {took:.1f} s"
        )
    finally:
        for server in servers:
            assert server.stop() == 0, server.output()[-3000:]


def test_the_procfiles_web_and_worker_processes_answer_and_stop_cleanly(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The Procfile's split: `web` (gunicorn on the app factory) only acknowledges; `adsync
    worker` answers. Without the worker nothing is lost, only waiting; SIGTERM stops both."""
    procfile = (Path(__file__).resolve().parent.parent / "Procfile").read_text()
    lines = dict(line.split(":", 1) for line in procfile.splitlines() if ":" in line)
    assert lines["worker"].strip() == "adsync worker"
    port = free_port()
    argv = shlex.split(lines["web"].strip())
    assert argv[0] == "gunicorn"
    # $PORT, as a platform sets it; loopback only (the command line's --bind wins).
    env = {**bot_env, "ADSYNC_DAILY_SYNC_AT": "23:59", "PORT": str(port)}
    bind = ["--bind", f"127.0.0.1:{port}"]
    web = Served(env, tmp_path, ["-m", "gunicorn", *argv[1:-1], *bind, argv[-1]], port=port)
    worker = None
    try:
        web.ready()
        event = say(sandbox, "token status")
        asked = event["event"]["message"]["message_id"]
        assert web.deliver(ev.seal(event, ENCRYPT_KEY)) == 200
        time.sleep(1.0)
        assert replies_to(sandbox, asked) == [], "the web process answers nothing itself"
        worker = Served(env, tmp_path, ["-m", "adsync", "worker"])
        wait_until(lambda: replies_to(sandbox, asked), 60, "the worker's answer")
        assert worker.stop() == 0, worker.output()[-3000:]
        assert "worker stopped" in worker.output()
    finally:
        if worker is not None and worker.proc.poll() is None:
            worker.kill9()
        web.stop()


def test_commands_nobody_takes_make_healthz_and_doctor_say_stalled_until_a_worker_runs(
    bot_env: dict[str, str], authorized: Any, sandbox: Sandbox, tmp_path: Path, cli: Any
) -> None:
    """Only the Procfile's `web` deployed (or its worker crashed): every message is
    acknowledged and none is answered, and nothing said so. /healthz and doctor name it."""
    from sqlalchemy import update

    from adsync.bot.app import create_app
    from adsync.bot.dispatch import Dispatcher
    from adsync.sync.config import load_settings
    from adsync.sync.store import jobs

    srv = BotServer(create_app(load_settings(bot_env, cwd=tmp_path)), worker=False)
    dispatcher = None
    try:
        event = say(sandbox, "token status")
        asked = event["event"]["message"]["message_id"]
        assert srv.post_event(event).status_code == 200
        queue = srv.bot.queue
        wait_until(lambda: queue.backlog().waiting == 1, 10, "the event in the queue")
        health = requests.get(srv.url + "/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["commands"] == "ok"  # just arrived
        # Three minutes on, still nobody has taken it.
        with srv.bot.store.begin() as conn:
            conn.execute(update(jobs).values(not_before=utcnow() - timedelta(minutes=3)))
        health = requests.get(srv.url + "/healthz", timeout=5)
        assert health.status_code == 503
        assert health.json()["commands"] == "stalled" and health.json()["database"] == "ok"
        doctor = cli(["doctor"], bot_env)
        assert "✗ chat commands" in doctor.stdout, doctor.stdout
        assert "1 acknowledged chat command(s) waiting, the oldest for 3 min" in doctor.stdout
        assert "adsync worker" in doctor.stdout
        assert doctor.returncode != 0
        assert not replies_to(sandbox, asked)

        dispatcher = Dispatcher(srv.bot)  # a worker starts: the command is answered at last
        dispatcher.start()
        wait_until(lambda: replies_to(sandbox, asked), 10, "the answer once a worker runs")
        health = requests.get(srv.url + "/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["commands"] == "ok"
        assert "✓ chat commands" in cli(["doctor"], bot_env).stdout
    finally:
        if dispatcher is not None:
            dispatcher.wait_idle(30)
            dispatcher.stop()
        srv.stop()
        srv.bot.actions.services.close()
