"""Probing SQLite's write turn from another thread, as an event-loop writer would."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from audit import store


def taken_elsewhere(engine: sa.Engine) -> bool:
    """Whether another thread, asking without waiting, finds the write turn taken."""
    taken: list[bool] = []

    def attempt() -> None:
        try:
            with store.write_lock(engine, wait=False):
                taken.append(False)
        except store.TurnBusy:
            taken.append(True)

    t = threading.Thread(target=attempt)
    t.start()
    t.join(10)
    return taken == [True]
