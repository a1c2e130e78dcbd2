"""The exchange's store steps on PostgreSQL, awaited on the event loop.

Every exchange claims its jti and quota in one statement that also returns the
state generation; an exchange with nothing cached yet, or refused by what was
cached, reads the generation first (``generation``). On a worker thread each
round trip cost a thread hop and then a wait for the interpreter lock behind the
busy loop; here the loop sends them on a small pool of async connections
(autocommit) and does other work meanwhile.

A pooled connection is checked before use only when the server may have gone
away unnoticed: it sat idle for more than a second, or another connection was
just found lost (a restart drops them all). A read or claim that meets a lost
connection is sent once more on a fresh one, so after a restart only exchanges
whose claim was already out see 503. A server that refuses connections fails
exchanges at once rather than after a wait for the pool, and one that stops
answering fails them after ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy.engine import Engine

from audit.pg_loop import conninfo
from gateway.errors import AccordError
from gateway.exchange.counters import (
    PG_GIVE_BACK,
    QuotaReservation,
    ReplayCache,
    Usage,
    counters_unavailable,
    replayed,
    reservation_from,
)
from gateway.exchange.store_steps import store_unavailable
from gateway.statecache import READ_GENERATION

__all__ = ["AsyncPool", "PgSteps"]

log = logging.getLogger(__name__)

#: A pooled connection idle for longer than this is checked before use.
IDLE_CHECK_S = 1.0
#: A pooled connection idle for longer than this is closed (the pool shrinks back).
MAX_IDLE_S = 60.0
_PURGE = "DELETE FROM request_jti WHERE expires_at < %s"

Conn = psycopg.AsyncConnection[Any]
_IDLE = psycopg.pq.TransactionStatus.IDLE


class AsyncPool:
    """At most ``max_size`` autocommitting connections to one server, most recently
    used first; raises ``psycopg.Error`` (or ``TimeoutError`` when all are busy).

    Not ``psycopg_pool``: when the server refuses connections its ``getconn``
    waits out the pool timeout while it reconnects in the background, and a check
    runs on every checkout. Exchanges must fail at once (503) and pay for a check
    only when a connection may have been lost."""

    def __init__(self, conninfo: str, *, max_size: int, timeout_s: float) -> None:
        self._conninfo = conninfo
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_size)
        self._idle: deque[tuple[Conn, float]] = deque()
        self._suspect_before = 0.0  # idle since before this: check before use
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        async with asyncio.timeout(self._timeout_s):
            await self._slots.acquire()
        try:
            async with asyncio.timeout(self._timeout_s):  # a server that stopped answering
                conn = await self._take()
            try:
                yield conn
            except psycopg.OperationalError:
                if conn.broken or conn.closed:  # the server may have dropped them all
                    self._suspect_before = time.monotonic()
                raise
            finally:
                idle = conn.info.transaction_status == _IDLE
                if self._closed or conn.broken or conn.closed or not idle:
                    await _close(conn)  # never hand out one left mid-transaction
                else:
                    self._idle.append((conn, time.monotonic()))
                await self._trim()
        finally:
            self._slots.release()

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            await _close(self._idle.pop()[0])

    async def _trim(self) -> None:
        """Close what a past burst left idle for longer than ``MAX_IDLE_S``."""
        edge = time.monotonic() - MAX_IDLE_S
        while self._idle and self._idle[0][1] < edge:
            await _close(self._idle.popleft()[0])

    async def _take(self) -> Conn:
        while self._idle:
            conn, since = self._idle.pop()
            if since > self._suspect_before and time.monotonic() - since <= IDLE_CHECK_S:
                return conn
            try:
                await conn.execute("")
                return conn
            except BaseException as exc:  # lost, or the wait was given up: never pool it
                await _close(conn)
                if not isinstance(exc, psycopg.Error):
                    raise
        return await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=max(2, int(self._timeout_s))
        )


async def _close(conn: Conn) -> None:
    with contextlib.suppress(psycopg.Error):
        await conn.close()


class PgSteps:
    """Generation reads and claims over a pool of async connections, used from the loop
    that serves the exchanges and closed there (``close``)."""

    def __init__(
        self, engine: Engine, replay: ReplayCache, *, max_size: int = 16, timeout_s: float = 10.0
    ) -> None:
        self.replay = replay
        self._timeout_s = timeout_s
        self.pool = AsyncPool(
            conninfo(engine),
            max_size=max_size,
            timeout_s=timeout_s,
        )
        self._generation_read: asyncio.Task[int] | None = None

    async def close(self) -> None:
        await self.pool.close()

    async def generation(self) -> int:
        """The shared state generation (``StateCache``); -1 when the row is missing.

        Exchanges that ask in the same pass of the loop share one read, sent after
        all of them asked: each still sees every change committed before it
        arrived, and a busy gateway sends one read a pass instead of one an
        exchange."""
        shared = self._generation_read
        if shared is None:
            shared = self._generation_read = asyncio.get_running_loop().create_task(
                self._read_generation()
            )
            shared.add_done_callback(_retrieved)  # even if every caller gave up
        try:
            return await asyncio.shield(shared)  # one caller giving up cancels nobody's read
        except AccordError as exc:  # each caller's own error: it carries that exchange's id
            raise store_unavailable() from exc.__cause__

    async def _read_generation(self) -> int:
        """A read, so a connection found lost is replaced and the read sent again."""
        self._generation_read = None  # from here on, a caller needs a read of its own
        for again in (False, True):
            try:
                async with self.pool.connection() as conn, asyncio.timeout(self._timeout_s):
                    cur = await conn.execute(READ_GENERATION)
                    row = await cur.fetchone()
                break
            except psycopg.OperationalError as exc:
                if again:
                    raise store_unavailable() from exc
            except (psycopg.Error, TimeoutError) as exc:
                raise store_unavailable() from exc
        return int(row[0]) if row is not None and row[0] is not None else -1

    async def claim(
        self, iss: str, jti: str, until: datetime, agreement_id: str | None, now: datetime
    ) -> tuple[QuotaReservation | None, int]:
        """``ReplayCache.claim``, awaited: spend the jti and reserve the agreement's quota
        in one autocommitted statement; ``AuthError(token_replayed)`` if it was spent.
        Also returns the state generation the statement saw (-1: its row is missing).

        A connection found lost (a restarted server drops them all) is replaced and
        the claim sent once more. The lost one may have committed it, so the second
        try finding the jti spent is 503, not a replay: nothing is released either way.
        """
        usage = Usage(now)
        sql, params = self.replay.awaited_claim(iss, jti, until, agreement_id, usage)
        for again in (False, True):
            conn: Conn | None = None
            try:
                async with self.pool.connection() as conn, asyncio.timeout(self._timeout_s):
                    cur = await conn.execute(sql, params)
                    rows = await cur.fetchall()
                break
            except psycopg.IntegrityError as exc:  # a second try may meet its first one's jti
                raise (counters_unavailable() if again else replayed()) from exc
            except psycopg.OperationalError as exc:
                if again or conn is None or not (conn.broken or conn.closed):
                    raise counters_unavailable() from exc
            except (psycopg.Error, TimeoutError) as exc:
                raise counters_unavailable() from exc
        before = self.replay.purge_due(until)
        if before is not None:
            self._purge_soon(before)
        seen = rows[0][-1] if rows else None
        counts = [row[:2] for row in rows] if agreement_id is not None else []
        return reservation_from(agreement_id, usage, counts), -1 if seen is None else int(seen)

    async def reserve(self, agreement_id: str, now: datetime) -> QuotaReservation | None:
        """Reserve the agreement's quota alone, for an exchange whose jti is spent."""
        usage = Usage(now)
        sql, params = self.replay.awaited_reserve(agreement_id, usage)
        try:
            async with self.pool.connection() as conn, asyncio.timeout(self._timeout_s):
                cur = await conn.execute(sql, params)
                rows = await cur.fetchall()
        except (psycopg.Error, TimeoutError) as exc:
            raise counters_unavailable() from exc
        return reservation_from(agreement_id, usage, rows)

    async def release(self, reservation: QuotaReservation) -> None:
        """Give a reservation back (``release_quota``); best effort."""
        usage = reservation.usage
        try:
            async with self.pool.connection() as conn, asyncio.timeout(self._timeout_s):
                await conn.execute(
                    PG_GIVE_BACK, (reservation.agreement_id, usage.minute, usage.day)
                )
        except (psycopg.Error, TimeoutError):
            log.warning("quota not given back for %s", reservation.agreement_id)

    def _purge_soon(self, before: datetime) -> None:
        async def purge() -> None:
            try:
                async with self.pool.connection() as conn, asyncio.timeout(self._timeout_s):
                    await conn.execute(_PURGE, (before,))
            except (psycopg.Error, TimeoutError):
                log.warning("expired jtis not purged; the next purge takes them")

        task = asyncio.get_running_loop().create_task(purge())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task[None]] = set()


def _retrieved(task: asyncio.Task[int]) -> None:
    if not task.cancelled():
        task.exception()
