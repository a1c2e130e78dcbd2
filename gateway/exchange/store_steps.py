"""Where the exchange's steps on the gateway's own store run, and how they fail.

On SQLite a step runs on the event loop, holding the write turn: its statements
take microseconds and never wait on the network, and a worker thread would hold
the turn while it waits for the interpreter lock behind the busy loop (the audit
appender and the decision log write on the loop too, so the turn is normally
free). The loop never waits for the turn: if another process (or a rare
background writer) has it, the step tries again a little later. On PostgreSQL
each statement is a network round trip, so a step runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit.store import TurnBusy, short_busy_wait, write_lock
from gateway.errors import ServiceUnavailableError

__all__ = ["TURN_WAIT_S", "StoreSteps", "store_errors", "store_unavailable"]

T = TypeVar("T")

#: How long a step waits for SQLite's write turn: SQLite's own busy timeout.
TURN_WAIT_S = 30.0


def store_unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "the gateway's store is unavailable; nothing was released", code="store_unavailable"
    )


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """The gateway's own database failing is a 503 with a code, never a bare 500."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise store_unavailable() from exc


class StoreSteps:
    """Runs blocking store steps of one engine where they cost least."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.on_loop = engine.dialect.name == "sqlite"

    async def run(self, fn: Callable[..., T], *args: Any, patience_s: float = TURN_WAIT_S) -> T:
        """``fn(*args)``: on SQLite on this loop with the write turn (tried again after
        0.5 ms, doubling to 10 ms, while someone else has it; 503 after
        ``patience_s``), else on a worker thread."""
        if not self.on_loop:
            return await asyncio.to_thread(fn, *args)
        delay, deadline = 0.0005, time.monotonic() + patience_s
        while True:
            with contextlib.ExitStack() as turn:
                try:
                    turn.enter_context(write_lock(self.engine, wait=False))
                except TurnBusy:
                    pass
                except OSError as exc:  # the turn's lock file
                    raise store_unavailable() from exc
                else:
                    with short_busy_wait():  # only a writer ignoring the turn can block it
                        return fn(*args)
            if time.monotonic() > deadline:
                raise store_unavailable()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)
