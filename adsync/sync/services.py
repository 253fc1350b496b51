"""Builds the object graph every entry point shares (CLI, bot, clock): one place that knows
how settings become a store, a client and a token manager."""

from __future__ import annotations

from dataclasses import dataclass

from adsync.sync.config import Settings
from adsync.sync.oceanengine import OceanEngineAPI, OceanEngineClient, RateLimiter, RetryPolicy
from adsync.sync.store import Store
from adsync.sync.tokens import TokenManager


def _client(
    settings: Settings, limiter: RateLimiter, attempts: int = RetryPolicy.attempts
) -> OceanEngineClient:
    return OceanEngineClient(
        settings.oceanengine_api_base,
        timeout=settings.http_timeout,
        retry=RetryPolicy(attempts=attempts, base=settings.retry_base_delay),
        limiter=limiter,
        pool_size=settings.concurrency + 2,
    )


@dataclass
class Services:
    settings: Settings
    store: Store
    limiter: RateLimiter  # process-wide: every client shares the Ocean Engine request rate
    tokens: TokenManager

    def new_client(self) -> OceanEngineClient:
        """A client with its own call counters (one per run), sharing the rate limit."""
        return _client(self.settings, self.limiter)

    def api(self, client: OceanEngineClient | None = None) -> OceanEngineAPI:
        return OceanEngineAPI(client or self.new_client(), self.tokens)

    def close(self) -> None:
        self.tokens.close()
        self.tokens.client.close()
        self.store.dispose()


def open_services(settings: Settings) -> Services:
    store = Store(settings.db_url, settings.data_dir, wait=settings.db_wait)
    limiter = RateLimiter(settings.rate_limit)
    # Token calls: a refresh and three retries. Each retry of a refresh whose answer was lost
    # risks presenting a refresh token the platform already rotated; more would not help.
    tokens = TokenManager(settings, store, _client(settings, limiter, attempts=4))
    return Services(settings, store, limiter, tokens)
