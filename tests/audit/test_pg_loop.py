"""The PostgreSQL loop writer: batches committed from the event loop over an async
connection, on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from audit import AuditLog, committer
from audit.errors import AuditUnavailable
from audit.health import health_of
from audit.pg_loop import PgLoopWriter
from audit.records import Appended
from tests._support.servers import fresh_database
from tests.audit.conftest import LogFactory, entry, stored_rows


async def _append_all(log: AuditLog, first: int, n: int) -> list[Appended]:
    return await asyncio.gather(*(log.append_async(entry(first + i)) for i in range(n)))


def _writer(log: AuditLog) -> PgLoopWriter:
    writer = log._loop_writers.get(asyncio.get_running_loop())
    assert isinstance(writer, PgLoopWriter)
    return writer


def _writer_pid(log: AuditLog) -> int:
    conn = _writer(log)._conn
    assert conn is not None
    return int(conn.info.backend_pid)


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def test_postgresql_with_psycopg_writes_on_the_loop(pg_url: str, make_log: LogFactory) -> None:
    assert make_log(pg_url).loop_writes
    assert not make_log(pg_url, loop_writes=False).loop_writes


def test_appends_of_one_pass_are_one_batch_sent_from_the_loop(
    pg_url: str, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(pg_url)
    thread_batches: list[int] = []
    real = committer.commit_batch
    monkeypatch.setattr(
        committer,
        "commit_batch",
        lambda engine, node, requests: (
            thread_batches.append(len(requests)) or real(engine, node, requests)
        ),
    )

    async def main() -> tuple[list[Appended], int]:
        got = await _append_all(log, 0, 20)
        pid = _writer_pid(log)
        await log.aclose_loop()
        return got, pid

    got, pid = asyncio.run(main())
    assert [a.seq for a in got] == list(range(20))
    assert thread_batches == []  # the writer thread committed nothing
    assert log.head().size == 20
    with log.engine.connect() as conn:  # one batch: twenty entries, one commit
        rows = conn.exec_driver_sql("SELECT DISTINCT ts FROM audit_entries").all()
    assert len(rows) == 1
    assert pid > 0
    assert log.verify().ok


def test_batches_store_exactly_what_the_portable_path_stores(
    pg_server_url: str, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop writer's plain SQL and ``append_in``'s SQLAlchemy statements write the
    same rows and the same head."""
    from audit import appender, pg_loop

    fixed = "2026-06-01T12:00:00.000Z"
    monkeypatch.setattr(appender, "now_ts", lambda: fixed)
    monkeypatch.setattr(pg_loop, "now_ts", lambda: fixed)
    looped = make_log(fresh_database(pg_server_url))
    portable = make_log(fresh_database(pg_server_url))

    async def main() -> None:
        await _append_all(looped, 0, 1)
        await _append_all(looped, 1, 9)
        await looped.aclose_loop()

    asyncio.run(main())
    for i in range(10):
        with portable.engine.begin() as conn:
            appender.append_in(conn, portable.node, [entry(i)])

    got, want = stored_rows(looped), stored_rows(portable)
    assert len(got["audit_entries"]) == 10
    assert got == want


def test_a_connection_lost_between_batches_is_replaced_without_an_error(
    pg_url: str, make_log: LogFactory
) -> None:
    """The server dropped the writer's idle connection (a restart, a failover): the next
    batch wrote nothing on it, so it is sent again on a fresh one."""
    log = make_log(pg_url)
    admin = _admin(pg_url)

    async def main() -> tuple[int, int]:
        await _append_all(log, 0, 3)
        before = _writer_pid(log)
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": before})
        await asyncio.sleep(0.1)
        await _append_all(log, 3, 3)
        after = _writer_pid(log)
        await log.aclose_loop()
        return before, after

    before, after = asyncio.run(main())
    admin.dispose()
    assert before != after
    assert log.head().size == 6
    assert log.verify().ok


@contextlib.contextmanager
def _trigger(url: str, name: str, body: str, create: str, table: str) -> Iterator[None]:
    """The plpgsql trigger function ``name`` (``body``) and the trigger ``create``
    makes on ``table``, while inside the block."""
    admin = _admin(url)
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ {body} $$"
        )
        conn.exec_driver_sql(create)
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP TRIGGER {name} ON {table}")
        admin.dispose()


def _refusing_head_updates(url: str) -> contextlib.AbstractContextManager[None]:
    return _trigger(
        url,
        "refuse_move",
        "BEGIN RAISE EXCEPTION 'no'; END",
        "CREATE TRIGGER refuse_move BEFORE UPDATE ON audit_head "
        "FOR EACH ROW EXECUTE FUNCTION refuse_move()",
        "audit_head",
    )


def test_a_batch_refused_after_its_inserts_leaves_nothing_and_the_next_goes_on(
    pg_url: str, make_log: LogFactory
) -> None:
    log = make_log(pg_url)

    async def main() -> None:
        await _append_all(log, 0, 2)
        with _refusing_head_updates(pg_url):
            results = await asyncio.gather(
                *(log.append_async(entry(2 + i)) for i in range(4)), return_exceptions=True
            )
            assert all(isinstance(r, AuditUnavailable) for r in results), results
            # Readiness sees the refused batch at once, not only at its next probe.
            assert isinstance(health_of(log.engine).failure, AuditUnavailable)
        got = await _append_all(log, 2, 2)
        assert [a.seq for a in got] == [2, 3]
        assert health_of(log.engine).failure is None
        await log.aclose_loop()

    asyncio.run(main())
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM audit_entries").scalar() == 4
    assert log.verify().ok


def test_a_store_that_takes_no_connections_fails_appends_closed_then_recovers(
    pg_server_url: str, make_log: LogFactory
) -> None:
    url = fresh_database(pg_server_url)
    log = make_log(url)
    name = sa.make_url(url).database
    admin = _admin(pg_server_url)

    def allow(yes: bool) -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(yes).lower()}')
            if not yes:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": name},
                )

    async def main() -> None:
        await _append_all(log, 0, 2)
        allow(False)
        try:
            with pytest.raises(AuditUnavailable):
                await log.append_async(entry(2))
        finally:
            allow(True)
        assert (await log.append_async(entry(2))).seq == 2
        await log.aclose_loop()

    asyncio.run(main())
    admin.dispose()
    log.engine.dispose()
    assert log.head().size == 3


def _one_statement_batches(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, for each batch that knew the head, whether its one statement wrote it."""
    from audit import pg_loop

    real = pg_loop._write_after
    wrote: list[bool] = []

    async def recording(*args: Any) -> Any:
        done = await real(*args)
        wrote.append(done is not None)
        return done

    monkeypatch.setattr(pg_loop, "_write_after", recording)
    return wrote


def test_a_batch_stuck_behind_the_head_lock_times_out_and_the_next_goes_on(
    pg_url: str, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another node holds the chain head: the callers fail closed after the log's
    timeout, and the writer is not left waiting on a connection it cannot reuse.
    The one-statement batch skips the held head instead of waiting for it: a
    statement left waiting by callers who gave up would still commit when the lock
    came free, where the locked way's transaction waits for its COMMIT."""
    log = make_log(pg_url, timeout_s=1.0)
    other = sa.create_engine(pg_url)
    wrote = _one_statement_batches(monkeypatch)

    async def main() -> None:
        await _append_all(log, 0, 1)
        with other.connect() as conn:
            conn.exec_driver_sql("SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE")
            with pytest.raises(AuditUnavailable):
                await log.append_async(entry(1))
            conn.rollback()
        await asyncio.sleep(0.2)  # time for a left-behind statement to commit, were there one
        assert (await log.append_async(entry(1))).seq == 1
        await log.aclose_loop()

    asyncio.run(main())
    other.dispose()
    assert wrote[0] is False  # the held head was skipped, nothing written
    assert log.head().size == 2
    assert log.verify().ok


def test_close_writes_what_is_queued_closes_the_connection_and_refuses_later_appends(
    pg_url: str, make_log: LogFactory
) -> None:
    log = make_log(pg_url)

    async def main() -> None:
        futures = [asyncio.ensure_future(log.append_async(entry(i))) for i in range(5)]
        await asyncio.sleep(0)  # queued, not yet written
        await log.aclose_loop()
        assert all(f.done() for f in futures)
        assert [f.result().seq for f in futures] == list(range(5))
        assert _writer(log)._conn is None
        with pytest.raises(AuditUnavailable):  # the gateway is stopping
            await log.append_async(entry(5))

    asyncio.run(main())


def test_loop_batches_and_thread_batches_share_one_gapless_chain(
    pg_url: str, make_log: LogFactory
) -> None:
    """Another process or node appending through its writer thread while this one
    writes from its loop: both take the head lock, so the chain stays gapless."""
    looped = make_log(pg_url)
    threaded = make_log(pg_url, loop_writes=False)

    async def main() -> None:
        other = asyncio.to_thread(lambda: [threaded.append(entry(100 + i)) for i in range(30)])
        await asyncio.gather(other, *(looped.append_async(entry(i)) for i in range(60)))
        await looped.aclose_loop()

    asyncio.run(main())
    with looped.engine.connect() as conn:
        seqs = [r[0] for r in conn.exec_driver_sql("SELECT seq FROM audit_entries ORDER BY seq")]
    assert seqs == list(range(90))
    assert looped.verify().ok


def test_a_batch_whose_commit_may_have_happened_is_never_sent_again(
    pg_url: str, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The locked way: the connection is lost after the entries went out, so the batch
    may be committed; its callers fail closed and it is not written a second time."""
    from audit import pg_loop

    log = make_log(pg_url)
    real = pg_loop._write
    calls = 0

    async def head_moved(*_args: Any) -> None:
        return None  # every batch goes the locked way

    async def lost_after_writing(
        conn: Any, node: str, requests: Any, attempt: Any, lost: Any = None
    ) -> Any:
        nonlocal calls
        calls += 1
        results = await real(conn, node, requests, attempt, lost)  # committed
        if calls == 2:  # the second batch, on a connection the first one used
            await conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return results

    monkeypatch.setattr(pg_loop, "_write_after", head_moved)
    monkeypatch.setattr(pg_loop, "_write", lost_after_writing)

    async def main() -> None:
        await _append_all(log, 0, 2)  # the connection is now a reused one
        with pytest.raises(AuditUnavailable):
            await log.append_async(entry(2))
        assert (await log.append_async(entry(3))).seq == 3
        await log.aclose_loop()

    asyncio.run(main())
    assert calls == 3  # the lost batch was not sent again
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM audit_entries").scalar() == 4
    assert log.verify().ok


def test_a_writer_that_knows_the_head_sends_a_batch_as_one_statement(
    pg_url: str, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit import pg_loop

    log = make_log(pg_url)
    wrote = _one_statement_batches(monkeypatch)
    locked = 0
    real = pg_loop._write

    async def counting(*args: Any) -> Any:
        nonlocal locked
        locked += 1
        return await real(*args)

    monkeypatch.setattr(pg_loop, "_write", counting)

    async def main() -> None:
        for i in range(5):
            await _append_all(log, 3 * i, 3)
        await log.aclose_loop()

    asyncio.run(main())
    assert locked == 1 and wrote == [True] * 4  # only the first batch read the head
    assert log.head().size == 15
    assert log.verify().ok


def test_a_head_moved_by_another_writer_sends_the_batch_the_locked_way(
    pg_url: str, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    looped = make_log(pg_url)
    threaded = make_log(pg_url, loop_writes=False)
    wrote = _one_statement_batches(monkeypatch)

    async def main() -> list[int]:
        await _append_all(looped, 0, 2)
        await asyncio.to_thread(threaded.append, entry(100))  # moves the head
        got = await _append_all(looped, 2, 2)
        await looped.aclose_loop()
        return [a.seq for a in got]

    assert asyncio.run(main()) == [3, 4]
    assert wrote == [False]  # it wrote nothing, then the locked way wrote it
    assert looped.head().size == 5
    assert looped.verify().ok


@pytest.mark.parametrize("committed", [True, False])
def test_a_one_statement_batch_lost_with_its_connection_is_settled_by_the_chain(
    committed: bool, pg_url: str, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is lost with the statement's outcome unknown: on a fresh one, the
    entry at the batch's last seq says whether it was committed. Committed: the callers
    get it, nothing is written twice. Not: it is written, once."""
    from audit import pg_loop

    log = make_log(pg_url)
    real = pg_loop._write_after
    lost = False

    async def losing(conn: Any, *args: Any) -> Any:
        nonlocal lost
        if lost:
            return await real(conn, *args)
        lost = True
        if committed:
            await real(conn, *args)
            await conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        await conn.close()  # the statement never reaches the server
        return await real(conn, *args)

    monkeypatch.setattr(pg_loop, "_write_after", losing)

    async def main() -> list[int]:
        await _append_all(log, 0, 2)
        got = await _append_all(log, 2, 3)
        await log.aclose_loop()
        return [a.seq for a in got]

    assert asyncio.run(main()) == [2, 3, 4]
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM audit_entries").scalar() == 5
    assert log.verify().ok


def test_a_log_used_from_several_loops_keeps_one_connection_each_and_closes_them(
    pg_url: str, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit import pg_loop

    log = make_log(pg_url)
    opened: list[psycopg.AsyncConnection[Any]] = []
    real_connect = psycopg.AsyncConnection.connect

    async def counting(*args: Any, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        conn = await real_connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(pg_loop.psycopg.AsyncConnection, "connect", counting)
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    for i in range(10):  # the two loops take turns
        (first if i % 2 else second).run_until_complete(log.append_async(entry(i)))
    assert len(opened) == 2  # one each, not one an append
    first.run_until_complete(log.aclose_loop())
    first.close()
    second.close()  # closed without aclose_loop: the next loop's first append ends it

    async def later() -> None:
        await _append_all(log, 10, 1)
        assert [c.closed for c in opened] == [True, True, False]
        await log.aclose_loop()

    asyncio.run(later())
    assert all(conn.closed for conn in opened)
    assert log.head().size == 11
    assert log.verify().ok


def _slow_commits(url: str, seconds: float) -> contextlib.AbstractContextManager[None]:
    """Every transaction that inserts an entry spends ``seconds`` in its COMMIT (a
    deferred constraint trigger runs there), as a commit stuck on a slow disk or a
    synchronous standby would."""
    return _trigger(
        url,
        "slow_commit",
        f"BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END",
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON audit_entries "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
        "audit_entries",
    )


@pytest.mark.parametrize("one_statement", [True, False])
def test_a_batch_whose_callers_timed_out_cannot_commit_afterwards(
    one_statement: bool, pg_url: str, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's commit outlasts the log's timeout, so its callers are told 503. The
    writer then stops the batch's server process: had it been left to finish, the log
    would hold entries for exchanges whose callers were told nothing was released."""
    from audit import pg_loop

    log = make_log(pg_url, timeout_s=1.0)
    if not one_statement:

        async def head_moved(*_args: Any) -> None:
            return None  # every batch goes the locked way

        monkeypatch.setattr(pg_loop, "_write_after", head_moved)

    async def main() -> None:
        await _append_all(log, 0, 2)  # the writer now knows the head
        with _slow_commits(pg_url, 4.0):
            results = await asyncio.gather(
                *(log.append_async(entry(2 + i)) for i in range(3)), return_exceptions=True
            )
            assert all(isinstance(r, AuditUnavailable) for r in results), results
            await asyncio.sleep(4.5)  # past the point where a left-behind commit would end
        with log.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM audit_entries").scalar() == 2
        assert (await log.append_async(entry(5))).seq == 2
        await log.aclose_loop()

    asyncio.run(main())
    assert log.head().size == 3
    assert log.verify().ok
