"""Fault injection shared by both simulated platforms.

A fault is decided per request: scripted faults first (``{"path": "refresh_token", "code": 50000,
"times": 2}``), then a random error at ``error_rate`` drawn from ``error_codes``, then a rate
limit (requests per second over a sliding one-second window). Latency is added to every
matching request. Each platform renders the decided code in its own envelope.

``answer_delay_ms`` is the slow platform: the request is carried out at once and its answer
held back that long (a write that happened although the caller timed out waiting for it), where
``latency_ms`` holds the request back before anything is done.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """What to do to one request: answer with ``code`` (a business code, or an HTTP status
    when ``http`` is true), or ``timeout`` (sleep ``delay_s`` before answering)."""

    code: int
    http: bool = False
    reason: str = "injected"


@dataclass
class FaultConfig:
    error_rate: float = 0.0
    error_codes: list[int] = field(default_factory=list)
    http_error_codes: list[int] = field(default_factory=list)
    latency_ms: float = 0.0
    answer_delay_ms: float = 0.0  # after the request was carried out, before its answer
    rate_limit_qps: float | None = None
    rate_limit_code: int = 0
    paths: list[str] = field(default_factory=list)  # substrings; empty = every path
    scripted: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any], rate_limit_code: int) -> FaultConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        cfg = cls(**data)
        if not cfg.rate_limit_code:
            cfg.rate_limit_code = rate_limit_code
        if not 0.0 <= cfg.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if cfg.error_rate and not (cfg.error_codes or cfg.http_error_codes):
            raise ValueError("error_rate needs error_codes or http_error_codes")
        return cfg


class FaultInjector:
    """Thread-safe; one per simulated platform."""

    def __init__(self, rate_limit_code: int) -> None:
        self._rate_limit_code = rate_limit_code
        self._lock = threading.Lock()
        self._config = FaultConfig(rate_limit_code=rate_limit_code)
        self._rng = random.Random(0)
        self._recent: deque[float] = deque()
        self.injected = 0

    def configure(self, data: dict[str, Any]) -> None:
        cfg = FaultConfig.from_dict(data, self._rate_limit_code)
        with self._lock:
            self._config = cfg
            self._rng = random.Random(cfg.seed)
            self._recent.clear()
            self.injected = 0

    def reset(self) -> None:
        self.configure({})

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            cfg = self._config
            return {
                "error_rate": cfg.error_rate,
                "error_codes": list(cfg.error_codes),
                "http_error_codes": list(cfg.http_error_codes),
                "latency_ms": cfg.latency_ms,
                "answer_delay_ms": cfg.answer_delay_ms,
                "rate_limit_qps": cfg.rate_limit_qps,
                "paths": list(cfg.paths),
                "scripted": [dict(s) for s in cfg.scripted],
                "injected": self.injected,
            }

    def _matches(self, path: str) -> bool:
        return not self._config.paths or any(p in path for p in self._config.paths)

    def before_request(self, path: str) -> Fault | None:
        """Apply latency and decide a fault for a request to ``path`` (None: answer normally)."""
        with self._lock:
            cfg = self._config
            fault = self._decide(path, cfg)
            if fault is not None:
                self.injected += 1
            latency = cfg.latency_ms / 1000.0 if self._matches(path) else 0.0
        if latency:
            time.sleep(latency)
        return fault

    def after_request(self, path: str) -> None:
        """Hold back the answer to a request to ``path`` that was carried out (``answer_delay_ms``)."""
        with self._lock:
            cfg = self._config
            delay = cfg.answer_delay_ms / 1000.0 if self._matches(path) else 0.0
        if delay:
            time.sleep(delay)

    def _decide(self, path: str, cfg: FaultConfig) -> Fault | None:
        for item in cfg.scripted:
            if item.get("times", 1) <= 0 or item.get("path", "") not in path:
                continue
            item["times"] = item.get("times", 1) - 1
            return Fault(
                code=int(item["code"]), http=bool(item.get("http", False)), reason="scripted"
            )
        if not self._matches(path):
            return None
        if cfg.error_rate and self._rng.random() < cfg.error_rate:
            choices = [(c, False) for c in cfg.error_codes] + [
                (c, True) for c in cfg.http_error_codes
            ]
            code, http = self._rng.choice(choices)
            return Fault(code=code, http=http, reason="random")
        if cfg.rate_limit_qps:
            now = time.monotonic()
            while self._recent and now - self._recent[0] > 1.0:
                self._recent.popleft()
            if len(self._recent) >= cfg.rate_limit_qps:
                return Fault(code=cfg.rate_limit_code, reason="rate limit")
            self._recent.append(now)
        return None
