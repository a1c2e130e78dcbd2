"""Loopback HTTP servers for tests: serve one in a thread, or record what it is sent.

A test that must prove the gateway never calls somewhere (an SSRF probe, a
placeholder leak) points it at a ``RecordingListener`` and asserts its
``seen`` is empty; ``serving`` runs any ``ThreadingHTTPServer`` for a block.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

__all__ = ["RecordingListener", "serving"]

S = TypeVar("S", bound=ThreadingHTTPServer)


class RecordingListener(ThreadingHTTPServer):
    """Answers every GET with ``status`` and ``body`` and remembers its path and headers."""

    def __init__(self, status: int = 404, body: bytes = b"") -> None:
        self.seen: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                self.seen.append({"path": handler.path, **dict(handler.headers)})
                handler.send_response(status)
                if body:
                    handler.send_header("Content-Type", "application/json")
                    handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def serving(server: S) -> Iterator[S]:
    """``server`` answering from a daemon thread for the block, then shut and closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
