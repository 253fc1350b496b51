"""Storage on both backends: schema versioning, leases, dedup claims, clear errors."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from adsync.sync.errors import StoreError
from adsync.sync.store import Store, schema_target, schema_version, utcnow


def test_schema_is_created_and_reopening_is_a_no_op(db_url: str) -> None:
    store = Store(db_url)
    assert store.schema_version() == schema_target()
    store.dispose()
    again = Store(db_url)
    assert again.schema_version() == schema_target()
    assert "schema" in again.check()
    again.dispose()


def test_a_newer_schema_is_refused(db_url: str) -> None:
    store = Store(db_url)
    with store.begin() as conn:
        conn.execute(
            insert(schema_version).values(version=schema_target() + 1, migrated_at=utcnow())
        )
    store.dispose()
    with pytest.raises(StoreError) as err:
        Store(db_url)
    assert "newer" in str(err.value)


def test_leases(db_url: str) -> None:
    store = Store(db_url)
    ttl = timedelta(seconds=30)
    assert store.acquire_lease("daily", "a", ttl)
    assert not store.acquire_lease("daily", "b", ttl)
    assert store.acquire_lease("daily", "a", ttl)  # re-entrant for the holder
    assert store.lease_holder("daily") == "a"
    store.release_lease("daily", "a")
    assert store.acquire_lease("daily", "b", ttl)
    # A dead holder's lease runs out.
    assert store.acquire_lease("clock", "dead", timedelta(seconds=-1))
    assert store.acquire_lease("clock", "alive", ttl)
    store.dispose()


def test_claims_are_once_per_key(db_url: str) -> None:
    store = Store(db_url)
    assert store.claim("msg:om_1", timedelta(hours=8))
    assert not store.claim("msg:om_1", timedelta(hours=8))
    assert store.claim("msg:om_2", timedelta(seconds=-1))
    assert store.claim("msg:om_2", timedelta(hours=8))  # the expired claim is taken again
    store.dispose()


def test_a_claim_of_several_keys_wins_only_if_every_key_was_free(db_url: str) -> None:
    store = Store(db_url)
    ttl = timedelta(hours=8)
    assert store.claim_all(["evt:e1", "msg:om_1"], ttl)
    assert not store.claim_all(["evt:e1", "msg:om_1"], ttl)  # the platform's retry
    assert not store.claim_all(["evt:e2", "msg:om_1"], ttl)  # same message, new event id
    assert not store.claim("evt:e2", ttl)  # ... and that event id is remembered as well
    assert store.claim_all(["evt:e3", "msg:om_3"], timedelta(seconds=-1))
    assert store.claim_all(["evt:e3", "msg:om_3"], ttl)  # both expired: taken again
    assert store.claim_all([], ttl)
    store.dispose()


def test_concurrent_claims_of_one_delivery_have_one_winner(db_url: str) -> None:
    """Threads (as gunicorn's) and separate stores (as processes) claim the same message at
    once, under different event ids: exactly one may run it."""
    stores = [Store(db_url) for _ in range(3)]
    barrier = threading.Barrier(12)
    won: list[bool] = []

    def claim(i: int) -> None:
        barrier.wait(timeout=30)
        won.append(stores[i % 3].claim_all([f"evt:e{i}", "msg:om_same"], timedelta(hours=8)))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(won) == [False] * 11 + [True]
    for s in stores:
        s.dispose()


def test_unreadable_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "adsync.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as err:
        Store(f"sqlite:///{path}")
    assert "not a database" in str(err.value)
    assert "ADSYNC_DATABASE_URL" in str(err.value)
    assert err.value.exit_code == 2


def test_unreachable_postgres_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(StoreError) as err:
        Store("postgresql+psycopg://u:hunter2pass@127.0.0.1:1/nodb?connect_timeout=2")
    assert "hunter2pass" not in str(err.value)
    assert "PostgreSQL" in str(err.value)
