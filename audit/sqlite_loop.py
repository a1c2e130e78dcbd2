"""On SQLite an event loop writes its own batches, one per pass of the loop.

Entries appended during one pass are committed together at the start of the
next, on the loop's own thread, and synced by the committer's syncer
(``audit.committer``), or on the loop when the batch is the only one waiting.
The write turn is then never held by a thread waiting for the interpreter lock
while the loop runs, which is what made every other writer queue behind it. The
loop never waits for the turn either: if another process (or a rare background
writer of this one) has it, the batch tries again a little later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from audit.committer import Batch, Committed, GroupCommitter, fail_batch, split_batches
from audit.errors import AuditUnavailable
from audit.records import Appended
from audit.store import TurnBusy, short_busy_wait, write_lock

__all__ = ["LoopWaiter", "LoopWriter"]

log = logging.getLogger("audit.sqlite_loop")

#: A loop batch that finds the write turn taken tries again after this, doubling.
_FIRST_RETRY_S, _LAST_RETRY_S = 0.0005, 0.01


class LoopWaiter:
    """A loop caller's place in a batch: its ``asyncio.Future``, answered directly
    when the batch is settled on the loop's thread (a lone batch synced on the
    loop), and through ``call_soon_threadsafe`` when the syncer thread settles it.

    ``asyncio.wrap_future`` over a thread's future would post every answer
    through the loop's wake-up channel, even one given on the loop itself: a
    write, a wake-up and a read per exchange for nothing. ``done`` is this
    waiter's own record of having been answered, so the syncer never reads the
    loop's future from its thread.
    """

    __slots__ = ("_answered", "_thread", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[Appended]] = loop.create_future()
        self._thread = threading.get_ident()
        self._answered = False

    def set_running_or_notify_cancel(self) -> bool:
        """False if the caller has given up (its timeout cancelled the future); only
        called on the loop's thread, where batches are written."""
        return not self.future.cancelled()

    def done(self) -> bool:
        return self._answered

    def set_result(self, result: list[Appended], /) -> None:
        self._answer(result, None)

    def set_exception(self, exception: BaseException, /) -> None:
        self._answer(None, exception)

    def _answer(self, result: list[Appended] | None, exc: BaseException | None) -> None:
        self._answered = True
        if threading.get_ident() == self._thread:
            _settle(self.future, result, exc)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self.loop.call_soon_threadsafe(_settle, self.future, result, exc)


def _settle(
    fut: asyncio.Future[list[Appended]], result: list[Appended] | None, exc: BaseException | None
) -> None:
    if fut.done():  # the caller timed out meanwhile
        return
    if exc is not None:
        fut.set_exception(exc)
    elif result is not None:
        fut.set_result(result)


class LoopWriter:
    """Appends made on one event loop, committed on that loop in one batch per pass.

    The first append of a pass schedules the commit; every append made before it
    runs (by the other tasks of the same pass) joins the batch. Writing costs the
    loop about as much CPU as handing the batch to a thread would, without a
    thread switch. The disk sync happens on the committer's syncer, except for a
    batch the syncer would sync at once anyway (nothing else waits for it, and
    syncs are quick): that one is synced on the loop after the turn is given back,
    which spares the loop a wake-up and the syncer a thread switch each way.
    For SQLite, where nothing blocks on the network. The loop never waits for the
    write turn: if another process (or a rare background writer of this one) has
    it, the batch tries again a little later.
    """

    def __init__(
        self,
        committer: GroupCommitter,
        loop: asyncio.AbstractEventLoop,
        *,
        max_batch: int,
        after_commit: Callable[[int], None],
    ) -> None:
        self.committer = committer
        self.loop = loop
        self._max_batch = max(1, max_batch)
        self._after_commit = after_commit
        self._pending: Batch = []
        self._retry = _FIRST_RETRY_S

    def submit(self, entries: Sequence[Mapping[str, Any]]) -> asyncio.Future[list[Appended]]:
        """Queue one request's entries (on the loop's thread); the future resolves
        once they are durable."""
        broken = self.committer.broken
        if broken is not None:
            raise broken
        waiter = LoopWaiter(self.loop)
        self._pending.append((entries, waiter))
        if len(self._pending) == 1:
            self.loop.call_soon(self._flush)
        return waiter.future

    def _flush(self) -> None:
        kept: list[Committed] = []
        with contextlib.ExitStack() as turn:
            try:
                # Never wait on the loop: if another process (or a rare background
                # writer of this one) has the turn, try again a little later;
                # appends made meanwhile join the batch.
                turn.enter_context(write_lock(self.committer.engine, wait=False))
            except TurnBusy:
                if self.committer.closed:  # nothing will take them now: fail them
                    pending, self._pending = self._pending, []
                    self.committer.commit_here(pending, self._after_commit)
                    return
                self.loop.call_later(self._retry, self._flush)
                self._retry = min(self._retry * 2, _LAST_RETRY_S)
                return
            except Exception as exc:  # the turn's lock file: these callers fail closed
                log.exception("audit loop batch could not take the write turn")
                pending, self._pending = self._pending, []
                fail_batch(
                    [(e, f) for e, f in pending if f.set_running_or_notify_cancel()],
                    AuditUnavailable(
                        f"the audit store refused the write: {exc.__class__.__name__}"
                    ),
                )
                return
            pending, self._pending = self._pending, []
            self._retry = _FIRST_RETRY_S
            with short_busy_wait():  # only a writer ignoring the turn can block it
                for batch in split_batches(pending, self._max_batch):
                    committed = self.committer.commit_here(
                        batch, self._after_commit, sync_here=True
                    )
                    if committed is not None:
                        kept.append(committed)
        # After the turn is given back: a lone batch is synced here, not handed to
        # the syncer thread and answered back (two thread switches and a wake-up).
        self.committer.sync_now(kept)
