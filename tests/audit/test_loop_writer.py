"""Appends written on the caller's event loop (SQLite): one batch per pass, synced
elsewhere, every caller told only once its entry is on disk."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from audit import AuditLog, AuditUnavailable, committer, engine_for, store
from audit.records import Appended
from tests.audit.conftest import LogFactory, entry


def _record_batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Patch ``commit_batch`` to record (thread, requests) of each call."""
    calls: list[tuple[int, int]] = []
    real = committer.commit_batch

    def recording(engine: Any, node: str, requests: Any) -> Any:
        calls.append((threading.get_ident(), len(requests)))
        return real(engine, node, requests)

    monkeypatch.setattr(committer, "commit_batch", recording)
    return calls


async def _append_all(log: AuditLog, first: int, n: int) -> list[Appended]:
    return await asyncio.gather(*(log.append_async(entry(first + i)) for i in range(n)))


def test_sqlite_and_postgresql_write_on_the_loop_unless_told_not_to(
    tmp_path: Path, make_log: LogFactory
) -> None:
    assert make_log(f"sqlite:///{tmp_path / 'a.db'}").loop_writes
    assert not make_log(f"sqlite:///{tmp_path / 'b.db'}", loop_writes=False).loop_writes
    # The default follows the dialect; no server is needed to see which it picks.
    from sqlalchemy import create_engine

    pg = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert AuditLog(pg).loop_writes


def test_appends_of_one_pass_are_one_batch_written_on_the_loop(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    batches = _record_batches(monkeypatch)

    async def main() -> tuple[int, list[Appended]]:
        return threading.get_ident(), await _append_all(log, 0, 20)

    loop_thread, got = asyncio.run(main())
    assert batches == [(loop_thread, 20)]
    assert [a.seq for a in got] == list(range(20))
    assert log.head().size == 20 and log.verify().ok


def test_a_pass_larger_than_max_batch_is_split(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}", max_batch=4)
    batches = _record_batches(monkeypatch)
    got = asyncio.run(_append_all(log, 0, 10))
    assert [n for _, n in batches] == [4, 4, 2]
    assert sorted(a.seq for a in got) == list(range(10))
    assert log.verify().ok


def test_without_loop_writes_the_writer_thread_commits(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}", loop_writes=False)
    batches = _record_batches(monkeypatch)

    async def main() -> int:
        await _append_all(log, 0, 5)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert batches and all(t != loop_thread for t, _ in batches)
    assert log.head().size == 5 and log.verify().ok


def test_callers_hear_of_their_entries_only_after_the_sync(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the syncer thread (no sync counts as quick here, so none runs on the loop)."""
    monkeypatch.setattr(committer, "_QUICK_SYNC_S", 0.0)
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))  # the WAL exists and its directory was synced
    release = threading.Event()
    real = committer.sync_wal

    def held_sync(path: str) -> None:
        release.wait(20)
        real(path)

    monkeypatch.setattr(committer, "sync_wal", held_sync)

    async def main() -> tuple[bool, int, list[Appended]]:
        tasks = [asyncio.ensure_future(log.append_async(entry(i))) for i in (1, 2, 3)]
        # A few passes: the batch commits on the loop; the sync is held, so nobody
        # may be answered yet.
        await asyncio.sleep(0.05)
        answered_early = any(t.done() for t in tasks)
        committed = log.head().size
        release.set()
        return answered_early, committed, await asyncio.gather(*tasks)

    answered_early, committed, got = asyncio.run(main())
    assert committed == 4
    assert not answered_early
    assert [a.seq for a in got] == [1, 2, 3]


def _record_syncs(
    monkeypatch: pytest.MonkeyPatch, log: AuditLog, tasks: list[asyncio.Future[Appended]]
) -> list[tuple[int, bool, int]]:
    """Patch ``sync_wal`` to record (thread, a caller answered yet, write turns held)."""
    seen: list[tuple[int, bool, int]] = []
    real = committer.sync_wal
    turn = store._turn_of(log.engine)

    def recording(path: str) -> None:
        seen.append((threading.get_ident(), any(t.done() for t in tasks), turn.depth))
        real(path)

    monkeypatch.setattr(committer, "sync_wal", recording)
    return seen


def test_a_lone_batch_is_synced_on_the_loop_after_the_turn_before_any_answer(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing else waits for the syncer and syncs are quick: the loop syncs its batch
    itself, once the write turn is given back, and answers its callers after."""
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))
    log._writer()._last_sync_s = 0.0  # the last sync was quick (a busy machine may say not)
    tasks: list[asyncio.Future[Appended]] = []
    seen = _record_syncs(monkeypatch, log, tasks)

    async def main() -> tuple[int, list[Appended]]:
        tasks.extend(asyncio.ensure_future(log.append_async(entry(i))) for i in (1, 2, 3))
        return threading.get_ident(), await asyncio.gather(*tasks)

    loop_thread, got = asyncio.run(main())
    assert seen == [(loop_thread, False, 0)]  # one sync, on the loop, turn free, nobody told
    assert [a.seq for a in got] == [1, 2, 3]
    assert log.head().size == 4 and log.verify().ok


def _count_threadsafe_posts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count posts through the running loop's wake-up channel (``call_soon_threadsafe``),
    recording the posting thread."""
    posts: list[int] = []
    real = asyncio.BaseEventLoop.call_soon_threadsafe

    def counting(self: asyncio.BaseEventLoop, *args: Any, **kwargs: Any) -> Any:
        posts.append(threading.get_ident())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "call_soon_threadsafe", counting)
    return posts


def test_a_lone_batch_answers_its_callers_without_waking_the_loop(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Synced and settled on the loop's own thread, a lone batch answers its callers
    directly: nothing goes through the loop's wake-up channel (a write, a wake-up and
    a read per exchange before)."""
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))
    log._writer()._last_sync_s = 0.0  # the last sync was quick (a busy machine may say not)
    posts = _count_threadsafe_posts(monkeypatch)

    got = asyncio.run(_append_all(log, 1, 3))
    assert [a.seq for a in got] == [1, 2, 3]
    assert posts == []
    assert log.head().size == 4 and log.verify().ok


def test_a_batch_the_syncer_settles_is_answered_on_the_loop(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the syncer thread settles a loop batch, each answer is posted to the loop
    and set there, after the sync."""
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))
    writer = log._writer()
    posts = _count_threadsafe_posts(monkeypatch)

    async def main() -> tuple[int, list[int], list[Appended]]:
        writer._last_sync_s = 1.0  # the last sync was slow: this batch goes to the syncer
        answered_on: list[int] = []
        tasks = [asyncio.ensure_future(log.append_async(entry(i))) for i in (1, 2)]
        for t in tasks:
            t.add_done_callback(lambda _t: answered_on.append(threading.get_ident()))
        got = await asyncio.gather(*tasks)
        return threading.get_ident(), answered_on, got

    loop_thread, answered_on, got = asyncio.run(main())
    assert [a.seq for a in got] == [1, 2]
    assert answered_on == [loop_thread, loop_thread]
    assert len(posts) == 2 and loop_thread not in posts  # one post per caller, by the syncer
    assert log.head().size == 3 and log.verify().ok


def test_a_caller_gone_before_its_batch_is_written_is_left_out(
    tmp_path: Path, make_log: LogFactory
) -> None:
    """A caller that gave up (its timeout cancelled it) before the pass's batch was
    written gets no entry; the others of the pass get theirs, gapless."""
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))

    async def main() -> tuple[list[Appended], bool]:
        kept = asyncio.ensure_future(log.append_async(entry(1)))
        gone = asyncio.ensure_future(log.append_async(entry(2)))
        await asyncio.sleep(0)  # both have submitted; the batch is not written yet
        gone.cancel()
        got = list(await asyncio.gather(kept, asyncio.ensure_future(log.append_async(entry(3)))))
        with pytest.raises(asyncio.CancelledError):
            await gone
        return got, gone.cancelled()

    got, cancelled = asyncio.run(main())
    assert cancelled
    assert [a.seq for a in got] == [1, 2]
    assert log.head().size == 3 and log.verify().ok
    sealed = {"v", "seq", "ts", "node"}
    stored = [{k: v for k, v in e.doc().items() if k not in sealed} for e in log.entries(1, 3)]
    assert stored == [entry(1), entry(3)]


def test_a_caller_gone_while_its_batch_syncs_does_not_disturb_the_others(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller whose timeout fires after its batch was committed keeps its entry (the
    log may overstate what was released, never understate it) and its late answer is
    dropped quietly; the batch's other callers are answered."""
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))
    writer = log._writer()
    syncing, release = threading.Event(), threading.Event()
    real = committer.sync_wal

    def held(path: str) -> None:
        syncing.set()  # the batch is committed
        release.wait(10)
        real(path)

    monkeypatch.setattr(committer, "sync_wal", held)

    async def main() -> tuple[Appended, bool]:
        writer._last_sync_s = 1.0  # to the syncer thread, which waits for ``release``
        kept = asyncio.ensure_future(log.append_async(entry(1)))
        gone = asyncio.ensure_future(log.append_async(entry(2)))
        assert await asyncio.to_thread(syncing.wait, 10)  # committed, not yet synced
        gone.cancel()
        await asyncio.sleep(0)
        release.set()
        got = await kept
        await asyncio.sleep(0.05)  # the late answer for ``gone`` arrives and is dropped
        return got, gone.cancelled()

    loop_errors: list[dict[str, Any]] = []

    async def guarded() -> tuple[Appended, bool]:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: loop_errors.append(ctx))
        return await main()

    got, cancelled = asyncio.run(guarded())
    assert got.seq == 1 and cancelled
    assert loop_errors == []
    assert log.head().size == 3 and log.verify().ok


def test_a_loop_batch_goes_to_the_syncer_when_a_sync_is_pending_or_syncs_are_slow(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers are never answered ahead of an earlier batch still waiting for its sync,
    and a slow disk never holds the loop: both cases go to the syncer thread."""
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))
    tasks: list[asyncio.Future[Appended]] = []
    seen = _record_syncs(monkeypatch, log, tasks)
    writer = log._writer()

    async def main() -> int:
        writer._last_sync_s = 1.0  # the last sync was slow
        tasks.append(asyncio.ensure_future(log.append_async(entry(1))))
        await asyncio.gather(*tasks)
        with writer._unsynced_lock:
            writer._unsynced += 1  # as if a thread's batch were still waiting for its sync
        try:
            tasks.append(asyncio.ensure_future(log.append_async(entry(2))))
            await asyncio.gather(*tasks)
        finally:
            with writer._unsynced_lock:
                writer._unsynced -= 1
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(seen) == 2 and all(thread != loop_thread for thread, _, _ in seen)
    assert log.head().size == 3 and log.verify().ok


def test_a_failed_sync_fails_the_batch_and_every_later_append(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    async def main() -> list[Any]:
        monkeypatch.setattr(os, "fdatasync", failing)
        first = await asyncio.gather(
            *(log.append_async(entry(i)) for i in (1, 2)), return_exceptions=True
        )
        monkeypatch.undo()
        later = await asyncio.gather(log.append_async(entry(3)), return_exceptions=True)
        return first + later

    results = asyncio.run(main())
    assert all(isinstance(r, AuditUnavailable) for r in results)
    assert "until the gateway restarts" in str(results[-1])


def test_a_pass_that_meets_a_closed_log_fails_closed(tmp_path: Path, make_log: LogFactory) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.append(entry(0))

    async def main() -> BaseException | None:
        task = asyncio.ensure_future(log.append_async(entry(1)))
        await asyncio.sleep(0)  # the entry is queued for this loop's next pass
        log.close()  # ... and the log closes before that pass writes it
        try:
            await task
        except AuditUnavailable as exc:
            return exc
        return None

    failed = asyncio.run(main())
    assert isinstance(failed, AuditUnavailable) and "closed" in str(failed)
    assert log.head().size == 1


def test_a_due_cadence_checkpoint_is_signed_off_the_loop(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}", checkpoint_every=5)
    threads: list[int] = []
    real = log.checkpoint

    def recording() -> str:
        threads.append(threading.get_ident())
        return real()

    monkeypatch.setattr(log, "checkpoint", recording)

    async def main() -> int:
        await _append_all(log, 0, 6)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    deadline = time.monotonic() + 20
    while log.latest_checkpoint() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    note = log.latest_checkpoint()
    assert note is not None and note.split("\n")[1] == "6"
    assert threads and loop_thread not in threads
    assert log.verify().ok


def test_the_turn_is_reentrant_and_not_waited_for_on_request(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with store.write_lock(engine, wait=False), store.write_lock(engine, wait=False):
            pass  # the holder takes it again
        held, release = threading.Event(), threading.Event()

        def holder() -> None:
            with store.write_lock(engine):
                held.set()
                release.wait(20)

        t = threading.Thread(target=holder)
        t.start()
        held.wait(20)
        with pytest.raises(store.TurnBusy), store.write_lock(engine, wait=False):
            pass
        release.set()
        t.join(20)
        # Another process holds the lock file: refused without waiting, too.
        fd = os.open(f"{tmp_path / 'a.db'}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with pytest.raises(store.TurnBusy), store.write_lock(engine, wait=False):
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            with store.write_lock(engine, wait=False):
                pass
        finally:
            os.close(fd)
    finally:
        engine.dispose()


def test_a_busy_turn_is_tried_again_later_and_the_loop_runs_on(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "a.db"
    log = make_log(f"sqlite:///{db}")
    log.append(entry(0))
    batches = _record_batches(monkeypatch)
    fd = os.open(f"{db}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    async def main() -> tuple[int, int, list[Appended]]:
        fcntl.flock(fd, fcntl.LOCK_EX)  # "another process" writes for a while
        first = asyncio.ensure_future(log.append_async(entry(1)))
        ticks = 0
        for _ in range(20):  # the loop is not blocked meanwhile
            await asyncio.sleep(0.005)
            ticks += 1
        later = asyncio.ensure_future(log.append_async(entry(2)))
        await asyncio.sleep(0.005)
        waiting = int(not first.done()) + int(not later.done())
        fcntl.flock(fd, fcntl.LOCK_UN)
        return ticks, waiting, await asyncio.gather(first, later)

    try:
        loop_thread = threading.get_ident()
        ticks, waiting, got = asyncio.run(main())
    finally:
        os.close(fd)
    assert ticks == 20 and waiting == 2
    assert [a.seq for a in got] == [1, 2]
    # Once the turn was free, both went in one batch, written on the loop.
    assert batches == [(loop_thread, 2)]
    assert log.verify().ok


def test_a_batch_waiting_for_the_turn_fails_closed_when_the_log_closes(
    tmp_path: Path, make_log: LogFactory
) -> None:
    db = tmp_path / "a.db"
    log = make_log(f"sqlite:///{db}")
    log.append(entry(0))
    fd = os.open(f"{db}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    async def main() -> BaseException | None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        task = asyncio.ensure_future(log.append_async(entry(1)))
        await asyncio.sleep(0.02)  # it waits for the turn ...
        log.close()  # ... and the log closes meanwhile
        try:
            await asyncio.wait_for(task, 5)
        except AuditUnavailable as exc:
            return exc
        return None

    try:
        failed = asyncio.run(main())
    finally:
        os.close(fd)
    assert isinstance(failed, AuditUnavailable) and "closed" in str(failed)


def test_a_turn_that_cannot_be_taken_fails_the_batch_and_the_next_one_goes_on(
    tmp_path: Path, make_log: LogFactory
) -> None:
    db = tmp_path / "a.db"
    lock = Path(f"{db}-writer.lock")
    lock.mkdir()  # nothing can open or lock it
    log = make_log(f"sqlite:///{db}")

    async def main() -> list[Any]:
        failed = await asyncio.gather(log.append_async(entry(0)), return_exceptions=True)
        os.rmdir(lock)
        return [*failed, await log.append_async(entry(1))]

    failed, appended = asyncio.run(main())
    assert isinstance(failed, AuditUnavailable)
    assert isinstance(appended, Appended) and appended.seq == 0
    assert log.verify().ok


def test_a_background_checkpoint_gives_the_turn_back_when_a_foreign_writer_holds_sqlite(
    tmp_path: Path, make_log: LogFactory
) -> None:
    """A `sqlite3` shell in a transaction: the cadence checkpoint (on its own thread,
    holding the write turn) fails at once instead of waiting SQLite's 30 s with the
    turn, which every exchange on the loop would wait behind."""
    import sqlite3

    path = tmp_path / "a.db"
    log = make_log(f"sqlite:///{path}")  # no checkpoint of its own: this test makes it
    log.append(entry(0))
    outcome: list[BaseException | None] = []

    def cadence() -> None:
        try:
            log._cadence.run()
            outcome.append(None)
        except BaseException as exc:  # the refused checkpoint, kept for the assertion
            outcome.append(exc)

    foreign = sqlite3.connect(path, isolation_level=None, timeout=30)
    foreign.execute("BEGIN IMMEDIATE")
    try:
        thread = threading.Thread(target=cadence)
        thread.start()
        thread.join(10)  # well short of SQLite's 30 s
        assert not thread.is_alive()
        assert isinstance(outcome[0], AuditUnavailable)
        with store.write_lock(log.engine, wait=False):
            pass  # the turn is free again
    finally:
        foreign.execute("ROLLBACK")
        foreign.close()
        thread.join()
    log._cadence.run()  # and the next one goes through
    assert log.latest_checkpoint() is not None
