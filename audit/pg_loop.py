"""On PostgreSQL an event loop writes its own batches too, over an async connection.

A writer thread pays for every round trip twice: the statement's wait, then the
wait for the interpreter lock while the loop runs (up to the switch interval,
each time). A batch is about six round trips, so under load the writer spent
most of its time queueing for the lock while holding the chain head. Here the
loop sends the batch in pipeline mode (three round trips: lock the head; insert
and advance it; commit) and does other work while PostgreSQL answers. Appends
made while a batch is out form the next batch; one batch is out at a time.

Once a writer has committed a batch it knows the head it left, and the next
batch is sealed after that head and sent as one statement, one round trip
(``_APPEND_AFTER``): the head advances only from the size the batch was sealed
after, and the rows go in only if it did. If another writer moved the head
meanwhile, or holds it, nothing is written and the batch goes the locked way above.

The commit is durable (``synchronous_commit`` stays on) before any caller is
told. A batch that fails on a pooled connection before anything was written
(the server restarted since the last batch) is sent once more on a fresh
connection. When a one-statement batch fails with its outcome unknown, the
chain tells: the entry at its last seq carries its chain hash only if it was
committed. Any other failure fails its callers closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy.engine import Engine

from audit.appender import (
    ADVANCE_SQL,
    ENTRY_SQL,
    HEAD_SQL,
    NO_HEAD,
    NODE_SQL,
    Sealed,
    now_ts,
    refused,
    seal_after,
)
from audit.committer import (
    GroupCommitter,
    committed_size,
    fail_batch,
    settle_batch,
    split_batches,
)
from audit.errors import AuditError, AuditUnavailable
from audit.records import Appended

__all__ = ["PgLoopWriter", "conninfo"]

log = logging.getLogger("audit.pg_loop")

AsyncBatch = list[tuple[Sequence[Mapping[str, Any]], "asyncio.Future[list[Appended]]"]]


def _pg(sql: str) -> str:
    """The SQLite batch statements in psycopg's ``%(name)s`` style: one text for both
    databases, so the two paths cannot drift apart (``::`` casts are left alone)."""
    return re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql)


_LOCK_HEAD = HEAD_SQL + " FOR UPDATE"
_ENTRY, _NODE, _ADVANCE = _pg(ENTRY_SQL), _pg(NODE_SQL), _pg(ADVANCE_SQL)


def conninfo(engine: Engine) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL engine: the async
    connections go to the same server and database as the engine's pool."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


# The batch in one statement after a known head (the rows as one array per column):
# the head moves only from the size it was sealed after, and only then do the rows go
# in. It never waits for the head's lock (SKIP LOCKED: then nothing is written, and the
# batch goes the locked way): a statement left waiting by a caller who gave up would
# still commit once the lock came free, where a transaction waits for its COMMIT.
_APPEND_AFTER = """
WITH free AS (
    SELECT id FROM audit_head WHERE id = 1 AND size = %(locked_size)s FOR UPDATE SKIP LOCKED
), advanced AS (
    UPDATE audit_head SET size = %(new_size)s, chain_hash = %(new_chain)s,
        frontier = %(new_frontier)s, ts = %(new_ts)s
    WHERE id = (SELECT id FROM free)
    RETURNING size
), entries AS (
    INSERT INTO audit_entries (seq, ts, event, exchange_id, subject, data, leaf_hash, chain_hash)
    SELECT * FROM unnest(%(seq)s::bigint[], %(ts)s::text[], %(event)s::text[],
        %(exchange_id)s::text[], %(subject)s::text[], %(data)s::bytea[],
        %(leaf_hash)s::bytea[], %(chain_hash)s::bytea[])
    WHERE EXISTS (SELECT FROM advanced)
    RETURNING seq
), nodes AS (
    INSERT INTO audit_nodes (level, idx, hash)
    SELECT * FROM unnest(%(level)s::smallint[], %(idx)s::bigint[], %(hash)s::bytea[])
    WHERE EXISTS (SELECT FROM advanced)
    RETURNING idx
)
SELECT (SELECT count(*) FROM advanced), (SELECT count(*) FROM entries)
"""
_CHAIN_AT = "SELECT chain_hash FROM audit_entries WHERE seq = %(seq)s"

_ENTRY_COLUMNS = ("seq", "ts", "event", "exchange_id", "subject", "data", "leaf_hash", "chain_hash")
_NODE_COLUMNS = ("level", "idx", "hash")

Head = tuple[int, bytes, bytes]  # size, chain hash, frontier


class _Attempt:
    """How far one try of a batch got: only one that wrote nothing may be sent again."""

    wrote = False
    sent: Sealed | None = None  # a one-statement batch sent, its outcome maybe unknown
    head: Head | None = None  # the head the batch left, once committed


async def _write(
    conn: psycopg.AsyncConnection[Any],
    node: str,
    requests: Sequence[Sequence[Mapping[str, Any]]],
    attempt: _Attempt,
    lost: Sealed | None = None,
) -> list[list[Appended] | AuditError]:
    """One batch transaction: the statements ``audit.appender`` runs, pipelined.

    ``lost``: the same batch sent as one statement whose outcome is unknown. Once
    the head is locked (after that statement's transaction, if it still ran), the
    chain says whether it was committed; if not, it never can be (the head has
    left the size it was sealed after, or is locked until this batch moves it)."""
    async with conn.pipeline() as pipeline, conn.transaction():
        cur = conn.cursor()
        await cur.execute(_LOCK_HEAD)
        head = await cur.fetchone()  # the first round trip: BEGIN and the lock
        if head is None:
            raise AuditUnavailable(NO_HEAD)
        locked = int(head[0])
        if lost is not None and locked >= lost.size:
            await cur.execute(_CHAIN_AT, {"seq": lost.size - 1})
            row = await cur.fetchone()
            if row is not None and bytes(row[0]) == lost.chain:
                attempt.head = (locked, bytes(head[1]), bytes(head[2]))
                return lost.results
        b = seal_after(node, now_ts(), (locked, bytes(head[1]), bytes(head[2])), requests)
        if b.entry_rows:
            attempt.wrote = True
            await cur.executemany(_ENTRY, b.entry_rows)
            if b.node_rows:
                await cur.executemany(_NODE, b.node_rows)
            await cur.execute(
                _ADVANCE,
                {
                    "new_size": b.size,
                    "new_chain": b.chain,
                    "new_frontier": b.frontier,
                    "new_ts": b.ts,
                    "locked_size": locked,
                },
            )
            await pipeline.sync()  # the second: the rows and the head's advance
            if cur.rowcount != 1:
                raise AuditUnavailable("the chain head moved while locked")
    attempt.head = (b.size, b.chain, b.frontier)
    return b.results  # the third round trip was the commit, on leaving the block


async def _write_after(
    conn: psycopg.AsyncConnection[Any],
    node: str,
    requests: Sequence[Sequence[Mapping[str, Any]]],
    head: Head,
    attempt: _Attempt,
) -> list[list[Appended] | AuditError] | None:
    """The batch in one statement after ``head``; None (nothing written) if the head
    has moved since."""
    b = seal_after(node, now_ts(), head, requests)
    if not b.entry_rows:
        return b.results
    params: dict[str, Any] = {
        "new_size": b.size,
        "new_chain": b.chain,
        "new_frontier": b.frontier,
        "new_ts": b.ts,
        "locked_size": head[0],
    }
    params.update({c: [r[c] for r in b.entry_rows] for c in _ENTRY_COLUMNS})
    params.update({c: [r[c] for r in b.node_rows] for c in _NODE_COLUMNS})
    attempt.wrote = True
    attempt.sent = b
    cur = await conn.execute(_APPEND_AFTER, params)
    row = await cur.fetchone()
    if row is None or row[0] != 1:
        return None  # another writer moved or holds the head: nothing was written
    attempt.head = (b.size, b.chain, b.frontier)
    return b.results


class PgLoopWriter:
    """Appends made on one event loop, committed from that loop over one async
    PostgreSQL connection; ``submit`` and everything else run on the loop's thread."""

    def __init__(
        self,
        committer: GroupCommitter,
        loop: asyncio.AbstractEventLoop,
        *,
        max_batch: int,
        after_commit: Callable[[int], None],
        timeout_s: float,
    ) -> None:
        self.committer = committer
        self.loop = loop
        self._conninfo = conninfo(committer.engine)
        self._node = committer.node
        self._max_batch = max(1, max_batch)
        self._after_commit = after_commit
        self._timeout_s = timeout_s
        self._pending: AsyncBatch = []
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._head: Head | None = None  # the head this writer's last batch left
        self._closing = False

    def submit(self, entries: Sequence[Mapping[str, Any]]) -> asyncio.Future[list[Appended]]:
        """Queue one request's entries; the future resolves once they are committed."""
        if self.committer.broken is not None:
            raise self.committer.broken
        if self.committer.closed or self._closing:
            raise AuditUnavailable("the audit log is closed")
        fut: asyncio.Future[list[Appended]] = self.loop.create_future()
        self._pending.append((entries, fut))
        if self._task is None:  # appends made in the rest of this pass join the batch
            self._task = self.loop.create_task(self._drain())
        return fut

    async def aclose(self) -> None:
        """Write what is queued, then close the connection; later appends fail."""
        self._closing = True
        while self._task is not None:
            await asyncio.shield(self._task)
        await self._drop()

    def abandon(self) -> None:
        """Close the connection of a writer whose loop has closed (it cannot be awaited)."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.pgconn.finish()

    async def _drain(self) -> None:
        try:
            while self._pending:
                pending, self._pending = self._pending, []
                for batch in split_batches(pending, self._max_batch):
                    await self._commit(batch)
        finally:
            self._task = None

    async def _commit(self, batch: AsyncBatch) -> None:
        live = [(e, f) for e, f in batch if not f.done()]  # a caller may have timed out
        if not live:
            return
        # How the batch went is what readiness reports (``LogHealth``), at once.
        health = self.committer.health
        try:
            async with asyncio.timeout(self._timeout_s):
                results = await self._send([e for e, _ in live])
        except AuditError as exc:
            health.failed(exc)
            fail_batch(live, exc)
            return
        except TimeoutError:
            await self._drop()  # where the batch stopped is unknown: never reuse it
            late = AuditUnavailable("the audit store did not answer in time")
            health.failed(late)
            fail_batch(live, late)
            return
        except Exception as exc:
            log.exception("audit loop batch failed")
            failure = refused(exc)
            health.failed(failure)
            fail_batch(live, failure)
            return
        health.wrote()
        settle_batch(live, results)
        size = committed_size(results)
        if size is not None:
            try:
                self._after_commit(size)
            except Exception:
                log.exception("audit background task failed")

    async def _send(
        self, requests: Sequence[Sequence[Mapping[str, Any]]]
    ) -> list[list[Appended] | AuditError]:
        reused = self._conn is not None
        lost: Sealed | None = None
        for again in (False, True):
            conn = await self._connection()
            attempt = _Attempt()
            head, self._head = self._head, None  # known again only once this batch commits
            try:
                if head is not None and not again:
                    done = await _write_after(conn, self._node, requests, head, attempt)
                    if done is not None:
                        self._head = attempt.head
                        return done
                    attempt = _Attempt()  # the head moved, nothing was written: lock it
                results = await _write(conn, self._node, requests, attempt, lost)
                self._head = attempt.head
                return results
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    await self._drop()
                stale = isinstance(exc, psycopg.OperationalError) and reused and not again
                if stale and not attempt.wrote:  # the server restarted: nothing was sent
                    continue
                if stale and attempt.sent is not None:  # the chain will tell
                    lost = attempt.sent
                    continue
                raise refused(exc) from exc
        raise AssertionError("unreachable")

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,  # a one-statement batch commits by itself
                    connect_timeout=max(2, int(self._timeout_s)),
                )
            except psycopg.Error as exc:
                raise refused(exc) from exc
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
