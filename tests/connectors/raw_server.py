"""A loopback HTTP/1.1 server that answers with exact bytes, malformed ones included.

``hostile_server`` is a real ASGI app, so every answer it gives is valid HTTP.
The faults below live under HTTP itself (a body cut short, a bad gzip stream,
a status line that is not HTTP, an oversized header, a socket closed without
an answer), so this server writes raw bytes on a real socket and records each
request head for the tests to inspect.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field

__all__ = ["RawServer", "Request"]

_JSON = b'{"ssn": "12345678901"}'
_XML = (
    b'<?xml version="1.0"?><soap:Envelope '
    b'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body/></soap:Envelope>'
)


@dataclass(frozen=True)
class Request:
    """One request as it arrived: request line target and lower-cased headers."""

    target: str
    headers: dict[str, str]


def _answer(mode: str, soap: bool) -> bytes:
    ctype = b"text/xml; charset=utf-8" if soap else b"application/json"
    body = _XML if soap else _JSON
    head = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: " + ctype + b"\r\n"
    if mode == "good":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    if mode == "cut_short":
        return head + b"Content-Length: %d\r\n\r\n" % (len(body) + 100) + body[:10]
    if mode == "cut_short_chunked":
        return head + b"Transfer-Encoding: chunked\r\n\r\n40\r\n" + body[:10]
    if mode == "bad_gzip":
        junk = b"definitely not a gzip stream"
        return head + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(junk) + junk
    if mode == "gzip_ok":
        packed = gzip.compress(body)
        return head + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed
    if mode == "huge_header":
        return head + b"X-Padding: " + b"a" * 200_000 + b"\r\nContent-Length: 2\r\n\r\n{}"
    if mode == "not_http":
        return b"SSH-2.0-OpenSSH_9.6\r\n\r\n"
    if mode == "silent_close":
        return b""
    if mode == "set_cookie":
        return (
            head + b"Set-Cookie: session=provider-chosen; Path=/\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
    if mode == "redirect_home":
        # A redirect to a path on this very server: following it would show up in the log.
        return (
            b"HTTP/1.1 301 Moved Permanently\r\nConnection: close\r\n"
            b"Location: /rest/good/12345678901\r\nContent-Length: 0\r\n\r\n"
        )
    return b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


@dataclass
class RawServer:
    """Serves ``/rest/<mode>/...`` and ``/soap/<mode>`` one request per connection."""

    requests: list[Request] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def modes(self) -> list[str]:
        """The mode of every request received, in order."""
        return [r.target.split("/")[2] for r in self.requests]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if headers.get("content-length"):
                await reader.readexactly(int(headers["content-length"]))
            self.requests.append(Request(target, headers))
            parts = target.split("?")[0].split("/")
            mode = parts[2] if len(parts) > 2 else ""
            writer.write(_answer(mode, soap=parts[1] == "soap"))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()
