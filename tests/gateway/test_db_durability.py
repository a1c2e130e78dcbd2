"""``lazy_commit``: the write commits, skips only its own wait for the disk, and
leaves the pooled connection as durable as it found it (``raw_lazy_transaction``:
on a connection of its own that no one else gets). ``WalCheckpointer``:
writers no longer checkpoint inside their commits; a background thread does."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from audit.durability import lazy_connection
from audit.store import write_lock
from gateway.db import WalCheckpointer, lazy_commit, make_engine, raw_lazy_transaction, upgrade

_T = sa.table("lazy_t", sa.column("x", sa.Integer))


def _durability(conn: sa.Connection, sqlite: bool) -> str:
    if sqlite:
        return {0: "off", 1: "normal", 2: "full", 3: "extra"}[
            int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())
        ]
    return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar_one())


def test_commits_lazily_and_restores_the_connection(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=1, max_overflow=0)  # every block: one connection
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS lazy_t")
            conn.exec_driver_sql("CREATE TABLE lazy_t (x INTEGER)")
            before = _durability(conn, sqlite)
        with lazy_commit(engine) as conn:
            conn.execute(_T.insert().values(x=1))
            inside = _durability(conn, sqlite)
        with engine.connect() as conn:
            after = _durability(conn, sqlite)
            assert conn.execute(sa.select(sa.func.count()).select_from(_T)).scalar_one() == 1
        assert (before, inside, after) == (
            ("full", "normal", "full") if sqlite else ("on", "off", "on")
        )
    finally:
        engine.dispose()


def _insert_then_fail(engine: sa.Engine) -> None:
    with lazy_commit(engine) as conn:
        conn.execute(_T.insert().values(x=1))
        raise RuntimeError("the caller failed")


def test_a_failed_write_rolls_back_and_restores(db_url: str) -> None:
    engine = make_engine(db_url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS lazy_t")
            conn.exec_driver_sql("CREATE TABLE lazy_t (x INTEGER)")
        with pytest.raises(RuntimeError):
            _insert_then_fail(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(_T)).scalar_one() == 0
            assert _durability(conn, sqlite) == ("full" if sqlite else "on")
    finally:
        engine.dispose()


def test_the_background_checkpointer_keeps_the_wal_short(tmp_path: Path) -> None:
    """Writers never checkpoint below 10,000 pages; the checkpointer thread does."""
    db = tmp_path / "accord.db"
    engine = make_engine(f"sqlite:///{db}")
    checkpointer = WalCheckpointer(engine, interval_s=0.05)
    wal = Path(f"{db}-wal")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE lazy_t (x INTEGER, pad TEXT)")
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 10_000
        # ~4 MB of rows: with SQLite's default (1,000 pages) a commit would have
        # checkpointed by itself; here only the thread may.
        for _ in range(40):
            with engine.begin() as conn:
                conn.execute(_T.insert(), [{"x": i} for i in range(50)])
                conn.exec_driver_sql("UPDATE lazy_t SET pad = hex(randomblob(1000))")
        frames_before = _wal_frames(engine)
        assert frames_before > 1_000
        checkpointer.start()
        deadline = time.monotonic() + 10
        while _checkpointed(engine) < frames_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _checkpointed(engine) >= frames_before
        with engine.begin() as conn:  # the next write starts the WAL from its beginning
            conn.execute(_T.insert().values(x=-1))
        assert _wal_frames(engine) < 100
        assert wal.exists()
    finally:
        checkpointer.stop()
        engine.dispose()


def _wal_frames(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_checkpoint(NOOP)").one()[1])


def _checkpointed(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_checkpoint(NOOP)").one()[2])


def test_the_checkpointer_is_a_no_op_on_postgresql(pg_url: str) -> None:
    engine = make_engine(pg_url)
    checkpointer = WalCheckpointer(engine, interval_s=0.01)
    try:
        checkpointer.start()
        assert checkpointer._thread is None
    finally:
        checkpointer.stop()
        engine.dispose()


def test_every_unit_of_work_and_migration_holds_the_sqlite_write_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's writers take the turn without waiting; none of Accord's own writers
    may hold SQLite's lock outside it, or the loop would sleep in SQLite's busy handler."""
    from gateway.db import session_scope, upgrade
    from tests._support.turn import taken_elsewhere

    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    taken: list[bool] = []

    try:
        with session_scope(engine):
            taken.append(taken_elsewhere(engine))
        real_begin = engine.begin

        def begin() -> Any:  # the migration's transaction starts with the turn held
            taken.append(taken_elsewhere(engine))
            return real_begin()

        monkeypatch.setattr(engine, "begin", begin)
        upgrade(engine)
        assert taken[:2] == [True, True]
    finally:
        engine.dispose()


def _raw_insert_then_fail(engine: sa.Engine) -> None:
    with write_lock(engine), raw_lazy_transaction(engine) as cur:
        cur.execute("INSERT INTO lazy_t (x) VALUES (2)")
        raise RuntimeError("the caller failed")


def test_raw_lazy_transactions_commit_on_the_threads_own_connection(tmp_path: Path) -> None:
    """The exchange's hottest writes: committed lazily on the connection kept for
    them; every pooled connection stays at FULL; a caller's error rolls back and
    keeps the connection, a driver error drops it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE lazy_t (x INTEGER)")
        with write_lock(engine), raw_lazy_transaction(engine) as cur:
            cur.execute("INSERT INTO lazy_t (x) VALUES (1)")
        own = lazy_connection(engine)
        assert own.execute("PRAGMA synchronous").fetchone()[0] == 1
        with pytest.raises(RuntimeError):
            _raw_insert_then_fail(engine)
        assert lazy_connection(engine) is own and not own.in_transaction
        with (
            pytest.raises(sqlite3.OperationalError),
            write_lock(engine),
            raw_lazy_transaction(engine) as cur,
        ):
            cur.execute("INSERT INTO no_such_table (x) VALUES (3)")
        assert lazy_connection(engine) is not own
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT x FROM lazy_t").scalars().all() == [1]
            assert _durability(conn, True) == "full"
    finally:
        engine.dispose()


def test_nodes_migrating_an_empty_postgresql_database_together_all_succeed(pg_url: str) -> None:
    """The nodes of a new deployment start at once and each runs the migrations: the
    first creates the tables, the others wait for it and then find nothing to do."""
    engines = [make_engine(pg_url) for _ in range(3)]
    start = threading.Barrier(len(engines))
    failures: list[BaseException] = []

    def migrate(engine: sa.Engine) -> None:
        start.wait()
        try:
            upgrade(engine)
        except BaseException as exc:  # collected: the assertion below names it
            failures.append(exc)

    threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert failures == []
        with engines[0].connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        for e in engines:
            e.dispose()
