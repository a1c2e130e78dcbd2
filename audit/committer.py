"""Group commit: many callers, one transaction per batch, one gapless chain.

Callers hand entries to a single writer thread per ``AuditLog`` and wait on a
future. The writer drains whatever is queued (and, when several callers are
active, waits up to ``max_wait_ms`` for more), then writes the batch in one
transaction holding the chain-head lock (``audit.appender``). On SQLite in WAL
mode a second thread syncs the WAL before any caller hears of its entries
(``audit.durability``), while the writer goes on with the next batch.

On SQLite an event loop may write its own batches instead, on its own thread
(``audit.sqlite_loop``, through ``commit_here``), synced by the same syncer.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Engine

from audit.appender import commit_batch
from audit.durability import sync_wal
from audit.errors import AuditError, AuditUnavailable
from audit.health import health_of
from audit.records import Appended

__all__ = [
    "BatchWaiter",
    "Committed",
    "GroupCommitter",
    "Waiter",
    "committed_size",
    "fail_batch",
    "settle_batch",
    "split_batches",
]

log = logging.getLogger("audit.committer")

T = TypeVar("T")

#: A loop's lone batch is synced on the loop only while WAL syncs take less than this;
#: a slower disk is left to the syncer thread, so the loop never waits for it long.
_QUICK_SYNC_S = 0.001


@dataclass(frozen=True)
class Committed:
    """A batch committed but not yet synced: nobody is told until the WAL is."""

    wal: str
    live: Batch
    results: list[list[Appended] | AuditError]


class Waiter(Protocol):
    """What a caller waits on: a thread's ``concurrent.futures.Future`` or a loop's
    ``asyncio.Future``."""

    def done(self) -> bool: ...
    def set_result(self, result: list[Appended], /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class BatchWaiter(Waiter, Protocol):
    """A waiter a batch can take: ``concurrent.futures.Future``, or a loop's
    ``sqlite_loop.LoopWaiter``."""

    def set_running_or_notify_cancel(self) -> bool: ...


Waiting = Sequence[tuple[Any, Waiter]]
Batch = list[tuple[Sequence[Mapping[str, Any]], BatchWaiter]]


def settle_batch(live: Waiting, results: Sequence[list[Appended] | AuditError]) -> None:
    """Tell each caller its entries, or its own refusal; one already gone is skipped."""
    for (_, f), res in zip(live, results, strict=True):
        if f.done():
            continue
        if isinstance(res, AuditError):
            f.set_exception(res)
        else:
            f.set_result(res)


def fail_batch(live: Waiting, exc: BaseException) -> None:
    for _, f in live:
        if not f.done():
            f.set_exception(exc)


def committed_size(results: Sequence[list[Appended] | AuditError]) -> int | None:
    """The log's size after a batch that wrote ``results``; None if it wrote nothing."""
    last = max((r[-1].seq for r in results if not isinstance(r, AuditError) and r), default=-1)
    return last + 1 if last >= 0 else None


class GroupCommitter:
    """The one writer thread of an ``AuditLog``, and on SQLite its syncer.

    On SQLite in WAL mode the writer commits a batch and hands it to the syncer
    thread, which syncs the WAL and only then resolves the batch's futures; the
    writer meanwhile writes the next batch. One sync covers every batch committed
    before it, so under load the disk flushes overlap the writing instead of
    following it.

    A failed sync stops this appender for good (``broken``): the failed batch is
    committed but maybe not on disk, and after a failed ``fsync`` a later one can
    succeed without the lost pages, so nothing may be chained on top of it or
    acknowledged after it. Every append from then on fails closed until the
    process is restarted (as PostgreSQL stops on a failed fsync). Damage found in
    the log (``LogHealth.damage``) stops it the same way, until it is cleared.
    """

    def __init__(
        self,
        engine: Engine,
        node: str,
        *,
        max_batch: int,
        max_wait_ms: float,
        after_commit: Callable[[int], None],
        on_idle: Callable[[], None],
        idle_s: float,
    ) -> None:
        self.engine = engine
        self.node = node
        self._max_batch = max(1, max_batch)
        self._max_wait = max(0.0, max_wait_ms) / 1000.0
        self._after_commit = after_commit
        self._on_idle = on_idle
        self._idle_s = idle_s
        self._queue: queue.SimpleQueue[
            tuple[Sequence[Mapping[str, Any]], Future[list[Appended]]] | None
        ] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._here = threading.Lock()
        self._last_callers = 1
        self._sync_failed: AuditError | None = None
        self.health = health_of(engine)
        self._syncs: queue.SimpleQueue[Committed | None] = queue.SimpleQueue()
        self._unsynced = 0  # batches handed to the syncer and not yet answered
        self._unsynced_lock = threading.Lock()
        self._last_sync_s = 0.0  # how long the last WAL sync took
        self._syncer = threading.Thread(target=self._sync, name=f"audit-sync-{node}", daemon=True)
        self._syncer.start()
        self._thread = threading.Thread(target=self._run, name=f"audit-writer-{node}", daemon=True)
        self._thread.start()

    @property
    def broken(self) -> AuditError | None:
        """Why this appender takes no entries: a failed disk sync, or damage in the log."""
        return self._sync_failed or self.health.damage

    def submit(self, entries: Sequence[Mapping[str, Any]]) -> Future[list[Appended]]:
        """Queue one request's entries; the future resolves once they are durable."""
        if self.broken is not None:
            raise self.broken
        if self._closed.is_set():
            raise AuditUnavailable("the audit log is closed")
        fut: Future[list[Appended]] = Future()
        self._queue.put((entries, fut))
        return fut

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then sync it: the writer hands the syncer its stop
        marker after its last batch, so every committed batch is synced and answered."""
        with self._here:  # a batch being written on another thread is handed over first
            if self._closed.is_set():
                return
            self._closed.set()
        self._queue.put(None)
        self._thread.join(timeout)
        self._syncer.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def commit_here(
        self, batch: Batch, after_commit: Callable[[int], None], *, sync_here: bool = False
    ) -> Committed | None:
        """Write ``batch`` on the calling thread, then hand it to the syncer like the
        writer's own batches; ``after_commit`` gets the new size. Its futures resolve
        once it is durable, or fail (the log is closed or stopped, the store refused).

        With ``sync_here``, a batch the syncer would sync at once (it has nothing
        pending, and its last sync was quick) is returned instead: the caller syncs
        it with ``sync_now`` (after giving the write turn back), and a lone batch
        costs no hand-off to the syncer and back."""
        with self._here:
            if self._closed.is_set():
                fail_batch(
                    [(e, f) for e, f in batch if f.set_running_or_notify_cancel()],
                    AuditUnavailable("the audit log is closed"),
                )
                return None
            return self._commit(batch, after_commit, sync_here=sync_here)

    def sync_now(self, committed: list[Committed]) -> None:
        """Sync batches ``commit_here`` returned and answer their callers, on this thread."""
        if committed:
            self._finish(committed)

    def _collect(
        self, first: tuple[Sequence[Mapping[str, Any]], Future[list[Appended]]]
    ) -> tuple[Batch, bool]:
        batch: Batch = [first]
        count = len(first[0])
        stop = False
        deadline: float | None = None
        while count < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                # Wait a little for more only when callers are concurrent: the last
                # batch had several of them, or several are already here.
                if max(len(batch), self._last_callers) < 2 or self._max_wait == 0:
                    break
                if len(batch) >= self._last_callers and len(batch) >= 2:
                    break
                if deadline is None:
                    deadline = time.monotonic() + self._max_wait
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                stop = True
                break
            batch.append(item)
            count += len(item[0])
        return batch, stop

    def _run(self) -> None:
        try:
            self._write_until_closed()
        finally:
            self._syncs.put(None)  # after the last batch this thread committed

    def _write_until_closed(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=self._idle_s)
            except queue.Empty:
                self._safe(self._on_idle)
                continue
            if first is None:
                break
            batch, stop = self._collect(first)
            self._commit(batch, self._after_commit)
        while True:  # fail whatever raced with close()
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].set_exception(AuditUnavailable("the audit log is closed"))

    def _commit(
        self, batch: Batch, after_commit: Callable[[int], None], *, sync_here: bool = False
    ) -> Committed | None:
        live = [(e, f) for e, f in batch if f.set_running_or_notify_cancel()]
        self._last_callers = max(1, len(live))
        if not live:
            return None
        if self.broken is not None:
            fail_batch(live, self.broken)
            return None
        try:
            results, wal = commit_batch(self.engine, self.node, [e for e, _ in live])
        except AuditError as exc:
            self.health.failed(exc)
            fail_batch(live, exc)
            return None
        except BaseException as exc:  # never let the writer thread die silently
            log.exception("audit writer failed")
            failure = AuditUnavailable(f"audit writer failed: {exc.__class__.__name__}")
            self.health.failed(failure)
            fail_batch(live, failure)
            return None
        kept: Committed | None = None
        if wal is None:
            self.health.wrote()
            settle_batch(live, results)
        else:
            committed = Committed(wal, live, results)
            with self._unsynced_lock:
                # Synced here only if nothing committed before it still waits for the
                # syncer: no caller is answered ahead of an earlier batch's sync, nor
                # after that sync failed.
                here = sync_here and self._unsynced == 0 and self._last_sync_s < _QUICK_SYNC_S
                if not here:
                    self._unsynced += 1
            if here:
                kept = committed
            else:
                self._syncs.put(committed)
        size = committed_size(results)
        if size is not None:
            self._safe(lambda: after_commit(size))
        return kept

    def _sync(self) -> None:
        """The syncer: one WAL sync for every batch committed so far, then their futures."""
        stop = False
        while not stop:
            first = self._syncs.get()
            if first is None:
                return
            done = [first]
            while True:
                try:
                    item = self._syncs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                done.append(item)
            self._finish(done)
            with self._unsynced_lock:
                self._unsynced -= len(done)

    def _finish(self, done: list[Committed]) -> None:
        """One WAL sync for ``done`` (each file once), then their callers' answers."""
        if self._sync_failed is None:
            started = time.monotonic()
            try:
                for wal in dict.fromkeys(c.wal for c in done):
                    sync_wal(wal)
            except BaseException as exc:
                log.critical("audit WAL sync failed: appends stop until restart", exc_info=True)
                self._sync_failed = AuditUnavailable(
                    "the audit log could not be synced to disk; it takes no more entries "
                    f"until the gateway restarts ({exc.__class__.__name__})"
                )
                self.health.failed(self._sync_failed)
            else:
                self.health.wrote()
            self._last_sync_s = time.monotonic() - started
        for c in done:
            if self._sync_failed is not None:
                fail_batch(c.live, self._sync_failed)
            else:
                settle_batch(c.live, c.results)

    @staticmethod
    def _safe(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("audit background task failed")


def split_batches(
    pending: list[tuple[Sequence[Mapping[str, Any]], T]], max_batch: int
) -> Iterator[list[tuple[Sequence[Mapping[str, Any]], T]]]:
    """``pending`` cut into batches of at most ``max_batch`` entries (a request is never
    split; one larger than that is a batch of its own)."""
    batch: list[tuple[Sequence[Mapping[str, Any]], T]] = []
    count = 0
    for item in pending:
        if batch and count + len(item[0]) > max_batch:
            yield batch
            batch, count = [], 0
        batch.append(item)
        count += len(item[0])
    yield batch
