"""The sandbox in a child process of a bench, driven over its control API (shared by the
benches; `tests/conftest.py` has its own fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import requests


class SandboxProcess:
    """``python -m adsync.sandbox.server --port 0``, its URL read from its first line.

    ``niceness`` lowers its CPU priority: where a bench measures our process against it, the
    sandbox stands in for remote servers whose CPU is not ours."""

    def __init__(self, niceness: int = 0, timeout: float = 300) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adsync.sandbox.server", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=(lambda: os.nice(niceness)) if niceness else None,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # its first line: {"sandbox": url}
        if not line:
            raise RuntimeError("the sandbox did not start")
        self.url: str = json.loads(line)["sandbox"]
        self.http = requests.Session()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(self.url + path, json=body, timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(self.url + path, params=params, timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self.proc.terminate()  # the process this object started, by its handle
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
