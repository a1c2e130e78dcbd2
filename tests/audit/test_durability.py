"""A SQLite batch is synced after its write turn: durable before the caller hears of
it, without other writers waiting for the disk (``audit.durability``)."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from audit import AuditUnavailable, durability, store
from audit.appender import write_batch
from tests.audit.conftest import LogFactory, entry


def _synchronous_levels(engine: sa.Engine, n: int) -> set[int]:
    """``PRAGMA synchronous`` of ``n`` connections held at once (the pool's too)."""
    conns = [engine.connect() for _ in range(n)]
    try:
        return {int(c.exec_driver_sql("PRAGMA synchronous").scalar_one()) for c in conns}
    finally:
        for c in conns:
            c.close()


def _record_calls(
    monkeypatch: pytest.MonkeyPatch, target: str, real: Callable[[Any], None]
) -> list[Any]:
    """Patch ``target`` to record each argument, then do what ``real`` does."""
    calls: list[Any] = []

    def recording(arg: Any) -> None:
        calls.append(arg)
        real(arg)

    monkeypatch.setattr(target, recording)
    return calls


def test_batch_is_synced_after_the_write_turn_is_given_back(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "a.db"
    log = make_log(f"sqlite:///{db}")
    with log.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch (k INTEGER PRIMARY KEY)")
    log.append(entry(0))
    seen: dict[str, Any] = {}
    real = durability.sync_wal

    def observing_sync(path: str) -> None:
        seen["path"] = path
        # The batch is committed: another connection reads it ...
        with log.engine.connect() as other:
            seen["size"] = other.execute(sa.select(store.head.c.size)).scalar_one()

        # ... and another writer gets the write turn while this sync is pending.
        def write() -> None:
            with store.write_lock(log.engine), log.engine.begin() as c:
                c.exec_driver_sql("INSERT INTO scratch (k) VALUES (1)")
            seen["other_writer"] = True

        t = threading.Thread(target=write)
        t.start()
        t.join(timeout=20)
        seen["returned_before_sync"] = done.is_set()
        real(path)

    done = threading.Event()
    monkeypatch.setattr("audit.committer.sync_wal", observing_sync)
    log.append(entry(1))
    done.set()
    assert seen == {
        "path": f"{db}-wal",
        "size": 2,
        "other_writer": True,
        "returned_before_sync": False,
    }
    assert log.verify().ok


def test_sync_reaches_the_disk_and_every_connection_commits_durably_again(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "a.db"
    log = make_log(f"sqlite:///{db}")
    synced = _record_calls(monkeypatch, "os.fdatasync", os.fdatasync)
    log.append_many([entry(i) for i in range(3)])
    log.append(entry(3))
    assert len(synced) == 2  # one sync a batch
    # The batch ran at NORMAL; every connection is back at FULL (2) for other writers.
    assert _synchronous_levels(log.engine, 3) == {2}
    assert log.head().size == 4 and log.verify().ok


def test_a_failed_sync_stops_the_appender_until_restart(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    log = make_log(url)
    log.append(entry(0))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(AuditUnavailable, match="could not be synced"):
        log.append(entry(1))
    monkeypatch.undo()
    # The disk said no once: nothing may be chained on that batch or acknowledged
    # after it in this process, not even with a disk that answers again.
    with pytest.raises(AuditUnavailable, match="until the gateway restarts"):
        log.append(entry(2))
    with pytest.raises(AuditUnavailable, match="until the gateway restarts"):
        log.verify_appending()
    with log.engine.connect() as conn, pytest.raises(AuditUnavailable):
        log.append_in(conn, entry(2))
    log._cadence.run()  # the cadence signs nothing the disk may have lost
    assert log.latest_checkpoint() is None
    assert log.head().size == 2  # the failed batch is in the log; its caller heard "failed"
    assert _synchronous_levels(log.engine, 2) == {2}
    # A restart (a new appender) goes on from the head, and the log verifies.
    log.close()
    again = make_log(url)
    again.append(entry(3))
    assert again.head().size == 3 and again.verify().ok


def _refuse_inserts(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )


def test_a_batch_refused_inside_its_transaction_is_an_audit_error(
    tmp_path: Path, make_log: LogFactory
) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))
    _refuse_inserts(log.engine)
    with pytest.raises(AuditUnavailable, match="refused the write"):
        write_batch(log.engine, "node-1", [[entry(1)]])
    # Rolled back first, then back to FULL: the connection stays usable in the pool.
    assert _synchronous_levels(log.engine, 3) == {2}
    assert log.head().size == 1 and log.verify().ok


def test_the_synced_wal_is_the_file_sqlite_opened(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "uri.db"
    log = make_log(f"sqlite:///file:{db}?uri=true")
    synced = _record_calls(monkeypatch, "audit.committer.sync_wal", durability.sync_wal)
    log.append(entry(0))
    assert synced == [f"{db}-wal"]
    assert log.verify().ok


def test_a_missing_wal_is_not_taken_for_synced(tmp_path: Path) -> None:
    with pytest.raises(AuditUnavailable, match="cannot open the audit WAL"):
        durability.sync_wal(str(tmp_path / "gone.db-wal"))


def test_a_database_not_in_wal_mode_commits_durably_in_its_transaction(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "rollback-journal.db"
    log = make_log(f"sqlite:///{db}")
    log.engine.dispose()

    @sa.event.listens_for(log.engine, "connect")
    def _delete_journal(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=DELETE")
        cur.close()

    calls: list[str] = []
    monkeypatch.setattr("audit.committer.sync_wal", calls.append)
    log.append(entry(0))
    assert calls == []
    with log.engine.connect() as conn:
        assert durability.wal_file(log.engine, conn) is None
    assert log.verify().ok


def test_the_writer_commits_the_next_batch_while_a_sync_is_pending(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))
    release = threading.Event()
    real = durability.sync_wal

    def slow_first_sync(path: str) -> None:
        release.wait(timeout=30)
        real(path)

    monkeypatch.setattr("audit.committer.sync_wal", slow_first_sync)
    returned: list[int] = []
    first = threading.Thread(target=lambda: returned.append(log.append(entry(1)).seq))
    first.start()
    second = threading.Thread(target=lambda: returned.append(log.append(entry(2)).seq))
    deadline = time.monotonic() + 20
    while log.head().size < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    second.start()
    while log.head().size < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    # Both batches are committed; neither caller has heard back: the sync is pending.
    assert log.head().size == 3 and returned == []
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert sorted(returned) == [1, 2]
    assert log.verify().ok


@pytest.mark.parametrize(
    ("database", "path"),
    [
        ("/srv/accord/accord.db", "/srv/accord/accord.db"),
        ("file:/srv/accord/my%20log.db?uri=true", "/srv/accord/my log.db"),
        (":memory:", None),
        ("file::memory:?cache=shared", None),
        ("file:/srv/m.db?mode=memory", None),
        (None, None),
    ],
)
def test_the_write_turn_and_directories_follow_the_file_a_url_names(
    database: str | None, path: str | None
) -> None:
    """A URI filename's lock file and parent directory are the file's own, not a
    directory named ``file:`` wherever the process happens to run."""
    assert store.sqlite_file(database) == path


def test_a_batch_refused_after_its_entries_were_inserted_leaves_nothing(
    tmp_path: Path, make_log: LogFactory
) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append_many([entry(0), entry(1)])
    with log.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE UPDATE ON audit_head "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    with pytest.raises(AuditUnavailable, match="refused the write"):
        write_batch(log.engine, "node-1", [[entry(2), entry(3)], [entry(4)]])
    with log.engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT count(*) FROM audit_entries").scalar_one()
        nodes = conn.exec_driver_sql("SELECT count(*) FROM audit_nodes").scalar_one()
    assert (count, log.head().size) == (2, 2)
    assert nodes == 1  # the one node of the first two leaves, nothing of the refused batch
    assert _synchronous_levels(log.engine, 3) == {2}
    with log.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse")
    log.append(entry(2))
    assert log.head().size == 3 and log.verify().ok


def test_loop_batches_write_on_the_threads_own_lazy_connection(
    tmp_path: Path, make_log: LogFactory
) -> None:
    """The batch commits at NORMAL on a connection kept for it (no PRAGMA switching per
    batch), while every pooled connection stays at FULL for everyone else."""
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")

    async def three() -> None:
        await asyncio.gather(*(log.append_async(entry(i)) for i in range(3)))
        await log.append_async(entry(3))

    asyncio.run(three())
    own = durability.lazy_connection(log.engine)  # this thread ran the loop
    assert own.total_changes >= 4  # the entries went in through it
    assert own.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert _synchronous_levels(log.engine, 3) == {2}
    assert log.head().size == 4 and log.verify().ok


def test_a_refused_batch_drops_the_lazy_connection_and_the_next_one_succeeds(
    tmp_path: Path, make_log: LogFactory
) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    write_batch(log.engine, "node-1", [[entry(0)]])
    before = durability.lazy_connection(log.engine)
    _refuse_inserts(log.engine)
    with pytest.raises(AuditUnavailable, match="refused the write"):
        write_batch(log.engine, "node-1", [[entry(1)]])
    with pytest.raises(sqlite3.ProgrammingError):
        before.execute("SELECT 1")  # closed, not left in whatever state the error left it
    with log.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse")
    write_batch(log.engine, "node-1", [[entry(1)]])
    assert durability.lazy_connection(log.engine) is not before
    assert log.head().size == 2 and log.verify().ok


def test_each_thread_has_its_own_lazy_connection(tmp_path: Path, make_log: LogFactory) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    here = durability.lazy_connection(log.engine)
    seen: list[Any] = []
    t = threading.Thread(target=lambda: seen.append(durability.lazy_connection(log.engine)))
    t.start()
    t.join()
    assert seen and seen[0] is not here
    assert durability.lazy_connection(log.engine) is here
