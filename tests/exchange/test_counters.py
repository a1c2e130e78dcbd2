"""The jti claim and quota counters on both databases: single use, exact counts, the
store's faults as 503s, and pooled connections left committing durably."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.db import is_sqlite, make_engine, single_statement_cursor, upgrade
from gateway.errors import AuthError, ServiceUnavailableError
from gateway.exchange.counters import ReplayCache, Usage, release_quota
from gateway.statecache import StateCache, bump_generation
from tests.exchange.conftest import quota_counts

NOW = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
UNTIL = NOW + timedelta(minutes=5)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_a_jti_is_claimed_once_and_a_replay_reserves_nothing(engine: sa.Engine) -> None:
    cache = ReplayCache(engine)
    first = cache.claim("welfare-office", "jti-1", UNTIL, "agr-1", NOW)
    assert first is not None and (first.before_minute, first.before_day) == (0, 0)
    with pytest.raises(AuthError) as caught:
        cache.claim("welfare-office", "jti-1", UNTIL, "agr-1", NOW)
    assert caught.value.code == "token_replayed"
    usage = Usage(NOW)
    assert quota_counts(engine, "agr-1") == {usage.minute: 1, usage.day: 1}
    # Another issuer may use the same jti; a claim without an agreement counts nothing.
    assert cache.claim("tax-office", "jti-1", UNTIL, None, NOW) is None
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT iss, jti, expires_at FROM request_jti")).all()
    assert sorted((r[0], r[1]) for r in stored) == [
        ("tax-office", "jti-1"),
        ("welfare-office", "jti-1"),
    ]


def test_quota_windows_count_up_and_give_back(engine: sa.Engine) -> None:
    cache = ReplayCache(engine)
    seen = [cache.claim("w", f"j-{i}", UNTIL, "agr-1", NOW) for i in range(3)]
    assert [(r.before_minute, r.before_day) for r in seen if r] == [(0, 0), (1, 1), (2, 2)]
    next_minute = cache.claim("w", "j-3", UNTIL, "agr-1", NOW + timedelta(minutes=1))
    assert next_minute is not None and (next_minute.before_minute, next_minute.before_day) == (
        0,
        3,
    )
    assert seen[2] is not None
    release_quota(engine, seen[2])
    usage = Usage(NOW)
    assert quota_counts(engine, "agr-1")[usage.minute] == 2
    assert quota_counts(engine, "agr-1")[usage.day] == 3


def test_concurrent_claims_of_one_jti_let_exactly_one_through(engine: sa.Engine) -> None:
    cache = ReplayCache(engine)
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        try:
            cache.claim("w", "same-jti", UNTIL, "agr-1", NOW)
            outcome = "claimed"
        except AuthError as exc:
            outcome = exc.code
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["claimed"] + ["token_replayed"] * 7
    assert set(quota_counts(engine, "agr-1").values()) == {1}


def test_claims_leave_every_pooled_sqlite_connection_committing_durably(
    sqlite_url: str,
) -> None:
    engine = make_engine(sqlite_url, pool_size=3)
    upgrade(engine)
    cache = ReplayCache(engine)
    try:
        cache.claim("w", "j-1", UNTIL, "agr-1", NOW)
        with pytest.raises(AuthError):
            cache.claim("w", "j-1", UNTIL, "agr-1", NOW)
        assert is_sqlite(engine)
        conns = [engine.connect() for _ in range(3)]
        levels = {c.exec_driver_sql("PRAGMA synchronous").scalar_one() for c in conns}
        for c in conns:
            c.close()
        assert levels == {2}  # FULL
    finally:
        engine.dispose()


def test_an_unreachable_store_is_a_503_not_a_replay_or_a_500(db_url: str) -> None:
    if is_sqlite(db_url):
        url = "sqlite:////nonexistent-dir/cannot/open.db"
        engine = sa.create_engine(url)
    else:
        engine = make_engine(
            sa.make_url(db_url).set(port=1).render_as_string(hide_password=False),
            connect_args={"connect_timeout": 2},
        )
    try:
        with pytest.raises(ServiceUnavailableError) as caught:
            ReplayCache(engine).claim("w", "j-1", UNTIL, "agr-1", NOW)
        assert caught.value.code == "store_unavailable"
        with pytest.raises(ServiceUnavailableError) as caught:
            StateCache(engine).refresh()
        assert caught.value.code == "store_unavailable"
    finally:
        engine.dispose()


def test_the_state_cache_starts_over_when_the_generation_moves(engine: sa.Engine) -> None:
    cache = StateCache(engine)
    first = cache.refresh()
    first["key"] = "cached"
    assert cache.refresh() is first
    with engine.begin() as conn:
        bump_generation(conn)
    fresh = cache.refresh()
    assert fresh is not first and fresh == {}


def test_reading_the_generation_leaves_pooled_connections_transactional(
    db_url: str,
) -> None:
    """On PostgreSQL the read runs in autocommit; the connection must not stay that way."""
    engine = make_engine(db_url, pool_size=1, max_overflow=0)
    upgrade(engine)
    try:
        StateCache(engine).refresh()
        with engine.connect() as conn:
            conn.begin()
            conn.execute(
                sa.text(
                    'INSERT INTO usage_counter (agreement_id, "window", count) VALUES (:a, :w, 1)'
                ),
                {"a": "agr-x", "w": "m:x"},
            )
            conn.rollback()
        assert quota_counts(engine, "agr-x") == {}
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_postgresql_claim_commits_without_waiting_for_the_wal_flush(pg_url: str) -> None:
    """Both claim statements set synchronous_commit off inside their own statement's
    transaction (what the jti-claim durability argument in docs/exchange.md relies
    on), and the setting ends with it. Each statement is run with its final write
    swapped for a read of the setting."""
    from gateway.exchange.counters import _PG_CLAIM_AND_RESERVE, _PG_CLAIM_JTI

    spend = "INSERT INTO request_jti (iss, jti, expires_at) SELECT %s, %s, %s FROM lazy"
    jti_probe = _PG_CLAIM_JTI.replace(
        spend, "SELECT current_setting('synchronous_commit') FROM lazy"
    )
    head, _, _ = _PG_CLAIM_AND_RESERVE.partition("INSERT INTO usage_counter")
    reserve_probe = head + "SELECT current_setting('synchronous_commit') FROM spent"
    assert jti_probe != _PG_CLAIM_JTI and spend in head
    engine = make_engine(pg_url)
    upgrade(engine)
    try:
        with single_statement_cursor(engine) as cur:
            cur.execute(jti_probe)
            assert cur.fetchone() == ("off",)
            cur.execute(reserve_probe, ("w", "probe-jti-1", UNTIL))
            assert cur.fetchone() == ("off",)
            cur.execute("SHOW synchronous_commit")
            assert cur.fetchone() == ("on",)
    finally:
        engine.dispose()


def test_a_file_that_is_not_a_database_is_a_503(tmp_path: Path) -> None:
    """The driver's own error (not the write-turn file's) maps to store_unavailable."""
    db = tmp_path / "garbage.db"
    db.write_bytes(b"this is not an SQLite database" * 100)
    engine = make_engine(f"sqlite:///{db}")
    try:
        with pytest.raises(ServiceUnavailableError) as caught:
            ReplayCache(engine).claim("w", "j-1", UNTIL, "agr-1", NOW)
        assert caught.value.code == "store_unavailable"
        assert isinstance(caught.value.__cause__, engine.dialect.loaded_dbapi.Error)
    finally:
        engine.dispose()
