"""Department-system adapters and declarative schema mapping.

Imports nothing from ``gateway`` or ``audit``: a connector is a plain adapter
that the gateway drives, and it can be tested against a department system on
its own.
"""

from connectors.config import build_connector, load_config
from connectors.interface import (
    CircuitOpen,
    Connector,
    ConnectorAuthFailed,
    ConnectorBadResponse,
    ConnectorConfigError,
    ConnectorError,
    ConnectorTimeout,
    ConnectorUnavailable,
    EntitySchema,
    FetchContext,
    FetchResult,
    Health,
    InvalidKey,
    MappingError,
    NotFound,
    Page,
    ResponseTooLarge,
    TlsFailed,
    UnknownField,
    UnsafeContent,
)

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
    "build_connector",
    "load_config",
]
