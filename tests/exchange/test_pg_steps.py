"""The exchange's PostgreSQL steps awaited on the loop: the same claims as the thread
path, and a pool that survives a restarted server and fails at once on a refusing one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from gateway.db import make_engine, upgrade
from gateway.errors import AuthError, ServiceUnavailableError
from gateway.exchange.admission import _from_cache
from gateway.exchange.counters import ReplayCache, Usage
from gateway.exchange.pg_steps import PgSteps
from gateway.statecache import StateCache, bump_generation, generation_table
from tests._support.servers import fresh_database
from tests.exchange.conftest import quota_counts

NOW = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
UNTIL = NOW + timedelta(minutes=5)


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _terminate_others(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
        conn.commit()
    return int(killed or 0)


def test_awaited_claims_spend_once_count_give_back_and_see_the_generation(
    engine: sa.Engine,
) -> None:
    replay = ReplayCache(engine)
    steps = PgSteps(engine, replay)
    usage = Usage(NOW)

    async def main() -> None:
        generation = await steps.generation()
        first, seen = await steps.claim("welfare-office", "jti-1", UNTIL, "agr-1", NOW)
        assert seen == generation
        second, _ = await steps.claim("welfare-office", "jti-2", UNTIL, "agr-1", NOW)
        assert first is not None and second is not None
        assert (first.before_minute, second.before_minute, second.before_day) == (0, 1, 1)
        with pytest.raises(AuthError) as caught:
            await steps.claim("welfare-office", "jti-1", UNTIL, "agr-1", NOW)
        assert caught.value.code == "token_replayed"
        assert quota_counts(engine, "agr-1") == {usage.minute: 2, usage.day: 2}
        await steps.release(second)
        assert quota_counts(engine, "agr-1") == {usage.minute: 1, usage.day: 1}
        with engine.begin() as conn:  # a change committed before the claim: it says so
            bump_generation(conn)
        assert await steps.claim("tax-office", "jti-1", UNTIL, None, NOW) == (None, generation + 1)
        third = await steps.reserve("agr-1", NOW)  # the quota alone, no jti
        assert third is not None and third.before_minute == 1
        assert quota_counts(engine, "agr-1") == {usage.minute: 2, usage.day: 2}
        with engine.begin() as conn:
            conn.execute(generation_table.delete())
        assert await steps.claim("tax-office", "jti-2", UNTIL, "agr-1", NOW) is not None
        assert (await steps.claim("tax-office", "jti-3", UNTIL, None, NOW))[1] == -1
        await steps.close()

    asyncio.run(main())
    # One table for both paths: a jti spent on a thread is spent for the loop too.
    replay.claim("welfare-office", "jti-3", UNTIL, None, NOW)

    async def replay_it() -> None:
        with pytest.raises(AuthError):
            await steps.claim("welfare-office", "jti-3", UNTIL, None, NOW)
        await steps.close()

    asyncio.run(replay_it())


def test_expired_jtis_are_purged_every_so_many_claims(engine: sa.Engine) -> None:
    replay = ReplayCache(engine, purge_every=3)
    replay.claim("welfare-office", "old", NOW - timedelta(days=1), None, NOW)  # 1st
    steps = PgSteps(engine, replay)

    def jtis() -> set[str]:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.text("SELECT jti FROM request_jti"))}

    async def main() -> None:
        await steps.claim("welfare-office", "a", UNTIL, None, NOW)  # 2nd
        assert "old" in jtis()
        await steps.claim("welfare-office", "b", UNTIL, None, NOW)  # 3rd: purges
        for _ in range(200):
            if "old" not in jtis():
                break
            await asyncio.sleep(0.01)
        await steps.close()

    asyncio.run(main())
    assert jtis() == {"a", "b"}


def test_exchanges_asking_in_one_pass_share_one_generation_read(engine: sa.Engine) -> None:
    steps = PgSteps(engine, ReplayCache(engine))
    uses = 0
    real = steps.pool.connection

    def counting() -> Any:
        nonlocal uses
        uses += 1
        return real()

    steps.pool.connection = counting  # type: ignore[method-assign]

    async def main() -> None:
        first = await asyncio.gather(*(steps.generation() for _ in range(5)))
        assert len(set(first)) == 1 and uses == 1
        with engine.begin() as conn:  # committed before the next ones ask: they see it
            bump_generation(conn)
        asker = asyncio.ensure_future(steps.generation())
        quitter = asyncio.ensure_future(steps.generation())
        await asyncio.sleep(0)
        quitter.cancel()  # one caller giving up does not cancel the shared read
        assert await asker == first[0] + 1
        assert uses == 2
        await steps.close()

    asyncio.run(main())


def test_an_exchange_arriving_while_a_read_is_out_gets_a_read_of_its_own(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change committed after a shared read was sent is seen by whoever asks after
    it: only exchanges that asked before the read was sent share it."""
    from gateway.exchange import pg_steps

    slow = "SELECT value FROM state_generation, pg_sleep(0.3) WHERE id = 1"
    monkeypatch.setattr(pg_steps, "READ_GENERATION", slow)  # its snapshot is taken first
    steps = PgSteps(engine, ReplayCache(engine))

    async def main() -> None:
        before = await steps.generation()
        early = asyncio.ensure_future(steps.generation())
        await asyncio.sleep(0.1)  # the read is out, its snapshot taken
        with engine.begin() as conn:
            bump_generation(conn)
        late = await steps.generation()
        assert await early == before
        assert late == before + 1
        await steps.close()

    asyncio.run(main())


def test_connections_the_server_dropped_are_replaced_without_an_error(engine: sa.Engine) -> None:
    """A restart drops every pooled connection: the next claim (most exchanges send no
    read first) replaces the one it found lost and is sent again; after it, the
    pool checks the others before using them."""
    steps = PgSteps(engine, ReplayCache(engine))

    async def main() -> None:
        # Several connections in the pool, all used just now (no idle check due).
        await asyncio.gather(
            *(steps.claim("welfare-office", f"before-{i}", UNTIL, None, NOW) for i in range(4))
        )
        assert _terminate_others(engine) >= 2
        await asyncio.sleep(0.1)
        reservation, _ = await steps.claim("welfare-office", "after", UNTIL, "agr-1", NOW)
        assert reservation is not None and reservation.before_minute == 0
        assert await steps.generation() >= 0
        await steps.close()

    asyncio.run(main())


def test_a_claim_sent_again_that_finds_its_jti_spent_is_unavailable_not_replayed(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lost connection may have committed the first try: the second cannot tell
    that from a replay, so it answers 503, and nothing is released either way."""
    steps = PgSteps(engine, ReplayCache(engine))
    real = psycopg.AsyncConnection.execute
    tries = 0

    async def commit_then_lose(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        nonlocal tries
        if "request_jti" not in str(query):
            return await real(self, query, params, **kw)
        tries += 1
        cur = await real(self, query, params, **kw)
        if tries == 1:  # committed, then the server goes away before the answer is read
            _terminate_others(engine)
            await asyncio.sleep(0.1)
            await real(self, "SELECT 1")
        return cur

    async def main() -> None:
        await steps.claim("welfare-office", "warm", UNTIL, None, NOW)
        monkeypatch.setattr(psycopg.AsyncConnection, "execute", commit_then_lose)
        with pytest.raises(ServiceUnavailableError) as caught:
            await steps.claim("welfare-office", "once", UNTIL, None, NOW)
        assert caught.value.code == "store_unavailable"
        assert tries == 2
        monkeypatch.undo()
        with pytest.raises(AuthError):  # spent by the first try
            await steps.claim("welfare-office", "once", UNTIL, None, NOW)
        await steps.close()

    asyncio.run(main())


def test_a_server_refusing_connections_fails_exchanges_at_once(
    pg_server_url: str,
) -> None:
    """Not after waiting for a pool slot: the error is the refused connection."""
    url = fresh_database(pg_server_url)
    engine = make_engine(url)
    upgrade(engine)
    name = sa.make_url(url).database
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    steps = PgSteps(engine, ReplayCache(engine), timeout_s=600)

    async def main() -> None:
        await steps.generation()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                ),
                {"n": name},
            )
        try:
            with pytest.raises(ServiceUnavailableError) as caught:
                await steps.generation()
            assert isinstance(caught.value.__cause__, psycopg.OperationalError)
            with pytest.raises(ServiceUnavailableError) as caught:
                await steps.claim("welfare-office", "x", UNTIL, None, NOW)
            assert isinstance(caught.value.__cause__, psycopg.OperationalError)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert await steps.generation() >= 0
        await steps.close()

    asyncio.run(main())
    admin.dispose()
    engine.dispose()


def test_the_pool_holds_at_most_max_size_and_drops_a_connection_left_in_a_transaction(
    engine: sa.Engine,
) -> None:
    steps = PgSteps(engine, ReplayCache(engine), max_size=2)
    pool = steps.pool
    held = asyncio.Event()
    inside = 0
    most = 0

    async def use() -> int:
        nonlocal inside, most
        async with pool.connection() as conn:
            inside += 1
            most = max(most, inside)
            await held.wait()
            inside -= 1
            return int(conn.info.backend_pid)

    async def main() -> None:
        users = [asyncio.ensure_future(use()) for _ in range(5)]
        await asyncio.sleep(0.2)
        assert inside == 2  # the other three wait for a slot
        held.set()
        assert len(set(await asyncio.gather(*users))) <= 2
        async with pool.connection() as conn:
            left = conn.info.backend_pid
            await conn.execute("BEGIN")
        async with pool.connection() as conn:
            assert conn.info.backend_pid != left
        await steps.close()

    asyncio.run(main())
    assert most == 2


def test_connections_a_burst_left_idle_are_closed_in_time(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.exchange import pg_steps

    monkeypatch.setattr(pg_steps, "MAX_IDLE_S", 0.2)
    steps = PgSteps(engine, ReplayCache(engine))

    async def main() -> None:
        await asyncio.gather(
            *(steps.claim("welfare-office", f"burst-{i}", UNTIL, None, NOW) for i in range(4))
        )
        assert len(steps.pool._idle) >= 2
        await asyncio.sleep(0.3)
        await steps.claim("welfare-office", "later", UNTIL, None, NOW)
        assert len(steps.pool._idle) == 1  # the one just used
        await steps.close()

    asyncio.run(main())


def test_admission_reads_the_cache_on_the_loop_and_loads_a_miss_on_a_thread(
    engine: sa.Engine,
) -> None:
    cache = StateCache(engine)
    loads: list[int] = []

    def lookup(state: dict[object, object]) -> str:
        def load() -> str:
            loads.append(threading.get_ident())
            return "row"

        return StateCache.get(state, "key", load)

    async def main() -> None:
        loop_thread = threading.get_ident()
        state = cache.refresh()
        assert await _from_cache(lookup, state) == "row"
        assert loads and loads[0] != loop_thread  # the miss waited on a thread
        assert await _from_cache(lookup, state) == "row"
        assert len(loads) == 1  # the hit did not load
        with engine.begin() as conn:
            bump_generation(conn)
        assert await _from_cache(lookup, cache.refresh()) == "row"
        assert len(loads) == 2  # a moved generation loads again

    asyncio.run(main())
