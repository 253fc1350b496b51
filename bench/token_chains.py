"""Two authorization chains refreshing at once, and what else waits for a refresh.

The sandbox holds every refresh on the wire for ``--latency`` ms (a slow platform). Each round:

* both chains are pushed inside the refresh margin and two token managers (two processes'
  worth: separate stores) ask for one chain each at the same moment: the wall time of the pair,
  as a multiple of one refresh (1.0: the chains refreshed at the same time; 2.0: one after the
  other);
* while one chain's refresh is on the wire, a webhook's dedup claim (``Store.claim``, what
  every acknowledgement writes) is timed: on SQLite a refresh used to hold the database's only
  write lock for as long as the platform took, and the claim waited (or failed after 2 s).

Run: ``.venv/bin/python bench/token_chains.py [--rounds 5] [--latency 1000]``; both backends
(PostgreSQL at ADSYNC_TEST_POSTGRES_URL, the tests' default, in a schema of its own).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sandbox_process import SandboxProcess  # bench/, beside this script

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
APP_ID, SECRET = "1700000000000001", "sandbox-oe-secret"


def _services(url: str, sandbox: str, data: Path) -> Any:
    from adsync.sync.config import load_settings
    from adsync.sync.services import open_services

    env = {
        "OCEANENGINE_APP_ID": APP_ID,
        "OCEANENGINE_APP_SECRET": SECRET,
        "OCEANENGINE_API_BASE": sandbox,
        "OCEANENGINE_REDIRECT_URI": "http://127.0.0.1:8000/oauth/oceanengine/callback",
        "ADSYNC_DATABASE_URL": url,
        "ADSYNC_DATA_DIR": str(data),
        "ADSYNC_RETRY_BASE_DELAY": "0.01",
    }
    return open_services(load_settings(env, cwd=data.parent))


def _round(managers: list[Any], chains: list[str], latency: float) -> tuple[float, float]:
    from sqlalchemy import update

    from adsync.sync.store import tokens, utcnow

    first = managers[0]
    with first.store.begin() as conn:
        conn.execute(update(tokens).values(access_expires_at=utcnow() + timedelta(seconds=60)))
    go = threading.Barrier(len(managers) + 1)
    ends: list[float] = []

    def ask(services: Any, chain: str) -> None:
        go.wait()
        services.tokens.get_valid_token(chain)
        ends.append(time.monotonic())

    threads = [
        threading.Thread(target=ask, args=(m, c)) for m, c in zip(managers, chains, strict=True)
    ]
    for t in threads:
        t.start()
    go.wait()
    started = time.monotonic()
    time.sleep(latency / 4)  # a refresh is on the wire now (the platform holds it `latency`)
    before = time.monotonic()
    first.store.claim(f"bench:{uuid.uuid4().hex}", timedelta(minutes=1))
    claim = time.monotonic() - before
    for t in threads:
        t.join()
    return (max(ends) - started) / latency, claim


def bench(url: str, label: str, rounds: int, latency_ms: int) -> dict[str, float]:
    sandbox = SandboxProcess()
    data = Path(tempfile.mkdtemp(prefix="adsync-bench-chains-"))
    try:
        managers = [_services(url, sandbox.url, data / "data") for _ in range(2)]
        for user in ("default", "bob"):
            code = sandbox.post("/_sandbox/oceanengine/auth_code", {"user": user})["auth_code"]
            managers[0].tokens.authorize(code)
        chains = [c.chain_id for c in managers[0].tokens.chains()]
        sandbox.post(
            "/_sandbox/faults",
            {"oceanengine": {"latency_ms": latency_ms, "paths": ["refresh_token"]}},
        )
        ratios, claims = [], []
        for _ in range(rounds):
            ratio, claim = _round(managers, chains, latency_ms / 1000)
            ratios.append(ratio)
            claims.append(claim * 1000)
        for m in managers:
            m.close()
        result = {"ratio": statistics.median(ratios), "claim_ms": statistics.median(claims)}
        print(
            f"{label:10}  two chains refreshed in {result['ratio']:.2f}x one refresh; a dedup "
            f"claim during a refresh took {result['claim_ms']:.1f} ms (medians of {rounds})",
            flush=True,
        )
        return result
    finally:
        sandbox.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency", type=int, default=1000, help="ms a refresh is held")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = bench(f"sqlite:///{tmp}/adsync.db", "sqlite", args.rounds, args.latency)
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        pg = bench(
            f"{PG_URL}?options=-csearch_path%3D{schema}", "postgresql", args.rounds, args.latency
        )
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(
        f"side by side: sqlite/postgresql pair time {sqlite['ratio'] / pg['ratio']:.2f}x, "
        f"claim during a refresh {sqlite['claim_ms']:.1f} ms vs {pg['claim_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
