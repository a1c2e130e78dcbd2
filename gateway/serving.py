"""Serve an ASGI app from one process, or from several that share one port.

One process runs one event loop, so a gateway process uses one core. With
``workers > 1`` every worker binds its own listening socket to the same address
with ``SO_REUSEPORT`` and the kernel spreads new connections over them by a
hash of the connection's addresses. With one shared socket (uvicorn's own
``--workers``) whichever worker wakes first accepts, so a department client's
long-lived keep-alive pool tends to land on one worker and the other cores idle.

The workers hold back their sockets until every one of them has finished
starting (an ASGI lifespan barrier), so no worker takes all the connections
opened while the others were still loading. The parent does the one-off set-up
first (``prepare``: migrations, keys) so workers never race to do it, stops
every worker on SIGTERM/SIGINT, and exits non-zero as soon as one worker dies:
a supervisor (systemd, Kubernetes) then restarts the whole set.

Each process caps its open connections (``ACCORD_MAX_CONNECTIONS``, uvicorn's
``limit_concurrency``): beyond the cap uvicorn answers a new request itself with
a plain-text 503 and closes the connection, without running the app, so nothing
is decided, fetched, released or audited and the caller may retry. Without a cap
a flood of connections would hold file descriptors until accepting fails for
everyone. A client trickling its body is bounded by the app (``BodyLimit``,
408); uvicorn sets no deadline for a request's headers, so a connection that
sends them slowly (or nothing) counts against the cap until it closes: run the
gateway behind a proxy or load balancer that times headers out.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from types import FrameType
from typing import Any

import uvicorn

__all__ = ["serve"]

#: How long workers wait for each other to finish starting.
STARTUP_TIMEOUT_S = 180.0

_Asgi = Callable[..., Any]

#: uvicorn options shared by the one-process and the several-worker paths.
_UVICORN: dict[str, Any] = {"log_level": "warning", "proxy_headers": False}


def serve(
    app: str,
    *,
    host: str,
    port: int,
    workers: int = 1,
    prepare: Callable[[], None] | None = None,
    max_connections: int | None = None,
) -> None:
    """Serve the app factory ``app`` ("module:function") until told to stop.

    ``max_connections`` caps each process's open connections (``None`` or 0: no cap).
    """
    options = {**_UVICORN, "limit_concurrency": max_connections or None}
    if prepare is not None:
        prepare()
    if workers <= 1:
        uvicorn.run(app, factory=True, host=host, port=port, **options)
        return
    if port == 0 or not hasattr(socket, "SO_REUSEPORT"):
        raise SystemExit("several workers need a fixed port and SO_REUSEPORT (Linux, BSD)")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(
            target=_worker, args=(app, host, port, barrier, options), name=f"accord-worker-{i}"
        )
        for i in range(workers)
    ]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: uvicorn finishes in-flight requests

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.start()
    multiprocessing.connection.wait([p.sentinel for p in procs])
    failed = not stopping
    stop(signal.SIGTERM, None)
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
            p.join()
    if failed:
        codes = ", ".join(f"{p.name}: {p.exitcode}" for p in procs)
        raise SystemExit(f"a worker stopped; stopped the others ({codes})")


def _worker(app: str, host: str, port: int, barrier: Barrier, options: dict[str, Any]) -> None:
    module, _, name = app.partition(":")
    factory = getattr(importlib.import_module(module), name)
    config = uvicorn.Config(_Gate(factory(), barrier), host=host, port=port, **options)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))  # uvicorn listens on it once the app has started
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    sys.exit(0)


class _Gate:
    """Passes an app through, but reports startup complete only once all workers have."""

    def __init__(self, app: _Asgi, barrier: Barrier) -> None:
        self.app = app
        self.barrier = barrier

    async def __call__(self, scope: dict[str, Any], receive: _Asgi, send: _Asgi) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def gated_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                await asyncio.to_thread(self.barrier.wait, STARTUP_TIMEOUT_S)
            await send(message)

        await self.app(scope, receive, gated_send)
