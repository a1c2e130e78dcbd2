"""The decision log for the officers' impact dry-run, written off the exchange's hot path.

The decision log is evidence for "what would this policy change do", not the
record of what happened (that is the audit log). So decisions are stored in
batches that no exchange waits for, and a crash loses at most the last fraction
of a second of dry-run material, never an audit entry.

Decisions recorded on an event loop are stored by that loop every ``linger_s``.
On SQLite a thread would hold SQLite's one write turn while it waits for the
interpreter lock behind the busy loop, and the loop's jti claims and audit
batches would queue behind it; the loop never waits for the turn, and a batch
that finds it taken tries again later. On PostgreSQL (with the exchange's async
pool) the loop sends each batch as one pipelined transaction and does other work
meanwhile: a writer thread held the interpreter lock for the whole batch's
encoding and binding, a stall of the loop every ``linger_s`` (py-spy, (d) at
peak: 5.7% of the gateway's interpreter time, ~0.15 ms an exchange). Decisions
recorded off any loop (threads, the CLI) go to one writer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine

from audit.store import TurnBusy, short_busy_wait, write_lock
from gateway.db import is_sqlite, lazy_commit
from gateway.exchange.pg_steps import AsyncPool
from gateway.policy.engine import Decision
from gateway.policy.models import PolicyDecisionRecord
from gateway.policy.store import decision_row

__all__ = ["DecisionLogWriter"]

log = logging.getLogger("gateway.decision_log")

_Item = tuple[str, Mapping[str, Any], Decision, datetime]
#: Written with one Core executemany per batch: the ORM's unit of work cost more
#: than the rest of the exchange's bookkeeping.
_TABLE: sa.Table = PolicyDecisionRecord.__table__  # type: ignore[attr-defined]
_JSON = ("codes", "decision", "input")


def _batch_insert(dialect: str) -> sa.Insert:
    """The batch insert, its JSON columns taken as text already encoded: the writer
    encodes a batch before it takes the write turn, which then covers only the
    write (the claims of running exchanges wait for that turn)."""

    def param(column: sa.Column[Any]) -> Any:
        if column.name not in _JSON:
            return sa.bindparam(f"p_{column.name}", type_=column.type)
        text = sa.bindparam(f"p_{column.name}", type_=sa.Text)
        return sa.cast(text, JSONB) if dialect == "postgresql" else text

    return _TABLE.insert().values({c.name: param(c) for c in _TABLE.columns if c.name != "id"})


def _pg_statements() -> tuple[str, str]:
    """The batch insert and the prune as SQL text for the loop's async psycopg
    connection: ``_batch_insert`` compiled for PostgreSQL (psycopg's ``%(name)s``
    style), so both writers store the same columns the same way."""
    dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
    prune = _TABLE.delete().where(_TABLE.c.decided_at < sa.bindparam("cutoff"))
    insert = _batch_insert("postgresql").compile(dialect=dialect, for_executemany=True)
    return str(insert), str(prune.compile(dialect=dialect))


_PG_INSERT, _PG_PRUNE = _pg_statements()


def _encoded(row: Mapping[str, Any]) -> dict[str, Any]:
    """Bind values for one row; raises ValueError for what is not strict JSON (NaN)."""
    return {f"p_{k}": json.dumps(v, allow_nan=False) if k in _JSON else v for k, v in row.items()}


class DecisionLogWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        max_batch: int = 500,
        max_queue: int = 50_000,
        retention: timedelta = timedelta(days=90),
        prune_every: int = 10_000,
        linger_s: float = 0.05,
        pool: AsyncPool | None = None,
    ) -> None:
        """``pool``: PostgreSQL connections of the running loop, which records the
        decisions (the exchange's); without one, or from another loop or thread,
        PostgreSQL batches go through the writer thread. Make it on that loop."""
        self.engine = engine
        self.clock = clock
        self.retention = retention
        self._prune_every = prune_every
        self._since_prune = prune_every  # prune once soon after start
        self._max_batch = max_batch
        self._linger = linger_s
        self._max_queue = max_queue
        self._batch_ready = threading.Event()
        self._queue: queue.SimpleQueue[_Item | threading.Event] = queue.SimpleQueue()
        self._insert = _batch_insert(engine.dialect.name)
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()
        self.dropped = 0
        # What an event loop recorded, encoded, waiting for that loop's write.
        self._pool = pool if not is_sqlite(engine) else None
        # The pool's connections belong to the loop it was made on (the serving loop).
        self._pool_loop = _running_loop() if self._pool is not None else None
        self.loop_writes = is_sqlite(engine) or self._pool is not None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rows: list[dict[str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def record(
        self, *, exchange_id: str, policy_input: Mapping[str, Any], decision: Decision
    ) -> None:
        """Queue one decision; if the writer is far behind, drop it rather than slow exchanges."""
        item = (exchange_id, policy_input, decision, self.clock())
        loop = _running_loop() if self.loop_writes else None
        if loop is not None and (self._pool is None or loop is self._pool_loop):
            self._record_on(loop, item)
            return
        if 0 < self._max_queue <= self._queue.qsize():
            self.dropped += 1
            return
        self._queue.put(item)
        if self._queue.qsize() >= self._max_batch:
            self._batch_ready.set()

    def _record_on(self, loop: asyncio.AbstractEventLoop, item: _Item) -> None:
        if 0 < self._max_queue <= len(self._rows):  # far behind: drop, as the queue does
            self.dropped += 1
            return
        self._rows.extend(_encode_rows([item]))
        if self._timer is None:
            self._loop = loop
            self._timer = loop.call_later(self._linger, self._write_on_loop)

    def _write_on_loop(self, *, wait: bool = False) -> None:
        """Write what the loop holds: ``max_batch`` rows a pass of the loop, or (only
        at shutdown, ``flush`` from a thread while the loop awaits it) everything,
        waiting for the turn. On PostgreSQL the loop sends it and goes on."""
        self._timer = None
        if self._pool is not None and not wait and self._loop is not None:
            rows, self._rows = self._rows, []
            task = self._loop.create_task(self._send(rows))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
            return
        try:
            with write_lock(self.engine, wait=wait), _busy_wait(wait):
                while self._rows:
                    rows = self._rows[: self._max_batch]
                    del self._rows[: self._max_batch]
                    self._write(rows)
                    if self._rows and not wait and self._loop is not None:
                        self._timer = self._loop.call_later(0, self._write_on_loop)
                        return
        except TurnBusy:
            if self._loop is not None:
                self._timer = self._loop.call_later(self._linger, self._write_on_loop)
        except Exception:  # the turn's lock file: dry-run material only
            log.warning("decision log batch of %d lost", len(self._rows), exc_info=True)
            self._rows = []

    async def _send(self, rows: list[dict[str, Any]]) -> None:
        """One transaction whose rows go out pipelined and whose commit does not wait
        for the disk: dry-run material, like ``lazy_commit``'s writes."""
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                async with conn.cursor() as cur:
                    for start in range(0, len(rows), self._max_batch):
                        await cur.executemany(_PG_INSERT, rows[start : start + self._max_batch])
                    self._since_prune += len(rows)
                    if self._since_prune >= self._prune_every:
                        await cur.execute(_PG_PRUNE, {"cutoff": self.clock() - self.retention})
                        self._since_prune = 0
        except Exception:  # dry-run material only; the exchanges already happened
            log.warning("decision log batch of %d lost", len(rows), exc_info=True)

    async def aflush(self) -> None:
        """Store what this loop holds and wait for what it is sending (on the loop,
        before the pool closes)."""
        if self._pool is not None and _running_loop() is self._loop:
            if self._timer is not None:
                self._timer.cancel()
            if self._rows:
                self._write_on_loop()
            while sending := [t for t in self._sending if t.get_loop() is self._loop]:
                await asyncio.gather(*sending, return_exceptions=True)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is stored (tests, shutdown)."""
        self._flush_loop(timeout)
        done = threading.Event()
        self._queue.put(done)
        self._batch_ready.set()  # no lingering: the caller waits
        done.wait(timeout)

    def _flush_loop(self, timeout: float) -> None:
        """Write what a loop recorded: on that loop while it runs, else right here."""
        loop = self._loop
        if loop is None or not (self._rows or self._sending):
            return
        if loop.is_closed() or not loop.is_running():
            self._write_on_loop(wait=True)
            return
        if self._pool is not None and _running_loop() is not loop:
            asyncio.run_coroutine_threadsafe(self.aflush(), loop).result(timeout)
            return
        if _running_loop() is loop:  # on the loop itself: it may wait for the turn now
            if self._timer is not None:
                self._timer.cancel()
            self._write_on_loop(wait=True)
            return
        done = threading.Event()

        def drain() -> None:
            try:
                if self._timer is not None:
                    self._timer.cancel()
                self._write_on_loop(wait=True)
            finally:
                done.set()

        loop.call_soon_threadsafe(drain)
        done.wait(timeout)

    def close(self) -> None:
        self.flush()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if not isinstance(first, threading.Event) and self._queue.qsize() + 1 < self._max_batch:
                # Linger for more, asleep: one write turn (and one wake-up of this
                # thread) per ``linger_s``, not one per exchange queueing meanwhile;
                # woken early only when a whole batch is waiting.
                self._batch_ready.wait(self._linger)
                self._batch_ready.clear()
            items = [first]
            while len(items) < self._max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch = [i for i in items if not isinstance(i, threading.Event)]
            if batch:
                self._store(batch)
            for marker in items:
                if isinstance(marker, threading.Event):
                    marker.set()

    def _store(self, batch: list[_Item]) -> None:
        rows = _encode_rows(batch)
        if not rows:
            return
        try:
            with write_lock(self.engine):
                self._write(rows)
        except Exception:  # the turn's lock file: dry-run material only
            log.warning("decision log batch of %d lost", len(rows), exc_info=True)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        """Insert encoded rows (the caller holds the write turn); losing them is logged."""
        if not rows:
            return
        try:
            with lazy_commit(self.engine) as conn:
                conn.execute(self._insert, rows)
                self._since_prune += len(rows)
                if self._since_prune >= self._prune_every:
                    # Decision inputs are kept for dry-runs only as long as the
                    # retention says (ACCORD_DECISION_LOG_DAYS); the audit log keeps
                    # what happened for good.
                    cutoff = self.clock() - self.retention
                    conn.execute(_TABLE.delete().where(_TABLE.c.decided_at < cutoff))
                    self._since_prune = 0
        except Exception:  # dry-run material only; the exchange already happened
            log.warning("decision log batch of %d lost", len(rows), exc_info=True)


def _busy_wait(wait: bool) -> contextlib.AbstractContextManager[None]:
    """On the loop, SQLite's own lock is waited for only briefly (``short_busy_wait``)."""
    return contextlib.nullcontext() if wait else short_busy_wait()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _encode_rows(batch: list[_Item]) -> list[dict[str, Any]]:
    """Encoded rows of a batch. The inputs are the exchanges' own documents, built
    for this decision and never changed after it: stored as they are, without a
    copy. One odd input must not cost the batch."""
    rows = []
    for e, i, d, at in batch:
        try:
            rows.append(_encoded(decision_row(exchange_id=e, policy_input=i, decision=d, now=at)))
        except (TypeError, ValueError):
            log.warning("decision log entry of exchange %s is not JSON; dropped", e)
    return rows
