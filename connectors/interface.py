"""The one extension point for department systems: what every connector offers.

The exchange flow talks to a REST registry, a SQL database, a SOAP service and a
CSV drop folder through this interface only, so that nothing above a connector
ever sees ``aiohttp``, ``sqlalchemy``, ``zeep`` or ``csv`` errors: every fault is
a ``ConnectorError`` with a stable ``code`` and a suggested HTTP status that the
gateway turns into problem+json. Results are frozen so a record cannot be
altered between fetch, mapping and release.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

__all__ = [
    "CircuitOpen",
    "Connector",
    "ConnectorAuthFailed",
    "ConnectorBadResponse",
    "ConnectorConfigError",
    "ConnectorError",
    "ConnectorTimeout",
    "ConnectorUnavailable",
    "EntitySchema",
    "FetchContext",
    "FetchResult",
    "Health",
    "InvalidKey",
    "MappingError",
    "NotFound",
    "Page",
    "ResponseTooLarge",
    "TlsFailed",
    "UnknownField",
    "UnsafeContent",
    "freeze_record",
]


# --------------------------------------------------------------------------- errors


class ConnectorError(Exception):
    """Base of every connector fault; ``code`` is stable and safe to show.

    ``detail`` never contains field values from the provider: it may end up in
    logs and problem documents that are not covered by the agreement.
    """

    code: ClassVar[str] = "connector_error"
    http_status: ClassVar[int] = 502
    transient: ClassVar[bool] = False

    def __init__(self, detail: str, *, connector: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.connector = connector

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class ConnectorConfigError(ConnectorError):
    """The declarative connector configuration is invalid (caught at build time)."""

    code = "connector_config_invalid"
    http_status = 500


class ConnectorUnavailable(ConnectorError):
    """The provider cannot be reached or answered with a server fault."""

    code = "connector_unavailable"
    http_status = 502
    transient = True


class ConnectorAuthFailed(ConnectorUnavailable):
    """The provider refused the gateway's credentials; retrying will not help."""

    code = "connector_auth_failed"
    transient = False


class TlsFailed(ConnectorAuthFailed):
    """The TLS handshake failed: untrusted server certificate or refused client cert."""

    code = "connector_tls_failed"


class CircuitOpen(ConnectorUnavailable):
    """Recent calls failed; the breaker refuses calls until it half-opens."""

    code = "connector_circuit_open"
    transient = False


class ConnectorTimeout(ConnectorError):
    """The provider did not answer within the connect/read timeout or deadline."""

    code = "connector_timeout"
    http_status = 504
    transient = True


class ConnectorBadResponse(ConnectorError):
    """The provider answered, but not with something we can use."""

    code = "connector_bad_response"
    http_status = 502


class ResponseTooLarge(ConnectorBadResponse):
    """The answer exceeded the configured byte cap; reading stopped at the cap."""

    code = "response_too_large"


class UnsafeContent(ConnectorBadResponse):
    """The answer carried a DTD, entity declarations or other hostile markup."""

    code = "unsafe_content"


class NotFound(ConnectorError):
    """The provider has no record for the key."""

    code = "not_found"
    http_status = 404


class InvalidKey(ConnectorError):
    """The key does not have the shape the entity's key pattern demands."""

    code = "invalid_key"
    http_status = 422


class UnknownField(ConnectorError):
    """A requested field or entity is not exposed by this connector's config."""

    code = "unknown_field"
    http_status = 422


class MappingError(ConnectorError):
    """A record could not be translated to, or does not validate against, its target."""

    code = "mapping_error"
    http_status = 502


# --------------------------------------------------------------------------- results


def freeze_record(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a record, so later stages cannot alter what was fetched."""
    return MappingProxyType(dict(record))


@dataclass(frozen=True, slots=True)
class FetchContext:
    """Per-call facts a connector needs; the gateway builds one per exchange.

    ``timeout`` is the budget (seconds) the exchange can still spend on this
    call; the connector uses the smaller of it and its own overall deadline.
    """

    exchange_id: str = ""
    timeout: float | None = None
    purpose: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """What ``check()`` reports when the provider is reachable and accepts us."""

    connector: str
    kind: str
    detail: str
    latency_ms: float


@dataclass(frozen=True, slots=True)
class EntitySchema:
    """One entity the provider exposes, described as JSON Schema (2020-12)."""

    name: str
    key: str
    json_schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FetchResult:
    """One record read by key; ``fields`` is what was asked for and pushed down."""

    connector: str
    entity: str
    key: str
    record: Mapping[str, Any]
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a bulk read; ``next_cursor`` is ``None`` on the last page."""

    connector: str
    entity: str
    records: tuple[Mapping[str, Any], ...]
    next_cursor: str | None = None
    fields: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------- interface


class Connector(abc.ABC):
    """A department system reached through one protocol.

    Implementations must: wrap every transport error in a ``ConnectorError``;
    return only the requested ``fields`` (pushing them down to the source
    where it can take them); never return a partial record on a fault; honour
    ``ctx.timeout``; be safe to call concurrently from one event loop.
    """

    kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    async def check(self, ctx: FetchContext | None = None) -> Health:
        """Raise ``ConnectorError`` unless the provider is reachable and accepts us."""

    @abc.abstractmethod
    async def discover(self, ctx: FetchContext | None = None) -> tuple[EntitySchema, ...]:
        """Describe the exposed entities from the provider's own metadata."""

    @abc.abstractmethod
    async def fetch(
        self,
        entity: str,
        key: str,
        fields: Sequence[str],
        ctx: FetchContext | None = None,
    ) -> FetchResult:
        """Read one record by key, with only ``fields`` in it."""

    @abc.abstractmethod
    async def read(
        self,
        entity: str,
        fields: Sequence[str],
        *,
        filters: Mapping[str, str] | None = None,
        cursor: str | None = None,
        limit: int = 100,
        ctx: FetchContext | None = None,
    ) -> Page:
        """Read a page of records for bulk and aggregate queries."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release pooled connections; the default has nothing to release."""

    async def __aenter__(self) -> Connector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
