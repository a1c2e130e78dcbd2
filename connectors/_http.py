"""HTTP transport plumbing shared by the REST and SOAP connectors (internal).

Both protocols reach their provider through one pooled aiohttp session per
connector, set up the same way: no proxies from the environment, no
redirects followed, no cookies kept, the connector's own timeouts and TLS
context. One place turns aiohttp's exceptions into connector faults (a
refused or timed-out connect is worth a retry, a read timeout or a failed TLS
handshake is not) and reads a body under the size cap, so both fail the same
way.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

import aiohttp
from aiohttp.http_exceptions import ContentEncodingError

from connectors._tls import is_tls_failure
from connectors.interface import (
    ConnectorBadResponse,
    ConnectorError,
    ConnectorTimeout,
    ConnectorUnavailable,
    ResponseTooLarge,
    TlsFailed,
)
from connectors.resilience import ResilienceSettings, RetryableFault

__all__ = ["HttpPool", "read_capped", "transport_fault"]

_CHUNK = 64 * 1024
# aiohttp refuses header lines over 8 KiB; providers that send long headers
# (cookies, CSP) worked before and must keep working. Still bounded.
_MAX_HEADER_LINE = 64 * 1024
_KEEPALIVE = 4.0


class HttpPool:
    """A connector's pooled aiohttp session, made on first use in the running loop.

    Connectors are built where no loop runs (config loading, the binding
    registry) but an aiohttp session belongs to the loop it was made in, so it
    is made by the first call. A call from a later loop gets a fresh session
    instead of sockets whose loop is gone (those cannot be closed without their
    loop and are left to the garbage collector). Once closed it stays closed:
    a call that raced the close fails instead of opening a pool nobody closes.
    """

    __slots__ = ("_closed", "_headers", "_loop", "_session", "_settings", "_ssl")

    def __init__(
        self,
        settings: ResilienceSettings,
        tls: ssl.SSLContext | bool,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._ssl = tls
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and self._loop is loop and not session.closed:
            return session
        if self._closed:
            raise aiohttp.ClientConnectionError("the connector has been closed")
        s = self._settings
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=s.max_concurrency,
                ssl=self._ssl,
                # Idle connections go before a typical server's 5 s keep-alive
                # would close them under a request in flight.
                keepalive_timeout=_KEEPALIVE,
            ),
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=s.total_timeout,  # waiting for a pooled connection, then connecting
                sock_connect=s.connect_timeout,
                sock_read=s.read_timeout,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=True,
            raise_for_status=False,
            max_line_size=_MAX_HEADER_LINE,
            max_field_size=_MAX_HEADER_LINE,
        )
        # Retrying is the Resilience layer's decision alone: aiohttp would otherwise
        # silently resend a GET once when the provider drops the connection, hiding
        # the fault from the breaker and doubling the load on a provider in trouble.
        # (aiohttp's own test client turns it off the same way.)
        session._retry_connection = False
        self._session, self._loop = session, loop
        return session

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()


async def read_capped(resp: aiohttp.ClientResponse, cap: int, name: str) -> bytes:
    """The decoded body, refused as soon as it grows past ``cap`` bytes.

    aiohttp hands out decompressed bytes, so a gzip bomb is cut off at the cap
    like any other flood. A declared length over the cap is refused before a
    byte of the body is read.
    """
    declared = resp.content_length
    if declared is not None and declared > cap:
        raise ResponseTooLarge("declared body exceeds the cap", connector=name)
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > cap:
            raise ResponseTooLarge("body exceeds the cap", connector=name)
    return bytes(body)


def transport_fault(exc: aiohttp.ClientError, name: str) -> ConnectorError:
    """The connector fault for an aiohttp error (raise it ``from exc``)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return RetryableFault(
            "connect timed out",
            connector=name,
            final=ConnectorTimeout("connect to provider timed out", connector=name),
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return ConnectorTimeout("provider read timed out", connector=name)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Certificate and handshake failures are ClientConnectorErrors too: check them first.
        if isinstance(exc, aiohttp.ClientSSLError) or is_tls_failure(exc):
            return TlsFailed("TLS handshake with the provider failed", connector=name)
        return RetryableFault(
            "connect failed",
            connector=name,
            final=ConnectorUnavailable("provider refused the connection", connector=name),
        )
    if isinstance(exc, aiohttp.ClientPayloadError) and _caused_by(exc, ContentEncodingError):
        return ConnectorBadResponse("body could not be decoded", connector=name)
    return ConnectorUnavailable(f"transport failure ({type(exc).__name__})", connector=name)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
