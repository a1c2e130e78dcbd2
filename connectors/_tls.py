"""TLS settings shared by the HTTP-based connectors (internal): private CA and mTLS.

Both REST and SOAP providers may sit behind a private CA and demand a client
certificate. The context is built once, when the connector is built, so a
missing file or a key that does not match its certificate is a config error
on day one, not a failed exchange later; a handshake failure is told apart
from a refused connection because retrying it cannot help.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from connectors.interface import ConnectorConfigError

__all__ = ["is_tls_failure", "tls_context"]


def is_tls_failure(exc: BaseException) -> bool:
    """Whether a connect error is a TLS verification/handshake failure (not transient)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def tls_context(tls: Any, url: str, connector: str) -> ssl.SSLContext | bool:
    """Server verification (optionally against a private CA) and the mTLS client cert.

    Misconfiguration is caught here, at build time: a missing or unreadable
    file, a key that does not match its certificate, or TLS settings on a
    plain-HTTP base URL (where the client cert would silently never be sent).
    """
    if not tls:
        return True
    if not isinstance(tls, Mapping) or set(tls) - {"ca_file", "client_cert", "client_key"}:
        raise ConnectorConfigError(
            "tls takes ca_file, client_cert and client_key", connector=connector
        )
    if not url.startswith("https://"):
        raise ConnectorConfigError("tls settings need an https URL", connector=connector)
    if tls.get("client_key") and not tls.get("client_cert"):
        raise ConnectorConfigError("tls client_key needs a client_cert", connector=connector)
    try:
        ctx = ssl.create_default_context(cafile=str(tls["ca_file"]) if tls.get("ca_file") else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.get("client_cert"):
            key = tls.get("client_key")
            ctx.load_cert_chain(str(tls["client_cert"]), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectorConfigError(
            f"tls files do not load ({type(exc).__name__})", connector=connector
        ) from exc
    return ctx
