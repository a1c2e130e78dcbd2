"""HTTP transport plumbing shared by the REST and SOAP connectors (internal).

One place turns httpx's exceptions into connector faults (a refused or timed-out
connect is worth a retry, a read timeout or a failed TLS handshake is not) and
reads a body under the size cap, so both protocols fail the same way.
"""

from __future__ import annotations

import httpx

from connectors._tls import is_tls_failure
from connectors.interface import (
    ConnectorError,
    ConnectorTimeout,
    ConnectorUnavailable,
    ResponseTooLarge,
    TlsFailed,
)
from connectors.resilience import RetryableFault

__all__ = ["read_capped", "transport_fault"]


async def read_capped(resp: httpx.Response, cap: int, name: str) -> bytes:
    """The body, refused as soon as it grows past ``cap`` bytes."""
    body = bytearray()
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise ResponseTooLarge("body exceeds the cap", connector=name)
    return bytes(body)


def transport_fault(exc: httpx.HTTPError, name: str) -> ConnectorError:
    """The connector fault for an httpx transport error (raise it ``from exc``)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return RetryableFault(
            "connect timed out",
            connector=name,
            final=ConnectorTimeout("connect to provider timed out", connector=name),
        )
    if isinstance(exc, httpx.ConnectError):
        if is_tls_failure(exc):
            return TlsFailed("TLS handshake with the provider failed", connector=name)
        return RetryableFault(
            "connect failed",
            connector=name,
            final=ConnectorUnavailable("provider refused the connection", connector=name),
        )
    if isinstance(exc, httpx.TimeoutException):
        return ConnectorTimeout("provider read timed out", connector=name)
    return ConnectorUnavailable(f"transport failure ({type(exc).__name__})", connector=name)
