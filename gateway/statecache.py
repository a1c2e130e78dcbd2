"""A per-process cache of read-mostly rows that can never serve a stale one.

Every exchange reads the caller's key, department and system, the agreement and
the dataset binding: rows that change a few times a year. Reading them each time
cost more CPU than the rest of the exchange. Instead, every transaction that
changes any of them also increments one shared counter row (``bump_generation``),
and each exchange starts by reading that counter: when it moved, this process
drops everything it cached. One indexed single-row read replaces six, across any
number of nodes, and a revoked key or suspended agreement still stops the very
next exchange on every node.

On PostgreSQL the exchange does not read the counter up front: it checks against
what is cached (``current``) and its claim statement returns the counter in the
same round trip; only when that differs from the generation it checked against
does it check again (``gateway.exchange.admission``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.db import single_statement_cursor
from gateway.errors import ServiceUnavailableError

__all__ = [
    "GENERATION",
    "MAX_ENTRIES",
    "READ_GENERATION",
    "CacheMiss",
    "StateCache",
    "bump_generation",
    "generation_table",
]

T = TypeVar("T")

_metadata = sa.MetaData()
generation_table = sa.Table(
    "state_generation",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("value", sa.BigInteger, nullable=False),
)


#: The counter as a scalar subquery, for statements that return it beside their own rows.
GENERATION = "(SELECT value FROM state_generation WHERE id = 1)"
READ_GENERATION = "SELECT value FROM state_generation WHERE id = 1"


def bump_generation(conn: Connection) -> None:
    """Mark registry, agreement or binding state as changed (inside the changing transaction)."""
    conn.execute(
        generation_table.update()
        .where(generation_table.c.id == 1)
        .values(value=generation_table.c.value + 1)
    )


class _Miss:
    pass


class CacheMiss(Exception):
    """A lookup missed where loading is not allowed (``StateCache.hits_only``)."""


_HITS_ONLY: ContextVar[bool] = ContextVar("accord_state_hits_only", default=False)


_MISS = _Miss()

#: At most this many rows are cached per generation; past it, lookups read the
#: database. A registry many times larger than any ministry's stays far below it.
MAX_ENTRIES = 20_000


class StateCache:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._generation: int | None = None
        self._data: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def refresh(self) -> dict[Hashable, Any]:
        """Read the counter; start a fresh cache if it moved. Returns the cache to use now.

        Callers use the returned dict for one whole request, so a value loaded
        under an old generation can only ever land in a dict nobody reads again.
        """
        # On the pooled DBAPI connection: this runs on every exchange, and
        # SQLAlchemy's statement machinery cost five times the read itself. On
        # PostgreSQL the read runs outside a transaction: one round trip, not a
        # BEGIN, the read and a ROLLBACK.
        try:
            with single_statement_cursor(self.engine) as cur:
                cur.execute(READ_GENERATION)
                row = cur.fetchone()
        except (self.engine.dialect.loaded_dbapi.Error, SQLAlchemyError) as exc:
            raise ServiceUnavailableError(
                "the gateway's store is unavailable; nothing was released",
                code="store_unavailable",
            ) from exc
        return self.adopt(int(row[0]) if row is not None and row[0] is not None else -1)

    def adopt(self, current: int) -> dict[Hashable, Any]:
        """``refresh`` with the counter already read (-1: its row is missing)."""
        with self._lock:
            if current != self._generation or current < 0:
                self._generation = current
                self._data = {}
            return self._data

    def current(self) -> tuple[int, dict[Hashable, Any]] | None:
        """The generation last adopted and its cache, without a read; ``None`` before
        the first read and while the counter row is missing (nothing is cached then)."""
        with self._lock:
            if self._generation is None or self._generation < 0:
                return None
            return self._generation, self._data

    @staticmethod
    @contextmanager
    def hits_only() -> Iterator[None]:
        """Inside, a miss raises ``CacheMiss`` instead of loading: for code on an event
        loop, which must not wait for a database, and runs again on a thread on a miss."""
        token = _HITS_ONLY.set(True)
        try:
            yield
        finally:
            _HITS_ONLY.reset(token)

    @staticmethod
    def get(
        data: dict[Hashable, Any],
        key: Hashable,
        load: Callable[[], T],
        *,
        keep: Callable[[T], bool] | None = None,
    ) -> T:
        """``data[key]``, loading it on a miss. Errors are not cached, nor a value
        ``keep`` turns down, nor anything once the cache holds ``MAX_ENTRIES``.

        Keys are often made of what a request names (a kid, a system, an
        agreement id), so a lookup of something that does not exist must not
        stay: ``keep`` lets a caller store only rows that exist, and the bound is
        the backstop against any key an unauthenticated sender can vary."""
        found = data.get(key, _MISS)
        if isinstance(found, _Miss):
            if _HITS_ONLY.get():
                raise CacheMiss(key)
            loaded = load()
            if (keep is None or keep(loaded)) and len(data) < MAX_ENTRIES:
                data[key] = loaded
            return loaded
        return cast(T, found)
