"""Where the exchange's store steps run: SQLite on the loop with the write turn,
never waiting for it there; PostgreSQL on a worker thread."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit import store
from gateway.db import make_engine
from gateway.errors import ServiceUnavailableError
from gateway.exchange.store_steps import StoreSteps
from tests._support.turn import taken_elsewhere


def _where() -> tuple[int, bool]:
    """The running thread, and whether it may take the turn again without waiting."""
    return threading.get_ident(), True


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    yield engine
    engine.dispose()


def test_on_sqlite_a_step_runs_on_the_loop_holding_the_turn(sqlite_engine: sa.Engine) -> None:
    steps = StoreSteps(sqlite_engine)

    def step() -> int:
        # The loop holds the turn: another thread cannot have it meanwhile.
        assert taken_elsewhere(sqlite_engine)
        return threading.get_ident()

    async def main() -> tuple[int, int]:
        return threading.get_ident(), await steps.run(step)

    loop_thread, ran_on = asyncio.run(main())
    assert ran_on == loop_thread


def test_a_busy_turn_is_tried_again_and_the_loop_runs_meanwhile(
    sqlite_engine: sa.Engine, tmp_path: Path
) -> None:
    steps = StoreSteps(sqlite_engine)
    fd = os.open(f"{tmp_path / 'a.db'}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    async def main() -> tuple[int, bool, int]:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process writes
        task = asyncio.ensure_future(steps.run(lambda: 42))
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.005)
            ticks += 1
        waited = not task.done()
        fcntl.flock(fd, fcntl.LOCK_UN)
        return ticks, waited, await task

    try:
        assert asyncio.run(main()) == (10, True, 42)
    finally:
        os.close(fd)


def test_a_turn_that_stays_taken_is_a_503_and_the_step_never_runs(
    sqlite_engine: sa.Engine, tmp_path: Path
) -> None:
    steps = StoreSteps(sqlite_engine)
    ran: list[bool] = []
    fd = os.open(f"{tmp_path / 'a.db'}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ServiceUnavailableError) as err:
            asyncio.run(steps.run(lambda: ran.append(True), patience_s=0.05))
        assert err.value.code == "store_unavailable"
        assert ran == []
    finally:
        os.close(fd)


def test_a_lock_file_that_cannot_be_opened_is_a_503(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    (tmp_path / "b.db-writer.lock").mkdir()  # not a file anyone can lock
    try:
        with pytest.raises(ServiceUnavailableError) as err:
            asyncio.run(StoreSteps(engine).run(lambda: None))
        assert err.value.code == "store_unavailable"
    finally:
        engine.dispose()


def test_on_postgresql_a_step_runs_on_a_worker_thread() -> None:
    # No server is needed: the step itself does not touch the database.
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    steps = StoreSteps(engine)

    async def main() -> tuple[int, int]:
        return threading.get_ident(), (await steps.run(_where))[0]

    loop_thread, ran_on = asyncio.run(main())
    assert not steps.on_loop and ran_on != loop_thread


def test_two_engines_on_one_file_share_one_turn(tmp_path: Path) -> None:
    first = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    second = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with store.write_lock(first), store.write_lock(second, wait=False):
            pass  # the same turn, taken again by its holder: no second flock to wait for
    finally:
        first.dispose()
        second.dispose()


def test_loop_writes_wait_briefly_for_sqlite_and_the_pool_gets_the_long_wait_back(
    sqlite_engine: sa.Engine,
) -> None:
    def busy_timeout() -> int:
        with sqlite_engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())

    assert busy_timeout() == store.BUSY_TIMEOUT_MS
    with store.short_busy_wait():
        assert busy_timeout() == store.LOOP_BUSY_TIMEOUT_MS
    assert busy_timeout() == store.BUSY_TIMEOUT_MS  # the same pooled connection, back
    seen: list[int] = []

    async def main() -> None:
        await StoreSteps(sqlite_engine).run(lambda: seen.append(busy_timeout()))

    asyncio.run(main())
    assert seen == [store.LOOP_BUSY_TIMEOUT_MS]
    assert busy_timeout() == store.BUSY_TIMEOUT_MS
