"""Shared fixtures: a real sandbox server (its own process, real HTTP on loopback), a real
database on both backends, and helpers to run the real CLI.

Every test that takes ``db_url`` (directly or through ``env``/``services``) runs twice: on
SQLite and on the PostgreSQL server at 127.0.0.1:5432. Where no server is reachable, the
PostgreSQL lane is skipped with a visible reason — unless ``ADSYNC_REQUIRE_POSTGRES=1`` (CI),
where that is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

PG_URL = os.environ.get(
    "ADSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
OE_APP_ID = "1700000000000001"
OE_SECRET = "sandbox-oe-secret"
FEISHU_APP_ID = "cli_sandbox_app"
FEISHU_SECRET = "sandbox-feishu-secret"

REPORT_FILE = "ADSYNC_TEST_REPORT_FILE"


def pytest_configure(config: pytest.Config) -> None:
    # One file for the figures tests measure, shared by pytest-xdist's worker processes
    # (they inherit this environment) and read back by the controller at the end.
    if not hasattr(config, "workerinput") and REPORT_FILE not in os.environ:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="adsync-test-report-", suffix=".txt")
        os.close(fd)
        os.environ[REPORT_FILE] = path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked ``storage_neutral`` test HTTP framing, logs or processes, not storage: they
    # run on SQLite only, which keeps the suite's wall time within CI's few minutes.
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        neutral = item.get_closest_marker("storage_neutral") is not None
        (dropped if neutral and params.get("db_url") == "postgresql" else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(
    url: str, proc: subprocess.Popen[str], output: Callable[[], str], timeout: float = 60
) -> None:
    """Until ``url``'s /healthz answers 200; fails with the process's output if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return
        assert proc.poll() is None, output()[-3000:]
        assert time.monotonic() < deadline, "adsync serve did not come up"
        time.sleep(0.1)


def stop_gently(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """SIGTERM, as a supervisor stops it; killed only if it does not stop in ``timeout``."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def report(line: str) -> None:
    """A figure worth seeing in the test summary (e.g. how often the chain survived)."""
    with open(os.environ[REPORT_FILE], "a", encoding="utf-8") as out:
        out.write(line.replace("\n", " ") + "\n")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    path = os.environ.get(REPORT_FILE, "")
    lines = Path(path).read_text(encoding="utf-8").splitlines() if Path(path).is_file() else []
    if lines:
        terminalreporter.section("adsync measurements")
        for line in lines:
            terminalreporter.write_line(line)
    with contextlib.suppress(OSError):
        os.unlink(path)


# -- the sandbox --------------------------------------------------------------------------------


class Sandbox:
    """Handle on the sandbox process: its URL and its control API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.post(self.url + path, json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(self.url + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self, **platforms: dict[str, Any]) -> None:
        self.post("/_sandbox/reset", platforms)

    def faults(self, **platforms: dict[str, Any]) -> Any:
        return self.post("/_sandbox/faults", platforms)

    def stats(self, platform: str = "oceanengine") -> dict[str, Any]:
        return self.get("/_sandbox/stats")[platform]

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the sandbox has finished answering every request it received."""
        deadline = time.monotonic() + timeout
        while self.get("/_sandbox/in_flight")["in_flight"] > 0:
            if time.monotonic() > deadline:
                raise AssertionError("the sandbox kept requests in flight")
            time.sleep(0.005)

    def auth_code(self, **body: Any) -> str:
        return self.post("/_sandbox/oceanengine/auth_code", body)["auth_code"]


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[Sandbox]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "adsync.sandbox.server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError("the sandbox did not start")
        yield Sandbox(json.loads(line)["sandbox"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def sandbox(sandbox_process: Sandbox) -> Sandbox:
    """The sandbox, reset to a fresh state for this test."""
    sandbox_process.reset()
    return sandbox_process


# -- databases ----------------------------------------------------------------------------------


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(
            PG_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3
        ):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'adsync.db'}"
        return
    problem = _pg_available()
    if problem:
        if os.environ.get("ADSYNC_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but not reachable at {PG_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {problem}")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- configuration and services -----------------------------------------------------------------


@pytest.fixture
def env(sandbox: Sandbox, db_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment variables for adsync pointed at the sandbox and the test database."""
    return {
        "OCEANENGINE_APP_ID": OE_APP_ID,
        "OCEANENGINE_APP_SECRET": OE_SECRET,
        "OCEANENGINE_API_BASE": sandbox.url,
        "OCEANENGINE_AUTH_URL": f"{sandbox.url}/audit/oauth.html",
        "OCEANENGINE_REDIRECT_URI": "http://127.0.0.1:8000/oauth/oceanengine/callback",
        "FEISHU_APP_ID": FEISHU_APP_ID,
        "FEISHU_APP_SECRET": FEISHU_SECRET,
        "FEISHU_DOMAIN": sandbox.url,
        "FEISHU_BITABLE_APP_TOKEN": "bascnSandboxApp0001",
        "FEISHU_BITABLE_TABLE_ID": "tblSandboxDaily01",
        "FEISHU_REPORT_CHAT_IDS": "oc_sandbox_reports",
        "ADSYNC_DATABASE_URL": db_url,
        "ADSYNC_DATA_DIR": str(tmp_path / "data"),
        "ADSYNC_RETRY_BASE_DELAY": "0.01",
        "ADSYNC_RATE_LIMIT": "200",
        "ADSYNC_HTTP_TIMEOUT": "10",
        "ADSYNC_BITABLE_WRITE_GAP": "0",
    }


@pytest.fixture
def settings(env: dict[str, str], tmp_path: Path) -> Any:
    from adsync.sync.config import load_settings

    return load_settings(env, cwd=tmp_path)


@pytest.fixture
def services(settings: Any) -> Iterator[Any]:
    from adsync.sync.services import open_services

    svc = open_services(settings)
    yield svc
    svc.close()


@pytest.fixture
def authorized(services: Any, sandbox: Sandbox) -> Any:
    """Services with a fresh authorization from the sandbox."""
    services.tokens.authorize(sandbox.auth_code())
    return services


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real ``adsync`` command in a child process with exactly ``env`` (+ PATH)."""
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1", **env}
    if cwd is None and "ADSYNC_DATA_DIR" in env:
        cwd = Path(env["ADSYNC_DATA_DIR"]).parent  # a test's tmp dir: no stray .env is read
    return subprocess.run(
        [sys.executable, "-m", "adsync", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class InProcessCli:
    """The real ``adsync`` entry point called in this process (no new interpreter, so
    lark-oapi is imported once per test session instead of once per command). Exit codes,
    stdout and stderr are returned like ``subprocess.run``'s."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
        self._monkeypatch = monkeypatch
        self._capfd = capfd

    def __call__(self, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        from adsync.cli import main

        with self._monkeypatch.context() as m:
            for key in list(os.environ):
                if key.startswith(("ADSYNC_", "OCEANENGINE_", "FEISHU_")):
                    m.delenv(key)
            for key, value in env.items():
                m.setenv(key, value)
            if "ADSYNC_DATA_DIR" in env:
                m.chdir(Path(env["ADSYNC_DATA_DIR"]).parent)
            self._capfd.readouterr()
            try:
                code = main(args)
            except SystemExit as exc:  # argparse errors
                code = int(exc.code or 0)
            out, err = self._capfd.readouterr()
        return subprocess.CompletedProcess(["adsync", *args], code, out, err)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> InProcessCli:
    return InProcessCli(monkeypatch, capfd)
