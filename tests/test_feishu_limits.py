"""Feishu's IM rate limits: the sandbox enforces the documented ones and injects the rest, and
adsync's one way to call lark-oapi waits them out, so a burst of answers all reach the chat.

The sandbox runs in this process (Feishu only) over real HTTP on loopback; the calls go through
the real lark-oapi client, FeishuCaller and Messenger.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from adsync.sandbox.ratelimit import Window, reset_header

APP_ID, APP_SECRET = "cli_sandbox_app", "sandbox-feishu-secret"
CHAT = "oc_sandbox_reports"


class Feishu:
    def __init__(self, url: str) -> None:
        self.url = url

    def reset(self, **options: Any) -> None:
        from adsync.sync.feishu import TOKEN_CACHE

        requests.post(f"{self.url}/_sandbox/reset", json={"feishu": options}, timeout=5)
        # lark-oapi keeps tenant tokens per app_id for the whole process (adsync's TokenCache).
        TOKEN_CACHE.drop(f"self_tenant_token:{APP_ID}")

    def faults(self, **config: Any) -> None:
        resp = requests.post(f"{self.url}/_sandbox/faults", json={"feishu": config}, timeout=5)
        resp.raise_for_status()

    def messages(self, chat_id: str = CHAT) -> list[dict[str, Any]]:
        return requests.get(
            f"{self.url}/_sandbox/feishu/messages", params={"chat_id": chat_id}, timeout=5
        ).json()["messages"]

    def user_message(self, text: str, chat_id: str = CHAT) -> str:
        return requests.post(
            f"{self.url}/_sandbox/feishu/user_message",
            json={"chat_id": chat_id, "text": text},
            timeout=5,
        ).json()["message_id"]

    def errors(self) -> dict[str, int]:
        return requests.get(f"{self.url}/_sandbox/stats", timeout=5).json()["feishu"]["errors"]

    def token(self) -> str:
        return requests.post(
            f"{self.url}/open-apis/auth/v3/tenant_access_token/internal",
            json={"app_id": APP_ID, "app_secret": APP_SECRET},
            timeout=5,
        ).json()["tenant_access_token"]

    def send_raw(self, token: str, chat_id: str = CHAT) -> requests.Response:
        return requests.post(
            f"{self.url}/open-apis/im/v1/messages",
            params={"receive_id_type": "chat_id"},
            headers={"Authorization": f"Bearer {token}"},
            json={"receive_id": chat_id, "msg_type": "text", "content": '{"text":"x"}'},
            timeout=5,
        )


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from adsync.sandbox.feishu import FeishuSandbox
    from adsync.sandbox.server import SandboxServer

    with SandboxServer(platforms=[FeishuSandbox()]) as srv:
        yield srv.url


@pytest.fixture
def feishu(server: str) -> Iterator[Feishu]:
    handle = Feishu(server)
    handle.reset()
    yield handle
    handle.faults()


def settings_for(feishu: Feishu, tmp_path: Path) -> Any:
    from adsync.sync.config import load_settings

    env = {
        "FEISHU_APP_ID": APP_ID,
        "FEISHU_APP_SECRET": APP_SECRET,
        "FEISHU_DOMAIN": feishu.url,
        "ADSYNC_HTTP_TIMEOUT": "10",
        "ADSYNC_RETRY_BASE_DELAY": "0.01",  # the generic backoff is tiny: rate limits are not
    }
    return load_settings(env, cwd=tmp_path)


def card(text: str) -> dict[str, Any]:
    return {
        "schema": "2.0",
        "config": {"update_multi": True},
        "header": {"title": {"tag": "plain_text", "content": text}, "template": "blue"},
        "body": {"elements": [{"tag": "markdown", "content": text}]},
    }


# -- the limits, as the sandbox enforces them ---------------------------------------------------


def test_a_window_admits_n_per_period_and_says_when_the_next_fits() -> None:
    now = [100.0]
    window = Window(5, 1.0, now=lambda: now[0])
    assert [window.admit("oc_a") for _ in range(5)] == [0.0] * 5
    assert window.admit("oc_a") == pytest.approx(1.0)  # refused: nothing counted
    assert window.admit("oc_b") == 0.0  # another chat has its own window
    now[0] += 0.4
    assert window.admit("oc_a") == pytest.approx(0.6)
    now[0] += 0.6
    assert window.admit("oc_a") == 0.0
    assert (reset_header(0.2), reset_header(1.0), reset_header(51.3)) == ("1", "1", "52")


def test_the_sixth_message_in_a_second_to_one_chat_is_230020(feishu: Feishu) -> None:
    # Send/reply pages: "向同一群组发送消息的限频为群内机器人共享 5 QPS"; 230020 is a plain 400.
    requests.post(f"{feishu.url}/_sandbox/feishu/chats", json={"chat_id": "oc_other"}, timeout=5)
    token = feishu.token()
    started = time.monotonic()
    answers = [feishu.send_raw(token) for _ in range(6)]
    other = feishu.send_raw(token, "oc_other")
    assert time.monotonic() - started < 1.0, "the machine was too slow to send 7 in a second"
    assert [a.json()["code"] for a in answers] == [0] * 5 + [230020]
    assert answers[-1].status_code == 400 and "x-ogw-ratelimit-reset" not in answers[-1].headers
    assert other.json()["code"] == 0  # each chat has its own 5 a second
    assert len(feishu.messages()) == 5


def test_the_app_limit_is_a_429_that_says_when_to_come_back(feishu: Feishu) -> None:
    # 频控策略: HTTP 429, 99991400, x-ogw-ratelimit-reset in seconds. The per-minute window is
    # lowered to 3 so the test does not depend on sending 51 messages inside one second.
    feishu.reset(im_limits={"app_per_minute": 3})
    requests.post(f"{feishu.url}/_sandbox/feishu/chats", json={"chat_id": "oc_b"}, timeout=5)
    token = feishu.token()
    assert [feishu.send_raw(token, c).json()["code"] for c in (CHAT, "oc_b", CHAT)] == [0] * 3
    limited = feishu.send_raw(token, "oc_b")
    assert (limited.status_code, limited.json()["code"]) == (429, 99991400)
    assert limited.headers["x-ogw-ratelimit-limit"] == "3"
    assert 55 <= int(limited.headers["x-ogw-ratelimit-reset"]) <= 60


def test_injected_im_rate_limits_use_their_codes(feishu: Feishu) -> None:
    feishu.faults(
        scripted=[
            {"path": "im/v1/messages", "code": 230020, "times": 1},
            {"path": "im/v1/messages", "code": 11232, "times": 1},
            {"path": "im/v1/messages", "code": 11233, "times": 1},
            {"path": "im/v1/messages", "code": 99991400, "times": 1},
        ]
    )
    token = feishu.token()
    got = [feishu.send_raw(token) for _ in range(5)]
    assert [(a.status_code, a.json()["code"]) for a in got] == [
        (400, 230020), (400, 11232), (400, 11233), (429, 99991400), (200, 0)
    ]  # fmt: skip
    assert got[3].headers["x-ogw-ratelimit-reset"] == "1"


# -- adsync waits them out ----------------------------------------------------------------------


def test_rate_limits_are_retried_after_the_window_the_platform_names(
    feishu: Feishu, tmp_path: Path
) -> None:
    # The generic backoff here starts at 10 ms; a rate-limited call must wait the limit's
    # window instead (the reset header's 1 s, or 1 s for the per-second IM limits), or it
    # spends its attempts on the same refusal.
    from adsync.bot.messenger import Messenger, message_uuid
    from adsync.sync.feishu import FeishuCaller, make_client

    settings = settings_for(feishu, tmp_path)
    delays: list[float] = []
    caller = FeishuCaller(make_client(settings), base_delay=0.01, sleep=delays.append)
    messenger = Messenger(settings, caller)
    for code in (230020, 11232, 11233, 99991400):
        feishu.faults(scripted=[{"path": "im/v1/messages", "code": code, "times": 2}])
        messenger.send(CHAT, card(str(code)), message_uuid("limit", str(code)))
    assert len(feishu.messages()) == 4
    assert caller.rate_limited == caller.retries == 8
    assert len(delays) == 8 and all(1.0 <= d <= 1.25 for d in delays), delays


def test_a_burst_of_replies_into_one_chat_all_arrive_in_order(
    feishu: Feishu, tmp_path: Path
) -> None:
    # Twelve answers for twelve questions in one chat, as fast as the chat's lane can post
    # them: above 5 a second the platform refuses (230020); each refused reply waits and is
    # posted, in the order asked, none lost and none twice.
    from adsync.bot.messenger import Messenger, message_uuid

    messenger = Messenger(settings_for(feishu, tmp_path))
    asked = [feishu.user_message(f"question {i}") for i in range(12)]
    for i, message_id in enumerate(asked):
        messenger.reply(message_id, card(f"answer {i}"), message_uuid("reply", message_id))
    replies = [m for m in feishu.messages() if m["via"] == "reply"]
    assert [m["parent_id"] for m in replies] == asked
    assert [m["content"]["header"]["title"]["content"] for m in replies] == [
        f"answer {i}" for i in range(12)
    ]
    assert feishu.errors().get("230020", 0) >= 1  # the limit was hit ...
    assert messenger.caller.rate_limited == feishu.errors()["230020"]  # ... and each retried
