"""The decision log writer: batched off the exchange's path, flushed on demand, pruned."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from audit.pg_loop import conninfo
from gateway.db import make_engine, upgrade
from gateway.exchange.decision_log import DecisionLogWriter
from gateway.exchange.pg_steps import AsyncPool
from gateway.policy.engine import Decision

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
INPUT = {
    "caller": {"department": "welfare-office"},
    "request": {"dataset": "person"},
    "agreement": {"id": "welfare-person-lookup", "version": 1},
}
ALLOW = Decision(
    allow=True, deny=(), obligations={}, level=None, policy_version="sha256:" + "0" * 64
)


def _rows(engine: sa.Engine) -> list[tuple[str, datetime]]:
    with engine.connect() as conn:
        return [
            (r[0], r[1])
            for r in conn.execute(
                sa.text("SELECT exchange_id, decided_at FROM policy_decision ORDER BY id")
            )
        ]


def test_decisions_are_stored_in_batches_and_old_ones_pruned(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    now = [T0 - timedelta(days=100)]
    writer = DecisionLogWriter(
        engine, clock=lambda: now[0], retention=timedelta(days=90), prune_every=30
    )
    try:
        for i in range(20):
            writer.record(exchange_id=f"old-{i}", policy_input=INPUT, decision=ALLOW)
        writer.flush()
        assert [r[0] for r in _rows(engine)] == [f"old-{i}" for i in range(20)]
        now[0] = T0
        for i in range(40):
            writer.record(exchange_id=f"new-{i}", policy_input=INPUT, decision=ALLOW)
        writer.flush()
        kept = [r[0] for r in _rows(engine)]
        assert kept == [f"new-{i}" for i in range(40)], "entries past retention are pruned"
    finally:
        writer.close()
        engine.dispose()


def test_a_full_queue_drops_instead_of_blocking(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    writer = DecisionLogWriter(engine, clock=lambda: T0, max_queue=1)
    try:
        for i in range(200):
            writer.record(exchange_id=f"x-{i}", policy_input=INPUT, decision=ALLOW)
        writer.flush()
        stored = len(_rows(engine))
        assert stored + writer.dropped == 200
    finally:
        writer.close()
        engine.dispose()


def test_a_stored_decision_reads_back_as_the_policy_service_keeps_it(db_url: str) -> None:
    """The writer's rows and ``PolicyService.record_decision``'s ORM rows are the same."""
    from gateway.policy.models import PolicyDecisionRecord
    from gateway.policy.store import decision_record

    engine = make_engine(db_url)
    upgrade(engine)
    deny = Decision.error("policy timeout", policy_version=None, engine="opa")
    writer = DecisionLogWriter(engine, clock=lambda: T0)
    try:
        writer.record(exchange_id="ex-1", policy_input=INPUT, decision=deny)
        writer.flush()
        with Session(engine) as s:
            stored = s.exec(select(PolicyDecisionRecord)).one()
        expected = decision_record(exchange_id="ex-1", policy_input=INPUT, decision=deny, now=T0)
        columns = ("exchange_id", "agreement", "consumer", "dataset", "policy_version", "allow")
        assert {c: getattr(stored, c) for c in columns} == {
            c: getattr(expected, c) for c in columns
        }
        assert stored.agreement == "welfare-person-lookup@1"
        assert (stored.codes, stored.decision, stored.input) == (
            expected.codes,
            expected.decision,
            INPUT,
        )
        assert stored.decided_at == T0
    finally:
        writer.close()
        engine.dispose()


def test_an_input_that_is_not_strict_json_is_dropped_alone(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    writer = DecisionLogWriter(engine, clock=lambda: T0)
    try:
        odd = {**INPUT, "request": {"dataset": "person", "cohort_size": float("nan")}}
        writer.record(exchange_id="before", policy_input=INPUT, decision=ALLOW)
        writer.record(exchange_id="odd", policy_input=odd, decision=ALLOW)
        writer.record(exchange_id="after", policy_input=INPUT, decision=ALLOW)
        writer.flush()
        assert [r[0] for r in _rows(engine)] == ["before", "after"]
        writer.record(exchange_id="alone", policy_input=odd, decision=ALLOW)
        writer.flush()
        assert [r[0] for r in _rows(engine)] == ["before", "after"]
    finally:
        writer.close()
        engine.dispose()


def _record_writes(monkeypatch: pytest.MonkeyPatch, writer: DecisionLogWriter) -> list[int]:
    """Record the thread of each batch insert the writer makes."""
    threads: list[int] = []
    real = writer._write

    def recording(rows: list[dict[str, Any]]) -> None:
        threads.append(threading.get_ident())
        real(rows)

    monkeypatch.setattr(writer, "_write", recording)
    return threads


def test_on_sqlite_a_loop_stores_its_decisions_itself_in_one_batch(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    writer = DecisionLogWriter(engine, clock=lambda: T0, linger_s=0.02)
    threads = _record_writes(monkeypatch, writer)

    async def main() -> int:
        for i in range(10):
            writer.record(exchange_id=f"x-{i}", policy_input=INPUT, decision=ALLOW)
        await asyncio.sleep(0.2)  # past the linger: written
        return threading.get_ident()

    try:
        assert writer.loop_writes
        loop_thread = asyncio.run(main())
        assert threads == [loop_thread]
        assert [r[0] for r in _rows(engine)] == [f"x-{i}" for i in range(10)]
    finally:
        writer.close()
        engine.dispose()


def test_a_loop_batch_waits_for_a_busy_turn_without_blocking_and_flushes_from_a_thread(
    tmp_path: Path,
) -> None:
    db = tmp_path / "d.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    writer = DecisionLogWriter(engine, clock=lambda: T0, linger_s=0.01)
    fd = os.open(f"{db}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    async def main() -> tuple[int, int]:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process has the write turn
        writer.record(exchange_id="a", policy_input=INPUT, decision=ALLOW)
        ticks = 0
        for _ in range(10):  # several lingers pass; the loop runs on
            await asyncio.sleep(0.01)
            ticks += 1
        stored_meanwhile = len(_rows(engine))
        fcntl.flock(fd, fcntl.LOCK_UN)
        # A thread (shutdown) asks for everything to be stored while the loop runs.
        await asyncio.to_thread(writer.flush)
        return ticks, stored_meanwhile

    try:
        ticks, stored_meanwhile = asyncio.run(main())
        assert ticks == 10 and stored_meanwhile == 0
        assert [r[0] for r in _rows(engine)] == ["a"]
    finally:
        os.close(fd)
        writer.close()
        engine.dispose()


def test_a_thread_flushes_what_a_running_loop_holds(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    writer = DecisionLogWriter(engine, clock=lambda: T0, linger_s=30)

    async def main() -> int:
        writer.record(exchange_id="a", policy_input=INPUT, decision=ALLOW)
        await asyncio.to_thread(writer.flush)  # long before the linger is over
        return len(_rows(engine))

    try:
        assert asyncio.run(main()) == 1
    finally:
        writer.close()
        engine.dispose()


def test_a_loop_writes_at_most_max_batch_rows_a_pass(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    writer = DecisionLogWriter(engine, clock=lambda: T0, linger_s=0.01, max_batch=2)
    sizes: list[int] = []
    real = writer._write

    def recording(rows: list[dict[str, Any]]) -> None:
        sizes.append(len(rows))
        real(rows)

    monkeypatch.setattr(writer, "_write", recording)

    async def main() -> None:
        for i in range(5):
            writer.record(exchange_id=f"x-{i}", policy_input=INPUT, decision=ALLOW)
        await asyncio.sleep(0.2)

    try:
        asyncio.run(main())
        assert sizes == [2, 2, 1]
        assert len(_rows(engine)) == 5
    finally:
        writer.close()
        engine.dispose()


def test_a_long_linger_neither_delays_a_flush_nor_holds_back_a_full_batch(db_url: str) -> None:
    """The writer thread lingers asleep, but a flush or a whole batch wakes it."""
    engine = make_engine(db_url)
    upgrade(engine)
    writer = DecisionLogWriter(engine, clock=lambda: T0, linger_s=600, max_batch=5)
    try:
        writer.record(exchange_id="alone", policy_input=INPUT, decision=ALLOW)
        writer.flush(timeout=60)
        assert [r[0] for r in _rows(engine)] == ["alone"]
        for i in range(5):
            writer.record(exchange_id=f"full-{i}", policy_input=INPUT, decision=ALLOW)
        for _ in range(6000):  # up to a minute; the linger is ten
            if len(_rows(engine)) == 6:
                break
            threading.Event().wait(0.01)
        assert len(_rows(engine)) == 6  # stored without a flush, before the linger ended
    finally:
        writer.close()
        engine.dispose()


def _pool(engine: sa.Engine) -> AsyncPool:
    """Connections like the exchange's (``PgSteps.pool``), made on the running loop."""
    return AsyncPool(conninfo(engine), max_size=2, timeout_s=10.0)


def test_on_postgresql_a_loop_sends_its_decisions_as_the_thread_would_store_them(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the exchange's async pool the loop stores what it recorded, in one
    transaction; the writer thread stores nothing. The rows equal the thread's."""
    from gateway.policy.models import PolicyDecisionRecord

    engine = make_engine(pg_url)
    upgrade(engine)
    deny = Decision.error("policy timeout", policy_version=None, engine="opa")
    threaded = DecisionLogWriter(engine, clock=lambda: T0)
    threaded.record(exchange_id="by-thread", policy_input=INPUT, decision=deny)
    threaded.flush()
    threaded.close()

    async def main() -> None:
        pool = _pool(engine)
        writer = DecisionLogWriter(engine, clock=lambda: T0, linger_s=0.02, pool=pool)
        thread_writes = _record_writes(monkeypatch, writer)
        assert writer.loop_writes
        for i in range(10):
            writer.record(exchange_id=f"x-{i}", policy_input=INPUT, decision=ALLOW)
        writer.record(exchange_id="by-loop", policy_input=INPUT, decision=deny)
        await asyncio.sleep(0.3)  # past the linger: sent
        assert thread_writes == []
        await writer.aflush()
        writer.close()
        await pool.close()

    try:
        asyncio.run(main())
        ids = [r[0] for r in _rows(engine)]
        assert ids == ["by-thread", *(f"x-{i}" for i in range(10)), "by-loop"]
        with Session(engine) as s:
            rows = {r.exchange_id: r for r in s.exec(select(PolicyDecisionRecord))}
        columns = ("agreement", "consumer", "dataset", "policy_version", "allow", "codes")
        columns += ("decision", "input", "decided_at")
        thread_row, loop_row = rows["by-thread"], rows["by-loop"]
        assert {c: getattr(loop_row, c) for c in columns} == {
            c: getattr(thread_row, c) for c in columns
        }
    finally:
        engine.dispose()


def test_on_postgresql_the_loop_prunes_and_a_thread_flush_waits_for_what_is_sent(
    pg_url: str,
) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    now = [T0 - timedelta(days=100)]

    async def main() -> None:
        pool = _pool(engine)
        writer = DecisionLogWriter(
            engine,
            clock=lambda: now[0],
            retention=timedelta(days=90),
            prune_every=15,
            linger_s=30,
            pool=pool,
        )
        for i in range(10):
            writer.record(exchange_id=f"old-{i}", policy_input=INPUT, decision=ALLOW)
        await asyncio.to_thread(writer.flush)  # long before the linger is over
        assert len(_rows(engine)) == 10
        now[0] = T0
        for i in range(20):  # past prune_every: the batch prunes what retention let go
            writer.record(exchange_id=f"new-{i}", policy_input=INPUT, decision=ALLOW)
        await asyncio.to_thread(writer.flush)
        writer.close()
        await pool.close()

    try:
        asyncio.run(main())
        assert [r[0] for r in _rows(engine)] == [f"new-{i}" for i in range(20)]
    finally:
        engine.dispose()


def test_on_postgresql_a_batch_the_server_refuses_is_lost_alone(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Dry-run material: a refused batch is logged and dropped, the loop goes on,
    and the next batch is stored."""
    engine = make_engine(pg_url)
    upgrade(engine)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")

    def refuse(yes: bool) -> None:
        with admin.connect() as conn:
            if yes:
                conn.exec_driver_sql("ALTER TABLE policy_decision ADD CHECK (allow AND false)")
            else:
                name = conn.exec_driver_sql(
                    "SELECT conname FROM pg_constraint WHERE contype = 'c' "
                    "AND conrelid = 'policy_decision'::regclass"
                ).scalar_one()
                conn.exec_driver_sql(f'ALTER TABLE policy_decision DROP CONSTRAINT "{name}"')

    async def main() -> None:
        pool = _pool(engine)
        writer = DecisionLogWriter(engine, clock=lambda: T0, linger_s=0.01, pool=pool)
        refuse(True)
        writer.record(exchange_id="refused", policy_input=INPUT, decision=ALLOW)
        await asyncio.sleep(0.2)
        await writer.aflush()
        refuse(False)
        writer.record(exchange_id="stored", policy_input=INPUT, decision=ALLOW)
        await writer.aflush()
        writer.close()
        await pool.close()

    try:
        asyncio.run(main())
        assert [r[0] for r in _rows(engine)] == ["stored"]
        assert "decision log batch of 1 lost" in caplog.text
    finally:
        admin.dispose()
        engine.dispose()


def test_on_postgresql_decisions_from_another_loop_go_to_the_writer_thread(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's connections belong to the loop it was made on; a decision recorded
    on any other loop is stored by the writer thread, not sent over them."""
    engine = make_engine(pg_url)
    upgrade(engine)
    made: list[DecisionLogWriter] = []

    async def serving() -> None:
        made.append(DecisionLogWriter(engine, clock=lambda: T0, linger_s=0.01, pool=_pool(engine)))

    async def elsewhere() -> None:
        made[0].record(exchange_id="other-loop", policy_input=INPUT, decision=ALLOW)

    try:
        asyncio.run(serving())
        writer = made[0]
        thread_writes = _record_writes(monkeypatch, writer)
        asyncio.run(elsewhere())
        writer.flush()
        assert thread_writes == [writer._thread.ident]
        assert [r[0] for r in _rows(engine)] == ["other-loop"]
        writer.close()
    finally:
        engine.dispose()


def test_on_postgresql_a_flush_on_the_loop_itself_stores_what_it_holds(pg_url: str) -> None:
    """A flush called on the serving loop cannot wait for that loop: it writes the
    rows the loop holds right there."""
    engine = make_engine(pg_url)
    upgrade(engine)

    async def main() -> list[str]:
        pool = _pool(engine)
        writer = DecisionLogWriter(engine, clock=lambda: T0, linger_s=30, pool=pool)
        writer.record(exchange_id="held", policy_input=INPUT, decision=ALLOW)
        writer.flush(timeout=5)
        stored = [r[0] for r in _rows(engine)]
        writer.close()
        await pool.close()
        return stored

    try:
        assert asyncio.run(main()) == ["held"]
    finally:
        engine.dispose()
