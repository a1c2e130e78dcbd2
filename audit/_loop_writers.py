"""The writer that commits an event loop's appends: one per loop, per committer.

SQLite's writes happen on the loop's own thread (``sqlite_loop.LoopWriter``),
PostgreSQL's over an async connection bound to the loop (``pg_loop.PgLoopWriter``).
A log used from several loops (tests, a CLI that runs ``asyncio.run`` twice)
keeps a writer for each, so none opens a connection per append; a writer whose
loop has closed has its connection closed without that loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from audit.committer import GroupCommitter
from audit.sqlite_loop import LoopWriter

if TYPE_CHECKING:  # psycopg is needed only to write PostgreSQL from a loop
    from audit.pg_loop import PgLoopWriter

__all__ = ["LoopWriters", "loop_capable"]


def loop_capable(engine: Engine) -> bool:
    """Whether ``append_async`` can commit on the caller's loop on this engine."""
    name = engine.dialect.name
    return name == "sqlite" or (name == "postgresql" and engine.dialect.driver == "psycopg")


class LoopWriters:
    """Each running loop's writer, made on its first append."""

    def __init__(
        self,
        engine: Engine,
        committer: Callable[[], GroupCommitter],
        current_committer: Callable[[], GroupCommitter | None],
        *,
        max_batch: int,
        after_commit: Callable[[int], None],
        timeout_s: float,
    ) -> None:
        self._engine = engine
        self._committer = committer
        self._current_committer = current_committer
        self._max_batch = max_batch
        self._after_commit = after_commit
        self._timeout_s = timeout_s
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, LoopWriter | PgLoopWriter
        ] = weakref.WeakKeyDictionary()

    def get(self, loop: asyncio.AbstractEventLoop) -> LoopWriter | PgLoopWriter | None:
        return self._by_loop.get(loop)

    def current(self) -> LoopWriter | PgLoopWriter:
        """The running loop's writer (a new one once the log was closed and reopened)."""
        loop = asyncio.get_running_loop()
        writer = self._by_loop.get(loop)
        if writer is not None and writer.committer is self._current_committer():
            return writer
        if writer is not None and not isinstance(writer, LoopWriter):
            writer.abandon()  # its committer was closed; nothing is queued on it
        self._abandon_closed()
        if self._engine.dialect.name == "sqlite":
            writer = LoopWriter(
                self._committer(),
                loop,
                max_batch=self._max_batch,
                after_commit=self._after_commit,
            )
        else:
            from audit.pg_loop import PgLoopWriter

            writer = PgLoopWriter(
                self._committer(),
                loop,
                max_batch=self._max_batch,
                after_commit=self._after_commit,
                timeout_s=self._timeout_s,
            )
        self._by_loop[loop] = writer
        return writer

    async def aclose_current(self) -> None:
        """Write what the running loop queued and close its connection (PostgreSQL)."""
        writer = self._by_loop.get(asyncio.get_running_loop())
        if writer is not None and not isinstance(writer, LoopWriter):
            await writer.aclose()

    def _abandon_closed(self) -> None:
        for loop, writer in list(self._by_loop.items()):
            if loop.is_closed():
                del self._by_loop[loop]
                if not isinstance(writer, LoopWriter):
                    writer.abandon()
