"""The worker processes behind ``verify_export --jobs`` (``audit._parallel``): when
they are forked, what happens when one dies, and that stopping early stops them."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from audit import _parallel
from audit._parallel import map_in_order, worker_context


def test_workers_are_forked_only_while_no_other_thread_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads other tests left behind must not decide this: it counts its own."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:  # another thread, whoever else runs: never fork
        assert worker_context().get_start_method() in ("forkserver", "spawn")
    finally:
        stop.set()
        other.join()
    monkeypatch.setattr(_parallel.threading, "active_count", lambda: 1)
    assert worker_context().get_start_method() == "fork"  # as in the CLI: the fast path


_PARENT = os.getpid()


def _double_unless_a_worker(x: int) -> int:
    """Slow enough that the worker takes an item; a worker dies on the first it takes."""
    time.sleep(0.02)
    if os.getpid() != _PARENT:
        os._exit(1)
    return 2 * x


def test_a_dead_worker_loses_only_the_item_it_took() -> None:
    got = list(map_in_order(_double_unless_a_worker, list(range(8)), 2, -1, method="fork"))
    assert got.count(-1) == 1
    assert all(g == 2 * i for i, g in enumerate(got) if g != -1)
    assert not multiprocessing.active_children()


def test_stopping_early_stops_the_workers() -> None:
    answers = map_in_order(time.sleep, [0.05] * 40, 2, None, method="fork")
    next(answers)
    answers.close()
    assert not multiprocessing.active_children()
