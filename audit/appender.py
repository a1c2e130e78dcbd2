"""Group commit: many callers, one transaction per batch, one gapless chain.

Callers hand entries to a single writer thread per ``AuditLog`` and wait on a
future. The writer drains whatever is queued (and, when several callers are
active, waits up to ``max_wait_ms`` for more), then writes the batch in one
transaction holding the chain-head lock. The lock, not the process, is the
sequencing point, so several processes and nodes extend the same chain. A batch
is all or nothing: a process killed mid-batch leaves no partial batch and no gap.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import store
from audit.durability import set_synchronous, sync_wal, wal_file
from audit.entry import chain_hash, format_ts, seal
from audit.errors import AuditError, AuditUnavailable, EntryInvalid
from audit.merkle import CompactRange, leaf_hash
from audit.records import Appended

__all__ = ["GroupCommitter", "append_in", "commit_batch", "write_batch"]

log = logging.getLogger("audit.appender")

Batch = list[tuple[Sequence[Mapping[str, Any]], "Future[list[Appended]]"]]


# Built once: constructing a statement and its cache key per batch cost more than
# running it.
_LOCK_HEAD = sa.select(store.head).where(store.head.c.id == 1).with_for_update()
_ADVANCE_HEAD = (
    store.head.update()
    .where(store.head.c.id == 1, store.head.c.size == sa.bindparam("locked_size"))
    .values(
        size=sa.bindparam("new_size"),
        chain_hash=sa.bindparam("new_chain"),
        frontier=sa.bindparam("new_frontier"),
        ts=sa.bindparam("new_ts"),
    )
)
_INSERTS = {t.name: t.insert() for t in (store.entries, store.nodes)}


def _lock_head(conn: sa.Connection) -> sa.Row[Any]:
    row = conn.execute(_LOCK_HEAD).first()
    if row is None:
        raise AuditUnavailable("the audit chain head is missing: run create_schema()")
    return row


def _begin_locked(conn: sa.Connection) -> sa.Row[Any]:
    """Start the batch transaction holding the chain-head lock; return the head row."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    return _lock_head(conn)


def _write_locked(
    conn: sa.Connection,
    node: str,
    row: sa.Row[Any],
    requests: Sequence[Sequence[Mapping[str, Any]]],
) -> list[list[Appended] | AuditError]:
    """Seal and insert every request after ``row`` (the locked head); advance the head."""
    results: list[list[Appended] | AuditError] = []
    size, chain = int(row.size), bytes(row.chain_hash)
    cr = CompactRange.from_bytes(size, bytes(row.frontier))
    ts = format_ts(datetime.now(UTC))
    entry_rows: list[dict[str, Any]] = []
    node_rows: list[dict[str, Any]] = []
    for entries in requests:
        try:
            sealed = [seal(e, seq=size + i, ts=ts, node=node) for i, e in enumerate(entries)]
        except EntryInvalid as exc:
            results.append(exc)
            continue
        out: list[Appended] = []
        for e, data in zip(entries, sealed, strict=True):
            lh = leaf_hash(data)
            chain = chain_hash(chain, lh)
            for level, idx, h in cr.append(lh):
                node_rows.append({"level": level, "idx": idx, "hash": h})
            entry_rows.append(
                {
                    "seq": size,
                    "ts": ts,
                    "event": e["event"],
                    "exchange_id": e.get("exchange_id"),
                    "subject": e.get("subject"),
                    "data": data,
                    "leaf_hash": lh,
                    "chain_hash": chain,
                }
            )
            out.append(Appended(size, lh, chain, data, ts))
            size += 1
        results.append(out)
    if entry_rows:
        _insert(conn, store.entries, entry_rows)
        if node_rows:
            _insert(conn, store.nodes, node_rows)
        upd = conn.execute(
            _ADVANCE_HEAD,
            {
                "locked_size": int(row.size),
                "new_size": size,
                "new_chain": chain,
                "new_frontier": cr.to_bytes(),
                "new_ts": ts,
            },
        )
        if upd.rowcount != 1:
            raise AuditUnavailable("the chain head moved while locked")
    return results


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``; on PostgreSQL a batch goes through COPY (several times faster).

    COPY runs on the same connection, inside the batch's transaction, so it commits
    or rolls back with everything else; the append-only triggers do not fire on
    INSERT or COPY.
    """
    if conn.dialect.name != "postgresql" or len(rows) < 16:
        conn.execute(_INSERTS[table.name], rows)
        return
    cols = [c.name for c in table.columns]
    raw = conn.connection.driver_connection
    stmt = f"COPY {table.name} ({', '.join(cols)}) FROM STDIN"
    with raw.cursor() as cur, cur.copy(stmt) as copy:  # type: ignore[union-attr]
        for r in rows:
            copy.write_row([r[c] for c in cols])


def write_batch(
    engine: Engine, node: str, requests: Sequence[Sequence[Mapping[str, Any]]]
) -> list[list[Appended] | AuditError]:
    """Append every request (a list of entries kept contiguous) in one transaction.

    A request whose entries cannot be sealed gets its own ``EntryInvalid`` and is
    left out; anything the database refuses fails the whole batch.

    On SQLite in WAL mode the batch commits without syncing and the WAL is synced
    after the write turn is given back (``audit.durability``): the entries are on
    disk before this returns, and other writers do not wait for the disk.
    """
    results, wal = commit_batch(engine, node, requests)
    if wal is not None:
        sync_wal(wal)
    return results


def commit_batch(
    engine: Engine, node: str, requests: Sequence[Sequence[Mapping[str, Any]]]
) -> tuple[list[list[Appended] | AuditError], str | None]:
    """``write_batch`` up to its commit: the results and, on SQLite in WAL mode, the WAL
    file that must be synced (``sync_wal``) before anyone may be told of them."""
    with store.write_lock(engine), engine.connect() as conn:
        wal = wal_file(engine, conn)
        try:
            if wal is not None:
                set_synchronous(conn, "NORMAL")
            try:
                results = _write_locked(conn, node, _begin_locked(conn), requests)
                conn.commit()
            finally:
                if wal is not None:
                    _restore_full(conn)
        except SQLAlchemyError as exc:
            conn.rollback()
            raise AuditUnavailable(
                f"the audit store refused the write: {exc.__class__.__name__}"
            ) from exc
        except BaseException:
            conn.rollback()
            raise
    return results, wal


def _restore_full(conn: sa.Connection) -> None:
    """Put the pooled connection back to durable commits, or drop it from the pool."""
    try:
        set_synchronous(conn, "FULL")
    except Exception:
        conn.invalidate()
        raise


def append_in(
    conn: sa.Connection, node: str, entries: Sequence[Mapping[str, Any]]
) -> list[Appended]:
    """Append ``entries`` inside the caller's open transaction, without committing.

    For administrative changes: the change and its audit entries commit together
    or not at all. The caller's transaction holds the chain-head lock until it
    ends, so keep it short; on SQLite it must already hold the write lock (it has
    written) or be able to take it.
    """
    try:
        result = _write_locked(conn, node, _lock_head(conn), [entries])[0]
    except SQLAlchemyError as exc:
        raise AuditUnavailable(
            f"the audit store refused the write: {exc.__class__.__name__}"
        ) from exc
    if isinstance(result, AuditError):
        raise result
    return result


@dataclass(frozen=True)
class _Committed:
    """A batch committed but not yet synced: nobody is told until the WAL is."""

    wal: str
    live: Batch
    results: list[list[Appended] | AuditError]


def _settle(live: Batch, results: Sequence[list[Appended] | AuditError]) -> None:
    for (_, f), res in zip(live, results, strict=True):
        if isinstance(res, AuditError):
            f.set_exception(res)
        else:
            f.set_result(res)


def _fail(live: Batch, exc: BaseException) -> None:
    for _, f in live:
        f.set_exception(exc)


class GroupCommitter:
    """The one writer thread of an ``AuditLog``, and on SQLite its syncer.

    On SQLite in WAL mode the writer commits a batch and hands it to the syncer
    thread, which syncs the WAL and only then resolves the batch's futures; the
    writer meanwhile writes the next batch. One sync covers every batch committed
    before it, so under load the disk flushes overlap the writing instead of
    following it.
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
        self._engine = engine
        self._node = node
        self._max_batch = max(1, max_batch)
        self._max_wait = max(0.0, max_wait_ms) / 1000.0
        self._after_commit = after_commit
        self._on_idle = on_idle
        self._idle_s = idle_s
        self._queue: queue.SimpleQueue[
            tuple[Sequence[Mapping[str, Any]], Future[list[Appended]]] | None
        ] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._last_callers = 1
        self._syncs: queue.SimpleQueue[_Committed | None] = queue.SimpleQueue()
        self._syncer = threading.Thread(target=self._sync, name=f"audit-sync-{node}", daemon=True)
        self._syncer.start()
        self._thread = threading.Thread(target=self._run, name=f"audit-writer-{node}", daemon=True)
        self._thread.start()

    def submit(self, entries: Sequence[Mapping[str, Any]]) -> Future[list[Appended]]:
        if self._closed.is_set():
            raise AuditUnavailable("the audit log is closed")
        fut: Future[list[Appended]] = Future()
        self._queue.put((entries, fut))
        return fut

    def close(self, timeout: float = 30.0) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._queue.put(None)
            self._thread.join(timeout)
            self._syncs.put(None)  # after the writer: every committed batch gets synced
            self._syncer.join(timeout)

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
            self._commit(batch)
        while True:  # fail whatever raced with close()
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].set_exception(AuditUnavailable("the audit log is closed"))

    def _commit(self, batch: Batch) -> None:
        live = [(e, f) for e, f in batch if f.set_running_or_notify_cancel()]
        self._last_callers = max(1, len(live))
        if not live:
            return
        try:
            results, wal = commit_batch(self._engine, self._node, [e for e, _ in live])
        except AuditError as exc:
            _fail(live, exc)
            return
        except BaseException as exc:  # never let the writer thread die silently
            log.exception("audit writer failed")
            _fail(live, AuditUnavailable(f"audit writer failed: {exc.__class__.__name__}"))
            return
        if wal is None:
            _settle(live, results)
        else:
            self._syncs.put(_Committed(wal, live, results))
        last = max((r[-1].seq for r in results if not isinstance(r, AuditError) and r), default=-1)
        if last >= 0:
            self._safe(lambda: self._after_commit(last + 1))

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
            try:
                for wal in dict.fromkeys(c.wal for c in done):
                    sync_wal(wal)
            except AuditError as exc:
                for c in done:
                    _fail(c.live, exc)
                continue
            except BaseException as exc:
                log.exception("audit sync failed")
                err = AuditUnavailable(f"audit sync failed: {exc.__class__.__name__}")
                for c in done:
                    _fail(c.live, err)
                continue
            for c in done:
                _settle(c.live, c.results)

    @staticmethod
    def _safe(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("audit background task failed")
